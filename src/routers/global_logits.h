// SpeechMoE2's router input (docs/routers/speechmoe2.md): the layer input concatenated with a
// global embedding, here the causal running mean of the input over the token's sequence, projected
// to D dimensions. A LogitFunction any top-k router can hold ("logits": "global").
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

struct GlobalLogitsConfig {
  int64_t dim = 16;  // D, the global embedding's width
};

// Tensors: gate W (R, d + D) = [W_x | W_g], global_projection P (D, d).
// m_t = mean of x_u over u = s(t) .. t (s(t) the first token of t's sequence), g_t = P m_t,
// logits z_t = W_x x_t + W_g g_t.
class GlobalLogits final : public LogitFunction {
 public:
  explicit GlobalLogits(const GlobalLogitsConfig& config) : config_(config) {}
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  bool reads_earlier_tokens() const override { return true; }
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& context, const LogitCarry& /*carry*/, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& context, const std::vector<float>& saved,
                const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                float* const* dw) const override;

 private:
  GlobalLogitsConfig config_;
};

}  // namespace switchyard::routers
