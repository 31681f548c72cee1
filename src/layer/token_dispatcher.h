// Dispatch and combine of the MoE layer: a routing plan's rows to their experts and the experts'
// outputs back, split the way Megatron-Core's token dispatcher splits them (pre-process,
// communicate, post-process), so a dispatcher that communicates (the MPI all-to-all of
// expert_parallel_dispatcher.h) can overlap its transfers with compute and replace the local one
// without touching the layer. The rows' state lives in the MoECache (expert_offsets,
// row_assignment, row_token, row_weight, the by-token CSR, xd), which backward reads; a
// communicating dispatcher keeps its exchange state itself (one dispatcher per layer).
#pragma once

#include <switchyard/moe_layer.h>

#include <cstdint>
#include <vector>

namespace switchyard::layer {

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  // Capacity (a choice past its expert's capacity in its group is dropped: plan.kept), this
  // process's kept assignments in expert order (its "rows": c.row_assignment, c.row_token,
  // c.row_weight, the by-token CSR c.token_offsets (T + 1), c.token_rows) and their inputs
  // gathered from x (T, d) in that order. Returns the rows.
  virtual int64_t dispatch_preprocess(RoutingPlan& plan, const float* x, int64_t T, int64_t d,
                                      int64_t E, MoECache& c) = 0;
  // The rows to the process that holds their expert (local: nothing moves).
  virtual void dispatch_communicate(int64_t d, MoECache& c) = 0;
  // The experts' inputs as the expert backend takes them: c.xd (expert rows, d) grouped by expert
  // with c.expert_offsets (E + 1); locally the expert rows are the rows.
  virtual void dispatch_postprocess(int64_t d, MoECache& c) = 0;
  // The experts' outputs c.out (expert rows, d) back to their tokens: y (T, d) += Σ over a
  // token's rows of row_weight · output.
  virtual void combine(MoECache& c, int64_t T, int64_t d, float* y) = 0;
  // Backward of combine: dout (expert rows, d) = row_weight · dy[token]; d_weight (A) at each
  // row's assignment = <dy[token], output>, the router's gradient (other entries untouched).
  virtual void combine_backward(const MoECache& c, const float* dy, int64_t d, float* dout,
                                float* d_weight) = 0;
  // Backward of dispatch: dx (T, d) += Σ over a token's rows of dxd (expert rows, d).
  virtual void dispatch_backward(const MoECache& c, const float* dxd, int64_t T, int64_t d,
                                 float* dx) = 0;
};

// Capacity, grouping by expert and the by-token CSR of a plan's kept assignments into c (the
// pre-process both dispatchers share); `slots` is scratch. Returns the rows.
int64_t group_rows(RoutingPlan& plan, int64_t T, int64_t E, std::vector<int64_t>& slots,
                   MoECache& c);

// Every row stays in this process.
class LocalDispatcher final : public TokenDispatcher {
 public:
  int64_t dispatch_preprocess(RoutingPlan& plan, const float* x, int64_t T, int64_t d, int64_t E,
                              MoECache& c) override;
  void dispatch_communicate(int64_t, MoECache&) override {}
  void dispatch_postprocess(int64_t, MoECache&) override {}
  void combine(MoECache& c, int64_t T, int64_t d, float* y) override;
  void combine_backward(const MoECache& c, const float* dy, int64_t d, float* dout,
                        float* d_weight) override;
  void dispatch_backward(const MoECache& c, const float* dxd, int64_t T, int64_t d,
                         float* dx) override;

 private:
  std::vector<int64_t> slots_;  // (G E) capacity counters
  std::vector<float> ones_;     // (rows) unit weights for dispatch_backward's sum
  std::vector<float> d_row_;    // (rows) combine_backward's dot products
};

}  // namespace switchyard::layer
