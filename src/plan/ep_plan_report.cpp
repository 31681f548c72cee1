// Writes the ep-plan report: summary.json and a self-contained index.html.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/plan/ep_plan_report.h>
#include <switchyard/report.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>

#include "report/svg_heatmap.h"

namespace switchyard::plan {

using nlohmann::json;

namespace {

std::string mb(double bytes) {
  return fmt::format("{:.3f}", bytes / 1e6);
}
std::string ms(double seconds) {
  return fmt::format("{:.4f}", seconds * 1e3);
}

json layer_json(const LayerPlanStats& s, double row_bytes) {
  auto bytes = [&](const std::vector<int64_t>& rows) {
    json a = json::array();
    for (int64_t r : rows) a.push_back(double(r) * row_bytes);
    return a;
  };
  return {{"rank_rows", s.rank_rows},
          {"routed_rows", s.routed_rows},
          {"dropped_rows", s.dropped_rows},
          {"max_over_mean", s.max_over_mean},
          {"dispatch_rows",
           {{"pair", {{"intra", s.pair_intra_rows}, {"inter", s.pair_inter_rows}}},
            {"dedup", {{"intra", s.dedup_intra_rows}, {"inter", s.dedup_inter_rows}}}}},
          {"dispatch_bytes",
           {{"pair",
             {{"intra", double(s.pair_intra_rows) * row_bytes},
              {"inter", double(s.pair_inter_rows) * row_bytes}}},
            {"dedup",
             {{"intra", double(s.dedup_intra_rows) * row_bytes},
              {"inter", double(s.dedup_inter_rows) * row_bytes}}}}},
          {"rank_dispatch_bytes",
           {{"pair", {{"sent", bytes(s.pair_sent)}, {"received", bytes(s.pair_recv)}}},
            {"dedup", {{"sent", bytes(s.dedup_sent)}, {"received", bytes(s.dedup_recv)}}}}},
          {"seconds",
           {{"compute", s.compute_s},
            {"dispatch", s.dispatch_s},
            {"combine", s.combine_s},
            {"overlapped", s.overlapped_s},
            {"dedup_dispatch", s.dedup_dispatch_s},
            {"dedup_combine", s.dedup_combine_s},
            {"dedup_overlapped", s.dedup_overlapped_s}}}};
}

// Runs of consecutive layers with the same experts' ranks share one row.
std::string placement_table(const Placement& p) {
  std::string out =
      "<table class=\"placement\"><thead><tr><th>MoE layers</th><th>rank of expert 0, 1, "
      "…</th><th>replicas (expert→rank)</th></tr></thead><tbody>";
  const int64_t E = p.experts;
  auto row_text = [&](int64_t l) {
    std::vector<int32_t> ranks(p.rank.begin() + l * E, p.rank.begin() + (l + 1) * E);
    std::vector<std::string> extra;
    for (int64_t e = 0; e < E; ++e)
      for (int32_t r : p.extra(l, e)) extra.push_back(fmt::format("{}→{}", e, r));
    return std::pair{fmt::format("{}", fmt::join(ranks, " ")),
                     extra.empty() ? std::string("–") : fmt::format("{}", fmt::join(extra, " "))};
  };
  for (int64_t l = 0; l < p.layers;) {
    const auto text = row_text(l);
    int64_t last = l;
    while (last + 1 < p.layers && row_text(last + 1) == text) ++last;
    out += fmt::format("<tr><td>{}</td><td class=\"ids\">{}</td><td class=\"ids\">{}</td></tr>",
                       last == l ? std::to_string(l) : fmt::format("{}–{}", l, last), text.first,
                       text.second);
    l = last + 1;
  }
  return out + "</tbody></table>";
}

}  // namespace

json plan_summary_json(const PlanReport& rep) {
  const CostModel& c = rep.cost;
  json j = {{"sources", rep.sources},
            {"tokens", rep.tokens},
            {"moe_layers", rep.layers},
            {"experts", rep.experts},
            {"k", rep.k},
            {"topology",
             {{"ranks", rep.topo.ranks},
              {"ranks_per_node", rep.topo.ranks_per_node},
              {"nodes", rep.topo.nodes()}}},
            {"workload",
             {{"tokens_per_step", rep.work.tokens_per_step},
              {"capacity_factor",
               rep.work.capacity_factor > 0 ? json(rep.work.capacity_factor) : json(nullptr)}}},
            {"cost_model",
             {{"hidden", c.hidden},
              {"expert_ff", c.expert_ff},
              {"bytes_per_element", c.bytes_per_element},
              {"row_bytes", c.row_bytes()},
              {"link_gbps",
               {{"intra", std::isfinite(c.intra_gbps) ? json(c.intra_gbps) : json(nullptr)},
                {"inter", std::isfinite(c.inter_gbps) ? json(c.inter_gbps) : json(nullptr)}}},
              {"latency_us", {{"intra", c.intra_latency_us}, {"inter", c.inter_latency_us}}},
              {"gemm_gflops", c.gemm_gflops},
              {"gemm_gflops_measured", rep.gflops_measured},
              {"flops_per_row", 6.0 * double(c.hidden) * double(c.expert_ff)}}}};
  json placements = json::array();
  for (size_t i = 0; i < rep.results.size(); ++i) {
    const PlanResult& r = rep.results[i];
    const Placement& p = rep.placements[i];
    json layers = json::array(), ranks = json::array(), replicas = json::array();
    for (const LayerPlanStats& s : r.layers) layers.push_back(layer_json(s, r.row_bytes));
    for (int64_t l = 0; l < p.layers; ++l) {
      ranks.push_back(std::vector<int32_t>(p.rank.begin() + l * p.experts,
                                           p.rank.begin() + (l + 1) * p.experts));
      json extra = json::object();
      for (int64_t e = 0; e < p.experts; ++e)
        if (!p.extra(l, e).empty()) extra[std::to_string(e)] = p.extra(l, e);
      replicas.push_back(extra);
    }
    placements.push_back(
        {{"name", r.placement},
         {"steps", r.steps},
         {"expert_rank", ranks},
         {"replicas", replicas},
         {"skipped_replicas", p.skipped_replicas},
         {"routed_rows", r.routed_rows},
         {"dropped_rows", r.dropped_rows},
         {"dropped_fraction", r.dropped_fraction},
         {"mean_max_over_mean", r.mean_max_over_mean},
         {"max_max_over_mean", r.max_max_over_mean},
         {"bytes_per_step",
          {{"pair",
            {{"intra", r.pair_intra_bytes_per_step}, {"inter", r.pair_inter_bytes_per_step}}},
           {"dedup",
            {{"intra", r.dedup_intra_bytes_per_step}, {"inter", r.dedup_inter_bytes_per_step}}}}},
         {"step_seconds",
          {{"serial", r.step_serial_s},
           {"overlapped", r.step_overlapped_s},
           {"dedup_serial", r.dedup_step_serial_s},
           {"dedup_overlapped", r.dedup_step_overlapped_s}}},
         {"layers", layers}});
  }
  j["placements"] = placements;
  return j;
}

std::string plan_report_html(const PlanReport& rep) {
  using switchyard::html_escape;
  const int64_t L = rep.layers, R = rep.topo.ranks;
  std::string page =
      "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>switchyard ep-plan"
      "</title><style>body{font:14px system-ui,sans-serif;margin:24px;color:#1f2328}"
      "table{border-collapse:collapse;margin:12px 0}th,td{padding:5px 10px;border-bottom:1px "
      "solid #d0d7de;text-align:right}th{color:#57606a;font-weight:600}td.ids{text-align:left;"
      "font-family:ui-monospace,monospace;font-size:12px}figure{display:inline-block;margin:8px "
      "16px 8px 0;vertical-align:top}figcaption{color:#57606a;font-size:12px;max-width:520px}"
      "svg{max-width:540px}.ticks text{fill:#57606a}</style></head><body>";
  page += fmt::format(
      "<h1>Expert-parallel plan</h1><p>{} tokens from {}: {} MoE layers of {} experts, k = {}. "
      "{} ranks, {} per node ({} node{}); {} step{} of {} tokens; capacity factor {}.</p>",
      rep.tokens, html_escape(fmt::format("{}", fmt::join(rep.sources, ", "))), L, rep.experts,
      rep.k, R, rep.topo.ranks_per_node, rep.topo.nodes(), rep.topo.nodes() == 1 ? "" : "s",
      rep.results.empty() ? 0 : rep.results[0].steps,
      !rep.results.empty() && rep.results[0].steps == 1 ? "" : "s",
      rep.work.tokens_per_step > 0 ? std::to_string(rep.work.tokens_per_step) : "all",
      rep.work.capacity_factor > 0 ? fmt::format("{}", rep.work.capacity_factor) : "none");
  page +=
      "<h2>Summary</h2><table id=\"summary\"><thead><tr><th>placement</th><th>max/mean load"
      "</th><th>dropped %</th><th>intra MB/step (pair)</th><th>inter MB/step (pair)</th>"
      "<th>intra MB/step (dedup)</th><th>inter MB/step (dedup)</th><th>step ms (serial)</th>"
      "<th>step ms (overlapped)</th></tr></thead><tbody>";
  for (const PlanResult& r : rep.results)
    page += fmt::format(
        "<tr><td>{}</td><td>{:.3f}</td><td>{:.2f}</td><td>{}</td><td>{}</td><td>{}</td>"
        "<td>{}</td><td>{}</td><td>{}</td></tr>",
        html_escape(r.placement), r.mean_max_over_mean, 100 * r.dropped_fraction,
        mb(r.pair_intra_bytes_per_step), mb(r.pair_inter_bytes_per_step),
        mb(r.dedup_intra_bytes_per_step), mb(r.dedup_inter_bytes_per_step), ms(r.step_serial_s),
        ms(r.step_overlapped_s));
  page +=
      "</tbody></table><p>Load: the mean over layers of max / mean rows per rank. Bytes: "
      "dispatch + combine; pair = one row per (token, expert) off the token's rank, dedup = one "
      "row per (token, destination rank). Times are predictions of the cost model below, not "
      "measurements.</p>";

  // Rank load per layer, one heatmap per placement on a common scale.
  double vmax = 0;
  for (const PlanResult& r : rep.results)
    for (const LayerPlanStats& s : r.layers) {
      const int64_t total = std::accumulate(s.rank_rows.begin(), s.rank_rows.end(), int64_t(0));
      if (total > 0) vmax = std::max(vmax, s.max_over_mean);
    }
  page += "<h2>Rank load per MoE layer</h2>";
  std::vector<std::string> rank_labels, layer_labels;
  for (int64_t r = 0; r < R; ++r) rank_labels.push_back(std::to_string(r));
  for (int64_t l = 0; l < L; ++l) layer_labels.push_back(std::to_string(l));
  for (size_t i = 0; i < rep.results.size(); ++i) {
    const PlanResult& r = rep.results[i];
    report::MatrixHeatmap h;
    h.id = fmt::format("load-{}", i);
    h.title = fmt::format("Rows per rank / mean: {}", r.placement);
    h.desc = fmt::format(
        "{} ranks by {} MoE layers; colour is each rank's computed rows over the layer's mean "
        "per rank.",
        R, L);
    h.row_axis = "rank";
    h.col_axis = "MoE layer";
    h.row_labels = rank_labels;
    h.col_labels = layer_labels;
    h.values.assign(static_cast<size_t>(R * L), NAN);
    for (int64_t l = 0; l < L; ++l) {
      const auto& rows = r.layers[size_t(l)].rank_rows;
      const int64_t total = std::accumulate(rows.begin(), rows.end(), int64_t(0));
      for (int64_t k = 0; k < R; ++k)
        if (total > 0)
          h.values[size_t(k * L + l)] = double(rows[size_t(k)]) * double(R) / double(total);
    }
    h.vmax = vmax > 0 ? vmax : 1;
    h.tooltip_scale = 1;
    h.tooltip_unit = "× mean";
    page += "<figure>" + report::matrix_heatmap_svg(h) +
            fmt::format("<figcaption>{}: max/mean {:.3f} (mean over layers).</figcaption></figure>",
                        html_escape(r.placement), r.mean_max_over_mean);
  }

  page +=
      "<h2>All-to-all bytes per MoE layer</h2><p>Dispatch + combine, all steps, MB; "
      "pair / dedup.</p><table id=\"bytes\"><thead><tr><th>MoE layer</th>";
  for (const PlanResult& r : rep.results)
    page += fmt::format("<th>{0} intra</th><th>{0} inter</th>", html_escape(r.placement));
  page += "</tr></thead><tbody>";
  for (int64_t l = 0; l < L; ++l) {
    page += fmt::format("<tr><td>{}</td>", l);
    for (const PlanResult& r : rep.results) {
      const LayerPlanStats& s = r.layers[size_t(l)];
      const double b = 2 * r.row_bytes;
      page += fmt::format("<td>{} / {}</td><td>{} / {}</td>", mb(b * double(s.pair_intra_rows)),
                          mb(b * double(s.dedup_intra_rows)), mb(b * double(s.pair_inter_rows)),
                          mb(b * double(s.dedup_inter_rows)));
    }
    page += "</tr>";
  }
  page += "</tbody></table>";

  page += "<h2>Placements</h2>";
  for (const Placement& p : rep.placements) {
    page += fmt::format("<h3>{}</h3>", html_escape(p.name));
    if (p.skipped_replicas > 0)
      page += fmt::format(
          "<p>{} requested replicas were not placed (each would have raised its layer's max rank "
          "load).</p>",
          p.skipped_replicas);
    page += placement_table(p);
  }

  const CostModel& c = rep.cost;
  auto bw = [](double v) {
    return std::isfinite(v) ? fmt::format("{} GB/s", v) : std::string("–");
  };
  page += fmt::format(
      "<h2>Cost model</h2><table id=\"cost\"><tbody><tr><th>hidden D</th><td>{}</td></tr>"
      "<tr><th>expert width F</th><td>{}</td></tr><tr><th>bytes per element</th><td>{}</td></tr>"
      "<tr><th>row bytes</th><td>{}</td></tr><tr><th>link intra / inter</th><td>{} / {}</td></tr>"
      "<tr><th>latency intra / inter</th><td>{} / {} µs</td></tr><tr><th>GEMM rate</th>"
      "<td>{:.1f} GFLOP/s ({})</td></tr><tr><th>flops per row</th><td>2·3·D·F = {:.4g}</td></tr>"
      "</tbody></table><p>Compute = max over ranks of rows × 2·3·D·F / rate; each all-to-all "
      "phase = max over ranks of latency × peers + (sent + received bytes) / bandwidth, intra "
      "and inter added; serial step = Σ layers (dispatch + compute + combine), overlapped = Σ "
      "layers max(compute, dispatch + combine). No contention inside switches or NICs, no "
      "kernel launch or packing costs, forward only; not yet validated against measured runs "
      "(docs/distributed.md).</p>",
      c.hidden, c.expert_ff, c.bytes_per_element, c.row_bytes(), bw(c.intra_gbps), bw(c.inter_gbps),
      c.intra_latency_us, c.inter_latency_us, c.gemm_gflops,
      rep.gflops_measured ? "measured in-process with the CPU GEMM" : "given",
      6.0 * double(c.hidden) * double(c.expert_ff));
  page += "</body></html>\n";
  return page;
}

void write_plan_report(const PlanReport& rep, const std::string& out_dir) {
  if (rep.placements.size() != rep.results.size())
    fail("ep-plan: {} placements but {} results", rep.placements.size(), rep.results.size());
  std::error_code ec;
  std::filesystem::create_directories(out_dir, ec);
  if (ec) fail("--out {}: cannot create the folder: {}", out_dir, ec.message());
  const std::filesystem::path dir(out_dir);
  write_file_atomic((dir / "summary.json").string(), plan_summary_json(rep).dump(2) + "\n");
  write_file_atomic((dir / "index.html").string(), plan_report_html(rep));
}

}  // namespace switchyard::plan
