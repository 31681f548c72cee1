// CPU kernels of the MoE layer. Plain pointers and sizes only: the front end (src/layer) validates.
// A CUDA backend implements the same set.
#pragma once

#include <cstdint>

namespace switchyard::cpu {

// Capacity and grouping. Assignments a in [0, A) are in priority order within each group.
// kept[a] comes in as 0 for choices already dropped; a kept choice whose slot (count of earlier
// kept choices of the same expert in the same group) reaches capacity[group[a]] > 0 is dropped.
// Then a stable counting sort of kept assignments by expert: expert_offsets (E + 1), row_assignment
// (kept count). Returns the number of kept assignments. `slots` is scratch of G * E.
int64_t dispatch(int64_t A, const int32_t* expert, const int32_t* group, uint8_t* kept,
                 const int64_t* capacity, int64_t G, int64_t E, int64_t* slots,
                 int64_t* expert_offsets, int32_t* row_assignment);

// CSR of dispatched rows by token: token_offsets (T + 1), token_rows (rows).
void rows_by_token(int64_t rows, const int32_t* row_token, int64_t T, int64_t* token_offsets,
                   int32_t* token_rows);

// out[r] = x[row_token[r]] for r < rows; (rows, d).
void gather_rows(int64_t rows, int64_t d, const float* x, const int32_t* row_token, float* out);

// An expert's activation: SwiGLU silu(h1) ⊙ h3; GELU gelu(h1) (no w3); SwiGLUClamped (gpt-oss)
// (clamp(h3, -limit, limit) + 1) ⊙ g σ(alpha g) with g = min(h1, limit). A kind converts to an
// Act with gpt-oss's alpha and limit (which only the clamped kind reads).
struct Act {
  enum Kind { SwiGLU, GELU, SwiGLUClamped };
  constexpr Act(Kind k) : kind(k) {}  // NOLINT(google-explicit-constructor)
  constexpr Act(Kind k, float a, float l) : kind(k), alpha(a), limit(l) {}
  Kind kind;
  float alpha = 1.702f, limit = 7.0f;
  // w3 exists (h3, dh3, dw3 are used).
  constexpr bool has_up() const { return kind != GELU; }
};

// One expert on n contiguous rows. x (n, d); w1 (F, d); w3 (F, d) or null for GELU; w2 (d, F).
// Saves h1 (n, F), h3 (n, F) (SwiGLU forms, unclamped), act (n, F); writes out (n, d).
void ffn_forward(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x, const float* w1,
                 const float* w3, const float* w2, float* h1, float* h3, float* act, float* out);

// ffn_forward with the gate projection w1 (F, dg) reading its own input xg (n, dg) instead of x
// (Autonomy-of-Experts: the router's low-rank activations); w3 still reads x (n, d).
// ldw2 > 0: w2 is the first F columns of a (d, ldw2) matrix (an expert of ldw2 hidden units run
// on its first F: w1, w3 are then their first F rows, contiguous); 0 means ldw2 = F.
void ffn_forward_gated(Act act_kind, int64_t n, int64_t d, int64_t dg, int64_t F, const float* x,
                       const float* xg, const float* w1, const float* w3, const float* w2,
                       float* h1, float* h3, float* act, float* out, int64_t ldw2 = 0);

// act (size) = the activation of h1 (and h3): the step between the two GEMMs of an expert.
void ffn_activation(Act act_kind, int64_t size, const float* h1, const float* h3, float* act);

// Backward of ffn_forward. dout (n, d). Writes dw1, dw3 (F, d), dw2 (d, F) (accumulating when
// `accumulate`), dx (n, d). `dact` (n, F) and `dh3` (n, F) are scratch.
void ffn_backward(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x, const float* w1,
                  const float* w3, const float* w2, const float* h1, const float* h3,
                  const float* act, const float* dout, float* dact, float* dh3, float* dw1,
                  float* dw3, float* dw2, float* dx, bool accumulate);

// Backward of ffn_forward_gated: dw1 (F, dg) from xg, dxg (n, dg) = the gradient of xg, dx (n, d)
// through w3 only (zero for GELU); the rest as ffn_backward. ldw2 as in ffn_forward_gated: w2
// and dw2 are then the first F columns of (d, ldw2) matrices (only those columns are written).
void ffn_backward_gated(Act act_kind, int64_t n, int64_t d, int64_t dg, int64_t F, const float* x,
                        const float* xg, const float* w1, const float* w3, const float* w2,
                        const float* h1, const float* h3, const float* act, const float* dout,
                        float* dact, float* dh3, float* dw1, float* dw3, float* dw2, float* dx,
                        float* dxg, bool accumulate, int64_t ldw2 = 0);

// y[t] += Σ_{rows r of t} row_weight[r] * out[r], with the CSR from rows_by_token.
void combine_rows(int64_t T, int64_t d, const int64_t* token_offsets, const int32_t* token_rows,
                  const float* row_weight, const float* out, float* y);

// Backward of combine_rows per row r of token row_token[r]: dout[r] = row_weight[r] · dy[token]
// (rows, d); d_row_weight[r] = <dy[token], out[r]> (summed in double).
void combine_rows_backward(int64_t rows, int64_t d, const int32_t* row_token,
                           const float* row_weight, const float* dy, const float* out, float* dout,
                           float* d_row_weight);

// out (n) = a ⊙ b: the router input under multiplicative jitter.
void multiply(int64_t n, const float* a, const float* b, float* out);
// out (n) += a ⊙ b, or += a where b is null.
void add_product(int64_t n, const float* a, const float* b, float* out);
// y[t] += scale[t] · x[t] for rows t < T of d: a pass-through of the input (null experts).
void add_scaled_rows(int64_t T, int64_t d, const float* scale, const float* x, float* y);
// Backward of add_scaled_rows: dx[t] += scale[t] · dy[t]; dscale[t] = <dy[t], x[t]> (double).
void add_scaled_rows_backward(int64_t T, int64_t d, const float* scale, const float* x,
                              const float* dy, float* dx, float* dscale);

// Makes OpenBLAS single-threaded: OpenMP owns the threads (see kernels.cpp).
void init_blas_threads();

// C (M, N) = alpha * op(A) op(B) + beta * C, row-major; thin wrapper over cblas_sgemm.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float* A,
          int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// BF16 weights (inference): C (M, N) = A (M, K) · Wᵀ with W (N, K) bfloat16 bits, float32
// accumulation. Bf16Activations::Round: A is rounded to BF16 first (2^-9 relative, what llama.cpp
// and PyTorch's bf16 matmuls do) for the AVX-512 BF16 dot-product instruction, 4 × 4 outputs at a
// time (without it: the same rounded values through the float32 paths). Float32: A stays exact;
// few rows (M ≤ 4, decode) take a dot product per output straight from the BF16 weights
// (AVX-512F or a portable loop), more rows take blocks of W widened in cache, then sgemm. The
// instruction sets are detected at run time. Threads split N outside a parallel region.
enum class Bf16Activations { Round, Float32 };
void gemm_bf16w(int64_t M, int64_t N, int64_t K, const float* A, const uint16_t* W, float* C,
                Bf16Activations acts);
// ffn_forward with BF16 w1, w3, w2.
void ffn_forward_bf16(Act act_kind, int64_t n, int64_t d, int64_t F, const float* x,
                      const uint16_t* w1, const uint16_t* w3, const uint16_t* w2, float* h1,
                      float* h3, float* act, float* out, Bf16Activations acts);
// Which instructions gemm_bf16w may use; the setters can only turn them off (tests compare the
// paths). bf16_simd: AVX-512F (every path); bf16_dot: AVX-512 BF16 (rounded activations).
bool bf16_simd_available();
void set_bf16_simd(bool enabled);
bool bf16_dot_available();
void set_bf16_dot(bool enabled);

}  // namespace switchyard::cpu
