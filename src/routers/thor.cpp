// THOR (Zuo et al., ICLR 2022): stochastic experts, no learned router. In training every
// forward pass sends each routing group to one expert drawn uniformly at random (the released
// code draws one expert per layer per pass); the model runs two such passes and adds the
// consistency loss (Router::consistency_weight). At inference each token goes to a random
// expert (the code's token level), from the layer's inference draws (the same at every call, so
// evaluation is reproducible; RouterTraits::draws_at_inference).
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class ThorRouter final : public Router {
 public:
  ThorRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    consistency_ = r.get_double("consistency", 1.0, 0.0, 1e6);
    per_token_ = r.get_choice("train_draw", "group", {"group", "token"}) == "token";
    r.finish();
    traits_.needs_gate = false;
    traits_.draws_at_inference = true;
    traits_.supports_losses = false;
    traits_.batch_dependent = !per_token_;  // one draw for the whole group
  }
  const RouterTraits& traits() const override { return traits_; }
  double consistency_weight() const override { return consistency_; }
  nlohmann::json params() const override {
    return {{"router", "thor"},
            {"consistency", consistency_},
            {"train_draw", per_token_ ? "token" : "group"}};
  }
  std::string describe() const override {
    return fmt::format(
        "THOR: a random expert per {} in training, two passes with consistency weight {}; a "
        "random expert per token at inference",
        per_token_ ? "token" : "routing group", consistency_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    if (in.uniform == nullptr && in.T > 0)
      fail("router thor: needs uniform draws (T = {}, 1)", in.T);
    const uint64_t E = uint64_t(in.E);
    const bool one_per_group = in.training && !per_token_;
    size_t g = 0;  // the group of token t (route_per_token visits them in order)
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      while (t >= in.groups[g].second) ++g;
      const double u = in.uniform[(one_per_group ? in.groups[g].first : t) * in.uniforms_per_token];
      emit(int32_t(std::min<uint64_t>(uint64_t(u * double(E)), E - 1)), 1.0);
    });
  }

  void backward(const RouterInput&, const RoutingPlan&, const float*, const float*,
                float*) const override {}

 private:
  RouterTraits traits_;
  double consistency_ = 1.0;
  bool per_token_ = false;
};

}  // namespace

std::unique_ptr<Router> make_thor(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<ThorRouter>(p, c);
}

}  // namespace switchyard::routers
