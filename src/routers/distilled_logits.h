// StableMoE's two routers in one logit row (docs/routers/stablemoe.md, section 7): the backbone
// affinities s = W x against E expert centroids, and the distilled affinities ŝ = K Q[id] of a
// token-id embedding against E centroids of its own, which read nothing but the token's id. A
// LogitFunction any router can hold.
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

struct DistilledLogitsConfig {
  int64_t dim = 50;  // D, the token-id embedding's width (the code's distill_routing_dim)
};

// Tensors: centroids W (E, d), token_embedding Q (V, D), token_centroids K (E, D), E = R / 2.
// logits (T, 2E): columns [0, E) s = x Wᵀ, columns [E, 2E) ŝ = Q[id] Kᵀ. Nothing is normalised.
// Backward: ∂W = ∂sᵀ x, ∂x = ∂s W, ∂K = ∂ŝᵀ Q[id], ∂Q[v] = Σ_{t: id_t = v} ∂ŝ_t K (rows of
// absent ids 0).
class DistilledLogits final : public LogitFunction {
 public:
  explicit DistilledLogits(const DistilledLogitsConfig& config) : config_(config) {}
  const DistilledLogitsConfig& config() const { return config_; }
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  bool needs_vocab() const override { return true; }
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& context, const LogitCarry& /*carry*/, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& context, const std::vector<float>& saved,
                const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                float* const* dw) const override;

 private:
  DistilledLogitsConfig config_;
};

}  // namespace switchyard::routers
