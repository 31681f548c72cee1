// Experts merged by the routing weights, one merged expert per sequence (routers whose traits say
// pooled_per_sequence: SMEAR). The router sees each sequence's mean input and routes sequences;
// the sequence's tokens go through the weighted sum of the experts' weights.
#include "layer/merged_experts.h"

#include "kernels/cpu/kernels.h"
#include "layer/layer_checks.h"
#include "layer/losses.h"

namespace switchyard::layer {

void merged_experts_forward(const Router& router, bool training, cpu::Act act,
                            const MoEShape& shape, int64_t R, const MoEParams& p,
                            const MoEBatch& batch, MoECache& c, float* y, RoutingStats& stats) {
  const int64_t T = batch.T, d = shape.d, E = shape.E, F = shape.F;
  const auto seqs = routing_groups(RoutingGroups::Sequence, batch.seq_lens, T);
  const int64_t S = int64_t(seqs.size());
  c.sequences = seqs;
  c.groups = {{0, S}};
  c.router_in.assign(size_t(S * d), 0.0f);  // (S, d) sequence means
  for (int64_t s = 0; s < S; ++s) {
    const auto [b, e] = seqs[size_t(s)];
    for (int64_t t = b; t < e; ++t)
      for (int64_t j = 0; j < d; ++j) c.router_in[size_t(s * d + j)] += batch.x[t * d + j];
    for (int64_t j = 0; j < d; ++j) c.router_in[size_t(s * d + j)] /= float(e - b);
  }
  c.logits.resize(size_t(S * R));
  cpu::gemm(false, true, S, R, d, 1.0f, c.router_in.data(), d, p.gate, d, 0.0f, c.logits.data(), R);
  check_overflow("router logits (sequence means) x gate.weight^T", c.logits.data(), S * R, R);
  RouterInput in{c.logits.data(), S, R, E, nullptr, nullptr, nullptr, c.groups, training};
  router.route(in, c.plan);
  // Merged weights per sequence: [w1 (F, d) | w3 (F, d) | w2 (d, F)].
  const bool swiglu = act.has_up();
  const int64_t block = F * d, per = (swiglu ? 3 : 2) * block;
  c.merged.assign(size_t(S * per), 0.0f);
  for (size_t a = 0; a < c.plan.size(); ++a) {
    const int64_t s = c.plan.token[a], e = c.plan.expert[a];
    const float w = c.plan.weight[a];
    float* m = c.merged.data() + s * per;
    for (int64_t i = 0; i < block; ++i) m[i] += w * p.w1[e * block + i];
    if (swiglu)
      for (int64_t i = 0; i < block; ++i) m[block + i] += w * p.w3[e * block + i];
    float* m2 = m + per - block;
    for (int64_t i = 0; i < block; ++i) m2[i] += w * p.w2[e * block + i];
  }
  c.h1.resize(size_t(T * F));
  c.h3.resize(swiglu ? size_t(T * F) : 0);
  c.act.resize(size_t(T * F));
  c.out.resize(size_t(T * d));
  for (int64_t s = 0; s < S; ++s) {
    const auto [b, e] = seqs[size_t(s)];
    const float* m = c.merged.data() + s * per;
    cpu::ffn_forward(act, e - b, d, F, batch.x + b * d, m, swiglu ? m + block : nullptr,
                     m + per - block, c.h1.data() + b * F, swiglu ? c.h3.data() + b * F : nullptr,
                     c.act.data() + b * F, c.out.data() + b * d);
  }
  for (int64_t i = 0; i < T * d; ++i) y[i] += c.out[size_t(i)];
  stats.tokens_per_expert.assign(size_t(E), T);
  stats.assignments = int64_t(c.plan.size());
  stats.experts_per_token = 1.0;  // one merged expert per token
  stats.hidden_per_token = 1.0;
  LossInput li{c.logits.data(), S, R, ScoreKind::Softmax, &c.plan, {{0, S}}, nullptr};
  stats.entropy = mean_router_entropy(li, {0, R});
  check_overflow("y", y, T * d, d);
}

void merged_experts_backward(const Router& router, bool training, cpu::Act act,
                             const MoEShape& shape, int64_t R, const MoEParams& p,
                             const MoEBatch& batch, const MoECache& c, const float* dy,
                             std::vector<float>& d_weight, std::vector<float>& d_logits, float* dx,
                             const MoEGrads& g) {
  const int64_t T = batch.T, d = shape.d, E = shape.E, F = shape.F;
  const bool swiglu = act.has_up();
  const RoutingPlan& plan = c.plan;
  const auto seqs = routing_groups(RoutingGroups::Sequence, batch.seq_lens, T);
  const int64_t S = int64_t(seqs.size());
  const int64_t block = F * d, per = (swiglu ? 3 : 2) * block;
  std::vector<float> dmerged(static_cast<size_t>(per)), dact(size_t(T * F)),
      dh3(swiglu ? size_t(T * F) : 0);
  std::vector<float> dxs(size_t(T * d));
  if (g.w1) std::fill(g.w1, g.w1 + E * block, 0.0f);
  if (g.w3) std::fill(g.w3, g.w3 + E * block, 0.0f);
  if (g.w2) std::fill(g.w2, g.w2 + E * block, 0.0f);
  for (int64_t s = 0; s < S; ++s) {
    const auto [b, e] = seqs[size_t(s)];
    const float* m = c.merged.data() + s * per;
    float* dm = dmerged.data();
    cpu::ffn_backward(act, e - b, d, F, batch.x + b * d, m, swiglu ? m + block : nullptr,
                      m + per - block, c.h1.data() + b * F, swiglu ? c.h3.data() + b * F : nullptr,
                      c.act.data() + b * F, dy + b * d, dact.data(), swiglu ? dh3.data() : nullptr,
                      dm, swiglu ? dm + block : nullptr, dm + per - block, dxs.data() + b * d,
                      false);
    for (size_t a = 0; a < plan.size(); ++a) {
      if (plan.token[a] != s) continue;
      const int64_t x = plan.expert[a];
      const float w = plan.weight[a];
      double dp = 0.0;
      for (int64_t i = 0; i < block; ++i) {
        dp +=
            double(dm[i]) * p.w1[x * block + i] + double(dm[per - block + i]) * p.w2[x * block + i];
        if (g.w1) g.w1[x * block + i] += w * dm[i];
        if (g.w2) g.w2[x * block + i] += w * dm[per - block + i];
        if (swiglu) {
          dp += double(dm[block + i]) * p.w3[x * block + i];
          if (g.w3) g.w3[x * block + i] += w * dm[block + i];
        }
      }
      d_weight[a] = float(dp);
    }
  }
  for (int64_t i = 0; i < T * d; ++i) dx[i] += dxs[size_t(i)];
  RouterInput in{c.logits.data(), S, R, E, nullptr, nullptr, nullptr, c.groups, training};
  router.backward(in, plan, d_weight.data(), nullptr, d_logits.data());
  if (g.gate)
    cpu::gemm(true, false, R, d, S, 1.0f, d_logits.data(), R, c.router_in.data(), d, 0.0f, g.gate,
              d);
  std::vector<float> dpooled(size_t(S * d));
  cpu::gemm(false, false, S, d, R, 1.0f, d_logits.data(), R, p.gate, d, 0.0f, dpooled.data(), d);
  for (int64_t s = 0; s < S; ++s) {
    const auto [b, e] = seqs[size_t(s)];
    for (int64_t t = b; t < e; ++t)
      for (int64_t j = 0; j < d; ++j) dx[t * d + j] += dpooled[size_t(s * d + j)] / float(e - b);
  }
}

}  // namespace switchyard::layer
