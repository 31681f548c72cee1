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

// Assigns n tokens to E experts, expert e taking exactly capacity[e] (Σ capacity = n), maximising
// the total affinity approximately. A (n, E) row-major. Returns the expert of each token.
std::vector<int32_t> auction(const std::vector<double>& A, int64_t n, int64_t E,
                             const std::vector<int64_t>& capacity) {
  const auto [lo, hi] = std::minmax_element(A.begin(), A.end());
  const double eps = std::max(1e-4, (*hi - *lo) / 50.0);
  std::vector<double> price(size_t(n), 0.0);
  std::vector<int32_t> owner(size_t(n), -1);
  std::vector<int64_t> held(size_t(E), 0);
  std::vector<double> best_bid(static_cast<size_t>(n)), values(static_cast<size_t>(n));
  std::vector<int32_t> best_bidder(static_cast<size_t>(n));
  for (int round = 0; round < 100; ++round) {
    bool full = true;
    for (int64_t e = 0; e < E; ++e) full = full && held[size_t(e)] == capacity[size_t(e)];
    if (full) break;
    std::fill(best_bid.begin(), best_bid.end(), -std::numeric_limits<double>::infinity());
    std::fill(best_bidder.begin(), best_bidder.end(), -1);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t need = capacity[size_t(e)] - held[size_t(e)];
      if (need <= 0) continue;
      for (int64_t t = 0; t < n; ++t)
        values[size_t(t)] = owner[size_t(t)] == e ? -std::numeric_limits<double>::infinity()
                                                  : A[size_t(t * E + e)] - price[size_t(t)];
      const std::vector<int32_t> order = top_k_indices(values.data(), n, need + 1);
      const int64_t taken = std::min<int64_t>(need, int64_t(order.size()));
      if (taken == 0) continue;
      const double next = int64_t(order.size()) > need ? values[size_t(order[size_t(need)])]
                                                       : values[size_t(order[size_t(taken - 1)])];
      for (int64_t i = 0; i < taken; ++i) {
        const int32_t t = order[size_t(i)];
        const double bid = values[size_t(t)] - next + eps;
        if (bid > best_bid[size_t(t)]) {  // strict: ties keep the lower expert
          best_bid[size_t(t)] = bid;
          best_bidder[size_t(t)] = int32_t(e);
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      const int32_t e = best_bidder[size_t(t)];
      if (e < 0) continue;
      if (owner[size_t(t)] >= 0) --held[size_t(owner[size_t(t)])];
      owner[size_t(t)] = e;
      ++held[size_t(e)];
      price[size_t(t)] += best_bid[size_t(t)];
    }
  }
  // Tokens the rounds left unowned go greedily to the best expert with room.
  for (int64_t t = 0; t < n; ++t) {
    if (owner[size_t(t)] >= 0) continue;
    int32_t best = -1;
    for (int64_t e = 0; e < E; ++e)
      if (held[size_t(e)] < capacity[size_t(e)] &&
          (best < 0 || A[size_t(t * E + e)] > A[size_t(t * E + best)]))
        best = int32_t(e);
    owner[size_t(t)] = best;
    ++held[size_t(best)];
  }
  return owner;
}

class BaseRouter final : public Router {
 public:
  BaseRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader(params, context).finish();
    traits_.batch_dependent = true;
    traits_.has_passthrough = true;
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
        owner = auction(A, n, E, capacity);
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
