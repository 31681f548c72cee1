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

// Runs fn(begin, rows, width) for each run of equal widths among rows [begin, end) (the
// dispatcher ordered them by width within each expert).
template <typename Fn>
void for_each_width_segment(const std::vector<int32_t>& width, int64_t begin, int64_t end,
                            Fn&& fn) {
  for (int64_t b = begin; b < end;) {
    int64_t j = b + 1;
    while (j < end && width[size_t(j)] == width[size_t(b)]) ++j;
    fn(b, j - b, int64_t(width[size_t(b)]));
    b = j;
  }
}

float* take(std::vector<float>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
  return v.data();
}

template <typename T>
T* block_of(T* stacked, T* const* per_expert, int64_t e, int64_t size) {
  if (stacked) return stacked + e * size;
  return per_expert ? per_expert[e] : nullptr;
}

}  // namespace

cpu::Act expert_activation(Activation activation, const SwigluClamp& clamp) {
  switch (activation) {
    case Activation::SwiGLU:
      return cpu::Act::SwiGLU;
    case Activation::GELU:
      return cpu::Act::GELU;
    case Activation::SwiGLUClamped:
      break;
  }
  return {cpu::Act::SwiGLUClamped, float(clamp.alpha), float(clamp.limit)};
}

const float* expert_w1(const MoEParams& p, const MoEShape& s, int64_t e) {
  return block_of(p.w1, p.w1_experts, e, s.F * s.w1_in());
}
const float* expert_w3(const MoEParams& p, const MoEShape& s, int64_t e) {
  return block_of(p.w3, p.w3_experts, e, s.F * s.d);
}
const float* expert_w2(const MoEParams& p, const MoEShape& s, int64_t e) {
  return block_of(p.w2, p.w2_experts, e, s.d * s.F);
}
float* expert_grad_w1(const MoEGrads& g, const MoEShape& s, int64_t e) {
  return block_of(g.w1, g.w1_experts, e, s.F * s.w1_in());
}
float* expert_grad_w3(const MoEGrads& g, const MoEShape& s, int64_t e) {
  return block_of(g.w3, g.w3_experts, e, s.F * s.d);
}
float* expert_grad_w2(const MoEGrads& g, const MoEShape& s, int64_t e) {
  return block_of(g.w2, g.w2_experts, e, s.d * s.F);
}

void CpuExpertBackend::forward(cpu::Act act, const MoEShape& s, const MoEParams& p, MoECache& c) {
  const int64_t d = s.d, F = s.F, rows = int64_t(c.xd.size()) / d;
  const bool swiglu = act.has_up();
  resize_on_huge_pages(c.h1, size_t(rows * F));
  resize_on_huge_pages(c.h3, swiglu ? size_t(rows * F) : 0);
  resize_on_huge_pages(c.act, size_t(rows * F));
  resize_on_huge_pages(c.out, size_t(rows * d));
  // w1's input: the rows themselves, or their gate inputs from the logit function (gate_in).
  const int64_t dg = s.w1_in();
  const float* xg = s.gate_in > 0 ? c.gate_in.data() : c.xd.data();
  const auto bf16_acts =
      p.bf16_round_activations ? cpu::Bf16Activations::Round : cpu::Bf16Activations::Float32;
  const bool elastic = !c.row_width.empty();
  for_each_expert(s.E, c.expert_offsets, [&](int64_t e) {
    const int64_t o = c.expert_offsets[size_t(e)], n = c.expert_offsets[size_t(e) + 1] - o;
    float* h3 = swiglu ? c.h3.data() + o * F : nullptr;
    if (p.w1_bf16)
      cpu::ffn_forward_bf16(act, n, d, F, c.xd.data() + o * d, p.w1_bf16 + e * F * d,
                            p.w3_bf16 ? p.w3_bf16 + e * F * d : nullptr, p.w2_bf16 + e * d * F,
                            c.h1.data() + o * F, h3, c.act.data() + o * F, c.out.data() + o * d,
                            bf16_acts);
    else if (n > 0 && !elastic)
      cpu::ffn_forward_gated(act, n, d, dg, F, c.xd.data() + o * d, xg + o * dg, expert_w1(p, s, e),
                             swiglu ? expert_w3(p, s, e) : nullptr, expert_w2(p, s, e),
                             c.h1.data() + o * F, h3, c.act.data() + o * F, c.out.data() + o * d);
    else if (n > 0)
      // Per-assignment widths: each run of equal width w runs on w1, w3 rows [0, w) and w2
      // columns [0, w) (leading dimension F), its h1, h3, act (rows, w) packed at its offset.
      for_each_width_segment(c.row_width, o, o + n, [&](int64_t b, int64_t m, int64_t w) {
        cpu::ffn_forward_gated(
            act, m, d, dg, w, c.xd.data() + b * d, xg + b * dg, expert_w1(p, s, e),
            swiglu ? expert_w3(p, s, e) : nullptr, expert_w2(p, s, e), c.h1.data() + b * F,
            swiglu ? c.h3.data() + b * F : nullptr, c.act.data() + b * F, c.out.data() + b * d, F);
      });
  });
}

void CpuExpertBackend::backward(cpu::Act act, const MoEShape& s, const MoEParams& p,
                                const MoECache& c, const float* dout, const MoEGrads& g, float* dxd,
                                float* dgate) {
  const int64_t d = s.d, F = s.F, E = s.E, rows = int64_t(c.xd.size()) / d;  // the experts' rows
  const int64_t dg = s.w1_in();
  const bool gated = s.gate_in > 0;
  const float* xg = gated ? c.gate_in.data() : c.xd.data();
  const bool swiglu = act.has_up();
  float* dact = take(dact_, rows * F);                   // (rows, F)
  float* dh3 = swiglu ? take(dh3_, rows * F) : nullptr;  // (rows, F)
  // Experts whose weight gradients are not wanted write into scratch, one block per expert.
  bool all_grads = true;
  for (int64_t e = 0; e < E && all_grads; ++e)
    all_grads =
        expert_grad_w1(g, s, e) && expert_grad_w2(g, s, e) && (!swiglu || expert_grad_w3(g, s, e));
  // Per expert [dw1 (F, dg) | dw3 (F, d) | dw2 (d, F)].
  const int64_t per = F * dg + 2 * F * d;
  float* scratch_w = all_grads ? nullptr : take(dw_scratch_, E * per);
  for_each_expert(E, c.expert_offsets, [&](int64_t e) {
    const int64_t o = c.expert_offsets[size_t(e)], n = c.expert_offsets[size_t(e) + 1] - o;
    float* scratch = scratch_w ? scratch_w + e * per : nullptr;
    float* dw1 = expert_grad_w1(g, s, e);
    float* dw3 = swiglu ? expert_grad_w3(g, s, e) : nullptr;
    float* dw2 = expert_grad_w2(g, s, e);
    if (!dw1) dw1 = scratch;
    if (swiglu && !dw3) dw3 = scratch + F * dg;
    if (!dw2) dw2 = scratch + F * dg + F * d;
    if (!expert_w1(p, s, e)) return;  // held elsewhere: no rows (checked in forward)
    if (c.row_width.empty()) {
      cpu::ffn_backward_gated(act, n, d, dg, F, c.xd.data() + o * d, xg + o * dg,
                              expert_w1(p, s, e), swiglu ? expert_w3(p, s, e) : nullptr,
                              expert_w2(p, s, e), c.h1.data() + o * F,
                              swiglu ? c.h3.data() + o * F : nullptr, c.act.data() + o * F,
                              dout + o * d, dact + o * F, swiglu ? dh3 + o * F : nullptr, dw1, dw3,
                              dw2, dxd + o * d, gated ? dgate + o * dg : dxd + o * d, false);
      return;
    }
    // Per-assignment widths: the hidden units no row ran get zero gradient; each segment adds
    // its share to dW1, dW3 rows [0, w) and dW2 columns [0, w).
    std::fill(dw1, dw1 + F * dg, 0.0f);
    if (dw3) std::fill(dw3, dw3 + F * d, 0.0f);
    std::fill(dw2, dw2 + d * F, 0.0f);
    for_each_width_segment(c.row_width, o, o + n, [&](int64_t b, int64_t m, int64_t w) {
      cpu::ffn_backward_gated(act, m, d, dg, w, c.xd.data() + b * d, xg + b * dg,
                              expert_w1(p, s, e), swiglu ? expert_w3(p, s, e) : nullptr,
                              expert_w2(p, s, e), c.h1.data() + b * F,
                              swiglu ? c.h3.data() + b * F : nullptr, c.act.data() + b * F,
                              dout + b * d, dact + b * F, swiglu ? dh3 + b * F : nullptr, dw1, dw3,
                              dw2, dxd + b * d, gated ? dgate + b * dg : dxd + b * d, true, F);
    });
  });
}

}  // namespace switchyard::layer
