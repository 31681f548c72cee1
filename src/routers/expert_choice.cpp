// Expert Choice (routers.md section 4): each expert takes its top-C tokens of the group.
#include <switchyard/config.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class ExpertChoiceRouter final : public Router {
 public:
  ExpertChoiceRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    capacity_factor_ = r.get_double("capacity_factor", 2.0, 1e-6, 1e6);
    r.finish();
    traits_.batch_dependent = true;
  }
  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return capacity_factor_; }
  nlohmann::json params() const override {
    return {{"router", "expert_choice"}, {"capacity_factor", capacity_factor_}};
  }
  std::string describe() const override {
    return fmt::format(
        "expert choice, capacity factor {}: batch-dependent and not causal (a token's experts "
        "depend on every token of its routing group, later ones included), so not for "
        "autoregressive decoding",
        capacity_factor_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t E = in.E;
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      const int64_t n = end - begin;
      const int64_t C =
          std::min<int64_t>(n, int64_t(std::ceil(double(n) * capacity_factor_ / double(E))));
      std::vector<double> s(size_t(n * E));  // (n, E)
      for (int64_t t = 0; t < n; ++t)
        compute_scores(ScoreKind::Softmax, in.logits + (begin + t) * in.R, E, &s[size_t(t * E)]);
      std::vector<double> column(static_cast<size_t>(n));
      for (int64_t e = 0; e < E; ++e) {
        for (int64_t t = 0; t < n; ++t) column[size_t(t)] = s[size_t(t * E + e)];
        for (int32_t t : top_k_indices(column.data(), n, C)) {
          plan.add(int32_t(begin + t), int32_t(e), int32_t(g), float(column[size_t(t)]));
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
  double capacity_factor_ = 2.0;
};

}  // namespace

std::unique_ptr<Router> make_expert_choice(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<ExpertChoiceRouter>(p, c);
}

}  // namespace switchyard::routers
