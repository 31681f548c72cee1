// The comparison report's content, analysed once for both index.html and summary.md.
#pragma once

#include <switchyard/report.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "report/report_stats.h"
#include "report/seed_comparison.h"

namespace switchyard::report {

struct Cell {
  std::string text;
  bool best = false;
};

struct Column {
  std::string header;
  std::string help;  // tooltip and footnote
  int better = 0;    // -1: lower is better, +1: higher is better, 0: neither
};

struct Table {
  std::vector<Column> columns;  // the first is the run's name
  std::vector<std::vector<Cell>> rows;
};

struct Page {
  std::vector<Derived> derived;
  std::vector<Summary> sums;
  Table table;
  std::vector<std::pair<std::string, std::string>> model_settings, train_settings, data_settings;
  std::map<size_t, std::vector<std::string>> differences;  // run index → settings unlike others
  SeedComparison seeds;  // final validation loss over the seeds of each group
  // Per run, the index of its colour and dash (run_colour, run_dash): the run's own, or with
  // several seeds per group the group's colour and a dash per seed, so the spread reads at once.
  std::vector<size_t> styles;
};

Page analyse(const std::vector<RunData>& runs, const ReportOptions& options);

// A JSON value as text: strings bare, anything else compact JSON.
std::string json_text(const nlohmann::json& v);

// "mixtral · k=2 · losses={...}" from a layer.json object.
std::string router_text(const nlohmann::json& router);

// The "Across seeds" table: one row per group, the paired difference from the baseline group.
std::vector<std::string> seed_headers(const SeedComparison& s);
std::vector<std::vector<std::string>> seed_rows(const SeedComparison& s);

// The "Across ranks" table, one row per run across ranks.
const std::vector<std::string>& parallel_headers();
std::vector<std::vector<std::string>> parallel_rows(const std::vector<RunData>& runs);

// The two renderings: report_html.cpp and summary_markdown.cpp.
std::string html_page(const std::vector<RunData>& runs, const Page& p);
std::string summary_markdown(const std::vector<RunData>& runs, const Page& p);

}  // namespace switchyard::report
