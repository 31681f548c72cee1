#include "routers/recurrent_logits.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {

namespace {

enum Tensor { Projection, Gate, WeightIH, WeightHH, BiasIH, BiasHH };

float sigmoid(float v) {
  return 1.0f / (1.0f + std::exp(-v));
}

// Column sums of a (T, n) matrix into out (n), overwritten.
void column_sums(int64_t T, int64_t n, const float* a, float* out) {
  std::fill(out, out + n, 0.0f);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t j = 0; j < n; ++j) out[j] += a[t * n + j];
}

}  // namespace

std::vector<RouterTensorSpec> RecurrentLogits::tensors(const LogitShape& shape) const {
  const int64_t d = shape.d, R = shape.R;
  using Init = RouterTensorSpec::Init;
  const int64_t p = config_.dim;
  // RMoE initialises every router tensor, biases included, from N(0, init_std).
  return {{"projection", {p, d}, Init::Normal, 0.0, true, true, false},
          {"gate", {R, p}, Init::Normal, 0.0, true, true, false},
          {"gru_weight_ih", {3 * p, p}, Init::Normal, 0.0, true, true, true},
          {"gru_weight_hh", {3 * p, p}, Init::Normal, 0.0, true, true, true},
          {"gru_bias_ih", {3 * p}, Init::Normal, 0.0, false, true, true},
          {"gru_bias_hh", {3 * p}, Init::Normal, 0.0, false, true, true}};
}

// saved: u, h', r, z, n, W_hn h' + b_hn, h, each (T, p).
void RecurrentLogits::forward(int64_t T, int64_t d, int64_t R, const float* x,
                              const float* const* w, const LogitContext& /*context*/,
                              const LogitCarry& carry, float* logits,
                              std::vector<float>& saved) const {
  const int64_t p = config_.dim;
  saved.resize(size_t(7 * T * p));
  float* u = saved.data();
  float* h_prev = u + T * p;
  float* r = h_prev + T * p;
  float* z = r + T * p;
  float* n = z + T * p;
  float* hn = n + T * p;
  float* h = hn + T * p;
  std::vector<float> gi(size_t(T * 3 * p)), gh(size_t(T * 3 * p));  // (T, 3p)
  cpu::gemm(false, true, T, p, d, 1.0f, x, d, w[Projection], d, 0.0f, u, p);
  cpu::gemm(false, true, T, 3 * p, p, 1.0f, u, p, w[WeightIH], p, 0.0f, gi.data(), 3 * p);
  if (carry.in) {
    std::copy_n(carry.in, T * p, h_prev);
    cpu::gemm(false, true, T, 3 * p, p, 1.0f, h_prev, p, w[WeightHH], p, 0.0f, gh.data(), 3 * p);
  } else {
    std::fill_n(h_prev, T * p, 0.0f);
    std::fill(gh.begin(), gh.end(), 0.0f);
  }
  const float* b_ih = w[BiasIH];
  const float* b_hh = w[BiasHH];
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    const float* a = gi.data() + t * 3 * p;
    const float* b = gh.data() + t * 3 * p;
    for (int64_t j = 0; j < p; ++j) {
      const int64_t i = t * p + j;
      r[i] = sigmoid(a[j] + b_ih[j] + b[j] + b_hh[j]);
      z[i] = sigmoid(a[p + j] + b_ih[p + j] + b[p + j] + b_hh[p + j]);
      hn[i] = b[2 * p + j] + b_hh[2 * p + j];
      n[i] = std::tanh(a[2 * p + j] + b_ih[2 * p + j] + r[i] * hn[i]);
      h[i] = (1.0f - z[i]) * n[i] + z[i] * h_prev[i];
    }
  }
  cpu::gemm(false, true, T, R, p, 1.0f, h, p, w[Gate], p, 0.0f, logits, R);
  if (carry.out) std::copy_n(h, T * p, carry.out);
}

void RecurrentLogits::backward(int64_t T, int64_t d, int64_t R, const float* x,
                               const float* const* w, const LogitContext& /*context*/,
                               const std::vector<float>& saved, const LogitCarryGrad& carry,
                               const float* d_logits, float* dx, float* const* dw) const {
  const int64_t p = config_.dim;
  const float* u = saved.data();
  const float* h_prev = u + T * p;
  const float* r = h_prev + T * p;
  const float* z = r + T * p;
  const float* n = z + T * p;
  const float* hn = n + T * p;
  const float* h = hn + T * p;
  auto grad = [&](Tensor i) { return dw ? dw[i] : nullptr; };
  std::vector<float> dh(size_t(T * p));  // (T, p) ∂L/∂h
  cpu::gemm(false, false, T, p, R, 1.0f, d_logits, R, w[Gate], p, 0.0f, dh.data(), p);
  if (carry.d_out) cpu::add_product(T * p, carry.d_out, nullptr, dh.data());
  if (float* g = grad(Gate)) cpu::gemm(true, false, R, p, T, 1.0f, d_logits, R, h, p, 0.0f, g, p);
  // Pre-activation gradients of the input and hidden halves, [reset; update; new] (T, 3p).
  std::vector<float> dgi(size_t(T * 3 * p)), dgh(size_t(T * 3 * p)), dh_prev(size_t(T * p));
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < T; ++t) {
    float* a = dgi.data() + t * 3 * p;
    float* b = dgh.data() + t * 3 * p;
    for (int64_t j = 0; j < p; ++j) {
      const int64_t i = t * p + j;
      const float g = dh[size_t(i)];
      const float dn = g * (1.0f - z[i]) * (1.0f - n[i] * n[i]);
      const float dz = g * (h_prev[i] - n[i]) * z[i] * (1.0f - z[i]);
      const float dr = dn * hn[i] * r[i] * (1.0f - r[i]);
      a[j] = b[j] = dr;
      a[p + j] = b[p + j] = dz;
      a[2 * p + j] = dn;
      b[2 * p + j] = dn * r[i];
      dh_prev[size_t(i)] = g * z[i];
    }
  }
  if (float* g = grad(WeightIH))
    cpu::gemm(true, false, 3 * p, p, T, 1.0f, dgi.data(), 3 * p, u, p, 0.0f, g, p);
  if (float* g = grad(WeightHH))
    cpu::gemm(true, false, 3 * p, p, T, 1.0f, dgh.data(), 3 * p, h_prev, p, 0.0f, g, p);
  if (float* g = grad(BiasIH)) column_sums(T, 3 * p, dgi.data(), g);
  if (float* g = grad(BiasHH)) column_sums(T, 3 * p, dgh.data(), g);
  if (carry.d_in) {
    cpu::gemm(false, false, T, p, 3 * p, 1.0f, dgh.data(), 3 * p, w[WeightHH], p, 1.0f,
              dh_prev.data(), p);
    std::copy(dh_prev.begin(), dh_prev.end(), carry.d_in);
  }
  std::vector<float> du(size_t(T * p));  // (T, p)
  cpu::gemm(false, false, T, p, 3 * p, 1.0f, dgi.data(), 3 * p, w[WeightIH], p, 0.0f, du.data(), p);
  if (float* g = grad(Projection))
    cpu::gemm(true, false, p, d, T, 1.0f, du.data(), p, x, d, 0.0f, g, d);
  cpu::gemm(false, false, T, d, p, 1.0f, du.data(), p, w[Projection], d, 0.0f, dx, d);
}

}  // namespace switchyard::routers
