// index.html of the comparison report: tables, settings, training curves, load heatmaps.
#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <set>

#include "report/load_heatmap.h"
#include "report/report_page.h"
#include "report/report_style.h"
#include "report/report_text.h"
#include "report/svg_plot.h"

namespace switchyard::report {
namespace {

std::string swatch(size_t i) {
  return fmt::format("<span class=\"swatch\" style=\"background:{}\" aria-hidden=\"true\"></span>",
                     run_colour(i));
}

std::string settings_list(const std::vector<std::pair<std::string, std::string>>& items) {
  if (items.empty()) return "<span class=\"muted\">not recorded</span>";
  std::string out;
  for (const auto& [key, value] : items)
    append(out, "<span class=\"chip\"><span class=\"k\">{}</span> {}</span>", html_escape(key),
           html_escape(value));
  return out;
}

}  // namespace

std::string html_page(const std::vector<RunData>& runs, const Page& p) {
  std::string out;

  // Header facts.
  int64_t max_step = 0;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  for (const RunData& run : runs)
    for (const MetricsRow& row : run.rows) {
      max_step = std::max(max_step, row.step);
      x_lo = std::min(x_lo, double(row.step)), x_hi = std::max(x_hi, double(row.step));
    }
  if (!finite(x_lo)) x_lo = 0, x_hi = 1;
  std::set<int> layers;
  for (const RunData& run : runs)
    for (const MetricsRow& row : run.rows)
      for (const LayerMetrics& l : row.layers) layers.insert(l.layer);

  std::string names_line;
  for (size_t r = 0; r < runs.size(); ++r) names_line += (r ? ", " : "") + runs[r].name;
  append(out,
         "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
         "<title>Router comparison: {}</title>\n<style>{}</style>\n</head>\n<body>\n<main>\n",
         html_escape(names_line), report_css());
  append(out,
         "<header><h1>Router comparison</h1><p>{} run{} · {} steps · {} MoE layer{} · "
         "written by switchyard</p></header>\n",
         runs.size(), runs.size() == 1 ? "" : "s", max_step + 1, layers.size(),
         layers.size() == 1 ? "" : "s");

  // Summary table.
  append(out,
         "<section class=\"card\" aria-labelledby=\"summary-h\"><h2 id=\"summary-h\">Summary</h2>"
         "<p class=\"lede\">Hover a column header for its definition. Arrows: ↓ lower is better, ↑ "
         "higher is better.</p><div class=\"table-wrap\"><table id=\"summary\">"
         "<thead><tr>");
  for (const Column& c : p.table.columns)
    append(out, "<th scope=\"col\" title=\"{}\">{}{}</th>", html_escape(c.help),
           html_escape(c.header),
           c.better < 0   ? " ↓"
           : c.better > 0 ? " ↑"
                          : "");
  append(out, "</tr></thead><tbody>");
  for (size_t r = 0; r < p.table.rows.size(); ++r) {
    append(out, "<tr>");
    for (size_t c = 0; c < p.table.rows[r].size(); ++c) {
      const Cell& cell = p.table.rows[r][c];
      if (c == 0) {
        append(out, "<th scope=\"row\">{}{}</th>", swatch(p.styles[r]), html_escape(cell.text));
      } else {
        append(out, "<td{}>{}</td>", cell.best ? " class=\"best\"" : "", html_escape(cell.text));
      }
    }
    append(out, "</tr>");
  }
  append(out,
         "</tbody></table></div><p class=\"key\"><span class=\"best-sample\">Highlighted</span>: "
         "best value in its column (ties at the shown precision share it). Experts per token and "
         "entropy are not ranked: neither direction is better in itself.</p></section>\n");

  // Settings.
  append(out,
         "<section class=\"card\" aria-labelledby=\"settings-h\"><h2 id=\"settings-h\">Settings"
         "</h2><p class=\"lede\">Shared by all runs unless marked “varies by run”.</p>"
         "<div class=\"settings\"><h3>Model</h3><div>{}</div><h3>Training</h3><div>{}</div>"
         "<h3>Data</h3><div>{}</div></div>",
         settings_list(p.model_settings), settings_list(p.train_settings),
         settings_list(p.data_settings));
  append(out,
         "<h3 class=\"layer-title\">Runs</h3><div class=\"table-wrap\"><table class=\"runs\">"
         "<thead><tr><th scope=\"col\">Run</th><th scope=\"col\">Router configuration</th>"
         "<th scope=\"col\" class=\"num\">Params</th><th scope=\"col\" class=\"num\">Active "
         "params</th><th scope=\"col\" class=\"num\">Steps</th><th scope=\"col\" class=\"num\">"
         "Wall time</th><th scope=\"col\">Other differences</th></tr></thead>"
         "<tbody>");
  for (size_t r = 0; r < runs.size(); ++r) {
    std::string diff;
    if (const auto it = p.differences.find(r); it != p.differences.end())
      for (const std::string& d : it->second) diff += (diff.empty() ? "" : " ") + d;
    const std::string router = router_text(runs[r].router);
    append(out,
           "<tr><th scope=\"row\">{}{}</th><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}"
           "</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
           swatch(p.styles[r]), html_escape(runs[r].name),
           router.empty() ? "—" : "<code>" + html_escape(router) + "</code>",
           human_count(double(runs[r].params)), human_count(double(runs[r].active_params)),
           runs[r].rows.empty() ? "—" : thousands(double(runs[r].rows.back().step + 1)),
           seconds_text(opt_or_nan(runs[r].wall_seconds)),
           diff.empty() ? "—" : "<code>" + html_escape(diff) + "</code>");
  }
  append(out, "</tbody></table></div></section>\n");

  // Line plots against the step, on one x range so that they line up.
  double beta = 0;
  for (const Derived& d : p.derived) beta = std::max(beta, d.beta);
  const std::string smoothing =
      beta > 0 ? fmt::format("EMA-smoothed (β = {:.2f})", beta) : std::string("per step");
  struct Curve {
    PlotSpec spec;
    std::string note;  // shown under the title
  };
  std::vector<Curve> plots;
  auto add_plot = [&](const char* id, const char* title, std::string note, const char* y_label,
                      bool markers, bool zero_based, bool fit_tail, int decimals, auto xs,
                      auto ys) {
    // Assigned, not designated: GCC 12 warns about the members a designated list leaves out.
    PlotSpec spec;
    spec.id = id;
    spec.title = title;
    spec.desc = "One line per run.";
    spec.x_label = "step";
    spec.y_label = y_label;
    spec.x_range = std::pair{x_lo, x_hi};
    spec.x_integer = true;
    spec.zero_based = zero_based;
    spec.fit_tail = fit_tail;
    spec.tail_note = "y axis fitted to the last 75 % of steps";
    spec.empty_note = "no data yet";
    spec.y_decimals = decimals;
    for (size_t r = 0; r < runs.size(); ++r) {
      PlotSeries& s = spec.series.emplace_back();
      s.name = runs[r].name;
      s.x = p.derived[r].*xs;
      s.y = p.derived[r].*ys;
      s.colour = run_colour(p.styles[r]);
      s.dash = run_dash(p.styles[r]);
      s.markers = markers;
    }
    plots.push_back({std::move(spec), std::move(note)});
  };
  add_plot("plot-val", "Validation loss", "At each evaluation (markers).", "validation loss", true,
           false, true, 4, &Derived::eval_steps, &Derived::val_loss);
  add_plot("plot-train", "Training loss", smoothing + ".", "training loss", false, false, true, 4,
           &Derived::steps, &Derived::train_loss_ema);
  add_plot("plot-maxvio", "MaxVio", smoothing + "; 0 is perfect balance.", "MaxVio", false, true,
           false, 3, &Derived::steps, &Derived::max_vio_ema);
  add_plot("plot-ept", "Experts per token", smoothing + ".", "experts per token", false, false,
           false, 2, &Derived::steps, &Derived::experts_per_token_ema);
  bool any_fluct = false, any_mi = false;
  for (const Derived& d : p.derived)
    any_fluct |= !d.fluctuation.empty(), any_mi |= !d.domain_mi.empty();
  if (any_fluct)
    add_plot("plot-fluct", "Routing fluctuation",
             "Probe tokens whose top-1 expert changed since the last evaluation.", "fluctuation",
             true, true, false, 3, &Derived::fluct_steps, &Derived::fluctuation);
  if (any_mi)
    add_plot("plot-mi", "Domain–expert mutual information",
             "In bits; higher means more specialisation by domain.", "mutual information (bits)",
             true, true, false, 3, &Derived::mi_steps, &Derived::domain_mi);
  append(out,
         "<section class=\"card\" aria-labelledby=\"curves-h\"><h2 id=\"curves-h\">Training curves"
         "</h2><p class=\"lede\">Against training step, one colour per run (per group over "
         "several seeds, one dash per seed); routing statistics are means over the MoE layers."
         "</p><div class=\"grid\">");
  for (const Curve& c : plots)
    append(out, "<figure><figcaption><h3>{}</h3><p>{}</p></figcaption>{}</figure>",
           html_escape(c.spec.title), html_escape(c.note), line_plot_svg(c.spec));
  append(out, "</div></section>\n");

  // Heatmaps, one per layer and run, on one colour scale.
  std::vector<Heatmap> maps;
  for (int layer : layers)
    for (size_t r = 0; r < runs.size(); ++r) maps.push_back(build_heatmap(runs[r], r, layer));
  const ColourScale scale = shared_colour_scale(maps);
  append(out,
         "<section class=\"card\" aria-labelledby=\"load-h\"><h2 id=\"load-h\">Expert load</h2>"
         "<p class=\"lede\">Share of tokens per expert (rows) at each evaluation (columns), on the "
         "validation probe where logged, else the training batch. One colour scale for all maps."
         "</p>");
  if (layers.empty()) append(out, "<p class=\"lede\">No layer statistics logged yet.</p>");
  size_t m = 0;
  if (runs.size() == 1) {
    // One run: its layers side by side rather than one per row.
    append(out, "<div class=\"heat-grid\">");
    for (int layer : layers)
      append(out, "<figure><figcaption><h3>Layer {}</h3></figcaption>{}</figure>", layer,
             heatmap_svg(maps[m++], scale));
    append(out, "</div>");
  } else {
    for (int layer : layers) {
      append(out, "<h3 class=\"layer-title\">Layer {}</h3><div class=\"heat-grid\">", layer);
      for (size_t r = 0; r < runs.size(); ++r, ++m)
        append(out, "<figure><figcaption><h3>{}{}</h3></figcaption>{}</figure>",
               swatch(p.styles[r]), html_escape(runs[r].name), heatmap_svg(maps[m], scale));
      append(out, "</div>");
    }
  }
  append(out, "</section>\n");

  // Several seeds per configuration: mean ± sd and the paired comparison with the baseline.
  if (p.seeds.any_repeated) {
    append(out,
           "<section class=\"card\" aria-labelledby=\"seeds-h\"><h2 id=\"seeds-h\">Across "
           "seeds</h2><p class=\"lede\">Final validation loss per group of runs (one "
           "configuration, several seeds): mean ± sample standard deviation, and the difference "
           "from {} paired by seed with its 95 % t interval. A difference whose interval excludes "
           "0 is outside seed noise. Each seed is drawn as its own line in the plots.</p>"
           "<table><thead><tr>",
           html_escape(p.seeds.baseline));
    for (const std::string& h : seed_headers(p.seeds)) append(out, "<th>{}</th>", html_escape(h));
    append(out, "</tr></thead><tbody>");
    for (const auto& row : seed_rows(p.seeds)) {
      append(out, "<tr>");
      for (const std::string& cell : row) append(out, "<td>{}</td>", html_escape(cell));
      append(out, "</tr>");
    }
    append(out, "</tbody></table></section>\n");
  }

  // Runs across ranks: the expert-parallel traffic and balance (docs/distributed.md).
  if (const auto rows = parallel_rows(runs); !rows.empty()) {
    append(out,
           "<section class=\"card\" aria-labelledby=\"ranks-h\"><h2 id=\"ranks-h\">Across "
           "ranks</h2><p class=\"lede\">Means over the steps: bytes sent to other ranks per "
           "step (all ranks), the share of step time inside the all-to-alls (waiting for a "
           "slower rank included), max / mean over ranks of the experts' rows and of step time."
           "</p><table><thead><tr>");
    for (const std::string& h : parallel_headers()) append(out, "<th>{}</th>", html_escape(h));
    append(out, "</tr></thead><tbody>");
    for (const auto& row : rows) {
      append(out, "<tr>");
      for (const std::string& cell : row) append(out, "<td>{}</td>", html_escape(cell));
      append(out, "</tr>");
    }
    append(out, "</tbody></table></section>\n");
  }

  // Definitions.
  append(out, "<footer><dl>");
  for (const Column& c : p.table.columns)
    if (c.header != "Router")
      append(out, "<dt>{}</dt><dd>{}</dd>", html_escape(c.header), html_escape(c.help));
  append(out, "</dl></footer>\n</main>\n</body>\n</html>\n");
  return out;
}

}  // namespace switchyard::report
