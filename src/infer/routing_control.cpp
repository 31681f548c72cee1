#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/infer/routing_control.h>

#include <algorithm>
#include <string>

namespace switchyard::infer {

using nlohmann::json;

namespace {

// Applies one override object (top level or one layer's) to a layer's routing.
void apply(const json& o, const ModelSpec& spec, const std::string& context, LayerRouting& r,
           bool top_level) {
  ParamReader p(o, context);
  if (p.has("router")) r.router = p.get_object("router", r.router);
  if (p.has("k")) r.router["k"] = p.get_int("k", 0, 1, spec.experts);
  if (p.has("capacity_factor"))
    r.router["capacity_factor"] = p.get_double("capacity_factor", 0.0, 0.0, 1e6);
  if (p.has("disabled_experts")) {
    const json list = p.get_json("disabled_experts", json::array());
    if (!list.is_array())
      fail("{}: field 'disabled_experts' must be a list of expert ids", context);
    r.disabled.clear();
    for (const json& e : list) {
      if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() >= spec.experts)
        fail("{}: field 'disabled_experts' has {}, not an expert id in [0, {})", context, e.dump(),
             spec.experts);
      r.disabled.push_back(e.get<int64_t>());
    }
    std::sort(r.disabled.begin(), r.disabled.end());
    r.disabled.erase(std::unique(r.disabled.begin(), r.disabled.end()), r.disabled.end());
    if (int64_t(r.disabled.size()) >= spec.experts)
      fail("{}: field 'disabled_experts' takes out all {} experts", context, spec.experts);
  }
  if (p.has("bias")) {
    const json list = p.get_json("bias", json::array());
    if (!list.is_array() || int64_t(list.size()) != spec.experts)
      fail("{}: field 'bias' must be a list of {} numbers (one per expert)", context, spec.experts);
    r.selection_bias.clear();
    for (const json& b : list) {
      if (!b.is_number()) fail("{}: field 'bias' has {}, not a number", context, b.dump());
      r.selection_bias.push_back(b.get<float>());
    }
  }
  if (p.has("gate")) {
    const json gate = p.get_object("gate", json::object());  // ParamReader keeps a reference
    ParamReader g(gate, context + " [gate]");
    r.gate_file = g.get_string("file", "");
    r.gate_tensor = g.get_string("tensor", "");
    g.finish();
    if (r.gate_file.empty() || r.gate_tensor.empty())
      fail("{}: field 'gate' needs 'file' (a safetensors file) and 'tensor' (its name)", context);
  }
  if (top_level) p.get_object("layers", json::object());
  p.finish();
}

}  // namespace

std::vector<LayerRouting> resolve_routing(const ModelSpec& spec, const json& overrides,
                                          const std::string& source) {
  const int64_t L = spec.num_moe_layers();
  std::vector<LayerRouting> out(static_cast<size_t>(L));
  for (LayerRouting& r : out) r.router = spec.router;
  if (overrides.is_null()) return out;
  if (!overrides.is_object()) fail("{}: routing overrides must be a JSON object", source);
  for (int64_t l = 0; l < L; ++l) apply(overrides, spec, source, out[size_t(l)], true);
  if (overrides.contains("layers")) {
    for (const auto& [key, value] : overrides["layers"].items()) {
      size_t used = 0;
      int64_t l = -1;
      try {
        l = std::stoll(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used == 0 || used != key.size() || l < 0 || l >= L)
        fail("{}: field 'layers.{}' is not an MoE layer index in [0, {})", source, key, L);
      apply(value, spec, fmt::format("{} [layers.{}]", source, key), out[size_t(l)], false);
    }
  }
  for (int64_t l = 0; l < L; ++l) {
    LayerRouting& r = out[size_t(l)];
    // The checkpoint's experts are SwiGLU (the model specs accept hidden_act silu only); the
    // engine and the GGUF export run them as such, so a rule cannot name another activation
    // (gelu, or gpt-oss's swiglu_clamped, which no supported architecture has).
    for (const char* key : {"activation", "swiglu_alpha", "swiglu_limit"})
      if (r.router.contains(key) &&
          !(std::string(key) == "activation" && r.router[key] == "swiglu"))
        fail(
            "{}: MoE layer {}: field 'router.{}' = {}: the checkpoint's experts are SwiGLU "
            "(hidden_act silu); a routing rule cannot change their activation",
            source, l, key, r.router[key].dump());
    const int64_t alive = spec.experts - int64_t(r.disabled.size());
    if (r.router.contains("k") && r.router["k"].is_number_integer() &&
        r.router["k"].get<int64_t>() > alive)
      fail("{}: MoE layer {} routes k = {} experts but only {} are left after disabled_experts",
           source, l, r.router["k"].get<int64_t>(), alive);
  }
  return out;
}

}  // namespace switchyard::infer
