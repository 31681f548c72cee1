// Expert parallelism: P processes (a Communicator's ranks) each route their own tokens; rank q
// holds experts [q·E/P, (q+1)·E/P) (pass them as MoEParams::w*_experts, null elsewhere). Dispatch
// sends each row to its expert's rank (MPI_Alltoall of counts, then MPI_Alltoallv of the expert
// ids and the rows), combine sends the outputs back, and backward moves dout and dx rows the same
// two ways. Rows of an expert are ordered by source rank, then as that rank sent them: for a
// global batch made of the ranks' batches in rank order this is the single-process order, so
// the result equals one process on the whole batch.
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
  // `rows` (received rows, d) in expert order -> `out` in the order they arrived, or back.
  void to_arrival_order(const MoECache& c, const float* rows, int64_t d, float* out) const;
  void from_arrival_order(const MoECache& c, const float* rows, int64_t d, float* out) const;
  // Sends (sent rows, d) to the experts' ranks: recv (received rows, d) in arrival order; or back.
  void forward_rows(const MoECache& c, const float* sent, int64_t d, float* received);
  void backward_rows(const MoECache& c, const float* received, int64_t d, float* sent);

  dist::Communicator& comm_;
  std::vector<int64_t> slots_;
  std::vector<float> arrival_, back_, d_row_, ones_;
};

}  // namespace switchyard::layer
