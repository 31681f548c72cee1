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
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/kernels.h"
#include "layer/token_dispatcher.h"

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

// ---------------------------------------------------------------------------------------------
// Per-assignment widths (docs/ARCHITECTURE.md, "Per-assignment widths").

namespace elastic {

using switchyard::cpu::Act;

// The kernels on a prefix F' of the hidden units (w2's leading dimension F) equal the full-width
// kernels on weights that are zero beyond F', forward and backward; the sliced backward leaves
// dW2's columns [F', F) untouched.
TEST(ElasticWidth, SlicedFfnEqualsZeroPaddedFull) {
  std::mt19937_64 rng(seed() + 11);
  const int64_t n = 9, d = 7, F = 11;
  for (Act act : {Act(Act::SwiGLU), Act(Act::GELU), Act(Act::SwiGLUClamped, 1.702f, 1.5f)}) {
    for (int64_t Fp : {int64_t(1), int64_t(3), int64_t(10), F}) {
      SCOPED_TRACE("act " + std::to_string(int(act.kind)) + " F' " + std::to_string(Fp));
      const std::vector<float> x = normal(rng, size_t(n * d), 1.0);
      const std::vector<float> w1 = normal(rng, size_t(F * d), 0.5);
      const std::vector<float> w3 = normal(rng, size_t(F * d), 0.5);
      const std::vector<float> w2 = normal(rng, size_t(d * F), 0.5);
      const std::vector<float> dout = normal(rng, size_t(n * d), 1.0);
      std::vector<float> w1z = w1, w3z = w3, w2z = w2;
      for (int64_t f = Fp; f < F; ++f)
        for (int64_t j = 0; j < d; ++j) {
          w1z[size_t(f * d + j)] = 0.0f;
          w3z[size_t(f * d + j)] = 0.0f;
          w2z[size_t(j * F + f)] = 0.0f;
        }
      const bool up = act.has_up();
      // Full width on the zero-padded weights.
      std::vector<float> h1(size_t(n * F)), h3(size_t(n * F)), a(size_t(n * F)), out(size_t(n * d));
      switchyard::cpu::ffn_forward(act, n, d, F, x.data(), w1z.data(), up ? w3z.data() : nullptr,
                                   w2z.data(), h1.data(), h3.data(), a.data(), out.data());
      std::vector<float> dact(size_t(n * F)), dh3(size_t(n * F)), dw1(size_t(F * d)),
          dw3(size_t(F * d)), dw2(size_t(d * F)), dx(size_t(n * d));
      switchyard::cpu::ffn_backward(act, n, d, F, x.data(), w1z.data(), up ? w3z.data() : nullptr,
                                    w2z.data(), h1.data(), h3.data(), a.data(), dout.data(),
                                    dact.data(), dh3.data(), dw1.data(), up ? dw3.data() : nullptr,
                                    dw2.data(), dx.data(), false);
      // The prefix only, on the original weights (what lies beyond F' must not matter).
      std::vector<float> s1(size_t(n * Fp)), s3(size_t(n * Fp)), sa(size_t(n * Fp)),
          sout(size_t(n * d));
      switchyard::cpu::ffn_forward_gated(act, n, d, d, Fp, x.data(), x.data(), w1.data(),
                                         up ? w3.data() : nullptr, w2.data(), s1.data(), s3.data(),
                                         sa.data(), sout.data(), F);
      for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(sout[i], out[i], 1e-5) << "out " << i;
      std::vector<float> sdact(size_t(n * Fp)), sdh3(size_t(n * Fp)), sdw1(size_t(Fp * d)),
          sdw3(size_t(Fp * d)), sdw2(size_t(d * F), 7.0f), sdx(size_t(n * d));
      switchyard::cpu::ffn_backward_gated(
          act, n, d, d, Fp, x.data(), x.data(), w1.data(), up ? w3.data() : nullptr, w2.data(),
          s1.data(), s3.data(), sa.data(), dout.data(), sdact.data(), sdh3.data(), sdw1.data(),
          up ? sdw3.data() : nullptr, sdw2.data(), sdx.data(), sdx.data(), false, F);
      for (size_t i = 0; i < dx.size(); ++i) EXPECT_NEAR(sdx[i], dx[i], 1e-5) << "dx " << i;
      for (int64_t i = 0; i < Fp * d; ++i) {
        EXPECT_NEAR(sdw1[size_t(i)], dw1[size_t(i)], 1e-5) << "dw1 " << i;
        if (up) {
          EXPECT_NEAR(sdw3[size_t(i)], dw3[size_t(i)], 1e-5) << "dw3 " << i;
        }
      }
      for (int64_t j = 0; j < d; ++j)
        for (int64_t f = 0; f < F; ++f) {
          const size_t i = size_t(j * F + f);
          if (f < Fp) {
            EXPECT_NEAR(sdw2[i], dw2[i], 1e-5) << "dw2 " << j << "," << f;
          } else {
            EXPECT_EQ(sdw2[i], 7.0f) << "dw2 column " << f << " beyond F' was written";
          }
        }
    }
  }
}

// A Duo-LLM layer never reads the small expert's hidden units past its width: NaN there leaves
// y, dx and every other gradient unchanged, and their gradient is exactly 0 (no masked
// full-width run, which would turn the NaN into NaN outputs).
TEST(ElasticWidth, UnusedHiddenUnitsAreNeverRead) {
  std::mt19937_64 rng(seed() + 12);
  const MoEShape shape{12, 2, 8, 0};
  const int64_t T = 41, d = shape.d, F = shape.F, small = 2;  // round(0.25 · 8)
  const std::vector<float> x = normal(rng, size_t(T * d), 1.0);
  const std::vector<float> gate = normal(rng, size_t(2 * d), 1.0);
  std::vector<float> w1 = normal(rng, size_t(2 * F * d), 0.3),
                     w3 = normal(rng, size_t(2 * F * d), 0.3),
                     w2 = normal(rng, size_t(2 * d * F), 0.3);
  const std::vector<float> dy = normal(rng, size_t(T * d), 1.0);
  auto run_duo = [&](const std::vector<float>& a1, const std::vector<float>& a3,
                     const std::vector<float>& a2, Result& r) {
    MoELayer layer(switchyard::parse_layer_config({{"router", "duollm"}}, "test_layer_seams"),
                   shape);
    MoEParams p;
    p.gate = gate.data();
    p.w1 = a1.data();
    p.w3 = a3.data();
    p.w2 = a2.data();
    MoEBatch b;
    b.T = T;
    b.x = x.data();
    MoECache cache;
    r.y.resize(size_t(T * d));
    layer.forward(p, b, cache, r.y.data());
    EXPECT_GT(cache.stats.tokens_per_expert[0], 0) << "no token on the small module";
    EXPECT_GT(cache.stats.tokens_per_expert[1], 0) << "no token on the big module";
    r.dx.resize(size_t(T * d));
    r.dgate.resize(size_t(2 * d));
    r.dw1.assign(size_t(2 * F * d), 7.0f);
    r.dw3.assign(size_t(2 * F * d), 7.0f);
    r.dw2.assign(size_t(2 * d * F), 7.0f);
    MoEGrads g;
    g.gate = r.dgate.data();
    g.w1 = r.dw1.data();
    g.w3 = r.dw3.data();
    g.w2 = r.dw2.data();
    layer.backward(p, b, cache, dy.data(), r.dx.data(), g);
  };
  Result clean, poisoned;
  run_duo(w1, w3, w2, clean);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t f = small; f < F; ++f)
    for (int64_t j = 0; j < d; ++j) {  // expert 0's units [small, F)
      w1[size_t(f * d + j)] = nan;
      w3[size_t(f * d + j)] = nan;
      w2[size_t(j * F + f)] = nan;
    }
  run_duo(w1, w3, w2, poisoned);
  EXPECT_EQ(clean.y, poisoned.y);
  EXPECT_EQ(clean.dx, poisoned.dx);
  EXPECT_EQ(clean.dgate, poisoned.dgate);
  EXPECT_EQ(clean.dw1, poisoned.dw1);
  EXPECT_EQ(clean.dw3, poisoned.dw3);
  EXPECT_EQ(clean.dw2, poisoned.dw2);
  for (int64_t f = small; f < F; ++f)
    for (int64_t j = 0; j < d; ++j) {
      EXPECT_EQ(clean.dw1[size_t(f * d + j)], 0.0f);
      EXPECT_EQ(clean.dw3[size_t(f * d + j)], 0.0f);
      EXPECT_EQ(clean.dw2[size_t(j * F + f)], 0.0f);
    }
}

// What the width hook does not carry is refused with a message naming the router.
TEST(ElasticWidth, Bf16ExpertsAreRefused) {
  const MoEShape shape{4, 2, 4, 0};
  MoELayer layer(switchyard::parse_layer_config({{"router", "duollm"}}, "test_layer_seams"), shape);
  const std::vector<float> x(8, 0.5f), gate(8, 0.1f);
  const std::vector<uint16_t> w(32, 0x3f80);
  MoEParams p;
  p.gate = gate.data();
  p.w1_bf16 = w.data();
  p.w3_bf16 = w.data();
  p.w2_bf16 = w.data();
  MoEBatch b;
  b.T = 2;
  b.x = x.data();
  MoECache cache;
  std::vector<float> y(8);
  try {
    layer.forward(p, b, cache, y.data());
    FAIL() << "BF16 experts with per-assignment widths were accepted";
  } catch (const switchyard::Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("duollm"));
    EXPECT_THAT(e.what(), ::testing::HasSubstr("BF16"));
  }
}

// A dispatcher that moves rows elsewhere (here a stand-in for the expert-parallel one) does
// not carry the widths: the layer refuses it for an elastic-width router, and takes it for others.
class RemoteDispatcher final : public switchyard::layer::TokenDispatcher {
 public:
  int64_t dispatch_preprocess(switchyard::RoutingPlan&, const float*, int64_t, int64_t, int64_t,
                              MoECache&) override {
    return 0;
  }
  void dispatch_communicate(int64_t, MoECache&) override {}
  void dispatch_postprocess(int64_t, MoECache&) override {}
  void combine(MoECache&, int64_t, int64_t, float*) override {}
  void combine_backward(const MoECache&, const float*, int64_t, float*, float*) override {}
  void dispatch_backward(const MoECache&, const float*, int64_t, int64_t, float*) override {}
};

TEST(ElasticWidth, NonLocalDispatcherIsRefused) {
  for (const char* router : {"duollm", "flextron"}) {
    SCOPED_TRACE(router);
    MoELayer layer(switchyard::parse_layer_config({{"router", router}}, "test_layer_seams"),
                   MoEShape{4, 2, 4, 0});
    try {
      layer.set_dispatcher(std::make_unique<RemoteDispatcher>());
      FAIL() << "a non-local dispatcher was accepted";
    } catch (const switchyard::Error& e) {
      EXPECT_THAT(e.what(), ::testing::HasSubstr(router));
      EXPECT_THAT(e.what(), ::testing::HasSubstr("expert parallelism"));
    }
  }
  MoELayer plain(switchyard::parse_layer_config({{"router", "mixtral"}}, "test_layer_seams"),
                 MoEShape{4, 2, 4, 0});
  EXPECT_NO_THROW(plain.set_dispatcher(std::make_unique<RemoteDispatcher>()));
}

}  // namespace elastic
