#include <switchyard/error.h>
#include <switchyard/infer/generate.h>

#include <algorithm>
#include <chrono>
#include <cmath>

namespace switchyard::infer {

Sampler::Sampler(const SamplingConfig& config) : config_(config), rng_(config.seed) {}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (config_.temperature <= 0.0) return int32_t(std::max_element(logits, logits + V) - logits);
  // Candidates by descending logit (ties by id), cut by top-k, then softmax, then top-p.
  order_.resize(size_t(V));
  for (int64_t i = 0; i < V; ++i) order_[size_t(i)] = {logits[i], int32_t(i)};
  const int64_t k = config_.top_k > 0 ? std::min(config_.top_k, V) : V;
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), by_logit);
  probs_.resize(size_t(k));
  const double max = order_[0].first;
  double sum = 0.0;
  for (int64_t i = 0; i < k; ++i)
    sum += probs_[size_t(i)] = std::exp((order_[size_t(i)].first - max) / config_.temperature);
  int64_t keep = k;
  if (config_.top_p < 1.0) {
    double mass = 0.0;
    for (int64_t i = 0; i < k; ++i) {
      mass += probs_[size_t(i)] / sum;
      if (mass >= config_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double total = 0.0;
  for (int64_t i = 0; i < keep; ++i) total += probs_[size_t(i)];
  double u = std::uniform_real_distribution<double>(0.0, total)(rng_);
  for (int64_t i = 0; i < keep; ++i) {
    u -= probs_[size_t(i)];
    if (u < 0.0) return order_[size_t(i)].second;
  }
  return order_[size_t(keep - 1)].second;
}

std::vector<std::vector<int32_t>> generate(Model& model,
                                           const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(size_t, int32_t)>& on_token,
                                           GenerateStats* stats) {
  using Clock = std::chrono::steady_clock;
  const int64_t V = model.spec().vocab;
  const size_t S = prompts.size();
  std::vector<KVCache> caches(S);
  std::vector<Sampler> samplers;
  for (size_t i = 0; i < S; ++i) {
    if (prompts[i].empty()) fail("generate: prompt {} is empty", i);
    caches[i] = model.new_cache();
    SamplingConfig c = options.sampling;
    c.seed += i;  // each sequence its own stream, reproducible from the seed
    samplers.emplace_back(c);
  }
  std::vector<std::vector<int32_t>> out(S);
  std::vector<int32_t> next(S);
  std::vector<bool> live(S, options.max_new_tokens > 0);
  std::vector<float> logits;
  std::vector<Model::Chunk> chunks;
  ForwardCapture capture;
  capture.decisions = options.capture_decisions;
  capture.router_logits = options.capture_router_logits;
  auto run = [&](const std::vector<size_t>& seqs) {
    model.forward(chunks, false, logits, options.on_forward ? &capture : nullptr);
    if (options.on_forward)
      options.on_forward(chunks, std::vector<int64_t>(seqs.begin(), seqs.end()), capture);
  };
  auto emit = [&](const std::vector<size_t>& seqs) {
    for (size_t j = 0; j < seqs.size(); ++j) {
      const size_t i = seqs[j];
      next[i] = samplers[i].sample(logits.data() + int64_t(j) * V, V);
      out[i].push_back(next[i]);
      if (on_token) on_token(i, next[i]);
      const bool stop = std::find(options.stop_ids.begin(), options.stop_ids.end(), next[i]) !=
                        options.stop_ids.end();
      if (stop || int64_t(out[i].size()) >= options.max_new_tokens) live[i] = false;
    }
  };
  if (options.max_new_tokens <= 0) return out;
  model.reset_profile();
  auto t0 = Clock::now();
  std::vector<size_t> seqs;
  for (size_t i = 0; i < S; ++i) {
    chunks.push_back({&caches[i], prompts[i]});
    seqs.push_back(i);
    if (stats) stats->prompt_tokens += int64_t(prompts[i].size());
  }
  run(seqs);
  emit(seqs);
  auto t1 = Clock::now();
  if (stats) {
    stats->prefill_seconds += std::chrono::duration<double>(t1 - t0).count();
    stats->prefill_profile_ms = model.profile();
  }
  model.reset_profile();
  for (;;) {
    chunks.clear();
    seqs.clear();
    for (size_t i = 0; i < S; ++i)
      if (live[i]) {
        chunks.push_back({&caches[i], std::span<const int32_t>(&next[i], 1)});
        seqs.push_back(i);
      }
    if (chunks.empty()) break;
    run(seqs);
    emit(seqs);
  }
  if (stats) {
    stats->decode_seconds += std::chrono::duration<double>(Clock::now() - t1).count();
    stats->decode_profile_ms = model.profile();
    for (const auto& o : out) stats->generated_tokens += int64_t(o.size());
  }
  return out;
}

}  // namespace switchyard::infer
