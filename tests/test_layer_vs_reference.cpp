// The fast float32 MoE layer against the float64 reference (src/reference/), for the cases of
// tests/router_cases.json with a "reference" section (every router and option of
// docs/layer-config.md), at odd sizes; the seed is printed and SWITCHYARD_TEST_SEED replays it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "reference_test_support.h"
#include "router_cases.h"

namespace switchyard {
namespace {

using nlohmann::json;
using namespace testing_support;

std::vector<int64_t> seq_lens_for(int64_t T) {
  if (T == 1) return {1};
  if (T == 7) return {3, 1, 3};
  return {T / 2, 1, T - T / 2 - 1};
}

struct Param {
  RouterCase c;
  int64_t T = 0, E = 0;
};

void PrintTo(const Param& p, std::ostream* os) {
  *os << p.c.name << " T=" << p.T << " E=" << p.E << " " << p.c.config.dump();
}

std::vector<Param> all_params() {
  std::vector<Param> out;
  for (const RouterCase& c : router_cases_for("reference"))
    for (int64_t E : c.sizes.value("Es", std::vector<int64_t>{1, 3, 64}))
      for (int64_t T : {1, 7, 129}) out.push_back({c, T, E});
  return out;
}

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  return info.param.c.name + "_T" + std::to_string(info.param.T) + "_E" +
         std::to_string(info.param.E);
}

// Runs the fast layer and the reference on the same problem and compares everything.
void compare_with_reference(Problem& pb) {
  const int64_t T = pb.T, d = pb.shape.d, E = pb.shape.E;
  MoECache cache;
  std::vector<float> y(static_cast<size_t>(T * d));
  pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
  const std::vector<float> combine = pb.layer->combine_matrix(cache);
  const reference::Result ref = pb.reference(pb.ref_params(), pb.ref_batch());

  const double y_scale = std::max(1e-3, max_abs(ref.y));  // relative to max |y|
  EXPECT_LE(max_abs_diff(y, ref.y), 1e-4 * y_scale)
      << "y differs (max |y| " << max_abs(ref.y) << ")";
  ASSERT_EQ(combine.size(), size_t(T * E));
  EXPECT_LE(max_abs_diff(combine, ref.combine), 1e-4 * std::max(1e-3, max_abs(ref.combine)))
      << "combine differs";
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      EXPECT_EQ(combine[t * E + e] != 0.0f, ref.combine[t * E + e] != 0.0)
          << "routing differs at token " << t << " expert " << e << ": fast " << combine[t * E + e]
          << ", reference " << ref.combine[t * E + e];
  ASSERT_EQ(cache.router_carry.size(), ref.router_carry.size()) << "router carry out";
  EXPECT_LE(max_abs_diff(cache.router_carry, ref.router_carry), 1e-5) << "router carry out differs";
  EXPECT_EQ(cache.stats.tokens_per_expert, ref.tokens_per_expert);
  if (ref.hidden_per_token >= 0.0) {  // per-assignment widths (Duo-LLM, Flextron) or all F
    EXPECT_NEAR(cache.stats.hidden_per_token, ref.hidden_per_token, 1e-9)
        << "hidden units per token differ";
  }
  EXPECT_EQ(cache.stats.dropped, ref.dropped);
  EXPECT_NEAR(cache.stats.aux_loss, ref.aux_loss, 1e-4 * std::abs(ref.aux_loss) + 1e-9);
  if (pb.clamped() && T >= 100) {  // enough rows that the clamps must cut at both ends
    const ClampCounts n = clamp_counts(pb, cache);
    EXPECT_GT(n.gate_top, 0) << "no gate above +swiglu_limit: the case tests no clamp";
    EXPECT_GT(n.up_top, 0) << "no up projection above +swiglu_limit";
    EXPECT_GT(n.up_bottom, 0) << "no up projection below -swiglu_limit";
  }
}

// Every gate row a copy of the first: each token's scores tie exactly (dyadic values, so in
// float32 and float64 alike) and the tie rule decides. A logit function's tensors with one row per
// expert (StableMoE's centroids and token centroids) likewise, their first row made dyadic.
void tie_gate_rows(Problem& pb) {
  const int64_t d = pb.shape.d;
  for (int64_t r = 1; r < pb.R && !pb.gate.empty(); ++r)
    std::copy(pb.gate.begin(), pb.gate.begin() + d, pb.gate.begin() + r * d);
  std::mt19937_64 rng(17);
  const std::vector<RouterTensorSpec>& specs = pb.layer->router_tensor_specs();
  for (size_t i = 0; i < specs.size(); ++i) {
    if (specs[i].shape.size() != 2 || specs[i].shape[0] != pb.shape.E) continue;
    std::vector<float>& t = pb.router[i];
    const int64_t cols = specs[i].shape[1];
    for (int64_t j = 0; j < cols; ++j) t[size_t(j)] = dyadic(rng);
    for (int64_t r = 1; r < pb.shape.E; ++r)
      std::copy(t.begin(), t.begin() + cols, t.begin() + r * cols);
  }
}

class LayerVsReference : public ::testing::TestWithParam<Param> {};

TEST_P(LayerVsReference, Forward) {
  SCOPED_TRACE(seed_trace());
  const Param& p = GetParam();
  SCOPED_TRACE("config " + p.c.config.dump());
  std::mt19937_64 rng = test_rng();
  json config = p.c.config;
  config["seed"] = std::uniform_int_distribution<int64_t>(0, 1 << 30)(rng);
  ProblemOptions o;
  o.T = p.T;
  o.E = p.E;
  o.Fs = p.c.sizes.value("Fs", int64_t(0));
  if (p.c.sizes.value("sequences", false)) o.seq_lens = seq_lens_for(p.T);
  o.global_counts = p.c.sizes.value("global_counts", false);
  o.gate_bias = p.c.sizes.value("gate_bias", false);
  o.shared_gate = p.c.sizes.value("shared_gate", false);
  o.router_carry = p.c.sizes.value("router_carry", true);
  Problem pb = make_problem(config, o, rng);
  if (p.c.sizes.value("ties", false))
    tie_gate_rows(pb);
  else
    ASSERT_TRUE(separate_routing(pb, rng)) << "could not draw well-separated routing inputs";
  compare_with_reference(pb);
}

INSTANTIATE_TEST_SUITE_P(Routers, LayerVsReference, ::testing::ValuesIn(all_params()), param_name);

TEST(LayerVsReferenceCoverage, EveryRegisteredRouterHasCases) {
  expect_every_router_has_cases("reference");
}

// Some expert receives no token (E = 64, T = 7) and both paths agree on it.
TEST(LayerVsReferenceEdge, ExpertsWithoutTokens) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  ProblemOptions o;
  o.T = 7;
  o.E = 64;
  Problem pb = make_problem({{"router", "mixtral"}}, o, rng);
  ASSERT_TRUE(separate_routing(pb, rng));
  compare_with_reference(pb);
  const reference::Result ref = pb.reference(pb.ref_params(), pb.ref_batch());
  int64_t empty = 0;
  for (int64_t c : ref.tokens_per_expert) empty += c == 0;
  EXPECT_GE(empty, 64 - 14);
}

// ---------------------------------------------------------------------------------------------
// Exact ties: identical gate rows (or identical tokens) give exactly equal scores in float32 and
// float64 (dyadic values); the lower index must win in both paths.

Problem tied_problem(const json& config, int64_t T, int64_t E, std::mt19937_64& rng,
                     bool identical_tokens = false, bool gate_bias = false) {
  ProblemOptions o;
  o.T = T;
  o.E = E;
  o.gate_bias = gate_bias;
  o.bias_scale = 0.0;  // zero bias: ties survive the selection score
  Problem pb = make_problem(config, o, rng);
  const int64_t d = pb.shape.d;
  tie_gate_rows(pb);
  if (identical_tokens)
    for (int64_t t = 1; t < T; ++t) std::copy(pb.x.begin(), pb.x.begin() + d, pb.x.begin() + t * d);
  return pb;
}

TEST(LayerVsReferenceTies, TopkLowerExpertWins) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  for (const char* router : {"mixtral", "topk", "adamoe", "deepseek_v3", "switch", "gshard"}) {
    SCOPED_TRACE(router);
    const int64_t E = std::string(router) == "deepseek_v3" ? 64 : 5;
    Problem pb = tied_problem({{"router", router}}, 9, E, rng, false, true);
    compare_with_reference(pb);
    MoECache cache;
    std::vector<float> y(static_cast<size_t>(pb.T * pb.shape.d));
    pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
    const std::vector<float> combine = pb.layer->combine_matrix(cache);
    const int64_t k = pb.router_params.at("k");
    // Capacity may drop later tokens; every routed expert must be among the k lowest indices.
    for (int64_t t = 0; t < pb.T; ++t)
      for (int64_t e = k; e < E; ++e)
        EXPECT_EQ(combine[t * E + e], 0.0f) << "t " << t << " e " << e;
    if (std::string(router) == "mixtral")
      for (int64_t t = 0; t < pb.T; ++t) {
        EXPECT_EQ(combine[t * E + 0], 0.5f);
        EXPECT_EQ(combine[t * E + 1], 0.5f);
      }
  }
}

TEST(LayerVsReferenceTies, BatchPriorityLowerTokenWins) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  // Every token picks expert 0 with the same weight: batch priority keeps the lowest tokens.
  Problem pb =
      tied_problem({{"router", "switch"}, {"drop_order", "batch_priority"}}, 13, 4, rng, true);
  compare_with_reference(pb);
  MoECache cache;
  std::vector<float> y(static_cast<size_t>(pb.T * pb.shape.d));
  pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
  const std::vector<float> combine = pb.layer->combine_matrix(cache);
  const int64_t C = (int64_t(std::ceil(13 * 1.25 / 4)) + 3) / 4 * 4;  // 5 -> 8
  for (int64_t t = 0; t < pb.T; ++t) EXPECT_EQ(combine[t * 4 + 0] != 0.0f, t < C) << "token " << t;
}

TEST(LayerVsReferenceTies, ExpertChoiceLowerTokenWins) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  Problem pb = tied_problem({{"router", "expert_choice"}}, 11, 3, rng, true);
  compare_with_reference(pb);
  MoECache cache;
  std::vector<float> y(static_cast<size_t>(pb.T * pb.shape.d));
  pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
  const std::vector<float> combine = pb.layer->combine_matrix(cache);
  const int64_t C = int64_t(std::ceil(11.0 * 2.0 / 3.0));  // 8
  for (int64_t t = 0; t < pb.T; ++t)
    for (int64_t e = 0; e < 3; ++e)
      EXPECT_EQ(combine[t * 3 + e] != 0.0f, t < C) << "token " << t << " expert " << e;
}

TEST(LayerVsReferenceTies, OtherRouters) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const std::vector<json> configs = {
      {{"router", "top_p"}}, {{"router", "top_p"}, {"threshold", 0.5}},
      {{"router", "base"}},  {{"router", "base"}, {"training", true}},
      {{"router", "remoe"}}, {{"router", "soft"}},
      {{"router", "smear"}}, {{"router", "expert_choice"}, {"routing_groups", "sequence"}},
  };
  for (const json& c : configs) {
    SCOPED_TRACE(c.dump());
    for (bool identical_tokens : {false, true}) {
      SCOPED_TRACE(identical_tokens ? "identical tokens" : "distinct tokens");
      Problem pb = tied_problem(c, 10, 4, rng, identical_tokens);
      compare_with_reference(pb);
    }
  }
  // top_p with uniform scores keeps experts 0, 1 (running sum 0.5 > 0.4) for E = 4.
  Problem pb = tied_problem({{"router", "top_p"}}, 3, 4, rng);
  MoECache cache;
  std::vector<float> y(static_cast<size_t>(pb.T * pb.shape.d));
  pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
  const std::vector<float> combine = pb.layer->combine_matrix(cache);
  for (int64_t t = 0; t < pb.T; ++t)
    for (int64_t e = 0; e < 4; ++e) EXPECT_EQ(combine[t * 4 + e] != 0.0f, e < 2);
}

}  // namespace
}  // namespace switchyard
