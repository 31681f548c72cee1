// `ep-plan` (src/plan/): loads, all-to-all volumes and capacity drops checked by hand on a tiny
// trace, placement properties on random skewed traces (fixed, printed seeds), replication, trace
// round trips, bad flags, and one run of the CLI.
#include <gtest/gtest.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/trace.h>
#include <switchyard/plan/ep_plan.h>
#include <switchyard/plan/ep_plan_report.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "../scratch_dir.h"

namespace {

using switchyard::infer::RoutingTrace;
using switchyard::testing_support::error_of;
using switchyard::testing_support::ScratchDir;
namespace plan = switchyard::plan;

RoutingTrace make_trace(int64_t layers, int64_t experts, int64_t k,
                        const std::vector<int32_t>& ids) {  // ids (N, L, K)
  RoutingTrace t;
  t.layers = layers;
  t.experts = experts;
  t.k = k;
  const int64_t n = int64_t(ids.size()) / (layers * k);
  t.ids = ids;
  t.weights.assign(ids.size(), 0.5f);
  for (int64_t i = 0; i < n; ++i) {
    t.tokens.push_back(100 + i);
    t.positions.push_back(i);
    t.sequences.push_back(0);
  }
  t.meta = {{"format", "switchyard-routing-trace"},  {"version", 1},
            {"model", "/nonexistent/model"},         {"architecture", "test"},
            {"moe_layers", nlohmann::json::array()}, {"experts", experts},
            {"routing", nlohmann::json::array()},    {"labels", nlohmann::json::array()}};
  for (int64_t l = 0; l < layers; ++l) t.meta["moe_layers"].push_back(l);
  return t;
}

// 8 tokens, 2 layers, E = 4, k = 2. Layer 0 mixes; layer 1 sends every token to expert 3.
RoutingTrace tiny_trace() {
  const std::vector<std::vector<int32_t>> layer0 = {{0, 1}, {0, 2}, {2, 3}, {1, -1},
                                                    {0, 3}, {2, 3}, {3, 0}, {1, 2}};
  std::vector<int32_t> ids;
  for (const auto& slots : layer0) {
    ids.insert(ids.end(), slots.begin(), slots.end());
    ids.insert(ids.end(), {3, -1});
  }
  return make_trace(2, 4, 2, ids);
}

plan::CostModel tiny_cost() {
  plan::CostModel c;
  c.hidden = 4;
  c.expert_ff = 2;
  c.bytes_per_element = 2;  // 8 bytes per row
  c.intra_gbps = 2;
  c.inter_gbps = 1;
  c.intra_latency_us = 0.5;
  c.inter_latency_us = 1;
  c.gemm_gflops = 1;
  return c;
}

uint64_t test_seed(uint64_t fallback) {
  if (const char* env = std::getenv("SWITCHYARD_TEST_SEED")) return std::stoull(env);
  return fallback;
}

// Zipf-like skew: expert e drawn with weight 1 / (e' + 1)^s over a per-layer shuffled order.
RoutingTrace random_trace(std::mt19937_64& rng, int64_t n, int64_t layers, int64_t experts,
                          int64_t k, double skew) {
  std::vector<int32_t> ids;
  std::vector<std::vector<double>> weights(static_cast<size_t>(layers));
  for (auto& w : weights) {
    std::vector<int32_t> order(static_cast<size_t>(experts));
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    w.assign(static_cast<size_t>(experts), 0);
    for (int64_t i = 0; i < experts; ++i)
      w[size_t(order[size_t(i)])] = 1.0 / std::pow(double(i + 1), skew);
  }
  for (int64_t t = 0; t < n; ++t)
    for (int64_t l = 0; l < layers; ++l) {
      std::vector<double> w = weights[size_t(l)];
      for (int64_t j = 0; j < k; ++j) {  // k distinct experts
        std::discrete_distribution<int32_t> pick(w.begin(), w.end());
        const int32_t e = pick(rng);
        ids.push_back(e);
        w[size_t(e)] = 0;
      }
    }
  return make_trace(layers, experts, k, ids);
}

int64_t max_rows(const plan::PlanResult& r, size_t layer) {
  const auto& rows = r.layers[layer].rank_rows;
  return *std::max_element(rows.begin(), rows.end());
}

TEST(EpPlan, TokenRanksSplitStepsAndGiveTheRemainderToTheLastRanks) {
  // One step of 8 on 3 ranks: 2, 3, 3.
  EXPECT_EQ(plan::token_ranks(8, 3, 0), (std::vector<int32_t>{0, 0, 1, 1, 1, 2, 2, 2}));
  // Steps of 4 on 2 ranks; the last step has 3 tokens: rank 0 gets 1, rank 1 gets 2.
  EXPECT_EQ(plan::token_ranks(11, 2, 4), (std::vector<int32_t>{0, 0, 1, 1, 0, 0, 1, 1, 0, 1, 1}));
}

TEST(EpPlan, TinyTraceTwoNodesByHand) {
  const RoutingTrace t = tiny_trace();
  const plan::Topology topo{2, 1};  // 2 nodes of one rank: everything moved is inter-node
  const plan::Placement p = plan::contiguous_placement(2, 4, topo);
  EXPECT_EQ(p.rank, (std::vector<int32_t>{0, 0, 1, 1, 0, 0, 1, 1}));
  const plan::CostModel cost = tiny_cost();
  const plan::PlanResult r = plan::evaluate(t, topo, p, {}, cost);
  ASSERT_EQ(r.layers.size(), 2u);
  const plan::LayerPlanStats& l0 = r.layers[0];
  // Tokens 0-3 on rank 0, 4-7 on rank 1; experts 0, 1 on rank 0, 2, 3 on rank 1.
  EXPECT_EQ(l0.rank_rows, (std::vector<int64_t>{7, 8}));
  EXPECT_EQ(l0.routed_rows, 15);
  EXPECT_EQ(l0.dropped_rows, 0);
  EXPECT_EQ(l0.pair_intra_rows, 0);
  EXPECT_EQ(l0.pair_inter_rows, 6);   // 0→1: t1 e2, t2 e2, t2 e3; 1→0: t4 e0, t6 e0, t7 e1
  EXPECT_EQ(l0.dedup_inter_rows, 5);  // t2 sends one row to rank 1 for both of its experts
  EXPECT_EQ(l0.pair_sent, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(l0.pair_recv, (std::vector<int64_t>{3, 3}));
  EXPECT_EQ(l0.dedup_sent, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(l0.dedup_recv, (std::vector<int64_t>{3, 2}));
  EXPECT_DOUBLE_EQ(l0.max_over_mean, 8.0 / 7.5);
  const plan::LayerPlanStats& l1 = r.layers[1];
  EXPECT_EQ(l1.rank_rows, (std::vector<int64_t>{0, 8}));
  EXPECT_EQ(l1.pair_inter_rows, 4);
  EXPECT_EQ(l1.dedup_inter_rows, 4);
  // Bytes per step, dispatch + combine, 8 bytes a row.
  EXPECT_DOUBLE_EQ(r.pair_inter_bytes_per_step, 2.0 * (6 + 4) * 8);
  EXPECT_DOUBLE_EQ(r.dedup_inter_bytes_per_step, 2.0 * (5 + 4) * 8);
  EXPECT_DOUBLE_EQ(r.pair_intra_bytes_per_step, 0);
  // Times: layer 0 compute 8 rows × 2·3·4·2 flops at 1 GFLOP/s; each rank sends 3 and receives 3
  // rows to/from one inter-node peer: 1 µs + 48 bytes / 1 GB/s. Layer 1: rank 1 receives 4 rows.
  const double c0 = 8 * 48 / 1e9, a0 = 1e-6 + 48 / 1e9;
  const double c1 = 8 * 48 / 1e9, a1 = 1e-6 + 32 / 1e9;
  EXPECT_NEAR(l0.compute_s, c0, 1e-18);
  EXPECT_NEAR(l0.dispatch_s, a0, 1e-18);
  EXPECT_NEAR(l0.combine_s, a0, 1e-18);
  EXPECT_NEAR(r.step_serial_s, c0 + 2 * a0 + c1 + 2 * a1, 1e-15);
  EXPECT_NEAR(r.step_overlapped_s, std::max(c0, 2 * a0) + std::max(c1, 2 * a1), 1e-15);
  const double d0 = 1e-6 + 40 / 1e9;  // dedup: each rank sends + receives 5 rows in all
  EXPECT_NEAR(r.layers[0].dedup_dispatch_s, d0, 1e-18);
}

TEST(EpPlan, TinyTraceOneNodeIsAllIntra) {
  const RoutingTrace t = tiny_trace();
  const plan::Topology topo{2, 2};
  const plan::PlanResult r =
      plan::evaluate(t, topo, plan::contiguous_placement(2, 4, topo), {}, tiny_cost());
  EXPECT_EQ(r.layers[0].pair_intra_rows, 6);
  EXPECT_EQ(r.layers[0].dedup_intra_rows, 5);
  EXPECT_EQ(r.layers[0].pair_inter_rows, 0);
  EXPECT_EQ(r.layers[1].pair_intra_rows, 4);
  EXPECT_DOUBLE_EQ(r.pair_intra_bytes_per_step, 2.0 * 10 * 8);
  EXPECT_DOUBLE_EQ(r.pair_inter_bytes_per_step, 0);
  EXPECT_NEAR(r.layers[0].dispatch_s, 0.5e-6 + 48 / 2e9, 1e-18);
}

TEST(EpPlan, CapacityDropsByHand) {
  const RoutingTrace t = tiny_trace();
  const plan::Topology topo{2, 1};
  const plan::Placement p = plan::contiguous_placement(2, 4, topo);
  // C = 1: layer 0 capacity ceil(15 / 4) = 4 (expert loads 4, 3, 4, 4: nothing dropped); layer 1
  // capacity ceil(8 / 4) = 2: expert 3 keeps tokens 0 and 1 (both on rank 0), drops 6.
  plan::PlanResult r = plan::evaluate(t, topo, p, {0, 1.0}, tiny_cost());
  EXPECT_EQ(r.layers[0].dropped_rows, 0);
  EXPECT_EQ(r.layers[1].dropped_rows, 6);
  EXPECT_EQ(r.layers[1].rank_rows, (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(r.layers[1].pair_inter_rows, 2);
  EXPECT_DOUBLE_EQ(r.dropped_fraction, 6.0 / 23.0);
  // C = 0.5: layer 0 capacity ceil(7.5 / 4) = 2 per expert, 8 rows kept of 15. Kept in token
  // order: e0 t0 t1, e1 t0 t3, e2 t1 t2, e3 t2 t4; layer 1 capacity 1.
  r = plan::evaluate(t, topo, p, {0, 0.5}, tiny_cost());
  EXPECT_EQ(r.layers[0].dropped_rows, 7);
  EXPECT_EQ(r.layers[0].rank_rows, (std::vector<int64_t>{4, 4}));
  // Moved: t1 e2, t2 e2, t2 e3 from rank 0; t4's e3 is on its own rank 1.
  EXPECT_EQ(r.layers[0].pair_inter_rows, 3);
  EXPECT_EQ(r.layers[0].pair_sent, (std::vector<int64_t>{3, 0}));
  EXPECT_EQ(r.layers[1].dropped_rows, 7);
  // Steps of 4 tokens: rank 0 holds t0 t1 t4 t5. Layer 1, C = 1: capacity ceil(4 / 4) = 1 per
  // step, kept t0 and t4, both moved to rank 1.
  r = plan::evaluate(t, topo, p, {4, 1.0}, tiny_cost());
  EXPECT_EQ(r.steps, 2);
  EXPECT_EQ(r.layers[1].dropped_rows, 6);
  EXPECT_EQ(r.layers[1].pair_inter_rows, 2);
  EXPECT_EQ(r.layers[1].pair_sent, (std::vector<int64_t>{2, 0}));
}

TEST(EpPlan, BalancedNeverWorseThanContiguousAndHoldsEOverR) {
  const uint64_t seed = test_seed(20240611);
  std::printf("seed %llu (set SWITCHYARD_TEST_SEED to change)\n", (unsigned long long)seed);
  std::mt19937_64 rng(seed);
  struct Case {
    int64_t experts, ranks, per_node, k;
    double skew;
  };
  for (const Case& c : {Case{8, 2, 1, 2, 1.2}, Case{16, 4, 2, 2, 1.0}, Case{32, 8, 4, 4, 1.5},
                        Case{64, 8, 8, 6, 0.8}, Case{16, 16, 4, 1, 2.0}}) {
    const RoutingTrace t = random_trace(rng, 300, 3, c.experts, c.k, c.skew);
    const plan::Topology topo{c.ranks, c.per_node};
    const plan::Workload work;
    const plan::RouteCounts counts = plan::count_routes(t, topo, work);
    const plan::Placement base = plan::contiguous_placement(t.layers, t.experts, topo);
    const plan::Placement bal = plan::balanced_placement(counts, topo);
    const plan::PlanResult rb = plan::evaluate(t, topo, base, work, tiny_cost());
    const plan::PlanResult rp = plan::evaluate(t, topo, bal, work, tiny_cost());
    for (int64_t l = 0; l < t.layers; ++l) {
      SCOPED_TRACE(::testing::Message() << "E " << c.experts << " R " << c.ranks << " layer " << l);
      std::vector<int64_t> held(static_cast<size_t>(c.ranks), 0);
      for (int64_t e = 0; e < t.experts; ++e) ++held[size_t(bal.primary(l, e))];
      for (int64_t h : held) EXPECT_EQ(h, c.experts / c.ranks);
      EXPECT_LE(max_rows(rp, size_t(l)), max_rows(rb, size_t(l)));
      // Same rows overall: placement moves work, it does not create it.
      EXPECT_EQ(std::accumulate(rp.layers[size_t(l)].rank_rows.begin(),
                                rp.layers[size_t(l)].rank_rows.end(), int64_t(0)),
                rp.layers[size_t(l)].routed_rows);
    }
  }
}

TEST(EpPlan, ReplicationLowersOrKeepsMaxLoad) {
  const uint64_t seed = test_seed(7);
  std::printf("seed %llu\n", (unsigned long long)seed);
  std::mt19937_64 rng(seed);
  for (int64_t redundant : {1, 2, 4, 8}) {
    const RoutingTrace t = random_trace(rng, 400, 2, 16, 2, 1.5);
    const plan::Topology topo{4, 2};
    const plan::RouteCounts counts = plan::count_routes(t, topo, {});
    plan::Placement p = plan::balanced_placement(counts, topo);
    const plan::PlanResult before = plan::evaluate(t, topo, p, {}, tiny_cost());
    plan::add_replicas(p, counts, topo, redundant);
    const plan::PlanResult after = plan::evaluate(t, topo, p, {}, tiny_cost());
    int64_t placed = 0;
    for (int64_t l = 0; l < t.layers; ++l) {
      EXPECT_LE(max_rows(after, size_t(l)), max_rows(before, size_t(l)))
          << "redundant " << redundant;
      for (int64_t e = 0; e < t.experts; ++e) {
        placed += int64_t(p.extra(l, e).size());
        for (int32_t r : p.extra(l, e)) EXPECT_NE(r, p.primary(l, e));
      }
    }
    EXPECT_EQ(placed + p.skipped_replicas, redundant * t.layers);
  }
  // A hot expert whose tokens are split over two nodes: its copy on the other node takes that
  // node's rows, halving the hot rank's load and the cross-node bytes.
  std::vector<int32_t> ids;
  for (int i = 0; i < 8; ++i) ids.insert(ids.end(), {0, i % 2 ? 1 : 2});
  const RoutingTrace hot = make_trace(1, 4, 2, ids);
  const plan::Topology topo{2, 1};
  const plan::RouteCounts counts = plan::count_routes(hot, topo, {});
  plan::Placement p = plan::contiguous_placement(1, 4, topo);
  const plan::PlanResult before = plan::evaluate(hot, topo, p, {}, tiny_cost());
  plan::add_replicas(p, counts, topo, 1);
  EXPECT_EQ(p.extra(0, 0), (std::vector<int32_t>{1}));
  const plan::PlanResult after = plan::evaluate(hot, topo, p, {}, tiny_cost());
  EXPECT_EQ(before.layers[0].rank_rows, (std::vector<int64_t>{12, 4}));
  EXPECT_EQ(after.layers[0].rank_rows, (std::vector<int64_t>{8, 8}));
  // Before: t0, t2 → e2 on rank 1; t4-t7 → e0 and t5, t7 → e1 on rank 0. After: e0 stays local.
  EXPECT_EQ(before.layers[0].pair_inter_rows, 8);
  EXPECT_EQ(after.layers[0].pair_inter_rows, 4);
}

TEST(EpPlan, PickHolderPrefersOwnRankThenOwnNode) {
  const plan::Topology topo{4, 2};
  EXPECT_EQ(plan::pick_holder(1, {0, 1}, topo), 1);
  EXPECT_EQ(plan::pick_holder(1, {0, 3}, topo), 0);
  EXPECT_EQ(plan::pick_holder(2, {0, 3}, topo), 3);
  EXPECT_EQ(plan::pick_holder(2, {0, 1}, topo), 0);
}

TEST(EpPlan, TraceRoundTripAndConcatenation) {
  ScratchDir dir;
  const RoutingTrace t = tiny_trace();
  const std::string path = dir.path("t.safetensors");
  switchyard::infer::write_trace(path, t);
  const RoutingTrace back = switchyard::infer::read_trace(path);
  EXPECT_EQ(back.ids, t.ids);
  EXPECT_EQ(back.layers, 2);
  EXPECT_EQ(back.experts, 4);
  const plan::Topology topo{2, 1};
  const auto p = plan::contiguous_placement(2, 4, topo);
  EXPECT_EQ(plan::evaluate(back, topo, p, {}, tiny_cost()).layers[0].rank_rows,
            plan::evaluate(t, topo, p, {}, tiny_cost()).layers[0].rank_rows);
  // Two copies, the second with k = 1 (padded): 16 tokens, K = 2.
  RoutingTrace narrow = make_trace(2, 4, 1, std::vector<int32_t>(8 * 2, 3));
  const RoutingTrace both = plan::concat_traces({t, narrow}, {"a.safetensors", "b.safetensors"});
  EXPECT_EQ(both.size(), 16);
  EXPECT_EQ(both.k, 2);
  EXPECT_EQ(both.ids[size_t((8 * 2 + 1) * 2)], 3);
  EXPECT_EQ(both.ids[size_t((8 * 2 + 1) * 2 + 1)], -1);
}

TEST(EpPlan, MismatchedTracesAndBadFlagsNameTheField) {
  const RoutingTrace t = tiny_trace();
  const RoutingTrace other = make_trace(3, 4, 1, std::vector<int32_t>(3, 0));
  std::string msg = error_of([&] { plan::concat_traces({t, other}, {"a.st", "b.st"}); });
  EXPECT_NE(msg.find("b.st"), std::string::npos) << msg;
  EXPECT_NE(msg.find("a.st"), std::string::npos) << msg;
  EXPECT_NE(msg.find("layers"), std::string::npos) << msg;
  const RoutingTrace wide = make_trace(2, 8, 1, std::vector<int32_t>(2, 0));
  msg = error_of([&] { plan::concat_traces({t, wide}, {"a.st", "c.st"}); });
  EXPECT_NE(msg.find("'experts'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("c.st"), std::string::npos) << msg;

  msg = error_of([&] { plan::validate(plan::Topology{3, 1}, 4); });
  EXPECT_NE(msg.find("--ranks 3"), std::string::npos) << msg;
  msg = error_of([&] { plan::validate(plan::Topology{0, 1}, 4); });
  EXPECT_NE(msg.find("--ranks 0"), std::string::npos) << msg;
  msg = error_of([&] { plan::validate(plan::Topology{4, 3}, 4); });
  EXPECT_NE(msg.find("--ranks-per-node 3"), std::string::npos) << msg;
  msg = error_of([&] { plan::parse_link_pair("--link", "intra=fast,inter=5"); });
  EXPECT_NE(msg.find("--link"), std::string::npos) << msg;
  EXPECT_NE(msg.find("fast"), std::string::npos) << msg;
  msg = error_of([&] { plan::parse_link_pair("--link", "intra=4,outer=5"); });
  EXPECT_NE(msg.find("outer"), std::string::npos) << msg;
  const plan::LinkPair ok = plan::parse_link_pair("--link", "inter=12.5");
  EXPECT_TRUE(std::isnan(ok.intra));
  EXPECT_DOUBLE_EQ(ok.inter, 12.5);
  plan::CostModel cost = tiny_cost();
  cost.inter_gbps = NAN;
  msg = error_of([&] { plan::validate(cost, plan::Topology{2, 1}); });
  EXPECT_NE(msg.find("--link inter"), std::string::npos) << msg;
  EXPECT_EQ(error_of([&] { plan::validate(cost, plan::Topology{2, 2}); }), "<no error>");
  cost = tiny_cost();
  cost.hidden = 0;
  msg = error_of([&] { plan::validate(cost, plan::Topology{2, 2}); });
  EXPECT_NE(msg.find("--hidden 0"), std::string::npos) << msg;
  msg = error_of([&] { plan::validate(plan::Workload{0, -1.0}); });
  EXPECT_NE(msg.find("--capacity-factor -1"), std::string::npos) << msg;
  plan::Placement p = plan::contiguous_placement(2, 4, plan::Topology{2, 1});
  msg = error_of([&] {
    plan::add_replicas(p, plan::count_routes(t, plan::Topology{2, 1}, {}), plan::Topology{2, 1}, 9);
  });
  EXPECT_NE(msg.find("--redundant 9"), std::string::npos) << msg;
}

TEST(EpPlan, ReportJsonAndHtml) {
  ScratchDir dir;
  const RoutingTrace t = tiny_trace();
  plan::PlanReport rep;
  rep.sources = {"tiny.safetensors"};
  rep.tokens = t.size();
  rep.layers = 2;
  rep.experts = 4;
  rep.k = 2;
  rep.topo = {2, 1};
  rep.cost = tiny_cost();
  rep.placements.push_back(plan::contiguous_placement(2, 4, rep.topo));
  rep.results.push_back(plan::evaluate(t, rep.topo, rep.placements[0], {}, rep.cost));
  plan::write_plan_report(rep, dir.path("out"));
  const nlohmann::json j =
      nlohmann::json::parse(switchyard::read_file_text(dir.path("out/summary.json")));
  EXPECT_EQ(j["placements"][0]["layers"][0]["rank_rows"], nlohmann::json({7, 8}));
  EXPECT_EQ(j["placements"][0]["layers"][0]["dispatch_bytes"]["pair"]["inter"], 48.0);
  const std::string html = switchyard::read_file_text(dir.path("out/index.html"));
  EXPECT_NE(html.find("<svg"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  // Self-contained: nothing fetched (the SVG namespace URI is a name, not a fetch).
  EXPECT_EQ(html.find("src=\""), std::string::npos);
  EXPECT_EQ(html.find("href=\"http"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
}

#ifdef SWITCHYARD_CLI
// The CLI end to end: exit 0, both files, and a bad flag named on stderr with exit status 1.
TEST(EpPlan, CliRun) {
  ScratchDir dir;
  const std::string trace = dir.path("t.safetensors");
  std::mt19937_64 rng(test_seed(11));
  switchyard::infer::write_trace(trace, random_trace(rng, 64, 2, 8, 2, 1.2));
  const std::string base = std::string(SWITCHYARD_CLI) + " ep-plan --trace " + trace +
                           " --ranks-per-node 2 --link intra=300,inter=25 --hidden 64"
                           " --expert-ff 32 --gemm-gflops 100 --redundant 2";
  int rc = std::system(
      (base + " --ranks 4 --out " + dir.path("out") + " > " + dir.path("stdout.txt") + " 2>&1")
          .c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 0) << switchyard::read_file_text(dir.path("stdout.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir.path("out/summary.json")));
  EXPECT_TRUE(std::filesystem::exists(dir.path("out/index.html")));
  EXPECT_NE(switchyard::read_file_text(dir.path("stdout.txt")).find("balanced+redundant"),
            std::string::npos);
  rc = std::system(
      (base + " --ranks 3 --out " + dir.path("bad") + " 2> " + dir.path("stderr.txt")).c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  EXPECT_NE(switchyard::read_file_text(dir.path("stderr.txt")).find("--ranks 3"),
            std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir.path("bad")));
}
#endif

}  // namespace
