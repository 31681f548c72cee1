// The model hook for consistency regularisation (Router::consistency_weight, THOR): a training
// forward runs two passes with independent draws, and backward gives the gradient of
// ½ (CE₁ + CE₂) + ½ α · mean symmetric KL. Checked: the symmetric KL's gradient against finite
// differences; the whole objective's gradient against a directional finite difference (the
// draws replayed through Model::state); that the passes route differently and that evaluation
// is reproducible; and the refusals.
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/model.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/ops.h"
#include "test_seed.h"

namespace switchyard {
namespace {

ModelConfig thor_config(double consistency, const std::string& draw = "group") {
  ModelConfig c;
  c.vocab_size = 23;
  c.seq_len = 8;
  c.d_model = 16;
  c.n_heads = 2;
  c.n_layers = 3;
  c.experts = 4;
  c.d_ff = 12;
  c.dense_d_ff = 12;
  c.moe_layers = {0, 2};
  c.init_std = 0.3;  // experts far apart: the two passes' distributions differ clearly
  c.router = {{"router", "thor"}, {"consistency", consistency}, {"train_draw", draw}};
  return c;
}

std::vector<int32_t> random_tokens(size_t n, int64_t V, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& v : t) v = int32_t(rng() % uint64_t(V));
  return t;
}

TEST(SymmetricKL, GradientMatchesFiniteDifferences) {
  const uint64_t seed = testing_support::test_base_seed();
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n01(0.0f, 1.5f);
  const int64_t N = 5, V = 7;
  std::vector<float> a(N * V), b(N * V), da(N * V), db(N * V);
  for (auto& v : a) v = n01(rng);
  for (auto& v : b) v = n01(rng);
  const float scale = 0.7f;
  const double value = ops::symmetric_kl(N, V, a.data(), b.data(), da.data(), db.data(), scale);
  EXPECT_GT(value, 0.0);
  EXPECT_NEAR(ops::symmetric_kl(N, V, a.data(), a.data(), nullptr, nullptr, 1.0f), 0.0, 1e-12);
  // Symmetric in its arguments.
  EXPECT_NEAR(ops::symmetric_kl(N, V, b.data(), a.data(), nullptr, nullptr, 1.0f), value, 1e-9);
  for (std::vector<float>* x : {&a, &b}) {
    const std::vector<float>& grad = x == &a ? da : db;
    for (int64_t i = 0; i < N * V; ++i) {
      const float keep = (*x)[size_t(i)], h = 1e-2f;
      (*x)[size_t(i)] = keep + h;
      const double up = ops::symmetric_kl(N, V, a.data(), b.data(), nullptr, nullptr, 1.0f);
      (*x)[size_t(i)] = keep - h;
      const double down = ops::symmetric_kl(N, V, a.data(), b.data(), nullptr, nullptr, 1.0f);
      (*x)[size_t(i)] = keep;
      const double fd = scale * (up - down) / (2.0 * h);
      EXPECT_NEAR(grad[size_t(i)], fd, 2e-4 + 1e-2 * std::abs(fd)) << "seed " << seed << " i " << i;
    }
  }
}

// The objective a two-pass training forward stands for: returned CE + aux_loss().
double objective(Model& model, const nlohmann::json& state, const std::vector<int32_t>& in,
                 const std::vector<int32_t>& target, int64_t B, int64_t T) {
  model.set_state(state, "test");
  const double ce = model.forward(in.data(), target.data(), B, T, true);
  return ce + model.aux_loss();
}

TEST(Consistency, GradientMatchesADirectionalFiniteDifference) {
  const uint64_t seed = testing_support::test_base_seed();
  for (const char* draw : {"group", "token"}) {
    Model model(thor_config(20.0, draw), seed);
    const int64_t B = 2, T = 8;
    const auto all = random_tokens(size_t(B * (T + 1)), 23, seed + 1);
    std::vector<int32_t> in, target;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        in.push_back(all[size_t(b * (T + 1) + t)]);
        target.push_back(all[size_t(b * (T + 1) + t + 1)]);
      }
    const nlohmann::json state = model.state();
    model.zero_grads();
    const double base = objective(model, state, in, target, B, T);
    // The term must weigh in the objective, or dropping its gradient would go unseen.
    ASSERT_GT(model.aux_loss(), 0.05 * base) << "the passes routed alike (seed " << seed << ")";
    model.backward(1.0f);
    EXPECT_THROW(model.backward(1.0f), Error);
    const std::vector<float> g = model.grads();
    double norm = 0.0;
    for (float v : g) norm += double(v) * double(v);
    norm = std::sqrt(norm);
    ASSERT_GT(norm, 0.0);
    const std::vector<float> p0 = model.params();
    auto at = [&](double step) {
      for (size_t i = 0; i < p0.size(); ++i) model.params()[i] = p0[i] + float(step * g[i] / norm);
      return objective(model, state, in, target, B, T);
    };
    const double h = 2e-3;
    const double fd = (at(h) - at(-h)) / (2.0 * h);
    model.params() = p0;
    EXPECT_NEAR(fd, norm, 2e-2 * norm) << "draw " << draw << " seed " << seed << " loss " << base;
  }
}

TEST(Consistency, EvaluationIsOnePassAndReproducible) {
  Model model(thor_config(1.0), 7);
  const int64_t B = 2, T = 8;
  const auto in = random_tokens(size_t(B * T), 23, 3);
  const auto target = random_tokens(size_t(B * T), 23, 4);
  const double first = model.forward(in.data(), target.data(), B, T, false);
  const std::vector<float> logits = model.logits();
  EXPECT_EQ(model.aux_loss(), 0.0);
  model.forward(in.data(), target.data(), B, T, true);  // a training step moves the draws on
  const double again = model.forward(in.data(), target.data(), B, T, false);
  EXPECT_EQ(first, again);
  EXPECT_EQ(logits, model.logits());
}

TEST(Consistency, RefusesGlobalBatchBalance) {
  ModelConfig c = thor_config(1.0);
  c.router["losses"] = {{"balance", 0.01}, {"balance_mode", "global_batch"}};
  EXPECT_THROW(Model(c, 1), Error);
}

}  // namespace
}  // namespace switchyard
