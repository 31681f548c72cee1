// `switchyard report`: the comparison report from finished or running training runs.
#include <fmt/format.h>
#include <switchyard/error.h>
#include <switchyard/report.h>
#include <switchyard/routing_report.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "cli/commands.h"

namespace switchyard::cli {
namespace {

// A comparison folder (one subfolder per run) expands to its runs, in name order.
std::vector<std::string> expand(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (fs::exists(fs::path(dir) / "run.json", ec) || !fs::is_directory(dir, ec)) return {dir};
  std::vector<std::string> runs;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, ec))
    if (entry.is_directory(ec) && fs::exists(entry.path() / "run.json", ec))
      runs.push_back(entry.path().string());
  if (runs.empty()) return {dir};  // load_run then names the missing run.json
  std::sort(runs.begin(), runs.end());
  return runs;
}

}  // namespace

int run_report(const std::vector<std::string>& run_dirs, const std::string& out_dir,
               const std::string& baseline) {
  if (run_dirs.empty()) fail("report: no run folders given");
  std::vector<RunData> runs;
  for (const std::string& dir : run_dirs)
    for (const std::string& run_dir : expand(dir)) runs.push_back(load_run(run_dir));
  write_report(runs, out_dir, ReportOptions{baseline});
  fmt::print("report: {} run{} → {}/index.html, {}/summary.md\n", runs.size(),
             runs.size() == 1 ? "" : "s", out_dir, out_dir);
  return 0;
}

}  // namespace switchyard::cli

namespace switchyard::cli {

int run_routing_report(const std::vector<std::string>& traces, const std::string& out_dir) {
  std::vector<infer::RoutingTrace> loaded;
  for (const std::string& path : traces) loaded.push_back(infer::read_trace(path));
  const report::RoutingAnalysis analysis = report::analyse_traces(loaded, traces);
  report::write_routing_report(analysis, traces, out_dir);
  fmt::print("routing-report: {} tokens from {} trace{} → {}/index.html, {}/summary.json\n",
             analysis.tokens, traces.size(), traces.size() == 1 ? "" : "s", out_dir, out_dir);
  return 0;
}

}  // namespace switchyard::cli
