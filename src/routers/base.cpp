// BASE layers (routers.md section 5): balanced assignment by auction in training, greedy top-1 at
// inference; y = α FFN_e(x) + (1 - α) x with α = σ(x · c_e).
#include <switchyard/config.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class BaseRouter final : public Router {
 public:
  BaseRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader(params, context).finish();
    traits_.batch_dependent = true;
    traits_.supports_losses = false;
  }
  const RouterTraits& traits() const override { return traits_; }
  nlohmann::json params() const override { return {{"router", "base"}}; }
  std::string describe() const override {
    return "BASE layer: balanced assignment (auction) in training, which is batch-dependent; "
           "greedy top-1 at inference; output α·FFN(x) + (1-α)·x";
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t E = in.E;
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    plan.passthrough.assign(size_t(in.T), 0.0f);
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      const int64_t n = end - begin;
      std::vector<double> A(size_t(n * E));  // (n, E) affinities
      for (int64_t t = 0; t < n; ++t)
        for (int64_t e = 0; e < E; ++e) A[size_t(t * E + e)] = in.logits[(begin + t) * in.R + e];
      std::vector<int32_t> owner(static_cast<size_t>(n));
      if (in.training) {
        std::vector<int64_t> capacity(size_t(E), n / E);
        for (int64_t e = 0; e < n % E; ++e) ++capacity[size_t(e)];
        owner = balanced_assignment(A, n, E, capacity);
      } else {
        for (int64_t t = 0; t < n; ++t)
          owner[size_t(t)] = top_k_indices(&A[size_t(t * E)], E, 1)[0];
      }
      for (int64_t t = 0; t < n; ++t) {
        const int32_t e = owner[size_t(t)];
        const double alpha = 1.0 / (1.0 + std::exp(-A[size_t(t * E + e)]));
        plan.add(int32_t(begin + t), e, int32_t(g), float(alpha));
        plan.passthrough[size_t(begin + t)] = float(1.0 - alpha);
        plan.selection_counts[size_t(e)] += 1.0;
      }
      plan.capacity.push_back(0);
    }
  }

  // α = σ(z): dL/dz = (dL/dα - dL/d(1-α)) α (1 - α).
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight,
                const float* d_passthrough, float* d_logits) const override {
    for (size_t a = 0; a < plan.size(); ++a) {
      const int64_t t = plan.token[a];
      const double alpha = plan.weight[a];
      d_logits[t * in.R + plan.expert[a]] +=
          float((d_weight[a] - d_passthrough[t]) * alpha * (1.0 - alpha));
    }
  }

 private:
  RouterTraits traits_;
};

}  // namespace

std::unique_ptr<Router> make_base(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<BaseRouter>(p, c);
}

}  // namespace switchyard::routers
