// The switchyard command line: one binary, one subcommand per job.
#include <fmt/format.h>
#include <switchyard/error.h>
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
  };
  auto* train = app.add_subcommand("train", "Train an MoE language model");
  add_train_flags(train);
  train->add_option("--router", flags.router, "router name (overrides the config's)");
  train->add_flag("--resume", flags.resume, "continue from out/checkpoint");
  train->add_option("--stop-after", flags.stop_after,
                    "stop after this many steps (as if interrupted)");

  std::vector<std::string> compare_routers;
  auto* compare = app.add_subcommand("compare", "Train one model per router and write a report");
  add_train_flags(compare);
  compare
      ->add_option("--routers", compare_routers,
                   "routers to compare (default: a representative set)")
      ->delimiter(',');

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

  CLI11_PARSE(app, argc, argv);
  try {
    if (*layer) return switchyard::cli::run_layer(config, in, out);
    if (*routers) {
      for (const auto& entry : switchyard::router_registry()) {
        const auto router = entry.make(nlohmann::json::object(), entry.name);
        fmt::print("{:<14} {}\n{:<14} {}\n", entry.name, entry.summary, "", router->describe());
      }
      return 0;
    }
    if (*demo) return switchyard::cli::run_demo(tokens, repeats);
    if (*train) return switchyard::cli::run_train(train_config, flags);
    if (*compare) return switchyard::cli::run_compare(train_config, flags, compare_routers);
    if (*sample)
      return switchyard::cli::run_sample(checkpoint, prompt, sample_count, temperature,
                                         sample_seed);
    if (*report) return switchyard::cli::run_report(report_runs, report_out);
  } catch (const switchyard::Error& e) {
    fmt::print(stderr, "switchyard: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "switchyard: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
