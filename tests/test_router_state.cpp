// Non-gradient router state through the public API (MoELayer::forward + update_router_state):
// DeepSeek-V3's aux-loss-free selection bias (b_i += u·sign(mean c − c_i), and that iterating it
// balances the load), ReMoE's λ (× α below the target zero fraction 1 − k/E, ÷ α otherwise), and
// the global-batch balance loss (counts of earlier micro-batches added to this call's counts).
// Random inputs; the seed is printed on failure and SWITCHYARD_TEST_SEED overrides it.
#include <gtest/gtest.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/model.h>
#include <switchyard/moe_layer.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "test_seed.h"

namespace switchyard {
namespace {

using nlohmann::json;

uint64_t base_seed() {
  return testing_support::test_base_seed();
}

std::string seed_trace() {
  return "seed " + std::to_string(base_seed()) +
         " (reproduce with SWITCHYARD_TEST_SEED=" + std::to_string(base_seed()) + ")";
}

// One generator per test, from the base seed and the test's name.
std::mt19937_64 test_rng() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string name = std::string(info->test_suite_name()) + "." + info->name();
  std::seed_seq seq{uint32_t(base_seed()), uint32_t(base_seed() >> 32),
                    uint32_t(std::hash<std::string>{}(name))};
  return std::mt19937_64(seq);
}

std::vector<float> normal(std::mt19937_64& rng, size_t n, double mean, double scale) {
  std::normal_distribution<double> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = float(dist(rng));
  return v;
}

// A SwiGLU layer's parameters (gate (E, d), experts) and an input x (T, d).
struct Problem {
  MoEShape shape;
  int64_t T = 0;
  std::vector<float> x, gate, w1, w3, w2;

  Problem(std::mt19937_64& rng, int64_t T_, int64_t d, int64_t E, int64_t F)
      : shape{d, E, F, 0}, T(T_) {
    x = normal(rng, size_t(T * d), 0.0, 1.0);
    gate = normal(rng, size_t(E * d), 0.0, 0.3);
    w1 = normal(rng, size_t(E * F * d), 0.0, 0.3);
    w3 = normal(rng, size_t(E * F * d), 0.0, 0.3);
    w2 = normal(rng, size_t(E * d * F), 0.0, 0.3);
  }
  MoEParams params(const float* bias = nullptr) const {
    return MoEParams{gate.data(), bias, w1.data(), w3.data(), w2.data(), nullptr, nullptr, nullptr};
  }
  MoEBatch batch() const {
    MoEBatch b;
    b.T = T;
    b.x = x.data();
    return b;
  }
};

std::unique_ptr<MoELayer> make_layer(const json& config, const MoEShape& shape) {
  return std::make_unique<MoELayer>(parse_layer_config(config, "test_router_state"), shape);
}

// Selection counts per true expert of the last forward (before any drop).
std::vector<double> counts_of(const MoECache& cache, int64_t E) {
  return std::vector<double>(cache.plan.selection_counts.begin(),
                             cache.plan.selection_counts.begin() + E);
}

// ---------------------------------------------------------------------------------------------
// DeepSeek-V3 aux-loss-free balancing.

constexpr double kBiasRate = 0.01;

json deepseek_config() {
  // The preset (sigmoid scores, route_scale 2.5) with one expert group and k = 2 for E = 8.
  return {{"router", "deepseek_v3"},
          {"k", 2},
          {"groups", 1},
          {"topk_groups", 1},
          {"bias_update_rate", kBiasRate},
          {"losses", json::object()}};
}

// A problem whose gate sends (nearly) every token to expert 0: x has a positive mean and gate row
// 0 is shifted towards the all-ones direction.
Problem skewed_problem(std::mt19937_64& rng) {
  Problem p(rng, 256, 16, 8, 8);
  for (float& v : p.x) v += 0.5f;
  for (int64_t j = 0; j < p.shape.d; ++j) p.gate[size_t(j)] += 1.0f;
  return p;
}

TEST(RouterState, BiasStepIsExactlyPlusMinusU) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const Problem p = skewed_problem(rng);
  const int64_t E = p.shape.E;
  auto layer = make_layer(deepseek_config(), p.shape);
  ASSERT_DOUBLE_EQ(layer->router().params().at("bias_update_rate").get<double>(), kBiasRate);

  // Two steps: from zero (changes are exactly ±u or 0), then from the updated bias.
  std::vector<float> bias(size_t(E), 0.0f);
  std::vector<float> y(size_t(p.T * p.shape.d));
  for (int step = 0; step < 2; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    MoECache cache;
    const RoutingStats& stats = layer->forward(p.params(bias.data()), p.batch(), cache, y.data());
    const std::vector<double> counts = counts_of(cache, E);
    // Dropless: the counts the update reads are the kept assignments.
    for (int64_t e = 0; e < E; ++e)
      ASSERT_EQ(counts[size_t(e)], double(stats.tokens_per_expert[size_t(e)])) << "expert " << e;
    const double mean = std::accumulate(counts.begin(), counts.end(), 0.0) / double(E);
    ASSERT_DOUBLE_EQ(mean, double(p.T) * 2.0 / double(E));
    if (step == 0) {
      ASSERT_GT(counts[0], 0.9 * double(p.T)) << "the skewed gate should pick expert 0";
    }

    const std::vector<float> before = bias;
    layer->update_router_state(cache, bias.data());
    int overloaded = 0, underloaded = 0;
    for (int64_t e = 0; e < E; ++e) {
      const double c = counts[size_t(e)];
      const float step_u = c > mean ? -float(kBiasRate) : c < mean ? float(kBiasRate) : 0.0f;
      overloaded += c > mean;
      underloaded += c < mean;
      EXPECT_EQ(bias[size_t(e)], before[size_t(e)] + step_u)
          << "expert " << e << ": count " << c << ", mean " << mean;
    }
    EXPECT_GE(overloaded, 1);
    EXPECT_GE(underloaded, 1);
    // The overloaded expert 0 loses exactly u (from 0 at step 0: the bias is -u).
    EXPECT_EQ(bias[0], before[0] - float(kBiasRate));
    if (step == 0) {
      EXPECT_EQ(bias[0], -float(kBiasRate));
    }
  }
}

TEST(RouterState, BiasUpdateWithoutRateOrBiasIsANoOp) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const Problem p = skewed_problem(rng);
  const int64_t E = p.shape.E;
  std::vector<float> y(size_t(p.T * p.shape.d));

  json config = deepseek_config();
  config["bias_update_rate"] = 0.0;
  auto layer = make_layer(config, p.shape);
  std::vector<float> bias = normal(rng, size_t(E), 0.0, 0.1);
  const std::vector<float> before = bias;
  MoECache cache;
  layer->forward(p.params(bias.data()), p.batch(), cache, y.data());
  layer->update_router_state(cache, bias.data());
  EXPECT_EQ(bias, before) << "bias_update_rate = 0 must leave the bias alone";

  // A positive rate with no bias tensor: nothing to update, and no crash.
  auto with_rate = make_layer(deepseek_config(), p.shape);
  with_rate->forward(p.params(), p.batch(), cache, y.data());
  with_rate->update_router_state(cache, nullptr);
}

TEST(RouterState, LossFreeBalancingReducesMaxVio) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const Problem p = skewed_problem(rng);
  const int64_t E = p.shape.E;
  auto layer = make_layer(deepseek_config(), p.shape);
  std::vector<float> bias(size_t(E), 0.0f);
  std::vector<float> y(size_t(p.T * p.shape.d));
  MoECache cache;

  constexpr int kSteps = 200, kTail = 20;
  std::vector<double> max_vio;
  for (int step = 0; step < kSteps; ++step) {
    layer->forward(p.params(bias.data()), p.batch(), cache, y.data());
    max_vio.push_back(cache.stats.max_vio);
    layer->update_router_state(cache, bias.data());
  }
  layer->forward(p.params(bias.data()), p.batch(), cache, y.data());
  max_vio.push_back(cache.stats.max_vio);

  const double start = max_vio.front(), end = max_vio.back();
  double tail = 0.0;
  for (int i = 0; i < kTail; ++i) tail += max_vio[max_vio.size() - 1 - size_t(i)] / kTail;
  ::testing::Message trace;
  trace << "MaxVio start " << start << ", after " << kSteps << " steps " << end
        << ", mean of the last " << kTail << " " << tail << "; bias";
  for (float b : bias) trace << ' ' << b;
  SCOPED_TRACE(trace);
  ASSERT_GT(start, 2.0) << "the skewed gate should start far from balance (max 3 for E = 8, k = 2)";
  EXPECT_LT(end, 0.5 * start);
  EXPECT_LT(tail, 0.5 * start);
  EXPECT_LT(tail, 0.5) << "the load should end close to balanced";
  // The overloaded expert ends with the lowest bias.
  EXPECT_EQ(std::min_element(bias.begin(), bias.end()) - bias.begin(), 0);
}

// ---------------------------------------------------------------------------------------------
// ReMoE's adaptive λ.

constexpr double kLambda0 = 1e-3, kLambdaRate = 1.2;

json remoe_config(double k) {
  return {{"router", "remoe"}, {"k", k}, {"lambda", kLambda0}, {"lambda_rate", kLambdaRate}};
}

double lambda_of(const MoELayer& layer) {
  return layer.router().params().at("lambda").get<double>();
}

// Zero fraction of the last forward: the share of (token, expert) pairs that routed nothing.
double zero_fraction(const MoECache& cache, int64_t E) {
  return 1.0 - double(cache.row_assignment.size()) / (double(cache.T) * double(E));
}

TEST(RouterState, ReMoELambdaFollowsTheZeroFraction) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  constexpr int64_t T = 64, d = 8, E = 4, F = 4;
  const double k = 1.0, target = 1.0 - k / double(E);  // 0.75
  Problem p(rng, T, d, E, F);
  for (float& v : p.x) v = std::abs(v) + 0.1f;  // positive inputs: the gate's sign decides
  std::vector<float> y(size_t(T * d));

  struct Setting {
    const char* name;
    std::vector<float> row_sign;  // sign of each gate row
    bool grows;                   // λ × α expected
  };
  const std::vector<Setting> settings = {
      {"all experts active (zero fraction 0 < 0.75)", {1, 1, 1, 1}, true},
      {"no expert active (zero fraction 1)", {-1, -1, -1, -1}, false},
      {"one of four active (zero fraction = 0.75 = target: shrinks)", {1, -1, -1, -1}, false},
      {"two of four active (zero fraction 0.5)", {-1, 1, 1, -1}, true},
  };
  for (const Setting& s : settings) {
    SCOPED_TRACE(s.name);
    Problem q = p;
    for (int64_t e = 0; e < E; ++e)
      for (int64_t j = 0; j < d; ++j)
        q.gate[size_t(e * d + j)] =
            s.row_sign[size_t(e)] * (std::abs(q.gate[size_t(e * d + j)]) + 0.01f);
    auto layer = make_layer(remoe_config(k), q.shape);
    ASSERT_DOUBLE_EQ(lambda_of(*layer), kLambda0);
    double expected = kLambda0;
    MoECache cache;
    for (int step = 0; step < 3; ++step) {
      layer->forward(q.params(), q.batch(), cache, y.data());
      const double zf = zero_fraction(cache, E);
      const double active = double(std::count(s.row_sign.begin(), s.row_sign.end(), 1.0f));
      ASSERT_DOUBLE_EQ(zf, 1.0 - active / double(E));
      EXPECT_DOUBLE_EQ(cache.stats.experts_per_token, active);
      layer->update_router_state(cache, nullptr);
      expected = s.grows ? expected * kLambdaRate : expected / kLambdaRate;
      EXPECT_EQ(zf < target, s.grows);
      EXPECT_DOUBLE_EQ(lambda_of(*layer), expected) << "step " << step << ", zero fraction " << zf;
    }
  }
}

TEST(RouterState, ReMoELambdaOnRandomInputs) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  constexpr int64_t T = 48, d = 8, E = 8, F = 4;
  const double k = 2.0, target = 1.0 - k / double(E);
  Problem p(rng, T, d, E, F);
  auto layer = make_layer(remoe_config(k), p.shape);
  std::vector<float> y(size_t(T * d));
  MoECache cache;
  double expected = kLambda0;
  int grew = 0, shrank = 0;
  for (int step = 0; step < 12; ++step) {
    // Shift the gate's rows to move the zero fraction across the target.
    Problem q = p;
    const double shift = std::uniform_real_distribution<double>(-0.6, 0.6)(rng);
    for (float& v : q.x) v = std::abs(v);
    for (float& w : q.gate) w += float(shift);
    layer->forward(q.params(), q.batch(), cache, y.data());
    const double zf = zero_fraction(cache, E);
    EXPECT_NEAR(zf, 1.0 - cache.stats.experts_per_token / double(E), 1e-12);
    layer->update_router_state(cache, nullptr);
    const bool grows = zf < target;
    (grows ? grew : shrank)++;
    expected = grows ? expected * kLambdaRate : expected / kLambdaRate;
    EXPECT_NEAR(lambda_of(*layer), expected, 1e-12 * expected)
        << "step " << step << ", zero fraction " << zf << ", target " << target;
    // The loss uses the current λ: L = λ E / (k T²) Σ_e (Σ_t R_te) c_e is reported as "router".
    ASSERT_TRUE(cache.stats.losses.count("router"));
  }
  SCOPED_TRACE("λ grew " + std::to_string(grew) + " times, shrank " + std::to_string(shrank));
  EXPECT_GT(grew + shrank, 0);
}

// ReMoE's threshold bias (bias_update_rate u > 0, beyond the paper): R = ReLU(z + b), and after a
// step b_e moves by exactly ±u towards the activation rate k/E. An expert closed for every token
// opens again once b has climbed past −max_t z_te; with u = 0 the bias is neither read nor moved.
TEST(RouterState, ReMoEThresholdBiasReopensClosedExperts) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  constexpr int64_t T = 64, d = 8, E = 4, F = 4;
  constexpr double k = 1.0, u = 0.05;
  Problem p(rng, T, d, E, F);
  for (float& v : p.x) v = std::abs(v) + 0.1f;  // positive inputs: the gate's sign decides
  for (int64_t e = 0; e < E; ++e)               // expert 0 open for every token, 1-3 closed
    for (int64_t j = 0; j < d; ++j)
      p.gate[size_t(e * d + j)] =
          (e == 0 ? 1.0f : -1.0f) * (std::abs(p.gate[size_t(e * d + j)]) + 0.01f);
  std::vector<float> y(size_t(T * d));
  // z_te of the closed experts, for the step at which each must open.
  std::vector<double> max_z(size_t(E), -1e30);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      double z = 0.0;
      for (int64_t j = 0; j < d; ++j)
        z += double(p.x[size_t(t * d + j)]) * double(p.gate[size_t(e * d + j)]);
      max_z[size_t(e)] = std::max(max_z[size_t(e)], z);
    }
  for (int64_t e = 1; e < E; ++e) ASSERT_LT(max_z[size_t(e)], -0.1) << "expert " << e;

  {
    SCOPED_TRACE("bias_update_rate 0: the paper's ReLU(z), the bias ignored and left alone");
    json config = remoe_config(k);
    config["bias_update_rate"] = 0.0;
    auto layer = make_layer(config, p.shape);
    std::vector<float> bias(size_t(E), 10.0f);
    MoECache cache;
    layer->forward(p.params(bias.data()), p.batch(), cache, y.data());
    EXPECT_DOUBLE_EQ(cache.stats.experts_per_token, 1.0);
    layer->update_router_state(cache, bias.data());
    EXPECT_EQ(bias, std::vector<float>(size_t(E), 10.0f));
  }

  json config = remoe_config(k);
  config["bias_update_rate"] = u;
  auto layer = make_layer(config, p.shape);
  std::vector<float> bias(size_t(E), 0.0f);
  std::vector<bool> opened(size_t(E), false);
  for (int step = 0; step < 200 && !(opened[1] && opened[2] && opened[3]); ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    MoECache cache;
    layer->forward(p.params(bias.data()), p.batch(), cache, y.data());
    const std::vector<double> counts = counts_of(cache, E);
    // The combine weight is z + b where it is positive.
    const RoutingPlan& plan = cache.plan;
    for (size_t a = 0; a < plan.size(); ++a) {
      const int64_t t = plan.token[a], e = plan.expert[a];
      double z = 0.0;
      for (int64_t j = 0; j < d; ++j)
        z += double(p.x[size_t(t * d + j)]) * double(p.gate[size_t(e * d + j)]);
      ASSERT_NEAR(plan.weight[a], z + double(bias[size_t(e)]), 1e-4) << "expert " << e;
      ASSERT_GT(plan.weight[a], 0.0f);
    }
    for (int64_t e = 1; e < E; ++e) {
      // Closed exactly while b_e has not passed −max_t z_te.
      const bool open = double(bias[size_t(e)]) + max_z[size_t(e)] > 1e-4;
      if (std::abs(double(bias[size_t(e)]) + max_z[size_t(e)]) > 1e-4) {
        ASSERT_EQ(counts[size_t(e)] > 0, open) << "expert " << e << ", bias " << bias[size_t(e)];
      }
      opened[size_t(e)] = opened[size_t(e)] || counts[size_t(e)] > 0;
    }
    const std::vector<float> before = bias;
    layer->update_router_state(cache, bias.data());
    for (int64_t e = 0; e < E; ++e) {
      const double rate = counts[size_t(e)] / double(T), target = k / double(E);
      const float want = before[size_t(e)] + (rate < target   ? float(u)
                                              : rate > target ? -float(u)
                                                              : 0.0f);
      EXPECT_EQ(bias[size_t(e)], want) << "expert " << e << ", rate " << rate;
    }
  }
  for (int64_t e = 1; e < E; ++e)
    EXPECT_TRUE(opened[size_t(e)]) << "expert " << e << " never opened";
  EXPECT_LT(bias[0], 0.0f) << "expert 0, active for every token, must have been pushed down";
}

// ---------------------------------------------------------------------------------------------
// Global-batch balance loss.

constexpr double kAlpha = 0.01;

json balance_config(const char* mode) {
  return {
      {"router", "mixtral"}, {"k", 2}, {"losses", {{"balance", kAlpha}, {"balance_mode", mode}}}};
}

// α R Σ_e f_e P_e with f = counts / Σ counts and P the mean softmax of the cached logits.
double balance_formula(const MoECache& cache, int64_t R, const std::vector<double>& counts) {
  std::vector<double> P(size_t(R), 0.0);
  for (int64_t t = 0; t < cache.T; ++t) {
    const float* z = cache.logits.data() + t * R;
    const double max = *std::max_element(z, z + R);
    double sum = 0.0;
    for (int64_t j = 0; j < R; ++j) sum += std::exp(double(z[j]) - max);
    for (int64_t j = 0; j < R; ++j)
      P[size_t(j)] += std::exp(double(z[j]) - max) / sum / double(cache.T);
  }
  const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  double loss = 0.0;
  for (int64_t j = 0; j < R; ++j) loss += counts[size_t(j)] / total * P[size_t(j)];
  return kAlpha * double(R) * loss;
}

double balance_of(const RoutingStats& stats) {
  const auto it = stats.losses.find("balance");
  return it == stats.losses.end() ? std::nan("") : it->second;
}

void expect_close(double a, double b, const std::string& what) {
  EXPECT_NEAR(a, b, 1e-10 * std::max(std::abs(a), std::abs(b)) + 1e-15) << what;
}

TEST(RouterState, GlobalBatchBalanceAddsTheEarlierCounts) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  constexpr int64_t T = 40, d = 8, E = 6, F = 4;
  const Problem first(rng, T, d, E, F);
  Problem second = first;
  second.x = normal(rng, size_t(T * d), 0.0, 1.0);
  for (int64_t i = 0; i < T * d; i += 3) second.x[size_t(i)] += 0.7f;  // a different load

  auto micro = make_layer(balance_config("micro_batch"), first.shape);
  auto global = make_layer(balance_config("global_batch"), first.shape);
  std::vector<float> y(size_t(T * d));
  MoECache c_micro, c_global, c_first;

  // Micro-batch 1 gives the earlier counts.
  micro->forward(first.params(), first.batch(), c_first, y.data());
  const std::vector<double> earlier = counts_of(c_first, E);
  ASSERT_DOUBLE_EQ(std::accumulate(earlier.begin(), earlier.end(), 0.0), double(2 * T));

  // Micro-batch 2: the micro-batch layer's loss is the formula with this call's counts c ...
  micro->forward(second.params(), second.batch(), c_micro, y.data());
  const std::vector<double> c = counts_of(c_micro, E);
  const double L_micro = balance_of(c_micro.stats);
  expect_close(L_micro, balance_formula(c_micro, E, c), "micro-batch loss vs formula(c)");

  // ... and the global-batch layer's loss is the same formula with c + earlier counts.
  MoEBatch b = second.batch();
  b.global_counts = earlier.data();
  global->forward(second.params(), b, c_global, y.data());
  ASSERT_EQ(c_global.logits, c_micro.logits);
  ASSERT_EQ(counts_of(c_global, E), c);
  std::vector<double> added(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; ++e) added[size_t(e)] = c[size_t(e)] + earlier[size_t(e)];
  const double L_global = balance_of(c_global.stats);
  expect_close(L_global, balance_formula(c_micro, E, added), "global-batch loss vs formula(c + g)");
  EXPECT_NE(c, added);

  // Without global counts, or with zeros, global-batch mode is micro-batch mode.
  MoEBatch none = second.batch();
  global->forward(second.params(), none, c_global, y.data());
  expect_close(balance_of(c_global.stats), L_micro, "global-batch without global_counts");
  const std::vector<double> zeros(size_t(E), 0.0);
  b.global_counts = zeros.data();
  global->forward(second.params(), b, c_global, y.data());
  expect_close(balance_of(c_global.stats), L_micro, "global-batch with zero counts");

  // Global counts given to a layer that is not in global-batch mode are a mistake, not ignored.
  b.global_counts = earlier.data();
  EXPECT_THROW(micro->forward(second.params(), b, c_micro, y.data()), switchyard::Error);
}

TEST(RouterState, GlobalBatchWithProportionalCountsMatchesMicroBatch) {
  // Earlier counts proportional to this call's leave f unchanged: the two layers agree on the
  // loss and on its gradient.
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  constexpr int64_t T = 32, d = 8, E = 4, F = 4;
  const Problem p(rng, T, d, E, F);
  auto micro = make_layer(balance_config("micro_batch"), p.shape);
  auto global = make_layer(balance_config("global_batch"), p.shape);
  std::vector<float> y_micro(size_t(T * d)), y_global(size_t(T * d));
  MoECache c_micro, c_global;
  micro->forward(p.params(), p.batch(), c_micro, y_micro.data());
  std::vector<double> g = counts_of(c_micro, E);
  for (double& v : g) v *= 3.0;
  MoEBatch b = p.batch();
  b.global_counts = g.data();
  global->forward(p.params(), b, c_global, y_global.data());
  EXPECT_EQ(y_micro, y_global);
  expect_close(balance_of(c_global.stats), balance_of(c_micro.stats), "loss");
  expect_close(c_global.stats.aux_loss, c_micro.stats.aux_loss, "aux_loss");

  const std::vector<float> dy = normal(rng, size_t(T * d), 0.0, 1.0);
  std::vector<float> dx_m(size_t(T * d)), dx_g(size_t(T * d)), dgate_m(size_t(E * d)),
      dgate_g(size_t(E * d));
  micro->backward(p.params(), p.batch(), c_micro, dy.data(), dx_m.data(),
                  MoEGrads{dgate_m.data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr});
  global->backward(p.params(), b, c_global, dy.data(), dx_g.data(),
                   MoEGrads{dgate_g.data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr});
  for (size_t i = 0; i < dgate_m.size(); ++i)
    EXPECT_NEAR(dgate_g[i], dgate_m[i], 1e-6f * (1.0f + std::abs(dgate_m[i]))) << "d_gate " << i;
  for (size_t i = 0; i < dx_m.size(); ++i)
    EXPECT_NEAR(dx_g[i], dx_m[i], 1e-6f * (1.0f + std::abs(dx_m[i]))) << "dx " << i;

  // Non-proportional counts change the gradient: the global counts reach backward.
  std::vector<double> skew(size_t(E), 0.0);
  skew[0] = 10.0 * double(T);
  b.global_counts = skew.data();
  global->forward(p.params(), b, c_global, y_global.data());
  global->backward(p.params(), b, c_global, dy.data(), dx_g.data(),
                   MoEGrads{dgate_g.data(), nullptr, nullptr, nullptr, nullptr, nullptr, nullptr});
  double diff = 0.0;
  for (size_t i = 0; i < dgate_m.size(); ++i) diff += std::abs(dgate_g[i] - dgate_m[i]);
  EXPECT_GT(diff, 1e-7) << "skewed global counts should change d_gate";
}

// A small model (4 experts, d = 16) for the model-level state tests.
ModelConfig small_model(int64_t layers) {
  ModelConfig c;
  c.vocab_size = 64;
  c.d_model = 16;
  c.n_layers = layers;
  c.n_heads = 2;
  c.seq_len = 8;
  c.experts = 4;
  c.d_ff = 8;
  c.dense_d_ff = 16;
  return c;
}

// The model feeds the global-batch balance loss across gradient-accumulation micro-batches: the
// second micro-batch's loss counts the first's choices too (f from both, P from its own tokens),
// and zero_grads (a new step) forgets them.
TEST(RouterState, ModelCarriesGlobalBatchCountsAcrossMicroBatches) {
  ModelConfig c = small_model(1);
  const double alpha = 0.1;
  c.router = {{"router", "topk"},
              {"k", 2},
              {"losses", {{"balance", alpha}, {"balance_mode", "global_batch"}}}};
  Model model(c, 5);
  const int64_t B = 2, T = c.seq_len, N = B * T;
  std::mt19937_64 rng(3);
  auto draw = [&] {
    std::vector<int32_t> v(static_cast<size_t>(N));
    for (auto& t : v) t = int32_t(rng() % uint64_t(c.vocab_size));
    return v;
  };
  const std::vector<int32_t> a = draw(), a_next = draw(), b = draw(), b_next = draw();
  // α R Σ_j (c_j / Σc) P_j with P the mean softmax of this micro-batch's logits.
  auto expected = [&](const MoECache& cache, const std::vector<double>& counts) {
    const int64_t R = c.experts;
    std::vector<double> P(static_cast<size_t>(R), 0.0);
    for (int64_t t = 0; t < N; ++t) {
      const float* z = cache.logits.data() + t * R;
      const double m = *std::max_element(z, z + R);
      double sum = 0.0;
      for (int64_t j = 0; j < R; ++j) sum += std::exp(double(z[j]) - m);
      for (int64_t j = 0; j < R; ++j) P[size_t(j)] += std::exp(double(z[j]) - m) / sum / double(N);
    }
    const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
    double loss = 0.0;
    for (int64_t j = 0; j < R; ++j) loss += counts[size_t(j)] / total * P[size_t(j)];
    return alpha * double(R) * loss;
  };
  model.zero_grads();
  model.forward(a.data(), a_next.data(), B, T, true);
  model.backward(0.5f);
  const std::vector<double> counts_a = model.layer_caches()[0]->plan.selection_counts;
  model.forward(b.data(), b_next.data(), B, T, true);
  const MoECache& second = *model.layer_caches()[0];
  std::vector<double> both = second.plan.selection_counts;
  for (size_t j = 0; j < both.size(); ++j) both[j] += counts_a[j];
  EXPECT_NEAR(second.stats.losses.at("balance"), expected(second, both), 1e-9);
  EXPECT_GT(std::abs(expected(second, both) - expected(second, second.plan.selection_counts)), 1e-6)
      << "the earlier counts must change this loss for the test to mean anything";
  model.backward(0.5f);
  model.zero_grads();  // a new step: only its own choices
  model.forward(b.data(), b_next.data(), B, T, true);
  const MoECache& fresh = *model.layer_caches()[0];
  EXPECT_NEAR(fresh.stats.losses.at("balance"), expected(fresh, fresh.plan.selection_counts), 1e-9);
}

// A logit function's tensors in a model (Router::logit_function): HyperRouter's hypernetwork is
// fixed (trainable = false) and only its embedding trains; X-MoE's three tensors all train, and
// neither router has a gate.weight.
TEST(RouterState, LogitFunctionTensorsTrainOrStayFixedAsDeclared) {
  for (const json& router :
       {json{{"router", "hyperrouter"}, {"hyper_hidden", 8}}, json{{"router", "xmoe"}}}) {
    SCOPED_TRACE(router.dump());
    ModelConfig c = small_model(2);
    c.router = router;
    Model model(c, 5);
    AdamWConfig oc;
    oc.warmup_steps = 1;
    oc.steps = 3;
    AdamW opt(oc, model.params().size());
    const std::vector<float> before = model.params();
    const int64_t B = 2, T = c.seq_len, N = B * T;
    std::mt19937_64 rng(11);
    std::vector<int32_t> tokens(static_cast<size_t>(N)), targets(static_cast<size_t>(N));
    for (auto& t : tokens) t = int32_t(rng() % uint64_t(c.vocab_size));
    for (auto& t : targets) t = int32_t(rng() % uint64_t(c.vocab_size));
    for (int64_t step = 0; step < 3; ++step) {
      model.zero_grads();
      model.forward(tokens.data(), targets.data(), B, T, true);
      model.backward();
      opt.step(model, step);
    }
    int router_tensors = 0;
    for (const ParamTensor& t : model.tensors()) {
      EXPECT_EQ(t.name.find("moe.gate.weight"), std::string::npos) << t.name;
      if (t.name.find(".moe.router.") == std::string::npos) continue;
      ++router_tensors;
      const bool changed =
          !std::equal(before.begin() + long(t.offset), before.begin() + long(t.offset + t.size),
                      model.params().begin() + long(t.offset));
      const bool fixed = t.name.find(".hyper_") != std::string::npos;
      EXPECT_EQ(t.trainable, !fixed) << t.name;
      EXPECT_EQ(changed, !fixed) << t.name << (fixed ? " must stay fixed" : " must train");
    }
    EXPECT_EQ(router_tensors, router.at("router") == "hyperrouter" ? 2 * 5 : 2 * 3);
  }
}

// ReMoE's λ follows the zero fraction averaged over the model's MoE layers (the paper's S), so
// every layer's λ moves together: the same value after each step, whatever each layer's own
// sparsity, and the direction the mean says.
TEST(RouterState, ReMoELambdaFollowsTheModelsMeanSparsity) {
  ModelConfig c = small_model(3);
  const int64_t B = 2, T = c.seq_len, N = B * T;
  std::mt19937_64 rng(4);
  std::vector<int32_t> x(static_cast<size_t>(N)), y(static_cast<size_t>(N));
  for (auto& t : x) t = int32_t(rng() % uint64_t(c.vocab_size));
  for (auto& t : y) t = int32_t(rng() % uint64_t(c.vocab_size));
  auto zeros = [&](const Model& m) {
    std::vector<double> z;
    for (const MoECache* cache : m.layer_caches())
      z.push_back(1.0 - double(cache->row_assignment.size()) / double(N * c.experts));
    return z;
  };
  // The target 1 - k/E between the mean sparsity and the sparsest layer: per-layer control would
  // move that layer's λ the other way, so the test tells the two apart.
  c.router = {{"router", "remoe"}, {"k", 1.0}, {"lambda", 1e-3}, {"lambda_rate", 2.0}};
  std::vector<double> z0;
  {
    Model probe(c, 11);
    probe.forward(x.data(), y.data(), B, T, true);
    z0 = zeros(probe);
  }
  const double mean0 = (z0[0] + z0[1] + z0[2]) / 3.0;
  const double far = *std::max_element(z0.begin(), z0.end());
  ASSERT_GT(far - mean0, 1e-3) << "the layers' sparsities must differ";
  const double target = 0.5 * (mean0 + far);
  c.router["k"] = double(c.experts) * (1.0 - target);
  Model model(c, 11);
  for (int step = 0; step < 3; ++step) {
    if (step > 0) {
      for (auto& t : x) t = int32_t(rng() % uint64_t(c.vocab_size));
      for (auto& t : y) t = int32_t(rng() % uint64_t(c.vocab_size));
    }
    model.zero_grads();
    model.forward(x.data(), y.data(), B, T, true);
    model.backward(1.0f);
    const json before = model.state();
    const std::vector<double> z = zeros(model);
    const double mean_zero = (z[0] + z[1] + z[2]) / 3.0;
    if (step == 0) {
      EXPECT_LT(mean_zero, target);
      EXPECT_GT(far, target);
    }
    model.update_router_state();
    const json after = model.state();
    for (size_t l = 0; l < 3; ++l) {
      const double was = before["moe_layers"][l]["router"]["lambda"].get<double>();
      const double now = after["moe_layers"][l]["router"]["lambda"].get<double>();
      EXPECT_DOUBLE_EQ(now, mean_zero < target ? was * 2.0 : was / 2.0) << "layer " << l;
      EXPECT_DOUBLE_EQ(now, after["moe_layers"][0]["router"]["lambda"].get<double>());
    }
  }
}

// ---------------------------------------------------------------------------------------------
// MaskMoE: the masks come from token counts set on the router (Router::set_token_frequencies) and
// travel in its state.

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Each id keeps one fixed set of experts (1 for ids that are not frequent, at most V for frequent
// ones), an infrequent token goes to its one expert with weight 1, and a fresh layer given the
// first one's state routes identically.
TEST(RouterState, MaskMoEMasksAreFixedPerIdAndTravelInTheState) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const int64_t T = 200, E = 8, V = 3, vocab = 20;
  Problem p(rng, T, 16, E, 8);
  std::vector<int64_t> counts(static_cast<size_t>(vocab)), ids(static_cast<size_t>(T));
  for (int64_t& c : counts) c = std::max<int64_t>(int64_t(rng() % 40) - 10, 0);
  for (int64_t& v : ids) v = int64_t(rng() % uint64_t(vocab));
  MoEBatch batch = p.batch();
  batch.token_ids = ids.data();
  const json config = {{"router", "maskmoe"}, {"k", 2}, {"visible_experts", V}};
  auto first = make_layer(config, p.shape);
  first->set_token_frequencies(counts, "test counts");
  MoECache cache;
  std::vector<float> y(size_t(T * p.shape.d));
  first->forward(p.params(), batch, cache, y.data());
  const std::vector<float> combine = first->combine_matrix(cache);

  // The frequent ids: the first ⌊0.4 n⌋ of the n that occur, by count descending, then id.
  std::vector<int64_t> order;
  for (int64_t v = 0; v < vocab; ++v)
    if (counts[size_t(v)] > 0) order.push_back(v);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return counts[size_t(a)] > counts[size_t(b)]; });
  std::vector<bool> frequent(static_cast<size_t>(vocab), false);
  for (size_t i = 0; i < order.size() * 2 / 5; ++i) frequent[size_t(order[i])] = true;
  std::vector<std::set<int64_t>> experts_of(static_cast<size_t>(vocab));
  for (int64_t t = 0; t < T; ++t) {
    int64_t routed = 0;
    for (int64_t e = 0; e < E; ++e)
      if (combine[size_t(t * E + e)] != 0.0f) {
        ++routed;
        experts_of[size_t(ids[size_t(t)])].insert(e);
      }
    const bool freq = frequent[size_t(ids[size_t(t)])];
    EXPECT_EQ(routed, freq ? 2 : 1) << "token " << t << " id " << ids[size_t(t)];
    for (int64_t e = 0; e < E && !freq; ++e) {  // the one visible expert, weight exactly 1
      EXPECT_TRUE(combine[size_t(t * E + e)] == 0.0f || combine[size_t(t * E + e)] == 1.0f);
    }
  }
  for (int64_t v = 0; v < vocab; ++v)
    EXPECT_LE(int64_t(experts_of[size_t(v)].size()), frequent[size_t(v)] ? V : 1) << "id " << v;

  const json state = first->router().state();
  EXPECT_EQ(state.at("token_counts").get<std::vector<int64_t>>(), counts);
  auto second = make_layer(config, p.shape);
  second->router().set_state(state);
  MoECache again;
  second->forward(p.params(), batch, again, y.data());
  EXPECT_EQ(second->combine_matrix(again), combine);
}

TEST(RouterState, MaskMoEWithoutCountsOrOutsideTheVocabularyNamesTheId) {
  std::mt19937_64 rng(3);
  Problem p(rng, 4, 8, 4, 4);
  std::vector<int64_t> ids = {0, 1, 7, 2};
  MoEBatch batch = p.batch();
  batch.token_ids = ids.data();
  auto layer = make_layer({{"router", "maskmoe"}}, p.shape);
  MoECache cache;
  std::vector<float> y(size_t(4 * p.shape.d));
  const std::string unset = error_of([&] { layer->forward(p.params(), batch, cache, y.data()); });
  EXPECT_NE(unset.find("maskmoe"), std::string::npos) << unset;
  EXPECT_NE(unset.find("token frequencies"), std::string::npos) << unset;
  layer->set_token_frequencies({3, 0, 5, 1, 2}, "test counts");
  const std::string outside = error_of([&] { layer->forward(p.params(), batch, cache, y.data()); });
  EXPECT_NE(outside.find("maskmoe"), std::string::npos) << outside;
  EXPECT_NE(outside.find("token id 7"), std::string::npos) << outside;
  EXPECT_NE(outside.find("vocabulary of 5"), std::string::npos) << outside;
  const std::string negative = error_of([&] {
    layer->set_token_frequencies({3, -1}, "test counts");
  });
  EXPECT_NE(negative.find("test counts"), std::string::npos) << negative;
  EXPECT_NE(negative.find("-1"), std::string::npos) << negative;
}

// ---------------------------------------------------------------------------------------------
// CompeteSMoE (docs/routers/competesmoe.md): which training calls compete (dense scoring), the
// warm-up counted in steps, the state.

const RouterStepStats kNoStats;

// One training forward of a CompeteSMoE layer on fixed random weights; returns whether it competed.
bool competesmoe_call(MoELayer& layer, const MoEShape& s) {
  std::mt19937_64 rng(11);
  std::normal_distribution<float> n(0.0f, 0.5f);
  auto draw = [&](int64_t size) {
    std::vector<float> v(static_cast<size_t>(size));
    for (float& x : v) x = n(rng);
    return v;
  };
  const int64_t T = 6;
  const std::vector<float> x = draw(T * s.d), gate = draw(s.E * s.d), w1 = draw(s.E * s.F * s.d),
                           w3 = draw(s.E * s.F * s.d), w2 = draw(s.E * s.d * s.F);
  MoEParams p;
  p.gate = gate.data();
  p.w1 = w1.data();
  p.w3 = w3.data();
  p.w2 = w2.data();
  MoEBatch b;
  b.T = T;
  b.x = x.data();
  MoECache c;
  std::vector<float> y(static_cast<size_t>(T * s.d));
  layer.forward(p, b, c, y.data());
  EXPECT_EQ(c.plan.size(), size_t(T * 2));  // k = 2 choices per token either way
  if (c.dense) {
    EXPECT_EQ(c.responses.size(), size_t(T * s.E * s.d));
    EXPECT_EQ(c.expert_offsets.back(), T * s.E) << "every token ran on every expert";
  } else {
    EXPECT_EQ(c.expert_offsets.back(), T * 2);
  }
  return c.dense;
}

TEST(RouterState, CompeteSMoECompetesAfterTheWarmupOnly) {
  const MoEShape shape{8, 4, 5, 0, 0};
  auto layer = make_layer(
      {{"router", "competesmoe"}, {"competition", 1.0}, {"warmup_steps", 2}, {"training", true}},
      shape);
  Router& router = layer->router();
  EXPECT_EQ(router.state(), json({{"steps", 0}}));
  EXPECT_FALSE(competesmoe_call(*layer, shape)) << "step 0 is in the warm-up";
  router.update_state(kNoStats);
  EXPECT_FALSE(competesmoe_call(*layer, shape)) << "step 1 is in the warm-up";
  router.update_state(kNoStats);
  EXPECT_TRUE(competesmoe_call(*layer, shape)) << "step 2: competition = 1 competes every call";
  layer->set_training(false);
  EXPECT_FALSE(competesmoe_call(*layer, shape)) << "evaluation never competes";
  // λ = 0 never competes; the warm-up from the run's schedule: W = ⌊0.25 · 12⌋ = 3.
  auto never =
      make_layer({{"router", "competesmoe"}, {"competition", 0.0}, {"training", true}}, shape);
  EXPECT_FALSE(competesmoe_call(*never, shape));
  auto scheduled = make_layer({{"router", "competesmoe"},
                               {"competition", 1.0},
                               {"warmup_fraction", 0.25},
                               {"training", true}},
                              shape);
  scheduled->router().set_schedule(TrainingSchedule{12});
  EXPECT_EQ(scheduled->router().params().at("warmup"), 3);
  for (int i = 0; i < 3; ++i) {
    EXPECT_FALSE(competesmoe_call(*scheduled, shape)) << "step " << i;
    scheduled->router().update_state(kNoStats);
  }
  EXPECT_TRUE(competesmoe_call(*scheduled, shape));
}

// λ = 0.4: the calls that compete are those whose first draw is below λ, the same for the same
// seed and call (so a resumed run, which restores the call counter, replays them), about 40%.
TEST(RouterState, CompeteSMoECompetitionIsAFunctionOfSeedAndCall) {
  const MoEShape shape{8, 4, 5, 0, 0};
  const json config = {
      {"router", "competesmoe"}, {"competition", 0.4}, {"training", true}, {"seed", 5}};
  auto a = make_layer(config, shape), b = make_layer(config, shape);
  std::vector<bool> first, second;
  for (int i = 0; i < 60; ++i) first.push_back(competesmoe_call(*a, shape));
  for (int i = 0; i < 60; ++i) second.push_back(competesmoe_call(*b, shape));
  EXPECT_EQ(first, second);
  const auto competed = std::count(first.begin(), first.end(), true);
  EXPECT_GT(competed, 10);
  EXPECT_LT(competed, 40);
  // Resuming at call 30 replays calls 30..59.
  auto c = make_layer(config, shape);
  c->set_calls(30);
  for (int i = 30; i < 60; ++i) EXPECT_EQ(competesmoe_call(*c, shape), first[size_t(i)]) << i;
}

TEST(RouterState, CompeteSMoEStateRoundTripsAndRejectsBadStates) {
  const MoEShape shape{8, 4, 5, 0, 0};
  auto first = make_layer({{"router", "competesmoe"}}, shape);
  for (int i = 0; i < 4; ++i) first->router().update_state(kNoStats);
  auto second = make_layer({{"router", "competesmoe"}}, shape);
  second->router().set_state(first->router().state());
  EXPECT_EQ(second->router().state(), json({{"steps", 4}}));
  for (const json& bad :
       {json{{"steps", -1}}, json{{"steps", 1.5}}, json::object(), json{{"stage", 1}}}) {
    SCOPED_TRACE(bad.dump());
    const std::string message = error_of([&] { second->router().set_state(bad); });
    EXPECT_NE(message.find("competesmoe"), std::string::npos) << message;
  }
  EXPECT_EQ(second->router().state(), json({{"steps", 4}})) << "left unchanged";
  const std::string k = error_of([&] { make_layer({{"router", "competesmoe"}, {"k", 5}}, shape); });
  EXPECT_NE(k.find("k = 5"), std::string::npos) << k;
}

// ---------------------------------------------------------------------------------------------
// StableMoE: the stage and the step count (Router::state), the switch at S₁.

TEST(RouterState, StableMoECountsStepsAndSwitchesAtS1) {
  const MoEShape shape{8, 4, 4, 0, 16};
  for (int64_t s1 : {0, 1, 3}) {
    SCOPED_TRACE("stage1_steps " + std::to_string(s1));
    auto layer =
        make_layer({{"router", "stablemoe"}, {"stage1_steps", s1}, {"vocab_size", 16}}, shape);
    Router& router = layer->router();
    EXPECT_EQ(router.state(), json({{"steps", 0}, {"stage", 1}}));
    for (int64_t n = 1; n <= 5; ++n) {
      router.update_state(kNoStats);
      EXPECT_EQ(router.state().at("steps"), n);
      EXPECT_EQ(router.state().at("stage"), n >= s1 ? 2 : 1) << "after " << n << " steps";
      EXPECT_EQ(router.params().at("stage"), n >= s1 ? 2 : 1);
      const std::vector<std::string> want =
          n >= s1 ? std::vector<std::string>{"token_embedding", "token_centroids"}
                  : std::vector<std::string>{};
      EXPECT_EQ(router.frozen_tensors(), want);
    }
  }
  // Stage 2 never returns to 1; a router that starts there stays.
  auto two = make_layer({{"router", "stablemoe"}, {"stage", 2}, {"vocab_size", 16}}, shape);
  two->router().update_state(kNoStats);
  EXPECT_EQ(two->router().state(), json({{"steps", 1}, {"stage", 2}}));
}

TEST(RouterState, StableMoEStateRoundTripsAndRejectsBadStates) {
  const MoEShape shape{8, 4, 4, 0, 16};
  const json config = {{"router", "stablemoe"}, {"stage1_steps", 10}, {"vocab_size", 16}};
  auto first = make_layer(config, shape);
  for (int i = 0; i < 4; ++i) first->router().update_state(kNoStats);
  auto second = make_layer(config, shape);
  second->router().set_state(first->router().state());
  EXPECT_EQ(second->router().state(), json({{"steps", 4}, {"stage", 1}}));
  second->router().set_state({{"steps", 12}, {"stage", 2}});
  EXPECT_EQ(second->router().state(), json({{"steps", 12}, {"stage", 2}}));
  for (const json& bad : {json{{"steps", 3}, {"stage", 3}}, json{{"steps", 3}, {"stage", 0}},
                          json{{"steps", -1}, {"stage", 1}}, json{{"steps", 3}}, json{{"stage", 1}},
                          json::object()}) {
    SCOPED_TRACE(bad.dump());
    const std::string message = error_of([&] { second->router().set_state(bad); });
    EXPECT_NE(message.find("stablemoe"), std::string::npos) << message;
  }
  EXPECT_EQ(second->router().state(), json({{"steps", 12}, {"stage", 2}})) << "left unchanged";
  const std::string stage3 = error_of([&] {
    make_layer({{"router", "stablemoe"}, {"stage", 3}, {"vocab_size", 16}}, shape);
  });
  EXPECT_NE(stage3.find("stage"), std::string::npos) << stage3;
}

TEST(RouterState, StableMoEWithoutAKnownSwitchNamesStage1Steps) {
  auto layer = make_layer({{"router", "stablemoe"}, {"vocab_size", 16}}, MoEShape{8, 4, 4, 0, 16});
  const std::string message = error_of([&] { layer->router().update_state(kNoStats); });
  EXPECT_NE(message.find("stage1_steps"), std::string::npos) << message;
}

// The switch in a model (docs/routers/stablemoe.md, sections 4 and 8): two MoE layers, S₁ = 3,
// 6 steps of the training loop (forward, backward, AdamW, update_router_state). The distilled
// router Q, K learns in steps 0..2 (step 2's update included) and is bit-identical from the start
// of step 3 on, its Adam moments too; the centroids W learn at every step; the router loss is
// 0 from step 3; from step 3 every occurrence of an id goes, in each layer, to argmax K Q[id].
TEST(RouterState, StableMoEModelFreezesTheDistilledRouterAtTheSwitch) {
  ModelConfig c = small_model(2);
  c.router = {{"router", "stablemoe"}, {"stage1_steps", 3}, {"distill_dim", 6}};
  Model model(c, 21);
  model.set_schedule(TrainingSchedule{6});
  AdamWConfig oc;
  oc.warmup_steps = 1;
  oc.steps = 6;
  oc.weight_decay = 0.1;
  AdamW opt(oc, model.params().size());
  const int64_t B = 2, T = c.seq_len, N = B * T, E = c.experts, D = 6;
  std::mt19937_64 rng(5);
  const std::vector<std::string> frozen = {"token_embedding", "token_centroids"};
  auto tensor_values = [&](const ParamTensor& t, const std::vector<float>& buffer) {
    return std::vector<float>(buffer.begin() + long(t.offset),
                              buffer.begin() + long(t.offset + t.size));
  };
  std::map<std::string, std::vector<float>> at_switch, at_switch_m, at_switch_v;
  for (int64_t step = 0; step < 6; ++step) {
    SCOPED_TRACE("step " + std::to_string(step));
    std::vector<int32_t> x(static_cast<size_t>(N)), y(static_cast<size_t>(N));
    for (auto& t : x) t = int32_t(rng() % 12);  // few ids: each occurs many times
    for (auto& t : y) t = int32_t(rng() % uint64_t(c.vocab_size));
    const std::vector<float> before = model.params();
    for (int64_t l = 0; l < 2; ++l)
      for (const std::string& name : frozen) {
        const std::string key = "layers." + std::to_string(l) + ".moe.router." + name;
        EXPECT_EQ(model.tensor(key).frozen, step >= 3) << key;
        if (step == 3) {
          at_switch[key] = tensor_values(model.tensor(key), model.params());
          at_switch_m[key] = tensor_values(model.tensor(key), opt.m());
          at_switch_v[key] = tensor_values(model.tensor(key), opt.v());
        }
      }
    model.zero_grads();
    model.forward(x.data(), y.data(), B, T, true);
    model.backward();
    const std::vector<const RoutingStats*> stats = model.layer_stats();
    const std::vector<const MoECache*> caches = model.layer_caches();
    for (int64_t l = 0; l < 2; ++l) {
      const double router_loss = stats[size_t(l)]->losses.at("router");
      if (step >= 3) {
        EXPECT_EQ(router_loss, 0.0) << "layer " << l;
      } else {
        EXPECT_GT(router_loss, 0.0) << "layer " << l;
      }
      if (step < 3) continue;
      // argmax_e K_e · Q[id] from the parameters, in double: the expert of every occurrence.
      const std::string p = "layers." + std::to_string(l) + ".moe.router.";
      const float* Q = model.params().data() + model.tensor(p + "token_embedding").offset;
      const float* K = model.params().data() + model.tensor(p + "token_centroids").offset;
      const RoutingPlan& plan = caches[size_t(l)]->plan;
      ASSERT_EQ(int64_t(plan.size()), N);
      for (size_t a = 0; a < plan.size(); ++a) {
        const int64_t id = x[size_t(plan.token[a])];
        int64_t best = 0;
        double best_value = -1e300;
        for (int64_t e = 0; e < E; ++e) {
          double dot = 0.0;
          for (int64_t j = 0; j < D; ++j) dot += double(Q[id * D + j]) * K[e * D + j];
          if (dot > best_value) best_value = dot, best = e;
        }
        EXPECT_EQ(plan.expert[a], best)
            << "layer " << l << " token " << plan.token[a] << " id " << id;
      }
    }
    opt.step(model, step);
    model.update_router_state();
    for (const ParamTensor& t : model.tensors()) {
      if (t.name.find(".moe.router.") == std::string::npos) continue;
      const bool distilled = t.name.ends_with(frozen[0]) || t.name.ends_with(frozen[1]);
      const bool changed = tensor_values(t, before) != tensor_values(t, model.params());
      EXPECT_EQ(changed, !distilled || step < 3) << t.name;
    }
    EXPECT_EQ(model.state()["moe_layers"][0]["router"]["stage"], step + 1 >= 3 ? 2 : 1);
  }
  for (const auto& [key, values] : at_switch) {
    const ParamTensor& t = model.tensor(key);
    EXPECT_EQ(tensor_values(t, model.params()), values) << key << " moved after the switch";
    EXPECT_EQ(tensor_values(t, opt.m()), at_switch_m[key]) << key << ": first moment";
    EXPECT_EQ(tensor_values(t, opt.v()), at_switch_v[key]) << key << ": second moment";
  }
  // A fresh model given the state is frozen too (resume, sample).
  Model again(c, 21);
  EXPECT_FALSE(again.tensor("layers.0.moe.router.token_embedding").frozen);
  again.set_state(model.state(), "test state");
  EXPECT_TRUE(again.tensor("layers.0.moe.router.token_embedding").frozen);
  EXPECT_TRUE(again.tensor("layers.1.moe.router.token_centroids").frozen);
  EXPECT_FALSE(again.tensor("layers.1.moe.router.centroids").frozen);
}

// RouterTensorSpec::Init::Orthogonal (torch.nn.init.orthogonal_): StableMoE's centroids W (E, d)
// and token centroids K (E, D) in a model have orthonormal rows times the gain 0.1 where E <= the
// width, orthonormal columns times 0.1 where E is larger; the token embedding is N(0, 1).
TEST(RouterState, OrthogonalInitialisationOfRouterTensors) {
  for (int64_t E : {4, 32}) {
    SCOPED_TRACE("E " + std::to_string(E));
    ModelConfig c = small_model(1);  // d = 16
    c.experts = E;
    c.router = {{"router", "stablemoe"}, {"distill_dim", 8}};
    const Model model(c, 9);
    for (const char* name : {"centroids", "token_centroids"}) {
      SCOPED_TRACE(name);
      const ParamTensor& t = model.tensor(std::string("layers.0.moe.router.") + name);
      const int64_t rows = t.shape[0], cols = t.shape[1];
      const float* w = model.params().data() + t.offset;
      const bool by_rows = rows <= cols;
      const int64_t n = by_rows ? rows : cols, len = by_rows ? cols : rows;
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) {
          double dot = 0.0;
          for (int64_t i = 0; i < len; ++i)
            dot += by_rows ? double(w[a * cols + i]) * w[b * cols + i]
                           : double(w[i * cols + a]) * w[i * cols + b];
          EXPECT_NEAR(dot, a == b ? 0.01 : 0.0, 1e-6) << a << ", " << b;
        }
    }
    const ParamTensor& q = model.tensor("layers.0.moe.router.token_embedding");
    EXPECT_EQ(q.shape, (std::vector<int64_t>{c.vocab_size, 8}));
    double sq = 0.0;
    for (size_t i = 0; i < q.size; ++i)
      sq += double(model.params()[q.offset + i]) * model.params()[q.offset + i];
    EXPECT_NEAR(std::sqrt(sq / double(q.size)), 1.0, 0.1) << "N(0, 1)";
    EXPECT_TRUE(model.tensor("layers.0.moe.router.centroids").decay);
    EXPECT_FALSE(q.decay);
    EXPECT_FALSE(model.tensor("layers.0.moe.router.token_centroids").decay);
  }
}

// AoE's W_down starts N(0, aoe_down_std) where set, else N(0, init_std) like the experts' tensors.
TEST(RouterState, AoeDownInitialisationScale) {
  const auto rms = [](const Model& model, const std::string& name) {
    const ParamTensor& t = model.tensor(name);
    double sq = 0.0;
    for (size_t i = 0; i < t.size; ++i)
      sq += double(model.params()[t.offset + i]) * model.params()[t.offset + i];
    return std::sqrt(sq / double(t.size));
  };
  ModelConfig c = small_model(1);  // d = 16
  c.router = {{"router", "aoe"}, {"aoe_rank", 8}};
  const Model plain(c, 9);
  EXPECT_NEAR(rms(plain, "layers.0.moe.router.down"), c.init_std, 0.1 * c.init_std);
  c.router["aoe_down_std"] = 0.08;
  const Model scaled(c, 9);
  EXPECT_NEAR(rms(scaled, "layers.0.moe.router.down"), 0.08, 0.008);
  // Only W_down changes: the experts' gate projection keeps the model's scale.
  EXPECT_EQ(rms(scaled, "layers.0.moe.experts.w1"), rms(plain, "layers.0.moe.experts.w1"));
}

// S₁ = ⌊stage1_fraction · total steps⌋ from the run's schedule; stage1_steps overrides it; a
// schedule whose S₁ has already passed (S₁ = 0) switches before the first step.
TEST(RouterState, StableMoETakesS1FromTheSchedule) {
  const MoEShape shape{8, 4, 4, 0, 16};
  auto switch_after = [&](const json& extra, int64_t total) {
    json config = {{"router", "stablemoe"}, {"vocab_size", 16}};
    config.update(extra);
    auto layer = make_layer(config, shape);
    layer->set_schedule(TrainingSchedule{total});
    int64_t n = 0;
    while (layer->router().state().at("stage") == 1 && n < 1000) {
      layer->router().update_state(kNoStats);
      ++n;
    }
    return n;
  };
  EXPECT_EQ(switch_after(json::object(), 30), 3);               // ⌊0.1 · 30⌋
  EXPECT_EQ(switch_after(json::object(), 39), 3);               // ⌊3.9⌋
  EXPECT_EQ(switch_after({{"stage1_fraction", 0.5}}, 9), 4);    // ⌊4.5⌋
  EXPECT_EQ(switch_after({{"stage1_steps", 7}}, 30), 7);        // the absolute step wins
  EXPECT_EQ(switch_after({{"stage1_fraction", 0.0}}, 30), 0);   // stage 2 from the first step
  EXPECT_EQ(switch_after({{"stage1_fraction", 0.05}}, 10), 0);  // ⌊0.5⌋ = 0
}

}  // namespace
}  // namespace switchyard
