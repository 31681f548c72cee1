// OlmoeForCausalLM: attention with RMSNorm over the whole q and k projections (before the heads
// are split) and optional clipping of q, k, v; softmax top-k MoE, not renormalised by default.
#include "infer/models/arch_common.h"

namespace switchyard::infer::models {

ModelSpec parse_olmoe(const HFConfig& config) {
  ModelSpec s = read_common(config, "OlmoeForCausalLM");
  ParamReader r = config.reader();
  reject_if(config, "attention_bias", r.get_bool("attention_bias", false), "q/k/v/o biases");
  s.qk_norm = QKNorm::Full;
  s.names.q_norm = "model.layers.{l}.self_attn.q_norm.weight";
  s.names.k_norm = "model.layers.{l}.self_attn.k_norm.weight";
  s.clip_qkv = r.get_double("clip_qkv", 0.0, 0.0, 1e30);
  s.experts = r.get_int("num_experts", 64, 1, 1 << 16);
  s.expert_ff = r.get_int("intermediate_size", 0, 1, 1 << 24);
  s.router = softmax_topk_router(r.get_int("num_experts_per_tok", 8, 1, s.experts),
                                 r.get_bool("norm_topk_prob", false));
  s.moe_layer.assign(size_t(s.n_layers), true);
  return s;
}

}  // namespace switchyard::infer::models
