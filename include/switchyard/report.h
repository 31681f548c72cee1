// The comparison report: reads training runs (run.json + metrics.jsonl, written by
// `switchyard train`) and writes a self-contained HTML page (inline CSS and SVG, nothing fetched
// from the network) and a Markdown summary.
//
// A run directory holds:
// - run.json: {"name", "router" (layer.json object), "model", "train", "params", "active_params",
//   "tokens_per_step", "wall_seconds" (absent while running), "domains" (may be empty)}
// - metrics.jsonl: one object per step: {"step", "tokens", "lr", "train_loss", "aux_loss",
//   "grad_norm", "tokens_per_s", "layers": [{"layer", "load", "max_vio", "cv", "dropped_frac",
//   "entropy", "experts_per_token"}]}; evaluation steps add "val_loss" and, per layer,
//   "fluctuation", "domain_mi" and "val_load".
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard {

// One layer's routing statistics at one step. Numbers the trainer could not compute (NaN, written
// by nlohmann as null) read as NaN.
struct LayerMetrics {
  int layer = 0;
  std::vector<double> load;  // tokens per expert this step
  double max_vio = 0, cv = 0, dropped_frac = 0, entropy = 0, experts_per_token = 0;
  // Evaluation steps only.
  std::optional<double> fluctuation;  // absent at the first evaluation
  std::optional<double> domain_mi;    // bits; absent without domains
  std::vector<double> val_load;       // tokens per expert on the validation probe; may be empty
};

// One line of metrics.jsonl.
// A step of a run across ranks (metrics.jsonl "parallel"): bytes summed over the ranks.
struct ParallelMetrics {
  int64_t ranks = 0;
  double dispatch_bytes = 0, combine_bytes = 0, backward_bytes = 0;  // sent, per step
  double all_to_all_share = 0, expert_rows_imbalance = 1, step_time_imbalance = 1;
  // The share by phase (dispatch, combine, backward); absent in older runs' metrics.
  std::optional<std::array<double, 3>> share_by_phase;
};

struct MetricsRow {
  int64_t step = 0;
  int64_t tokens = 0;
  double lr = 0, train_loss = 0, aux_loss = 0, grad_norm = 0, tokens_per_s = 0;
  std::optional<double> val_loss;  // evaluation steps only
  std::vector<LayerMetrics> layers;
  std::optional<ParallelMetrics> parallel;  // runs across ranks only
};

struct RunData {
  std::string dir;
  std::string name;
  std::string group;  // runs of one configuration over several seeds (run.json; default: name)
  uint64_t seed = 0;  // train.seed
  nlohmann::json router = nlohmann::json::object();  // layer.json object
  nlohmann::json model = nlohmann::json::object();
  nlohmann::json train = nlohmann::json::object();
  int64_t params = 0, active_params = 0, tokens_per_step = 0;
  std::optional<double> wall_seconds;  // absent while the run is still going
  std::vector<std::string> domains;
  std::vector<MetricsRow> rows;  // ascending steps
};

// Reads dir/run.json and dir/metrics.jsonl. Malformed content throws switchyard::Error naming the
// file (and, for metrics, the line number). Required: "name" in run.json; "step" in every row and
// "train_loss" in every row without "val_loss". Other absent numbers read as NaN or 0. A resumed
// run may log steps again: a step at or before an earlier one replaces the rows from that step on.
// A last line without its newline that does not parse is a write in progress and is skipped.
RunData load_run(const std::string& dir);

struct ReportOptions {
  // The group the others are compared with over the seeds both ran (empty: the first group).
  std::string baseline;
};

// Writes out_dir/index.html and out_dir/summary.md (each atomically), creating out_dir.
void write_report(const std::vector<RunData>& runs, const std::string& out_dir,
                  const ReportOptions& options = {});

// Escapes & < > " ' for HTML text and attribute values (shared by the HTML reports).
std::string html_escape(std::string_view s);

}  // namespace switchyard
