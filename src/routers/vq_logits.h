// VQMoE's logits (docs/routers/vqmoe.md, section 1): a continuous router, a codebook whose nearest
// code names the token's expert, and a two-way mixing gate, in one row of 3E + 2 logits. The two
// distance blocks hold the same value with VQ-VAE's two stop-gradients: the codebook block's
// gradient reaches only the codebook, the commitment block's only x. A LogitFunction any router
// can hold.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

// Tensors: gate W (E, d), codebook C (E, d), mix M (2, d), with E = (R − 2) / 3.
// logits (T, 3E + 2): columns [0, E) s = x Wᵀ; [E, 2E) a_e = −‖sg[x] − C_e‖² / d;
// [2E, 3E) b_e = −‖x − sg[C_e]‖² / d (mean squared distances, F.mse_loss's scale);
// [3E, 3E + 2) m = x Mᵀ.
// Backward: ∂W = ∂sᵀ x, ∂M = ∂mᵀ x, ∂C_e = Σ_t ∂a_{t,e} (2/d)(x_t − C_e);
// ∂x = ∂s W + ∂m M + Σ_e ∂b_{t,e} (−2/d)(x_t − C_e).
class VQLogits final : public LogitFunction {
 public:
  // The expert count of a row of R logits.
  static int64_t experts(int64_t R) { return (R - 2) / 3; }
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& context, const LogitCarry& carry, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& context, const std::vector<float>& saved,
                const LogitCarryGrad& carry, const float* d_logits, float* dx,
                float* const* dw) const override;
};

}  // namespace switchyard::routers
