// Qwen3MoeForCausalLM: GQA attention with RMSNorm on each head's q and k; softmax top-k MoE on the
// layers decoder_sparse_step / mlp_only_layers select, dense SwiGLU on the others.
#include "infer/models/arch_common.h"

namespace switchyard::infer::models {

ModelSpec parse_qwen3_moe(const HFConfig& config) {
  ModelSpec s = read_common(config, "Qwen3MoeForCausalLM");
  ParamReader r = config.reader();
  reject_if(config, "attention_bias", r.get_bool("attention_bias", false), "q/k/v/o biases");
  s.qk_norm = QKNorm::PerHead;
  s.names.q_norm = "model.layers.{l}.self_attn.q_norm.weight";
  s.names.k_norm = "model.layers.{l}.self_attn.k_norm.weight";
  // Real checkpoints say num_experts; transformers 5 writes num_local_experts.
  s.experts = r.has("num_experts") ? r.get_int("num_experts", 0, 1, 1 << 16)
                                   : r.get_int("num_local_experts", 0, 1, 1 << 16);
  s.expert_ff = r.get_int("moe_intermediate_size", 0, 1, 1 << 24);
  s.dense_ff = r.get_int("intermediate_size", 0, 1, 1 << 24);
  s.router = softmax_topk_router(r.get_int("num_experts_per_tok", 8, 1, s.experts),
                                 r.get_bool("norm_topk_prob", true));
  if (r.get_bool("use_sliding_window", false))
    s.sliding_window = r.get_int("sliding_window", 0, 0, 1LL << 32);
  s.moe_layer = sparse_step_layers(config, s.n_layers);
  return s;
}

}  // namespace switchyard::infer::models
