// The building blocks the architectures share, on plain pointers (rows × features, row-major).
// Threads are OpenMP's; OpenBLAS stays single-threaded and each thread calls it on its own block.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace switchyard::infer::blocks {

// A weight matrix (rows, cols) as Hugging Face stores it: float32, or bfloat16 bits kept as the
// checkpoint has them (computed with float32 accumulation).
struct Matrix {
  std::vector<float> f32;
  std::vector<uint16_t> bf16;
  cpu::Bf16Activations acts = cpu::Bf16Activations::Round;  // how a BF16 product treats x
  bool empty() const { return f32.empty() && bf16.empty(); }
  size_t size() const { return f32.size() + bf16.size(); }
};

// y (N, out) = x (N, in) · Wᵀ (+ b). W (out, in) as Hugging Face stores it; b (out) or null.
void linear(int64_t N, int64_t in, int64_t out, const float* x, const float* W, const float* b,
            float* y);

void linear(int64_t N, int64_t in, int64_t out, const float* x, const Matrix& W, const float* b,
            float* y);

// y (N, C) = x / sqrt(mean(x²) + eps) · g, in float32 as transformers computes it; y may be x.
void rmsnorm(int64_t N, int64_t C, const float* x, const float* g, double eps, float* y);

// y (N, d) = W2 (silu(W1 x) ⊙ W3 x). w1, w3 (F, d); w2 (d, F); h (N, 2F) scratch.
void swiglu(int64_t N, int64_t d, int64_t F, const float* x, const Matrix& w1, const Matrix& w3,
            const Matrix& w2, float* h, float* y);
// Row `row` of a (rows, C) matrix into out (C) as float32: the embedding lookup.
void copy_row(const Matrix& W, int64_t C, int64_t row, float* out);

// Causal attention of n new queries against a cache. q (n, H, Dq) at positions pos0 .. pos0+n-1;
// K (L, Hkv, Dq) and V (L, Hkv, Dv) hold positions 0 .. pos0+n-1 (L ≥ pos0 + n); query head h
// reads KV head h / (H / Hkv). window > 0: a query at p sees keys p - window + 1 .. p.
// out (n, H, Dv).
void attention(int64_t n, int64_t pos0, int64_t H, int64_t Hkv, int64_t Dq, int64_t Dv,
               const float* q, const float* K, const float* V, float scale, int64_t window,
               float* out);

}  // namespace switchyard::infer::blocks
