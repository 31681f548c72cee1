// MindSkip / Router-Tuning (model attention_skip, docs/routers/mindskip.md) at the model level:
// the config's errors name the field; the option leaves every other tensor's initial values as
// they are without it; a skipped attention is not computed (its QKV weights may be NaN) and the
// model equals the one whose skipped attentions are removed; the gradient of the model loss
// with respect to the skip routers (and along the whole gradient) matches finite differences
// for the differentiable gate; and the straight-through gate's forward is the base model's
// where every sequence is kept. The PyTorch comparison is in test_model_golden.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/model.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "test_seed.h"

namespace switchyard {
namespace {

using nlohmann::json;

json base_json() {
  return {{"vocab_size", 29},
          {"d_model", 16},
          {"n_layers", 3},
          {"n_heads", 2},
          {"seq_len", 8},
          {"experts", 4},
          {"d_ff", 12},
          {"dense_d_ff", 12},
          {"moe_layers", {0, 2}},
          {"init_std", 0.3},
          {"router", {{"router", "mixtral"}, {"k", 2}}}};
}

ModelConfig config_with(const json& skip, int64_t k = 2) {
  json j = base_json();
  j["attention_skip"] = skip;
  j["router"]["k"] = k;
  return parse_model_config(j, "model.json");
}

std::vector<int32_t> random_tokens(size_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = int32_t(rng() % uint64_t(V));
  return t;
}

void expect_error(const json& skip, const std::string& what) {
  try {
    config_with(skip);
    ADD_FAILURE() << "accepted attention_skip = " << skip.dump();
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("model.json [attention_skip]")) << skip.dump();
    EXPECT_THAT(e.what(), ::testing::HasSubstr(what)) << skip.dump();
  }
}

TEST(AttentionSkipConfig, DefaultsRoundTripAndErrors) {
  const ModelConfig c = config_with(json::object());
  EXPECT_TRUE(c.attention_skip.enabled);
  EXPECT_EQ(c.attention_skip.threshold, 0.5);
  EXPECT_EQ(c.attention_skip.loss, 0.0);
  EXPECT_EQ(c.attention_skip.gate, AttentionSkipConfig::Gate::STE);
  // The released code's rule: the floor(L / 2) layers below the last (L = 3: layer 1).
  EXPECT_EQ(c.attention_skip.layers, std::vector<int64_t>({1}));
  const ModelConfig again = parse_model_config(c.to_json(), "again");
  EXPECT_EQ(again.to_json(), c.to_json());
  EXPECT_EQ(config_with({{"layers", "all"}}).attention_skip.layers,
            std::vector<int64_t>({0, 1, 2}));
  EXPECT_EQ(config_with({{"layers", {2, 0}}}).attention_skip.layers, std::vector<int64_t>({0, 2}));
  EXPECT_FALSE(parse_model_config(base_json(), "m").to_json().contains("attention_skip"))
      << "written only when set";

  expect_error({{"treshold", 0.5}}, "treshold");
  expect_error({{"threshold", 1.5}}, "'threshold'");
  expect_error({{"threshold", -0.1}}, "'threshold'");
  expect_error({{"threshold", "high"}}, "'threshold'");
  expect_error({{"loss", -1.0}}, "'loss'");
  expect_error({{"gate", "soft"}}, "'gate'");
  expect_error({{"layers", {3}}}, "'layers' has 3, not a layer index in [0, 3)");
  expect_error({{"layers", {1, 1}}}, "lists layer 1 twice");
  expect_error({{"layers", "some"}}, "'layers'");
  expect_error({{"layers", json::array()}}, "'layers'");
  json one = base_json();
  one["n_layers"] = 1;
  one["moe_layers"] = {0};
  one["attention_skip"] = json::object();
  EXPECT_THROW(parse_model_config(one, "model.json"), Error) << "no default layer for L = 1";
  one["attention_skip"] = "yes";
  EXPECT_THROW(parse_model_config(one, "model.json"), Error);
  // DA-MoE reads the importance of a skipped attention: refused for a skipping layer.
  json damoe = base_json();
  damoe["router"] = {{"router", "damoe"}, {"k", 2}, {"k_max", 4}};
  damoe["attention_skip"] = {{"layers", {0}}};
  try {
    Model model(parse_model_config(damoe, "model.json"), 1);
    ADD_FAILURE() << "damoe under attention_skip was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), ::testing::HasSubstr("attention_skip"));
  }
  damoe["attention_skip"] = {{"layers", {1}}};  // a dense layer: no MoE router reads it
  EXPECT_NO_THROW(Model(parse_model_config(damoe, "model.json"), 1));
}

// The skip routers are drawn after every other tensor: the rest starts as without the option.
TEST(AttentionSkip, OtherTensorsStartAsWithoutTheOption) {
  const uint64_t seed = testing_support::test_base_seed();
  const Model plain(parse_model_config(base_json(), "m"), seed);
  const Model skip(config_with({{"layers", "all"}}), seed);
  size_t compared = 0;
  for (const ParamTensor& t : skip.tensors()) {
    if (t.name.find(".attn_skip.") != std::string::npos) {
      EXPECT_EQ(t.shape, std::vector<int64_t>({1, 16})) << t.name;
      continue;
    }
    const ParamTensor& p = plain.tensor(t.name);
    ASSERT_EQ(p.size, t.size) << t.name;
    EXPECT_TRUE(std::equal(skip.params().begin() + long(t.offset),
                           skip.params().begin() + long(t.offset + t.size),
                           plain.params().begin() + long(p.offset)))
        << t.name;
    ++compared;
  }
  EXPECT_EQ(compared, plain.tensors().size());
  EXPECT_EQ(skip.tensors().size(), plain.tensors().size() + 3);
}

// Threshold above every score: every listed layer skips every sequence. Their QKV weights are
// NaN, which any attention computed there would spread; the output equals (bit for bit) the model
// without the option whose listed layers' attention output is zero (W_o = 0), in evaluation and
// in training, and no gradient reaches the skipped attention's weights.
TEST(AttentionSkip, SkippedAttentionIsNotComputed) {
  const uint64_t seed = testing_support::test_base_seed();
  for (const char* gate : {"ste", "score"}) {
    Model skip(config_with({{"layers", {0, 1}}, {"threshold", 1.0}, {"gate", gate}}), seed);
    Model plain(parse_model_config(base_json(), "m"), seed);
    for (int l : {0, 1}) {
      const std::string p = "layers." + std::to_string(l) + ".attn.";
      const ParamTensor& q = skip.tensor(p + "wqkv");
      std::fill_n(skip.params().begin() + long(q.offset), q.size,
                  std::numeric_limits<float>::quiet_NaN());
      const ParamTensor& o = plain.tensor(p + "wo");
      std::fill_n(plain.params().begin() + long(o.offset), o.size, 0.0f);
    }
    const int64_t B = 3, T = 8;
    const auto in = random_tokens(size_t(B * T), 29, seed + 1);
    const auto target = random_tokens(size_t(B * T), 29, seed + 2);
    for (bool training : {false, true}) {
      skip.zero_grads();
      plain.zero_grads();
      const double a = skip.forward(in.data(), target.data(), B, T, training);
      const double b = plain.forward(in.data(), target.data(), B, T, training);
      EXPECT_EQ(a, b) << gate << " training " << training;
      EXPECT_EQ(skip.logits(), plain.logits()) << gate << " training " << training;
      const auto stats = skip.attention_skip_stats();
      ASSERT_EQ(stats.size(), 2u);
      for (const auto& st : stats) {
        EXPECT_EQ(st.skip_rate, 1.0) << "layer " << st.layer;
        EXPECT_EQ(st.attention_runs, 0) << "layer " << st.layer;
        EXPECT_EQ(st.loss, 0.0);
      }
      if (!training) continue;
      skip.backward(1.0f);
      for (int l : {0, 1})
        for (const char* w : {"wqkv", "wo"}) {
          const ParamTensor& t = skip.tensor("layers." + std::to_string(l) + ".attn." + w);
          for (size_t i = 0; i < t.size; ++i)
            ASSERT_EQ(skip.grads()[t.offset + i], 0.0f) << t.name << " " << gate;
        }
      for (float g : skip.grads()) ASSERT_TRUE(std::isfinite(g));
    }
  }
}

// Threshold 0: every sequence is kept; with the straight-through gate the forward is the base
// model's exactly.
TEST(AttentionSkip, KeptEverywhereIsTheBaseModel) {
  const uint64_t seed = testing_support::test_base_seed();
  Model skip(config_with({{"layers", "all"}, {"threshold", 0.0}}), seed);
  Model plain(parse_model_config(base_json(), "m"), seed);
  const int64_t B = 2, T = 8;
  const auto in = random_tokens(size_t(B * T), 29, seed + 3);
  const auto target = random_tokens(size_t(B * T), 29, seed + 4);
  EXPECT_EQ(skip.forward(in.data(), target.data(), B, T, false),
            plain.forward(in.data(), target.data(), B, T, false));
  EXPECT_EQ(skip.logits(), plain.logits());
  for (const auto& st : skip.attention_skip_stats()) {
    EXPECT_EQ(st.skip_rate, 0.0);
    EXPECT_EQ(st.attention_runs, B);
  }
}

// The differentiable gate (g = s): ∂(CE + aux)/∂w per element by central differences, and the
// whole gradient along its own direction. Scores are spread by large router weights, and the
// decisions must not change within the steps; the MoE layers route every token to all 4
// experts (k = 4), so that no expert choice makes the loss jump.
TEST(AttentionSkip, GradientMatchesFiniteDifferences) {
  const uint64_t seed = testing_support::test_base_seed();
  Model model(
      config_with({{"layers", {0, 1}}, {"threshold", 0.45}, {"gate", "score"}, {"loss", 0.3}}, 4),
      seed);
  std::mt19937_64 rng(seed + 5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const ParamTensor& t : model.tensors())
    if (t.name.find(".attn_skip.") != std::string::npos)
      for (size_t i = 0; i < t.size; ++i) model.params()[t.offset + i] = normal(rng);
  const int64_t B = 6, T = 8;
  const auto in = random_tokens(size_t(B * T), 29, seed + 6);
  const auto target = random_tokens(size_t(B * T), 29, seed + 7);
  auto objective = [&] {
    const double ce = model.forward(in.data(), target.data(), B, T, true);
    return ce + model.aux_loss();
  };
  auto decisions = [&] {
    std::vector<uint8_t> k;
    for (const auto& st : model.attention_skip_stats())
      k.insert(k.end(), st.kept.begin(), st.kept.end());
    return k;
  };
  model.zero_grads();
  objective();
  const std::vector<uint8_t> kept = decisions();
  size_t on = 0;
  for (uint8_t k : kept) on += k;
  ASSERT_GT(on, 0u) << "seed " << seed << ": nothing kept";
  ASSERT_LT(on, kept.size()) << "seed " << seed << ": nothing skipped";
  int64_t runs = 0;  // the attention ran for the kept sequences only
  for (const auto& st : model.attention_skip_stats()) runs += st.attention_runs;
  EXPECT_EQ(runs, int64_t(on));
  double margin = 1.0;
  for (const auto& st : model.attention_skip_stats())
    for (float s : st.scores) margin = std::min(margin, std::abs(double(s) - 0.45));
  model.backward(1.0f);
  const std::vector<float> g = model.grads(), p0 = model.params();

  double largest = 0.0;
  size_t checked = 0;
  for (const ParamTensor& t : model.tensors()) {
    if (t.name.find(".attn_skip.") == std::string::npos) continue;
    for (size_t i = 0; i < t.size; ++i) {
      const double h = 1e-2;
      model.params()[t.offset + i] = float(p0[t.offset + i] + h);
      const double up = objective();
      const bool same_up = decisions() == kept;
      model.params()[t.offset + i] = float(p0[t.offset + i] - h);
      const double down = objective();
      const bool same_down = decisions() == kept;
      model.params() = p0;
      if (!same_up || !same_down) continue;  // a decision crossed the threshold
      const double fd = (up - down) / (2 * h);
      largest = std::max(largest, std::abs(fd));
      ++checked;
      EXPECT_NEAR(g[t.offset + i], fd, 2e-4 + 1e-2 * std::abs(fd))
          << t.name << "[" << i << "] seed " << seed << " margin " << margin;
    }
  }
  EXPECT_GT(checked, 24u) << "most elements stay clear of the threshold";
  EXPECT_GT(largest, 2e-2) << "the router's gradient is too small to check";
  double norm = 0.0;
  for (float v : g) norm += double(v) * double(v);
  norm = std::sqrt(norm);
  auto at = [&](double step) {
    for (size_t i = 0; i < p0.size(); ++i) model.params()[i] = p0[i] + float(step * g[i] / norm);
    const double v = objective();
    EXPECT_EQ(decisions(), kept) << "a decision flipped along the gradient (seed " << seed << ")";
    return v;
  };
  const double h = 1e-3;
  const double fd = (at(h) - at(-h)) / (2.0 * h);
  model.params() = p0;
  EXPECT_NEAR(fd, norm, 2e-2 * norm) << "seed " << seed;
}

// Two passes per step (THOR's consistency regularisation) with skipping layers: each pass keeps
// its own decisions and skip loss (swapped with the pass's activations), and the gradient of the
// whole objective matches a directional finite difference (the draws replayed by set_state).
TEST(AttentionSkip, TwoPassGradientMatchesADirectionalFiniteDifference) {
  const uint64_t seed = testing_support::test_base_seed();
  json j = base_json();
  j["router"] = {{"router", "thor"}, {"consistency", 5.0}};
  j["attention_skip"] = {{"layers", {0, 1}}, {"threshold", 0.45}, {"gate", "score"}, {"loss", 0.3}};
  Model model(parse_model_config(j, "model.json"), seed);
  std::mt19937_64 rng(seed + 8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const ParamTensor& t : model.tensors())
    if (t.name.find(".attn_skip.") != std::string::npos)
      for (size_t i = 0; i < t.size; ++i) model.params()[t.offset + i] = normal(rng);
  const int64_t B = 4, T = 8;
  const auto in = random_tokens(size_t(B * T), 29, seed + 9);
  const auto target = random_tokens(size_t(B * T), 29, seed + 10);
  const nlohmann::json state = model.state();
  auto objective = [&] {
    model.set_state(state, "test");
    const double ce = model.forward(in.data(), target.data(), B, T, true);
    return ce + model.aux_loss();
  };
  model.zero_grads();
  objective();
  double skip_loss = 0.0;
  for (const auto& st : model.attention_skip_stats()) skip_loss += st.loss;
  EXPECT_GT(skip_loss, 0.0);
  model.backward(1.0f);
  const std::vector<float> p0 = model.params();
  // Along the whole gradient, and along its skip-router part alone (which the rest would drown).
  for (bool routers_only : {false, true}) {
    std::vector<float> g = model.grads();
    if (routers_only)
      for (const ParamTensor& t : model.tensors())
        if (t.name.find(".attn_skip.") == std::string::npos)
          std::fill_n(g.begin() + long(t.offset), t.size, 0.0f);
    double norm = 0.0;
    for (float v : g) norm += double(v) * double(v);
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 0.0);
    auto at = [&](double step) {
      for (size_t i = 0; i < p0.size(); ++i) model.params()[i] = p0[i] + float(step * g[i] / norm);
      return objective();
    };
    const double h = routers_only ? 1e-2 : 1e-3;
    const double fd = (at(h) - at(-h)) / (2.0 * h);
    model.params() = p0;
    EXPECT_NEAR(fd, norm, 2e-2 * norm) << "seed " << seed << " routers only " << routers_only;
  }
}

}  // namespace
}  // namespace switchyard
