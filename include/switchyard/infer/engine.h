// Inference on a Hugging Face checkpoint: prefill as batched GEMMs, decode with a KV cache,
// several sequences in one batch. Every MoE FFN is the layer of the router zoo (MoELayer), so
// the routing rule is a layer.json object that can be swapped at load time.
#pragma once

#include <switchyard/infer/model_spec.h>
#include <switchyard/infer/routing_control.h>

#include <cstdint>
#include <map>
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

// The kept routing decisions of one MoE layer in one forward call, expert ids as in the
// checkpoint (disabled experts never appear).
struct LayerDecisions {
  std::vector<int32_t> row, expert;  // (A) token row in the call, expert
  std::vector<float> weight;         // (A) combine weight
};

// What a forward call records besides the logits, per MoE layer (counting MoE layers from 0).
struct ForwardCapture {
  bool router_logits = false;
  bool decisions = false;
  // Per MoE layer: (rows, E) the gate's pre-activations; -inf for disabled experts.
  std::vector<std::vector<float>> logits;
  std::vector<LayerDecisions> routing;
};

// Replay: the experts each row of one forward call is routed to, per MoE layer (rows, k) in
// checkpoint ids, -1 = none; the layer's router weighs them with its own rule (top-k routers).
struct ForwardReplay {
  int64_t k = 0;
  std::vector<std::vector<int32_t>> ids;
};

struct LoadOptions {
  // Routing overrides (routing_control.h); null = the checkpoint's routing everywhere.
  nlohmann::json routing;
  std::string routing_source = "routing overrides";  // for messages
  // Matrices the file stores in BF16 stay BF16 (one copy in memory, float32 accumulation);
  // false widens every weight to float32 at load.
  bool keep_bf16 = true;
  // BF16 matrices on more than 4 rows (prefill): activations rounded to BF16 for the AVX-512 BF16
  // dot product, as llama.cpp and PyTorch's bf16 do (2^-9 relative per activation); false keeps
  // them float32 (exact to float32, about half the prefill speed). Decode keeps float32 always.
  bool round_bf16_activations = true;
  // Scratch for a forward of this many tokens is made at load (as llama.cpp reserves its batch's
  // buffers), so the first prefill does not pay for fresh memory; larger batches grow it. 0: none.
  int64_t reserve_tokens = 512;
};

class Model {
 public:
  // Reads config.json and the weights; a missing, extra or mis-shaped tensor is an Error naming
  // the file, the tensor and the config field.
  static std::unique_ptr<Model> load(const std::string& dir, const LoadOptions& options = {});
  ~Model();

  const ModelSpec& spec() const;
  const std::vector<LayerRouting>& routing() const;  // per MoE layer, as resolved
  KVCache new_cache() const;

  struct Chunk {
    KVCache* cache = nullptr;
    std::span<const int32_t> tokens;  // appended at positions cache->length ...
  };
  // Runs the chunks as one batch and appends their keys and values to their caches. logits:
  // (rows, V) with a row per token when all_logits, else one per chunk (its last token).
  void forward(std::span<const Chunk> chunks, bool all_logits, std::vector<float>& logits,
               ForwardCapture* capture = nullptr, const ForwardReplay* replay = nullptr);

  int64_t parameter_count() const;
  // Per token: embeddings excluded, the experts a token is routed to counted: the mean measured
  // over the tokens run so far (routers with a variable count), else each rule's k.
  int64_t active_parameter_count() const;
  // Mean routed experts per token per MoE layer over the tokens run so far (NaN before any).
  double experts_per_token() const;
  // Forward FLOPs of one token at `context` positions: 2 per active weight of the matrix
  // products, plus attention's 2 · heads · (q head dim + v head dim) · context per layer.
  double flops_per_token(int64_t context) const;

  // Wall milliseconds per phase ("attention projections", "moe experts", ...) summed over the
  // forward calls since the last reset: where a prefill or a decode step spends its time.
  const std::map<std::string, double>& profile() const;
  void reset_profile();

 private:
  Model();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace switchyard::infer
