// Dense soft routing: every expert, weighted by the softmax (the quality upper bound).
#include <switchyard/config.h>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class SoftRouter final : public Router {
 public:
  SoftRouter(const nlohmann::json& params, const std::string& context, bool pooled) {
    ParamReader(params, context).finish();
    traits_.pooled_per_sequence = pooled;
    traits_.supports_losses = !pooled;
  }
  const RouterTraits& traits() const override { return traits_; }
  nlohmann::json params() const override {
    return {{"router", traits_.pooled_per_sequence ? "smear" : "soft"}};
  }
  std::string describe() const override {
    return traits_.pooled_per_sequence
               ? "SMEAR: one softmax over experts per sequence (from the mean input); the "
                 "experts' weights are merged and run once"
               : "dense soft routing: every expert, weighted by the softmax";
  }

  // For SMEAR the "tokens" here are sequences: the layer passes pooled logits (S, R).
  void route(const RouterInput& in, RoutingPlan& plan) const override {
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    std::vector<double> s(size_t(in.R));
    for (size_t g = 0; g < in.groups.size(); ++g) {
      for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t) {
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R, in.R, s.data());
        for (int64_t e = 0; e < in.E; ++e) {
          plan.add(int32_t(t), int32_t(e), int32_t(g), float(s[size_t(e)]));
          plan.selection_counts[size_t(e)] += 1.0;
        }
      }
      plan.capacity.push_back(0);
    }
  }

  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    backward_raw_scores(ScoreKind::Softmax, in, plan, d_weight, 1.0, d_logits);
  }

 private:
  RouterTraits traits_;
};

}  // namespace

std::unique_ptr<Router> make_soft(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<SoftRouter>(p, c, false);
}
std::unique_ptr<Router> make_smear(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<SoftRouter>(p, c, true);
}

}  // namespace switchyard::routers
