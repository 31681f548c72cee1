// Yuan 2.0-M32's attention router (docs/routers/yuan.md): per token, a query, a key and a value
// for each of the R outputs, and the logits are one attention over the outputs, z = softmax(q kᵀ)
// v. A LogitFunction any router can hold.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

// Tensor: qkv (3R, d), rows [q; k; v]. Per token, q, k, v (R) = their rows times x, then
// z_i = Σ_j softmax_j(q_i k_j) v_j (no scaling, as Yuan's code).
class AttentionLogits final : public LogitFunction {
 public:
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& /*context*/, const LogitCarry& /*carry*/, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& /*context*/, const std::vector<float>& saved,
                const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                float* const* dw) const override;
};

}  // namespace switchyard::routers
