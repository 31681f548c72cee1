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
    std::vector<double> s(size_t(in.R));
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      compute_scores(ScoreKind::Softmax, in.logits + t * in.R, in.R, s.data());
      double mass = 0.0;
      for (int32_t e : top_k_indices(s.data(), in.R, in.R)) {
        emit(e, s[size_t(e)]);
        mass += s[size_t(e)];
        if (mass > threshold_) break;
      }
    });
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
