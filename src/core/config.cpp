#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/router.h>

#include <cmath>
#include <limits>

namespace switchyard {

using nlohmann::json;

ParamReader::ParamReader(const json& object, std::string context)
    : object_(object), context_(std::move(context)) {
  if (!object_.is_object()) fail("{}: expected a JSON object, got {}", context_, object_.dump());
}

bool ParamReader::has(const std::string& key) const {
  return object_.contains(key);
}

int64_t ParamReader::get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (!v.is_number_integer() &&
      !(v.is_number_float() && std::floor(v.get<double>()) == v.get<double>()))
    fail("{}: field '{}' must be an integer, got {}", context_, key, v.dump());
  // Range-check as double first: casting an out-of-range value to int64 is undefined.
  const double approx = v.get<double>();
  if (!(approx >= double(min) && approx <= double(max)))
    fail("{}: field '{}' = {} is out of range [{}, {}]", context_, key, v.dump(), min, max);
  const int64_t value = v.is_number_integer() ? v.get<int64_t>() : int64_t(approx);
  if (value < min || value > max)
    fail("{}: field '{}' = {} is out of range [{}, {}]", context_, key, v.dump(), min, max);
  return value;
}

double ParamReader::get_double(const std::string& key, double fallback, double min, double max) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (!v.is_number()) fail("{}: field '{}' must be a number, got {}", context_, key, v.dump());
  const double value = v.get<double>();
  if (!std::isfinite(value) || value < min || value > max)
    fail("{}: field '{}' = {} is out of range [{}, {}]", context_, key, value, min, max);
  return value;
}

bool ParamReader::get_bool(const std::string& key, bool fallback) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (!v.is_boolean())
    fail("{}: field '{}' must be true or false, got {}", context_, key, v.dump());
  return v.get<bool>();
}

std::string ParamReader::get_choice(const std::string& key, const std::string& fallback,
                                    const std::vector<std::string>& choices) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (v.is_string()) {
    for (const auto& c : choices)
      if (v.get<std::string>() == c) return c;
  }
  fail("{}: field '{}' = {} is not one of [{}]", context_, key, v.dump(), fmt::join(choices, ", "));
}

std::string ParamReader::get_string(const std::string& key, const std::string& fallback) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (!v.is_string()) fail("{}: field '{}' must be a string, got {}", context_, key, v.dump());
  return v.get<std::string>();
}

std::vector<std::string> ParamReader::get_string_list(const std::string& key) {
  read_.insert(key);
  std::vector<std::string> out;
  if (!has(key)) return out;
  const json& v = object_.at(key);
  if (!v.is_array())
    fail("{}: field '{}' must be a list of strings, got {}", context_, key, v.dump());
  for (const json& item : v) {
    if (!item.is_string())
      fail("{}: field '{}' has a non-string entry {}", context_, key, item.dump());
    out.push_back(item.get<std::string>());
  }
  return out;
}

json ParamReader::get_object(const std::string& key, const json& fallback) {
  read_.insert(key);
  if (!has(key)) return fallback;
  const json& v = object_.at(key);
  if (!v.is_object()) fail("{}: field '{}' must be a JSON object, got {}", context_, key, v.dump());
  return v;
}

json ParamReader::get_json(const std::string& key, const json& fallback) {
  read_.insert(key);
  return has(key) ? object_.at(key) : fallback;
}

void ParamReader::finish() const {
  for (const auto& [key, value] : object_.items())
    if (!read_.count(key)) fail("{}: unknown field '{}' (value {})", context_, key, value.dump());
}

bool has_up_projection(Activation activation) {
  return activation == Activation::SwiGLU || activation == Activation::SwiGLUClamped;
}

const char* activation_name(Activation activation) {
  switch (activation) {
    case Activation::SwiGLU:
      return "swiglu";
    case Activation::GELU:
      return "gelu";
    case Activation::SwiGLUClamped:
      return "swiglu_clamped";
  }
  return "?";
}

void read_activation(ParamReader& r, Activation& activation, SwigluClamp& clamp) {
  const std::string name =
      r.get_choice("activation", "swiglu", {"swiglu", "gelu", "swiglu_clamped"});
  activation = name == "swiglu" ? Activation::SwiGLU
               : name == "gelu" ? Activation::GELU
                                : Activation::SwiGLUClamped;
  clamp = SwigluClamp{};
  for (const char* key : {"swiglu_alpha", "swiglu_limit"}) {
    if (!r.has(key)) continue;
    if (activation != Activation::SwiGLUClamped) {
      const json value = r.get_json(key, json());
      fail("{}: field '{}' = {} applies only to activation 'swiglu_clamped', not '{}'", r.context(),
           key, value.dump(), name);
    }
    const double value = r.get_double(key, 0.0, std::numeric_limits<double>::lowest(),
                                      std::numeric_limits<double>::max());
    if (!(value > 0.0)) fail("{}: field '{}' = {} must be positive", r.context(), key, value);
    if (std::string(key) == "swiglu_alpha")
      clamp.alpha = value;
    else
      clamp.limit = value;
  }
}

void write_activation(json& j, Activation activation, const SwigluClamp& clamp) {
  j["activation"] = activation_name(activation);
  if (activation == Activation::SwiGLUClamped) {
    j["swiglu_alpha"] = clamp.alpha;
    j["swiglu_limit"] = clamp.limit;
  }
}

namespace {

LossConfig parse_losses(const json& object, const std::string& context) {
  ParamReader r(object, context);
  LossConfig losses;
  losses.balance = r.get_double("balance", 0.0, 0.0, 1e6);
  const std::string mode =
      r.get_choice("balance_mode", "micro_batch", {"micro_batch", "global_batch", "sequence"});
  losses.balance_mode = mode == "micro_batch"    ? BalanceMode::MicroBatch
                        : mode == "global_batch" ? BalanceMode::GlobalBatch
                                                 : BalanceMode::Sequence;
  losses.balance_top1_only = r.get_bool("balance_top1_only", false);
  losses.z = r.get_double("z", 0.0, 0.0, 1e6);
  losses.entropy = r.get_double("entropy", 0.0, 0.0, 1e6);
  r.finish();
  return losses;
}

}  // namespace

ExpertPlacement parse_placement(const json& j, const std::string& source) {
  ParamReader r(j, source);
  ExpertPlacement p;
  p.ranks = r.get_int("ranks", 1, 1, 1 << 20);
  p.expert_parallel = r.get_int("expert_parallel", p.ranks, 1, 1 << 20);
  p.ranks_per_node = r.get_int("ranks_per_node", p.expert_parallel, 1, 1 << 20);
  r.finish();
  if (p.ranks % p.expert_parallel != 0)
    fail("{}: expert_parallel = {} does not divide ranks = {}", source, p.expert_parallel, p.ranks);
  if (p.expert_parallel % p.ranks_per_node != 0)
    fail("{}: ranks_per_node = {} does not divide expert_parallel = {}", source, p.ranks_per_node,
         p.expert_parallel);
  return p;
}

json placement_json(const ExpertPlacement& p) {
  return {{"ranks", p.ranks},
          {"expert_parallel", p.expert_parallel},
          {"ranks_per_node", p.ranks_per_node}};
}

LayerConfig parse_layer_config(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: the layer config must be a JSON object", source);
  LayerConfig config;
  config.source = source;
  json rest = json::object();
  for (const auto& [key, value] : j.items()) {
    if (key == "router" || key == "activation" || key == "swiglu_alpha" || key == "swiglu_limit" ||
        key == "routing_groups" || key == "losses" || key == "training" || key == "seed" ||
        key == "placement" || key == "vocab_size")
      continue;
    rest[key] = value;
  }
  json layer_keys = json::object();
  for (const char* key : {"router", "activation", "swiglu_alpha", "swiglu_limit", "routing_groups",
                          "training", "seed", "vocab_size"})
    if (j.contains(key)) layer_keys[key] = j.at(key);
  ParamReader r(layer_keys, source);
  std::vector<std::string> names;
  for (const auto& e : router_registry()) names.push_back(e.name);
  config.router = r.get_choice("router", "mixtral", names);
  read_activation(r, config.activation, config.swiglu_clamp);
  config.routing_groups = r.get_choice("routing_groups", "batch", {"batch", "sequence"}) == "batch"
                              ? RoutingGroups::Batch
                              : RoutingGroups::Sequence;
  config.training = r.get_bool("training", false);
  config.seed = uint64_t(r.get_int("seed", 0, 0, INT64_MAX));
  config.vocab_size = r.get_int("vocab_size", 0, 1, int64_t(1) << 31);
  r.finish();
  const RouterEntry* entry = nullptr;
  for (const auto& e : router_registry())
    if (e.name == config.router) entry = &e;
  config.losses = parse_losses(j.contains("losses") ? j.at("losses") : entry->default_losses,
                               source + " [losses]");
  if (j.contains("placement"))
    config.placement = parse_placement(j.at("placement"), source + " [placement]");
  config.router_params = rest;
  // Validate the router's parameters now so a bad config fails before any data is read.
  const std::unique_ptr<Router> router = make_router(config.router, config.router_params, source);
  const LogitFunction* lf = router->logit_function();
  if (config.vocab_size > 0 && !(lf && lf->needs_vocab()))
    fail(
        "{}: field 'vocab_size' = {} is only for routers whose logits read token ids (router '{}' "
        "does not); remove it",
        source, config.vocab_size, config.router);
  return config;
}

json parse_json_strict(const std::string& text, const std::string& source) {
  // nlohmann keeps the last of duplicate keys silently; a config with "k" twice is a mistake.
  std::vector<std::set<std::string>> keys;
  std::string duplicate;
  auto callback = [&](int /*depth*/, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::object_start) keys.emplace_back();
    if (event == json::parse_event_t::object_end && !keys.empty()) keys.pop_back();
    if (event == json::parse_event_t::key && !keys.empty() &&
        !keys.back().insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  json j;
  try {
    j = json::parse(text, callback);
  } catch (const json::exception& e) {  // parse errors, and numbers beyond double's range
    fail("{}: invalid JSON: {}", source, e.what());
  }
  if (!duplicate.empty()) fail("{}: field '{}' appears more than once", source, duplicate);
  return j;
}

LayerConfig load_layer_config(const std::string& path) {
  const std::string text = read_file_text(path);
  return parse_layer_config(parse_json_strict(text, path), path);
}

}  // namespace switchyard
