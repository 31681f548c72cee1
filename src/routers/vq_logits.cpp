#include "routers/vq_logits.h"

#include <switchyard/error.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {
namespace {

enum Tensor { Gate, Codebook, Mix };

int64_t checked_experts(int64_t R) {
  const int64_t E = VQLogits::experts(R);
  if (E < 1 || 3 * E + 2 != R) fail("vq logits: R = {} is not 3E + 2 for any E >= 1", R);
  return E;
}

}  // namespace

std::vector<RouterTensorSpec> VQLogits::tensors(const LogitShape& shape) const {
  using Init = RouterTensorSpec::Init;
  const int64_t E = checked_experts(shape.R);
  // The released code: the codebook nn.Embedding U(−1/K, 1/K) (K = E codes), the mixing gate an
  // nn.Linear(d, 2) (U(±1/√d), its bias dropped); the codebook never decays (cluster centres).
  return {{"gate", {E, shape.d}, Init::Normal, 0.0, true},
          {"codebook", {E, shape.d}, Init::Uniform, 1.0 / double(E), false},
          {"mix", {2, shape.d}, Init::Uniform, 1.0 / std::sqrt(double(shape.d)), true}};
}

void VQLogits::forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                       const LogitContext& /*context*/, const LogitCarry& /*carry*/, float* logits,
                       std::vector<float>& saved) const {
  const int64_t E = checked_experts(R);
  saved.clear();  // backward recomputes x − C_e
  cpu::gemm(false, true, T, E, d, 1.0f, x, d, w[Gate], d, 0.0f, logits, R);
  cpu::gemm(false, true, T, 2, d, 1.0f, x, d, w[Mix], d, 0.0f, logits + 3 * E, R);
  // Squared distances as sums of squared differences in double: no ‖x‖² − 2x·c + ‖c‖²
  // cancellation, and equal codes give equal logits whatever the BLAS.
  const float* C = w[Codebook];
#pragma omp parallel for schedule(static) if (T * E * d > 65536)
  for (int64_t t = 0; t < T; ++t) {
    const float* xt = x + t * d;
    for (int64_t e = 0; e < E; ++e) {
      double sq = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        const double diff = double(xt[j]) - double(C[e * d + j]);
        sq += diff * diff;
      }
      logits[t * R + E + e] = float(-sq / double(d));
      logits[t * R + 2 * E + e] = float(-sq / double(d));
    }
  }
}

void VQLogits::backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                        const LogitContext& /*context*/, const std::vector<float>& /*saved*/,
                        const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                        float* const* dw) const {
  const int64_t E = checked_experts(R);
  auto grad = [&](Tensor i) { return dw ? dw[i] : nullptr; };
  if (float* g = grad(Gate)) cpu::gemm(true, false, E, d, T, 1.0f, d_logits, R, x, d, 0.0f, g, d);
  if (float* g = grad(Mix))
    cpu::gemm(true, false, 2, d, T, 1.0f, d_logits + 3 * E, R, x, d, 0.0f, g, d);
  cpu::gemm(false, false, T, d, E, 1.0f, d_logits, R, w[Gate], d, 0.0f, dx, d);
  cpu::gemm(false, false, T, d, 2, 1.0f, d_logits + 3 * E, R, w[Mix], d, 1.0f, dx, d);
  const float* C = w[Codebook];
  const float two_d = 2.0f / float(d);
  // The commitment block b = −‖x − sg[C_e]‖²/d: ∂x_t += Σ_e ∂b_{t,e} · (−2/d)(x_t − C_e).
#pragma omp parallel for schedule(static) if (T * E * d > 65536)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const float db = d_logits[t * R + 2 * E + e];
      if (db == 0.0f) continue;
      for (int64_t j = 0; j < d; ++j) dx[t * d + j] += -two_d * db * (x[t * d + j] - C[e * d + j]);
    }
  // The codebook block a = −‖sg[x] − C_e‖²/d: ∂C_e = Σ_t ∂a_{t,e} · (2/d)(x_t − C_e).
  if (float* g = grad(Codebook)) {
    std::fill(g, g + E * d, 0.0f);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) {
        const float da = d_logits[t * R + E + e];
        if (da == 0.0f) continue;
        for (int64_t j = 0; j < d; ++j) g[e * d + j] += two_d * da * (x[t * d + j] - C[e * d + j]);
      }
  }
}

}  // namespace switchyard::routers
