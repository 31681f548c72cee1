// Routing control at inference: per MoE layer, the rule of the router zoo that runs (the
// checkpoint's by default), its k and capacity, experts taken out (pruning; the remaining
// experts' weights renormalise as the rule does), and a selection bias.
//
// routing.json (docs/inference.md): the top level applies to every MoE layer, "layers" overrides
// single layers by MoE-layer index (counting MoE layers from 0):
//   {"router": {...layer.json router object...}, "k": 4, "capacity_factor": 1.25,
//    "disabled_experts": [3, 7], "bias": [0.0, ...], "layers": {"2": {"k": 2}},
//    "gate": {"file": "router.safetensors", "tensor": "layers.3.moe.gate.weight"}}
// "gate" replaces the layer's gate weight (experts, hidden) with a router trained elsewhere
// (e.g. by `switchyard train`, whose checkpoints name it layers.L.moe.gate.weight).
#pragma once

#include <switchyard/infer/model_spec.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard::infer {

struct LayerRouting {
  nlohmann::json router;               // layer.json object the layer runs
  std::vector<int64_t> disabled;       // sorted expert ids taken out
  std::vector<float> selection_bias;   // (E) added to the selection scores; empty = none
  std::string gate_file, gate_tensor;  // a gate weight (E, d) to use instead; "" = the model's
};

// One entry per MoE layer. `overrides` may be null (the checkpoint's routing everywhere).
// Errors name `source`, the field and the value.
std::vector<LayerRouting> resolve_routing(const ModelSpec& spec, const nlohmann::json& overrides,
                                          const std::string& source);

}  // namespace switchyard::infer
