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
  cpu::gemm_bf16w(N, out, in, x, W.bf16.data(), y, W.acts);
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
  // Work items: a KV head with a block of queries, every query head of the group stacked, so
  // scores and values are two GEMMs of ~128 rows against the keys the block can see.
  const int64_t group = H / Hkv;
  const int64_t block = std::max<int64_t>(1, 128 / group);
  const int64_t blocks = (n + block - 1) / block;
  const int64_t L_all = pos0 + n;
#pragma omp parallel for collapse(2) schedule(dynamic, 1) if (Hkv * blocks > 1 && L_all * n > 64)
  for (int64_t kv = 0; kv < Hkv; ++kv)
    for (int64_t b = 0; b < blocks; ++b) {
      thread_local std::vector<float> qs, scores, vals;
      const int64_t i0 = b * block, i1 = std::min(n, i0 + block), rows = (i1 - i0) * group;
      // Keys [j0, j1) cover every query of the block; each row masks its own.
      const int64_t j0 = window > 0 ? std::max<int64_t>(0, pos0 + i0 - window + 1) : 0;
      const int64_t j1 = pos0 + i1, L = j1 - j0;
      qs.resize(size_t(rows * Dq));  // (rows, Dq): query i, head g of the group at i * group + g
      for (int64_t i = i0; i < i1; ++i)
        std::copy_n(q + (i * H + kv * group) * Dq, group * Dq, qs.data() + (i - i0) * group * Dq);
      scores.resize(size_t(rows * L));  // (rows, L)
      cpu::gemm(false, true, rows, L, Dq, scale, qs.data(), Dq, K + (j0 * Hkv + kv) * Dq, Hkv * Dq,
                0.0f, scores.data(), L);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t pos = pos0 + i0 + r / group;
        const int64_t first = window > 0 ? std::max<int64_t>(0, pos - window + 1) : 0;
        float* p = scores.data() + r * L;
        const int64_t lo = first - j0, hi = pos - j0 + 1;  // the visible keys, [lo, hi)
        const float max = *std::max_element(p + lo, p + hi);
        float sum = 0.0f;
        for (int64_t j = lo; j < hi; ++j) sum += (p[j] = std::exp(p[j] - max));
        const float inv = 1.0f / sum;
        std::fill(p, p + lo, 0.0f);
        for (int64_t j = lo; j < hi; ++j) p[j] *= inv;
        std::fill(p + hi, p + L, 0.0f);
      }
      vals.resize(size_t(rows * Dv));  // (rows, Dv)
      cpu::gemm(false, false, rows, Dv, L, 1.0f, scores.data(), L, V + (j0 * Hkv + kv) * Dv,
                Hkv * Dv, 0.0f, vals.data(), Dv);
      for (int64_t i = i0; i < i1; ++i)
        std::copy_n(vals.data() + (i - i0) * group * Dv, group * Dv,
                    out + (i * H + kv * group) * Dv);
    }
}

}  // namespace switchyard::infer::blocks
