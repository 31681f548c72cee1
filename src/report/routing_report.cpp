#include <fmt/format.h>
#include <fmt/ranges.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/report.h>
#include <switchyard/routing_report.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

#include "report/svg_heatmap.h"

namespace switchyard::report {

using nlohmann::json;

namespace {

// Mutual information (bits) of a joint count table (rows, cols).
double mutual_information(const std::vector<double>& counts, size_t rows, size_t cols) {
  double total = 0;
  for (double c : counts) total += c;
  if (total <= 0) return NAN;
  std::vector<double> pr(rows, 0), pc(cols, 0);
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      pr[r] += counts[r * cols + c] / total;
      pc[c] += counts[r * cols + c] / total;
    }
  double mi = 0;
  for (size_t r = 0; r < rows; ++r)
    for (size_t c = 0; c < cols; ++c) {
      const double p = counts[r * cols + c] / total;
      if (p > 0) mi += p * std::log2(p / (pr[r] * pc[c]));
    }
  return mi;
}

std::vector<double> row_shares(const std::vector<double>& counts, size_t rows, size_t cols) {
  std::vector<double> out(counts.size(), NAN);
  for (size_t r = 0; r < rows; ++r) {
    double sum = 0;
    for (size_t c = 0; c < cols; ++c) sum += counts[r * cols + c];
    if (sum > 0)
      for (size_t c = 0; c < cols; ++c) out[r * cols + c] = counts[r * cols + c] / sum;
  }
  return out;
}

std::string number(double v, int digits = 3) {
  return std::isfinite(v) ? fmt::format("{:.{}f}", v, digits) : std::string("–");
}

}  // namespace

RoutingAnalysis analyse_traces(const std::vector<infer::RoutingTrace>& traces,
                               const std::vector<std::string>& sources) {
  if (traces.empty()) fail("routing-report: no traces given");
  RoutingAnalysis a;
  a.layers = traces[0].layers;
  a.experts = traces[0].experts;
  std::map<std::string, size_t> label_index;
  for (size_t f = 0; f < traces.size(); ++f) {
    const auto& t = traces[f];
    if (t.layers != a.layers || t.experts != a.experts)
      fail("{}: {} MoE layers of {} experts, but {} has {} of {}", sources[f], t.layers, t.experts,
           sources[0], a.layers, a.experts);
    const json labels = t.meta.value("labels", json::array());
    for (const json& l : labels)
      if (l.is_string() && !l.get<std::string>().empty()) label_index[l.get<std::string>()] = 0;
  }
  for (auto& [name, i] : label_index) {
    i = a.labels.size();
    a.labels.push_back(name);
  }
  const size_t L = size_t(a.layers), E = size_t(a.experts), D = a.labels.size();
  std::vector<std::vector<double>> load(L, std::vector<double>(E, 0.0));
  std::vector<std::vector<double>> pair(L > 0 ? L - 1 : 0, std::vector<double>(E * E, 0.0));
  std::vector<std::vector<double>> by_label(L, std::vector<double>(D * E, 0.0));
  std::vector<double> assigned(L, 0.0);
  for (size_t f = 0; f < traces.size(); ++f) {
    const auto& t = traces[f];
    const json labels = t.meta.value("labels", json::array());
    const size_t K = size_t(t.k);
    for (int64_t n = 0; n < t.size(); ++n) {
      ++a.tokens;
      const int64_t seq = t.sequences[size_t(n)];
      int64_t d = -1;
      if (seq >= 0 && seq < int64_t(labels.size()) && labels[size_t(seq)].is_string() &&
          label_index.count(labels[size_t(seq)].get<std::string>()))
        d = int64_t(label_index[labels[size_t(seq)].get<std::string>()]);
      for (size_t l = 0; l < L; ++l) {
        const int32_t* ids = t.ids.data() + (size_t(n) * L + l) * K;
        for (size_t j = 0; j < K; ++j) {
          if (ids[j] < 0) continue;
          load[l][size_t(ids[j])] += 1;
          assigned[l] += 1;
          if (d >= 0) by_label[l][size_t(d) * E + size_t(ids[j])] += 1;
        }
        if (l + 1 < L) {
          const int32_t* next = ids + K;
          for (size_t i = 0; i < K; ++i)
            for (size_t j = 0; j < K; ++j)
              if (ids[i] >= 0 && next[j] >= 0) pair[l][size_t(ids[i]) * E + size_t(next[j])] += 1;
        }
      }
    }
  }
  for (size_t l = 0; l < L; ++l) {
    std::vector<double> share(E, NAN);
    double max = 0;
    for (size_t e = 0; e < E; ++e) {
      if (assigned[l] > 0) share[e] = load[l][e] / assigned[l];
      max = std::max(max, load[l][e]);
    }
    a.load.push_back(share);
    a.experts_per_token.push_back(a.tokens ? assigned[l] / double(a.tokens) : NAN);
    a.max_over_mean.push_back(assigned[l] > 0 ? max / (assigned[l] / double(E)) : NAN);
    a.label_load.push_back(row_shares(by_label[l], D, E));
    a.label_mi.push_back(D >= 2 ? mutual_information(by_label[l], D, E) : NAN);
  }
  for (size_t l = 0; l + 1 < L; ++l) {
    a.affinity.push_back(row_shares(pair[l], E, E));
    a.affinity_mi.push_back(mutual_information(pair[l], E, E));
  }
  return a;
}

json analysis_json(const RoutingAnalysis& a) {
  auto clean = [](const std::vector<double>& v) {
    json out = json::array();
    for (double x : v) out.push_back(std::isfinite(x) ? json(x) : json(nullptr));
    return out;
  };
  json layers = json::array();
  for (size_t l = 0; l < size_t(a.layers); ++l) {
    json j = {{"moe_layer", l},
              {"load", clean(a.load[l])},
              {"experts_per_token", a.experts_per_token[l]},
              {"max_over_mean", a.max_over_mean[l]}};
    if (!a.labels.empty()) {
      j["label_load"] = clean(a.label_load[l]);
      j["label_expert_mi_bits"] = std::isfinite(a.label_mi[l]) ? json(a.label_mi[l]) : json();
    }
    if (l + 1 < size_t(a.layers))
      j["affinity_mi_bits_to_next"] =
          std::isfinite(a.affinity_mi[l]) ? json(a.affinity_mi[l]) : json();
    layers.push_back(j);
  }
  return {{"tokens", a.tokens},
          {"moe_layers", a.layers},
          {"experts", a.experts},
          {"labels", a.labels},
          {"layers", layers}};
}

void write_routing_report(const RoutingAnalysis& a, const std::vector<std::string>& sources,
                          const std::string& out_dir) {
  std::filesystem::create_directories(out_dir);
  const size_t L = size_t(a.layers), E = size_t(a.experts), D = a.labels.size();
  std::vector<std::string> expert_labels, layer_labels;
  for (size_t e = 0; e < E; ++e) expert_labels.push_back(std::to_string(e));
  for (size_t l = 0; l < L; ++l) layer_labels.push_back(std::to_string(l));
  std::string page;
  page +=
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>switchyard routing "
      "report</title><style>body{font:14px system-ui,sans-serif;margin:24px;color:#1f2328}"
      "table{border-collapse:collapse;margin:12px 0}th,td{padding:5px 10px;border-bottom:1px "
      "solid #d0d7de;text-align:right}th{color:#57606a;font-weight:600}figure{display:inline-"
      "block;margin:8px 16px 8px 0;vertical-align:top}figcaption{color:#57606a;font-size:12px;"
      "max-width:520px}svg{max-width:540px}.ticks text{fill:#57606a}</style></head><body>";
  page += fmt::format(
      "<h1>Routing report</h1><p>{} tokens from {} trace{}: {}. {} MoE layers of "
      "{} experts{}.</p>",
      a.tokens, sources.size(), sources.size() == 1 ? "" : "s",
      html_escape(fmt::format("{}", fmt::join(sources, ", "))), L, E,
      D ? fmt::format("; labels {}", html_escape(fmt::format("{}", fmt::join(a.labels, ", "))))
        : std::string(""));
  page +=
      "<table id=\"summary\"><thead><tr><th>MoE layer</th><th>experts per token</th>"
      "<th>max load / mean</th><th>affinity MI to next (bits)</th>";
  if (D >= 2) page += "<th>MI(label; expert) (bits)</th>";
  page += "</tr></thead><tbody>";
  for (size_t l = 0; l < L; ++l) {
    page += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>", l,
                        number(a.experts_per_token[l], 2), number(a.max_over_mean[l], 2),
                        l + 1 < L ? number(a.affinity_mi[l]) : std::string("–"));
    if (D >= 2) page += fmt::format("<td>{}</td>", number(a.label_mi[l]));
    page += "</tr>";
  }
  page += "</tbody></table>";
  // Load: experts × layers.
  MatrixHeatmap load;
  load.id = "load";
  load.title = "Expert load share per MoE layer";
  load.desc = fmt::format(
      "{} experts by {} MoE layers; colour is the share of the layer's "
      "assignments routed to each expert.",
      E, L);
  load.row_axis = "expert";
  load.col_axis = "MoE layer";
  load.row_labels = expert_labels;
  load.col_labels = layer_labels;
  load.values.assign(E * L, NAN);
  double vmax = 0;
  for (size_t l = 0; l < L; ++l)
    for (size_t e = 0; e < E; ++e) {
      load.values[e * L + l] = a.load[l][e];
      if (std::isfinite(a.load[l][e])) vmax = std::max(vmax, a.load[l][e]);
    }
  load.vmax = vmax > 0 ? vmax : 1;
  page += "<h2>Expert load</h2><figure>" + matrix_heatmap_svg(load) +
          "<figcaption>Uniform load would colour every cell at 1/E.</figcaption></figure>";
  // Affinity: the first pairs (all when there are few).
  page += "<h2>Inter-layer affinity</h2>";
  const size_t pairs = std::min<size_t>(a.affinity.size(), 6);
  for (size_t l = 0; l < pairs; ++l) {
    MatrixHeatmap h;
    h.id = fmt::format("affinity-{}", l);
    h.title = fmt::format("P(expert j at MoE layer {} | expert i at MoE layer {})", l + 1, l);
    h.desc = fmt::format("{} by {} conditional probabilities; mutual information {} bits.", E, E,
                         number(a.affinity_mi[l]));
    h.row_axis = fmt::format("expert i at {}", l);
    h.col_axis = fmt::format("expert j at {}", l + 1);
    h.row_labels = h.col_labels = expert_labels;
    h.values = a.affinity[l];
    h.vmax = 0;
    for (double v : h.values)
      if (std::isfinite(v)) h.vmax = std::max(h.vmax, v);
    if (h.vmax <= 0) h.vmax = 1;
    page += "<figure>" + matrix_heatmap_svg(h) +
            fmt::format(
                "<figcaption>Rows sum to 1; independent layers would give rows equal to "
                "layer {}'s load.</figcaption></figure>",
                l + 1);
  }
  if (a.affinity.size() > pairs)
    page +=
        fmt::format("<p>{} more layer pairs are in summary.json.</p>", a.affinity.size() - pairs);
  if (D >= 2) {
    page += "<h2>Specialisation by label</h2>";
    for (size_t l = 0; l < std::min<size_t>(L, 6); ++l) {
      MatrixHeatmap h;
      h.id = fmt::format("labels-{}", l);
      h.title = fmt::format("Expert share per label, MoE layer {}", l);
      h.desc = fmt::format("{} labels by {} experts; MI(label; expert) {} bits.", D, E,
                           number(a.label_mi[l]));
      h.row_axis = "label";
      h.col_axis = "expert";
      h.row_labels = a.labels;
      h.col_labels = expert_labels;
      h.values = a.label_load[l];
      h.vmax = 0;
      for (double v : h.values)
        if (std::isfinite(v)) h.vmax = std::max(h.vmax, v);
      if (h.vmax <= 0) h.vmax = 1;
      page += "<figure>" + matrix_heatmap_svg(h) + "</figure>";
    }
  }
  page += "</body></html>\n";
  write_file_atomic((std::filesystem::path(out_dir) / "index.html").string(), page);
  write_file_atomic((std::filesystem::path(out_dir) / "summary.json").string(),
                    analysis_json(a).dump(2) + "\n");
}

}  // namespace switchyard::report
