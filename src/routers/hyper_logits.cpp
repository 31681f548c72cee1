#include "routers/hyper_logits.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {

std::vector<RouterTensorSpec> HyperLogits::tensors(const LogitShape& shape) const {
  const int64_t d = shape.d, R = shape.R;
  using Init = RouterTensorSpec::Init;
  const int64_t m = embedding_dim(d), h = config_.hidden, P = R * (d + 1);
  // nn.Linear's U(±1/√fan_in) for the fixed layers; the embedding is torch.randn.
  const double b1 = 1.0 / std::sqrt(double(m)), b2 = 1.0 / std::sqrt(double(h));
  return {
      {"embedding", {1, m}, Init::Normal, 1.0, false, true},
      {"hyper_w1", {h, m}, Init::Uniform, b1, false, false},
      {"hyper_b1", {h}, Init::Uniform, b1, false, false},
      {"hyper_w2", {P, h}, Init::Uniform, b2, false, false},
      {"hyper_b2", {P}, Init::Uniform, b2, false, false},
  };
}

// saved: the hidden pre-activation (h), its ReLU (h), the generated [W | b] (R, d + 1).
void HyperLogits::forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                          const LogitContext& /*context*/, const LogitCarry& /*carry*/,
                          float* logits, std::vector<float>& saved) const {
  const int64_t m = embedding_dim(d), h = config_.hidden, P = R * (d + 1);
  saved.resize(size_t(2 * h + P));
  float* pre = saved.data();
  float* hidden = pre + h;
  float* gen = hidden + h;  // (R, d + 1)
  cpu::gemm(false, true, 1, h, m, 1.0f, w[0], m, w[1], m, 0.0f, pre, h);
  for (int64_t i = 0; i < h; ++i) {
    pre[i] += w[2][i];
    hidden[i] = std::max(pre[i], 0.0f);
  }
  cpu::gemm(false, true, 1, P, h, 1.0f, hidden, h, w[3], h, 0.0f, gen, P);
  for (int64_t i = 0; i < P; ++i) gen[i] += w[4][i];
  // logits (T, R) = x Wᵀ + b, W the first d columns of gen, b its last.
  cpu::gemm(false, true, T, R, d, 1.0f, x, d, gen, d + 1, 0.0f, logits, R);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) logits[t * R + r] += gen[r * (d + 1) + d];
}

void HyperLogits::backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                           const LogitContext& /*context*/, const std::vector<float>& saved,
                           const LogitCarryGrad& /*carry*/, const float* d_logits, float* dx,
                           float* const* dw) const {
  const int64_t m = embedding_dim(d), h = config_.hidden, P = R * (d + 1);
  const float* pre = saved.data();
  const float* hidden = pre + h;
  const float* gen = hidden + h;
  cpu::gemm(false, false, T, d, R, 1.0f, d_logits, R, gen, d + 1, 0.0f, dx, d);
  // d[W | b] (R, d + 1): dW = Gᵀ x, db = Σ_t G.
  std::vector<float> d_gen(static_cast<size_t>(P), 0.0f), d_hidden(static_cast<size_t>(h));
  cpu::gemm(true, false, R, d, T, 1.0f, d_logits, R, x, d, 0.0f, d_gen.data(), d + 1);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t r = 0; r < R; ++r) d_gen[size_t(r * (d + 1) + d)] += d_logits[t * R + r];
  if (dw && dw[4]) std::copy(d_gen.begin(), d_gen.end(), dw[4]);
  if (dw && dw[3])
    cpu::gemm(true, false, P, h, 1, 1.0f, d_gen.data(), P, hidden, h, 0.0f, dw[3], h);
  cpu::gemm(false, false, 1, h, P, 1.0f, d_gen.data(), P, w[3], h, 0.0f, d_hidden.data(), h);
  for (int64_t i = 0; i < h; ++i)
    if (pre[i] <= 0.0f) d_hidden[size_t(i)] = 0.0f;  // ReLU: no gradient at or below 0
  if (dw && dw[2]) std::copy(d_hidden.begin(), d_hidden.end(), dw[2]);
  if (dw && dw[1])
    cpu::gemm(true, false, h, m, 1, 1.0f, d_hidden.data(), h, w[0], m, 0.0f, dw[1], m);
  if (dw && dw[0])
    cpu::gemm(false, false, 1, m, h, 1.0f, d_hidden.data(), h, w[1], m, 0.0f, dw[0], m);
}

}  // namespace switchyard::routers
