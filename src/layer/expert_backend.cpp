#include "layer/expert_backend.h"

#include <omp.h>

#include <algorithm>
#include <numeric>

#include "core/huge_pages.h"

namespace switchyard::layer {
namespace {

// Runs fn(e) for every expert: in parallel over experts (largest first) when there are enough of
// them to keep every thread busy, else one by one with the GEMMs split across threads.
template <typename Fn>
void for_each_expert(int64_t E, const std::vector<int64_t>& offsets, Fn&& fn) {
  std::vector<int64_t> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return offsets[size_t(a) + 1] - offsets[size_t(a)] >
           offsets[size_t(b) + 1] - offsets[size_t(b)];
  });
  const bool by_expert = E >= 2 * omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) if (by_expert)
  for (int64_t i = 0; i < E; ++i) fn(order[size_t(i)]);
}

float* take(std::vector<float>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

}  // namespace

void CpuExpertBackend::forward(cpu::Act act, const MoEShape& s, const MoEParams& p, MoECache& c) {
  const int64_t d = s.d, F = s.F, rows = int64_t(c.xd.size()) / d;
  const bool swiglu = act == cpu::Act::SwiGLU;
  resize_on_huge_pages(c.h1, size_t(rows * F));
  resize_on_huge_pages(c.h3, swiglu ? size_t(rows * F) : 0);
  resize_on_huge_pages(c.act, size_t(rows * F));
  resize_on_huge_pages(c.out, size_t(rows * d));
  const auto bf16_acts =
      p.bf16_round_activations ? cpu::Bf16Activations::Round : cpu::Bf16Activations::Float32;
  for_each_expert(s.E, c.expert_offsets, [&](int64_t e) {
    const int64_t o = c.expert_offsets[size_t(e)], n = c.expert_offsets[size_t(e) + 1] - o;
    float* h3 = swiglu ? c.h3.data() + o * F : nullptr;
    if (p.w1_bf16)
      cpu::ffn_forward_bf16(act, n, d, F, c.xd.data() + o * d, p.w1_bf16 + e * F * d,
                            p.w3_bf16 ? p.w3_bf16 + e * F * d : nullptr, p.w2_bf16 + e * d * F,
                            c.h1.data() + o * F, h3, c.act.data() + o * F, c.out.data() + o * d,
                            bf16_acts);
    else
      cpu::ffn_forward(act, n, d, F, c.xd.data() + o * d, p.w1 + e * F * d,
                       p.w3 ? p.w3 + e * F * d : nullptr, p.w2 + e * d * F, c.h1.data() + o * F, h3,
                       c.act.data() + o * F, c.out.data() + o * d);
  });
}

void CpuExpertBackend::backward(cpu::Act act, const MoEShape& s, const MoEParams& p,
                                const MoECache& c, const float* dout, const MoEGrads& g,
                                float* dxd) {
  const int64_t d = s.d, F = s.F, E = s.E, rows = int64_t(c.row_assignment.size());
  const bool swiglu = act == cpu::Act::SwiGLU;
  float* dact = take(dact_, rows * F);                   // (rows, F)
  float* dh3 = swiglu ? take(dh3_, rows * F) : nullptr;  // (rows, F)
  // Experts whose weight gradients are not wanted write into scratch, one block per expert.
  const bool all_grads = g.w1 && g.w2 && (g.w3 || !swiglu);
  float* scratch_w = all_grads ? nullptr : take(dw_scratch_, E * F * d * 3);
  for_each_expert(E, c.expert_offsets, [&](int64_t e) {
    const int64_t o = c.expert_offsets[size_t(e)], n = c.expert_offsets[size_t(e) + 1] - o;
    float* scratch = scratch_w ? scratch_w + e * 3 * F * d : nullptr;
    float* dw1 = g.w1 ? g.w1 + e * F * d : scratch;
    float* dw3 = swiglu ? (g.w3 ? g.w3 + e * F * d : scratch + F * d) : nullptr;
    float* dw2 = g.w2 ? g.w2 + e * d * F : scratch + 2 * F * d;
    cpu::ffn_backward(act, n, d, F, c.xd.data() + o * d, p.w1 + e * F * d,
                      p.w3 ? p.w3 + e * F * d : nullptr, p.w2 + e * d * F, c.h1.data() + o * F,
                      swiglu ? c.h3.data() + o * F : nullptr, c.act.data() + o * F, dout + o * d,
                      dact + o * F, swiglu ? dh3 + o * F : nullptr, dw1, dw3, dw2, dxd + o * d,
                      false);
  });
}

}  // namespace switchyard::layer
