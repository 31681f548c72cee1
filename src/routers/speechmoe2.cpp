// SpeechMoE2 (docs/routers/speechmoe2.md): top-1 over logits from the layer input and a causal
// global embedding ("logits": "global", routers/global_logits), with SpeechMoE's sparsity L1 and
// mean importance losses. A preset of the top-k router; the losses live here.
#include "routers/speechmoe2.h"

#include <cmath>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {

double speechmoe_losses(const RouterInput& in, double sparsity, double importance,
                        float* d_logits) {
  const int64_t T = in.T, R = in.R;
  if ((sparsity <= 0 && importance <= 0) || T == 0) return 0.0;
  // The softmax of every token (T, R), in parallel; the sums in token order (deterministic).
  std::vector<double> probs(size_t(T * R)), inv_norm(static_cast<size_t>(T));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    double* p = probs.data() + t * R;
    compute_scores(ScoreKind::Softmax, in.logits + t * R, R, p);
    double sq = 0.0;
    for (int64_t r = 0; r < R; ++r) sq += p[r] * p[r];
    inv_norm[size_t(t)] = 1.0 / std::sqrt(sq);  // ‖p‖₁ = 1, so ‖p / ‖p‖₂‖₁ = 1 / ‖p‖₂
  }
  std::vector<double> imp(size_t(R), 0.0);  // (R) the mean importance
  double inv_norms = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    inv_norms += inv_norm[size_t(t)];
    for (int64_t r = 0; r < R; ++r) imp[size_t(r)] += probs[size_t(t * R + r)];
  }
  double sum_sq = 0.0;
  for (double& v : imp) {
    v /= double(T);
    sum_sq += v * v;
  }
  const double value = sparsity * inv_norms / double(T) + importance * double(R) * sum_sq;
  if (!d_logits) return value;
    // ∂/∂p_tj = −α p_tj / (T ‖p_t‖₂³) + 2 β R Imp_j / T, then the softmax Jacobian.
#pragma omp parallel
  {
    std::vector<double> dp(static_cast<size_t>(R));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < T; ++t) {
      const double* p = probs.data() + t * R;
      const double inv = inv_norm[size_t(t)], inv_cube = inv * inv * inv;
      for (int64_t r = 0; r < R; ++r)
        dp[size_t(r)] = -sparsity * p[r] * inv_cube / double(T) +
                        2.0 * importance * double(R) * imp[size_t(r)] / double(T);
      scores_backward(ScoreKind::Softmax, p, dp.data(), R, d_logits + t * R);
    }
  }
  return value;
}

std::unique_ptr<Router> make_speechmoe2(const nlohmann::json& p, const std::string& c) {
  nlohmann::json params = {{"k", 1},
                           {"normalize", false},
                           {"logits", "global"},
                           {"sparsity_loss", 0.1},
                           {"importance_loss", 0.1}};
  for (const auto& [key, value] : p.items()) params[key] = value;
  return make_topk(params, c);
}

}  // namespace switchyard::routers
