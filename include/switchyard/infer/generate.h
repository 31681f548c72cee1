// Sampling and the generation loop: prefill every prompt as one batch, then decode all live
// sequences together, one token each per step, through their KV caches.
#pragma once

#include <switchyard/infer/engine.h>

#include <cstdint>
#include <functional>
#include <map>
#include <random>
#include <vector>

namespace switchyard::infer {

struct SamplingConfig {
  double temperature = 0.0;  // 0 = greedy (the first of equal maxima, as torch.argmax)
  int64_t top_k = 0;         // 0 = all tokens
  double top_p = 1.0;        // nucleus: the smallest set of most likely tokens with mass ≥ top_p
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& config);
  int32_t sample(const float* logits, int64_t V);

 private:
  SamplingConfig config_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> order_;
  std::vector<double> probs_;
};

struct GenerateOptions {
  int64_t max_new_tokens = 128;
  std::vector<int64_t> stop_ids;  // a sequence ends after producing one (it is kept)
  SamplingConfig sampling;
  // Called after every forward call with the chunks it ran, the prompt index of each chunk and
  // what was captured (decisions and router logits when `capture_*` ask for them): traces.
  std::function<void(std::span<const Model::Chunk>, const std::vector<int64_t>&,
                     const ForwardCapture&)>
      on_forward;
  bool capture_decisions = false, capture_router_logits = false;
};

struct GenerateStats {
  int64_t prompt_tokens = 0, generated_tokens = 0;
  double prefill_seconds = 0.0, decode_seconds = 0.0;
  // Model::profile of the prefill and of all decode steps.
  std::map<std::string, double> prefill_profile_ms, decode_profile_ms;
};

// Returns the generated ids of each prompt (prompt excluded). on_token(sequence, id) is called as
// each token is produced (for streaming); it may be empty.
std::vector<std::vector<int32_t>> generate(Model& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(size_t, int32_t)>& on_token,
                                           GenerateStats* stats = nullptr);

}  // namespace switchyard::infer
