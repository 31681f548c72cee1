// ReMoE (routers.md section 8, docs/routers/remoe.md): ReLU routing, sparsity controlled by an
// adaptive L1 penalty. Two options beyond the paper, off by default: gate_lr_scale (the gate's
// learning rate times s) and bias_update_rate (a threshold bias that reopens closed experts).
#include <switchyard/config.h>

#include <cmath>
#include <memory>

#include "kernels/cpu/kernels.h"
#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

// Beyond the paper (off by default): z = s · x · Wᵀ with W drawn from N(0, σ/s), so the logits
// start as the plain gate's (N(0, σ) weights) while every Adam step on W moves z by s times as
// much: the gate's learning rate times s (decoupled weight decay shrinks z alike; only Adam's ε
// differs). s = gate_lr_scale, σ = gate_init_std.
class ScaledGate final : public LogitFunction {
 public:
  ScaledGate(double scale, double init_std) : scale_(scale), init_std_(init_std) {}
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override {
    const int64_t d = shape.d, R = shape.R;
    return {{"gate", {R, d}, RouterTensorSpec::Init::Normal, init_std_ / scale_, true}};
  }
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& /*context*/, const LogitCarry& /*carry*/, float* logits,
               std::vector<float>& saved) const override {
    saved.clear();
    cpu::gemm(false, true, T, R, d, float(scale_), x, d, w[0], d, 0.0f, logits, R);
  }
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& /*context*/, const std::vector<float>& /*saved*/,
                const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                float* const* dw) const override {
    const float s = float(scale_);
    if (dw && dw[0]) cpu::gemm(true, false, R, d, T, s, d_logits, R, x, d, 0.0f, dw[0], d);
    cpu::gemm(false, false, T, d, R, s, d_logits, R, w[0], d, 0.0f, dx, d);
  }

 private:
  double scale_, init_std_;
};

class ReMoERouter final : public Router {
 public:
  ReMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_double("k", 1.0, 1e-6, 1e6);
    lambda_ = r.get_double("lambda", 1e-8, 0.0, 1e6);
    rate_ = r.get_double("lambda_rate", 1.2, 1.0, 100.0);
    gate_lr_scale_ = r.get_double("gate_lr_scale", 1.0, 1e-4, 1.0);
    gate_init_std_ = r.get_double("gate_init_std", 0.02, 1e-6, 10.0);
    bias_rate_ = r.get_double("bias_update_rate", 0.0, 0.0, 1e3);
    r.finish();
    traits_.has_own_loss = true;
    if (gate_lr_scale_ != 1.0) gate_ = std::make_unique<ScaledGate>(gate_lr_scale_, gate_init_std_);
  }
  const LogitFunction* logit_function() const override { return gate_.get(); }
  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return k_; }
  nlohmann::json params() const override {
    return {{"router", "remoe"},
            {"k", k_},
            {"lambda", lambda_},
            {"lambda_rate", rate_},
            {"gate_lr_scale", gate_lr_scale_},
            {"gate_init_std", gate_init_std_},
            {"bias_update_rate", bias_rate_}};
  }
  std::string describe() const override {
    std::string text = fmt::format(
        "ReMoE: ReLU gates, adaptive L1 targeting {} experts per token (λ = {:g})", k_, lambda_);
    if (gate_)
      text += fmt::format(", gate learning rate × {:g} (beyond the paper)", gate_lr_scale_);
    if (bias_rate_ > 0)
      text += fmt::format(", threshold bias ±{:g} per step (beyond the paper)", bias_rate_);
    return text;
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    // R = ReLU(z + b): b, the selection bias, only where bias_update_rate > 0 (beyond the paper).
    const float* b = bias_rate_ > 0 ? in.bias : nullptr;
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      for (int64_t e = 0; e < in.E; ++e) {
        const float v = in.logits[t * in.R + e] + (b ? b[e] : 0.0f);
        if (v > 0.0f) emit(int32_t(e), v);
      }
    });
  }

  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    for (size_t a = 0; a < plan.size(); ++a)
      if (plan.kept[a]) d_logits[plan.token[a] * in.R + plan.expert[a]] += d_weight[a];
  }

  // L = λ E / (k T²) Σ_e (Σ_t R_te) c_e with c_e = #{t : R_te > 0} held constant.
  double own_loss(const RouterInput& in, const RoutingPlan& plan, float* d_logits) const override {
    const double scale = lambda_ * double(in.E) / (k_ * double(in.T) * double(in.T));
    double loss = 0.0;
    for (size_t a = 0; a < plan.size(); ++a) {
      const double c = plan.selection_counts[size_t(plan.expert[a])];
      loss += scale * plan.weight[a] * c;
      if (d_logits) d_logits[plan.token[a] * in.R + plan.expert[a]] += float(scale * c);
    }
    return loss;
  }

  nlohmann::json state() const override { return {{"lambda", lambda_}}; }
  void set_state(const nlohmann::json& state) override {
    lambda_ = state.at("lambda").get<double>();
  }

  void update_state(const RouterStepStats& step) override {
    const double target = 1.0 - k_ / double(step.E);
    // S over all of the model's layers, as in the paper: one controller, so no layer's λ runs
    // away on its own (per-layer control let λ kill whole layers' routers in short runs).
    lambda_ = step.model_zero_fraction < target ? lambda_ * rate_ : lambda_ / rate_;
    if (bias_rate_ <= 0 || step.bias == nullptr) return;
    // Beyond the paper: each expert's threshold bias moves by ±u towards the activation rate
    // k/E (the share of tokens with R > 0), so an expert whose gate closed for every token
    // opens again without a gradient. T from the counts: Σ_e c_e = T·E·(1 − S).
    double total = 0.0;
    for (double c : step.counts) total += c;
    const double tokens =
        step.zero_fraction < 1.0 ? total / (double(step.E) * (1.0 - step.zero_fraction)) : 0.0;
    for (int64_t e = 0; e < step.E; ++e) {
      const double rate = tokens > 0 ? step.counts[size_t(e)] / tokens : 0.0;
      const double error = k_ / double(step.E) - rate;
      step.bias[e] += float(bias_rate_ * double((error > 0) - (error < 0)));
    }
  }

 private:
  RouterTraits traits_;
  double k_ = 1.0, lambda_ = 1e-8, rate_ = 1.2;
  double gate_lr_scale_ = 1.0, gate_init_std_ = 0.02, bias_rate_ = 0.0;
  std::unique_ptr<ScaledGate> gate_;  // null: the plain gate x · gate.weightᵀ (the paper's)
};

}  // namespace

std::unique_ptr<Router> make_remoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<ReMoERouter>(p, c);
}

}  // namespace switchyard::routers
