// The `ep-plan` report: summary.json (every number, per layer and per rank) and a self-contained
// index.html (inline SVG heatmaps, tables), written atomically into a folder.
#pragma once

#include <switchyard/plan/ep_plan.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard::plan {

struct PlanReport {
  std::vector<std::string> sources;  // the trace files
  int64_t tokens = 0, layers = 0, experts = 0, k = 0;
  Topology topo;
  Workload work;
  CostModel cost;
  bool gflops_measured = false;  // gemm_gflops measured in-process, not given
  std::vector<Placement> placements;
  std::vector<PlanResult> results;  // one per placement, same order
};

nlohmann::json plan_summary_json(const PlanReport& report);
std::string plan_report_html(const PlanReport& report);
// out_dir/summary.json and out_dir/index.html (the folder is created).
void write_plan_report(const PlanReport& report, const std::string& out_dir);

}  // namespace switchyard::plan
