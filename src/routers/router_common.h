// Pieces shared by the routers: scores, tie-safe selection and the score Jacobians.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

// s = softmax(z) or sigmoid(z) for one token's R logits, in double for stable sums.
void compute_scores(ScoreKind kind, const float* z, int64_t R, double* s);

// Indices of the k largest values (ties -> lower index), in descending order of value.
// Entries equal to -inf are never chosen.
std::vector<int32_t> top_k_indices(const double* values, int64_t n, int64_t k);

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

}  // namespace switchyard::routers
