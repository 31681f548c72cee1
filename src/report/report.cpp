// The comparison report (include/switchyard/report.h): reading runs, summary statistics, and the
// hand-written HTML/SVG page and Markdown summary. Everything is inline so the page opens offline.
#include "switchyard/report.h"

#include <fmt/format.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <functional>
#include <iterator>
#include <limits>
#include <map>
#include <set>
#include <string_view>
#include <system_error>
#include <utility>

#include "report/seed_comparison.h"
#include "report/svg_heatmap.h"

namespace switchyard {
namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// fmt::format_to onto a string, keeping fmt's compile-time format checks.
template <typename... Args>
void append(std::string& out, fmt::format_string<Args...> format, Args&&... args) {
  fmt::format_to(std::back_inserter(out), format, std::forward<Args>(args)...);
}

// ---------------------------------------------------------------------------------------------
// Reading

std::string describe_value(const json& v) {
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return fmt::format("{} {}", v.type_name(), text);
}

// Absent reads as nullopt; null as NaN, because nlohmann writes NaN and infinities as null.
std::optional<double> opt_number(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  if (it->is_null()) return kNaN;
  if (!it->is_number())
    fail("{}: field '{}' must be a number, got {}", where, key, describe_value(*it));
  return it->get<double>();
}

double number_or_nan(const json& obj, const char* key, const std::string& where) {
  return opt_number(obj, key, where).value_or(kNaN);
}

double required_number(const json& obj, const char* key, const std::string& where) {
  const std::optional<double> v = opt_number(obj, key, where);
  if (!v) fail("{}: missing field '{}'", where, key);
  return *v;
}

int64_t integer(const json& obj, const char* key, const std::string& where,
                std::optional<int64_t> fallback) {
  const auto it = obj.find(key);
  if (it == obj.end()) {
    if (fallback) return *fallback;
    fail("{}: missing field '{}'", where, key);
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    // Some writers print integral counts as 12.0.
    const double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
  }
  fail("{}: field '{}' must be an integer, got {}", where, key, describe_value(*it));
}

std::vector<double> number_array(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end()) return {};
  if (!it->is_array())
    fail("{}: field '{}' must be an array of numbers, got {}", where, key, describe_value(*it));
  std::vector<double> out;
  out.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const json& v = (*it)[i];
    if (v.is_null()) {
      out.push_back(kNaN);
    } else if (v.is_number()) {
      out.push_back(v.get<double>());
    } else {
      fail("{}: {}[{}] must be a number, got {}", where, key, i, describe_value(v));
    }
  }
  return out;
}

json object_field(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return json::object();
  if (!it->is_object())
    fail("{}: field '{}' must be an object, got {}", where, key, describe_value(*it));
  return *it;
}

LayerMetrics parse_layer(const json& j, size_t index, const std::string& row_where) {
  const std::string where = fmt::format("{}: layers[{}]", row_where, index);
  if (!j.is_object()) fail("{}: must be an object, got {}", where, describe_value(j));
  LayerMetrics m;
  m.layer = int(integer(j, "layer", where, int64_t(index)));
  m.load = number_array(j, "load", where);
  m.max_vio = number_or_nan(j, "max_vio", where);
  m.cv = number_or_nan(j, "cv", where);
  m.dropped_frac = number_or_nan(j, "dropped_frac", where);
  m.entropy = number_or_nan(j, "entropy", where);
  m.experts_per_token = number_or_nan(j, "experts_per_token", where);
  m.fluctuation = opt_number(j, "fluctuation", where);
  m.domain_mi = opt_number(j, "domain_mi", where);
  m.val_load = number_array(j, "val_load", where);
  return m;
}

// "step" is required, and "train_loss" unless the row is an evaluation only (say, at step 0);
// other absent numbers read as NaN so that a trainer that logs less still gets a report. Wrong
// types are always errors.
MetricsRow parse_row(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: expected a JSON object, got {}", where, describe_value(j));
  MetricsRow row;
  row.step = integer(j, "step", where, std::nullopt);
  row.tokens = integer(j, "tokens", where, int64_t(0));
  row.val_loss = opt_number(j, "val_loss", where);
  row.train_loss = row.val_loss ? number_or_nan(j, "train_loss", where)
                                : required_number(j, "train_loss", where);
  row.lr = number_or_nan(j, "lr", where);
  row.aux_loss = number_or_nan(j, "aux_loss", where);
  row.grad_norm = number_or_nan(j, "grad_norm", where);
  row.tokens_per_s = number_or_nan(j, "tokens_per_s", where);
  if (const auto it = j.find("layers"); it != j.end()) {
    if (!it->is_array())
      fail("{}: field 'layers' must be an array, got {}", where, describe_value(*it));
    for (size_t i = 0; i < it->size(); ++i) row.layers.push_back(parse_layer((*it)[i], i, where));
  }
  if (const auto it = j.find("parallel"); it != j.end()) {
    const std::string in = where + " [parallel]";
    if (!it->is_object() || !it->contains("ranks") || !(*it)["ranks"].is_array())
      fail("{}: field 'parallel' must be an object with a 'ranks' array, got {}", where,
           describe_value(*it));
    ParallelMetrics pm;
    for (const json& rank : (*it)["ranks"]) {
      if (!rank.is_object())
        fail("{}: each of 'ranks' must be an object, got {}", in, describe_value(rank));
      pm.dispatch_bytes += required_number(rank, "dispatch_bytes_sent", in);
      pm.combine_bytes += required_number(rank, "combine_bytes_sent", in);
      pm.backward_bytes += required_number(rank, "backward_bytes_sent", in);
      ++pm.ranks;
    }
    pm.all_to_all_share = required_number(*it, "all_to_all_share", in);
    if (const auto phase = it->find("all_to_all_share_by_phase"); phase != it->end()) {
      if (!phase->is_object())
        fail("{}: field 'all_to_all_share_by_phase' must be an object, got {}", in,
             describe_value(*phase));
      pm.share_by_phase = std::array<double, 3>{required_number(*phase, "dispatch", in),
                                                required_number(*phase, "combine", in),
                                                required_number(*phase, "backward", in)};
    }
    pm.expert_rows_imbalance = required_number(*it, "expert_rows_imbalance", in);
    pm.step_time_imbalance = required_number(*it, "step_time_imbalance", in);
    row.parallel = pm;
  }
  return row;
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

// ---------------------------------------------------------------------------------------------
// Statistics

bool finite(double v) {
  return std::isfinite(v);
}

double mean_finite(const std::vector<double>& v) {
  double sum = 0;
  int n = 0;
  for (double x : v)
    if (finite(x)) sum += x, ++n;
  return n ? sum / n : kNaN;
}

// Mean over a row's layers of one statistic (NaN-skipping; NaN when none is known).
double layer_mean(const MetricsRow& row, const std::function<double(const LayerMetrics&)>& get) {
  std::vector<double> v;
  for (const LayerMetrics& l : row.layers) v.push_back(get(l));
  return mean_finite(v);
}

double opt_or_nan(const std::optional<double>& v) {
  return v.value_or(kNaN);
}

// Per-step series are noisy at small batch sizes; plots and "final" values use an EMA whose span
// grows with the run (about a twentieth of it, at most 50 steps).
double ema_beta(size_t n) {
  const double window = std::clamp(double(n) / 20.0, 1.0, 50.0);
  return 1.0 - 1.0 / window;
}

std::vector<double> ema(const std::vector<double>& v, double beta) {
  std::vector<double> out(v.size(), kNaN);
  double state = kNaN;
  for (size_t i = 0; i < v.size(); ++i) {
    if (finite(v[i])) state = finite(state) ? beta * state + (1 - beta) * v[i] : v[i];
    out[i] = state;
  }
  return out;
}

// Mean over the last tenth of the values (at least one): single steps are too noisy to rank by.
double tail_mean(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  const size_t n = std::max<size_t>(1, v.size() / 10);
  return mean_finite(std::vector<double>(v.end() - std::ptrdiff_t(n), v.end()));
}

double median_finite(std::vector<double> v) {
  std::erase_if(v, [](double x) { return !finite(x); });
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

// Per-run series derived from the rows, shared by the table and the plots.
struct Derived {
  std::vector<double> steps;
  std::vector<double> train_loss_ema;
  std::vector<double> max_vio;  // mean over layers
  std::vector<double> max_vio_ema;
  std::vector<double> dropped;
  std::vector<double> experts_per_token;
  std::vector<double> experts_per_token_ema;
  std::vector<double> entropy;
  // Evaluation steps.
  std::vector<double> eval_steps, val_loss, fluct_steps, fluctuation, mi_steps, domain_mi;
  double beta = 0;
};

Derived derive(const RunData& run) {
  Derived d;
  std::vector<double> train;
  for (const MetricsRow& row : run.rows) {
    d.steps.push_back(double(row.step));
    train.push_back(row.train_loss);
    d.max_vio.push_back(layer_mean(row, [](const LayerMetrics& l) { return l.max_vio; }));
    d.dropped.push_back(layer_mean(row, [](const LayerMetrics& l) { return l.dropped_frac; }));
    d.experts_per_token.push_back(
        layer_mean(row, [](const LayerMetrics& l) { return l.experts_per_token; }));
    d.entropy.push_back(layer_mean(row, [](const LayerMetrics& l) { return l.entropy; }));
    if (row.val_loss) {
      d.eval_steps.push_back(double(row.step));
      d.val_loss.push_back(*row.val_loss);
    }
    const double fl =
        layer_mean(row, [](const LayerMetrics& l) { return opt_or_nan(l.fluctuation); });
    if (finite(fl)) d.fluct_steps.push_back(double(row.step)), d.fluctuation.push_back(fl);
    const double mi =
        layer_mean(row, [](const LayerMetrics& l) { return opt_or_nan(l.domain_mi); });
    if (finite(mi)) d.mi_steps.push_back(double(row.step)), d.domain_mi.push_back(mi);
  }
  d.beta = ema_beta(run.rows.size());
  d.train_loss_ema = ema(train, d.beta);
  d.max_vio_ema = ema(d.max_vio, d.beta);
  d.experts_per_token_ema = ema(d.experts_per_token, d.beta);
  return d;
}

struct Summary {
  double final_val = kNaN, best_val = kNaN, final_train = kNaN, max_vio_mean = kNaN,
         max_vio_final = kNaN, dropped = kNaN, experts_per_token = kNaN, entropy = kNaN,
         fluctuation = kNaN, domain_mi = kNaN, tokens_per_s = kNaN;
};

Summary summarize(const RunData& run, const Derived& d) {
  Summary s;
  for (double v : d.val_loss)
    if (finite(v)) s.best_val = finite(s.best_val) ? std::min(s.best_val, v) : v;
  if (!d.val_loss.empty()) s.final_val = d.val_loss.back();  // a diverged run shows NaN
  if (!d.train_loss_ema.empty()) s.final_train = d.train_loss_ema.back();
  s.max_vio_mean = mean_finite(d.max_vio);
  s.max_vio_final = tail_mean(d.max_vio);
  s.dropped = mean_finite(d.dropped);
  s.experts_per_token = tail_mean(d.experts_per_token);
  s.entropy = tail_mean(d.entropy);
  if (!d.fluctuation.empty()) s.fluctuation = d.fluctuation.back();
  if (!d.domain_mi.empty()) s.domain_mi = d.domain_mi.back();
  std::vector<double> tps;
  for (const MetricsRow& row : run.rows) tps.push_back(row.tokens_per_s);
  s.tokens_per_s = median_finite(tps);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Text helpers

}  // namespace

std::string html_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

// Markdown table cells: pipes end cells, newlines end rows, and raw HTML would render.
std::string md_escape(std::string_view s) {
  auto word = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) != 0; };
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    switch (c) {
      case '|':
        out += "\\|";
        break;
      case '\n':
      case '\r':
        out += ' ';
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '_':
        // Only at a word's edge can '_' start emphasis; "deepseek_v3" stays readable.
        if (i == 0 || !word(s[i - 1]) || i + 1 == s.size() || !word(s[i + 1])) out += '\\';
        out += c;
        break;
      case '*':
      case '`':
      case '[':
      case ']':
      case '\\':
        out += '\\', out += c;
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string json_text(const json& v) {
  return v.is_string() ? v.get<std::string>()
                       : v.dump(-1, ' ', false, json::error_handler_t::replace);
}

// "mixtral · k=2 · losses={...}" from a layer.json object.
std::string router_text(const json& router) {
  std::string out = router.contains("router") ? json_text(router["router"]) : "";
  for (const auto& [key, value] : router.items()) {
    if (key == "router") continue;
    if (!out.empty()) out += " · ";
    out += key + "=" + json_text(value);
  }
  return out;
}

std::string thousands(double v) {
  if (!finite(v)) return "—";
  const std::string digits = fmt::format("{:.0f}", std::fabs(v));
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return (v < 0 ? "-" : "") + out;
}

std::string human_count(double v) {
  if (!finite(v) || v <= 0) return "—";
  const char* units[] = {"", " k", " M", " G", " T"};
  int u = 0;
  while (v >= 1000 && u < 4) v /= 1000, ++u;
  const int decimals = u == 0 ? 0 : v < 10 ? 2 : v < 100 ? 1 : 0;
  return fmt::format("{:.{}f}{}", v, decimals, units[u]);
}

std::string seconds_text(double s) {
  if (!finite(s)) return "running";
  if (s < 120) return fmt::format("{:.1f} s", s);
  if (s < 7200) return fmt::format("{:.1f} min", s / 60);
  return fmt::format("{:.2f} h", s / 3600);
}

// Okabe & Ito's colour-blind-safe palette, the low-contrast yellow last; past eight runs the
// colours repeat with a dash pattern.
constexpr std::array<const char*, 8> kPalette = {"#0072B2", "#D55E00", "#009E73", "#CC79A7",
                                                 "#E69F00", "#56B4E9", "#000000", "#F0E442"};
const char* run_colour(size_t i) {
  return kPalette[i % kPalette.size()];
}
const char* run_dash(size_t i) {
  static constexpr std::array<const char*, 3> dashes = {"", "7 4", "2 3"};
  return dashes[(i / kPalette.size()) % dashes.size()];
}

// ---------------------------------------------------------------------------------------------
// SVG line plots

struct Series {
  std::vector<double> x, y;
};

struct PlotSpec {
  std::string id;     // unique in the page (element ids)
  std::string title;  // also the svg's <title>
  std::string note;   // shown under the title
  std::string y_label;
  std::vector<Series> series;  // one per run, in run order
  bool markers = false;        // circles at the points (sparse evaluation series)
  bool zero_based = false;     // the y axis starts at 0 (non-negative statistics)
  bool fit_tail = false;       // fit y to the last 75% of steps (early losses dwarf the rest)
  int value_decimals = 3;
};

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

std::string tick_label(double v, int decimals) {
  if (decimals == 0 && std::fabs(v) >= 10000) return thousands(v);
  return fmt::format("{:.{}f}", v, decimals);
}

// Approximate text width at 12 px in the system font, for laying out legends.
double text_width(std::string_view s, double px = 12) {
  return 0.58 * px * double(s.size());
}

constexpr double kPlotW = 440, kPlotH = 220;

std::string legend_svg(const std::vector<std::string>& names, const std::vector<size_t>& styles,
                       bool markers, double x0, double y0, double width, double* height) {
  std::string out;
  double x = x0, y = y0;
  for (size_t i = 0; i < names.size(); ++i) {
    const double w = 30 + text_width(names[i]) + 18;
    if (x > x0 && x + w > x0 + width) x = x0, y += 20;
    fmt::format_to(std::back_inserter(out),
                   "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"{}\" "
                   "stroke-width=\"2.5\" stroke-dasharray=\"{}\"/>",
                   x, y, x + 22, y, run_colour(styles[i]), run_dash(styles[i]));
    if (markers)
      fmt::format_to(std::back_inserter(out),
                     "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3\" fill=\"{}\"/>", x + 11, y,
                     run_colour(styles[i]));
    fmt::format_to(std::back_inserter(out),
                   "<text x=\"{:.1f}\" y=\"{:.1f}\" dominant-baseline=\"central\" "
                   "class=\"legend\">{}</text>",
                   x + 30, y, html_escape(names[i]));
    x += w;
  }
  *height = y - y0 + 20;
  return out;
}

std::string line_plot_svg(const PlotSpec& spec, const std::vector<std::string>& names,
                          const std::vector<size_t>& styles, double x_lo, double x_hi) {
  double legend_h = 0;
  const double left = 58, right = 14, bottom = 44;
  // Markers only while they stay apart.
  bool markers = spec.markers;
  for (const Series& s : spec.series) markers = markers && s.x.size() <= 60;
  const std::string legend =
      legend_svg(names, styles, markers, left, 14, kPlotW - left - right, &legend_h);
  const double top = 14 + legend_h + 6;
  const double height = top + kPlotH + bottom;
  const double pw = kPlotW - left - right, ph = kPlotH;

  // y range from the finite points (optionally only the last 75% of steps).
  double y_lo = std::numeric_limits<double>::infinity(), y_hi = -y_lo, tail_hi = -y_lo;
  const double tail_from = x_lo + 0.25 * (x_hi - x_lo);
  for (const Series& s : spec.series)
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (!finite(s.y[i])) continue;
      y_lo = std::min(y_lo, s.y[i]), y_hi = std::max(y_hi, s.y[i]);
      if (s.x[i] >= tail_from) tail_hi = std::max(tail_hi, s.y[i]);
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
  const Ticks xt = nice_ticks(x_lo, x_hi, 6, false, true);
  const double xr = x_hi > x_lo ? x_hi - x_lo : 1;
  auto px = [&](double x) { return left + (x - x_lo) / xr * pw; };
  auto py = [&](double y) { return top + ph - (y - yt.lo) / (yt.hi - yt.lo) * ph; };

  std::string desc = "One line per run. Last values: ";
  for (size_t r = 0; r < spec.series.size(); ++r) {
    const Series& s = spec.series[r];
    desc += (r ? "; " : "") + names[r] + ": ";
    desc += s.y.empty()           ? "no data"
            : !finite(s.y.back()) ? fmt::format("not a number at step {:.0f}", s.x.back())
                                  : fmt::format("{:.{}f} at step {:.0f}", s.y.back(),
                                                spec.value_decimals, s.x.back());
  }
  desc += ".";

  std::string out;
  append(out,
         "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" viewBox=\"0 0 {:.0f} {:.0f}\" "
         "role=\"img\" aria-labelledby=\"{}-title {}-desc\">",
         kPlotW, height, spec.id, spec.id);
  append(out, "<title id=\"{}-title\">{}</title><desc id=\"{}-desc\">{}</desc>", spec.id,
         html_escape(spec.title), spec.id, html_escape(desc));
  append(out,
         "<defs><clipPath id=\"{}-clip\"><rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" "
         "height=\"{:.1f}\"/></clipPath></defs>",
         spec.id, left, top - 1, pw, ph + 2);
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
           top + ph + 19, tick_label(v, 0));
  }
  append(out, "</g>");
  append(out, "<line class=\"axis\" x1=\"{0:.1f}\" x2=\"{1:.1f}\" y1=\"{2:.1f}\" y2=\"{2:.1f}\"/>",
         left, left + pw, top + ph);
  append(out, "<line class=\"axis\" x1=\"{0:.1f}\" x2=\"{0:.1f}\" y1=\"{1:.1f}\" y2=\"{2:.1f}\"/>",
         left, top, top + ph);
  append(out,
         "<text class=\"axis-label\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">step</text>",
         left + pw / 2, top + ph + 38);
  append(out,
         "<text class=\"axis-label\" transform=\"translate(16 {:.1f}) rotate(-90)\" "
         "text-anchor=\"middle\">{}</text>",
         top + ph / 2, html_escape(spec.y_label));
  if (!has_data)
    append(
        out,
        "<text class=\"empty\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">no data yet</text>",
        left + pw / 2, top + ph / 2);
  if (clipped)
    append(
        out,
        "<text class=\"clip-note\" x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">y axis fitted to "
        "the last 75 % of steps</text>",
        left + pw - 6, top + 14);

  // Data: one polyline per finite stretch, so a NaN leaves a gap instead of a wrong segment.
  append(out, "<g clip-path=\"url(#{}-clip)\">", spec.id);
  for (size_t r = 0; r < spec.series.size(); ++r) {
    const Series& s = spec.series[r];
    const size_t stride = std::max<size_t>(1, s.x.size() / 600);  // keeps long runs small
    std::vector<std::string> segments(1);
    for (size_t i = 0; i < s.x.size(); ++i) {
      if (i % stride != 0 && i + 1 != s.x.size()) continue;
      if (!finite(s.y[i])) {
        if (!segments.back().empty()) segments.emplace_back();
        continue;
      }
      fmt::format_to(std::back_inserter(segments.back()), "{}{:.1f},{:.1f}",
                     segments.back().empty() ? "" : " ", px(s.x[i]), py(s.y[i]));
    }
    for (const std::string& points : segments) {
      if (points.empty()) continue;
      append(out,
             "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\" "
             "stroke-linejoin=\"round\" stroke-linecap=\"round\" stroke-dasharray=\"{}\">"
             "<title>{}</title></polyline>",
             points, run_colour(styles[r]), run_dash(styles[r]), html_escape(names[r]));
    }
    if (markers)
      for (size_t i = 0; i < s.x.size(); ++i)
        if (finite(s.y[i]))
          append(out,
                 "<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.8\" fill=\"{}\"><title>{}: {:.{}f} at "
                 "step {:.0f}</title></circle>",
                 px(s.x[i]), py(s.y[i]), run_colour(styles[r]), html_escape(names[r]), s.y[i],
                 spec.value_decimals, s.x[i]);
  }
  append(out, "</g></svg>");
  return out;
}

// ---------------------------------------------------------------------------------------------
// SVG heatmaps

using report::viridis;

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
    picked = rows;
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

struct ColourScale {
  double vmax = 1;
  bool saturates = false;  // some shares exceed vmax
};

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
  for (size_t i = 0; i < size_t(report::kViridisStops); ++i)
    append(out, "<stop offset=\"{:.3f}\" stop-color=\"{}\"/>",
           double(i) / double(size_t(report::kViridisStops) - 1),
           viridis(double(i) / double(size_t(report::kViridisStops) - 1)));
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

// ---------------------------------------------------------------------------------------------
// Summary table

struct Cell {
  std::string text;
  bool best = false;
};

struct Column {
  std::string header;
  std::string help;  // tooltip and footnote
  int better = 0;    // -1: lower is better, +1: higher is better, 0: neither
};

struct Table {
  std::vector<Column> columns;  // the first is the run's name
  std::vector<std::vector<Cell>> rows;
};

Table summary_table(const std::vector<RunData>& runs, const std::vector<Summary>& sums) {
  struct Numeric {
    Column column;
    std::function<double(const Summary&)> get;
    std::function<std::string(double)> format;
  };
  auto fixed = [](int decimals) {
    return [decimals](double v) { return fmt::format("{:.{}f}", v, decimals); };
  };
  auto percent = [](int decimals) {
    return [decimals](double v) { return fmt::format("{:.{}f} %", 100 * v, decimals); };
  };
  const std::vector<Numeric> numeric = {
      {{"Final val loss", "validation loss at the last evaluation", -1},
       [](const Summary& s) { return s.final_val; },
       fixed(4)},
      {{"Best val loss", "lowest validation loss at any evaluation", -1},
       [](const Summary& s) { return s.best_val; },
       fixed(4)},
      {{"Final train loss", "training loss, EMA-smoothed, at the last step", -1},
       [](const Summary& s) { return s.final_train; },
       fixed(4)},
      {{"MaxVio mean", "max over experts of load / mean load − 1, mean over layers and steps", -1},
       [](const Summary& s) { return s.max_vio_mean; },
       fixed(3)},
      {{"MaxVio final", "MaxVio, mean over layers and the last 10 % of steps", -1},
       [](const Summary& s) { return s.max_vio_final; },
       fixed(3)},
      {{"Dropped", "share of token-expert assignments dropped, mean over layers and steps", -1},
       [](const Summary& s) { return s.dropped; },
       percent(2)},
      {{"Experts/token", "mean experts per token, mean over layers and the last 10 % of steps", 0},
       [](const Summary& s) { return s.experts_per_token; },
       fixed(2)},
      {{"Router entropy", "router entropy, mean over layers and the last 10 % of steps", 0},
       [](const Summary& s) { return s.entropy; },
       fixed(3)},
      {{"Fluctuation",
        "share of probe tokens whose top-1 expert changed since the previous evaluation (last "
        "evaluation, mean over layers)",
        -1},
       [](const Summary& s) { return s.fluctuation; },
       percent(1)},
      {{"Domain MI",
        "mutual information between domain and chosen expert in bits (last "
        "evaluation, mean over layers)",
        1},
       [](const Summary& s) { return s.domain_mi; },
       fixed(3)},
      {{"Tokens/s", "training throughput, median over steps", 1},
       [](const Summary& s) { return s.tokens_per_s; },
       [](double v) { return thousands(v); }},
  };

  Table t;
  t.columns.push_back({"Router", "run name", 0});
  for (const Numeric& n : numeric) t.columns.push_back(n.column);
  t.columns.push_back({"Params / active", "parameters in the model / active per token", 0});
  t.rows.resize(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) t.rows[r].push_back({runs[r].name, false});
  for (const Numeric& n : numeric) {
    // The best value as displayed, so that runs equal at the shown precision share the mark.
    std::optional<double> best;
    int known = 0;
    for (const Summary& s : sums) {
      const double v = n.get(s);
      if (!finite(v)) continue;
      ++known;
      if (!best || (n.column.better < 0 ? v < *best : v > *best)) best = v;
    }
    const std::string best_text = best ? n.format(*best) : "";
    // When every known value ties, marking them all would say nothing.
    int ties = 0;
    for (const Summary& s : sums) ties += finite(n.get(s)) && n.format(n.get(s)) == best_text;
    const bool rank = n.column.better != 0 && known >= 2 && ties < known;
    for (size_t r = 0; r < runs.size(); ++r) {
      const double v = n.get(sums[r]);
      const std::string text = finite(v) ? n.format(v) : "—";
      t.rows[r].push_back({text, rank && text == best_text});
    }
  }
  for (size_t r = 0; r < runs.size(); ++r)
    t.rows[r].push_back({fmt::format("{} / {}", human_count(double(runs[r].params)),
                                     human_count(double(runs[r].active_params))),
                         false});
  return t;
}

// ---------------------------------------------------------------------------------------------
// Settings shared by all runs

// Keys of one run.json object (model or train) with their value when all runs agree.
std::vector<std::pair<std::string, std::string>> common_settings(
    const std::vector<RunData>& runs, const std::function<const json&(const RunData&)>& get,
    std::map<size_t, std::vector<std::string>>* differences, const std::string& prefix) {
  std::set<std::string> keys;
  for (const RunData& run : runs)
    for (const auto& [key, value] : get(run).items())
      // The router differs by design; a trainer may copy the model, the run's name, group and
      // output folder into the training settings, which say nothing shared.
      if (key != "router" && key != "model" && key != "name" && key != "group" && key != "out")
        keys.insert(key);
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& key : keys) {
    std::set<std::string> values;
    for (const RunData& run : runs)
      values.insert(get(run).contains(key) ? json_text(get(run)[key]) : "—");
    if (values.size() == 1) {
      out.emplace_back(key, *values.begin());
    } else {
      out.emplace_back(key, "varies by run");
      for (size_t r = 0; r < runs.size(); ++r)
        (*differences)[r].push_back(
            fmt::format("{}{}={}", prefix, key,
                        get(runs[r]).contains(key) ? json_text(get(runs[r])[key]) : "—"));
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The page

constexpr const char* kCss = R"CSS(
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
svg text { font-family: inherit; font-size: 11px; fill: #4a5263; }
svg text.legend { font-size: 12px; fill: var(--fg); }
svg text.axis-label { font-size: 12px; fill: var(--muted); }
svg text.empty, svg text.clip-note { font-size: 12px; fill: #8a93a5; font-style: italic; }
svg .grid line { stroke: #edf0f3; stroke-width: 1; }
svg line.axis { stroke: #8c95a6; stroke-width: 1; }
svg line.tick { stroke: #8c95a6; stroke-width: 1; }
svg line.uniform { stroke: #1c2230; stroke-width: 1.5; }
footer { color: var(--muted); font-size: 12px; margin-top: 18px; }
footer dl { font-size: 12px; }
@media print { body { background: #fff; } .card { box-shadow: none; break-inside: avoid; } }
)CSS";

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

struct Page {
  std::vector<Derived> derived;
  std::vector<Summary> sums;
  Table table;
  std::vector<std::pair<std::string, std::string>> model_settings, train_settings, data_settings;
  std::map<size_t, std::vector<std::string>> differences;  // run index → settings unlike others
  report::SeedComparison seeds;  // final validation loss over the seeds of each group
  // Per run, the index of its colour and dash (run_colour, run_dash): the run's own, or with
  // several seeds per group the group's colour and a dash per seed, so the spread reads at once.
  std::vector<size_t> styles;
};

Page analyse(const std::vector<RunData>& runs, const ReportOptions& options) {
  Page p;
  std::vector<report::SeededValue> finals;
  for (const RunData& run : runs) {
    p.derived.push_back(derive(run));
    p.sums.push_back(summarize(run, p.derived.back()));
    finals.push_back({run.group, run.seed, p.sums.back().final_val});
  }
  p.seeds = report::compare_seeds(finals, options.baseline);
  std::map<std::string, size_t> group_index, seen;
  for (size_t r = 0; r < runs.size(); ++r) {
    if (!p.seeds.any_repeated) {
      p.styles.push_back(r);
      continue;
    }
    const size_t g = group_index.emplace(runs[r].group, group_index.size()).first->second;
    p.styles.push_back(g % kPalette.size() + kPalette.size() * (seen[runs[r].group]++ % 3));
  }
  p.table = summary_table(runs, p.sums);
  p.model_settings = common_settings(
      runs, [](const RunData& r) -> const json& { return r.model; }, &p.differences, "model.");
  p.train_settings = common_settings(
      runs, [](const RunData& r) -> const json& { return r.train; }, &p.differences, "train.");
  std::set<std::string> domains, per_step;
  for (const RunData& run : runs) {
    std::string d;
    for (const std::string& name : run.domains) d += (d.empty() ? "" : ", ") + name;
    domains.insert(d.empty() ? "none" : d);
    per_step.insert(run.tokens_per_step > 0 ? thousands(double(run.tokens_per_step)) : "—");
  }
  p.data_settings.emplace_back("domains", domains.size() == 1 ? *domains.begin() : "varies by run");
  p.data_settings.emplace_back("tokens per step",
                               per_step.size() == 1 ? *per_step.begin() : "varies by run");
  return p;
}

// Means over the steps of a run across ranks (null for a one-process run).
std::optional<ParallelMetrics> parallel_means(const RunData& run) {
  ParallelMetrics m;
  m.expert_rows_imbalance = m.step_time_imbalance = 0;
  int n = 0;
  for (const MetricsRow& row : run.rows) {
    if (!row.parallel) continue;
    const ParallelMetrics& p = *row.parallel;
    m.ranks = p.ranks;
    m.dispatch_bytes += p.dispatch_bytes;
    m.combine_bytes += p.combine_bytes;
    m.backward_bytes += p.backward_bytes;
    m.all_to_all_share += p.all_to_all_share;
    if (p.share_by_phase) {
      if (!m.share_by_phase) m.share_by_phase = std::array<double, 3>{};
      for (size_t i = 0; i < 3; ++i) (*m.share_by_phase)[i] += (*p.share_by_phase)[i];
    }
    m.expert_rows_imbalance += p.expert_rows_imbalance;
    m.step_time_imbalance += p.step_time_imbalance;
    ++n;
  }
  if (n == 0) return std::nullopt;
  for (double* v : {&m.dispatch_bytes, &m.combine_bytes, &m.backward_bytes, &m.all_to_all_share,
                    &m.expert_rows_imbalance, &m.step_time_imbalance})
    *v /= n;
  if (m.share_by_phase)
    for (double& v : *m.share_by_phase) v /= n;
  return m;
}

// The "Across seeds" table: one row per group, the paired difference from the baseline group.
std::vector<std::vector<std::string>> seed_rows(const report::SeedComparison& s) {
  auto pm = [](double mean, double sd) {
    if (!finite(mean)) return std::string("—");
    return finite(sd) ? fmt::format("{:.4f} ± {:.4f}", mean, sd) : fmt::format("{:.4f}", mean);
  };
  std::vector<std::vector<std::string>> rows;
  for (const report::GroupSummary& g : s.groups) {
    std::vector<std::string> row = {g.group, fmt::format("{}", g.n), pm(g.mean, g.sd)};
    if (g.group == s.baseline) {
      row.insert(row.end(), {"—", "—", "baseline"});
    } else {
      const report::PairedDifference* d = nullptr;
      for (const auto& x : s.paired)
        if (x.group == g.group) d = &x;
      row.push_back(fmt::format("{} ({} paired)", pm(d->mean, d->sd), d->n));
      row.push_back(d->n >= 2 ? fmt::format("[{:+.4f}, {:+.4f}]", d->lo, d->hi) : "—");
      row.push_back(d->n < 2            ? "too few seeds"
                    : !d->outside_noise ? "within seed noise"
                    : d->mean < 0       ? "lower loss, outside seed noise"
                                        : "higher loss, outside seed noise");
    }
    rows.push_back(row);
  }
  return rows;
}

std::vector<std::string> seed_headers(const report::SeedComparison& s) {
  return {"Group",
          "Seeds",
          "Final val loss (mean ± sd)",
          "Δ vs " + s.baseline + " (mean ± sd)",
          "95 % interval of Δ",
          "Verdict"};
}

// The cells of the "Across ranks" table, one row per parallel run.
std::vector<std::vector<std::string>> parallel_rows(const std::vector<RunData>& runs) {
  std::vector<std::vector<std::string>> rows;
  for (const RunData& run : runs)
    if (const auto m = parallel_means(run))
      rows.push_back(
          {run.name, fmt::format("{}", m->ranks), fmt::format("{:.2f}", m->dispatch_bytes / 1e6),
           fmt::format("{:.2f}", m->combine_bytes / 1e6),
           fmt::format("{:.2f}", m->backward_bytes / 1e6),
           fmt::format("{:.1f} %", 100 * m->all_to_all_share) +
               (m->share_by_phase
                    ? fmt::format(" (dispatch {:.1f}, combine {:.1f}, backward {:.1f})",
                                  100 * (*m->share_by_phase)[0], 100 * (*m->share_by_phase)[1],
                                  100 * (*m->share_by_phase)[2])
                    : std::string()),
           fmt::format("{:.3f}", m->expert_rows_imbalance),
           fmt::format("{:.3f}", m->step_time_imbalance)});
  return rows;
}

const std::vector<std::string> kParallelHeaders = {"Run",
                                                   "Ranks",
                                                   "Dispatch MB/step",
                                                   "Combine MB/step",
                                                   "Backward MB/step",
                                                   "All-to-all share",
                                                   "Expert-rows imbalance",
                                                   "Step-time imbalance"};

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
         html_escape(names_line), kCss);
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

  // Line plots.
  std::vector<std::string> names;
  for (const RunData& run : runs) names.push_back(run.name);
  double beta = 0;
  for (const Derived& d : p.derived) beta = std::max(beta, d.beta);
  const std::string smoothing =
      beta > 0 ? fmt::format("EMA-smoothed (β = {:.2f})", beta) : std::string("per step");
  std::vector<PlotSpec> plots;
  auto add_plot = [&](PlotSpec spec, auto xs, auto ys) {
    for (const Derived& d : p.derived) spec.series.push_back({d.*xs, d.*ys});
    plots.push_back(std::move(spec));
  };
  add_plot({"plot-val",
            "Validation loss",
            "At each evaluation (markers).",
            "validation loss",
            {},
            true,
            false,
            true,
            4},
           &Derived::eval_steps, &Derived::val_loss);
  add_plot(
      {"plot-train", "Training loss", smoothing + ".", "training loss", {}, false, false, true, 4},
      &Derived::steps, &Derived::train_loss_ema);
  add_plot({"plot-maxvio",
            "MaxVio",
            smoothing + "; 0 is perfect balance.",
            "MaxVio",
            {},
            false,
            true,
            false,
            3},
           &Derived::steps, &Derived::max_vio_ema);
  add_plot({"plot-ept",
            "Experts per token",
            smoothing + ".",
            "experts per token",
            {},
            false,
            false,
            false,
            2},
           &Derived::steps, &Derived::experts_per_token_ema);
  bool any_fluct = false, any_mi = false;
  for (const Derived& d : p.derived)
    any_fluct |= !d.fluctuation.empty(), any_mi |= !d.domain_mi.empty();
  if (any_fluct)
    add_plot({"plot-fluct",
              "Routing fluctuation",
              "Probe tokens whose top-1 expert changed since the last evaluation.",
              "fluctuation",
              {},
              true,
              true,
              false,
              3},
             &Derived::fluct_steps, &Derived::fluctuation);
  if (any_mi)
    add_plot({"plot-mi",
              "Domain–expert mutual information",
              "In bits; higher means more specialisation by domain.",
              "mutual information (bits)",
              {},
              true,
              true,
              false,
              3},
             &Derived::mi_steps, &Derived::domain_mi);
  append(out,
         "<section class=\"card\" aria-labelledby=\"curves-h\"><h2 id=\"curves-h\">Training curves"
         "</h2><p class=\"lede\">Against training step, one colour per run (per group over "
         "several seeds, one dash per seed); routing statistics are means over the MoE layers."
         "</p><div class=\"grid\">");
  for (const PlotSpec& spec : plots)
    append(out, "<figure><figcaption><h3>{}</h3><p>{}</p></figcaption>{}</figure>",
           html_escape(spec.title), html_escape(spec.note),
           line_plot_svg(spec, names, p.styles, x_lo, x_hi));
  append(out, "</div></section>\n");

  // Heatmaps, one shared colour scale so that runs compare at a glance. The scale stops at three
  // times the uniform share so that one collapsed expert does not wash out the rest.
  std::vector<Heatmap> maps;
  double max_share = 0;
  size_t max_experts = 0;
  for (int layer : layers)
    for (size_t r = 0; r < runs.size(); ++r) {
      maps.push_back(build_heatmap(runs[r], r, layer));
      max_experts = std::max(max_experts, maps.back().experts);
      for (const auto& col : maps.back().shares)
        for (double v : col)
          if (finite(v)) max_share = std::max(max_share, v);
    }
  ColourScale scale;
  if (max_experts > 0) {
    const double e = double(max_experts);
    scale.vmax = std::clamp(max_share, std::min(1.0, 2.0 / e), std::min(1.0, 3.0 / e));
    scale.saturates = max_share > scale.vmax + 1e-12;
  }
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
    for (const std::string& h : kParallelHeaders) append(out, "<th>{}</th>", html_escape(h));
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

std::string markdown(const std::vector<RunData>& runs, const Page& p) {
  std::string out = "# Router comparison\n\n";
  auto settings_line = [](const std::vector<std::pair<std::string, std::string>>& items) {
    std::string s;
    for (const auto& [key, value] : items) s += (s.empty() ? "" : ", ") + key + " " + value;
    return s.empty() ? std::string("not recorded") : s;
  };
  fmt::format_to(std::back_inserter(out), "- Model: {}\n- Training: {}\n- Data: {}\n\n",
                 md_escape(settings_line(p.model_settings)),
                 md_escape(settings_line(p.train_settings)),
                 md_escape(settings_line(p.data_settings)));
  // fmt rather than operator+ chains: GCC 12 at -O3 warns falsely (-Wrestrict) about those.
  std::string rule = "|";
  out += "|";
  for (size_t c = 0; c < p.table.columns.size(); ++c) {
    const Column& col = p.table.columns[c];
    append(out, " {}{} |", md_escape(col.header),
           col.better < 0   ? " ↓"
           : col.better > 0 ? " ↑"
                            : "");
    rule += c == 0 ? "---|" : "---:|";
  }
  append(out, "\n{}\n", rule);
  for (const auto& row : p.table.rows) {
    out += "|";
    for (const Cell& cell : row)
      append(out, " {1}{0}{1} |", md_escape(cell.text), cell.best ? "**" : "");
    out += "\n";
  }
  out +=
      "\nBold: best in its column. MaxVio final, experts per token and entropy average the last "
      "10 % of steps; final train loss is EMA-smoothed.\n\n## Runs\n\n";
  for (size_t r = 0; r < runs.size(); ++r) {
    const RunData& run = runs[r];
    std::string line =
        fmt::format("- {}: router {}; params {} (active {}); ", md_escape(run.name),
                    md_escape(router_text(run.router)), human_count(double(run.params)),
                    human_count(double(run.active_params)));
    line +=
        run.rows.empty() ? "no steps logged" : fmt::format("{} steps", run.rows.back().step + 1);
    line += run.wall_seconds ? " in " + seconds_text(*run.wall_seconds) : " (running)";
    if (const auto it = p.differences.find(r); it != p.differences.end())
      for (const std::string& d : it->second) line += "; " + md_escape(d);
    out += line + "\n";
  }
  if (p.seeds.any_repeated) {
    append(out, "\n## Across seeds (final val loss; Δ paired by seed against {})\n\n|",
           md_escape(p.seeds.baseline));
    const auto headers = seed_headers(p.seeds);
    for (const std::string& h : headers) append(out, " {} |", md_escape(h));
    out += "\n|";
    for (size_t c = 0; c < headers.size(); ++c) out += "---|";
    out += "\n";
    for (const auto& row : seed_rows(p.seeds)) {
      out += "|";
      for (const std::string& cell : row) append(out, " {} |", md_escape(cell));
      out += "\n";
    }
  }
  if (const auto rows = parallel_rows(runs); !rows.empty()) {
    out += "\n## Across ranks\n\n|";
    for (const std::string& h : kParallelHeaders) append(out, " {} |", md_escape(h));
    out += "\n|";
    for (size_t c = 0; c < kParallelHeaders.size(); ++c) out += "---|";
    out += "\n";
    for (const auto& row : rows) {
      out += "|";
      for (const std::string& cell : row) append(out, " {} |", md_escape(cell));
      out += "\n";
    }
  }
  return out;
}

}  // namespace

RunData load_run(const std::string& dir) {
  namespace fs = std::filesystem;
  RunData run;
  run.dir = dir;
  const std::string meta_path = (fs::path(dir) / "run.json").string();
  const json meta = parse_json_strict(read_file_text(meta_path), meta_path);
  if (!meta.is_object())
    fail("{}: expected a JSON object, got {}", meta_path, describe_value(meta));
  const auto name = meta.find("name");
  if (name == meta.end()) fail("{}: missing field 'name'", meta_path);
  if (!name->is_string())
    fail("{}: field 'name' must be a string, got {}", meta_path, describe_value(*name));
  run.name = name->get<std::string>();
  run.group = run.name;
  if (const auto g = meta.find("group"); g != meta.end()) {
    if (!g->is_string())
      fail("{}: field 'group' must be a string, got {}", meta_path, describe_value(*g));
    run.group = g->get<std::string>();
  }
  run.router = object_field(meta, "router", meta_path);
  run.model = object_field(meta, "model", meta_path);
  run.train = object_field(meta, "train", meta_path);
  run.params = integer(meta, "params", meta_path, int64_t(0));
  run.active_params = integer(meta, "active_params", meta_path, int64_t(0));
  run.tokens_per_step = integer(meta, "tokens_per_step", meta_path, int64_t(0));
  run.seed = uint64_t(integer(run.train, "seed", meta_path + " [train]", int64_t(0)));
  if (const auto w = opt_number(meta, "wall_seconds", meta_path); w && finite(*w))
    run.wall_seconds = *w;
  if (const auto it = meta.find("domains"); it != meta.end() && !it->is_null()) {
    if (!it->is_array())
      fail("{}: field 'domains' must be an array of strings, got {}", meta_path,
           describe_value(*it));
    for (size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string())
        fail("{}: domains[{}] must be a string, got {}", meta_path, i, describe_value((*it)[i]));
      run.domains.push_back((*it)[i].get<std::string>());
    }
  }

  const std::string metrics_path = (fs::path(dir) / "metrics.jsonl").string();
  const std::string text = read_file_text(metrics_path);
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool complete = end != std::string::npos;
    if (!complete) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = fmt::format("{}:{}", metrics_path, line_no);
    json j;
    try {
      j = parse_json_strict(line, where);
    } catch (const Error&) {
      if (!complete) break;  // the trainer is still writing this line
      throw;
    }
    MetricsRow row = parse_row(j, where);
    // A resumed run logs again from its checkpoint: the later lines win.
    while (!run.rows.empty() && run.rows.back().step >= row.step) run.rows.pop_back();
    run.rows.push_back(std::move(row));
  }
  return run;
}

void write_report(const std::vector<RunData>& runs, const std::string& out_dir,
                  const ReportOptions& options) {
  if (runs.empty()) fail("report: no runs to compare");
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) fail("cannot create report folder '{}': {}", out_dir, ec.message());
  const Page page = analyse(runs, options);
  const std::string dir = std::filesystem::path(out_dir).string();
  write_file_atomic((std::filesystem::path(dir) / "index.html").string(), html_page(runs, page));
  write_file_atomic((std::filesystem::path(dir) / "summary.md").string(), markdown(runs, page));
}

}  // namespace switchyard
