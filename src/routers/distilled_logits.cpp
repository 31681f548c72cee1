#include "routers/distilled_logits.h"

#include <switchyard/error.h>

#include <algorithm>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {
namespace {

enum Tensor { Centroids, TokenEmbedding, TokenCentroids };

// The token ids, checked against the vocabulary (the layer validates them first; this guards the
// row gather of any other caller).
const int64_t* checked_ids(const LogitContext& context, int64_t T) {
  if (!context.token_ids) fail("distilled logits: the token ids (T = {}) are missing", T);
  for (int64_t t = 0; t < T; ++t)
    if (context.token_ids[t] < 0 || context.token_ids[t] >= context.vocab)
      fail("distilled logits: token id {} at {} is outside the vocabulary [0, {})",
           context.token_ids[t], t, context.vocab);
  return context.token_ids;
}

}  // namespace

std::vector<RouterTensorSpec> DistilledLogits::tensors(const LogitShape& shape) const {
  using Init = RouterTensorSpec::Init;
  const int64_t E = shape.R / 2, D = config_.dim;
  // The released code: W and K orthogonal with gain 0.1, Q nn.Embedding's N(0, 1); W decays
  // like a gate, Q and K do not (docs/routers/stablemoe.md, section 6, item 12).
  return {{"centroids", {E, shape.d}, Init::Orthogonal, 0.1, true},
          {"token_embedding", {shape.vocab, D}, Init::Normal, 1.0, false},
          {"token_centroids", {E, D}, Init::Orthogonal, 0.1, false}};
}

void DistilledLogits::forward(int64_t T, int64_t d, int64_t R, const float* x,
                              const float* const* w, const LogitContext& context,
                              const LogitCarry& /*carry*/, float* logits,
                              std::vector<float>& saved) const {
  const int64_t E = R / 2, D = config_.dim;
  const int64_t* ids = checked_ids(context, T);
  saved.clear();  // backward gathers Q[id] again
  cpu::gemm(false, true, T, E, d, 1.0f, x, d, w[Centroids], d, 0.0f, logits, R);
  // ŝ by plain dot products in double: equal rows of K give equal logits, whatever the BLAS.
  const float* Q = w[TokenEmbedding];
  const float* K = w[TokenCentroids];
#pragma omp parallel for schedule(static) if (T * E * D > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* q = Q + ids[t] * D;
    for (int64_t e = 0; e < E; ++e) {
      double dot = 0.0;
      for (int64_t j = 0; j < D; ++j) dot += double(q[j]) * double(K[e * D + j]);
      logits[t * R + E + e] = float(dot);
    }
  }
}

void DistilledLogits::backward(int64_t T, int64_t d, int64_t R, const float* x,
                               const float* const* w, const LogitContext& context,
                               const std::vector<float>& /*saved*/, const LogitCarryGrad& /*carry*/,
                               const float* d_logits, float* dx, float* const* dw) const {
  const int64_t E = R / 2, D = config_.dim, V = context.vocab;
  const int64_t* ids = checked_ids(context, T);
  auto grad = [&](Tensor i) { return dw ? dw[i] : nullptr; };
  if (float* g = grad(Centroids))
    cpu::gemm(true, false, E, d, T, 1.0f, d_logits, R, x, d, 0.0f, g, d);
  cpu::gemm(false, false, T, d, E, 1.0f, d_logits, R, w[Centroids], d, 0.0f, dx, d);
  const float* Q = w[TokenEmbedding];
  const float* K = w[TokenCentroids];
  if (float* g = grad(TokenCentroids)) {  // ∂K = Σ_t ∂ŝ_tᵀ Q[id_t]
    std::fill(g, g + E * D, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const float ds = d_logits[t * R + E + e];
        if (ds == 0.0f) continue;
        for (int64_t j = 0; j < D; ++j) g[e * D + j] += ds * Q[ids[t] * D + j];
      }
  }
  if (float* g = grad(TokenEmbedding)) {  // ∂Q[v] = Σ_{t: id_t = v} ∂ŝ_t K, scatter-added
    std::fill(g, g + V * D, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const float ds = d_logits[t * R + E + e];
        if (ds == 0.0f) continue;
        for (int64_t j = 0; j < D; ++j) g[ids[t] * D + j] += ds * K[e * D + j];
      }
  }
}

}  // namespace switchyard::routers
