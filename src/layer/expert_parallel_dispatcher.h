// Expert parallelism: P processes (a Communicator's ranks); rank q holds experts
// [q·E/P, (q+1)·E/P) (pass them as MoEParams::w*_experts, null elsewhere, or all of them).
// Dispatch sends each token once to every rank that holds one of its experts (DeepEP and
// DeepSeek-V3 do the same: a token crosses a link once per destination, not once per expert),
// with an (expert, slot, weight) entry per row (layer::RowExchange). The experts' rank sums
// each token's weighted outputs and sends one row back (combine); backward sends dy once per
// token and destination, computes dout and the combine weights' gradients where the outputs
// are, and sends back one dx row per token plus the weights' gradients.
// Hierarchical (ranks_per_node G < P, ranks q = node·G + local): a token first goes once to each
// node holding one of its experts, to the rank there with its own local index (the only stage
// that crosses nodes, as Tutel's 2-D all-to-all and DeepSeek-V3's node-then-NVLink dispatch),
// then inside that node once to each expert's rank; the way back sums at both stages.
// The result equals one process on the whole batch up to the order of the float sums.
// A plan with a capacity still to apply is refused: capacity is a statistic of the global batch,
// applied before dispatch when the ranks route together (MoELayer::set_routing_communicator).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "dist/communicator.h"
#include "layer/row_exchange.h"
#include "layer/token_dispatcher.h"

namespace switchyard::layer {

class ExpertParallelDispatcher final : public TokenDispatcher {
 public:
  // ranks_per_node 0 (or P): one node, one stage. Else G must divide P; collective over comm.
  explicit ExpertParallelDispatcher(dist::Communicator& comm, int ranks_per_node = 0);
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
  bool hierarchical() const { return node_ != nullptr; }
  // Per final received token: Σ over its rows of (weight ·) rows[position].
  void sum_by_token(const float* rows, int64_t d, bool weighted, std::vector<float>& out) const;
  // Per-token partial sums (final stage's received tokens, d) back into acc (T, d).
  void return_partials(const float* partial, int64_t d, float* acc, double& seconds);
  const RowExchange& last() const { return hierarchical() ? inside_ : across_; }
  void add_counts(const MoECache& c, int64_t d, int phase) const;

  dist::Communicator& comm_;
  int G_ = 0;
  std::unique_ptr<dist::Communicator> node_;  // this node's ranks (hierarchical only)
  RowExchange across_;                        // stage 1 (the only one on one node)
  RowExchange inside_;                        // stage 2 inside the node (hierarchical)
  int64_t E_ = 0;
  std::vector<int64_t> slots_;
  std::vector<int32_t> row_token_, row_dest_, row_expert_, row_assignment_;  // stage-1 rows
  std::vector<float> row_weight_;
  std::vector<int32_t> b_token_, b_dest_, b_expert_, b_from_;  // stage-2 rows (hierarchical)
  std::vector<float> b_weight_;
  std::vector<int64_t> recv_position_;  // final stage's received row -> its row in xd
  std::vector<float> tokens1_, tokens2_, partial_, acc1_, dw_final_, dw1_, dw_src_;
  const float* x_ = nullptr;  // dispatch_preprocess's x, which communicate sends
};

}  // namespace switchyard::layer
