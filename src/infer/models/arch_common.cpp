#include "infer/models/arch_common.h"

#include <switchyard/error.h>

#include <algorithm>

namespace switchyard::infer::models {

using nlohmann::json;

void reject_if(const HFConfig& config, const std::string& field, bool unsupported,
               const std::string& why) {
  if (unsupported)
    fail("{}: field '{}' = {} is not supported: {}", config.source, field,
         config.json.contains(field) ? config.json[field].dump() : "(default)", why);
}

RopeConfig read_rope(const HFConfig& config) {
  RopeConfig rope;
  // 5.x: rope_parameters holds theta and the scaling; 4.x: rope_theta + rope_scaling.
  json params = json::object();
  std::string where = "rope_scaling";
  if (config.json.contains("rope_parameters")) {
    params = config.json["rope_parameters"];
    where = "rope_parameters";
  } else if (config.json.contains("rope_scaling")) {
    params = config.json["rope_scaling"];
  }
  if (!params.is_object())
    fail("{}: field '{}' must be an object, got {}", config.source, where, params.dump());
  ParamReader top = config.reader();
  rope.theta = top.get_double("rope_theta", rope.theta, 1.0, 1e12);
  ParamReader r(params, config.source + " [" + where + "]");
  rope.theta = r.get_double("rope_theta", rope.theta, 1.0, 1e12);
  // 4.x files name the type "type" in older versions and "rope_type" in newer ones.
  const std::vector<std::string> types = {"default", "linear", "llama3", "yarn"};
  rope.type = r.has("rope_type") ? r.get_choice("rope_type", "default", types)
                                 : r.get_choice("type", "default", types);
  rope.factor = r.get_double("factor", 1.0, 1e-6, 1e6);
  rope.low_freq_factor = r.get_double("low_freq_factor", rope.low_freq_factor, 1e-6, 1e6);
  rope.high_freq_factor = r.get_double("high_freq_factor", rope.high_freq_factor, 1e-6, 1e6);
  rope.original_max_positions = r.get_int("original_max_position_embeddings", 0, 0, 1LL << 32);
  rope.beta_fast = r.get_double("beta_fast", rope.beta_fast, 0.0, 1e6);
  rope.beta_slow = r.get_double("beta_slow", rope.beta_slow, 0.0, 1e6);
  rope.mscale = r.get_double("mscale", 0.0, 0.0, 1e6);
  rope.mscale_all_dim = r.get_double("mscale_all_dim", 0.0, 0.0, 1e6);
  rope.attention_factor = r.get_double("attention_factor", 0.0, 0.0, 1e6);
  rope.truncate = r.get_bool("truncate", true);
  if ((rope.type == "llama3" || rope.type == "yarn") && rope.original_max_positions == 0)
    rope.original_max_positions =
        top.get_int("max_position_embeddings", 0, 1, 1LL << 32);  // yarn's 5.x default
  return rope;
}

ModelSpec read_common(const HFConfig& config, const std::string& architecture) {
  ParamReader r = config.reader();
  ModelSpec s;
  s.architecture = architecture;
  s.source = config.source;
  s.vocab = r.get_int("vocab_size", 0, 1, 1 << 24);
  s.d = r.get_int("hidden_size", 0, 1, 1 << 20);
  s.n_layers = r.get_int("num_hidden_layers", 0, 1, 4096);
  s.n_heads = r.get_int("num_attention_heads", 0, 1, 4096);
  s.n_kv_heads = r.get_int("num_key_value_heads", s.n_heads, 1, 4096);
  if (!r.has("head_dim") && s.d % s.n_heads != 0)
    fail("{}: field 'hidden_size' = {} is not a multiple of num_attention_heads = {}",
         config.source, s.d, s.n_heads);
  s.head_dim = r.get_int("head_dim", s.d / s.n_heads, 1, 1 << 16);
  s.rope_dim = s.head_dim;
  s.norm_eps = r.get_double("rms_norm_eps", 1e-6, 0.0, 1.0);
  s.tie_embeddings = r.get_bool("tie_word_embeddings", false);
  s.max_positions = r.get_int("max_position_embeddings", 4096, 1, 1LL << 32);
  s.bos_id = r.get_int("bos_token_id", -1, -1, s.vocab - 1);
  s.eos_ids = parse_eos_ids(config.json.value("eos_token_id", json()), s.vocab, config.source);
  const std::string act = r.get_string("hidden_act", "silu");
  if (act != "silu" && act != "swish")
    fail("{}: field 'hidden_act' = \"{}\" is not supported (silu)", config.source, act);
  reject_if(config, "mlp_bias", r.get_bool("mlp_bias", false), "MLP biases");
  s.rope = read_rope(config);
  s.moe_layer.assign(size_t(s.n_layers), false);
  return s;
}

std::vector<bool> sparse_step_layers(const HFConfig& config, int64_t n_layers) {
  ParamReader r = config.reader();
  const int64_t step = r.get_int("decoder_sparse_step", 1, 1, 4096);
  std::vector<bool> moe(size_t(n_layers), false);
  for (int64_t l = 0; l < n_layers; ++l) moe[size_t(l)] = (l + 1) % step == 0;
  if (config.json.contains("mlp_only_layers")) {
    const json& only = config.json["mlp_only_layers"];
    if (!only.is_array()) fail("{}: field 'mlp_only_layers' must be a list", config.source);
    for (const json& l : only) {
      if (!l.is_number_integer() || l.get<int64_t>() < 0 || l.get<int64_t>() >= n_layers)
        fail("{}: field 'mlp_only_layers' has {}, not a layer index below {}", config.source,
             l.dump(), n_layers);
      moe[size_t(l.get<int64_t>())] = false;
    }
  }
  return moe;
}

json softmax_topk_router(int64_t k, bool normalize) {
  return {{"router", "topk"}, {"k", k}, {"score", "softmax"}, {"normalize", normalize}};
}

}  // namespace switchyard::infer::models
