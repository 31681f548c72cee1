// Pieces shared by the routers: scores, tie-safe selection and the score Jacobians.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

// The splitmix64 finaliser (Steele et al.): a well-mixed 64-bit hash of x (hash tables, masks).
uint64_t splitmix64(uint64_t x);

// s = softmax(z) or sigmoid(z) for one token's R logits, in double for stable sums.
void compute_scores(ScoreKind kind, const float* z, int64_t R, double* s);

// The first index of the largest of n values (ties -> the lower index); n >= 1.
int32_t first_argmax(const float* v, int64_t n);

// Indices of the k largest values (ties -> lower index), in descending order of value.
// Entries equal to -inf are never chosen.
std::vector<int32_t> top_k_indices(const double* values, int64_t n, int64_t k);
// The same into `out` (reused storage, for hot loops).
void top_k_indices(const double* values, int64_t n, int64_t k, std::vector<int32_t>& out);

// The hidden units an elastic-width router runs for a share `fraction` in (0, 1] of an expert's
// F: round(fraction F) (halves up), at least 1 and at most F.
int32_t hidden_width(double fraction, int64_t F);

// dz += J^T ds for one token, J the Jacobian of the scores with respect to the logits.
void scores_backward(ScoreKind kind, const double* s, const double* ds, int64_t R, float* dz);

// For each token, the indices of its assignments in the plan (CSR over tokens).
struct TokenAssignments {
  std::vector<int64_t> offsets;  // (T + 1)
  std::vector<int32_t> index;    // (A)
};
TokenAssignments assignments_by_token(const RoutingPlan& plan, int64_t T);

// Backward shared by routers whose weight is g = scale * s_e (not renormalised): the gradient
// reaches the scores of the kept assignments only, then the score Jacobian.
void backward_raw_scores(ScoreKind kind, const RouterInput& in, const RoutingPlan& plan,
                         const float* d_weight, double scale, float* d_logits);

// Routing for routers without capacity whose choices for a token depend on that token alone:
// clears the plan, then for each token of each group calls choose(t, emit) with emit(e, weight)
// adding one choice. Every group gets capacity 0 (unlimited).
template <typename Choose>
void route_per_token(const RouterInput& in, RoutingPlan& plan, Choose&& choose) {
  plan.clear();
  plan.selection_counts.assign(size_t(in.R), 0.0);
  for (size_t g = 0; g < in.groups.size(); ++g) {
    for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t)
      choose(t, [&](int32_t e, double weight) {
        plan.add(int32_t(t), e, int32_t(g), float(weight));
        plan.selection_counts[size_t(e)] += 1.0;
      });
    plan.capacity.push_back(0);
  }
}

// Assigns n items to E bins, bin e taking exactly capacity[e] (Σ capacity = n), maximising the
// total affinity approximately by an auction. A (n, E) row-major. Returns the bin of each item.
// The defaults are the BASE router's (one phase, ε = range/50, 100 rounds, then greedy); the LLM
// batch router asks for ε-scaling down to a tiny ε and rounds until every bin is full, which puts
// the total within n·ε of the optimum.
struct AuctionOptions {
  double eps_divisor = 50;  // final ε = affinity range / eps_divisor (a division, as the reference)
  double min_eps = 1e-4;
  int64_t max_rounds = 100;  // per phase; rows still unowned then go greedily
  bool scaling = false;      // phases with ε = range/4, /20, ... down to the final ε
};
std::vector<int32_t> balanced_assignment(const std::vector<double>& A, int64_t n, int64_t E,
                                         const std::vector<int64_t>& capacity,
                                         const AuctionOptions& options = {});

// Every expert, weighted by the softmax of the token's logits (soft routing, SMEAR).
void route_all_experts(const RouterInput& in, RoutingPlan& plan);

// Base of the routers that send every token to every expert with softmax weights.
class AllExpertsRouter : public Router {
 public:
  void route(const RouterInput& in, RoutingPlan& plan) const override {
    route_all_experts(in, plan);
  }
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    backward_raw_scores(ScoreKind::Softmax, in, plan, d_weight, 1.0, d_logits);
  }
};

}  // namespace switchyard::routers
