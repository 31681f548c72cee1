// The dense bases: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM (q/k/v biases) and
// Qwen3ForCausalLM (RMSNorm on each head's q and k). Every layer a SwiGLU MLP.
#include "infer/models/arch_common.h"

namespace switchyard::infer::models {

ModelSpec parse_dense(const HFConfig& config, const std::string& architecture) {
  ModelSpec s = read_common(config, architecture);
  ParamReader r = config.reader();
  s.dense_ff = r.get_int("intermediate_size", 0, 1, 1 << 24);
  TensorNames& n = s.names;
  const bool qwen2 = architecture == "Qwen2ForCausalLM";
  const bool biases = qwen2 || r.get_bool("attention_bias", false);
  if (biases) {
    n.q_bias = "model.layers.{l}.self_attn.q_proj.bias";
    n.k_bias = "model.layers.{l}.self_attn.k_proj.bias";
    n.v_bias = "model.layers.{l}.self_attn.v_proj.bias";
  }
  // Llama's attention_bias also puts a bias on o_proj; the Qwen families have none there.
  reject_if(config, "attention_bias", biases && !qwen2, "an o_proj bias");
  if (architecture == "Qwen3ForCausalLM") {
    s.qk_norm = QKNorm::PerHead;
    n.q_norm = "model.layers.{l}.self_attn.q_norm.weight";
    n.k_norm = "model.layers.{l}.self_attn.k_norm.weight";
  }
  if (architecture == "MistralForCausalLM" || r.get_bool("use_sliding_window", false))
    s.sliding_window = r.get_int("sliding_window", 0, 0, 1LL << 32);
  return s;
}

}  // namespace switchyard::infer::models
