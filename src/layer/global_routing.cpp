#include "layer/global_routing.h"

#include <switchyard/error.h>

#include <algorithm>

#include "kernels/cpu/kernels.h"

namespace switchyard::layer {
namespace {

std::vector<int64_t> prefix_of(const std::vector<int64_t>& counts) {
  std::vector<int64_t> displs(counts.size(), 0);
  for (size_t q = 1; q < counts.size(); ++q) displs[q] = displs[q - 1] + counts[q - 1];
  return displs;
}

}  // namespace

void gather_batch(dist::Communicator& comm, const MoEBatch& batch, bool with_ids, MoECache& c) {
  MoECache::GlobalRouting& g = c.global;
  const int P = comm.size();
  g.active = true;
  g.rank_tokens.resize(size_t(P));
  comm.allgather(batch.T, g.rank_tokens.data());
  g.rank_offsets = prefix_of(g.rank_tokens);
  g.offset = g.rank_offsets[size_t(comm.rank())];
  g.T = g.rank_offsets.back() + g.rank_tokens.back();
  const std::vector<int64_t> mine =
      batch.seq_lens.empty() ? std::vector<int64_t>{batch.T} : batch.seq_lens;
  std::vector<int64_t> seq_counts(static_cast<size_t>(P));
  comm.allgather(int64_t(mine.size()), seq_counts.data());
  const std::vector<int64_t> seq_displs = prefix_of(seq_counts);
  g.seq_lens.resize(size_t(seq_displs.back() + seq_counts.back()));
  comm.allgatherv(mine.data(), int64_t(mine.size()), g.seq_lens.data(), seq_counts.data(),
                  seq_displs.data(), sizeof(int64_t));
  if (with_ids) {
    if (!batch.token_ids) fail("moe_layer: the router needs token ids and the batch has none");
    g.token_ids.resize(size_t(g.T));
    comm.allgatherv(batch.token_ids, batch.T, g.token_ids.data(), g.rank_tokens.data(),
                    g.rank_offsets.data(), sizeof(int64_t));
  } else {
    g.token_ids.clear();
  }
}

void gather_logits(dist::Communicator& comm, const float* local, int64_t R, MoECache& c) {
  MoECache::GlobalRouting& g = c.global;
  std::vector<int64_t> counts(g.rank_tokens), displs(g.rank_offsets);
  for (size_t q = 0; q < counts.size(); ++q) {
    counts[q] *= R;
    displs[q] *= R;
  }
  g.logits.resize(size_t(g.T * R));
  comm.allgatherv(local, c.T * R, g.logits.data(), counts.data(), displs.data(), sizeof(float));
}

void take_local_plan(int64_t E, std::vector<int64_t>& slots, std::vector<int64_t>& offsets,
                     std::vector<int32_t>& rows, MoECache& c) {
  MoECache::GlobalRouting& g = c.global;
  RoutingPlan& gp = g.plan;
  const int64_t A = int64_t(gp.size()), G = int64_t(gp.capacity.size());
  slots.resize(size_t(std::max(G * E, E)));
  offsets.resize(size_t(E + 1));
  rows.resize(size_t(A));
  g.kept = cpu::dispatch(A, gp.expert.data(), gp.group.data(), gp.kept.data(), gp.capacity.data(),
                         G, E, slots.data(), offsets.data(), rows.data());
  RoutingPlan& p = c.plan;
  p.clear();
  g.local_assignment.clear();
  const int64_t begin = g.offset, end = g.offset + c.T;
  for (int64_t a = 0; a < A; ++a) {
    const int64_t t = gp.token[size_t(a)];
    if (t < begin || t >= end) continue;
    p.add(int32_t(t - begin), gp.expert[size_t(a)], gp.group[size_t(a)], gp.weight[size_t(a)]);
    p.kept.back() = gp.kept[size_t(a)];
    g.local_assignment.push_back(int32_t(a));
  }
  p.capacity.assign(size_t(G), 0);  // already applied over the global batch
  if (!gp.passthrough.empty())
    p.passthrough.assign(gp.passthrough.begin() + begin, gp.passthrough.begin() + end);
  p.selection_counts = gp.selection_counts;
  p.first_choice_counts = gp.first_choice_counts;
}

void gather_router_gradients(dist::Communicator& comm, const MoECache& c, const float* d_weight,
                             const float* d_pass, std::vector<float>& d_weight_global,
                             std::vector<float>& d_pass_global) {
  const MoECache::GlobalRouting& g = c.global;
  d_weight_global.assign(g.plan.size(), 0.0f);
  for (size_t a = 0; a < g.local_assignment.size(); ++a)
    d_weight_global[size_t(g.local_assignment[a])] = d_weight[a];
  comm.allreduce_sum(d_weight_global.data(), int64_t(d_weight_global.size()));
  d_pass_global.clear();
  if (d_pass) {
    d_pass_global.assign(size_t(g.T), 0.0f);
    std::copy(d_pass, d_pass + c.T, d_pass_global.begin() + g.offset);
    comm.allreduce_sum(d_pass_global.data(), g.T);
  }
}

}  // namespace switchyard::layer
