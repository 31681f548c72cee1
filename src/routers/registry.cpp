#include <switchyard/error.h>
#include <switchyard/router.h>

#include "routers/routers.h"

namespace switchyard {

namespace {
using nlohmann::json;
const json kNoLosses = json::object();
}  // namespace

const std::vector<RouterEntry>& router_registry() {
  // name, summary, default losses (when layer.json has no "losses"), factory.
  static const std::vector<RouterEntry> registry = {
      {"topk", "token-choice top-k, every option", kNoLosses, routers::make_topk},
      {"switch",
       "Switch Transformer: top-1, capacity 1.25, jitter",
       {{"balance", 0.01}},
       routers::make_switch},
      {"gshard",
       "GShard: top-2, random second expert, capacity 2",
       {{"balance", 0.01}, {"balance_top1_only", true}},
       routers::make_gshard},
      {"mixtral",
       "Mixtral: softmax top-2, renormalised, dropless",
       {{"balance", 0.001}},
       routers::make_mixtral},
      {"deepseek_v3",
       "DeepSeek-V3: sigmoid, group-limited top-8, bias balancing",
       {{"balance", 0.0001}, {"balance_mode", "sequence"}},
       routers::make_deepseek_v3},
      {"adamoe",
       "AdaMoE: top-4 over experts plus 16 null experts",
       {{"balance", 0.0001}},
       routers::make_adamoe},
      {"sinkhorn", "Sinkhorn (Megatron-Core): top-1 chosen by Sinkhorn-balanced scores in training",
       kNoLosses, routers::make_sinkhorn},
      {"adaptive_gating",
       "Adaptive Gating: top-2, top-1 only when p1 - p2 >= threshold",
       {{"balance", 0.01}},
       routers::make_adaptive_gating},
      {"gw_moe",
       "GW-MoE: top-2; in training uncertain tokens (high router entropy) go to every expert",
       {{"balance", 0.01}},
       routers::make_gw_moe},
      {"locmoe",
       "LocMoE: top-1 with a locality loss toward the token's node's experts",
       {{"balance", 0.01}, {"balance_top1_only", true}},
       routers::make_locmoe},
      {"smile", "SMILE: bi-level top-1, a node then an expert inside it", kNoLosses,
       routers::make_smile},
      {"prototype", "M6-T expert prototyping: K groups of experts, top-1 in each", kNoLosses,
       routers::make_prototype},
      {"expert_choice", "Expert Choice: each expert takes its top tokens", kNoLosses,
       routers::make_expert_choice},
      {"hash", "Hash layer: fixed token-id to expert table", kNoLosses, routers::make_hash},
      {"base", "BASE layer: balanced assignment by auction", kNoLosses, routers::make_base},
      {"top_p",
       "Top-p dynamic routing: experts until the mass exceeds p",
       {{"balance", 0.01}, {"entropy", 0.0001}},
       routers::make_top_p},
      {"remoe", "ReMoE: ReLU routing with adaptive L1", kNoLosses, routers::make_remoe},
      {"smear", "SMEAR: soft merging of experts per sequence", kNoLosses, routers::make_smear},
      {"soft", "Dense soft routing over all experts (upper bound)", kNoLosses, routers::make_soft},
  };
  return registry;
}

std::unique_ptr<Router> make_router(const std::string& name, const json& params,
                                    const std::string& context) {
  for (const auto& entry : router_registry())
    if (entry.name == name) return entry.make(params, context + " [router " + name + "]");
  std::string names;
  for (const auto& entry : router_registry()) names += (names.empty() ? "" : ", ") + entry.name;
  fail("{}: unknown router '{}' (known: {})", context, name, names);
}

void RoutingPlan::clear() {
  token.clear();
  expert.clear();
  group.clear();
  weight.clear();
  kept.clear();
  capacity.clear();
  passthrough.clear();
  selection_counts.clear();
  first_choice_counts.clear();
  saved.clear();
}

}  // namespace switchyard
