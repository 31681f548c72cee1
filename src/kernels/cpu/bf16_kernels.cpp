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

// GCC 12 reports its own intrinsics' _mm512_undefined_* placeholders as maybe-uninitialized.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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

// Round to nearest even, as the hardware's conversion does; a NaN stays a (quiet) NaN.
inline uint16_t round_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Scratch that lives as long as its thread: a prefill calls these kernels hundreds of times per
// layer, and fresh buffers of this size would be fresh pages (page faults and zeroing) each time.
std::vector<float>& tile_scratch() {
  thread_local std::vector<float> tile;
  return tile;
}
std::vector<uint16_t>& rounded_scratch() {
  thread_local std::vector<uint16_t> rounded;
  return rounded;
}
std::vector<float>& rounded_wide_scratch() {
  thread_local std::vector<float> wide;
  return wide;
}

// Full-mask forms of the shuffles: GCC 12's plain forms pass an undefined source it then reports
// as uninitialised.
#define SY_AVX512_DOT __attribute__((target("avx512f,avx512bw,avx512bf16")))
SY_AVX512_DOT inline __m512 lo_ps(__m512 a, __m512 b) {
  return _mm512_maskz_unpacklo_ps(0xffff, a, b);
}
SY_AVX512_DOT inline __m512 hi_ps(__m512 a, __m512 b) {
  return _mm512_maskz_unpackhi_ps(0xffff, a, b);
}
SY_AVX512_DOT inline __m512 lo_pd(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(0xff, _mm512_castps_pd(a), _mm512_castps_pd(b)));
}
SY_AVX512_DOT inline __m512 hi_pd(__m512 a, __m512 b) {
  return _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(0xff, _mm512_castps_pd(a), _mm512_castps_pd(b)));
}
template <int Imm>
SY_AVX512_DOT inline __m512 lanes(__m512 a, __m512 b) {
  return _mm512_maskz_shuffle_f32x4(0xffff, a, b, Imm);
}

// C (MR, NR) = A (MR, K) · W (NR, K)ᵀ, both BF16 bits, as dot products of 32 elements per
// instruction (float32 accumulation); the 16 lanes of each sum are added at the end.
template <int MR, int NR>
SY_AVX512_DOT void dot_tile(int64_t K, const uint16_t* A, const uint16_t* W, float* C,
                            int64_t ldc) {
  __m512 acc[4][4];
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) acc[i][j] = _mm512_setzero_ps();
  const int64_t K32 = K / 32 * 32;
  for (int64_t k = 0; k < K32; k += 32) {
    __m512i w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm512_loadu_si512(W + j * K + k);
    for (int i = 0; i < MR; ++i) {
      const __m512i a = _mm512_loadu_si512(A + i * K + k);
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], __m512bh(a), __m512bh(w[j]));
    }
  }
  if (K32 < K) {  // the tail, zero past K in both operands
    const __mmask32 mask = _cvtu32_mask32((1u << (K - K32)) - 1u);
    __m512i w[NR];
    for (int j = 0; j < NR; ++j) w[j] = _mm512_maskz_loadu_epi16(mask, W + j * K + K32);
    for (int i = 0; i < MR; ++i) {
      const __m512i a = _mm512_maskz_loadu_epi16(mask, A + i * K + K32);
      for (int j = 0; j < NR; ++j)
        acc[i][j] = _mm512_dpbf16_ps(acc[i][j], __m512bh(a), __m512bh(w[j]));
    }
  }
  // Sum the lanes of the 16 accumulators at once: 128-bit group i of `r` ends as row i's four
  // column sums.
  __m512 z[4];
  for (int i = 0; i < 4; ++i) {
    const __m512 p01 = _mm512_add_ps(lo_ps(acc[i][0], acc[i][1]), hi_ps(acc[i][0], acc[i][1]));
    const __m512 p23 = _mm512_add_ps(lo_ps(acc[i][2], acc[i][3]), hi_ps(acc[i][2], acc[i][3]));
    z[i] = _mm512_add_ps(lo_pd(p01, p23), hi_pd(p01, p23));
  }
  const __m512 w01 = _mm512_add_ps(lanes<_MM_SHUFFLE(1, 0, 1, 0)>(z[0], z[1]),
                                   lanes<_MM_SHUFFLE(3, 2, 3, 2)>(z[0], z[1]));
  const __m512 w23 = _mm512_add_ps(lanes<_MM_SHUFFLE(1, 0, 1, 0)>(z[2], z[3]),
                                   lanes<_MM_SHUFFLE(3, 2, 3, 2)>(z[2], z[3]));
  const __m512 r = _mm512_add_ps(lanes<_MM_SHUFFLE(2, 0, 2, 0)>(w01, w23),
                                 lanes<_MM_SHUFFLE(3, 1, 3, 1)>(w01, w23));
  alignas(64) float sums[16];
  _mm512_store_ps(sums, r);
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) C[i * ldc + j] = sums[i * 4 + j];
}
// C (M ≤ 4, [n0, n1)) from BF16 activations, one weight row after another: decode streams the
// weights in order (4 KiB rows read as 4 interleaved streams ran 5-10% below the read bandwidth).
SY_AVX512_DOT void dot_rows(int64_t M, int64_t K, const uint16_t* Ab, const uint16_t* W, float* C,
                            int64_t ldc, int64_t n0, int64_t n1) {
  const int64_t K32 = K / 32 * 32, K128 = K / 128 * 128;
  const __mmask32 tail = _cvtu32_mask32(K32 < K ? (1u << (K - K32)) - 1u : 0u);
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = W + n * K;
    for (int64_t m = 0; m < M; ++m) {
      const uint16_t* a = Ab + m * K;
      // Four independent sums so the instruction's latency does not bound the weight stream.
      __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
      for (int64_t k = 0; k < K128; k += 128) {
        s0 = _mm512_dpbf16_ps(s0, __m512bh(_mm512_loadu_si512(a + k)),
                              __m512bh(_mm512_loadu_si512(w + k)));
        s1 = _mm512_dpbf16_ps(s1, __m512bh(_mm512_loadu_si512(a + k + 32)),
                              __m512bh(_mm512_loadu_si512(w + k + 32)));
        s2 = _mm512_dpbf16_ps(s2, __m512bh(_mm512_loadu_si512(a + k + 64)),
                              __m512bh(_mm512_loadu_si512(w + k + 64)));
        s3 = _mm512_dpbf16_ps(s3, __m512bh(_mm512_loadu_si512(a + k + 96)),
                              __m512bh(_mm512_loadu_si512(w + k + 96)));
      }
      for (int64_t k = K128; k < K32; k += 32)
        s0 = _mm512_dpbf16_ps(s0, __m512bh(_mm512_loadu_si512(a + k)),
                              __m512bh(_mm512_loadu_si512(w + k)));
      if (K32 < K)
        s1 = _mm512_dpbf16_ps(s1, __m512bh(_mm512_maskz_loadu_epi16(tail, a + K32)),
                              __m512bh(_mm512_maskz_loadu_epi16(tail, w + K32)));
      C[m * ldc + n] =
          _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
    }
  }
}

using DotTile = void (*)(int64_t, const uint16_t*, const uint16_t*, float*, int64_t);
template <int MR>
constexpr DotTile kDotRow[4] = {dot_tile<MR, 1>, dot_tile<MR, 2>, dot_tile<MR, 3>, dot_tile<MR, 4>};
constexpr const DotTile* kDotTiles[4] = {kDotRow<1>, kDotRow<2>, kDotRow<3>, kDotRow<4>};

std::atomic<bool> g_dot{__builtin_cpu_supports("avx512bf16") != 0};

// Columns [n0, n1) of C from BF16 activations Ab (M, K): 4 weight rows (in L1) against every
// 4 activation rows of a 128-row block (in L2); up to 4 rows (decode), row by row.
void dot_block(int64_t M, int64_t K, const uint16_t* Ab, const uint16_t* W, float* C, int64_t ldc,
               int64_t n0, int64_t n1) {
  if (M <= 4) return dot_rows(M, K, Ab, W, C, ldc, n0, n1);
  constexpr int64_t kRowBlock = 128;
  for (int64_t mb = 0; mb < M; mb += kRowBlock) {
    const int64_t me = std::min(M, mb + kRowBlock);
    for (int64_t n = n0; n < n1; n += 4) {
      const int64_t nr = std::min<int64_t>(4, n1 - n);
      for (int64_t m = mb; m < me; m += 4) {
        const int64_t mr = std::min<int64_t>(4, me - m);
        kDotTiles[mr - 1][nr - 1](K, Ab + m * K, W + n * K, C + m * ldc + n, ldc);
      }
    }
  }
}

// Columns [n0, n1) of C. Ab: A rounded to BF16 for the dot-product tiles, or null: A (float32,
// possibly holding rounded values) through the per-row path or widened tiles and sgemm.
void block(int64_t M, int64_t K, const float* A, const uint16_t* Ab, const uint16_t* W, float* C,
           int64_t ldc, int64_t n0, int64_t n1) {
  if (Ab) return dot_block(M, K, Ab, W, C, ldc, n0, n1);
  if (M <= 4) {
    if (g_simd.load(std::memory_order_relaxed))
      rows_avx512(M, K, A, W, C, ldc, n0, n1);
    else
      rows_portable(M, K, A, W, C, ldc, n0, n1);
    return;
  }
  // Widen 64 weight rows at a time (64 × K floats stay in L2) and let sgemm use them M times.
  constexpr int64_t kRows = 64;
  std::vector<float>& tile = tile_scratch();
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

bool bf16_dot_available() {
  return __builtin_cpu_supports("avx512bf16") != 0 && bf16_simd_available();
}

void set_bf16_simd(bool enabled) {
  g_simd.store(enabled && bf16_simd_available());
}

void set_bf16_dot(bool enabled) {
  g_dot.store(enabled && bf16_dot_available());
}

void gemm_bf16w(int64_t M, int64_t N, int64_t K, const float* A, const uint16_t* W, float* C,
                Bf16Activations acts) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    std::fill(C, C + M * N, 0.0f);
    return;
  }
  init_blas_threads();
  const float* a = A;
  const uint16_t* Ab = nullptr;
  if (acts == Bf16Activations::Round) {
    std::vector<uint16_t>& rounded = rounded_scratch();
    rounded.resize(size_t(M * K));
    for (int64_t i = 0; i < M * K; ++i) rounded[size_t(i)] = round_bf16(A[i]);
    if (g_dot.load(std::memory_order_relaxed) && g_simd.load(std::memory_order_relaxed)) {
      Ab = rounded.data();
    } else {  // the same rounded values, widened, through the float32 paths
      std::vector<float>& wide = rounded_wide_scratch();
      wide.resize(size_t(M * K));
      for (int64_t i = 0; i < M * K; ++i) wide[size_t(i)] = widen(rounded[size_t(i)]);
      a = wide.data();
    }
  }
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (threads <= 1 || M * N * K < (int64_t(1) << 16)) return block(M, K, a, Ab, W, C, N, 0, N);
  // Column blocks of 64 (whole tiles) handed out dynamically: each weight row is read once.
  const int64_t width = 64, blocks = (N + width - 1) / width;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < blocks; ++i)
    block(M, K, a, Ab, W, C, N, i * width, std::min(N, (i + 1) * width));
}

void ffn_forward_bf16(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x,
                      const uint16_t* w1, const uint16_t* w3, const uint16_t* w2, float* h1,
                      float* h3, float* act, float* out, Bf16Activations acts) {
  if (n == 0) return;
  gemm_bf16w(n, F, d, x, w1, h1, acts);  // (n, F)
  const int64_t size = n * F;
  if (act_kind.has_up()) gemm_bf16w(n, F, d, x, w3, h3, acts);  // (n, F)
  ffn_activation(act_kind, size, h1, h3, act);
  gemm_bf16w(n, d, F, act, w2, out, acts);  // (n, d)
}

}  // namespace switchyard::cpu
