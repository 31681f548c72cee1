#include "routers/aoe_logits.h"

#include <cmath>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {
namespace {

// Through a = x W_downᵀ: dW_down (R r, d) and dx (T, d) from da (T, R r), overwritten (beta 0)
// or accumulated (beta 1).
void down_backward(int64_t T, int64_t d, int64_t Rr, const float* x, const float* down,
                   const float* da, float* dx, float* d_down, float beta) {
  if (d_down) cpu::gemm(true, false, Rr, d, T, 1.0f, da, Rr, x, d, beta, d_down, d);
  cpu::gemm(false, false, T, d, Rr, 1.0f, da, Rr, down, d, beta, dx, d);
}

}  // namespace

std::vector<RouterTensorSpec> AoeLogits::tensors(const LogitShape& shape) const {
  // N(0, init_std) like the experts' other projections (the authors' code: 0.02 for all four),
  // unless aoe_down_std sets its own.
  return {{"down",
           {shape.R * config_.rank, shape.d},
           RouterTensorSpec::Init::Normal,
           config_.down_std,
           true}};
}

// saved: a (T, R r), then the norms z (T, R).
void AoeLogits::forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                        const LogitContext& /*context*/, const LogitCarry& /*carry*/, float* logits,
                        std::vector<float>& saved) const {
  const int64_t r = config_.rank;
  saved.resize(size_t(T * R * r + T * R));
  float* a = saved.data();
  float* z = a + T * R * r;
  cpu::gemm(false, true, T, R * r, d, 1.0f, x, d, w[0], d, 0.0f, a, R * r);
  for (int64_t i = 0; i < T * R; ++i) {
    double sq = 0.0;
    for (int64_t j = 0; j < r; ++j) sq += double(a[i * r + j]) * double(a[i * r + j]);
    z[i] = float(std::sqrt(sq));
    logits[i] = z[i];
  }
}

// ∂z/∂a = a / ‖a‖ (0 at a = 0, torch.norm's subgradient), then a = x W_downᵀ.
void AoeLogits::backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                         const LogitContext& /*context*/, const std::vector<float>& saved,
                         const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                         float* const* dw) const {
  const int64_t r = config_.rank;
  const float* a = saved.data();
  const float* z = a + T * R * r;
  std::vector<float> da(size_t(T * R * r));  // (T, R r)
  for (int64_t i = 0; i < T * R; ++i) {
    const float s = z[i] > 0.0f ? d_logits[i] / z[i] : 0.0f;
    for (int64_t j = 0; j < r; ++j) da[size_t(i * r + j)] = s * a[i * r + j];
  }
  down_backward(T, d, R * r, x, w[0], da.data(), dx, dw ? dw[0] : nullptr, 0.0f);
}

void AoeLogits::backward_gate_inputs(int64_t T, int64_t d, int64_t R, const float* x,
                                     const float* const* w, const std::vector<float>& /*saved*/,
                                     const float* d_gate, float* dx, float* const* dw) const {
  down_backward(T, d, R * config_.rank, x, w[0], d_gate, dx, dw ? dw[0] : nullptr, 1.0f);
}

}  // namespace switchyard::routers
