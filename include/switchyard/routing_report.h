// `switchyard routing-report`: routing traces (include/switchyard/infer/trace.h) -> an HTML page
// (inline SVG, nothing fetched) and summary.json: per MoE layer the load of every expert,
// inter-layer affinity P(expert j at layer l+1 | expert i at layer l), and, when the traces'
// sequences carry labels (e.g. domains), each label's expert distribution and the mutual
// information between label and expert.
#pragma once

#include <switchyard/infer/trace.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard::report {

struct RoutingAnalysis {
  int64_t layers = 0, experts = 0, tokens = 0;
  std::vector<std::string> labels;  // distinct labels, sorted; empty = unlabelled
  // Per layer l: share of the layer's assignments per expert (E).
  std::vector<std::vector<double>> load;
  // Per adjacent pair (l, l+1): P(j at l+1 | i at l), (E, E) row-major; NaN rows for experts
  // never chosen at l. Counted over every (i, j) pair of one token's experts.
  std::vector<std::vector<double>> affinity;
  std::vector<double> affinity_mi;  // bits, mutual information of the pair's (i, j) counts
  // Per layer: (labels, E) share of each label's assignments per expert, and MI(label; expert).
  std::vector<std::vector<double>> label_load;
  std::vector<double> label_mi;
  std::vector<double> experts_per_token, max_over_mean;  // per layer
};

// All traces must come from models of the same shape (layers, experts); errors name the file.
RoutingAnalysis analyse_traces(const std::vector<infer::RoutingTrace>& traces,
                               const std::vector<std::string>& sources);
nlohmann::json analysis_json(const RoutingAnalysis& a);
// Writes out_dir/index.html and out_dir/summary.json (atomically).
void write_routing_report(const RoutingAnalysis& a, const std::vector<std::string>& sources,
                          const std::string& out_dir);

}  // namespace switchyard::report
