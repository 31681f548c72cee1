// Auxiliary router losses: balance (three modes), z-loss, entropy. Values with coefficients
// applied; gradients accumulated into d_logits.
#pragma once

#include <switchyard/config.h>
#include <switchyard/router.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace switchyard {

struct LossInput {
  const float* logits = nullptr;  // (T, R)
  int64_t T = 0, R = 0;
  ScoreKind score = ScoreKind::Softmax;
  const RoutingPlan* plan = nullptr;
  std::vector<std::pair<int64_t, int64_t>> sequences;  // token ranges
  const double* global_counts = nullptr;               // (R) or null
};

// Returns the sum; `each` receives every enabled loss by name. d_logits may be null.
double aux_losses(const LossConfig& config, const LossInput& in,
                  std::map<std::string, double>& each, float* d_logits);

// Mean over tokens of the entropy of the balance probabilities (softmax, or s / Σ s for sigmoid)
// of logit columns [columns.first, columns.first + columns.second).
double mean_router_entropy(const LossInput& in, std::pair<int64_t, int64_t> columns);

}  // namespace switchyard
