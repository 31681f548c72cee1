// Qwen2MoeForCausalLM: GQA attention with q/k/v biases; softmax top-k MoE plus a shared expert
// whose output is scaled by sigmoid(shared_expert_gate · x).
#include "infer/models/arch_common.h"

namespace switchyard::infer::models {

ModelSpec parse_qwen2_moe(const HFConfig& config) {
  ModelSpec s = read_common(config, "Qwen2MoeForCausalLM");
  ParamReader r = config.reader();
  TensorNames& n = s.names;
  n.q_bias = "model.layers.{l}.self_attn.q_proj.bias";
  n.k_bias = "model.layers.{l}.self_attn.k_proj.bias";
  n.v_bias = "model.layers.{l}.self_attn.v_proj.bias";
  s.experts = r.get_int("num_experts", 60, 1, 1 << 16);
  s.expert_ff = r.get_int("moe_intermediate_size", 0, 1, 1 << 24);
  s.dense_ff = r.get_int("intermediate_size", 0, 1, 1 << 24);
  s.shared_ff = r.get_int("shared_expert_intermediate_size", 0, 0, 1 << 24);
  s.router = softmax_topk_router(r.get_int("num_experts_per_tok", 4, 1, s.experts),
                                 r.get_bool("norm_topk_prob", false));
  if (r.get_bool("use_sliding_window", false))
    s.sliding_window = r.get_int("sliding_window", 0, 0, 1LL << 32);
  s.moe_layer = sparse_step_layers(config, s.n_layers);
  if (s.shared_ff > 0) {
    n.shared_w1 = "model.layers.{l}.mlp.shared_expert.gate_proj.weight";
    n.shared_w3 = "model.layers.{l}.mlp.shared_expert.up_proj.weight";
    n.shared_w2 = "model.layers.{l}.mlp.shared_expert.down_proj.weight";
    n.shared_gate = "model.layers.{l}.mlp.shared_expert_gate.weight";
  }
  return s;
}

}  // namespace switchyard::infer::models
