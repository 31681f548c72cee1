// Experts merged per sequence by the routing weights (routers with traits.pooled_per_sequence,
// SMEAR): forward and backward, called by MoELayer in place of dispatch and combine.
#pragma once

#include <switchyard/moe_layer.h>
#include <switchyard/router.h>

#include <cstdint>
#include <vector>

#include "kernels/cpu/kernels.h"

namespace switchyard::layer {

// Routes the sequences' mean inputs (c.router_in (S, d), c.logits (S, R)), merges the experts'
// weights per sequence (c.merged) and adds each sequence's merged-expert output to y (T, d).
void merged_experts_forward(const Router& router, bool training, cpu::Act act,
                            const MoEShape& shape, int64_t R, const MoEParams& p,
                            const MoEBatch& batch, MoECache& c, float* y, RoutingStats& stats);
// Gradients of the experts' weights, the gate and dx (T, d, accumulated) given dy (T, d);
// d_weight (A) and d_logits (S, R) are the caller's zeroed scratch.
void merged_experts_backward(const Router& router, bool training, cpu::Act act,
                             const MoEShape& shape, int64_t R, const MoEParams& p,
                             const MoEBatch& batch, const MoECache& c, const float* dy,
                             std::vector<float>& d_weight, std::vector<float>& d_logits, float* dx,
                             const MoEGrads& g);

}  // namespace switchyard::layer
