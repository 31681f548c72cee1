#include "routers/cosine_logits.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {
namespace {

constexpr float kNormEps = 1e-4f;  // F.normalize's floor on the norm

// Rows of v (n, D) divided by max(‖row‖, eps) into out; the divisors into norm (n).
void normalize_rows(int64_t n, int64_t D, const float* v, float* out, float* norm) {
  for (int64_t i = 0; i < n; ++i) {
    double sq = 0.0;
    for (int64_t j = 0; j < D; ++j) sq += double(v[i * D + j]) * double(v[i * D + j]);
    norm[i] = std::max(float(std::sqrt(sq)), kNormEps);
    for (int64_t j = 0; j < D; ++j) out[i * D + j] = v[i * D + j] / norm[i];
  }
}

// Gradient through v̂ = v / max(‖v‖, eps): dv = (dv̂ − v̂ (v̂ · dv̂)) / ‖v‖ where the norm is above
// eps, dv̂ / eps where it is floored.
void normalize_rows_backward(int64_t n, int64_t D, const float* unit, const float* norm,
                             const float* d_unit, float* dv) {
  for (int64_t i = 0; i < n; ++i) {
    const float* u = unit + i * D;
    const float* g = d_unit + i * D;
    double dot = 0.0;
    if (norm[i] > kNormEps)
      for (int64_t j = 0; j < D; ++j) dot += double(u[j]) * double(g[j]);
    for (int64_t j = 0; j < D; ++j)
      dv[i * D + j] = float((double(g[j]) - double(u[j]) * dot) / double(norm[i]));
  }
}

}  // namespace

std::vector<RouterTensorSpec> CosineLogits::tensors(const LogitShape& shape) const {
  const int64_t d = shape.d, R = shape.R;
  using Init = RouterTensorSpec::Init;
  return {
      {"projection", {config_.dim, d}, Init::Normal, 0.0, true},
      // torchscale keeps the embeddings at norm 1.5; the cosine ignores the norm, which sets
      // only how far an optimiser step turns them.
      {"expert_embeddings", {R, config_.dim}, Init::RowNorm, 1.5, false},
      {"log_scale", {1}, Init::Constant, std::log(1.0 / config_.temperature), false},
  };
}

// saved: n(u) for u = W x (T, D), the norms of u (T), n(e) (R, D), their norms (R), the cosines
// (T, R), the scale (1).
void CosineLogits::forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                           const LogitContext& /*context*/, const LogitCarry& /*carry*/,
                           float* logits, std::vector<float>& saved) const {
  const int64_t D = config_.dim;
  saved.resize(size_t(T * D + T + R * D + R + T * R + 1));
  float* u_unit = saved.data();  // u, normalised in place
  float* u_norm = u_unit + T * D;
  float* e_unit = u_norm + T;
  float* e_norm = e_unit + R * D;
  float* cosine = e_norm + R;
  float* scale = cosine + T * R;
  cpu::gemm(false, true, T, D, d, 1.0f, x, d, w[0], d, 0.0f, u_unit, D);
  if (config_.normalize_input)
    normalize_rows(T, D, u_unit, u_unit, u_norm);  // row by row: in place is safe
  else
    std::fill(u_norm, u_norm + T, 1.0f);
  normalize_rows(R, D, w[1], e_unit, e_norm);
  cpu::gemm(false, true, T, R, D, 1.0f, u_unit, D, e_unit, D, 0.0f, cosine, R);
  scale[0] = std::min(std::exp(w[2][0]), float(1.0 / config_.min_temperature));
  for (int64_t i = 0; i < T * R; ++i) logits[i] = scale[0] * cosine[i];
}

void CosineLogits::backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                            const LogitContext& /*context*/, const std::vector<float>& saved,
                            const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                            float* const* dw) const {
  const int64_t D = config_.dim;
  const float* u_unit = saved.data();
  const float* u_norm = u_unit + T * D;
  const float* e_unit = u_norm + T;
  const float* e_norm = e_unit + R * D;
  const float* cosine = e_norm + R;
  const float scale = cosine[T * R];
  if (dw && dw[2]) {  // ∂/∂log_scale = Σ G ⊙ cos · scale, 0 once the clamp holds it
    double sum = 0.0;
    for (int64_t i = 0; i < T * R; ++i) sum += double(d_logits[i]) * double(cosine[i]);
    const bool clamped = w[2][0] > std::log(1.0 / config_.min_temperature);
    dw[2][0] = clamped ? 0.0f : float(sum * double(scale));
  }
  std::vector<float> d_u_unit(size_t(T * D)), d_e_unit(size_t(R * D)), du(size_t(T * D));
  // d cos = scale · G; d n(u) = d cos · n(e); d n(e) = d cosᵀ · n(u).
  cpu::gemm(false, false, T, D, R, scale, d_logits, R, e_unit, D, 0.0f, d_u_unit.data(), D);
  cpu::gemm(true, false, R, D, T, scale, d_logits, R, u_unit, D, 0.0f, d_e_unit.data(), D);
  if (dw && dw[1]) normalize_rows_backward(R, D, e_unit, e_norm, d_e_unit.data(), dw[1]);
  if (config_.normalize_input)
    normalize_rows_backward(T, D, u_unit, u_norm, d_u_unit.data(), du.data());
  else
    du = d_u_unit;
  if (dw && dw[0]) cpu::gemm(true, false, D, d, T, 1.0f, du.data(), D, x, d, 0.0f, dw[0], d);
  cpu::gemm(false, false, T, d, D, 1.0f, du.data(), D, w[0], d, 0.0f, dx, d);
}

}  // namespace switchyard::routers
