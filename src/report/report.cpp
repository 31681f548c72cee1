// write_report (include/switchyard/report.h): analyse runs, write index.html and summary.md.
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/report.h>

#include <filesystem>
#include <system_error>

#include "report/report_page.h"

namespace switchyard {

void write_report(const std::vector<RunData>& runs, const std::string& out_dir,
                  const ReportOptions& options) {
  if (runs.empty()) fail("report: no runs to compare");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) fail("cannot create report folder '{}': {}", out_dir, ec.message());
  const report::Page page = report::analyse(runs, options);
  const std::string dir = std::filesystem::path(out_dir).string();
  write_file_atomic((std::filesystem::path(dir) / "index.html").string(),
                    report::html_page(runs, page));
  write_file_atomic((std::filesystem::path(dir) / "summary.md").string(),
                    report::summary_markdown(runs, page));
}

}  // namespace switchyard
