// summary.md of the comparison report: settings, summary table, runs, seed and rank tables.
#include <fmt/format.h>

#include "report/report_page.h"
#include "report/report_text.h"

namespace switchyard::report {

std::string summary_markdown(const std::vector<RunData>& runs, const Page& p) {
  std::string out = "# Router comparison\n\n";
  auto settings_line = [](const std::vector<std::pair<std::string, std::string>>& items) {
    std::string s;
    for (const auto& [key, value] : items) s += (s.empty() ? "" : ", ") + key + " " + value;
    return s.empty() ? std::string("not recorded") : s;
  };
  fmt::format_to(std::back_inserter(out), "- Model: {}\n- Training: {}\n- Data: {}\n\n",
                 md_escape(settings_line(p.model_settings)),
                 md_escape(settings_line(p.train_settings)),
                 md_escape(settings_line(p.data_settings)));
  // fmt rather than operator+ chains: GCC 12 at -O3 warns falsely (-Wrestrict) about those.
  std::string rule = "|";
  out += "|";
  for (size_t c = 0; c < p.table.columns.size(); ++c) {
    const Column& col = p.table.columns[c];
    append(out, " {}{} |", md_escape(col.header),
           col.better < 0   ? " ↓"
           : col.better > 0 ? " ↑"
                            : "");
    rule += c == 0 ? "---|" : "---:|";
  }
  append(out, "\n{}\n", rule);
  for (const auto& row : p.table.rows) {
    out += "|";
    for (const Cell& cell : row)
      append(out, " {1}{0}{1} |", md_escape(cell.text), cell.best ? "**" : "");
    out += "\n";
  }
  out +=
      "\nBold: best in its column. MaxVio final, experts per token and entropy average the last "
      "10 % of steps; final train loss is EMA-smoothed.\n\n## Runs\n\n";
  for (size_t r = 0; r < runs.size(); ++r) {
    const RunData& run = runs[r];
    std::string line =
        fmt::format("- {}: router {}; params {} (active {}); ", md_escape(run.name),
                    md_escape(router_text(run.router)), human_count(double(run.params)),
                    human_count(double(run.active_params)));
    line +=
        run.rows.empty() ? "no steps logged" : fmt::format("{} steps", run.rows.back().step + 1);
    line += run.wall_seconds ? " in " + seconds_text(*run.wall_seconds) : " (running)";
    if (const auto it = p.differences.find(r); it != p.differences.end())
      for (const std::string& d : it->second) line += "; " + md_escape(d);
    out += line + "\n";
  }
  if (p.seeds.any_repeated) {
    append(out, "\n## Across seeds (final val loss; Δ paired by seed against {})\n\n|",
           md_escape(p.seeds.baseline));
    const auto headers = seed_headers(p.seeds);
    for (const std::string& h : headers) append(out, " {} |", md_escape(h));
    out += "\n|";
    for (size_t c = 0; c < headers.size(); ++c) out += "---|";
    out += "\n";
    for (const auto& row : seed_rows(p.seeds)) {
      out += "|";
      for (const std::string& cell : row) append(out, " {} |", md_escape(cell));
      out += "\n";
    }
  }
  if (const auto rows = parallel_rows(runs); !rows.empty()) {
    out += "\n## Across ranks\n\n|";
    for (const std::string& h : parallel_headers()) append(out, " {} |", md_escape(h));
    out += "\n|";
    for (size_t c = 0; c < parallel_headers().size(); ++c) out += "---|";
    out += "\n";
    for (const auto& row : rows) {
      out += "|";
      for (const std::string& cell : row) append(out, " {} |", md_escape(cell));
      out += "\n";
    }
  }
  return out;
}

}  // namespace switchyard::report
