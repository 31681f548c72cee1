// Routing the tokens of several ranks as one batch (MoELayer::set_routing_communicator): the
// exchanges that give every rank the global batch's router inputs, and the step from the global
// plan to this rank's share. Small next to the rows: (T_global, R) logits, (A_global) weights.
#pragma once

#include <switchyard/moe_layer.h>

#include <cstdint>
#include <vector>

#include "dist/communicator.h"

namespace switchyard::layer {

// Token counts, sequence lengths (empty = one sequence of T) and, where `with_ids`, the token ids
// of every rank into c.global (T, offset, rank_tokens, rank_offsets, seq_lens, token_ids).
void gather_batch(dist::Communicator& comm, const MoEBatch& batch, bool with_ids, MoECache& c);

// This rank's logits (T, R) -> c.global.logits (T_global, R).
void gather_logits(dist::Communicator& comm, const float* local, int64_t R, MoECache& c);

// Capacity over the global plan (its `kept`, as the local dispatch would apply it in one
// process), then this rank's assignments as c.plan: tokens renumbered from 0, kept as decided,
// no capacity left to apply, the passthrough of its tokens, the global selection counts.
void take_local_plan(int64_t E, std::vector<int64_t>& slots, std::vector<int64_t>& offsets,
                     std::vector<int32_t>& rows, MoECache& c);

// Backward: this rank's ∂L/∂weight (A_local) and ∂L/∂passthrough (T_local, or null) -> the global
// batch's (A_global) and (T_global), summed over ranks.
void gather_router_gradients(dist::Communicator& comm, const MoECache& c, const float* d_weight,
                             const float* d_pass, std::vector<float>& d_weight_global,
                             std::vector<float>& d_pass_global);

}  // namespace switchyard::layer
