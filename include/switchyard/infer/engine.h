// Inference on a Hugging Face checkpoint: prefill as batched GEMMs, decode with a KV cache,
// several sequences in one batch. Every MoE FFN is the layer of the router zoo (MoELayer), so
// the routing rule is a layer.json object that can be swapped at load time.
#pragma once

#include <switchyard/infer/model_spec.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace switchyard::infer {

// Keys and values of one sequence: per layer (capacity, Hkv, Dk) and (capacity, Hkv, Dv).
struct KVCache {
  int64_t length = 0;  // positions filled
  int64_t capacity = 0;
  std::vector<std::vector<float>> k, v;
};

// What a forward call records besides the logits, per MoE layer (counting MoE layers from 0).
struct ForwardCapture {
  bool router_logits = false;
  std::vector<std::vector<float>> logits;  // per MoE layer: (rows, R) the gate's pre-activations
};

struct LoadOptions {
  // Replaces every MoE layer's routing rule (a layer.json object); null = the checkpoint's.
  nlohmann::json router;
};

class Model {
 public:
  // Reads config.json and the weights; a missing, extra or mis-shaped tensor is an Error naming
  // the file, the tensor and the config field.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& options = {});
  ~Model();

  const ModelSpec& spec() const;
  KVCache new_cache() const;

  struct Chunk {
    KVCache* cache = nullptr;
    std::span<const int32_t> tokens;  // appended at positions cache->length ...
  };
  // Runs the chunks as one batch and appends their keys and values to their caches. logits:
  // (rows, V) with a row per token when all_logits, else one per chunk (its last token).
  void forward(std::span<const Chunk> chunks, bool all_logits, std::vector<float>& logits,
               ForwardCapture* capture = nullptr);

  int64_t parameter_count() const;
  // Per token: embeddings excluded, the experts a token is routed to (k) counted.
  int64_t active_parameter_count() const;

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard::infer
