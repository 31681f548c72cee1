#include "routers/global_logits.h"

#include <switchyard/error.h>

#include <algorithm>
#include <utility>

#include "kernels/cpu/kernels.h"

namespace switchyard::routers {
namespace {

using Range = std::pair<int64_t, int64_t>;

// The sequences of the call: the context's, checked to tile [0, T) in order, or all T tokens.
std::vector<Range> sequences_of(const LogitContext& context, int64_t T) {
  if (!context.sequences || context.num_sequences == 0) return {{0, T}};
  std::vector<Range> seqs(context.sequences, context.sequences + context.num_sequences);
  int64_t next = 0;
  for (const auto& [begin, end] : seqs) {
    if (begin != next || end <= begin)
      fail("global logits: sequence [{}, {}) does not follow the previous one (ending at {})",
           begin, end, next);
    next = end;
  }
  if (next != T)
    fail("global logits: the sequences cover {} tokens, the batch has T = {}", next, T);
  return seqs;
}

}  // namespace

std::vector<RouterTensorSpec> GlobalLogits::tensors(const LogitShape& shape) const {
  const int64_t d = shape.d, R = shape.R, D = config_.dim;
  using Init = RouterTensorSpec::Init;
  return {
      {"gate", {R, d + D}, Init::Normal, 0.0, true},
      // Rows orthonormal (D <= d): g = P m keeps the scale of x's coordinates, so W_g P does not
      // start as a product of two small matrices (docs/routers/speechmoe2.md).
      {"global_projection", {D, d}, Init::Orthogonal, 1.0, true},
  };
}

// saved: H = [x | g] (T, d + D), then the running means M (T, d).
void GlobalLogits::forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                           const LogitContext& context, const LogitCarry& /*carry*/, float* logits,
                           std::vector<float>& saved) const {
  const int64_t D = config_.dim, W = d + D;
  const std::vector<Range> seqs = sequences_of(context, T);
  saved.resize(size_t(T * W + T * d));
  float* h = saved.data();  // (T, d + D)
  float* m = h + T * W;     // (T, d)
#pragma omp parallel
  {
    std::vector<double> sum(static_cast<size_t>(d));  // the sequence's running sum, in double
#pragma omp for schedule(dynamic)
    for (size_t s = 0; s < seqs.size(); ++s) {
      std::fill(sum.begin(), sum.end(), 0.0);
      const auto [begin, end] = seqs[s];
      for (int64_t t = begin; t < end; ++t) {
        const double n = double(t - begin + 1);
        for (int64_t j = 0; j < d; ++j) {
          sum[size_t(j)] += double(x[t * d + j]);
          m[t * d + j] = float(sum[size_t(j)] / n);
          h[t * W + j] = x[t * d + j];
        }
      }
    }
  }
  // g = M Pᵀ into H's last D columns, then z = H Wᵀ.
  cpu::gemm(false, true, T, D, d, 1.0f, m, d, w[1], d, 0.0f, h + d, W);
  cpu::gemm(false, true, T, R, W, 1.0f, h, W, w[0], W, 0.0f, logits, R);
}

void GlobalLogits::backward(int64_t T, int64_t d, int64_t R, const float* /*x*/,
                            const float* const* w, const LogitContext& context,
                            const std::vector<float>& saved, const LogitCarryGrad& /*carry*/,
                            const float* d_logits, float* dx, float* const* dw) const {
  const int64_t D = config_.dim, W = d + D;
  const std::vector<Range> seqs = sequences_of(context, T);
  const float* h = saved.data();
  const float* m = h + T * W;
  std::vector<float> dh(size_t(T * W)), dm(size_t(T * d));  // (T, d + D), (T, d)
  cpu::gemm(false, false, T, W, R, 1.0f, d_logits, R, w[0], W, 0.0f, dh.data(), W);
  if (dw && dw[0]) cpu::gemm(true, false, R, W, T, 1.0f, d_logits, R, h, W, 0.0f, dw[0], W);
  // dg = dH's last D columns: ∂P = dgᵀ M, dm = dg P.
  if (dw && dw[1]) cpu::gemm(true, false, D, d, T, 1.0f, dh.data() + d, W, m, d, 0.0f, dw[1], d);
  cpu::gemm(false, false, T, d, D, 1.0f, dh.data() + d, W, w[1], d, 0.0f, dm.data(), d);
  // m_t = (1/n_t) Σ_{u ≤ t} x_u: ∂x_u = Σ_{t ≥ u} dm_t / n_t, a reverse cumulative sum.
#pragma omp parallel
  {
    std::vector<double> acc(static_cast<size_t>(d));
#pragma omp for schedule(dynamic)
    for (size_t s = 0; s < seqs.size(); ++s) {
      std::fill(acc.begin(), acc.end(), 0.0);
      const auto [begin, end] = seqs[s];
      for (int64_t t = end - 1; t >= begin; --t) {
        const double n = double(t - begin + 1);
        for (int64_t j = 0; j < d; ++j) {
          acc[size_t(j)] += double(dm[size_t(t * d + j)]) / n;
          dx[t * d + j] = float(double(dh[size_t(t * W + j)]) + acc[size_t(j)]);
        }
      }
    }
  }
}

}  // namespace switchyard::routers
