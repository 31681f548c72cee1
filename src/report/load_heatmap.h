// Expert-load heatmaps of the comparison report: each expert's token share per evaluation.
#pragma once

#include <switchyard/report.h>

#include <string>
#include <vector>

namespace switchyard::report {

struct Heatmap {
  std::string id, run_name;
  size_t run_index = 0;
  int layer = 0;
  bool from_val_load = false;
  std::vector<double> steps;                // columns
  std::vector<std::vector<double>> shares;  // [column][expert], NaN where unknown
  size_t experts = 0;
};

// Columns are the evaluation steps (or every step when a run has fewer than two evaluations),
// at most 60 of them so that cells stay legible.
Heatmap build_heatmap(const RunData& run, size_t run_index, int layer);

struct ColourScale {
  double vmax = 1;
  bool saturates = false;  // some shares exceed vmax
};

// One scale for all maps so that runs compare at a glance. It stops at three times the uniform
// share so that one collapsed expert does not wash out the rest.
ColourScale shared_colour_scale(const std::vector<Heatmap>& maps);

// Draws with the plots' classes (svg_plot.h's kPlotCss) and line.uniform, styled by the page.
std::string heatmap_svg(const Heatmap& h, const ColourScale& scale);

}  // namespace switchyard::report
