// Readers for LLM-routing data: which model answered which prompt how well, and at what cost.
// Formats: RouterBench-style tables (CSV or JSONL), RouteLLM's pairwise CSVs and the LLMRouter JSON
// with its price list. Bad rows are reported with file and line, never silently repaired.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace switchyard {

// One bad row. Rows with an issue are skipped (ReadOptions::strict = false) or rejected.
struct ReadIssue {
  std::string file;
  std::size_t line = 0;    // 1-based line where the row starts; 0 for formats without lines (JSON)
  std::size_t record = 0;  // 0-based index of the row among the file's data rows
  std::string column;      // the offending column; empty when the row as a whole is bad
  std::string reason;
};

struct RoutingTable {
  std::vector<std::string> models;      // M
  std::vector<std::string> prompts;     // N
  std::vector<std::string> eval_names;  // N; empty strings when the source has none
  std::vector<std::size_t> lines;       // N; 1-based line where the row starts (0: JSON array)
  std::vector<std::size_t> records;     // N; 0-based index of the row among its file's rows
  std::vector<double> scores;           // (N, M) row-major; quality in [0, 1] or any float
  std::vector<double> costs;            // (N, M) row-major; NaN when unknown
  // Per-model prices in dollars per million tokens (LLMRouter's price list); NaN when unknown.
  std::vector<double> input_price_per_mtok;   // M
  std::vector<double> output_price_per_mtok;  // M
  std::vector<ReadIssue> issues;              // one per skipped row

  std::size_t rows() const { return prompts.size(); }
  double score(std::size_t row, std::size_t model) const {
    return scores[row * models.size() + model];
  }
  double cost(std::size_t row, std::size_t model) const {
    return costs[row * models.size() + model];
  }
};

struct ReadOptions {
  // Throw switchyard::Error (file, line, column) at the first bad row instead of skipping it.
  bool strict = false;
  // Columns (CSV) or keys (JSONL) that are neither prompt, eval_name, a model score nor a
  // `<model>|total_cost`; any other unknown column is an error. An entry starting with '*'
  // matches by suffix, e.g. "*|model_response".
  std::vector<std::string> ignore_columns;
};

// RouterBench-style table, CSV (.csv) or JSON Lines (.jsonl, .ndjson): a `prompt` column, one
// score column per model, optional `<model>|total_cost` columns and an optional `eval_name`.
RoutingTable read_routerbench(const std::string& path, const ReadOptions& options = {});

// RouteLLM's response CSVs: `prompt`, one True/False column per model and optional
// `<model>_response` columns (the answers' text, skipped). eval_name is the file's stem without a
// trailing "_responses" (e.g. "gsm8k", "mmlu_abstract_algebra").
RoutingTable read_routellm_pairwise(const std::string& path, const ReadOptions& options = {});

// LLMRouter JSON: an array of {"question", "scores": {model: float}, optional "cluster_id"} with a
// price list ({model: {"input_price", "output_price", ...}}, dollars per million tokens). The data
// has no token counts, so costs stay NaN and the prices go to input/output_price_per_mtok; every
// model must have a price. eval_name is "cluster_<id>" when cluster_id is present.
RoutingTable read_llmrouter(const std::string& path, const std::string& price_list_path,
                            const ReadOptions& options = {});

// Appends `more` (read from `source`) to `into`: the models must match in name and order. A row
// whose prompt `into` already holds is a bad row (reported with its record index and skipped, or
// an error when strict), so a prompt never lands on both sides of a split.
void append_table(RoutingTable& into, RoutingTable&& more, const std::string& source, bool strict);

// Reads and appends the given files. format: "routerbench", "routellm", "llmrouter" or "auto"
// (.jsonl/.ndjson: routerbench; .json: llmrouter; a .csv whose header has `<model>_response`
// columns or True/False scores: routellm; other .csv: routerbench). A folder stands for its .csv
// files in name order. `prices` is LLMRouter's price list (required for llmrouter).
RoutingTable read_routing_data(const std::vector<std::string>& paths, const std::string& format,
                               const std::string& prices, const ReadOptions& options = {});

}  // namespace switchyard
