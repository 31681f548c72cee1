// The comparison report's stylesheet and run colours (report_style.h).
#include "report/report_style.h"

#include "report/svg_plot.h"

namespace switchyard::report {
namespace {

// Around the plots' rules (kPlotCss), which sit between kCssHead and kCssTail.
constexpr const char* kCssHead = R"CSS(
:root { --fg: #1c2230; --muted: #5d6678; --line: #e4e7ec; --bg: #f6f7f9; --card: #ffffff;
  --best-bg: #e3f1fb; --best-fg: #063f66; }
* { box-sizing: border-box; }
html { -webkit-text-size-adjust: 100%; }
body { margin: 0; background: var(--bg); color: var(--fg);
  font: 14px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", "Noto Sans",
    "Liberation Sans", Arial, sans-serif; }
main { max-width: 1360px; margin: 0 auto; padding: 28px 24px 40px; }
header h1 { font-size: 26px; line-height: 1.2; margin: 0 0 6px; letter-spacing: -0.01em; }
header p { margin: 0; color: var(--muted); }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 10px;
  padding: 18px 22px 20px; margin-top: 18px; box-shadow: 0 1px 2px rgba(16, 24, 40, 0.04); }
h2 { font-size: 16px; margin: 0 0 4px; }
h3 { font-size: 14px; margin: 0; }
.lede { color: var(--muted); margin: 0 0 14px; font-size: 13px; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 10px; border-bottom: 1px solid var(--line); text-align: right;
  white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead th { font-size: 12px; font-weight: 600; color: var(--muted); vertical-align: bottom;
  white-space: normal; min-width: 72px; }
tbody tr:last-child td { border-bottom: none; }
tbody tr:hover td { background: #fafbfc; }
td.best, tbody tr:hover td.best { background: var(--best-bg); color: var(--best-fg); font-weight: 650; }
.dir { font-size: 11px; color: var(--muted); margin-left: 4px; }
.swatch { display: inline-block; width: 11px; height: 11px; border-radius: 3px;
  margin-right: 8px; vertical-align: -1px; }
.key { color: var(--muted); font-size: 12px; margin: 10px 0 0; }
.key .best-sample { background: var(--best-bg); color: var(--best-fg); font-weight: 650;
  padding: 0 5px; border-radius: 3px; }
.settings { display: grid; grid-template-columns: max-content 1fr; gap: 6px 18px;
  align-items: baseline; font-size: 13px; }
.settings h3 { margin: 0; font-size: 11px; color: var(--muted); font-weight: 600;
  text-transform: uppercase; letter-spacing: 0.05em; }
.chip { display: inline-block; margin: 0 18px 2px 0; font-variant-numeric: tabular-nums; }
.chip .k, .muted { color: var(--muted); }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 0; font-size: 13px; }
dt { color: var(--muted); }
dd { margin: 0; overflow-wrap: anywhere; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, "Liberation Mono", monospace;
  font-size: 12px; background: #f2f4f7; padding: 1px 5px; border-radius: 4px; }
.runs th, .runs td { white-space: normal; text-align: left; font-size: 13px; }
.runs thead th { font-size: 12px; }
.runs .num { text-align: right; white-space: nowrap; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 16px 26px; }
.heat-grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr));
  gap: 12px 22px; margin-bottom: 12px; }
figure { margin: 0; display: flex; flex-direction: column; }
figure > svg { margin-top: auto; }
figcaption { margin: 4px 0 4px; }
figcaption p { margin: 0; color: var(--muted); font-size: 12px; }
.layer-title { margin: 14px 0 6px; font-size: 14px; }
svg { display: block; width: 100%; height: auto; overflow: visible; }
)CSS";

constexpr const char* kCssTail = R"CSS(svg line.uniform { stroke: #1c2230; stroke-width: 1.5; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
footer dl { font-size: 12px; }
@media print { body { background: #fff; } .card { box-shadow: none; break-inside: avoid; } }
)CSS";

}  // namespace

const char* run_colour(size_t i) {
  return kPalette[i % kPalette.size()];
}

const char* run_dash(size_t i) {
  static constexpr std::array<const char*, 3> dashes = {"", "7 4", "2 3"};
  return dashes[(i / kPalette.size()) % dashes.size()];
}

std::string report_css() {
  return std::string(kCssHead) + kPlotCss + kCssTail;
}

}  // namespace switchyard::report
