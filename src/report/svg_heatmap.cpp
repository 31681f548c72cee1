#include "report/svg_heatmap.h"

#include <fmt/format.h>
#include <switchyard/report.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <map>

namespace switchyard::report {

namespace {

// Viridis (perceptually uniform, colour-blind safe), sampled at nine points.
constexpr std::array<std::array<int, 3>, 9> kViridis = {{{68, 1, 84},
                                                         {71, 45, 123},
                                                         {59, 82, 139},
                                                         {44, 114, 142},
                                                         {33, 145, 140},
                                                         {40, 174, 128},
                                                         {94, 201, 98},
                                                         {173, 220, 48},
                                                         {253, 231, 37}}};

template <typename... Args>
void append(std::string& out, fmt::format_string<Args...> format, Args&&... args) {
  fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
}

}  // namespace

std::string viridis(double t) {
  if (!std::isfinite(t)) return "#e5e7eb";
  t = std::clamp(t, 0.0, 1.0) * double(kViridis.size() - 1);
  const size_t i = std::min(size_t(t), kViridis.size() - 2);
  const double f = t - double(i);
  std::array<int, 3> c{};
  for (size_t k = 0; k < 3; ++k)
    c[k] = int(std::lround(kViridis[i][k] + f * (kViridis[i + 1][k] - kViridis[i][k])));
  return fmt::format("#{:02x}{:02x}{:02x}", c[0], c[1], c[2]);
}

std::string matrix_heatmap_svg(const MatrixHeatmap& h) {
  const size_t rows = h.row_labels.size(), cols = h.col_labels.size();
  const double left = 64, top = 10, area_w = 420, area_h = 260;
  const double cell_w = cols ? std::clamp(std::floor(area_w / double(cols)), 2.0, 40.0) : area_w;
  const double cell_h = rows ? std::clamp(std::floor(area_h / double(rows)), 2.0, 18.0) : 40;
  const double grid_w = cell_w * double(std::max<size_t>(cols, 1));
  const double grid_h = cell_h * double(std::max<size_t>(rows, 1));
  const double bar_y = top + grid_h + 44;
  const double width = left + std::max(grid_w, 260.0) + 16, height = bar_y + 34;
  std::string out;
  append(out,
         "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"heatmap\" width=\"{:.0f}\" "
         "height=\"{:.0f}\" viewBox=\"0 0 {:.0f} {:.0f}\" role=\"img\" "
         "aria-labelledby=\"{}-title {}-desc\">",
         width, height, width, height, h.id, h.id);
  append(out, "<title id=\"{}-title\">{}</title><desc id=\"{}-desc\">{}</desc>", h.id,
         html_escape(h.title), h.id, html_escape(h.desc));
  // Small maps: a rect per cell with a tooltip; large ones: one path per colour level.
  append(out, "<g shape-rendering=\"crispEdges\">");
  auto value = [&](size_t r, size_t c) { return h.values[r * cols + c]; };
  if (rows * cols <= 2500) {
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const double v = value(r, c);
        append(out,
               "<rect x=\"{:.0f}\" y=\"{:.0f}\" width=\"{:.0f}\" height=\"{:.0f}\" fill=\"{}\">"
               "<title>{} {} · {} {} · {}</title></rect>",
               left + cell_w * double(c), top + cell_h * double(r), cell_w, cell_h,
               viridis(v / h.vmax), html_escape(h.row_axis), html_escape(h.row_labels[r]),
               html_escape(h.col_axis), html_escape(h.col_labels[c]),
               std::isfinite(v) ? fmt::format("{:.2f} {}", v * h.tooltip_scale, h.tooltip_unit)
                                : std::string("no data"));
      }
  } else {
    std::map<int, std::string> paths;  // colour level (-1: no data) -> path data
    for (size_t r = 0; r < rows; ++r)
      for (size_t c = 0; c < cols; ++c) {
        const double v = value(r, c);
        const int level =
            std::isfinite(v) ? int(std::lround(std::clamp(v / h.vmax, 0.0, 1.0) * 63)) : -1;
        append(paths[level], "M{:.0f} {:.0f}h{:.0f}v{:.0f}h-{:.0f}z", left + cell_w * double(c),
               top + cell_h * double(r), cell_w, cell_h, cell_w);
      }
    for (const auto& [level, d] : paths)
      append(out, "<path fill=\"{}\" d=\"{}\"/>", viridis(level < 0 ? NAN : level / 63.0), d);
  }
  append(out, "</g>");
  append(out,
         "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#9aa3b2\" "
         "stroke-width=\"0.8\"/>",
         left, top, grid_w, grid_h);
  // About twelve row labels and ten column labels, then the axis names and the colour bar.
  append(out, "<g class=\"ticks\" aria-hidden=\"true\" font-size=\"11\">");
  const size_t r_every = std::max<size_t>(1, (rows + 11) / 12);
  for (size_t r = 0; r < rows; r += r_every)
    append(out,
           "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" dominant-baseline=\"central\">{}"
           "</text>",
           left - 6, top + cell_h * (double(r) + 0.5), html_escape(h.row_labels[r]));
  const size_t c_every = std::max<size_t>(1, (cols + 9) / 10);
  for (size_t c = 0; c < cols; c += c_every)
    append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
           left + cell_w * (double(c) + 0.5), top + grid_h + 14, html_escape(h.col_labels[c]));
  append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>", left + grid_w / 2,
         top + grid_h + 30, html_escape(h.col_axis));
  append(out,
         "<text x=\"12\" y=\"{:.1f}\" text-anchor=\"middle\" transform=\"rotate(-90 12 {:.1f})\">"
         "{}</text>",
         top + grid_h / 2, top + grid_h / 2, html_escape(h.row_axis));
  for (int i = 0; i < 32; ++i)
    append(out, "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"6.5\" height=\"10\" fill=\"{}\"/>",
           left + 6.25 * i, bar_y, viridis(i / 31.0));
  append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\">0</text>", left, bar_y + 24);
  append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{:.3g} {}</text>", left + 200,
         bar_y + 24, h.vmax * h.tooltip_scale, html_escape(h.tooltip_unit));
  append(out, "</g></svg>");
  return out;
}

}  // namespace switchyard::report
