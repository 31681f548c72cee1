// `switchyard demo`: the layer with a spread of routers on random data: routing statistics and
// timings in one table. (Until training lands, this is the README's main job.)
#include <fmt/format.h>
#include <switchyard/moe_layer.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "cli/commands.h"

namespace switchyard::cli {
namespace {

std::vector<float> random_vector(std::mt19937_64& rng, size_t n, float scale) {
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = normal(rng);
  return v;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int run_demo(int64_t T, int repeats) {
  const int64_t d = 256, E = 16, F = 256;
  const std::vector<std::pair<std::string, nlohmann::json>> runs = {
      {"mixtral", {{"router", "mixtral"}}},
      {"switch", {{"router", "switch"}, {"training", true}}},
      {"gshard", {{"router", "gshard"}, {"training", true}}},
      {"deepseek_v3", {{"router", "deepseek_v3"}, {"groups", 4}, {"topk_groups", 2}, {"k", 4}}},
      {"expert_choice", {{"router", "expert_choice"}}},
      {"hash", {{"router", "hash"}, {"table", "balanced"}}},
      {"base (train)", {{"router", "base"}, {"training", true}}},
      {"top_p", {{"router", "top_p"}}},
      {"remoe", {{"router", "remoe"}}},
      {"adamoe", {{"router", "adamoe"}}},
      {"smear", {{"router", "smear"}}},
      {"soft", {{"router", "soft"}}},
  };
  std::mt19937_64 rng(1234);
  const std::vector<float> x = random_vector(rng, size_t(T * d), 1.0f);
  const std::vector<float> dy = random_vector(rng, size_t(T * d), 1.0f);
  const std::vector<float> w1 = random_vector(rng, size_t(E * F * d), 1.0f / std::sqrt(float(d)));
  const std::vector<float> w3 = random_vector(rng, size_t(E * F * d), 1.0f / std::sqrt(float(d)));
  const std::vector<float> w2 = random_vector(rng, size_t(E * d * F), 1.0f / std::sqrt(float(F)));
  std::vector<int64_t> token_ids(static_cast<size_t>(T));
  std::uniform_int_distribution<int64_t> vocab(0, 255);
  for (auto& id : token_ids) id = vocab(rng);
  std::vector<int64_t> seq_lens(size_t(T / 256), 256);
  if (T % 256) seq_lens.push_back(T % 256);

  fmt::print(
      "switchyard demo: T = {} tokens ({} sequences), d = {}, E = {}, F = {}, SwiGLU, {} "
      "repeats\n\n",
      T, seq_lens.size(), d, E, F, repeats);
  fmt::print("{:<14} {:>7} {:>8} {:>7} {:>6} {:>8} {:>9} {:>9} {:>11}\n", "router", "exp/tok",
             "dropped", "MaxVio", "CV", "entropy", "aux_loss", "fwd ms", "fwd+bwd ms");
  for (const auto& [label, json] : runs) {
    const LayerConfig config = parse_layer_config(json, "demo");
    MoELayer layer(config, {d, E, F, 0});
    const int64_t R = layer.num_router_outputs();
    const std::vector<float> gate = random_vector(rng, size_t(R * d), 0.5f / std::sqrt(float(d)));
    MoEParams p{gate.data(), nullptr, w1.data(), w3.data(), w2.data()};
    MoEBatch batch{T, x.data(), token_ids.data(), seq_lens, nullptr};
    std::vector<float> y(size_t(T * d)), dx(size_t(T * d)), dgate(gate.size()), dw1(w1.size()),
        dw3(w3.size()), dw2(w2.size());
    MoEGrads grads{dgate.data(), dw1.data(), dw3.data(), dw2.data()};
    MoECache cache;
    std::vector<double> fwd, both;
    for (int i = 0; i < repeats + 1; ++i) {  // first run warms up
      const auto t0 = std::chrono::steady_clock::now();
      layer.forward(p, batch, cache, y.data());
      const auto t1 = std::chrono::steady_clock::now();
      layer.backward(p, batch, cache, dy.data(), dx.data(), grads);
      const auto t2 = std::chrono::steady_clock::now();
      if (i == 0) continue;
      fwd.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      both.push_back(std::chrono::duration<double, std::milli>(t2 - t0).count());
    }
    const RoutingStats& s = cache.stats;
    fmt::print("{:<14} {:>7.2f} {:>8} {:>7.3f} {:>6.3f} {:>8.3f} {:>9.2e} {:>9.1f} {:>11.1f}\n",
               label, s.experts_per_token, s.dropped, s.max_vio, s.cv, s.entropy, s.aux_loss,
               median(fwd), median(both));
  }
  fmt::print(
      "\nexp/tok: experts per token (SMEAR: one merged expert); dropped: assignments over "
      "capacity;\n"
      "MaxVio: (max load - mean load) / mean load; entropy: mean router entropy in nats.\n");
  return 0;
}

}  // namespace switchyard::cli
