// Training and comparing MoE language models (`switchyard train`, `compare`, `sample`).
#pragma once

#include <switchyard/model.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard {
namespace dist {
class Communicator;
}  // namespace dist

struct DataConfig {
  std::string corpus;                   // a corpus directory (scripts/build-corpus.sh), or
  std::vector<std::string> text_files;  // users' text files (validation = last val_fraction), or
  std::string bin_train, bin_val;       // llm.c .bin shards, or
  bool synthetic = false;               // the small synthetic generator (tests)
  double val_fraction = 0.05;
  // Only the documents of these domains, in both splits (a fine-tuning domain); empty: all.
  std::vector<std::string> domains;
};

struct TrainConfig {
  ModelConfig model;
  DataConfig data;
  AdamWConfig optim;
  int64_t batch = 8, grad_accum = 1;
  int64_t eval_every = 25, eval_batches = 4, checkpoint_every = 100, log_every = 10;
  uint64_t seed = 1;
  std::string out = "runs/train";
  std::string name;   // label in reports (default: the router name)
  std::string group;  // runs of one configuration over several seeds (default: the name)
  // A checkpoint folder of an earlier run whose parameters start this one (fine-tuning): its
  // tensors must match this model's by name and shape; the optimiser, the step count and the
  // routers' state start afresh. Empty: the model's own initialisation.
  std::string init;
  // Router-Tuning (docs/routers/mindskip.md): train only the attention-skip routers
  // (layers.L.attn_skip.*), every other tensor frozen; needs the model's attention_skip. With
  // `init`, the base checkpoint may lack exactly those tensors.
  bool router_tuning = false;
  std::string source;  // where the config came from, for messages (not part of to_json)

  nlohmann::json to_json() const;
};
TrainConfig parse_train_config(const nlohmann::json& j, const std::string& source);
TrainConfig load_train_config(const std::string& path);

struct TrainOptions {
  bool resume = false;
  int64_t stop_after = -1;  // stop (as if interrupted) after this many steps; -1 = run to the end
  bool quiet = false;
  // Data and expert parallelism (docs/distributed.md): every rank of `world` calls train() with
  // the same config; each takes batch / ranks rows of every batch, experts are sharded over
  // groups of `expert_parallel` ranks. Rank 0 writes the run folder. Null: one process.
  dist::Communicator* world = nullptr;
  int expert_parallel = 1;
  // Ranks per node inside an expert-parallel group (0: one node); G < P gives the hierarchical
  // all-to-all, across nodes first, then inside the node (docs/distributed.md).
  int ranks_per_node = 0;
  double timeout_seconds = 600;  // a step without progress for this long ends the job
  // The routing of step `trace_step` (its first micro-batch, the global batch) as a routing trace
  // at trace_path (.safetensors, metadata beside it); empty: none.
  std::string trace_path;
  int64_t trace_step = 0;
};

struct TrainResult {
  int64_t steps = 0;
  double final_train_loss = 0.0, final_val_loss = 0.0, wall_seconds = 0.0, tokens_per_s = 0.0;
};

// Trains, logging to out/metrics.jsonl and writing out/run.json and out/checkpoint/ atomically.
TrainResult train(const TrainConfig& config, const TrainOptions& options);

// Generates `count` bytes after `prompt` from a checkpoint directory.
std::string sample(const std::string& checkpoint_dir, const std::string& prompt, int64_t count,
                   double temperature, uint64_t seed);

}  // namespace switchyard
