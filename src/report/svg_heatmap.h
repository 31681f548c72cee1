// SVG heatmaps shared by the reports: the viridis colour map and a labelled matrix heatmap
// (inline SVG with a title and description for screen readers, tooltips on small maps).
#pragma once

#include <string>
#include <vector>

namespace switchyard::report {

// Viridis at t in [0, 1] as #rrggbb (interpolated between kViridisStops samples); NaN gives
// the "no data" grey.
constexpr int kViridisStops = 9;
std::string viridis(double t);

struct MatrixHeatmap {
  std::string id, title, desc;
  std::string row_axis, col_axis;                   // axis names, e.g. "expert", "layer"
  std::vector<std::string> row_labels, col_labels;  // (rows), (cols)
  std::vector<double> values;                       // (rows, cols) row-major; NaN = no data
  double vmax = 1.0;                                // the colour scale's top
  double tooltip_scale = 100.0;                     // tooltip shows value × scale and the unit
  std::string tooltip_unit = "%";
};

std::string matrix_heatmap_svg(const MatrixHeatmap& h);

}  // namespace switchyard::report
