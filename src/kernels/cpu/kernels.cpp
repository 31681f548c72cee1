#include "kernels/cpu/kernels.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace switchyard::cpu {

int64_t dispatch(int64_t A, const int32_t* expert, const int32_t* group, uint8_t* kept,
                 const int64_t* capacity, int64_t G, int64_t E, int64_t* slots,
                 int64_t* expert_offsets, int32_t* row_assignment) {
  std::fill(slots, slots + G * E, 0);
  std::fill(expert_offsets, expert_offsets + E + 1, 0);
  for (int64_t a = 0; a < A; ++a) {
    if (!kept[a]) continue;
    const int64_t cap = capacity[group[a]];
    int64_t& slot = slots[int64_t(group[a]) * E + expert[a]];
    if (cap > 0 && slot >= cap) {
      kept[a] = 0;
      continue;
    }
    ++slot;
    ++expert_offsets[expert[a] + 1];
  }
  for (int64_t e = 0; e < E; ++e) expert_offsets[e + 1] += expert_offsets[e];
  // Reuse the first E slots as fill cursors.
  std::copy(expert_offsets, expert_offsets + E, slots);
  for (int64_t a = 0; a < A; ++a)
    if (kept[a]) row_assignment[slots[expert[a]]++] = int32_t(a);
  return expert_offsets[E];
}

void rows_by_token(int64_t rows, const int32_t* row_token, int64_t T, int64_t* token_offsets,
                   int32_t* token_rows) {
  std::fill(token_offsets, token_offsets + T + 1, 0);
  for (int64_t r = 0; r < rows; ++r) ++token_offsets[row_token[r] + 1];
  for (int64_t t = 0; t < T; ++t) token_offsets[t + 1] += token_offsets[t];
  std::vector<int64_t> cursor(token_offsets, token_offsets + T);
  for (int64_t r = 0; r < rows; ++r) token_rows[cursor[size_t(row_token[r])]++] = int32_t(r);
}

void gather_rows(int64_t rows, int64_t d, const float* x, const int32_t* row_token, float* out) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(out + r * d, x + int64_t(row_token[r]) * d, size_t(d) * sizeof(float));
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS leaves C untouched when K = 0 only for beta = 1
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
}

namespace {

inline float sigmoid(float v) { return 1.0f / (1.0f + std::exp(-v)); }
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
inline float gelu(float v) { return 0.5f * v * (1.0f + std::erf(v * kInvSqrt2)); }
inline float gelu_grad(float v) {
  return 0.5f * (1.0f + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5f * v * v);
}

}  // namespace

void ffn_forward(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x, const float* w1,
                 const float* w3, const float* w2, float* h1, float* h3, float* act, float* out) {
  if (n == 0) return;
  gemm(false, true, n, F, d, 1.0f, x, d, w1, d, 0.0f, h1, F);  // (n, F)
  const int64_t size = n * F;
  if (act_kind == Act::SwiGLU) {
    gemm(false, true, n, F, d, 1.0f, x, d, w3, d, 0.0f, h3, F);  // (n, F)
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) act[i] = h1[i] * sigmoid(h1[i]) * h3[i];
  } else {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) act[i] = gelu(h1[i]);
  }
  gemm(false, true, n, d, F, 1.0f, act, F, w2, F, 0.0f, out, d);  // (n, d)
}

void ffn_backward(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x, const float* w1,
                  const float* w3, const float* w2, const float* h1, const float* h3,
                  const float* act, const float* dout, float* dact, float* dh3, float* dw1,
                  float* dw3, float* dw2, float* dx, bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (n == 0) {
    if (!accumulate) {
      std::fill(dw1, dw1 + F * d, 0.0f);
      if (dw3) std::fill(dw3, dw3 + F * d, 0.0f);
      std::fill(dw2, dw2 + d * F, 0.0f);
    }
    return;
  }
  gemm(true, false, d, F, n, 1.0f, dout, d, act, F, beta, dw2, F);  // (d, F)
  gemm(false, false, n, F, d, 1.0f, dout, d, w2, F, 0.0f, dact, F);  // (n, F)
  const int64_t size = n * F;
  // dact becomes dh1 in place; dh3 gets the gate's gradient.
  if (act_kind == Act::SwiGLU) {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) {
      const float s = sigmoid(h1[i]);
      const float silu = h1[i] * s;
      dh3[i] = dact[i] * silu;
      dact[i] = dact[i] * h3[i] * s * (1.0f + h1[i] * (1.0f - s));
    }
    gemm(true, false, F, d, n, 1.0f, dh3, F, x, d, beta, dw3, d);  // (F, d)
  } else {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) dact[i] *= gelu_grad(h1[i]);
  }
  gemm(true, false, F, d, n, 1.0f, dact, F, x, d, beta, dw1, d);  // (F, d)
  gemm(false, false, n, d, F, 1.0f, dact, F, w1, d, 0.0f, dx, d);  // (n, d)
  if (act_kind == Act::SwiGLU) gemm(false, false, n, d, F, 1.0f, dh3, F, w3, d, 1.0f, dx, d);
}

void combine_rows(int64_t T, int64_t d, const int64_t* token_offsets, const int32_t* token_rows,
                  const float* row_weight, const float* out, float* y) {
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t)
    for (int64_t i = token_offsets[t]; i < token_offsets[t + 1]; ++i) {
      const int64_t r = token_rows[i];
      const float w = row_weight[r];
      const float* src = out + r * d;
      float* dst = y + t * d;
#pragma omp simd
      for (int64_t j = 0; j < d; ++j) dst[j] += w * src[j];
    }
}

}  // namespace switchyard::cpu
