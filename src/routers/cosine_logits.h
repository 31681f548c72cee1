// X-MoE's routing on a low-dimensional hypersphere (docs/routers/xmoe.md): the router input is
// projected to D dimensions and compared by cosine with R learned expert embeddings, scaled by a
// learned inverse temperature. A LogitFunction any router can hold.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

namespace switchyard::routers {

struct CosineLogitsConfig {
  int64_t dim = 16;               // D, the routing dimension
  double temperature = 0.07;      // τ at initialisation
  double min_temperature = 0.01;  // τ is clamped here (the scale 1/τ at most 100)
  bool normalize_input = true;    // cos(W x, e): the paper's form; false: (W x) · e / ‖e‖
};

// Tensors: projection (D, d), expert_embeddings (R, D), log_scale (1) = log(1/τ).
// logits = min(exp(log_scale), 1/τ_min) · n(W x) · n(e_r)ᵀ, n = x / max(‖x‖, 1e-4) (or the
// identity for the input when normalize_input is false).
class CosineLogits final : public LogitFunction {
 public:
  explicit CosineLogits(const CosineLogitsConfig& config) : config_(config) {}
  const CosineLogitsConfig& config() const { return config_; }
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& /*context*/, const LogitCarry& /*carry*/, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& /*context*/, const std::vector<float>& saved,
                const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                float* const* dw) const override;

 private:
  CosineLogitsConfig config_;
};

}  // namespace switchyard::routers
