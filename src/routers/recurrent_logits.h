// RMoE's layerwise recurrent router (docs/routers/rmoe.md): each MoE layer projects its input
// to a small width, one GRU cell shared by all the model's MoE layers combines it with the
// previous MoE layer's GRU output, and the layer's gate reads the result. The recurrence runs
// over depth, not over tokens. A LogitFunction any router can hold.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

struct RecurrentLogitsConfig {
  int64_t dim = 256;  // p: the projection's and the GRU's width
};

// Tensors: projection (p, d) and gate (R, p) per layer; the shared GRU cell gru_weight_ih,
// gru_weight_hh (3p, p) and gru_bias_ih, gru_bias_hh (3p), gate rows in PyTorch's order
// [reset; update; new]. Per token: u = P x; r = σ(W_ir u + b_ir + W_hr h' + b_hr), z likewise,
// n = tanh(W_in u + b_in + r ⊙ (W_hn h' + b_hn)), h = (1 − z) ⊙ n + z ⊙ h' (h' = the carry in,
// 0 at the first MoE layer); logits = G h; the carry out is h.
class RecurrentLogits final : public LogitFunction {
 public:
  explicit RecurrentLogits(const RecurrentLogitsConfig& config) : config_(config) {}
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  int64_t carry_dim(int64_t /*d*/, int64_t /*R*/) const override { return config_.dim; }
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& /*context*/, const LogitCarry& carry, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& /*context*/, const std::vector<float>& saved,
                const LogitCarryGrad& carry, const float* d_logits, float* dx,
                float* const* dw) const override;

 private:
  RecurrentLogitsConfig config_;
};

}  // namespace switchyard::routers
