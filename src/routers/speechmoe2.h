// SpeechMoE's sparsity L1 and mean importance losses (docs/routers/speechmoe2.md), which
// SpeechMoE2 keeps; any top-k router over softmax scores can take them.
#pragma once

#include <switchyard/router.h>

namespace switchyard::routers {

// With p_t = softmax(z_t) over the R outputs of the in.T routed tokens:
// α (1/T) Σ_t ‖p_t / ‖p_t‖₂‖₁ + β R Σ_r ((1/T) Σ_t p_tr)². Returns the value; adds its gradient
// to d_logits (T, R) when that is not null. 0 when both coefficients are 0.
double speechmoe_losses(const RouterInput& in, double sparsity, double importance, float* d_logits);

}  // namespace switchyard::routers
