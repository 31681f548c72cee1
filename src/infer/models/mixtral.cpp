// MixtralForCausalLM: GQA attention, every layer a softmax top-k MoE (block_sparse_moe.*).
#include "infer/models/arch_common.h"

namespace switchyard::infer::models {

ModelSpec parse_mixtral(const HFConfig& config) {
  ModelSpec s = read_common(config, "MixtralForCausalLM");
  ParamReader r = config.reader();
  s.experts = r.get_int("num_local_experts", 8, 1, 1 << 16);
  s.expert_ff = r.get_int("intermediate_size", 0, 1, 1 << 24);
  s.router = softmax_topk_router(r.get_int("num_experts_per_tok", 2, 1, s.experts), true);
  s.sliding_window = r.get_int("sliding_window", 0, 0, 1LL << 32);
  s.moe_layer.assign(size_t(s.n_layers), true);
  TensorNames& n = s.names;
  n.router = "model.layers.{l}.block_sparse_moe.gate.weight";
  n.expert_w1 = "model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight";
  n.expert_w3 = "model.layers.{l}.block_sparse_moe.experts.{e}.w3.weight";
  n.expert_w2 = "model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight";
  return s;
}

}  // namespace switchyard::infer::models
