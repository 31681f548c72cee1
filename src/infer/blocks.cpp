#include "infer/blocks.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace switchyard::infer::blocks {

void linear(int64_t N, int64_t in, int64_t out, const float* x, const float* W, const float* b,
            float* y) {
  // Column blocks of W per thread: every thread streams its own slice of the weights once, which
  // is what a decode step (N = 1) is bound by.
  const int threads = omp_get_max_threads();
  const int64_t work = N * in * out;
  const int64_t blocks = work < (1 << 16) ? 1 : std::min<int64_t>(threads * 4, (out + 15) / 16);
  const int64_t width = ((out + blocks - 1) / blocks + 15) / 16 * 16;
#pragma omp parallel for schedule(dynamic, 1) if (blocks > 1)
  for (int64_t o0 = 0; o0 < out; o0 += width) {
    const int64_t n = std::min(width, out - o0);
    cpu::gemm(false, true, N, n, in, 1.0f, x, in, W + o0 * in, in, 0.0f, y + o0, out);
    if (b)
      for (int64_t r = 0; r < N; ++r)
        for (int64_t j = 0; j < n; ++j) y[r * out + o0 + j] += b[o0 + j];
  }
}

void linear(int64_t N, int64_t in, int64_t out, const float* x, const Matrix& W, const float* b,
            float* y) {
  if (W.bf16.empty()) return linear(N, in, out, x, W.f32.data(), b, y);
  cpu::gemm_bf16w(N, out, in, x, W.bf16.data(), y);
  if (b)
    for (int64_t r = 0; r < N; ++r)
      for (int64_t j = 0; j < out; ++j) y[r * out + j] += b[j];
}

void copy_row(const Matrix& W, int64_t C, int64_t row, float* out) {
  if (W.bf16.empty()) {
    std::copy_n(W.f32.data() + row * C, C, out);
    return;
  }
  for (int64_t j = 0; j < C; ++j) {
    const uint32_t u = uint32_t(W.bf16[size_t(row * C + j)]) << 16;
    std::memcpy(out + j, &u, 4);
  }
}

void rmsnorm(int64_t N, int64_t C, const float* x, const float* g, double eps, float* y) {
#pragma omp parallel for schedule(static) if (N * C > 65536)
  for (int64_t r = 0; r < N; ++r) {
    const float* xr = x + r * C;
    float* yr = y + r * C;
    double ss = 0.0;
    for (int64_t j = 0; j < C; ++j) ss += double(xr[j]) * xr[j];
    const float rstd = float(1.0 / std::sqrt(ss / double(C) + eps));
    for (int64_t j = 0; j < C; ++j) yr[j] = g[j] * (xr[j] * rstd);
  }
}

void swiglu(int64_t N, int64_t d, int64_t F, const float* x, const Matrix& w1, const Matrix& w3,
            const Matrix& w2, float* h, float* y) {
  float* a = h;          // (N, F)
  float* u = h + N * F;  // (N, F)
  linear(N, d, F, x, w1, nullptr, a);
  linear(N, d, F, x, w3, nullptr, u);
  for (int64_t i = 0; i < N * F; ++i) a[i] = a[i] / (1.0f + std::exp(-a[i])) * u[i];
  linear(N, F, d, a, w2, nullptr, y);
}

void attention(int64_t n, int64_t pos0, int64_t H, int64_t Hkv, int64_t Dq, int64_t Dv,
               const float* q, const float* K, const float* V, float scale, int64_t window,
               float* out) {
  const int64_t group = H / Hkv;
#pragma omp parallel
  {
    std::vector<float> p(static_cast<size_t>(pos0 + n));
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t i = 0; i < n; ++i)
      for (int64_t h = 0; h < H; ++h) {
        const int64_t pos = pos0 + i, kv = h / group;
        const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        const float* qi = q + (i * H + h) * Dq;
        float max = -INFINITY;
        for (int64_t j = first; j <= pos; ++j) {
          const float* kj = K + (j * Hkv + kv) * Dq;
          float dot = 0.0f;
          for (int64_t c = 0; c < Dq; ++c) dot += qi[c] * kj[c];
          p[size_t(j)] = dot * scale;
          max = std::max(max, p[size_t(j)]);
        }
        float sum = 0.0f;
        for (int64_t j = first; j <= pos; ++j) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - max));
        float* o = out + (i * H + h) * Dv;
        std::fill(o, o + Dv, 0.0f);
        for (int64_t j = first; j <= pos; ++j) {
          const float w = p[size_t(j)] / sum;
          const float* vj = V + (j * Hkv + kv) * Dv;
          for (int64_t c = 0; c < Dv; ++c) o[c] += w * vj[c];
        }
      }
  }
}

}  // namespace switchyard::infer::blocks
