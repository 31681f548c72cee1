// Transformer ops with explicit backward, on plain pointers (llm.c style). N = B·T rows.
#pragma once

#include <cstdint>

namespace switchyard::ops {

// y = x / sqrt(mean(x²) + eps) · g. x, y (N, C); g (C); rstd (N) saved for backward.
void rmsnorm_forward(int64_t N, int64_t C, const float* x, const float* g, double eps, float* y,
                     float* rstd);
// dx += ..., dg += ... given dy (N, C).
void rmsnorm_backward(int64_t N, int64_t C, const float* x, const float* g, const float* rstd,
                      const float* dy, float* dx, float* dg);

// Rotates the q and k parts of qkv (B, T, 3C) in place (rotate-half RoPE, positions 0..T-1).
// `inverse` applies the transpose rotation, which is the backward of the forward rotation.
void rope(int64_t B, int64_t T, int64_t H, int64_t D, double theta, float* qkv, bool inverse);

// Causal multi-head attention. qkv (B, T, 3C) with RoPE applied; probs (B, H, T, T) saved;
// out (B, T, C).
void attention_forward(int64_t B, int64_t T, int64_t H, int64_t D, const float* qkv, float* probs,
                       float* out);
// Each token's causal attention importance from probs (B, H, T, T): the weight its own query
// gives itself, mean over heads, times its t + 1 visible keys (1 = uniform attention),
// importance (B·T). Reads only position t's row, so it is causal (docs/model.md).
void attention_self_importance(int64_t B, int64_t T, int64_t H, const float* probs,
                               float* importance);
// dqkv (B, T, 3C) overwritten; scratch (B, H, T, T).
void attention_backward(int64_t B, int64_t T, int64_t H, int64_t D, const float* qkv,
                        const float* probs, const float* dout, float* dqkv, float* scratch);

// Mean cross-entropy of logits (N, V) against targets (N); if dlogits is not null it receives
// scale · (softmax − onehot) / N.
double cross_entropy(int64_t N, int64_t V, const float* logits, const int32_t* targets,
                     float* dlogits, float scale);

// Mean over rows of the symmetric KL divergence ½ Σ_v (p_v − q_v)(log p_v − log q_v) of
// p = softmax(a), q = softmax(b), a and b (N, V) (THOR's consistency loss). Non-null da, db are
// overwritten with scale · ∂/∂a and scale · ∂/∂b of that mean.
double symmetric_kl(int64_t N, int64_t V, const float* a, const float* b, float* da, float* db,
                    float scale);

}  // namespace switchyard::ops
