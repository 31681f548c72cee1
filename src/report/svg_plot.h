// The one SVG line/scatter plot engine of the HTML reports: series, bands, axes, legend, title.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace switchyard::report {

struct PlotSeries {
  std::string name;          // legend, tooltips and the description
  std::vector<double> x, y;  // a non-finite y leaves a gap in the line
  std::string colour = "#000000";
  std::string dash;                      // stroke-dasharray; empty: solid
  bool line = true;                      // false: points only (a scatter)
  bool markers = false;                  // a circle at each point
  std::vector<double> band_lo, band_hi;  // optional shaded band, one value per x (or none)
};

struct PlotSpec {
  std::string id;             // unique in the page (element ids)
  std::string title;          // the svg's <title>
  bool show_title = false;    // also drawn above the legend (class "title", styled by the page)
  std::string desc;           // the svg's <desc>
  bool describe_last = true;  // the desc goes on with each series' last point
  std::string x_label, y_label;
  std::vector<PlotSeries> series;
  std::optional<std::pair<double, double>> x_range;  // default: the data's, 4 % wider
  bool x_integer = false;                            // x ticks at whole numbers
  bool zero_based = false;  // the y axis starts at 0 (non-negative statistics)
  bool fit_tail = false;    // fit y to the last 75 % of x when early values dwarf the rest
  std::string tail_note = "y axis fitted to the last 75 % of the x range";
  std::string empty_note = "no data";
  int x_decimals = 0, y_decimals = 3;  // of values in tooltips and the description
  double width = 440, plot_height = 220;
  // Markers on a line series only while they stay apart: a marked line with more points drops
  // every line's markers (points-only series keep theirs).
  size_t max_marked_points = 60;
};

std::string line_plot_svg(const PlotSpec& spec);

// The CSS of the classes the plots draw with (text.legend, text.axis-label, text.empty,
// text.clip-note, .grid line, line.axis, line.tick); it uses the page's --fg and --muted.
// text.title is left to the page, to match its headings.
extern const char* const kPlotCss;

}  // namespace switchyard::report
