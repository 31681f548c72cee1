// Locality of a token's experts under an ExpertPlacement (RouterInput::token_rank): which
// experts sit on the token's node or rank, and LocMoE's locality loss (docs/routers/locmoe.md).
#pragma once

#include <switchyard/router.h>

#include <cstdint>

namespace switchyard::routers {

enum class LocalityLevel { Node, Rank };

// Locality domains: ranks, or nodes of ranks_per_node consecutive ranks.
inline int64_t locality_domains(const RouterInput& in, LocalityLevel level) {
  return level == LocalityLevel::Rank ? in.ranks : in.ranks / in.ranks_per_node;
}
inline int64_t token_domain(const RouterInput& in, LocalityLevel level, int64_t t) {
  return level == LocalityLevel::Rank ? in.token_rank[t] : in.token_rank[t] / in.ranks_per_node;
}
inline int64_t expert_domain(const RouterInput& in, LocalityLevel level, int64_t e) {
  const int64_t rank = e / (in.E / in.ranks);
  return level == LocalityLevel::Rank ? rank : rank / in.ranks_per_node;
}

// L = μ KL(D_c ‖ D_l) over (locality domain ν, expert e) pairs, from the softmax p of each
// token's first E logits over the whole routed batch:
//   D_c(ν, e) = (1/T) Σ_{t in ν} p_te
//   D_l(ν, e) = (T_ν/T) ((1-η) [e local to ν] / |L(ν)| + η / E)
// Returns L; adds ∂L/∂logits to d_logits (T, R) when it is not null.
double locality_loss(const RouterInput& in, LocalityLevel level, double mu, double eta,
                     float* d_logits);

}  // namespace switchyard::routers
