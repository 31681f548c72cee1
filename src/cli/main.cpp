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
  } catch (const switchyard::Error& e) {
    fmt::print(stderr, "switchyard: error: {}\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    fmt::print(stderr, "switchyard: internal error: {}\n", e.what());
    return 2;
  }
  return 0;
}
