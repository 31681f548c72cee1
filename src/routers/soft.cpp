// Dense soft routing: every expert, weighted by the softmax (the quality upper bound).
#include <switchyard/config.h>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class SoftRouter final : public AllExpertsRouter {
 public:
  SoftRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader(params, context).finish();
  }
  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t E) const override { return double(E); }
  nlohmann::json params() const override { return {{"router", "soft"}}; }
  std::string describe() const override {
    return "dense soft routing: every expert, weighted by the softmax";
  }

 private:
  RouterTraits traits_;
};

}  // namespace

std::unique_ptr<Router> make_soft(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<SoftRouter>(p, c);
}

}  // namespace switchyard::routers
