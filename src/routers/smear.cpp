// SMEAR (routers.md section 11): one softmax over experts per sequence, from the mean input; the
// layer merges the experts' weights with it and runs one FFN per sequence. Here "tokens" are the
// sequences: the layer passes the pooled logits (S, R).
#include <switchyard/config.h>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class SmearRouter final : public AllExpertsRouter {
 public:
  SmearRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader(params, context).finish();
    traits_.pooled_per_sequence = true;
    traits_.supports_losses = false;
  }
  const RouterTraits& traits() const override { return traits_; }
  nlohmann::json params() const override { return {{"router", "smear"}}; }
  std::string describe() const override {
    return "SMEAR: one softmax over experts per sequence (from the mean input); the experts' "
           "weights are merged and run once";
  }

 private:
  RouterTraits traits_;
};

}  // namespace

std::unique_ptr<Router> make_smear(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<SmearRouter>(p, c);
}

}  // namespace switchyard::routers
