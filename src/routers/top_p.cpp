// Top-p dynamic routing (routers.md section 9): experts in order until their mass exceeds p.
#include <switchyard/config.h>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class TopPRouter final : public Router {
 public:
  TopPRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    threshold_ = r.get_double("threshold", 0.4, 0.0, 1.0);
    r.finish();
  }
  const RouterTraits& traits() const override { return traits_; }
  nlohmann::json params() const override {
    return {{"router", "top_p"}, {"threshold", threshold_}};
  }
  std::string describe() const override {
    return fmt::format("top-p dynamic routing, p = {}, raw softmax weights, dropless", threshold_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    std::vector<double> s(size_t(in.R));
    for (size_t g = 0; g < in.groups.size(); ++g) {
      for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t) {
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R, in.R, s.data());
        double mass = 0.0;
        for (int32_t e : top_k_indices(s.data(), in.R, in.R)) {
          plan.add(int32_t(t), e, int32_t(g), float(s[size_t(e)]));
          plan.selection_counts[size_t(e)] += 1.0;
          mass += s[size_t(e)];
          if (mass > threshold_) break;
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
  double threshold_ = 0.4;
};

}  // namespace

std::unique_ptr<Router> make_top_p(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<TopPRouter>(p, c);
}

}  // namespace switchyard::routers
