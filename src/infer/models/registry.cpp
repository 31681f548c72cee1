// The architectures the engine runs: one line each (config.json's "architectures"[0]).
#include "infer/models/arch_common.h"

namespace switchyard::infer::models {

const std::vector<ArchitectureEntry>& architecture_registry() {
  static const std::vector<ArchitectureEntry> registry = {
      {"MixtralForCausalLM", parse_mixtral},
      {"Qwen2MoeForCausalLM", parse_qwen2_moe},
      {"Qwen3MoeForCausalLM", parse_qwen3_moe},
      {"OlmoeForCausalLM", parse_olmoe},
      {"DeepseekV3ForCausalLM", parse_deepseek_v3},
      {"LlamaForCausalLM", [](const HFConfig& c) { return parse_dense(c, "LlamaForCausalLM"); }},
      {"MistralForCausalLM",
       [](const HFConfig& c) { return parse_dense(c, "MistralForCausalLM"); }},
      {"Qwen2ForCausalLM", [](const HFConfig& c) { return parse_dense(c, "Qwen2ForCausalLM"); }},
      {"Qwen3ForCausalLM", [](const HFConfig& c) { return parse_dense(c, "Qwen3ForCausalLM"); }},
  };
  return registry;
}

}  // namespace switchyard::infer::models
