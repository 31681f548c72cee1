#pragma once

#include <switchyard/moe_layer.h>

#include <nlohmann/json.hpp>
#include <string>

namespace switchyard::cli {

struct TrainFlags {
  std::string out, corpus, router;
  int64_t steps = 0;
  bool resume = false;
  int64_t stop_after = -1;
};
int run_train(const std::string& config_path, const TrainFlags& flags);
int run_sample(const std::string& checkpoint, const std::string& prompt, int64_t count,
               double temperature, uint64_t seed);
int run_compare(const std::string& config_path, const TrainFlags& flags,
                const std::vector<std::string>& routers);

int run_layer(const std::string& config_path, const std::string& in_path,
              const std::string& out_path);
int run_demo(int64_t tokens, int repeats);
nlohmann::json stats_json(const RoutingStats& stats);

}  // namespace switchyard::cli

#include <vector>

namespace switchyard::cli {

// `switchyard report`: loads each run folder (or, for a folder without run.json, every
// subfolder that has one) and writes out_dir/index.html and out_dir/summary.md.
int run_report(const std::vector<std::string>& run_dirs, const std::string& out_dir);

}  // namespace switchyard::cli
