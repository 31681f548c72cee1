// The text table and the HTML report (inline SVG, no scripts) of `switchyard llm eval`.
#include <fmt/format.h>
#include <switchyard/llm_eval.h>
#include <switchyard/report.h>

#include <algorithm>
#include <cmath>
#include <iterator>

#include "report/svg_plot.h"

namespace switchyard {
namespace {

template <typename... Args>
void append(std::string& out, fmt::format_string<Args...> format, Args&&... args) {
  fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
}

std::string cell(double v, int decimals = 3) {
  return std::isfinite(v) ? fmt::format("{:.{}f}", v, decimals) : std::string("-");
}

std::string percent(double v) {
  return std::isfinite(v) ? fmt::format("{:.1f}%", 100.0 * v) : std::string("-");
}

const char* colour(size_t i) {
  static const char* palette[] = {"#111111", "#9aa0a6", "#1f77b4", "#d62728", "#2ca02c",
                                  "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"};
  return palette[i % (sizeof palette / sizeof palette[0])];
}

struct PlotLine {
  std::string name;
  std::vector<std::pair<double, double>> xy;
  bool dashed = false, markers = false, line = true;
};

// The shared plot engine (report/svg_plot.h); line i gets colour(i).
std::string plot_svg(const std::string& id, const std::string& title, const std::string& x_label,
                     const std::string& y_label, const std::vector<PlotLine>& lines,
                     int x_decimals) {
  report::PlotSpec spec;
  spec.id = id;
  spec.title = title;
  spec.show_title = true;
  spec.describe_last = false;  // the figure's caption describes the plot
  spec.x_label = x_label;
  spec.y_label = y_label;
  spec.x_decimals = x_decimals;
  spec.width = 560;
  spec.plot_height = 240;
  for (size_t i = 0; i < lines.size(); ++i) {
    const PlotLine& l = lines[i];
    report::PlotSeries& s = spec.series.emplace_back();
    s.name = l.name;
    for (const auto& [x, y] : l.xy) s.x.push_back(x), s.y.push_back(y);
    s.colour = colour(i);
    if (l.dashed) s.dash = "5 4";
    // A one-point curve has no line to draw: show its point.
    s.line = l.line && l.xy.size() > 1;
    s.markers = l.markers || !s.line;
  }
  return report::line_plot_svg(spec);
}

}  // namespace

std::string eval_text_table(const EvalResult& res) {
  std::string out;
  append(
      out,
      "{}: {} train / {} test prompts ({} bad rows skipped); strong {} ({:.3f}), weak {} ({:.3f}); "
      "costs from {}\n",
      res.dataset, res.train_rows, res.test_rows, res.skipped_rows, res.models[size_t(res.strong)],
      res.model_quality[size_t(res.strong)], res.models[size_t(res.weak)],
      res.model_quality[size_t(res.weak)], res.cost_source);
  std::string shares;
  for (double s : res.config.strong_shares)
    shares += fmt::format(" {:>13}", fmt::format("PGR@{:.0f}%", 100 * s));
  append(out, "{:<14} {:>6} {:>8} {:>7} {:>7}{} {:>7} {:>7} {:>9}\n", "router", "APGR", "APGR-10",
         "CPT50", "CPT80", shares, "AIQ", "fit s", "route µs");
  for (const auto& r : res.routers) {
    std::string th;
    for (const auto& x : r.thresholds)
      th += fmt::format(" {:>13}", fmt::format("{} ({})", cell(x.pgr, 2), percent(x.test_share)));
    append(out, "{:<14} {:>6} {:>8} {:>7} {:>7}{} {:>7} {:>7} {:>9}\n", r.name, cell(r.apgr),
           cell(r.apgr_deciles), percent(r.cpt50), percent(r.cpt80), th, cell(r.aiq, 4),
           cell(r.fit_seconds, 2), cell(r.route_us, 1));
  }
  // The zero router's two-model curve is best_single's (a constant gain: the straight mixture).
  append(out, "{:<14} {:>6} {:>8} {:>7} {:>7}{} {:>7}\n", "zero (mixes)", "-", "-", "-", "-",
         std::string(14 * res.config.strong_shares.size(), ' '), cell(res.zero_aiq, 4));
  return out;
}

std::string eval_html(const EvalResult& res) {
  std::string out;
  append(
      out,
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>switchyard llm eval: "
      "{0}</title><style>body{{font:14px system-ui,sans-serif;margin:24px;color:#1d2330;"
      "max-width:1200px}}table{{border-collapse:collapse;margin:12px 0}}td,th{{padding:4px 10px;"
      "border-bottom:1px solid #e3e6eb;text-align:right}}td:first-child,th:first-child{{text-align:"
      "left}}.plots{{display:flex;flex-wrap:wrap;gap:16px}}:root{{--fg:#1d2330;--muted:#5d6678}}"
      "svg{{width:560px;max-width:100%;height:auto;overflow:visible}}{1}svg "
      "text.title{{font-size:13px;"
      "fill:#1d2330;font-weight:600}}</style></head><body><h1>Prompt routing: {0}</h1>",
      html_escape(res.dataset), report::kPlotCss);
  append(out,
         "<p>{} training and {} test prompts (seeded split: fraction {}, seed {}); {} bad rows "
         "skipped. Strong model <b>{}</b> ({:.3f}), weak model <b>{}</b> ({:.3f}). Costs: {}.</p>",
         res.train_rows, res.test_rows, res.config.train_fraction, res.config.seed,
         res.skipped_rows, html_escape(res.models[size_t(res.strong)]),
         res.model_quality[size_t(res.strong)], html_escape(res.models[size_t(res.weak)]),
         res.model_quality[size_t(res.weak)], html_escape(res.cost_source));
  append(out,
         "<table id=\"summary\"><thead><tr><th>router</th><th>APGR</th><th>APGR (deciles)</th>"
         "<th>CPT(50%)</th>"
         "<th>CPT(80%)</th>");
  for (double s : res.config.strong_shares)
    append(out, "<th>PGR, target {:.0f}% strong</th>", 100 * s);
  append(out, "<th>AIQ</th><th>fit (s)</th><th>route (µs/prompt)</th></tr></thead><tbody>");
  for (const auto& r : res.routers) {
    append(out, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>", html_escape(r.name),
           cell(r.apgr), cell(r.apgr_deciles), percent(r.cpt50), percent(r.cpt80));
    for (const auto& x : r.thresholds)
      append(out, "<td>{} at {}</td>", cell(x.pgr, 3), percent(x.test_share));
    append(out, "<td>{}</td><td>{}</td><td>{}</td></tr>", cell(r.aiq, 4), cell(r.fit_seconds, 2),
           cell(r.route_us, 1));
  }
  append(out,
         "<tr><td>zero router (mixtures of single models)</td><td>-</td><td>-</td><td>-</td>"
         "<td>-</td>");
  for (size_t i = 0; i < res.config.strong_shares.size(); ++i) append(out, "<td>-</td>");
  append(out, "<td>{}</td><td>-</td><td>-</td></tr></tbody></table>", cell(res.zero_aiq, 4));

  std::vector<PlotLine> pair, cost;
  for (const auto& r : res.routers) {
    PlotLine p{r.name, {}, r.name == "oracle", false, true};
    // Thin the exact curve to at most ~200 points for the page.
    const size_t step = std::max<size_t>(1, r.pair_curve.size() / 200);
    for (size_t i = 0; i < r.pair_curve.size(); i += step)
      p.xy.emplace_back(100 * r.pair_curve[i].strong_share, r.pair_curve[i].quality);
    p.xy.emplace_back(100 * r.pair_curve.back().strong_share, r.pair_curve.back().quality);
    pair.push_back(p);
    PlotLine h{r.name, {}, r.name == "oracle", false, true};
    for (const auto& x : r.hull) h.xy.emplace_back(x.cost, x.quality);
    cost.push_back(h);
  }
  PlotLine zero{"zero router", {}, true, true, true};
  for (const auto& x : res.zero_hull) zero.xy.emplace_back(x.cost, x.quality);
  cost.push_back(zero);
  PlotLine singles{"single models", {}, false, true, false};
  for (size_t m = 0; m < res.models.size(); ++m)
    singles.xy.emplace_back(res.model_cost[m], res.model_quality[m]);
  cost.push_back(singles);
  append(out,
         "<div class=\"plots\"><figure>{}<figcaption>Quality against the share of prompts sent to "
         "the strong model (every threshold). The straight line from weak to strong is the random "
         "mixture.</figcaption></figure>",
         plot_svg("pair", "Two-model routing (strong vs weak)", "strong model calls (%)",
                  "mean score", pair, 1));
  append(out,
         "<figure>{}<figcaption>Non-decreasing convex hull of each router's cost–quality points "
         "(cost-aware rule over λ, cascade over τ); dots are the single models.</figcaption>"
         "</figure></div>",
         plot_svg("cost", "Cost–quality hulls", "mean cost per prompt (" + res.cost_source + ")",
                  "mean score", cost, 4));
  append(out,
         "<h2>Models on the test split</h2><table><tr><th>model</th><th>mean score</th>"
         "<th>mean cost</th></tr>");
  for (size_t m = 0; m < res.models.size(); ++m)
    append(out, "<tr><td>{}</td><td>{:.4f}</td><td>{:.6g}</td></tr>", html_escape(res.models[m]),
           res.model_quality[m], res.model_cost[m]);
  append(out, "</table><p>Definitions: docs/llm-routing.md.</p></body></html>\n");
  return out;
}

}  // namespace switchyard
