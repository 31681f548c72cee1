// Routing traces: for every token and MoE layer the experts it was routed to and their weights
// (optionally the router logits), recorded during forward or generate, written as
// TRACE.safetensors + TRACE.json, read back by `routing-report` and for replay.
//
// TRACE.safetensors: `experts` int32 (N, L, K) (-1 = no expert in that slot), `weights` float32
// (N, L, K), `tokens`, `positions`, `sequences` int64 (N), optional `router_logits` float32
// (N, L, E) (-inf for disabled experts); N tokens, L MoE layers, K the most experts any token had.
// TRACE.json: {"format": "switchyard-routing-trace", "version": 1, "model", "architecture",
// "moe_layers" (model layer index of each MoE layer), "experts", "routing" (per MoE layer),
// "labels" (per sequence, e.g. a domain; may be empty)}.
#pragma once

#include <switchyard/infer/engine.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

namespace switchyard::infer {

struct RoutingTrace {
  int64_t layers = 0, experts = 0, k = 0;
  std::vector<int64_t> tokens, positions, sequences;  // (N)
  std::vector<int32_t> ids;                           // (N, L, K)
  std::vector<float> weights;                         // (N, L, K)
  std::vector<float> logits;                          // (N, L, E) or empty
  nlohmann::json meta = nlohmann::json::object();
  int64_t size() const { return int64_t(tokens.size()); }
};

// Collects the decisions of forward calls (capture.decisions on, router_logits for logits).
class TraceRecorder {
 public:
  TraceRecorder(const Model& model, bool logits);
  // After a forward over `chunks` (caches already advanced); sequence[c] names chunk c.
  void add(std::span<const Model::Chunk> chunks, const std::vector<int64_t>& sequence,
           const ForwardCapture& capture);
  bool wants_logits() const { return logits_; }
  RoutingTrace finish(const std::string& model_dir,
                      const std::vector<std::string>& labels = {}) const;

 private:
  const Model& model_;
  bool logits_;
  struct Row {
    int64_t token, position, sequence;
    std::vector<std::vector<std::pair<int32_t, float>>> choices;  // per layer
    std::vector<float> logits;                                    // (L, E)
  };
  std::vector<Row> rows_;
};

// `path` ends in .safetensors; the metadata goes beside it as .json. Atomic writes.
void write_trace(const std::string& path, const RoutingTrace& trace);
// Errors name the file, the tensor or field, and the value.
RoutingTrace read_trace(const std::string& path);

// The rows of `trace` for the chunks' tokens at their (sequence, position); every one must be in
// the trace with the same token id, else an Error naming the trace.
ForwardReplay replay_rows(const RoutingTrace& trace, std::span<const Model::Chunk> chunks,
                          const std::vector<int64_t>& sequence, const std::string& source);

}  // namespace switchyard::infer
