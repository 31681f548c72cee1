// Expert parallelism: P processes (a Communicator's ranks); rank q holds experts
// [q·E/P, (q+1)·E/P) (pass them as MoEParams::w*_experts, null elsewhere, or all of them).
// Dispatch sends each token once to every rank that holds one of its experts (DeepEP and
// DeepSeek-V3 do the same: a token's bytes cross the link once per destination, not once per
// expert), with an (expert, slot, weight) entry per row: MPI_Alltoall of the token and row
// counts, then MPI_Alltoallv of the entries and of the token rows. The experts' rank sums each
// token's weighted outputs and sends one row back (combine); backward sends dy once per token and
// destination, computes dout and the combine weights' gradients where the outputs are, and sends
// back one dx row per token plus the weights' gradients. Rows of an expert are ordered by source
// rank, then as that rank sent them. The result equals one process on the whole batch up to the
// order of the float sums.
// A plan with a capacity still to apply is refused: capacity is a statistic of the global batch,
// applied before dispatch when the ranks route together (MoELayer::set_routing_communicator).
#pragma once

#include <cstdint>
#include <vector>

#include "dist/communicator.h"
#include "layer/token_dispatcher.h"

namespace switchyard::layer {

class ExpertParallelDispatcher final : public TokenDispatcher {
 public:
  explicit ExpertParallelDispatcher(dist::Communicator& comm) : comm_(comm) {}
  int64_t dispatch_preprocess(RoutingPlan& plan, const float* x, int64_t T, int64_t d, int64_t E,
                              MoECache& c) override;
  void dispatch_communicate(int64_t d, MoECache& c) override;
  void dispatch_postprocess(int64_t d, MoECache& c) override;
  void combine(MoECache& c, int64_t T, int64_t d, float* y) override;
  void combine_backward(const MoECache& c, const float* dy, int64_t d, float* dout,
                        float* d_weight) override;
  void dispatch_backward(const MoECache& c, const float* dxd, int64_t T, int64_t d,
                         float* dx) override;

 private:
  // Token rows (tokens sent, d) to the experts' ranks -> (tokens received, d); or back.
  void to_experts(const MoECache& c, const float* sent, int64_t d, float* received);
  void to_sources(const MoECache& c, const float* received, int64_t d, float* sent);
  // Σ over each received token's rows of scale(row) · rows[position]: (tokens received, d).
  void sum_by_token(const MoECache& c, const float* rows, int64_t d, bool weighted,
                    std::vector<float>& out) const;

  dist::Communicator& comm_;
  std::vector<int64_t> slots_;
  std::vector<int32_t> seen_;  // (T) slot + 1 of a token for the destination being built
  std::vector<float> tokens_, back_, dw_recv_, dw_sent_;
};

}  // namespace switchyard::layer
