// Autonomy-of-Experts' self-selection (docs/routers/aoe.md): every expert's gate projection is
// factorised w1_e = W_up,e W_down,e; the router's score of expert e is the norm of the token's
// low-rank activation a_e = W_down,e x, and the experts chosen go on from that same a_e. A
// LogitFunction whose activations feed the experts' gate projection (expert_gate_input_dim).
#pragma once

#include <switchyard/router.h>

#include <cstdint>
#include <vector>

namespace switchyard::routers {

struct AoeLogitsConfig {
  int64_t rank = 16;  // r, the width of each expert's low-rank activation (the paper's d_low)
  // W_down starts N(0, down_std); 0: the model's init_std. At a small width the code's 0.02
  // gives small activations a (docs/routers/aoe.md, "Initialisation").
  double down_std = 0.0;
};

// Tensor: down (R r, d), expert e's W_down in rows [e r, (e + 1) r).
// logits z_te = ‖a_te‖₂ with a_te = W_down,e x_t (r); the experts' w1 is (E, F, r) and reads a_te.
class AoeLogits final : public LogitFunction {
 public:
  explicit AoeLogits(const AoeLogitsConfig& config) : config_(config) {}
  const AoeLogitsConfig& config() const { return config_; }
  std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const override;
  void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
               const LogitContext& /*context*/, const LogitCarry& /*carry*/, float* logits,
               std::vector<float>& saved) const override;
  void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                const LogitContext& /*context*/, const std::vector<float>& saved,
                const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                float* const* dw) const override;
  int64_t expert_gate_input_dim(int64_t /*d*/, int64_t /*R*/) const override {
    return config_.rank;
  }
  const float* expert_gate_inputs(const std::vector<float>& saved) const override {
    return saved.data();  // a (T, R, r) leads `saved`
  }
  void backward_gate_inputs(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                            const std::vector<float>& saved, const float* d_gate, float* dx,
                            float* const* dw) const override;

 private:
  AoeLogitsConfig config_;
};

}  // namespace switchyard::routers
