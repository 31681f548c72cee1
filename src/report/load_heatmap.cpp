// Draws the comparison report's expert-load heatmaps (load_heatmap.h).
#include "report/load_heatmap.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <utility>

#include "report/report_stats.h"
#include "report/report_text.h"
#include "report/svg_heatmap.h"

namespace switchyard::report {

Heatmap build_heatmap(const RunData& run, size_t run_index, int layer) {
  Heatmap h;
  h.run_name = run.name;
  h.run_index = run_index;
  h.layer = layer;
  h.id = fmt::format("heat-l{}-r{}", layer, run_index);
  std::vector<const MetricsRow*> rows;
  for (const MetricsRow& row : run.rows)
    if (row.val_loss) rows.push_back(&row);
  if (rows.size() < 2) {
    rows.clear();
    for (const MetricsRow& row : run.rows) rows.push_back(&row);
  }
  std::vector<const MetricsRow*> picked;
  const size_t max_cols = 60;
  if (rows.size() <= max_cols) {
    picked = std::move(rows);  // (a copy trips GCC 12's -Wfree-nonheap-object at -O3)
  } else {
    for (size_t c = 0; c < max_cols; ++c)
      picked.push_back(rows[c * (rows.size() - 1) / (max_cols - 1)]);
  }
  for (const MetricsRow* row : picked) {
    const auto it = std::find_if(row->layers.begin(), row->layers.end(),
                                 [&](const LayerMetrics& l) { return l.layer == layer; });
    if (it == row->layers.end()) continue;
    const bool val = !it->val_load.empty();
    h.from_val_load |= val;
    const std::vector<double>& load = val ? it->val_load : it->load;
    double sum = 0;
    for (double v : load)
      if (finite(v)) sum += v;
    std::vector<double> share(load.size(), kNaN);
    for (size_t e = 0; e < load.size(); ++e)
      if (finite(load[e]) && sum > 0) share[e] = load[e] / sum;
    h.experts = std::max(h.experts, share.size());
    h.steps.push_back(double(row->step));
    h.shares.push_back(std::move(share));
  }
  return h;
}

ColourScale shared_colour_scale(const std::vector<Heatmap>& maps) {
  double max_share = 0;
  size_t max_experts = 0;
  for (const Heatmap& map : maps) {
    max_experts = std::max(max_experts, map.experts);
    for (const auto& col : map.shares)
      for (double v : col)
        if (finite(v)) max_share = std::max(max_share, v);
  }
  ColourScale scale;
  if (max_experts > 0) {
    const double e = double(max_experts);
    scale.vmax = std::clamp(max_share, std::min(1.0, 2.0 / e), std::min(1.0, 3.0 / e));
    scale.saturates = max_share > scale.vmax + 1e-12;
  }
  return scale;
}

std::string heatmap_svg(const Heatmap& h, const ColourScale& scale) {
  const size_t cols = h.steps.size(), rows = h.experts;
  const double left = 50, top = 10, area_w = 330;
  const double cell_w = cols ? std::max(2.0, std::floor(area_w / double(cols))) : area_w;
  const double cell_h = rows ? std::clamp(std::floor(220.0 / double(rows)), 3.0, 18.0) : 40;
  const double grid_w = cols ? cell_w * double(cols) : area_w;
  const double grid_h = rows ? cell_h * double(rows) : 40;
  const double bar_y = top + grid_h + 52;
  const double width = left + area_w + 12, height = bar_y + 34;

  std::string out;
  const std::string title = fmt::format("Expert load share, layer {}, run {}", h.layer, h.run_name);
  const std::string desc =
      cols == 0 ? std::string("No data.")
                : fmt::format(
                      "{} experts by {} steps from {:.0f} to {:.0f}; colour is the share "
                      "of {} tokens routed to each expert.",
                      rows, cols, h.steps.front(), h.steps.back(),
                      h.from_val_load ? "validation-probe" : "training");
  append(
      out,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" viewBox=\"0 0 {:.0f} {:.0f}\" "
      "role=\"img\" aria-labelledby=\"{}-title {}-desc\">",
      width, height, h.id, h.id);
  append(out, "<title id=\"{}-title\">{}</title><desc id=\"{}-desc\">{}</desc>", h.id,
         html_escape(title), h.id, html_escape(desc));
  if (cols == 0 || rows == 0) {
    append(out, "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#f3f4f6\"/>", left, top,
           area_w, grid_h);
    append(out,
           "<text class=\"empty\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\" "
           "dominant-baseline=\"central\">no data yet</text></svg>",
           left + area_w / 2, top + grid_h / 2);
    return out;
  }

  // Small maps get one rect per cell with a tooltip. Large ones (many experts, layers and runs
  // would make the page tens of megabytes) get one path per colour, 64 levels.
  append(out, "<g shape-rendering=\"crispEdges\">");
  auto share = [&](size_t c, size_t e) { return e < h.shares[c].size() ? h.shares[c][e] : kNaN; };
  if (rows * cols <= 1200) {
    for (size_t c = 0; c < cols; ++c)
      for (size_t e = 0; e < rows; ++e) {
        const double v = share(c, e);
        append(out,
               "<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"{}\">"
               "<title>expert {} · step {:.0f} · {}</title></rect>",
               left + cell_w * double(c), top + cell_h * double(e), cell_w, cell_h,
               viridis(v / scale.vmax), e, h.steps[c],
               finite(v) ? fmt::format("{:.1f} %", 100 * v) : std::string("no data"));
      }
  } else {
    std::map<int, std::string> paths;  // colour level (-1: no data) → path data
    for (size_t c = 0; c < cols; ++c)
      for (size_t e = 0; e < rows; ++e) {
        const double v = share(c, e);
        const int level =
            finite(v) ? int(std::lround(std::clamp(v / scale.vmax, 0.0, 1.0) * 63)) : -1;
        append(paths[level], "M{:.0f} {:.0f}h{:.0f}v{:.0f}h-{:.0f}z", left + cell_w * double(c),
               top + cell_h * double(e), cell_w, cell_h, cell_w);
      }
    for (const auto& [level, d] : paths)
      append(out, "<path fill=\"{}\" d=\"{}\"/>", viridis(level < 0 ? kNaN : level / 63.0), d);
  }
  append(out, "</g>");
  append(out,
         "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#9aa3b2\" "
         "stroke-width=\"0.8\"/>",
         left, top, grid_w, grid_h);

  // Expert labels (at most about twelve) and step labels (about six).
  append(out, "<g class=\"ticks\" aria-hidden=\"true\">");
  const size_t e_every = std::max<size_t>(1, (rows + 11) / 12);
  for (size_t e = 0; e < rows; e += e_every)
    append(out,
           "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" dominant-baseline=\"central\">{}"
           "</text>",
           left - 6, top + cell_h * (double(e) + 0.5), e);
  const size_t labels = std::min<size_t>(cols, 6);
  std::set<size_t> shown;
  for (size_t k = 0; k < labels; ++k) shown.insert(labels == 1 ? 0 : k * (cols - 1) / (labels - 1));
  for (size_t c : shown) {
    const double x = left + cell_w * (double(c) + 0.5);
    append(out,
           "<line class=\"tick\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>", x,
           top + grid_h, top + grid_h + 4);
    append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>", x,
           top + grid_h + 17, tick_label(h.steps[c], 0));
  }
  append(out, "</g>");
  append(
      out, "<text class=\"axis-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
      left + grid_w / 2, top + grid_h + 35, h.from_val_load ? "evaluation step" : "training step");
  append(out,
         "<text class=\"axis-label\" transform=\"translate(16 {:.1f}) rotate(-90)\" "
         "text-anchor=\"middle\">expert</text>",
         top + grid_h / 2);

  // Colour bar with the uniform share 1/E marked.
  const double bar_x = left, bar_w = 150, bar_h = 8;
  append(out, "<defs><linearGradient id=\"{}-grad\">", h.id);
  for (size_t i = 0; i < size_t(kViridisStops); ++i)
    append(out, "<stop offset=\"{:.3f}\" stop-color=\"{}\"/>",
           double(i) / double(size_t(kViridisStops) - 1),
           viridis(double(i) / double(size_t(kViridisStops) - 1)));
  append(out, "</linearGradient></defs>");
  append(out,
         "<rect x=\"{}\" y=\"{:.1f}\" width=\"{}\" height=\"{}\" fill=\"url(#{}-grad)\" "
         "rx=\"2\"/>",
         bar_x, bar_y, bar_w, bar_h, h.id);
  append(out, "<g class=\"ticks\">");
  append(out, "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"start\">0 %</text>", bar_x, bar_y + 22);
  append(out, "<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}{:.{}f} %</text>", bar_x + bar_w,
         bar_y + 22, scale.saturates ? "≥ " : "", 100 * scale.vmax, scale.vmax < 0.1 ? 1 : 0);
  const double uniform = 1.0 / double(rows);
  if (uniform <= scale.vmax) {
    const double ux = bar_x + bar_w * uniform / scale.vmax;
    append(out,
           "<line class=\"uniform\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>",
           ux, bar_y - 3, bar_y + bar_h + 3);
    // Keep the marker's label clear of the end labels.
    if (ux - bar_x > 40 && bar_x + bar_w - ux > 40)
      append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">1/E</text>", ux,
             bar_y + 22);
  }
  append(out,
         "<text x=\"{:.1f}\" y=\"{:.1f}\" dominant-baseline=\"central\">load share · 1/E = "
         "{:.1f} %</text>",
         bar_x + bar_w + 12, bar_y + bar_h / 2, 100 * uniform);
  append(out, "</g></svg>");
  return out;
}

}  // namespace switchyard::report
