// ReMoE (routers.md section 8): ReLU routing, sparsity controlled by an adaptive L1 penalty.
#include <switchyard/config.h>

#include <cmath>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class ReMoERouter final : public Router {
 public:
  ReMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_double("k", 1.0, 1e-6, 1e6);
    lambda_ = r.get_double("lambda", 1e-8, 0.0, 1e6);
    rate_ = r.get_double("lambda_rate", 1.2, 1.0, 100.0);
    r.finish();
    traits_.has_own_loss = true;
  }
  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return k_; }
  nlohmann::json params() const override {
    return {{"router", "remoe"}, {"k", k_}, {"lambda", lambda_}, {"lambda_rate", rate_}};
  }
  std::string describe() const override {
    return fmt::format("ReMoE: ReLU gates, adaptive L1 targeting {} experts per token (λ = {:g})",
                       k_, lambda_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      for (int64_t e = 0; e < in.E; ++e)
        if (in.logits[t * in.R + e] > 0.0f) emit(int32_t(e), in.logits[t * in.R + e]);
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
  }

 private:
  RouterTraits traits_;
  double k_ = 1.0, lambda_ = 1e-8, rate_ = 1.2;
};

}  // namespace

std::unique_ptr<Router> make_remoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<ReMoERouter>(p, c);
}

}  // namespace switchyard::routers
