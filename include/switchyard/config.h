// Layer and router configuration, parsed from layer.json (schema: docs/layer-config.md).
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

namespace switchyard {

// The experts' activation (docs/layer-config.md). SwiGLU: silu(w1 x) ⊙ w3 x. GELU: gelu(w1 x), no
// w3. SwiGLUClamped: gpt-oss's clamped SwiGLU, (clamp(w3 x, ±limit) + 1) ⊙ g σ(alpha g) with
// g = min(w1 x, limit) (parameters in SwigluClamp).
enum class Activation { SwiGLU, GELU, SwiGLUClamped };
enum class RoutingGroups { Batch, Sequence };
enum class BalanceMode { MicroBatch, GlobalBatch, Sequence };

// Reads typed values out of a JSON object and remembers which keys were read, so that `finish()`
// can reject unknown names. Errors name the context (file and section), key and value.
class ParamReader {
 public:
  ParamReader(const nlohmann::json& object, std::string context);
  bool has(const std::string& key) const;
  int64_t get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max);
  double get_double(const std::string& key, double fallback, double min, double max);
  bool get_bool(const std::string& key, bool fallback);
  std::string get_choice(const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices);
  std::string get_string(const std::string& key, const std::string& fallback);
  std::vector<std::string> get_string_list(const std::string& key);
  // A JSON object field (fallback when absent).
  nlohmann::json get_object(const std::string& key, const nlohmann::json& fallback);
  // Any JSON value (the caller checks its type).
  nlohmann::json get_json(const std::string& key, const nlohmann::json& fallback);
  const std::string& context() const { return context_; }
  // Throws if the object has a key that nothing read.
  void finish() const;

 private:
  const nlohmann::json& object_;
  std::string context_;
  std::set<std::string> read_;
};

// The parameters of Activation::SwiGLUClamped, layer.json's swiglu_alpha and swiglu_limit;
// the defaults are gpt-oss's (GptOssExperts: alpha 1.702, limit 7.0).
struct SwigluClamp {
  double alpha = 1.702;  // the sigmoid's slope, > 0
  double limit = 7.0;    // the clamp, > 0
  bool operator==(const SwigluClamp&) const = default;
};

// True when the activation has an up projection (experts.w3): SwiGLU and its clamped form.
bool has_up_projection(Activation activation);
// layer.json's name: "swiglu", "gelu" or "swiglu_clamped".
const char* activation_name(Activation activation);
// Reads "activation" and, for swiglu_clamped, "swiglu_alpha" and "swiglu_limit" (defaults
// SwigluClamp{}); the two are rejected with any other activation and must be positive. Errors name
// the reader's context, the field and its value.
void read_activation(ParamReader& r, Activation& activation, SwigluClamp& clamp);
// Writes "activation" (and, for swiglu_clamped, "swiglu_alpha" and "swiglu_limit") into j.
void write_activation(nlohmann::json& j, Activation activation, const SwigluClamp& clamp);

struct LossConfig {
  double balance = 0.0;  // Switch balance loss coefficient α
  BalanceMode balance_mode = BalanceMode::MicroBatch;
  bool balance_top1_only = false;  // GShard: f counts the first choice only
  double z = 0.0;                  // router z-loss coefficient
  double entropy = 0.0;            // mean per-token router entropy coefficient
};

// Where a layer's tokens and experts sit across ranks, for routers that route by locality
// (LocMoE). Batch rows split evenly over `ranks` ranks in order; rank r is expert-parallel rank
// r % expert_parallel, which holds experts [p E/P, (p+1) E/P); ranks_per_node consecutive
// expert-parallel ranks share a node. Declared in layer.json so that one process routes exactly
// as the run across ranks it stands for; a run across ranks fills it in (or checks it).
struct ExpertPlacement {
  int64_t ranks = 0;            // 0: not declared
  int64_t expert_parallel = 0;  // P, divides ranks and the expert count
  int64_t ranks_per_node = 0;   // G, divides P
  bool declared() const { return ranks > 0; }
  int64_t nodes() const { return expert_parallel / ranks_per_node; }
  bool operator==(const ExpertPlacement&) const = default;
};

struct LayerConfig {
  std::string router = "mixtral";                           // registry name
  nlohmann::json router_params = nlohmann::json::object();  // router-specific, validated by it
  Activation activation = Activation::SwiGLU;
  SwigluClamp swiglu_clamp;  // activation swiglu_clamped only
  RoutingGroups routing_groups = RoutingGroups::Batch;
  LossConfig losses;
  ExpertPlacement placement;
  bool training = false;
  uint64_t seed = 0;
  // The token-id vocabulary of a layer file (layer.json's "vocab_size"), for a router whose logit
  // function reads ids (LogitFunction::needs_vocab); 0: not given. A model sets MoEShape::vocab
  // itself.
  int64_t vocab_size = 0;
  std::string source = "layer.json";  // for error messages
};

// layer.json's "placement" object (every key optional: ranks 1, expert_parallel = ranks,
// ranks_per_node = expert_parallel); errors name `source`.
ExpertPlacement parse_placement(const nlohmann::json& json, const std::string& source);
nlohmann::json placement_json(const ExpertPlacement& placement);
// Parses and validates layer.json text. The router's own parameters are validated when the router
// is created (see make_router). Unknown keys anywhere are errors.
LayerConfig parse_layer_config(const nlohmann::json& json, const std::string& source);
LayerConfig load_layer_config(const std::string& path);
// Parses JSON text, rejecting duplicate keys; errors name `source`.
nlohmann::json parse_json_strict(const std::string& text, const std::string& source);

}  // namespace switchyard
