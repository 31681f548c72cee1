// BF16-weight GEMM and FFN for inference (kernels.h). BF16 is the top half of a float32, so
// widening is a 16-bit shift; accumulation stays float32.
#include <cblas.h>
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace switchyard::cpu {

namespace {

inline float widen(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

std::atomic<bool> g_simd{__builtin_cpu_supports("avx512f") != 0};

// C[m, n] for n in [n0, n1), m < M ≤ 4: one pass over each weight row.
void rows_portable(int64_t M, int64_t K, const float* A, const uint16_t* W, float* C, int64_t ldc,
                   int64_t n0, int64_t n1) {
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    float acc[4] = {0, 0, 0, 0};
    for (int64_t k = 0; k < K; ++k) {
      const float v = widen(w[k]);
      for (int64_t m = 0; m < M; ++m) acc[m] += A[m * K + k] * v;
    }
    for (int64_t m = 0; m < M; ++m) C[m * ldc + n] = acc[m];
  }
}

// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as maybe-uninitialized.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) inline __m512 widen16(const uint16_t* w) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}

__attribute__((target("avx512f"))) void rows_avx512(int64_t M, int64_t K, const float* A,
                                                    const uint16_t* W, float* C, int64_t ldc,
                                                    int64_t n0, int64_t n1) {
  const int64_t K16 = K / 16 * 16, K64 = K / 64 * 64;
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    if (M == 1) {
      // Decode: four independent sums so the FMA latency does not bound the weight stream.
      __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t k = 0; k < K64; k += 64) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(A + k), widen16(w + k), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(A + k + 16), widen16(w + k + 16), a1);
        a2 = _mm512_fmadd_ps(_mm512_loadu_ps(A + k + 32), widen16(w + k + 32), a2);
        a3 = _mm512_fmadd_ps(_mm512_loadu_ps(A + k + 48), widen16(w + k + 48), a3);
      }
      for (int64_t k = K64; k < K16; k += 16)
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(A + k), widen16(w + k), a0);
      float sum = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
      for (int64_t k = K16; k < K; ++k) sum += A[k] * widen(w[k]);
      C[n] = sum;
      continue;
    }
    __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                     _mm512_setzero_ps()};
    for (int64_t k = 0; k < K16; k += 16) {
      const __m512 v = widen16(w + k);
      for (int64_t m = 0; m < M; ++m)
        acc[m] = _mm512_fmadd_ps(_mm512_loadu_ps(A + m * K + k), v, acc[m]);
    }
    for (int64_t m = 0; m < M; ++m) {
      float sum = _mm512_reduce_add_ps(acc[m]);
      for (int64_t k = K16; k < K; ++k) sum += A[m * K + k] * widen(w[k]);
      C[m * ldc + n] = sum;
    }
  }
}
#pragma GCC diagnostic pop

// Columns [n0, n1) of C for any M.
void block(int64_t M, int64_t K, const float* A, const uint16_t* W, float* C, int64_t ldc,
           int64_t n0, int64_t n1, std::vector<float>& tile) {
  if (M <= 4) {
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
      const int64_t mm = std::min<int64_t>(4, M - m0);
      if (g_simd.load(std::memory_order_relaxed))
        rows_avx512(mm, K, A + m0 * K, W, C + m0 * ldc, ldc, n0, n1);
      else
        rows_portable(mm, K, A + m0 * K, W, C + m0 * ldc, ldc, n0, n1);
    }
    return;
  }
  // Widen 64 weight rows at a time (64 × K floats stay in L2) and let sgemm use them M times.
  constexpr int64_t kRows = 64;
  tile.resize(size_t(kRows * K));
  for (int64_t b = n0; b < n1; b += kRows) {
    const int64_t rows = std::min(kRows, n1 - b);
    for (int64_t i = 0; i < rows * K; ++i) tile[size_t(i)] = widen(W[b * K + i]);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(M), int(rows), int(K), 1.0f, A, int(K),
                tile.data(), int(K), 0.0f, C + b, int(ldc));
  }
}

}  // namespace

bool bf16_simd_available() {
  return __builtin_cpu_supports("avx512f") != 0;
}

void set_bf16_simd(bool enabled) {
  g_simd.store(enabled && bf16_simd_available());
}

void gemm_bf16w(int64_t M, int64_t N, int64_t K, const float* A, const uint16_t* W, float* C) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(C, C + M * N, 0.0f);
    return;
  }
  init_blas_threads();
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || M * N * K < (int64_t(1) << 16)) {
    std::vector<float> tile;
    block(M, K, A, W, C, N, 0, N, tile);
    return;
  }
  // Column blocks of 64 (whole tiles) handed out dynamically: each weight row is read once.
  const int64_t width = 64, blocks = (N + width - 1) / width;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> tile;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < blocks; ++i)
      block(M, K, A, W, C, N, i * width, std::min(N, (i + 1) * width), tile);
  }
}

void ffn_forward_bf16(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x,
                      const uint16_t* w1, const uint16_t* w3, const uint16_t* w2, float* h1,
                      float* h3, float* act, float* out) {
  if (n == 0) return;
  gemm_bf16w(n, F, d, x, w1, h1);  // (n, F)
  const int64_t size = n * F;
  if (act_kind == Act::SwiGLU) gemm_bf16w(n, F, d, x, w3, h3);  // (n, F)
  ffn_activation(act_kind, size, h1, h3, act);
  gemm_bf16w(n, d, F, act, w2, out);  // (n, d)
}

}  // namespace switchyard::cpu
