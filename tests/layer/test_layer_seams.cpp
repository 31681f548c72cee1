// The MoE layer's seams: experts held one block each (MoEParams::w*_experts, what a rank holding
// only its own experts passes) give exactly the stacked result, forward and backward, for routers
// with and without capacity drops and with experts that get no token; an expert held elsewhere
// that receives rows, or mixed layouts, are errors. Fixed seed, printed; SWITCHYARD_TEST_SEED
// overrides it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/moe_layer.h>

#include <cstdlib>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

namespace {

using nlohmann::json;
using switchyard::MoEBatch;
using switchyard::MoECache;
using switchyard::MoEGrads;
using switchyard::MoELayer;
using switchyard::MoEParams;
using switchyard::MoEShape;

uint64_t seed() {
  const char* s = std::getenv("SWITCHYARD_TEST_SEED");
  const uint64_t v = s ? std::strtoull(s, nullptr, 10) : 20261201;
  static bool printed = false;
  if (!printed) std::cout << "seed " << v << " (SWITCHYARD_TEST_SEED replays)\n";
  printed = true;
  return v;
}

std::vector<float> normal(std::mt19937_64& rng, size_t n, double scale) {
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = float(dist(rng));
  return v;
}

struct Layer {
  MoEShape shape{12, 6, 8, 0};
  int64_t T = 37;
  std::vector<float> x, gate, w1, w3, w2;
  std::vector<const float*> w1_e, w3_e, w2_e;  // (E) views into the stacked blocks
  explicit Layer(std::mt19937_64& rng) {
    const int64_t d = shape.d, E = shape.E, F = shape.F;
    x = normal(rng, size_t(T * d), 1.0);
    for (float& v : x) v = std::abs(v);  // positive inputs, so a negative gate row is never chosen
    gate = normal(rng, size_t(E * d), 0.3);
    for (int64_t j = 0; j < d; ++j) gate[size_t((E - 1) * d + j)] = -5.0f;  // expert E-1: no token
    w1 = normal(rng, size_t(E * F * d), 0.3);
    w3 = normal(rng, size_t(E * F * d), 0.3);
    w2 = normal(rng, size_t(E * d * F), 0.3);
    for (int64_t e = 0; e < E; ++e) {
      w1_e.push_back(w1.data() + e * F * d);
      w3_e.push_back(w3.data() + e * F * d);
      w2_e.push_back(w2.data() + e * d * F);
    }
  }
  MoEParams stacked() const {
    MoEParams p;
    p.gate = gate.data();
    p.w1 = w1.data();
    p.w3 = w3.data();
    p.w2 = w2.data();
    return p;
  }
  MoEParams per_expert() const {
    MoEParams p;
    p.gate = gate.data();
    p.w1_experts = w1_e.data();
    p.w3_experts = w3_e.data();
    p.w2_experts = w2_e.data();
    return p;
  }
  MoEBatch batch() const {
    MoEBatch b;
    b.T = T;
    b.x = x.data();
    return b;
  }
};

struct Result {
  std::vector<float> y, dx, dgate, dw1, dw3, dw2;
};

Result run(const json& config, const Layer& L, const MoEParams& p, bool per_expert_grads) {
  const int64_t d = L.shape.d, E = L.shape.E, F = L.shape.F;
  MoELayer layer(switchyard::parse_layer_config(config, "test_layer_seams"), L.shape);
  MoECache cache;
  Result r;
  r.y.resize(size_t(L.T * d));
  layer.forward(p, L.batch(), cache, r.y.data());
  std::mt19937_64 rng(seed() + 1);
  const std::vector<float> dy = normal(rng, size_t(L.T * d), 1.0);
  r.dx.resize(size_t(L.T * d));
  r.dgate.resize(size_t(E * d));
  r.dw1.assign(size_t(E * F * d), 7.0f);  // overwritten, also for the expert with no token
  r.dw3.assign(size_t(E * F * d), 7.0f);
  r.dw2.assign(size_t(E * d * F), 7.0f);
  std::vector<float*> g1, g3, g2;
  for (int64_t e = 0; e < E; ++e) {
    g1.push_back(r.dw1.data() + e * F * d);
    g3.push_back(r.dw3.data() + e * F * d);
    g2.push_back(r.dw2.data() + e * d * F);
  }
  MoEGrads g;
  g.gate = r.dgate.data();
  if (per_expert_grads) {
    g.w1_experts = g1.data();
    g.w3_experts = g3.data();
    g.w2_experts = g2.data();
  } else {
    g.w1 = r.dw1.data();
    g.w3 = r.dw3.data();
    g.w2 = r.dw2.data();
  }
  layer.backward(p, L.batch(), cache, dy.data(), r.dx.data(), g);
  return r;
}

const json kConfigs[] = {
    {{"router", "topk"}, {"k", 2}},
    {{"router", "topk"}, {"k", 2}, {"capacity_factor", 0.5}},  // drops
    {{"router", "expert_choice"}, {"capacity_factor", 1.0}},
};

TEST(LayerSeams, PerExpertWeightsEqualStacked) {
  std::mt19937_64 rng(seed());
  const Layer L(rng);
  for (const json& config : kConfigs) {
    const Result a = run(config, L, L.stacked(), false);
    const Result b = run(config, L, L.per_expert(), true);
    EXPECT_EQ(a.y, b.y) << config.dump();
    EXPECT_EQ(a.dx, b.dx) << config.dump();
    EXPECT_EQ(a.dgate, b.dgate) << config.dump();
    EXPECT_EQ(a.dw1, b.dw1) << config.dump();
    EXPECT_EQ(a.dw3, b.dw3) << config.dump();
    EXPECT_EQ(a.dw2, b.dw2) << config.dump();
  }
  // The expert that gets no token (top-k): its gradient is written as zeros, not left alone.
  const Result a = run(kConfigs[0], L, L.per_expert(), true);
  const int64_t E = L.shape.E, F = L.shape.F, d = L.shape.d;
  for (int64_t i = 0; i < F * d; ++i) ASSERT_EQ(a.dw1[size_t((E - 1) * F * d + i)], 0.0f);
}

TEST(LayerSeams, AnExpertHeldElsewhereMayGetNoRows) {
  std::mt19937_64 rng(seed());
  Layer L(rng);
  const int64_t E = L.shape.E;
  // Expert E-1 gets no token under top-k: not holding it changes nothing.
  const Result full = run(kConfigs[0], L, L.per_expert(), true);
  L.w1_e[size_t(E - 1)] = L.w3_e[size_t(E - 1)] = L.w2_e[size_t(E - 1)] = nullptr;
  const Result part = run(kConfigs[0], L, L.per_expert(), true);
  EXPECT_EQ(full.y, part.y);
  EXPECT_EQ(full.dx, part.dx);
  // Expert 0 gets rows: not holding it is an error naming it.
  L.w1_e[0] = L.w3_e[0] = L.w2_e[0] = nullptr;
  try {
    run(kConfigs[0], L, L.per_expert(), true);
    FAIL() << "no error for rows routed to an expert this process does not hold";
  } catch (const switchyard::Error& e) {
    EXPECT_THAT(e.what(),
                testing::HasSubstr("routed to expert 0, which this process does not hold"));
  }
}

TEST(LayerSeams, MixedOrPartialExpertLayoutsAreErrors) {
  std::mt19937_64 rng(seed());
  Layer L(rng);
  MoEParams both = L.per_expert();
  both.w1 = L.w1.data();
  EXPECT_THROW(run(kConfigs[0], L, both, false), switchyard::Error);
  MoEParams no_w3 = L.per_expert();
  no_w3.w3_experts = nullptr;
  EXPECT_THROW(run(kConfigs[0], L, no_w3, false), switchyard::Error);
  L.w3_e[2] = nullptr;  // expert 2 has w1 and w2 but not w3
  try {
    run(kConfigs[0], L, L.per_expert(), false);
    FAIL() << "no error for an expert with some of its weights";
  } catch (const switchyard::Error& e) {
    EXPECT_THAT(e.what(), testing::HasSubstr("expert 2 has some of its per-expert weights"));
  }
}

}  // namespace
