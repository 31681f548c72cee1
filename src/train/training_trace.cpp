#include "train/training_trace.h"

#include <switchyard/error.h>

#include <algorithm>

namespace switchyard::training {

infer::RoutingTrace step_trace(const Model& model, const Batch& batch, const std::string& name) {
  const auto caches = model.layer_caches();
  const int64_t L = int64_t(caches.size()), E = model.config().experts;
  const int64_t T = batch.seq_len, N = batch.batch * T;
  infer::RoutingTrace trace;
  trace.layers = L;
  trace.experts = E;
  std::vector<std::vector<int64_t>> count(size_t(L), std::vector<int64_t>(size_t(N), 0));
  for (int64_t l = 0; l < L; ++l) {
    const MoECache& c = *caches[size_t(l)];
    if (c.routing_tokens() != N)
      fail(
          "train --trace: layer {} routed {} tokens, the batch has {} (a router that routes "
          "sequences, not tokens, has no per-token trace)",
          l, c.routing_tokens(), N);
    const RoutingPlan& plan = c.routing_plan();
    for (size_t a = 0; a < plan.size(); ++a)
      if (plan.kept[a]) ++count[size_t(l)][size_t(plan.token[a])];
    for (int64_t n : count[size_t(l)]) trace.k = std::max(trace.k, n);
  }
  trace.k = std::max<int64_t>(trace.k, 1);
  const int64_t K = trace.k;
  trace.ids.assign(size_t(N * L * K), -1);
  trace.weights.assign(size_t(N * L * K), 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    const RoutingPlan& plan = caches[size_t(l)]->routing_plan();
    std::vector<int64_t> filled(size_t(N), 0);
    for (size_t a = 0; a < plan.size(); ++a) {
      if (!plan.kept[a]) continue;
      const int64_t t = plan.token[a];
      const size_t at = size_t((t * L + l) * K + filled[size_t(t)]++);
      trace.ids[at] = plan.expert[a];
      trace.weights[at] = plan.weight[a];
    }
  }
  for (int64_t i = 0; i < batch.batch; ++i)
    for (int64_t t = 0; t < T; ++t) {
      trace.tokens.push_back(batch.tokens[size_t(i * (T + 1) + t)]);
      trace.positions.push_back(t);
      trace.sequences.push_back(i);
    }
  nlohmann::json moe_layers = nlohmann::json::array(), routing = nlohmann::json::array();
  // One entry per MoE layer the trace has: a block of moe_sublayers sub-layers repeats its index.
  for (int64_t l = 0; l < model.config().n_layers; ++l)
    if (model.config().is_moe_layer(l))
      for (int64_t s = 0; s < model.config().moe_sublayers; ++s) moe_layers.push_back(l);
  for (int64_t l = 0; l < L; ++l) routing.push_back({{"router", model.config().router}});
  trace.meta = {{"format", "switchyard-routing-trace"},
                {"version", 1},
                {"model", name},
                {"architecture", "switchyard-train"},
                {"moe_layers", moe_layers},
                {"experts", E},
                {"routing", routing},
                {"labels", nlohmann::json::array()}};
  return trace;
}

}  // namespace switchyard::training
