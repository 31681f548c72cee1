#include "routers/locality.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "routers/router_common.h"

namespace switchyard::routers {

double locality_loss(const RouterInput& in, LocalityLevel level, double mu, double eta,
                     float* d_logits) {
  const int64_t T = in.T, E = in.E, R = in.R;
  if (T == 0 || mu == 0.0) return 0.0;
  const int64_t domains = locality_domains(in, level), local_count = E / domains;
  std::vector<double> dc(size_t(domains * E), 0.0);  // (domains, E)
  std::vector<double> tokens(size_t(domains), 0.0);  // T_ν
  std::vector<double> s(static_cast<size_t>(E));
  for (int64_t t = 0; t < T; ++t) {
    compute_scores(ScoreKind::Softmax, in.logits + t * R, E, s.data());
    const int64_t v = token_domain(in, level, t);
    tokens[size_t(v)] += 1.0;
    for (int64_t e = 0; e < E; ++e) dc[size_t(v * E + e)] += s[size_t(e)] / double(T);
  }
  // ln(D_c / D_l) per pair; the loss and, for backward, μ (ln(D_c/D_l) + 1) / T per token.
  std::vector<double> log_ratio(dc.size(), 0.0);
  double loss = 0.0;
  for (int64_t v = 0; v < domains; ++v) {
    if (tokens[size_t(v)] == 0.0) continue;
    for (int64_t e = 0; e < E; ++e) {
      const bool local = expert_domain(in, level, e) == v;
      const double target =
          tokens[size_t(v)] / double(T) *
          ((1.0 - eta) * (local ? 1.0 / double(local_count) : 0.0) + eta / double(E));
      const double c = std::max(dc[size_t(v * E + e)], 1e-300);  // p underflows only at |Δz| > 700
      const double lr = std::log(c / target);
      log_ratio[size_t(v * E + e)] = lr;
      loss += c * lr;
    }
  }
  if (d_logits) {
    std::vector<double> ds(size_t(R), 0.0);
    for (int64_t t = 0; t < T; ++t) {
      compute_scores(ScoreKind::Softmax, in.logits + t * R, E, s.data());
      const int64_t v = token_domain(in, level, t);
      for (int64_t e = 0; e < E; ++e)
        ds[size_t(e)] = mu * (log_ratio[size_t(v * E + e)] + 1.0) / double(T);
      scores_backward(ScoreKind::Softmax, s.data(), ds.data(), E, d_logits + t * R);
    }
  }
  return mu * loss;
}

}  // namespace switchyard::routers
