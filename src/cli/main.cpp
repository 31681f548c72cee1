// The switchyard command line: one binary, one subcommand per job.
#include <fmt/format.h>
#include <switchyard/error.h>
#include <switchyard/llm_router.h>
#include <switchyard/router.h>

#include <CLI/CLI.hpp>

#include "cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"switchyard: routes inputs to experts (MoE layers) and prompts to models"};
  app.require_subcommand(1);

  std::string config, in, out;
  auto* layer =
      app.add_subcommand("layer", "Run one MoE layer from layer.json and safetensors files");
  layer->add_option("--config", config, "layer.json (docs/layer-config.md)")->required();
  layer->add_option("--in", in, "input safetensors")->required();
  layer->add_option("--out", out, "output safetensors (written atomically)")->required();

  auto* routers = app.add_subcommand("routers", "List the routers");

  int64_t tokens = 2048;
  int repeats = 3;
  auto* demo = app.add_subcommand(
      "demo", "Run the layer with several routers; print statistics and timings");
  demo->add_option("--tokens", tokens, "tokens per batch")
      ->check(CLI::Range(int64_t(8), int64_t(1) << 24));
  demo->add_option("--repeats", repeats, "timed repetitions")->check(CLI::Range(1, 1000));

  std::string train_config;
  switchyard::cli::TrainFlags flags;
  auto add_train_flags = [&](CLI::App* cmd) {
    cmd->add_option("--config", train_config, "train.json (docs/training.md)");
    cmd->add_option("--out", flags.out, "output folder");
    cmd->add_option("--steps", flags.steps, "optimiser steps")->check(CLI::PositiveNumber);
    cmd->add_option("--corpus", flags.corpus, "corpus folder (scripts/build-corpus.sh)");
    cmd->add_option("--init", flags.init,
                    "start from this checkpoint folder's parameters (fine-tuning; overrides the "
                    "config's 'init')");
  };
  auto* train = app.add_subcommand("train", "Train an MoE language model");
  add_train_flags(train);
  train->add_option("--router", flags.router, "router name (overrides the config's)");
  train->add_flag("--resume", flags.resume, "continue from out/checkpoint");
  train->add_option("--stop-after", flags.stop_after,
                    "stop after this many steps (as if interrupted)");
  train
      ->add_option("--expert-parallel", flags.expert_parallel,
                   "under mpirun -np N: shard the experts over groups of P ranks (P divides N and "
                   "the expert count; data parallelism N/P over the groups)")
      ->check(CLI::PositiveNumber);
  train
      ->add_option("--ranks-per-node", flags.ranks_per_node,
                   "node layout of an expert-parallel group (divides P): the hierarchical "
                   "all-to-all, across nodes first, then inside each node")
      ->check(CLI::PositiveNumber);
  train->add_option("--trace", flags.trace_path,
                    "write the routing of one step as a routing trace (.safetensors)");
  train->add_option("--trace-step", flags.trace_step, "the step --trace records (from 0)")
      ->check(CLI::NonNegativeNumber);
  train
      ->add_option("--timeout", flags.timeout_seconds,
                   "parallel runs: a step without progress for this many seconds ends the job")
      ->check(CLI::PositiveNumber);

  std::vector<std::string> compare_routers;
  int64_t compare_seeds = 1;
  std::string compare_baseline;
  auto* compare = app.add_subcommand("compare", "Train one model per router and write a report");
  add_train_flags(compare);
  compare
      ->add_option("--routers", compare_routers,
                   "routers to compare (default: a representative set)")
      ->delimiter(',');
  compare
      ->add_option("--seeds", compare_seeds,
                   "runs per router, with consecutive seeds from the config's (mean ± sd and a "
                   "paired comparison in the report)")
      ->check(CLI::Range(int64_t(1), int64_t(1000)));
  compare->add_option("--baseline", compare_baseline,
                      "the router entry the others are compared with (default: the first)");
  bool compare_all = false;
  compare
      ->add_flag("--all-routers", compare_all,
                 "every router of the zoo with its defaults (`switchyard routers`), instead of the "
                 "representative set")
      ->excludes(compare->get_option("--routers"));

  std::string checkpoint, prompt;
  int64_t sample_count = 200;
  double temperature = 0.8;
  uint64_t sample_seed = 1;
  auto* sample = app.add_subcommand("sample", "Generate text from a checkpoint");
  sample->add_option("--checkpoint", checkpoint, "checkpoint folder (out/checkpoint)")->required();
  sample->add_option("--prompt", prompt, "text to continue");
  sample->add_option("--tokens", sample_count, "bytes to generate")
      ->check(CLI::Range(int64_t(1), int64_t(1) << 20));
  sample->add_option("--temperature", temperature, "sampling temperature")
      ->check(CLI::Range(0.0, 100.0));
  sample->add_option("--seed", sample_seed, "sampling seed");

  std::vector<std::string> report_runs;
  std::string report_out = "report";
  auto* report = app.add_subcommand("report", "Write the HTML comparison report of training runs");
  report->add_option("--runs", report_runs, "run folders (or folders of runs)")->required();
  report->add_option("--out", report_out, "report folder");
  std::string report_baseline;
  report->add_option("--baseline", report_baseline,
                     "the group the others are compared with over the seeds (default: the first)");

  namespace cli = switchyard::cli;
  auto* llm = app.add_subcommand("llm", "Route prompts across language models");
  llm->require_subcommand(1);
  cli::LlmDataFlags llm_data;
  auto add_data_flags = [&](CLI::App* cmd) {
    cmd->add_option("--data", llm_data.paths,
                    "data files or folders (RouterBench CSV/JSONL, RouteLLM CSVs, LLMRouter JSON)")
        ->required();
    cmd->add_option("--format", llm_data.format, "data format")
        ->check(CLI::IsMember({"auto", "routerbench", "routellm", "llmrouter"}));
    cmd->add_option("--prices", llm_data.prices, "LLMRouter price list (default_llm.json)");
    cmd->add_flag("--strict", llm_data.strict, "reject the data at the first bad row");
    cmd->add_option("--ignore-columns", llm_data.ignore_columns,
                    "extra columns to ignore ('*suffix' matches by suffix)")
        ->delimiter(',');
  };
  cli::LlmEvalFlags eval_flags;
  auto* llm_eval = llm->add_subcommand("eval", "Train routers on a seeded split and evaluate them");
  add_data_flags(llm_eval);
  llm_eval->add_option("--routers", eval_flags.routers, "router kinds")->delimiter(',');
  llm_eval->add_option("--config", eval_flags.config, "eval.json with router specs");
  llm_eval->add_option("--embeddings", eval_flags.embeddings,
                       "embeddings JSONL (prompt, embedding)");
  llm_eval->add_option("--train-fraction", eval_flags.train_fraction, "training share of the rows")
      ->check(CLI::Range(0.0, 1.0));
  llm_eval->add_option("--seed", eval_flags.seed, "split and training seed");
  llm_eval->add_option("--strong", eval_flags.strong, "strong model (default: best on train)");
  llm_eval->add_option("--weak", eval_flags.weak, "weak model (default: worst on train)");
  llm_eval
      ->add_option("--output-tokens", eval_flags.output_tokens,
                   "assumed answer tokens for price-list costs")
      ->check(CLI::Range(0.0, 1e7));
  llm_eval->add_option("--name", eval_flags.name, "data set name in the report");
  llm_eval->add_option("--out", eval_flags.out, "folder for eval.json, summary.txt, report.html");

  cli::LlmTrainFlags train_flags;
  auto* llm_train = llm->add_subcommand("train", "Train one router on all rows and save it");
  add_data_flags(llm_train);
  llm_train->add_option("--router", train_flags.quality, "router kind")
      ->check(CLI::IsMember(switchyard::quality_model_kinds()));
  llm_train->add_option("--name", train_flags.name, "router name (default: its kind)");
  llm_train->add_option("--params", train_flags.params, "router parameters, JSON object");
  llm_train->add_option("--features", train_flags.features, "n-gram features, JSON object");
  llm_train->add_option("--embeddings", train_flags.embeddings, "embeddings JSONL instead");
  llm_train->add_option("--strong", train_flags.strong, "strong model of the pair");
  llm_train->add_option("--weak", train_flags.weak, "weak model of the pair");
  llm_train->add_option("--output-tokens", train_flags.output_tokens, "answer tokens for prices")
      ->check(CLI::Range(0.0, 1e7));
  llm_train->add_option("--seed", train_flags.seed, "training seed");
  llm_train->add_option("--out", train_flags.out, "router folder")->required();

  cli::LlmRouteFlags route_flags;
  auto* llm_route = llm->add_subcommand("route", "Choose a model for prompts with a saved router");
  llm_route->add_option("--router", route_flags.router, "router folder")->required();
  llm_route->add_option("--prompt", route_flags.prompts, "a prompt (repeatable)");
  llm_route->add_option("--prompts-file", route_flags.prompts_file, "one prompt per line");
  llm_route->add_option("--rule", route_flags.rule, "decision rule")
      ->check(CLI::IsMember({"cost_aware", "threshold", "cascade"}));
  llm_route->add_option("--threshold", route_flags.threshold, "threshold on q_strong - q_weak");
  llm_route->add_option("--lambda", route_flags.lambda, "cost weight λ")
      ->check(CLI::Range(0.0, 1.0));
  llm_route->add_option("--tau", route_flags.tau, "cascade quality bar τ");
  llm_route
      ->add_option("--capacity", route_flags.capacity,
                   "batch routing: model=max prompts, comma separated")
      ->delimiter(',');

  std::string calibrate_router, calibrate_prompts;
  double strong_share = 0.5;
  auto* llm_calibrate = llm->add_subcommand(
      "calibrate", "Threshold sending a share of your prompts to the strong model");
  llm_calibrate->add_option("--router", calibrate_router, "router folder")->required();
  llm_calibrate
      ->add_option("--prompts-file", calibrate_prompts, "your traffic, one prompt per line")
      ->required();
  llm_calibrate->add_option("--strong-share", strong_share, "target share of strong calls")
      ->check(CLI::Range(0.0, 1.0));

  std::string serve_config;
  auto* llm_serve = llm->add_subcommand("serve", "OpenAI-compatible gateway (docs/gateway.md)");
  llm_serve->add_option("--config", serve_config, "gateway.json")->required();

  cli::InferFlags infer_flags;
  auto add_model_flags = [&](CLI::App* cmd) {
    cmd->add_option("--model", infer_flags.model, "Hugging Face model folder")->required();
    cmd->add_option("--router", infer_flags.router,
                    "routing rule for every MoE layer, a layer.json object (docs/inference.md)");
    cmd->add_option("--routing", infer_flags.routing,
                    "routing overrides, global or per layer (routing.json, docs/inference.md)");
    cmd->add_option("--k", infer_flags.k, "experts per token in every MoE layer")
        ->check(CLI::PositiveNumber);
    cmd->add_option("--disable-experts", infer_flags.disabled_experts,
                    "expert ids to take out of every MoE layer (pruning), comma separated")
        ->delimiter(',');
  };
  // Commands that run the model (export-gguf only reads it).
  auto add_compute_flags = [&](CLI::App* cmd) {
    cmd->add_flag("--float32-activations", infer_flags.float32_activations,
                  "BF16 weights: keep the inputs of their products float32 (exact to float32, "
                  "slower prefill) instead of rounding them to BF16 as llama.cpp does");
  };
  auto add_trace_flags = [&](CLI::App* cmd) {
    cmd->add_option("--trace", infer_flags.trace,
                    "write the routing of every token to TRACE.safetensors (+ TRACE.json)");
    cmd->add_flag("--trace-logits", infer_flags.trace_logits, "also the router logits");
    cmd->add_option("--label", infer_flags.label, "a label for the input (e.g. its domain)");
  };
  std::string forward_in, forward_out;
  auto* forward = app.add_subcommand("forward", "Logits and router logits of a HF checkpoint");
  add_model_flags(forward);
  add_compute_flags(forward);
  forward->add_option("--in", forward_in, "safetensors with input_ids int64 (B, T)")->required();
  forward->add_option("--out", forward_out, "safetensors: logits, router_logits.i")->required();
  add_trace_flags(forward);
  forward->add_option("--replay", infer_flags.replay,
                      "route with the experts of a trace (weights from the live logits)");

  cli::GenerateFlags gen;
  auto* generate = app.add_subcommand("generate", "Generate from a HF checkpoint (KV cache)");
  add_model_flags(generate);
  add_compute_flags(generate);
  add_trace_flags(generate);
  generate->add_option("--ids", gen.ids, "prompt token ids, comma separated");
  generate->add_option("--prompt", gen.prompt, "prompt text (tokenizer.json of the model)");
  generate->add_flag("--chat", gen.chat, "render the prompt with the model's chat template");
  generate->add_option("--system", gen.system, "system message for --chat");
  generate->add_option("--max-new-tokens", gen.max_new_tokens, "tokens to generate")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  generate->add_option("--temperature", gen.temperature, "0 = greedy")
      ->check(CLI::Range(0.0, 100.0));
  generate->add_option("--top-k", gen.top_k, "sample from the k most likely tokens (0 = all)")
      ->check(CLI::NonNegativeNumber);
  generate->add_option("--top-p", gen.top_p, "nucleus mass")->check(CLI::Range(0.0, 1.0));
  generate->add_option("--seed", gen.seed, "sampling seed");
  generate->add_flag("--ignore-eos", gen.ignore_eos, "do not stop at the end-of-sequence token");
  generate->add_flag("--profile", gen.profile,
                     "print the wall time of each phase of the prefill and of the decode");
  generate->add_option("--format", gen.format, "text (streamed) or json ({\"ids\": [...]})")
      ->check(CLI::IsMember({"text", "json"}));

  std::vector<std::string> report_traces;
  std::string routing_report_out = "routing-report";
  auto* routing_report =
      app.add_subcommand("routing-report", "HTML report of routing traces (load, affinity)");
  routing_report->add_option("--trace", report_traces, "TRACE.safetensors files (repeatable)")
      ->required();
  routing_report->add_option("--out", routing_report_out, "report folder");

  cli::EpPlanFlags ep;
  auto* ep_plan = app.add_subcommand(
      "ep-plan", "Expert-parallel placement and all-to-all cost from traces (docs/distributed.md)");
  ep_plan->add_option("--trace", ep.traces, "TRACE.safetensors files (repeatable)")->required();
  ep_plan->add_option("--ranks", ep.ranks, "expert-parallel ranks R (divides the experts)")
      ->required();
  ep_plan->add_option("--ranks-per-node", ep.ranks_per_node, "ranks per node G (divides R)")
      ->required();
  ep_plan->add_option("--link", ep.link, "bandwidths intra=GB/s,inter=GB/s")->required();
  ep_plan->add_option("--latency-us", ep.latency, "per-peer latency intra=US,inter=US (0)");
  ep_plan->add_option("--hidden", ep.hidden, "hidden size D (default: config.json)");
  ep_plan->add_option("--bytes-per-element", ep.bytes_per_element, "bytes per element (2)");
  ep_plan->add_option("--expert-ff", ep.expert_ff, "expert width F (default: config.json)");
  ep_plan->add_option("--gemm-gflops", ep.gemm_gflops, "GEMM rate (default: measured on CPU)");
  ep_plan->add_option("--capacity-factor", ep.capacity_factor, "capacity factor C (none)");
  ep_plan->add_option("--redundant", ep.redundant, "replicas of the hottest experts per layer");
  ep_plan->add_option("--tokens-per-step", ep.tokens_per_step, "tokens per step S (all)");
  ep_plan->add_option("--out", ep.out, "report folder")->required();

  std::string ppl_text;
  int64_t ppl_context = 0;
  auto* ppl = app.add_subcommand("ppl", "Perplexity of a HF checkpoint on a text file");
  add_model_flags(ppl);
  add_compute_flags(ppl);
  ppl->add_option("--text", ppl_text, "UTF-8 text file")->required();
  ppl->add_option("--context", ppl_context, "window in tokens (default min(positions, 1024))")
      ->check(CLI::NonNegativeNumber);

  std::string gguf_out, gguf_dtype;
  auto* export_gguf =
      app.add_subcommand("export-gguf", "Write a HF checkpoint as GGUF for llama.cpp");
  add_model_flags(export_gguf);
  export_gguf->add_option("--out", gguf_out, "output .gguf (written atomically)")->required();
  export_gguf->add_option("--dtype", gguf_dtype,
                          "f32, bf16 or f16 for the 2-D weights (default: the checkpoint's)");

  CLI11_PARSE(app, argc, argv);
  try {
    if (*layer) return switchyard::cli::run_layer(config, in, out);
    if (*routers) {
      for (const auto& entry : switchyard::router_registry()) {
        const auto router = entry.make(nlohmann::json::object(), entry.name);
        fmt::print("{:<16} {}\n{:<16} {}\n", entry.name, entry.summary, "", router->describe());
      }
      return 0;
    }
    if (*demo) return switchyard::cli::run_demo(tokens, repeats);
    if (*train) return switchyard::cli::run_train(train_config, flags);
    if (*compare) {
      if (compare_all)
        for (const auto& entry : switchyard::router_registry())
          compare_routers.push_back(entry.name);
      return switchyard::cli::run_compare(train_config, flags, compare_routers, compare_seeds,
                                          compare_baseline);
    }
    if (*sample)
      return switchyard::cli::run_sample(checkpoint, prompt, sample_count, temperature,
                                         sample_seed);
    if (*report) return switchyard::cli::run_report(report_runs, report_out, report_baseline);
    if (*forward) return cli::run_forward(infer_flags, forward_in, forward_out);
    if (*generate) return cli::run_generate(infer_flags, gen);
    if (*ppl) return cli::run_ppl(infer_flags, ppl_text, ppl_context);
    if (*routing_report) return cli::run_routing_report(report_traces, routing_report_out);
    if (*ep_plan) return cli::run_ep_plan(ep);
    if (*export_gguf) return cli::run_export_gguf(infer_flags, gguf_out, gguf_dtype);
    if (*llm_eval) return cli::run_llm_eval(llm_data, eval_flags);
    if (*llm_train) return cli::run_llm_train(llm_data, train_flags);
    if (*llm_route) return cli::run_llm_route(route_flags);
    if (*llm_serve) return cli::run_llm_serve(serve_config);
    if (*llm_calibrate)
      return cli::run_llm_calibrate(calibrate_router, calibrate_prompts, strong_share);
  } catch (const switchyard::Error& e) {
    fmt::print(stderr, "switchyard: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "switchyard: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
