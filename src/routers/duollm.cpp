// Duo-LLM (docs/routers/duollm.md; Alizadeh et al., Apple, 2024, arXiv 2410.10846): each FFN
// has a big module and a small one, and per token a router picks one of them or (optionally)
// skipping the layer. Here the two modules are the layer's E = 2 experts: expert 0 runs the first
// F_s = round(small_width F) hidden units (the small module, a per-assignment width), expert 1
// all F (the big one); output 2 (skip) routes nowhere (y = 0, the residual passes).
//   routed:  p = softmax(z) over the R = 2 (+1) outputs, c = argmax p, weight p_c (top-1 with the
//            probability as its weight, Switch's form).
//   random:  (random_routes, training) c drawn from (p_skip, p_big, rest small) by the token's
//            uniform draw, weight 1 (the paper's first stage trains the LLM on random routes).
//   own loss (compute budget): λ (C − c*)², C = mean_t Σ_j p_tj c_j with costs
//            c = (F_s / F, 1, 0): the expected share of F the tokens run.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class DuoLLMRouter final : public Router {
 public:
  DuoLLMRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    small_width_ = r.get_double("small_width", 0.25, 0.0, 1.0);
    if (!(small_width_ > 0.0))
      fail("{}: field 'small_width' = {} must be in (0, 1] (a share of the experts' F)", context,
           small_width_);
    skip_ = r.get_bool("skip", false);
    random_ = r.get_bool("random_routes", false);
    p_big_ = r.get_double("p_big", 0.5, 0.0, 1.0);
    p_skip_ = r.get_double("p_skip", 0.0, 0.0, 1.0);
    if (p_skip_ > 0.0 && !skip_)
      fail("{}: field 'p_skip' = {} needs \"skip\": true (there is no skip output)", context,
           p_skip_);
    if (p_big_ + p_skip_ > 1.0)
      fail("{}: fields 'p_big' = {} and 'p_skip' = {} sum to more than 1", context, p_big_,
           p_skip_);
    target_ = r.get_double("compute_target", 0.5, 0.0, 1.0);
    lambda_ = r.get_double("compute_loss", 0.0, 0.0, 1e6);
    r.finish();
    traits_.elastic_width = true;
    traits_.has_own_loss = true;
  }

  const RouterTraits& traits() const override { return traits_; }
  int64_t num_outputs(int64_t) const override { return skip_ ? 3 : 2; }
  double nominal_experts_per_token(int64_t) const override { return 1.0; }
  double nominal_width_fraction() const override { return lambda_ > 0.0 ? target_ : 1.0; }
  int64_t required_experts() const override { return 2; }
  void check_shape(int64_t E, const std::string& context) const override {
    if (E != 2)
      fail(
          "{}: Duo-LLM routes between a small and a big module: it needs E = 2 experts (expert 0 "
          "the small one, expert 1 the big one), got E = {}",
          context, E);
  }
  nlohmann::json params() const override {
    return {{"router", "duollm"},
            {"small_width", small_width_},
            {"skip", skip_},
            {"random_routes", random_},
            {"p_big", p_big_},
            {"p_skip", p_skip_},
            {"compute_target", target_},
            {"compute_loss", lambda_}};
  }
  std::string describe() const override {
    return fmt::format(
        "Duo-LLM: top-1 of softmax(z) over the small module (expert 0 on {:g} of F), the big one "
        "(expert 1){}, weight p; {}compute loss λ = {:g} toward {:g} of F; dropless",
        small_width_, skip_ ? " and skipping" : "",
        random_
            ? fmt::format("random routes in training (p_big {:g}, p_skip {:g}); ", p_big_, p_skip_)
            : std::string(),
        lambda_, target_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int32_t small = hidden_width(small_width_, in.F), big = int32_t(in.F);
    const bool random = random_ && in.training && in.uniform;
    std::vector<double> p(static_cast<size_t>(in.R));
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    for (size_t g = 0; g < in.groups.size(); ++g) {
      for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t) {
        int32_t c = 0;
        double weight = 1.0;
        if (random) {
          const double u = in.uniform[t * in.uniforms_per_token];
          c = u < p_skip_ ? 2 : (u < p_skip_ + p_big_ ? 1 : 0);
        } else {
          compute_scores(ScoreKind::Softmax, in.logits + t * in.R, in.R, p.data());
          c = top_k_indices(p.data(), in.R, 1)[0];
          weight = p[size_t(c)];
        }
        plan.selection_counts[size_t(c)] += 1.0;
        if (c == 2) continue;  // skip: no module runs, y = 0
        plan.add_width(int32_t(t), c, int32_t(g), float(weight), c == 0 ? small : big);
      }
      plan.capacity.push_back(0);
    }
  }

  // Routed: ∂L/∂p_c = u, then the softmax Jacobian; random routes have constant weights.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    if (random_ && in.training && in.uniform) return;
    backward_raw_scores(ScoreKind::Softmax, in, plan, d_weight, 1.0, d_logits);
  }

  double own_loss(const RouterInput& in, const RoutingPlan&, float* d_logits) const override {
    if (lambda_ == 0.0 || in.T == 0) return 0.0;
    const double cost[3] = {double(hidden_width(small_width_, in.F)) / double(in.F), 1.0, 0.0};
    const int64_t T = in.T, R = in.R;
    std::vector<double> p(static_cast<size_t>(T * R));
    double C = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      compute_scores(ScoreKind::Softmax, in.logits + t * R, R, p.data() + t * R);
      for (int64_t j = 0; j < R; ++j) C += p[size_t(t * R + j)] * cost[j] / double(T);
    }
    const double gap = C - target_;
    if (d_logits) {
      std::vector<double> dp(static_cast<size_t>(R));
      for (int64_t j = 0; j < R; ++j) dp[size_t(j)] = 2.0 * lambda_ * gap * cost[j] / double(T);
      for (int64_t t = 0; t < T; ++t)
        scores_backward(ScoreKind::Softmax, p.data() + t * R, dp.data(), R, d_logits + t * R);
    }
    return lambda_ * gap * gap;
  }

 private:
  RouterTraits traits_;
  double small_width_ = 0.25;
  bool skip_ = false, random_ = false;
  double p_big_ = 0.5, p_skip_ = 0.0, target_ = 0.5, lambda_ = 0.0;
};

}  // namespace

std::unique_ptr<Router> make_duollm(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<DuoLLMRouter>(p, c);
}

}  // namespace switchyard::routers
