// DeepseekV3ForCausalLM: multi-head latent attention (q and kv through low-rank projections,
// a shared rotary key, interleaved RoPE, yarn's softmax scale) and sigmoid group-limited top-k
// routing with a selection-only bias, renormalised and scaled by routed_scaling_factor, plus
// shared experts; the first first_k_dense_replace layers are dense.
#include <switchyard/error.h>

#include "infer/models/arch_common.h"
#include "infer/rope.h"

namespace switchyard::infer::models {

ModelSpec parse_deepseek_v3(const HFConfig& config) {
  ModelSpec s = read_common(config, "DeepseekV3ForCausalLM");
  ParamReader r = config.reader();
  reject_if(config, "attention_bias", r.get_bool("attention_bias", false), "q/k/v/o biases");
  s.attention = AttentionKind::Latent;
  s.q_lora_rank = r.get_int("q_lora_rank", 0, 0, 1 << 20);
  s.kv_lora_rank = r.get_int("kv_lora_rank", 0, 1, 1 << 20);
  s.qk_nope_dim = r.get_int("qk_nope_head_dim", 0, 0, 1 << 16);
  s.rope_dim = r.get_int("qk_rope_head_dim", 0, 2, 1 << 16);
  s.v_head_dim = r.get_int("v_head_dim", 0, 1, 1 << 16);
  s.n_kv_heads = s.n_heads;  // keys and values are decompressed per head
  s.rope_layout = r.get_bool("rope_interleave", true) ? RopeLayout::Interleaved : RopeLayout::Half;
  double scale = 1.0 / std::sqrt(double(s.qk_nope_dim + s.rope_dim));
  if (s.rope.type == "yarn" && s.rope.mscale_all_dim > 0) {
    const double m = yarn_mscale(s.rope.factor, s.rope.mscale_all_dim);
    scale *= m * m;
  }
  s.attention_scale = scale;
  TensorNames& n = s.names;
  const std::string a = "model.layers.{l}.self_attn.";
  if (s.q_lora_rank > 0) {
    n.q_a = a + "q_a_proj.weight";
    n.q_a_norm = a + "q_a_layernorm.weight";
    n.q_b = a + "q_b_proj.weight";
  }
  n.q = s.q_lora_rank > 0 ? "" : a + "q_proj.weight";
  n.k = n.v = "";
  n.kv_a = a + "kv_a_proj_with_mqa.weight";
  n.kv_a_norm = a + "kv_a_layernorm.weight";
  n.kv_b = a + "kv_b_proj.weight";

  const std::string scoring = r.get_choice("scoring_func", "sigmoid", {"sigmoid"});
  r.get_choice("topk_method", "noaux_tc", {"noaux_tc"});
  s.experts = r.get_int("n_routed_experts", 0, 1, 1 << 16);
  s.expert_ff = r.get_int("moe_intermediate_size", 0, 1, 1 << 24);
  s.dense_ff = r.get_int("intermediate_size", 0, 1, 1 << 24);
  s.shared_ff = s.expert_ff * r.get_int("n_shared_experts", 0, 0, 1 << 10);
  const int64_t groups = r.get_int("n_group", 1, 1, s.experts);
  const int64_t k = r.get_int("num_experts_per_tok", 8, 1, s.experts);
  if (s.experts % groups != 0)
    fail("{}: field 'n_group' = {} does not divide n_routed_experts = {}", config.source, groups,
         s.experts);
  s.router = {{"router", "topk"},
              {"k", k},
              {"score", scoring},
              {"normalize", r.get_bool("norm_topk_prob", true)},
              {"groups", groups},
              {"topk_groups", r.get_int("topk_group", groups, 1, groups)},
              {"route_scale", r.get_double("routed_scaling_factor", 1.0, 1e-6, 1e6)}};
  const int64_t first_dense = r.get_int("first_k_dense_replace", 0, 0, s.n_layers);
  const int64_t freq = r.get_int("moe_layer_freq", 1, 1, s.n_layers);
  for (int64_t l = 0; l < s.n_layers; ++l)
    s.moe_layer[size_t(l)] = l >= first_dense && l % freq == 0;
  n.router = "model.layers.{l}.mlp.gate.weight";
  n.router_bias = "model.layers.{l}.mlp.gate.e_score_correction_bias";
  if (s.shared_ff > 0) {
    n.shared_w1 = "model.layers.{l}.mlp.shared_experts.gate_proj.weight";
    n.shared_w3 = "model.layers.{l}.mlp.shared_experts.up_proj.weight";
    n.shared_w2 = "model.layers.{l}.mlp.shared_experts.down_proj.weight";
  }
  return s;
}

}  // namespace switchyard::infer::models
