// Structural invariants of the routing plan and the dispatch, for every router in the registry
// (a new router is covered automatically), with default parameters and random inputs; and
// per-sequence isolation: with routing_groups = sequence, one sequence's tokens never change
// another sequence's plan.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "reference_test_support.h"
#include "router_cases.h"

namespace switchyard {
namespace {

using nlohmann::json;
using namespace testing_support;

constexpr int64_t kExperts = 16;  // satisfies every preset's defaults (DeepSeek-V3: 8 groups)

// Every registry entry with its defaults, plus the "invariants" cases of tests/router_cases.json
// (options that change batch dependence).
std::vector<RouterCase> invariant_cases() {
  std::vector<RouterCase> out;
  for (const RouterEntry& e : router_registry()) {
    json config = {{"router", e.name}};
    if (e.make(json::object(), "registry")->traits().needs_placement)  // LocMoE: 2 nodes x 2
      config["placement"] = {{"ranks", 4}, {"expert_parallel", 4}, {"ranks_per_node", 2}};
    out.push_back({e.name, config, json::object()});
  }
  for (const RouterCase& c : router_cases_for("invariants")) out.push_back(c);
  return out;
}

std::vector<int64_t> three_sequences(int64_t T) {
  if (T < 3) return {T};
  return {T / 2, 1, T - T / 2 - 1};
}

Problem make_router_problem(const json& router, bool training, bool per_sequence, int64_t T,
                            std::mt19937_64& rng) {
  json config = router;
  config["training"] = training;
  config["routing_groups"] = per_sequence ? "sequence" : "batch";
  config["seed"] = std::uniform_int_distribution<int64_t>(0, 1 << 30)(rng);
  ProblemOptions o;
  o.T = T;
  o.E = kExperts;
  o.seq_lens = three_sequences(T);
  // A router built for one expert count (Duo-LLM's small and big module) gets it.
  const LayerConfig layer = parse_layer_config(config, "test_routing_invariants");
  if (const int64_t n = make_router(layer.router, layer.router_params, "test")->required_experts();
      n > 0)
    o.E = n;
  return make_problem(config, o, rng);
}

// The hidden widths a router's parameters allow: Flextron's list of fractions, Duo-LLM's small
// width and F (round(f F), halves up, in [1, F], as docs/layer-config.md says); empty: any.
std::set<int32_t> allowed_widths(const json& params, int64_t F) {
  auto width_of = [F](double f) {
    return int32_t(std::clamp<double>(std::floor(f * double(F) + 0.5), 1.0, double(F)));
  };
  std::set<int32_t> out;
  if (params.contains("widths"))
    for (double f : params.at("widths")) out.insert(width_of(f));
  if (params.contains("small_width")) out = {width_of(params.at("small_width")), int32_t(F)};
  return out;
}

// Per-assignment widths: present exactly for elastic-width routers, in the allowed set and in
// [1, F]; rows of an expert ordered by width (descending) carrying their assignment's width; the
// hidden-units statistic matches the rows.
void check_width_invariants(const Problem& pb, const MoECache& cache) {
  const RoutingPlan& plan = cache.plan;
  const int64_t F = pb.shape.F, E = pb.shape.E;
  if (!pb.traits.elastic_width) {
    EXPECT_TRUE(plan.width.empty());
    EXPECT_TRUE(cache.row_width.empty());
    EXPECT_DOUBLE_EQ(cache.stats.hidden_per_token, cache.stats.experts_per_token);
    return;
  }
  ASSERT_EQ(plan.width.size(), plan.size());
  const std::set<int32_t> allowed = allowed_widths(pb.router_params, F);
  for (int32_t w : plan.width) {
    EXPECT_GE(w, 1);
    EXPECT_LE(w, F);
    if (!allowed.empty()) {
      EXPECT_TRUE(allowed.count(w)) << "width " << w << " not allowed";
    }
  }
  ASSERT_EQ(cache.row_width.size(), cache.row_assignment.size());
  double units = 0.0;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = cache.expert_offsets[e]; r < cache.expert_offsets[e + 1]; ++r) {
      EXPECT_EQ(cache.row_width[r], plan.width[cache.row_assignment[r]]) << "row " << r;
      if (r > cache.expert_offsets[e]) {
        EXPECT_GE(cache.row_width[r - 1], cache.row_width[r]);
      }
      units += double(cache.row_width[r]);
    }
  EXPECT_NEAR(cache.stats.hidden_per_token, units / double(F) / double(pb.T), 1e-12);
  EXPECT_LE(cache.stats.hidden_per_token, cache.stats.experts_per_token + 1e-12);
}

// SMEAR-like routers route per sequence: plan rows are (sequence, expert), nothing is dispatched.
void check_pooled_plan_invariants(const Problem& pb, const MoECache& cache) {
  const RoutingPlan& plan = cache.plan;
  const int64_t E = pb.shape.E;
  const auto seqs = routing_groups(RoutingGroups::Sequence, pb.seq_lens, pb.T);
  const int64_t S = int64_t(seqs.size());
  std::set<std::pair<int32_t, int32_t>> kept_pairs;
  std::vector<int64_t> tokens(static_cast<size_t>(E), 0);
  int64_t dropped = 0;
  for (size_t a = 0; a < plan.size(); ++a) {
    const int32_t s = plan.token[a], e = plan.expert[a];
    ASSERT_GE(s, 0);
    ASSERT_LT(s, S);
    ASSERT_GE(e, 0);
    ASSERT_LT(e, E);
    EXPECT_TRUE(std::isfinite(plan.weight[a]));
    if (!plan.kept[a]) {
      ++dropped;
      continue;
    }
    EXPECT_TRUE(kept_pairs.insert({s, e}).second) << "sequence " << s << " expert " << e;
    tokens[e] += seqs[s].second - seqs[s].first;
  }
  EXPECT_EQ(cache.stats.dropped, dropped);
  EXPECT_EQ(cache.stats.tokens_per_expert, tokens);
}

void check_plan_invariants(const Problem& pb, const MoECache& cache) {
  if (pb.traits.pooled_per_sequence) return check_pooled_plan_invariants(pb, cache);
  const RoutingPlan& plan = cache.plan;
  const int64_t T = pb.T, E = pb.shape.E;
  const size_t A = plan.size();
  ASSERT_EQ(plan.expert.size(), A);
  ASSERT_EQ(plan.group.size(), A);
  ASSERT_EQ(plan.weight.size(), A);
  ASSERT_EQ(plan.kept.size(), A);
  const int64_t G = int64_t(cache.groups.size());
  ASSERT_GE(G, 1);

  // Indices in range, a token inside its group, each kept pair once.
  std::set<std::pair<int32_t, int32_t>> kept_pairs;
  std::vector<int64_t> kept_per_expert(static_cast<size_t>(E), 0);
  std::map<std::pair<int64_t, int32_t>, int64_t> kept_per_group_expert;
  int64_t kept_total = 0, dropped = 0;
  for (size_t a = 0; a < A; ++a) {
    const int32_t t = plan.token[a], e = plan.expert[a], g = plan.group[a];
    ASSERT_GE(t, 0);
    ASSERT_LT(t, T);
    ASSERT_GE(e, 0);
    ASSERT_LT(e, E);
    ASSERT_GE(g, 0);
    ASSERT_LT(g, G);
    EXPECT_GE(t, cache.groups[g].first);
    EXPECT_LT(t, cache.groups[g].second);
    EXPECT_TRUE(std::isfinite(plan.weight[a]));
    if (!plan.kept[a]) {
      ++dropped;
      continue;
    }
    EXPECT_TRUE(kept_pairs.insert({t, e}).second) << "token " << t << " expert " << e << " twice";
    ++kept_per_expert[e];
    ++kept_per_group_expert[{g, e}];
    ++kept_total;
  }
  EXPECT_EQ(cache.stats.dropped, dropped);
  EXPECT_EQ(cache.stats.tokens_per_expert, kept_per_expert);
  // What the router declined itself is part of the drops; without capacity it is all of them.
  EXPECT_GE(cache.stats.declined, 0);
  EXPECT_LE(cache.stats.declined, cache.stats.dropped);
  if (std::all_of(plan.capacity.begin(), plan.capacity.end(), [](int64_t c) { return c == 0; })) {
    EXPECT_EQ(cache.stats.declined, cache.stats.dropped);
  }

  // Capacity per group and expert.
  if (!plan.capacity.empty()) {
    ASSERT_EQ(int64_t(plan.capacity.size()), G);
    for (const auto& [ge, count] : kept_per_group_expert) {
      const int64_t C = plan.capacity[ge.first];
      if (C > 0) {
        EXPECT_LE(count, C) << "group " << ge.first << " expert " << ge.second;
      }
    }
  }

  // Dispatch by expert: of the plan, or on a dense-scoring call of the dense plan (every token to
  // every expert once), which the router chose from.
  const RoutingPlan& dispatched = cache.dense ? cache.dense_plan : plan;
  const size_t dispatched_A = dispatched.size();
  if (cache.dense) {
    ASSERT_EQ(int64_t(dispatched_A), T * E);
    ASSERT_EQ(int64_t(cache.responses.size()), T * E * pb.shape.d);
    std::set<std::pair<int32_t, int32_t>> pairs;
    for (size_t a = 0; a < dispatched_A; ++a) {
      EXPECT_TRUE(dispatched.kept[a]);
      EXPECT_TRUE(pairs.insert({dispatched.token[a], dispatched.expert[a]}).second);
    }
    std::fill(kept_per_expert.begin(), kept_per_expert.end(), T);
    kept_total = T * E;
  }
  ASSERT_EQ(cache.expert_offsets.size(), size_t(E + 1));
  EXPECT_EQ(cache.expert_offsets[0], 0);
  for (int64_t e = 0; e < E; ++e) {
    EXPECT_LE(cache.expert_offsets[e], cache.expert_offsets[e + 1]);
    EXPECT_EQ(cache.expert_offsets[e + 1] - cache.expert_offsets[e], kept_per_expert[e]);
  }
  EXPECT_EQ(cache.expert_offsets[E], kept_total);
  ASSERT_EQ(int64_t(cache.row_assignment.size()), kept_total);
  std::set<int32_t> rows_of_assignments;
  for (int64_t e = 0; e < E; ++e)
    for (int64_t r = cache.expert_offsets[e]; r < cache.expert_offsets[e + 1]; ++r) {
      const int32_t a = cache.row_assignment[r];
      ASSERT_GE(a, 0);
      ASSERT_LT(size_t(a), dispatched_A);
      EXPECT_EQ(dispatched.expert[a], e) << "row " << r;
      EXPECT_TRUE(dispatched.kept[a]) << "row " << r << " dispatches a dropped assignment";
      EXPECT_TRUE(rows_of_assignments.insert(a).second) << "assignment " << a << " twice";
    }

  // Token CSR over the dispatched rows.
  ASSERT_EQ(cache.token_offsets.size(), size_t(T + 1));
  EXPECT_EQ(cache.token_offsets[0], 0);
  EXPECT_EQ(cache.token_offsets[T], kept_total);
  ASSERT_EQ(int64_t(cache.token_rows.size()), kept_total);
  std::set<int32_t> seen_rows;
  for (int64_t t = 0; t < T; ++t) {
    EXPECT_LE(cache.token_offsets[t], cache.token_offsets[t + 1]);
    for (int64_t i = cache.token_offsets[t]; i < cache.token_offsets[t + 1]; ++i) {
      const int32_t r = cache.token_rows[i];
      ASSERT_GE(r, 0);
      ASSERT_LT(r, kept_total);
      EXPECT_EQ(dispatched.token[cache.row_assignment[r]], t) << "row " << r;
      EXPECT_TRUE(seen_rows.insert(r).second) << "row " << r << " twice";
    }
  }
}

class RoutingInvariants : public ::testing::TestWithParam<RouterCase> {};

TEST_P(RoutingInvariants, PlanAndDispatch) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  for (bool training : {false, true})
    for (bool per_sequence : {false, true})
      for (int64_t T : {1, 29, 130}) {
        SCOPED_TRACE("training " + std::to_string(training) + ", per-sequence groups " +
                     std::to_string(per_sequence) + ", T " + std::to_string(T));
        Problem pb = make_router_problem(GetParam().config, training, per_sequence, T, rng);
        MoECache cache;
        std::vector<float> y(static_cast<size_t>(T * pb.shape.d));
        pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
        check_plan_invariants(pb, cache);
        if (!pb.traits.pooled_per_sequence) check_width_invariants(pb, cache);
        for (float v : y) ASSERT_TRUE(std::isfinite(v));
      }
}

// The plan restricted to the tokens [begin, end): (token, expert, kept) -> weight.
std::map<std::tuple<int32_t, int32_t, bool>, float> plan_of(const RoutingPlan& plan, int64_t begin,
                                                            int64_t end) {
  std::map<std::tuple<int32_t, int32_t, bool>, float> out;
  for (size_t a = 0; a < plan.size(); ++a)
    if (plan.token[a] >= begin && plan.token[a] < end)
      out[{plan.token[a], plan.expert[a], plan.kept[a] != 0}] = plan.weight[a];
  return out;
}

// Routes the problem, then a copy whose sequence 1 has other (larger) tokens, and checks that
// sequences 0 and 2 keep their routing exactly.
void check_other_tokens_change_nothing(const json& router, bool training, bool per_sequence,
                                       std::mt19937_64& rng) {
  const int64_t T = 61;
  Problem pb = make_router_problem(router, training, per_sequence, T, rng);
  const auto seqs = routing_groups(RoutingGroups::Sequence, pb.seq_lens, T);
  ASSERT_EQ(seqs.size(), 3u);
  // Only a batch-independent router promises this with one routing group for the whole batch.
  if (!per_sequence && pb.traits.batch_dependent) return;

  MoECache first;
  std::vector<float> y(static_cast<size_t>(T * pb.shape.d));
  pb.layer->forward(pb.params(), pb.batch(), first, y.data());

  // Same config and seed in a fresh layer (same draws), other tokens in sequence 2.
  Problem changed = make_router_problem(router, training, per_sequence, T, rng);
  changed.config = pb.config;
  changed.layer = std::make_unique<MoELayer>(pb.config, pb.shape);
  changed.x = pb.x;
  changed.gate = pb.gate;
  changed.router = pb.router;
  changed.router_names = pb.router_names;
  changed.router_carry = pb.router_carry;  // the previous layer's carry, per token
  changed.gate_bias = pb.gate_bias;
  changed.w1 = pb.w1;
  changed.w3 = pb.w3;
  changed.w2 = pb.w2;
  changed.token_ids = pb.token_ids;
  changed.token_counts = pb.token_counts;          // the training data's, not the batch's
  changed.token_importance = pb.token_importance;  // per token, as x (DA-MoE)
  if (!pb.token_counts.empty()) changed.layer->set_token_frequencies(pb.token_counts, "test");
  for (int64_t t = seqs[1].first; t < seqs[1].second; ++t) {
    fill_x_row(changed, rng, t);
    // Scale the new tokens up so that they would win any cross-sequence competition.
    for (int64_t j = 0; j < pb.shape.d; ++j) changed.x[t * pb.shape.d + j] *= 4.0f;
    // New ids, inside the vocabulary where there is one (the counts', or the logits' own).
    const int64_t vocab = !pb.token_counts.empty() ? int64_t(pb.token_counts.size())
                          : pb.logits_read_ids()   ? pb.shape.vocab
                                                   : 0;
    if (!changed.token_ids.empty())
      changed.token_ids[t] = vocab > 0 ? (1000 + t) % vocab : 1000 + t;
    if (!changed.token_importance.empty()) changed.token_importance[size_t(t)] = 16.0f;
  }
  MoECache second;
  changed.layer->forward(changed.params(), changed.batch(), second, y.data());

  for (size_t s : {size_t{0}, size_t{2}}) {
    // Plan rows are tokens, or sequences for routers pooled per sequence.
    const int64_t begin = pb.traits.pooled_per_sequence ? int64_t(s) : seqs[s].first;
    const int64_t end = pb.traits.pooled_per_sequence ? int64_t(s) + 1 : seqs[s].second;
    const auto a = plan_of(first.plan, begin, end);
    const auto b = plan_of(second.plan, begin, end);
    ASSERT_EQ(a.size(), b.size()) << "sequence " << s << " changed";
    for (const auto& [key, w] : a) {
      const auto it = b.find(key);
      ASSERT_NE(it, b.end()) << "sequence " << s << " lost row " << std::get<0>(key)
                             << " -> expert " << std::get<1>(key);
      EXPECT_NEAR(it->second, w, 1e-6f * std::max(1.0f, std::abs(w)));
    }
  }
}

TEST_P(RoutingInvariants, SequencesAreIsolated) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  for (bool training : {false, true}) {
    SCOPED_TRACE("training " + std::to_string(training));
    check_other_tokens_change_nothing(GetParam().config, training, true, rng);
  }
}

// A router whose traits say it is not batch-dependent routes every token alone: with the whole
// batch as one routing group, other tokens change nothing either.
TEST_P(RoutingInvariants, BatchIndependentRoutersIgnoreOtherTokens) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  for (bool training : {false, true}) {
    SCOPED_TRACE("training " + std::to_string(training));
    check_other_tokens_change_nothing(GetParam().config, training, false, rng);
  }
}

// The invariant cases whose layer, built once, satisfies `keep`.
template <class Keep>
std::vector<RouterCase> invariant_cases_where(Keep keep) {
  std::vector<RouterCase> out;
  std::mt19937_64 rng(1);  // only to build the layer: its decisions are not looked at
  for (const RouterCase& c : invariant_cases())
    if (keep(make_router_problem(c.config, false, false, 3, rng))) out.push_back(c);
  return out;
}

// The tokens of every range [b, e) have the same experts with the same weights in both plans.
void expect_same_routing(const RoutingPlan& first, const RoutingPlan& second,
                         const std::vector<std::pair<int64_t, int64_t>>& ranges) {
  for (const auto& [b, e] : ranges) {
    const auto a = plan_of(first, b, e), c = plan_of(second, b, e);
    ASSERT_EQ(a.size(), c.size()) << "tokens [" << b << ", " << e << ") changed";
    for (const auto& [key, w] : a) {
      const auto it = c.find(key);
      ASSERT_NE(it, c.end()) << "token " << std::get<0>(key) << " lost expert " << std::get<1>(key);
      EXPECT_FLOAT_EQ(it->second, w);
    }
  }
}

// The invariant cases whose logit function reads the earlier tokens of the sequence
// (SpeechMoE2), without capacity (so that no slot is contested).
std::vector<RouterCase> earlier_token_cases() {
  return invariant_cases_where([](const Problem& probe) {
    const LogitFunction* lf = probe.layer->router().logit_function();
    return lf && lf->reads_earlier_tokens() &&
           probe.router_params.value("capacity_factor", 0.0) <= 0 &&
           probe.router_params.value("eval_capacity_factor", 0.0) <= 0;
  });
}

class EarlierTokenRouting : public ::testing::TestWithParam<RouterCase> {};

// The filter finds the routers it is for (a registry change cannot empty the suite unseen).
TEST(EarlierTokenRoutingCases, IncludeSpeechMoE2) {
  const auto cases = earlier_token_cases();
  EXPECT_TRUE(std::any_of(cases.begin(), cases.end(),
                          [](const RouterCase& c) { return c.name == "speechmoe2"; }));
}

// Such a router is causal: new tokens at the end of sequence 0 change neither the logits nor the
// plan of its earlier tokens, nor anything of the other sequences; a new early token does change a
// later token's logits (the function does read it).
TEST_P(EarlierTokenRouting, IsCausal) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const json& router = GetParam().config;
  const int64_t T = 61, cut = 20;
  for (bool training : {false, true}) {
    SCOPED_TRACE("training " + std::to_string(training));
    Problem pb = make_router_problem(router, training, false, T, rng);
    const auto seqs = routing_groups(RoutingGroups::Sequence, pb.seq_lens, T);
    ASSERT_EQ(seqs.size(), 3u);
    ASSERT_GT(seqs[0].second, cut + 2);
    const int64_t d = pb.shape.d, R = pb.R;
    auto run = [&](const std::vector<float>& x, MoECache& cache) {
      Problem q = make_router_problem(router, training, false, T, rng);
      q.config = pb.config;
      q.layer = std::make_unique<MoELayer>(pb.config, pb.shape);  // the same draws
      q.x = x;
      q.router = pb.router;
      q.router_names = pb.router_names;
      q.w1 = pb.w1;
      q.w3 = pb.w3;
      q.w2 = pb.w2;
      q.seq_lens = pb.seq_lens;
      std::vector<float> y(static_cast<size_t>(T * d));
      q.layer->forward(q.params(), q.batch(), cache, y.data());
    };
    MoECache base, late, early;
    run(pb.x, base);
    std::vector<float> x_late = pb.x;  // sequence 0's tokens from `cut` on, new and larger
    for (int64_t t = cut; t < seqs[0].second; ++t)
      for (int64_t j = 0; j < d; ++j) x_late[size_t(t * d + j)] = 4.0f * dyadic(rng);
    run(x_late, late);
    for (int64_t t = 0; t < T; ++t) {
      if (t >= cut && t < seqs[0].second) continue;
      for (int64_t r = 0; r < R; ++r)
        EXPECT_FLOAT_EQ(late.logits[size_t(t * R + r)], base.logits[size_t(t * R + r)])
            << "token " << t << " output " << r;
    }
    expect_same_routing(base.plan, late.plan, {{0, cut}, seqs[1], seqs[2]});
    std::vector<float> x_early = pb.x;  // token 1 new: token cut's logits must move
    for (int64_t j = 0; j < d; ++j) x_early[size_t(d + j)] = 4.0f * dyadic(rng);
    run(x_early, early);
    double moved = 0.0;
    for (int64_t r = 0; r < R; ++r)
      moved = std::max(moved, double(std::abs(early.logits[size_t(cut * R + r)] -
                                              base.logits[size_t(cut * R + r)])));
    EXPECT_GT(moved, 1e-6) << "token " << cut << " does not read token 1";
  }
}

// The invariant cases of routers that read a per-token importance (DA-MoE).
std::vector<RouterCase> importance_cases() {
  return invariant_cases_where(
      [](const Problem& probe) { return probe.traits.needs_token_importance; });
}

class ImportanceRouting : public ::testing::TestWithParam<RouterCase> {};

TEST(ImportanceRoutingCases, IncludeDaMoE) {
  const auto cases = importance_cases();
  EXPECT_TRUE(std::any_of(cases.begin(), cases.end(),
                          [](const RouterCase& c) { return c.name == "damoe"; }));
}

// Such a router is causal in its sequence: new inputs and importances at the end of sequence 0
// change nothing of its earlier tokens' plan, nor of the other sequences (whatever the routing
// groups); a new importance early in the sequence does change a later token's number of experts
// (the running mean reads it).
TEST_P(ImportanceRouting, IsCausal) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const int64_t T = 61, cut = 20;
  for (bool per_sequence : {false, true})
    for (bool training : {false, true}) {
      SCOPED_TRACE("training " + std::to_string(training) + " per sequence " +
                   std::to_string(per_sequence));
      Problem pb = make_router_problem(GetParam().config, training, per_sequence, T, rng);
      const auto seqs = routing_groups(RoutingGroups::Sequence, pb.seq_lens, T);
      ASSERT_EQ(seqs.size(), 3u);
      ASSERT_GT(seqs[0].second, cut + 2);
      const int64_t d = pb.shape.d;
      const std::vector<float> x0 = pb.x, s0 = pb.token_importance;
      auto run = [&](const std::vector<float>& x, const std::vector<float>& importance) {
        pb.layer = std::make_unique<MoELayer>(pb.config, pb.shape);  // the same draws
        pb.x = x;
        pb.token_importance = importance;
        MoECache cache;
        std::vector<float> y(static_cast<size_t>(T * d));
        pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
        return cache.plan;
      };
      const RoutingPlan base = run(x0, s0);
      std::vector<float> x_late = x0, s_late = s0;  // sequence 0 from `cut` on: all new
      for (int64_t t = cut; t < seqs[0].second; ++t) {
        for (int64_t j = 0; j < d; ++j) x_late[size_t(t * d + j)] = 4.0f * dyadic(rng);
        s_late[size_t(t)] = 3.0f + float(t % 5);
      }
      const RoutingPlan late = run(x_late, s_late);
      expect_same_routing(base, late, {{0, cut}, seqs[1], seqs[2]});
      // Token 1's importance raised far above the rest: the running mean of the later tokens
      // grows, so some later token of sequence 0 gets fewer experts.
      std::vector<float> s_early = s0;
      s_early[1] = 64.0f;
      const RoutingPlan early = run(x0, s_early);
      EXPECT_LT(plan_of(early, 2, seqs[0].second).size(), plan_of(base, 2, seqs[0].second).size())
          << "the later tokens do not read token 1's importance";
    }
}

// DA-MoE's budget "prefix": over every prefix of n tokens of a sequence the experts taken never
// exceed floor(k n). Importances that grow along the sequence make every token want more than k
// (each is above its running mean), so without the budget the same input overspends.
TEST(ImportanceRoutingBudget, PrefixNeverOverspends) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const int64_t T = 61;
  for (const char* budget : {"prefix", "none"}) {
    SCOPED_TRACE(std::string("budget ") + budget);
    const json config = {{"router", "damoe"}, {"k", 1.5}, {"k_max", 4}, {"budget", budget}};
    Problem pb = make_router_problem(config, true, false, T, rng);
    const auto seqs = routing_groups(RoutingGroups::Sequence, pb.seq_lens, T);
    for (int64_t t = 0; t < T; ++t) pb.token_importance[size_t(t)] = 1.0f + float(t);
    MoECache cache;
    std::vector<float> y(static_cast<size_t>(T * pb.shape.d));
    pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
    std::vector<int64_t> K(size_t(T), 0);  // (T) experts per token
    for (size_t a = 0; a < cache.plan.size(); ++a) ++K[size_t(cache.plan.token[a])];
    bool overspent = false;
    for (const auto& [b, e] : seqs) {
      int64_t spent = 0;
      for (int64_t t = b; t < e; ++t) {
        EXPECT_GE(K[size_t(t)], 1) << "token " << t;
        spent += K[size_t(t)];
        overspent |= spent > int64_t(std::floor(1.5 * double(t - b + 1)));
      }
    }
    EXPECT_EQ(overspent, std::string(budget) == "none");
  }
}

// The router-entropy statistic reads the block of logits that routes (Router::scored_columns):
// StableMoE's W x while stage 1 trains and ŝ otherwise, VQMoE's gate in pretrain mode and its
// codebook block in finetune mode; not the whole (wider) row.
TEST(RouterEntropyStatistic, ReadsTheBlockThatRoutes) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const std::vector<std::tuple<json, bool, int64_t>> cases = {
      {{{"router", "stablemoe"}}, true, 0},
      {{{"router", "stablemoe"}}, false, 1},
      {{{"router", "stablemoe"}, {"stage", 2}}, true, 1},
      {{{"router", "vqmoe"}}, true, 0},
      {{{"router", "vqmoe"}, {"mode", "finetune"}}, false, 1}};
  for (const auto& [config, training, block] : cases) {
    SCOPED_TRACE(config.dump() + " training " + std::to_string(training));
    const int64_t T = 40;
    Problem pb = make_router_problem(config, training, false, T, rng);
    MoECache cache;
    std::vector<float> y(static_cast<size_t>(T * pb.shape.d));
    const double entropy = pb.layer->forward(pb.params(), pb.batch(), cache, y.data()).entropy;
    const int64_t E = pb.shape.E, R = pb.R;
    ASSERT_GT(R, E);
    double expected = 0.0;  // softmax (or s / Σ s of sigmoids) over columns [block E, block E + E)
    for (int64_t t = 0; t < T; ++t) {
      const float* z = cache.logits.data() + t * R + block * E;
      std::vector<double> q(static_cast<size_t>(E));
      const double top = *std::max_element(z, z + E);
      for (int64_t e = 0; e < E; ++e)
        q[size_t(e)] = pb.traits.score == ScoreKind::Softmax ? std::exp(double(z[e]) - top)
                                                             : 1.0 / (1.0 + std::exp(-z[e]));
      double sum = 0.0;
      for (double v : q) sum += v;
      for (double v : q) expected -= v > 0 ? v / sum * std::log(v / sum) : 0.0;
    }
    EXPECT_NEAR(entropy, expected / double(T), 1e-6);
  }
}

std::string case_name(const ::testing::TestParamInfo<RouterCase>& param_info) {
  return param_info.param.name;
}

INSTANTIATE_TEST_SUITE_P(Registry, RoutingInvariants, ::testing::ValuesIn(invariant_cases()),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Registry, EarlierTokenRouting, ::testing::ValuesIn(earlier_token_cases()),
                         case_name);
INSTANTIATE_TEST_SUITE_P(Registry, ImportanceRouting, ::testing::ValuesIn(importance_cases()),
                         case_name);

}  // namespace
}  // namespace switchyard
