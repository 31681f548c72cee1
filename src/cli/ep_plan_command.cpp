// `switchyard ep-plan`: expert-parallel placement and all-to-all cost from routing traces
// (docs/distributed.md, section "ep-plan").
#include <fmt/format.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/trace.h>
#include <switchyard/plan/ep_plan.h>
#include <switchyard/plan/ep_plan_report.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "kernels/cpu/kernels.h"

namespace switchyard::cli {

namespace {

// hidden_size and the expert width from the model folder the trace names, when readable.
struct ModelDims {
  int64_t hidden = 0, expert_ff = 0;
  std::string source;
};

ModelDims model_dims(const nlohmann::json& meta) {
  ModelDims d;
  if (!meta.contains("model") || !meta["model"].is_string()) return d;
  const std::filesystem::path config =
      std::filesystem::path(meta["model"].get<std::string>()) / "config.json";
  std::error_code ec;
  if (!std::filesystem::is_regular_file(config, ec)) return d;
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file_text(config.string()));
  } catch (const std::exception&) {
    return d;  // unreadable: the flags are then required
  }
  auto number = [&](const char* key) -> int64_t {
    return j.contains(key) && j[key].is_number_integer() ? j[key].get<int64_t>() : 0;
  };
  d.hidden = number("hidden_size");
  d.expert_ff = number("moe_intermediate_size");
  if (d.expert_ff <= 0) d.expert_ff = number("intermediate_size");
  d.source = config.string();
  return d;
}

// Best of several timed (256, F, D) products: C (256, F) = A (256, D) · B (D, F).
double measure_gemm_gflops(int64_t F, int64_t D) {
  constexpr int64_t M = 256;
  std::vector<float> a(static_cast<size_t>(M * D), 0.5f), b(static_cast<size_t>(D * F), 0.25f);
  std::vector<float> c(static_cast<size_t>(M * F), 0.0f);
  auto once = [&] {
    cpu::gemm(false, false, M, F, D, 1.0f, a.data(), D, b.data(), F, 0.0f, c.data(), F);
  };
  once();  // warm up (threads, pages)
  double best = INFINITY, spent = 0;
  for (int i = 0; i < 50 && (i < 3 || spent < 0.3); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    once();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::min(best, s);
    spent += s;
  }
  return 2.0 * double(M) * double(F) * double(D) / std::max(best, 1e-9) / 1e9;
}

std::string mb(double bytes) {
  return fmt::format("{:.3f}", bytes / 1e6);
}

}  // namespace

int run_ep_plan(const EpPlanFlags& f) {
  std::vector<infer::RoutingTrace> loaded;
  for (const std::string& path : f.traces) loaded.push_back(infer::read_trace(path));
  const infer::RoutingTrace trace = plan::concat_traces(loaded, f.traces);
  loaded.clear();

  plan::Topology topo{f.ranks, f.ranks_per_node};
  plan::validate(topo, trace.experts);
  plan::Workload work;
  if (f.tokens_per_step != EpPlanFlags::kUnset) {
    if (f.tokens_per_step < 1)
      fail("--tokens-per-step {}: must be at least 1 (leave it out for all tokens)",
           f.tokens_per_step);
    work.tokens_per_step = f.tokens_per_step;
  }
  if (f.capacity_factor != EpPlanFlags::kUnsetReal) {
    if (!std::isfinite(f.capacity_factor) || f.capacity_factor <= 0)
      fail("--capacity-factor {}: must be a positive number", f.capacity_factor);
    work.capacity_factor = f.capacity_factor;
  }
  plan::validate(work);

  plan::CostModel cost;
  const ModelDims dims = model_dims(trace.meta);
  const std::string model = trace.meta.contains("model") && trace.meta["model"].is_string()
                                ? trace.meta["model"].get<std::string>()
                                : std::string();
  auto dimension = [&](int64_t flag, int64_t from_model, const char* name, const char* key) {
    if (flag != EpPlanFlags::kUnset) return flag;
    if (from_model > 0) return from_model;
    fail("{}: required ({} not found: {})", name, key,
         model.empty() ? std::string("the trace names no model folder")
                       : fmt::format("no readable config.json with it in '{}'", model));
  };
  cost.hidden = dimension(f.hidden, dims.hidden, "--hidden", "hidden_size");
  cost.expert_ff = dimension(f.expert_ff, dims.expert_ff, "--expert-ff",
                             "moe_intermediate_size or intermediate_size");
  cost.bytes_per_element = f.bytes_per_element;
  const plan::LinkPair link = plan::parse_link_pair("--link", f.link);
  cost.intra_gbps = link.intra;
  cost.inter_gbps = link.inter;
  if (!f.latency.empty()) {
    const plan::LinkPair lat = plan::parse_link_pair("--latency-us", f.latency);
    cost.intra_latency_us = std::isnan(lat.intra) ? 0.0 : lat.intra;
    cost.inter_latency_us = std::isnan(lat.inter) ? 0.0 : lat.inter;
  }
  const bool measured = f.gemm_gflops == EpPlanFlags::kUnsetReal;
  cost.gemm_gflops = measured ? 1.0 : f.gemm_gflops;  // check the rest before measuring
  plan::validate(cost, topo);
  if (measured) cost.gemm_gflops = measure_gemm_gflops(cost.expert_ff, cost.hidden);

  const plan::RouteCounts counts = plan::count_routes(trace, topo, work);
  plan::PlanReport rep;
  rep.sources = f.traces;
  rep.tokens = trace.size();
  rep.layers = trace.layers;
  rep.experts = trace.experts;
  rep.k = trace.k;
  rep.topo = topo;
  rep.work = work;
  rep.cost = cost;
  rep.gflops_measured = measured;
  rep.placements.push_back(plan::contiguous_placement(trace.layers, trace.experts, topo));
  rep.placements.push_back(plan::balanced_placement(counts, topo));
  if (f.redundant != 0) {
    plan::Placement p = rep.placements.back();
    p.name = "balanced+redundant";
    plan::add_replicas(p, counts, topo, f.redundant);
    rep.placements.push_back(std::move(p));
  }
  for (const plan::Placement& p : rep.placements)
    rep.results.push_back(plan::evaluate(trace, topo, p, work, cost));

  const int64_t steps = rep.results.front().steps;
  fmt::print(
      "ep-plan: {} tokens from {} trace{}, {} MoE layers of {} experts (k = {}); {} ranks, {} "
      "per node ({} node{}); {} step{} of {} tokens; capacity factor {}\n",
      trace.size(), f.traces.size(), f.traces.size() == 1 ? "" : "s", trace.layers, trace.experts,
      trace.k, topo.ranks, topo.ranks_per_node, topo.nodes(), topo.nodes() == 1 ? "" : "s", steps,
      steps == 1 ? "" : "s",
      work.tokens_per_step > 0 ? std::to_string(work.tokens_per_step) : "all",
      work.capacity_factor > 0 ? fmt::format("{}", work.capacity_factor) : "none");
  auto bw = [](double v) { return std::isnan(v) ? std::string("-") : fmt::format("{}", v); };
  fmt::print(
      "cost model: D = {}{}, F = {}{}, {} bytes per element ({} bytes per row); links intra {} / "
      "inter {} GB/s, latency {} / {} us; GEMM {:.1f} GFLOP/s ({})\n",
      cost.hidden, f.hidden == EpPlanFlags::kUnset ? " (config.json)" : "", cost.expert_ff,
      f.expert_ff == EpPlanFlags::kUnset ? " (config.json)" : "", cost.bytes_per_element,
      cost.row_bytes(), bw(cost.intra_gbps), bw(cost.inter_gbps), cost.intra_latency_us,
      cost.inter_latency_us, cost.gemm_gflops,
      measured ? fmt::format("measured: CPU sgemm (256, {}, {}); pass --gemm-gflops for the real "
                             "device",
                             cost.expert_ff, cost.hidden)
               : std::string("given"));
  fmt::print("{:<20} {:>8} {:>8} {:>22} {:>22} {:>22}\n", "placement", "max/mean", "dropped",
             "intra MB/step", "inter MB/step", "step ms");
  fmt::print("{:<20} {:>8} {:>8} {:>22} {:>22} {:>22}\n", "", "load", "%", "pair | dedup",
             "pair | dedup", "serial | overlapped");
  for (size_t i = 0; i < rep.results.size(); ++i) {
    const plan::PlanResult& r = rep.results[i];
    auto two = [](const std::string& a, const std::string& b) { return a + " | " + b; };
    fmt::print("{:<20} {:>8.3f} {:>8.2f} {:>22} {:>22} {:>22}\n", r.placement, r.mean_max_over_mean,
               100 * r.dropped_fraction,
               two(mb(r.pair_intra_bytes_per_step), mb(r.dedup_intra_bytes_per_step)),
               two(mb(r.pair_inter_bytes_per_step), mb(r.dedup_inter_bytes_per_step)),
               two(fmt::format("{:.4f}", r.step_serial_s * 1e3),
                   fmt::format("{:.4f}", r.step_overlapped_s * 1e3)));
    if (rep.placements[i].skipped_replicas > 0)
      fmt::print("{:<20} {} replica(s) not placed: each would raise its layer's max load\n", "",
                 rep.placements[i].skipped_replicas);
  }
  plan::write_plan_report(rep, f.out);
  fmt::print("ep-plan: → {}/index.html, {}/summary.json\n", f.out, f.out);
  return 0;
}

}  // namespace switchyard::cli
