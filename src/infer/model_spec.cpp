#include <fmt/ranges.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/model_spec.h>

#include <filesystem>

#include "infer/models/arch_common.h"

namespace switchyard::infer {

using nlohmann::json;

int64_t ModelSpec::num_moe_layers() const {
  return int64_t(std::count(moe_layer.begin(), moe_layer.end(), true));
}

int64_t ModelSpec::top_k() const {
  return router.is_object() && router.contains("k") ? router["k"].get<int64_t>() : 0;
}

std::string tensor_name(const std::string& pattern, int64_t layer, int64_t expert) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern.compare(i, 3, "{l}") == 0) {
      out += std::to_string(layer);
      i += 2;
    } else if (pattern.compare(i, 3, "{e}") == 0) {
      out += std::to_string(expert);
      i += 2;
    } else {
      out += pattern[i];
    }
  }
  return out;
}

namespace {

json without_nulls(const json& j) {
  json out = json::object();
  for (const auto& [key, value] : j.items())
    if (!value.is_null()) out[key] = value;
  return out;
}

}  // namespace

ModelSpec parse_model_spec(const json& config, const std::string& source) {
  if (!config.is_object()) fail("{}: expected a JSON object", source);
  const models::HFConfig c{without_nulls(config), source};
  if (!c.json.contains("architectures") || !c.json["architectures"].is_array() ||
      c.json["architectures"].empty() || !c.json["architectures"][0].is_string())
    fail("{}: field 'architectures' (e.g. [\"MixtralForCausalLM\"]) is missing", source);
  const std::string arch = c.json["architectures"][0].get<std::string>();
  for (const auto& entry : models::architecture_registry())
    if (entry.name == arch) {
      ModelSpec spec = entry.parse(c);
      if (spec.n_heads % spec.n_kv_heads != 0)
        fail("{}: field 'num_key_value_heads' = {} does not divide num_attention_heads = {}",
             source, spec.n_kv_heads, spec.n_heads);
      if (spec.rope_dim % 2 != 0 || spec.rope_dim > spec.q_head_dim())
        fail("{}: rotary dimension {} must be even and at most the head dimension {}", source,
             spec.rope_dim, spec.q_head_dim());
      return spec;
    }
  fail("{}: field 'architectures' = \"{}\" is not supported (supported: {})", source, arch,
       fmt::join(supported_architectures(), ", "));
}

ModelSpec load_model_spec(const std::string& model_dir) {
  const std::string path = (std::filesystem::path(model_dir) / "config.json").string();
  if (!std::filesystem::exists(path)) fail("{}: config.json not found in the model folder", path);
  return parse_model_spec(parse_json_strict(read_file_text(path), path), path);
}

std::vector<int64_t> parse_eos_ids(const json& value, int64_t vocab, const std::string& source) {
  std::vector<int64_t> ids;
  if (value.is_null()) return ids;
  for (const json& id : value.is_array() ? value : json::array({value})) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab)
      fail("{}: field 'eos_token_id' = {} is not a token id below vocab_size = {}", source,
           value.dump(), vocab);
    ids.push_back(id.get<int64_t>());
  }
  return ids;
}

std::vector<std::string> supported_architectures() {
  std::vector<std::string> names;
  for (const auto& entry : models::architecture_registry()) names.push_back(entry.name);
  return names;
}

}  // namespace switchyard::infer
