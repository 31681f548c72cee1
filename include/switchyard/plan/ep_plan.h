// Expert-parallel planning from routing traces (`switchyard ep-plan`, docs/distributed.md):
// where each expert lives, what each rank computes, what the all-to-alls move inside and across
// nodes, what a capacity factor drops, and a predicted step time from a stated cost model.
// Everything here is a pure function of its arguments (no clocks, no files).
#pragma once

#include <switchyard/infer/trace.h>

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::plan {

// R ranks, G per node; rank r sits on node r / G.
struct Topology {
  int64_t ranks = 1, ranks_per_node = 1;
  int64_t nodes() const { return ranks / ranks_per_node; }
  int64_t node_of(int64_t rank) const { return rank / ranks_per_node; }
};

// How the trace's tokens become steps and what capacity applies.
struct Workload {
  int64_t tokens_per_step = 0;  // S; 0 = all tokens as one step
  double capacity_factor = 0;   // C; 0 = no capacity (no drops)
};

// The cost model's parameters (bandwidths in GB/s = 1e9 bytes/s, latencies in µs).
struct CostModel {
  int64_t hidden = 0;     // D
  int64_t expert_ff = 0;  // F
  double bytes_per_element = 2;
  double intra_gbps = 0, inter_gbps = 0;
  double intra_latency_us = 0, inter_latency_us = 0;
  double gemm_gflops = 0;
  double row_bytes() const { return double(hidden) * bytes_per_element; }
};

// Which ranks hold each expert, per MoE layer.
struct Placement {
  std::string name;
  int64_t layers = 0, experts = 0;
  std::vector<int32_t> rank;                   // (L, E) the primary rank of each expert
  std::vector<std::vector<int32_t>> replicas;  // (L, E) extra ranks holding a copy
  int64_t skipped_replicas = 0;                // asked for but not placed (see add_replicas)
  int32_t primary(int64_t l, int64_t e) const { return rank[size_t(l * experts + e)]; }
  const std::vector<int32_t>& extra(int64_t l, int64_t e) const {
    return replicas[size_t(l * experts + e)];
  }
};

// Rows (token, slot) routed from the tokens held by each source rank to each expert, before
// capacity: (L, R, E). Feeds the placement searches.
struct RouteCounts {
  int64_t layers = 0, ranks = 0, experts = 0;
  std::vector<int64_t> rows;  // (L, R, E)
  int64_t at(int64_t l, int64_t r, int64_t e) const {
    return rows[size_t((l * ranks + r) * experts + e)];
  }
};

struct LayerPlanStats {
  std::vector<int64_t> rank_rows;  // (R) rows computed per rank, all steps
  int64_t routed_rows = 0, dropped_rows = 0;
  double max_over_mean = 0;  // max / mean of rank_rows
  // Dispatch phase, all steps (combine moves the same rows back): rows leaving their token's rank.
  int64_t pair_intra_rows = 0, pair_inter_rows = 0;    // one per (token, expert) pair
  int64_t dedup_intra_rows = 0, dedup_inter_rows = 0;  // one per (token, destination rank)
  std::vector<int64_t> pair_sent, pair_recv;           // (R) dispatch rows per rank
  std::vector<int64_t> dedup_sent, dedup_recv;         // (R)
  // Predicted seconds, summed over steps.
  double compute_s = 0, dispatch_s = 0, combine_s = 0, overlapped_s = 0;
  double dedup_dispatch_s = 0, dedup_combine_s = 0, dedup_overlapped_s = 0;
};

struct PlanResult {
  std::string placement;
  int64_t tokens = 0, steps = 0, ranks = 0;
  double row_bytes = 0;
  std::vector<LayerPlanStats> layers;  // (L)
  // Over all layers and steps.
  int64_t routed_rows = 0, dropped_rows = 0;
  double dropped_fraction = 0;
  double mean_max_over_mean = 0;  // mean over layers of each layer's max / mean
  double max_max_over_mean = 0;
  // Bytes per step (mean over steps), dispatch + combine.
  double pair_intra_bytes_per_step = 0, pair_inter_bytes_per_step = 0;
  double dedup_intra_bytes_per_step = 0, dedup_inter_bytes_per_step = 0;
  // Predicted seconds per step (mean over steps): Σ_layers (dispatch + compute + combine) and
  // Σ_layers max(compute, dispatch + combine); the dedup_ variants use the deduplicated volume.
  double step_serial_s = 0, step_overlapped_s = 0;
  double dedup_step_serial_s = 0, dedup_step_overlapped_s = 0;
};

// Errors name the flag and the value.
void validate(const Topology& topo, int64_t experts);
void validate(const CostModel& cost, const Topology& topo);
void validate(const Workload& work);

// "intra=A,inter=B" (either key may be missing: NaN); `flag` names the option in errors.
struct LinkPair {
  double intra, inter;
};
LinkPair parse_link_pair(const std::string& flag, const std::string& value);

// The traces' tokens one after the other; they must agree on layers and experts (K is padded
// with -1 to the largest). Errors name both files and the field. meta is the first trace's.
infer::RoutingTrace concat_traces(const std::vector<infer::RoutingTrace>& traces,
                                  const std::vector<std::string>& sources);

// The rank holding each token: steps of S tokens, each split into R contiguous shards; a
// step's remainder of n mod R tokens goes one each to the last ranks. (N)
std::vector<int32_t> token_ranks(int64_t tokens, int64_t ranks, int64_t tokens_per_step);

RouteCounts count_routes(const infer::RoutingTrace& trace, const Topology& topo,
                         const Workload& work);

// Expert e on rank e / (E / R).
Placement contiguous_placement(int64_t layers, int64_t experts, const Topology& topo);
// Longest-processing-time on the measured per-expert rows with E / R experts per rank, then
// pair swaps that lower (max rank rows, cross-node rows); also started from contiguous, the
// better of the two kept, so it is never worse than contiguous.
Placement balanced_placement(const RouteCounts& counts, const Topology& topo);
// One extra copy for each of the `redundant` most loaded experts of each layer (see
// docs/distributed.md for where it goes and when it is skipped).
void add_replicas(Placement& placement, const RouteCounts& counts, const Topology& topo,
                  int64_t redundant);

// The rank a token on `source` sends its row for an expert held by `holders` (primary first):
// its own rank, else the first holder on its node, else the primary.
int32_t pick_holder(int32_t source, const std::vector<int32_t>& holders, const Topology& topo);

PlanResult evaluate(const infer::RoutingTrace& trace, const Topology& topo,
                    const Placement& placement, const Workload& work, const CostModel& cost);

}  // namespace switchyard::plan
