// Shared pieces of the architecture files: the config fields every family has, RoPE, and the
// layers that are MoE.
#pragma once

#include <switchyard/config.h>
#include <switchyard/infer/model_spec.h>

#include <functional>

namespace switchyard::infer::models {

// config.json with null values removed (transformers writes None for "use the default").
struct HFConfig {
  nlohmann::json json;
  std::string source;
  ParamReader reader() const { return ParamReader(json, source); }
};

// vocab, width, layers, heads, head_dim, norm eps, tied embeddings, positions, bos/eos, RoPE.
ModelSpec read_common(const HFConfig& config, const std::string& architecture);
// rope_parameters (5.x) or rope_theta + rope_scaling (4.x); unknown types are an Error.
RopeConfig read_rope(const HFConfig& config);
// Qwen's rule: layer l is MoE unless in mlp_only_layers, when (l + 1) % decoder_sparse_step == 0.
std::vector<bool> sparse_step_layers(const HFConfig& config, int64_t n_layers);
// The HF top-k rule as a layer.json object: softmax over all experts, top-k, renormalised or not.
nlohmann::json softmax_topk_router(int64_t k, bool normalize);
// Rejects a field set to a value the engine does not implement.
void reject_if(const HFConfig& config, const std::string& field, bool unsupported,
               const std::string& why);

using ArchitectureParser = std::function<ModelSpec(const HFConfig&)>;
struct ArchitectureEntry {
  std::string name;
  ArchitectureParser parse;
};
const std::vector<ArchitectureEntry>& architecture_registry();

ModelSpec parse_mixtral(const HFConfig& config);
ModelSpec parse_qwen2_moe(const HFConfig& config);
ModelSpec parse_qwen3_moe(const HFConfig& config);
ModelSpec parse_olmoe(const HFConfig& config);
ModelSpec parse_deepseek_v3(const HFConfig& config);
// Llama, Mistral, Qwen2 and Qwen3 dense models.
ModelSpec parse_dense(const HFConfig& config, const std::string& architecture);

}  // namespace switchyard::infer::models
