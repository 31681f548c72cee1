// The subcommands of the `switchyard` binary (main.cpp parses the flags and calls these).
#pragma once

#include <switchyard/moe_layer.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace switchyard::cli {

// `switchyard layer`, `demo`: one MoE layer from files; the layer with several routers.
int run_layer(const std::string& config_path, const std::string& in_path,
              const std::string& out_path);
int run_demo(int64_t tokens, int repeats);
nlohmann::json stats_json(const RoutingStats& stats);

// `switchyard train`, `sample`, `compare`: flags override the config file's values.
struct TrainFlags {
  std::string out, corpus, router;
  std::string init;  // a checkpoint folder whose parameters start the run (fine-tuning)
  int64_t steps = 0;
  bool resume = false;
  int64_t stop_after = -1;
  int expert_parallel = 0;  // 0: not asked for (1 under mpirun: data parallelism only)
  int ranks_per_node = 0;
  double timeout_seconds = 600;
  std::string trace_path;
  int64_t trace_step = 0;
};
int run_train(const std::string& config_path, const TrainFlags& flags);
int run_sample(const std::string& checkpoint, const std::string& prompt, int64_t count,
               double temperature, uint64_t seed);
// `switchyard compare`: every router entry once per seed (`seeds` consecutive seeds from the
// config's), then the report, comparing each entry with `baseline` (empty: the first) over the
// seeds.
int run_compare(const std::string& config_path, const TrainFlags& flags,
                const std::vector<std::string>& routers, int64_t seeds,
                const std::string& baseline);

// `switchyard report`: loads each run folder (or, for a folder without run.json, every
// subfolder that has one) and writes out_dir/index.html and out_dir/summary.md.
int run_report(const std::vector<std::string>& run_dirs, const std::string& out_dir,
               const std::string& baseline = "");

// `switchyard llm train | eval | route` (llm_commands.cpp).
struct LlmDataFlags {
  std::vector<std::string> paths;  // files or folders of .csv files
  std::string format = "auto", prices;
  bool strict = false;
  std::vector<std::string> ignore_columns;
};
struct LlmEvalFlags {
  std::vector<std::string> routers = {"random", "best_single", "knn", "logistic", "mf"};
  std::string config, embeddings, strong, weak, out, name;
  double train_fraction = 0.5, output_tokens = 256;
  uint64_t seed = 0;
};
struct LlmTrainFlags {
  std::string quality = "knn", name, params, features, embeddings, strong, weak, out;
  double output_tokens = 256;
  uint64_t seed = 0;
};
struct LlmRouteFlags {
  std::string router, prompts_file, rule = "cost_aware";
  std::vector<std::string> prompts, capacity;
  double threshold = 0.0, lambda = 0.5, tau = 0.5;
};
int run_llm_eval(const LlmDataFlags& data, const LlmEvalFlags& flags);
int run_llm_train(const LlmDataFlags& data, const LlmTrainFlags& flags);
int run_llm_route(const LlmRouteFlags& flags);
// `switchyard llm calibrate`: the threshold that sends `strong_share` of the given prompts (the
// user's own traffic, no labels) to the router's strong model.
int run_llm_calibrate(const std::string& router_dir, const std::string& prompts_file,
                      double strong_share);

// `switchyard llm serve`: the OpenAI-compatible gateway (docs/gateway.md); runs until SIGINT or
// SIGTERM, then drains the requests in flight. Implemented in llm_serve_command.cpp.
int run_llm_serve(const std::string& config_path);

// `switchyard forward`, `generate` (infer_commands.cpp): a Hugging Face model folder.
struct InferFlags {
  std::string model;    // the folder (config.json, *.safetensors)
  std::string router;   // a layer.json object replacing the MoE layers' routing rule
  std::string routing;  // routing.json (include/switchyard/infer/routing_control.h)
  int64_t k = 0;        // experts per token in every MoE layer (0 = the checkpoint's)
  std::vector<int64_t> disabled_experts;
  std::string trace, label;  // --trace TRACE.safetensors; --label names the input (a domain)
  bool trace_logits = false;
  std::string replay;                // forward: route with the experts of a trace
  bool float32_activations = false;  // BF16 weights: keep every product's activations float32
};
struct GenerateFlags {
  std::string ids, prompt, system, format = "text";
  bool chat = false;
  int64_t max_new_tokens = 64, top_k = 0;
  double temperature = 0.0, top_p = 1.0;
  uint64_t seed = 0;
  bool ignore_eos = false;
  bool profile = false;  // print where the prefill and the decode spent their time
};
// in: `input_ids` int64 (B, T); out: `logits` (B, T, V), `router_logits.i` (B·T, R) per MoE layer.
int run_forward(const InferFlags& flags, const std::string& in_path, const std::string& out_path);
int run_generate(const InferFlags& flags, const GenerateFlags& gen);
// `switchyard routing-report`: traces -> out_dir/index.html and summary.json.
int run_routing_report(const std::vector<std::string>& traces, const std::string& out_dir);
// `switchyard ep-plan` (ep_plan_command.cpp): expert-parallel placement and all-to-all cost from
// traces -> out/index.html and summary.json (docs/distributed.md). kUnset* = flag not given.
struct EpPlanFlags {
  static constexpr int64_t kUnset = INT64_MIN;
  static constexpr double kUnsetReal = -1e300;
  std::vector<std::string> traces;
  int64_t ranks = 0, ranks_per_node = 0;
  std::string link, latency, out;
  int64_t hidden = kUnset, expert_ff = kUnset, tokens_per_step = kUnset, redundant = 0;
  double bytes_per_element = 2, gemm_gflops = kUnsetReal, capacity_factor = kUnsetReal;
};
int run_ep_plan(const EpPlanFlags& flags);
// `switchyard ppl`: perplexity of a text file in windows of `context` tokens (0 = the default).
int run_ppl(const InferFlags& flags, const std::string& text_path, int64_t context);
// The routing overrides of --routing and the flags (null when none); `source` names them.
nlohmann::json routing_overrides(const InferFlags& flags, std::string& source);
// `switchyard export-gguf` (export_gguf_command.cpp): the folder as GGUF for llama.cpp.
int run_export_gguf(const InferFlags& flags, const std::string& out_path, const std::string& dtype);

// The job's ranks when this process runs under mpirun (OMPI_COMM_WORLD_SIZE or PMI_SIZE set) or
// `required`: MPI is initialised here and finalised when the communicator goes. Null in a plain
// run; an error where the build has no MPI and `required` (mpi_world.cpp).
std::unique_ptr<dist::Communicator> open_world(bool required);

}  // namespace switchyard::cli
