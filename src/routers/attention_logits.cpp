#include "routers/attention_logits.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {

std::vector<RouterTensorSpec> AttentionLogits::tensors(const LogitShape& shape) const {
  const int64_t d = shape.d, R = shape.R;
  return {{"qkv", {3 * R, d}, RouterTensorSpec::Init::Normal, 0.0, true, true}};
}

// saved: q k v (T, 3R), then the attention A (T, R, R).
void AttentionLogits::forward(int64_t T, int64_t d, int64_t R, const float* x,
                              const float* const* w, const LogitContext& /*context*/,
                              const LogitCarry& /*carry*/, float* logits,
                              std::vector<float>& saved) const {
  saved.resize(size_t(T * 3 * R + T * R * R));
  float* qkv = saved.data();
  float* attention = qkv + T * 3 * R;
  cpu::gemm(false, true, T, 3 * R, d, 1.0f, x, d, w[0], d, 0.0f, qkv, 3 * R);
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* q = qkv + t * 3 * R;
    const float* k = q + R;
    const float* v = k + R;
    for (int64_t i = 0; i < R; ++i) {
      float* a = attention + (t * R + i) * R;
      float m = -INFINITY;
      for (int64_t j = 0; j < R; ++j) m = std::max(m, a[j] = q[i] * k[j]);
      double sum = 0.0;
      for (int64_t j = 0; j < R; ++j) sum += (a[j] = std::exp(a[j] - m));
      double z = 0.0;
      for (int64_t j = 0; j < R; ++j) {
        a[j] = float(a[j] / sum);
        z += double(a[j]) * double(v[j]);
      }
      logits[t * R + i] = float(z);
    }
  }
}

void AttentionLogits::backward(int64_t T, int64_t d, int64_t R, const float* x,
                               const float* const* w, const LogitContext& /*context*/,
                               const std::vector<float>& saved, const LogitCarryGrad& /*carry*/,
                               const float* d_logits, float* dx, float* const* dw) const {
  const float* qkv = saved.data();
  const float* attention = qkv + T * 3 * R;
  std::vector<float> d_qkv(size_t(T * 3 * R), 0.0f);  // (T, 3R)
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* q = qkv + t * 3 * R;
    const float* k = q + R;
    const float* v = k + R;
    float* dq = d_qkv.data() + t * 3 * R;
    float* dk = dq + R;
    float* dv = dk + R;
    for (int64_t i = 0; i < R; ++i) {
      const float* a = attention + (t * R + i) * R;
      const double g = d_logits[t * R + i];
      // dA_ij = g v_j; through the row softmax, dS_ij = A_ij (dA_ij − Σ_l A_il dA_il).
      double mean = 0.0;
      for (int64_t j = 0; j < R; ++j) mean += double(a[j]) * g * double(v[j]);
      double dqi = 0.0;
      for (int64_t j = 0; j < R; ++j) {
        dv[j] += float(double(a[j]) * g);
        const double ds = double(a[j]) * (g * double(v[j]) - mean);
        dqi += ds * double(k[j]);
        dk[j] += float(ds * double(q[i]));
      }
      dq[i] = float(dqi);
    }
  }
  if (dw && dw[0])
    cpu::gemm(true, false, 3 * R, d, T, 1.0f, d_qkv.data(), 3 * R, x, d, 0.0f, dw[0], d);
  cpu::gemm(false, false, T, d, 3 * R, 1.0f, d_qkv.data(), 3 * R, w[0], d, 0.0f, dx, d);
}

}  // namespace switchyard::routers
