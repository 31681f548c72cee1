// What a Hugging Face config.json says about a model, in one form for every architecture: the
// hyper-parameters, the routing rule as a layer.json object of the router zoo, and the tensor
// names. One file per architecture in src/infer/models/ fills it (registry in architectures.cpp).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard::infer {

enum class QKNorm { None, PerHead, Full };      // Qwen3: per head; OLMoE: over the whole projection
enum class RopeLayout { Half, Interleaved };    // rotate_half pairs (i, i + D/2), or (2i, 2i + 1)
enum class AttentionKind { Standard, Latent };  // GQA; DeepSeek's multi-head latent attention

struct RopeConfig {
  std::string type = "default";  // default, linear, llama3, yarn
  double theta = 10000.0;
  double factor = 1.0;
  double low_freq_factor = 1.0, high_freq_factor = 4.0;  // llama3
  int64_t original_max_positions = 0;                    // llama3, yarn
  double beta_fast = 32.0, beta_slow = 1.0;              // yarn
  double mscale = 0.0, mscale_all_dim = 0.0;             // yarn (DeepSeek)
  double attention_factor = 0.0;                         // yarn; 0 = derived from the factor
  bool truncate = true;                                  // yarn: floor/ceil the correction range
};

// Tensor names with {l} for the layer and {e} for the expert; "" = the model has no such tensor.
struct TensorNames {
  std::string embed = "model.embed_tokens.weight", final_norm = "model.norm.weight",
              lm_head = "lm_head.weight";
  std::string attn_norm = "model.layers.{l}.input_layernorm.weight",
              ffn_norm = "model.layers.{l}.post_attention_layernorm.weight";
  // Standard attention.
  std::string q = "model.layers.{l}.self_attn.q_proj.weight",
              k = "model.layers.{l}.self_attn.k_proj.weight",
              v = "model.layers.{l}.self_attn.v_proj.weight",
              o = "model.layers.{l}.self_attn.o_proj.weight";
  std::string q_bias, k_bias, v_bias, q_norm, k_norm;
  // Latent attention (DeepSeek).
  std::string q_a, q_a_norm, q_b, kv_a, kv_a_norm, kv_b;
  // Dense FFN (SwiGLU: w2(silu(w1 x) * w3 x)).
  std::string dense_w1 = "model.layers.{l}.mlp.gate_proj.weight",
              dense_w3 = "model.layers.{l}.mlp.up_proj.weight",
              dense_w2 = "model.layers.{l}.mlp.down_proj.weight";
  // MoE FFN.
  std::string router = "model.layers.{l}.mlp.gate.weight", router_bias;
  std::string expert_w1 = "model.layers.{l}.mlp.experts.{e}.gate_proj.weight",
              expert_w3 = "model.layers.{l}.mlp.experts.{e}.up_proj.weight",
              expert_w2 = "model.layers.{l}.mlp.experts.{e}.down_proj.weight";
  std::string shared_w1, shared_w3, shared_w2, shared_gate;
};

struct ModelSpec {
  std::string architecture;  // e.g. "MixtralForCausalLM"
  std::string source;        // config.json path, for messages
  int64_t vocab = 0, d = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, head_dim = 0;
  int64_t max_positions = 0;
  int64_t sliding_window = 0;  // a query sees the last `sliding_window` positions; 0 = all
  double norm_eps = 1e-6;
  bool tie_embeddings = false;

  AttentionKind attention = AttentionKind::Standard;
  QKNorm qk_norm = QKNorm::None;
  double clip_qkv = 0.0;  // OLMoE: clamp q, k, v to ±clip_qkv; 0 = off
  RopeConfig rope;
  RopeLayout rope_layout = RopeLayout::Half;
  int64_t rope_dim = 0;          // rotated dimensions per head
  double attention_scale = 0.0;  // softmax scale; 0 = 1/sqrt(q head dim)
  int64_t q_lora_rank = 0;       // latent: 0 = q projected directly
  int64_t kv_lora_rank = 0, qk_nope_dim = 0, v_head_dim = 0;

  std::vector<bool> moe_layer;  // (n_layers)
  int64_t dense_ff = 0;         // dense layers' intermediate size
  int64_t experts = 0, expert_ff = 0, shared_ff = 0;
  nlohmann::json router;  // the architecture's routing rule as a layer.json object

  std::vector<int64_t> eos_ids;
  int64_t bos_id = -1;
  TensorNames names;

  int64_t q_head_dim() const {
    return attention == AttentionKind::Latent ? qk_nope_dim + rope_dim : head_dim;
  }
  int64_t v_dim() const { return attention == AttentionKind::Latent ? v_head_dim : head_dim; }
  int64_t k_cached_dim() const { return q_head_dim(); }
  int64_t num_moe_layers() const;
  int64_t top_k() const;
};

// Reads config.json (transformers 4.x and 5.x forms) into a spec; an unknown architecture or a
// field value the engine cannot run is an Error naming the file, the field and the value.
ModelSpec parse_model_spec(const nlohmann::json& config, const std::string& source);
ModelSpec load_model_spec(const std::string& model_dir);
// An eos_token_id value (an id or a list of ids; absent or null = none) as ids below `vocab`;
// `source` names the file in errors.
std::vector<int64_t> parse_eos_ids(const nlohmann::json& value, int64_t vocab,
                                   const std::string& source);
// Architectures the engine runs, for help texts.
std::vector<std::string> supported_architectures();

// "model.layers.{l}.mlp.experts.{e}.w1" -> with l and e filled in.
std::string tensor_name(const std::string& pattern, int64_t layer, int64_t expert = -1);

}  // namespace switchyard::infer
