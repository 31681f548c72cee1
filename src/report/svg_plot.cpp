// The SVG line and scatter plot (svg_plot.h): ticks, legend layout, gaps at non-finite values.
#include "report/svg_plot.h"

#include <fmt/format.h>
#include <switchyard/report.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string_view>

#include "report/report_text.h"

namespace switchyard::report {

const char* const kPlotCss =
    R"CSS(svg text { font-family: inherit; font-size: 11px; fill: #4a5263; }
svg text.legend { font-size: 12px; fill: var(--fg); }
svg text.axis-label { font-size: 12px; fill: var(--muted); }
svg text.empty, svg text.clip-note { font-size: 12px; fill: #8a93a5; font-style: italic; }
svg .grid line { stroke: #edf0f3; stroke-width: 1; }
svg line.axis { stroke: #8c95a6; stroke-width: 1; }
svg line.tick { stroke: #8c95a6; stroke-width: 1; }
)CSS";

namespace {

bool finite(double v) {
  return std::isfinite(v);
}

struct Ticks {
  double lo, hi;
  std::vector<double> at;
  int decimals;
};

// Ticks at 1, 2 or 5 × 10^k covering [lo, hi]; `snap` widens the range to whole ticks.
Ticks nice_ticks(double lo, double hi, int target, bool snap, bool integer) {
  if (!(hi > lo)) {
    const double pad = std::max(std::fabs(lo) * 0.05, integer ? 1.0 : 1e-3);
    lo -= pad, hi += pad;
  }
  const double raw = (hi - lo) / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  if (integer) step = std::max(step, 1.0);
  Ticks t{lo, hi, {}, 0};
  if (snap) t.lo = std::floor(lo / step + 1e-9) * step, t.hi = std::ceil(hi / step - 1e-9) * step;
  for (double v = std::ceil(t.lo / step - 1e-9) * step; v <= t.hi + step * 1e-6; v += step)
    t.at.push_back(std::fabs(v) < step * 1e-9 ? 0.0 : v);
  t.decimals = std::max(0, int(-std::floor(std::log10(step) + 1e-9)));
  return t;
}

// Approximate text width at 12 px in the system font, for laying out legends.
double text_width(std::string_view s, double px = 12) {
  return 0.58 * px * double(s.size());
}

size_t points(const PlotSeries& s) {
  return std::min(s.x.size(), s.y.size());
}

bool has_band(const PlotSeries& s) {
  return !s.band_lo.empty() && s.band_lo.size() == s.x.size() && s.band_hi.size() == s.x.size();
}

// Entries flow left to right and wrap; returns the legend's height through `height`.
std::string legend_svg(const std::vector<PlotSeries>& series, const std::vector<bool>& marked,
                       double x0, double y0, double width, double* height) {
  std::string out;
  double x = x0, y = y0;
  for (size_t i = 0; i < series.size(); ++i) {
    const PlotSeries& s = series[i];
    const double w = 30 + text_width(s.name) + 18;
    if (x > x0 && x + w > x0 + width) x = x0, y += 20;
    if (s.line)
      append(out,
             "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" "
             "stroke-width=\"2.5\" stroke-dasharray=\"{}\"/>",
             x, y, x + 22, y, s.colour, s.dash);
    if (marked[i])
      append(out, "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>", x + 11, y, s.colour);
    append(out,
           "<text x=\"{:.1f}\" y=\"{:.1f}\" dominant-baseline=\"central\" "
           "class=\"legend\">{}</text>",
           x + 30, y, html_escape(s.name));
    x += w;
  }
  *height = y - y0 + 20;
  return out;
}

}  // namespace

std::string line_plot_svg(const PlotSpec& spec) {
  const double left = 58, right = 14, bottom = 44;
  const double head = spec.show_title ? 22 : 0;
  // Markers only while they stay apart.
  bool crowded = false;
  for (const PlotSeries& s : spec.series)
    crowded = crowded || (s.line && s.markers && points(s) > spec.max_marked_points);
  std::vector<bool> marked;
  for (const PlotSeries& s : spec.series) marked.push_back(s.markers && (!s.line || !crowded));
  double legend_h = 0;
  const std::string legend =
      legend_svg(spec.series, marked, left, 14 + head, spec.width - left - right, &legend_h);
  const double top = 14 + head + legend_h + 6;
  const double height = top + spec.plot_height + bottom;
  const double pw = spec.width - left - right, ph = spec.plot_height;

  // x range: the caller's (plots that share an axis) or the finite data's.
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  if (spec.x_range) {
    x_lo = spec.x_range->first, x_hi = spec.x_range->second;
  } else {
    for (const PlotSeries& s : spec.series)
      for (double x : s.x)
        if (finite(x)) x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
    if (!finite(x_lo)) x_lo = 0, x_hi = 1;
    // Air as on the y axis, so that points at the ends are not cut by the clip.
    const double pad = 0.04 * (x_hi - x_lo);
    x_lo -= pad, x_hi += pad;
  }

  // y range from the finite points and bands (optionally only the last 75 % of x).
  double y_lo = std::numeric_limits<double>::infinity(), y_hi = -y_lo, tail_hi = -y_lo;
  const double tail_from = x_lo + 0.25 * (x_hi - x_lo);
  auto take = [&](double x, double y) {
    if (!finite(x) || !finite(y)) return;
    y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
    if (x >= tail_from) tail_hi = std::max(tail_hi, y);
  };
  for (const PlotSeries& s : spec.series) {
    for (size_t i = 0; i < points(s); ++i) take(s.x[i], s.y[i]);
    if (has_band(s))
      for (size_t i = 0; i < s.x.size(); ++i)
        take(s.x[i], s.band_lo[i]), take(s.x[i], s.band_hi[i]);
  }
  const bool has_data = finite(y_lo);
  bool clipped = false;
  if (has_data && spec.fit_tail && finite(tail_hi) && y_hi - y_lo > 1.5 * (tail_hi - y_lo) &&
      tail_hi > y_lo) {
    y_hi = tail_hi + 0.05 * (tail_hi - y_lo);
    clipped = true;
  }
  if (!has_data) y_lo = 0, y_hi = 1;
  // A little air so that lines do not run along the axes (a constant series would).
  const double pad = 0.04 * (y_hi - y_lo);
  y_lo -= pad, y_hi += pad;
  if (spec.zero_based) y_lo = std::min(0.0, y_lo + pad);
  const Ticks yt = nice_ticks(y_lo, y_hi, 5, true, false);
  const Ticks xt = nice_ticks(x_lo, x_hi, 6, false, spec.x_integer);
  const double xr = x_hi > x_lo ? x_hi - x_lo : 1;
  auto px = [&](double x) { return left + (x - x_lo) / xr * pw; };
  auto py = [&](double y) { return top + ph - (y - yt.lo) / (yt.hi - yt.lo) * ph; };

  // "at step 12" in the description and tooltips.
  const std::string at = spec.x_label.empty() ? "at " : "at " + spec.x_label + " ";
  std::string desc = spec.desc;
  if (spec.describe_last) {
    if (!desc.empty()) desc += ' ';
    desc += "Last values: ";
    for (size_t r = 0; r < spec.series.size(); ++r) {
      const PlotSeries& s = spec.series[r];
      const size_t n = points(s);
      desc += (r ? "; " : "") + s.name + ": ";
      desc += n == 0 ? "no data"
              : !finite(s.y[n - 1])
                  ? fmt::format("not a number {}{:.{}f}", at, s.x[n - 1], spec.x_decimals)
                  : fmt::format("{:.{}f} {}{:.{}f}", s.y[n - 1], spec.y_decimals, at, s.x[n - 1],
                                spec.x_decimals);
    }
    desc += ".";
  }

  std::string out;
  const std::string labelled_by =
      desc.empty() ? spec.id + "-title" : fmt::format("{0}-title {0}-desc", spec.id);
  append(out,
         "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" viewBox=\"0 0 {:.0f} {:.0f}\" "
         "role=\"img\" aria-labelledby=\"{}\">",
         spec.width, height, labelled_by);
  append(out, "<title id=\"{}-title\">{}</title>", spec.id, html_escape(spec.title));
  if (!desc.empty()) append(out, "<desc id=\"{}-desc\">{}</desc>", spec.id, html_escape(desc));
  append(out,
         "<defs><clipPath id=\"{}-clip\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" "
         "height=\"{:.1f}\"/></clipPath></defs>",
         spec.id, left, top - 1, pw, ph + 2);
  if (spec.show_title)
    append(out, "<text class=\"title\" x=\"{:.1f}\" y=\"18\">{}</text>", left,
           html_escape(spec.title));
  out += legend;

  // Grid, ticks and axes.
  append(out, "<g class=\"grid\" aria-hidden=\"true\">");
  for (double v : yt.at)
    append(out, "<line x1=\"{:.1f}\" x2=\"{:.1f}\" y1=\"{:.1f}\" y2=\"{:.1f}\"/>", left, left + pw,
           py(v), py(v));
  append(out, "</g><g class=\"ticks\" aria-hidden=\"true\">");
  for (double v : yt.at)
    append(out,
           "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\" dominant-baseline=\"central\">{}"
           "</text>",
           left - 8, py(v), tick_label(v, yt.decimals));
  for (double v : xt.at) {
    if (v < x_lo - 1e-9 || v > x_hi + 1e-9) continue;
    append(out,
           "<line class=\"tick\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>",
           px(v), top + ph, top + ph + 5);
    append(out, "<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>", px(v),
           top + ph + 19, tick_label(v, xt.decimals));
  }
  append(out, "</g>");
  append(out, "<line class=\"axis\" x1=\"{0:.1f}\" x2=\"{1:.1f}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\"/>",
         left, left + pw, top + ph);
  append(out, "<line class=\"axis\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>",
         left, top, top + ph);
  append(out,
         "<text class=\"axis-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
         left + pw / 2, top + ph + 38, html_escape(spec.x_label));
  append(out,
         "<text class=\"axis-label\" transform=\"translate(16 {:.1f}) rotate(-90)\" "
         "text-anchor=\"middle\">{}</text>",
         top + ph / 2, html_escape(spec.y_label));
  if (!has_data)
    append(out, "<text class=\"empty\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{}</text>",
           left + pw / 2, top + ph / 2, html_escape(spec.empty_note));
  if (clipped)
    append(out, "<text class=\"clip-note\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>",
           left + pw - 6, top + 14, html_escape(spec.tail_note));

  // Data, clipped to the plot area (a fitted tail cuts early values off). Long series keep every
  // stride-th point (and the last) so that the page stays small.
  append(out, "<g clip-path=\"url(#{}-clip)\">", spec.id);
  auto stride_of = [](size_t n) { return std::max<size_t>(1, n / 600); };
  // Bands first, under every line: one polygon per finite stretch.
  for (const PlotSeries& s : spec.series) {
    if (!has_band(s)) continue;
    const size_t n = s.x.size(), stride = stride_of(n);
    std::vector<size_t> stretch;
    auto flush = [&] {
      if (stretch.size() >= 2) {
        std::string pts;
        for (size_t i : stretch)
          append(pts, "{}{:.1f},{:.1f}", pts.empty() ? "" : " ", px(s.x[i]), py(s.band_hi[i]));
        for (auto it = stretch.rbegin(); it != stretch.rend(); ++it)
          append(pts, " {:.1f},{:.1f}", px(s.x[*it]), py(s.band_lo[*it]));
        append(out, "<polygon points=\"{}\" fill=\"{}\" fill-opacity=\"0.18\" stroke=\"none\"/>",
               pts, s.colour);
      }
      stretch.clear();
    };
    for (size_t i = 0; i < n; ++i) {
      if (i % stride != 0 && i + 1 != n) continue;
      if (finite(s.x[i]) && finite(s.band_lo[i]) && finite(s.band_hi[i])) {
        stretch.push_back(i);
      } else {
        flush();
      }
    }
    flush();
  }
  // Lines: one polyline per finite stretch, so a NaN leaves a gap instead of a wrong segment.
  for (size_t r = 0; r < spec.series.size(); ++r) {
    const PlotSeries& s = spec.series[r];
    const size_t n = points(s);
    if (s.line) {
      const size_t stride = stride_of(n);
      std::vector<std::string> segments(1);
      for (size_t i = 0; i < n; ++i) {
        if (i % stride != 0 && i + 1 != n) continue;
        if (!finite(s.x[i]) || !finite(s.y[i])) {
          if (!segments.back().empty()) segments.emplace_back();
          continue;
        }
        append(segments.back(), "{}{:.1f},{:.1f}", segments.back().empty() ? "" : " ", px(s.x[i]),
               py(s.y[i]));
      }
      for (const std::string& pts : segments) {
        if (pts.empty()) continue;
        append(out,
               "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" "
               "stroke-linejoin=\"round\" stroke-linecap=\"round\" stroke-dasharray=\"{}\">"
               "<title>{}</title></polyline>",
               pts, s.colour, s.dash, html_escape(s.name));
      }
    }
    if (marked[r])
      for (size_t i = 0; i < n; ++i)
        if (finite(s.x[i]) && finite(s.y[i]))
          append(out,
                 "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"{}\" fill=\"{}\"><title>{}: {:.{}f} "
                 "{}{:.{}f}</title></circle>",
                 px(s.x[i]), py(s.y[i]), s.line ? 2.8 : 3.5, s.colour, html_escape(s.name), s.y[i],
                 spec.y_decimals, html_escape(at), s.x[i], spec.x_decimals);
  }
  append(out, "</g></svg>");
  return out;
}

}  // namespace switchyard::report
