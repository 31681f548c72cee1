#include "kernels/cpu/kernels.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
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

void combine_rows_backward(int64_t rows, int64_t d, const int32_t* row_token,
                           const float* row_weight, const float* dy, const float* out, float* dout,
                           float* d_row_weight) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* dyt = dy + int64_t(row_token[r]) * d;
    const float* o = out + r * d;
    const float w = row_weight[r];
    double u = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dout[r * d + j] = w * dyt[j];
      u += double(dyt[j]) * o[j];
    }
    d_row_weight[r] = float(u);
  }
}

void multiply(int64_t n, const float* a, const float* b, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

void add_product(int64_t n, const float* a, const float* b, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] += b ? a[i] * b[i] : a[i];
}

void add_scaled_rows(int64_t T, int64_t d, const float* scale, const float* x, float* y) {
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < d; ++j) y[t * d + j] += scale[t] * x[t * d + j];
}

void add_scaled_rows_backward(int64_t T, int64_t d, const float* scale, const float* x,
                              const float* dy, float* dx, float* dscale) {
  for (int64_t t = 0; t < T; ++t) {
    double dot = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      dx[t * d + j] += scale[t] * dy[t * d + j];
      dot += double(dy[t * d + j]) * x[t * d + j];
    }
    dscale[t] = float(dot);
  }
}

// OpenBLAS's own threads and OpenMP's spinning workers fight over the cores (measured: 3-10x
// slower), so all threading is OpenMP's and every BLAS call is single-threaded.
extern "C" void openblas_set_num_threads(int);
void init_blas_threads() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

namespace {

void sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
           int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, int(M), int(N), int(K), alpha, A, int(lda), B,
              int(ldb), beta, C, int(ldc));
}

}  // namespace

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  if (K == 0) {  // BLAS may skip the beta scaling when K = 0
    for (int64_t i = 0; i < M; ++i)
      for (int64_t j = 0; j < N; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  init_blas_threads();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || M * N * K < (int64_t(1) << 18)) {
    sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  // Split the rows of C (or its columns when it has few rows) into one block per thread.
  const bool split_rows = M >= N || M >= 32 * threads;
  const int64_t extent = split_rows ? M : N;
  const int64_t unit = split_rows ? 8 : 16;
  const int64_t block = ((extent + threads - 1) / threads + unit - 1) / unit * unit;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int i = 0; i < threads; ++i) {
    const int64_t begin = i * block, end = std::min(extent, begin + block);
    if (begin >= end) continue;
    if (split_rows) {
      const float* a = trans_a ? A + begin : A + begin * lda;
      sgemm(trans_a, trans_b, end - begin, N, K, alpha, a, lda, B, ldb, beta, C + begin * ldc, ldc);
    } else {
      const float* b = trans_b ? B + begin * ldb : B + begin;
      sgemm(trans_a, trans_b, M, end - begin, K, alpha, A, lda, b, ldb, beta, C + begin, ldc);
    }
  }
}

namespace {

inline float sigmoid(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}
constexpr float kInvSqrt2 = 0.70710678118654752f;
constexpr float kInvSqrt2Pi = 0.39894228040143268f;
inline float gelu(float v) {
  return 0.5f * v * (1.0f + std::erf(v * kInvSqrt2));
}
inline float gelu_grad(float v) {
  return 0.5f * (1.0f + std::erf(v * kInvSqrt2)) + v * kInvSqrt2Pi * std::exp(-0.5f * v * v);
}

}  // namespace

void ffn_activation(Act act_kind, int64_t size, const float* h1, const float* h3, float* act) {
  if (act_kind.kind == Act::SwiGLU) {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) act[i] = h1[i] * sigmoid(h1[i]) * h3[i];
  } else if (act_kind.kind == Act::SwiGLUClamped) {
    const float alpha = act_kind.alpha, limit = act_kind.limit;
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) {
      const float g = std::min(h1[i], limit), u = std::clamp(h3[i], -limit, limit);
      act[i] = (u + 1.0f) * g * sigmoid(alpha * g);
    }
  } else {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) act[i] = gelu(h1[i]);
  }
}

void ffn_forward(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x, const float* w1,
                 const float* w3, const float* w2, float* h1, float* h3, float* act, float* out) {
  ffn_forward_gated(act_kind, n, d, d, F, x, x, w1, w3, w2, h1, h3, act, out);
}

void ffn_forward_gated(Act act_kind, int64_t n, int64_t d, int64_t dg, int64_t F, const float* x,
                       const float* xg, const float* w1, const float* w3, const float* w2,
                       float* h1, float* h3, float* act, float* out, int64_t ldw2) {
  if (n == 0) return;
  if (ldw2 == 0) ldw2 = F;
  gemm(false, true, n, F, dg, 1.0f, xg, dg, w1, dg, 0.0f, h1, F);  // (n, F)
  const int64_t size = n * F;
  if (act_kind.has_up()) gemm(false, true, n, F, d, 1.0f, x, d, w3, d, 0.0f, h3, F);  // (n, F)
  ffn_activation(act_kind, size, h1, h3, act);
  gemm(false, true, n, d, F, 1.0f, act, F, w2, ldw2, 0.0f, out, d);  // (n, d)
}

void ffn_backward(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x, const float* w1,
                  const float* w3, const float* w2, const float* h1, const float* h3,
                  const float* act, const float* dout, float* dact, float* dh3, float* dw1,
                  float* dw3, float* dw2, float* dx, bool accumulate) {
  ffn_backward_gated(act_kind, n, d, d, F, x, x, w1, w3, w2, h1, h3, act, dout, dact, dh3, dw1, dw3,
                     dw2, dx, dx, accumulate);
}

void ffn_backward_gated(Act act_kind, int64_t n, int64_t d, int64_t dg, int64_t F, const float* x,
                        const float* xg, const float* w1, const float* w3, const float* w2,
                        const float* h1, const float* h3, const float* act, const float* dout,
                        float* dact, float* dh3, float* dw1, float* dw3, float* dw2, float* dx,
                        float* dxg, bool accumulate, int64_t ldw2) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (ldw2 == 0) ldw2 = F;
  if (n == 0) {
    if (!accumulate) {
      std::fill(dw1, dw1 + F * dg, 0.0f);
      if (dw3) std::fill(dw3, dw3 + F * d, 0.0f);
      for (int64_t i = 0; i < d; ++i) std::fill(dw2 + i * ldw2, dw2 + i * ldw2 + F, 0.0f);
    }
    return;
  }
  gemm(true, false, d, F, n, 1.0f, dout, d, act, F, beta, dw2, ldw2);   // (d, F) of (d, ldw2)
  gemm(false, false, n, F, d, 1.0f, dout, d, w2, ldw2, 0.0f, dact, F);  // (n, F)
  const int64_t size = n * F;
  // dact becomes dh1 in place; dh3 gets the gate's gradient.
  if (act_kind.kind == Act::SwiGLU) {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) {
      const float s = sigmoid(h1[i]);
      const float silu = h1[i] * s;
      dh3[i] = dact[i] * silu;
      dact[i] = dact[i] * h3[i] * s * (1.0f + h1[i] * (1.0f - s));
    }
    gemm(true, false, F, d, n, 1.0f, dh3, F, x, d, beta, dw3, d);  // (F, d)
  } else if (act_kind.kind == Act::SwiGLUClamped) {
    // The clamps pass the gradient inside [-limit, limit] including the bounds (torch.clamp's
    // backward) and nothing outside.
    const float alpha = act_kind.alpha, limit = act_kind.limit;
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) {
      const float g = std::min(h1[i], limit), u = std::clamp(h3[i], -limit, limit);
      const float s = sigmoid(alpha * g);
      const float up_pass = h3[i] >= -limit && h3[i] <= limit ? 1.0f : 0.0f;
      const float gate_pass = h1[i] <= limit ? 1.0f : 0.0f;
      dh3[i] = dact[i] * g * s * up_pass;
      dact[i] = dact[i] * (u + 1.0f) * s * (1.0f + alpha * g * (1.0f - s)) * gate_pass;
    }
    gemm(true, false, F, d, n, 1.0f, dh3, F, x, d, beta, dw3, d);  // (F, d)
  } else {
#pragma omp parallel for simd schedule(static) if (size > 65536)
    for (int64_t i = 0; i < size; ++i) dact[i] *= gelu_grad(h1[i]);
  }
  gemm(true, false, F, dg, n, 1.0f, dact, F, xg, dg, beta, dw1, dg);   // (F, dg)
  gemm(false, false, n, dg, F, 1.0f, dact, F, w1, dg, 0.0f, dxg, dg);  // (n, dg)
  // dx is dxg where w1 reads x: the w3 path adds to it; otherwise it is the w3 path alone.
  const bool same = dx == dxg;
  if (act_kind.has_up())
    gemm(false, false, n, d, F, 1.0f, dh3, F, w3, d, same ? 1.0f : 0.0f, dx, d);
  else if (!same)
    std::fill(dx, dx + n * d, 0.0f);
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
