// Dispatch and combine of the MoE layer: a routing plan's rows to their experts and the experts'
// outputs back, split the way Megatron-Core's token dispatcher splits them (pre-process,
// communicate, post-process), so a dispatcher that communicates (MPI all-to-all, next) can
// overlap its transfers with compute and replace the local one without touching the layer.
// The state lives in the MoECache (expert_offsets, row_assignment, row_token, row_weight, the
// by-token CSR, xd), which backward reads.
#pragma once

#include <switchyard/moe_layer.h>

#include <cstdint>
#include <vector>

namespace switchyard::layer {

class TokenDispatcher {
 public:
  virtual ~TokenDispatcher() = default;
  // Capacity (a choice past its expert's capacity in its group is dropped: plan.kept) and the
  // kept assignments in expert order: c.expert_offsets (E + 1), c.row_assignment, c.row_token,
  // c.row_weight (rows), the by-token CSR c.token_offsets (T + 1), c.token_rows. Returns rows.
  virtual int64_t dispatch_preprocess(RoutingPlan& plan, int64_t T, int64_t E, MoECache& c) = 0;
  // The rows to the process that holds their expert (local: nothing moves).
  virtual void dispatch_communicate(MoECache& c) = 0;
  // The experts' inputs in expert order: c.xd (rows, d) from x (T, d).
  virtual void dispatch_postprocess(const float* x, int64_t d, MoECache& c) = 0;
  // y (T, d) += Σ over a token's rows of row_weight · c.out (rows, d).
  virtual void combine(const MoECache& c, int64_t T, int64_t d, float* y) = 0;
  // Backward of combine: dout (rows, d) = row_weight · dy[token]; d_weight (A) at each row's
  // assignment = <dy[token], out row>, the router's gradient (other entries untouched).
  virtual void combine_backward(const MoECache& c, const float* dy, int64_t d, float* dout,
                                float* d_weight) = 0;
  // Backward of dispatch: dx (T, d) += Σ over a token's rows of dxd (rows, d).
  virtual void dispatch_backward(const MoECache& c, const float* dxd, int64_t T, int64_t d,
                                 float* dx) = 0;
};

// Every row stays in this process.
class LocalDispatcher final : public TokenDispatcher {
 public:
  int64_t dispatch_preprocess(RoutingPlan& plan, int64_t T, int64_t E, MoECache& c) override;
  void dispatch_communicate(MoECache&) override {}
  void dispatch_postprocess(const float* x, int64_t d, MoECache& c) override;
  void combine(const MoECache& c, int64_t T, int64_t d, float* y) override;
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
