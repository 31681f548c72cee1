#pragma once

#include <switchyard/moe_layer.h>

#include <nlohmann/json.hpp>

#include <string>

namespace switchyard::cli {

int run_layer(const std::string& config_path, const std::string& in_path, const std::string& out_path);
int run_demo(int64_t tokens, int repeats);
nlohmann::json stats_json(const RoutingStats& stats);

}  // namespace switchyard::cli
