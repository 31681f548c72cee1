// Shared pieces of the tests that compare the fast MoE layer against the float64 reference
// (test_layer_vs_reference, test_gradients, test_routing_invariants): the random seed, problem
// construction (parameters, batch, noise) and the resampling that keeps discrete routing
// decisions well separated so that float32 and float64 agree on them.
#pragma once

#include <gtest/gtest.h>
#include <switchyard/config.h>
#include <switchyard/moe_layer.h>
#include <switchyard/reference.h>
#include <switchyard/router.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "test_seed.h"

namespace switchyard::testing_support {

// The run's base seed (tests/test_seed.h: fixed unless SWITCHYARD_TEST_SEED says otherwise).
inline uint64_t base_seed() {
  return test_base_seed();
}

// A generator for one test, from the base seed and the test's name.
inline std::mt19937_64 test_rng() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = info ? std::string(info->test_suite_name()) + "." + info->name() : "";
  std::seed_seq seq{uint32_t(base_seed()), uint32_t(base_seed() >> 32),
                    uint32_t(std::hash<std::string>{}(name))};
  return std::mt19937_64(seq);
}

inline std::string seed_trace() {
  return "reproduce with SWITCHYARD_TEST_SEED=" + std::to_string(base_seed());
}

// Values k/64 with integer k in [-64, 64]: products and their sums over d < 2^11 terms are exact
// in float32, so gate logits are bit-identical in float32 and float64 (no near-tie can flip).
inline float dyadic(std::mt19937_64& rng) {
  return float(std::uniform_int_distribution<int>(-64, 64)(rng)) / 64.0f;
}
inline std::vector<float> dyadic_vector(std::mt19937_64& rng, size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = dyadic(rng);
  return v;
}
inline std::vector<float> normal_vector(std::mt19937_64& rng, size_t n, double scale) {
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<float> v(n);
  for (float& x : v) x = float(dist(rng));
  return v;
}
inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// One layer problem: config, fast layer, parameters and batch in float32, with the draws the
// layer's first forward call makes.
struct Problem {
  LayerConfig config;
  MoEShape shape;
  int64_t T = 0;
  int64_t R = 0;
  std::unique_ptr<MoELayer> layer;
  nlohmann::json router_params;
  RouterTraits traits;
  RouterNoise noise;
  std::vector<float> x, gate, gate_bias, w1, w3, w2, shared_w1, shared_w3, shared_w2;
  std::vector<float> shared_gate;  // (d) Qwen2-MoE's shared-expert gate, or empty
  // The logit function's tensors (Router::logit_function), in its tensors() order, and names.
  std::vector<std::vector<float>> router;
  std::vector<std::string> router_names;
  mutable std::vector<const float*> router_views;
  std::vector<int64_t> token_ids, seq_lens;
  std::vector<int64_t> token_counts;  // (vocab) training-data id counts (MaskMoE), or empty
  std::vector<double> global_counts;
  // (T, C) the previous MoE layer's router carry (LogitFunction::carry_dim C > 0), or empty.
  std::vector<float> router_carry;
  // (T) per-token importance (RouterTraits::needs_token_importance, DA-MoE), or empty.
  std::vector<float> token_importance;

  std::string family() const { return router_params.at("router").get<std::string>(); }
  // The logit function reads token ids (LogitFunction::needs_vocab): ids lie in [0, shape.vocab).
  bool logits_read_ids() const {
    const LogitFunction* lf = layer->router().logit_function();
    return lf && lf->needs_vocab();
  }
  bool swiglu() const { return has_up_projection(config.activation); }  // w3 exists
  bool clamped() const { return config.activation == Activation::SwiGLUClamped; }

  MoEParams params() const {
    MoEParams p;
    p.gate = gate.empty() ? nullptr : gate.data();
    p.gate_bias = gate_bias.empty() ? nullptr : gate_bias.data();
    p.w1 = w1.data();
    p.w3 = w3.empty() ? nullptr : w3.data();
    p.w2 = w2.data();
    p.shared_w1 = shared_w1.empty() ? nullptr : shared_w1.data();
    p.shared_w3 = shared_w3.empty() ? nullptr : shared_w3.data();
    p.shared_w2 = shared_w2.empty() ? nullptr : shared_w2.data();
    p.shared_gate = shared_gate.empty() ? nullptr : shared_gate.data();
    router_views.clear();
    for (const auto& t : router) router_views.push_back(t.data());
    p.router = router.empty() ? nullptr : router_views.data();
    return p;
  }
  MoEBatch batch() const {
    MoEBatch b;
    b.T = T;
    b.x = x.data();
    b.token_ids = token_ids.empty() ? nullptr : token_ids.data();
    b.seq_lens = seq_lens;
    b.global_counts = global_counts.empty() ? nullptr : global_counts.data();
    b.router_carry = router_carry.empty() ? nullptr : router_carry.data();
    b.token_importance = token_importance.empty() ? nullptr : token_importance.data();
    return b;
  }
  reference::Params ref_params() const {
    reference::Params p;
    p.gate = to_double(gate);
    p.gate_bias = to_double(gate_bias);
    p.w1 = to_double(w1);
    p.w3 = to_double(w3);
    p.w2 = to_double(w2);
    p.shared_w1 = to_double(shared_w1);
    p.shared_w3 = to_double(shared_w3);
    p.shared_w2 = to_double(shared_w2);
    p.shared_gate = to_double(shared_gate);
    for (size_t i = 0; i < router.size(); ++i) p.router[router_names[i]] = to_double(router[i]);
    return p;
  }
  reference::Batch ref_batch() const {
    reference::Batch b;
    b.T = T;
    b.x = to_double(x);
    b.token_ids = token_ids;
    b.token_counts = token_counts;
    b.seq_lens = seq_lens;
    b.global_counts = global_counts;
    b.router_carry = to_double(router_carry);
    b.token_importance = to_double(token_importance);
    return b;
  }
  reference::Result reference(const reference::Params& p, const reference::Batch& b) const {
    return reference::forward(config, router_params, shape, R, p, b, noise);
  }
};

struct ProblemOptions {
  int64_t T = 7, E = 3, d = 13, F = 11, Fs = 0;
  bool shared_gate = false;       // Qwen2-MoE's sigmoid gate on the shared expert (Fs > 0)
  bool router_carry = true;       // a carry in for a carrying logit function (false: the first
                                  // MoE layer's zeros)
  std::vector<int64_t> seq_lens;  // empty = one sequence
  bool global_counts = false;
  bool gate_bias = false;
  bool zero_gate = false;  // all gate rows zero
  double bias_scale = 0.05;
};

// A new input row for token t; where the logits read token ids (StableMoE's distilled router),
// a new id too, so that a decision made by the id alone can move off a tie.
inline void fill_x_row(Problem& pb, std::mt19937_64& rng, int64_t t) {
  for (int64_t j = 0; j < pb.shape.d; ++j) pb.x[t * pb.shape.d + j] = dyadic(rng);
  if (pb.logits_read_ids())
    pb.token_ids[size_t(t)] = std::uniform_int_distribution<int64_t>(0, pb.shape.vocab - 1)(rng);
}

inline Problem make_problem(const nlohmann::json& layer_json, const ProblemOptions& o,
                            std::mt19937_64& rng) {
  Problem pb;
  pb.config = parse_layer_config(layer_json, "test layer.json");
  // The ids' vocabulary: the case's vocab_size, or a small one so that ids repeat (frequencies
  // matter for the balanced hash table).
  const int64_t vocab = pb.config.vocab_size > 0 ? pb.config.vocab_size : 2 * o.T + 4;
  pb.shape = MoEShape{o.d, o.E, o.F, o.Fs, vocab};
  pb.T = o.T;
  pb.layer = std::make_unique<MoELayer>(pb.config, pb.shape);
  pb.R = pb.layer->num_router_outputs();
  pb.router_params = pb.layer->router().params();
  pb.traits = pb.layer->router().traits();
  pb.noise = make_router_noise(pb.config, pb.traits, o.T, o.d, pb.R, 0);
  const int64_t d = o.d, E = o.E, F = o.F, Fs = o.Fs;
  pb.x = dyadic_vector(rng, size_t(o.T * d));
  if (const LogitFunction* lf = pb.layer->router().logit_function()) {
    // Random values; constants (the log scale) from their spec plus 0.3, so that a case whose
    // temperature starts at its floor runs clamped.
    for (const RouterTensorSpec& spec : pb.layer->router_tensor_specs()) {
      int64_t n = 1;
      for (int64_t v : spec.shape) n *= v;
      pb.router_names.push_back(spec.name);
      pb.router.push_back(spec.init == RouterTensorSpec::Init::Constant
                              ? std::vector<float>(size_t(n), float(spec.value + 0.3))
                              : normal_vector(rng, size_t(n), 1.0 / std::sqrt(double(d))));
    }
    if (const int64_t C = lf->carry_dim(d, pb.R); C > 0 && o.router_carry)
      pb.router_carry = normal_vector(rng, size_t(o.T * C), 0.5);
  } else if (pb.traits.needs_gate) {
    pb.gate = o.zero_gate ? std::vector<float>(size_t(pb.R * d), 0.0f)
                          : dyadic_vector(rng, size_t(pb.R * d));
  }
  if (o.gate_bias) {
    std::uniform_real_distribution<double> u(-o.bias_scale, o.bias_scale);
    pb.gate_bias.resize(size_t(E));
    for (float& b : pb.gate_bias) b = float(u(rng));
  }
  // w1 reads x (d), or the logit function's per-expert activations (gate_in, AoE).
  const int64_t w1_in = pb.layer->shape().w1_in();
  pb.w1 = normal_vector(rng, size_t(E * F * w1_in), 1.0 / std::sqrt(double(w1_in)));
  if (pb.swiglu()) pb.w3 = normal_vector(rng, size_t(E * F * d), 1.0 / std::sqrt(double(d)));
  pb.w2 = normal_vector(rng, size_t(E * d * F), 1.0 / std::sqrt(double(F)));
  if (Fs > 0) {
    pb.shared_w1 = normal_vector(rng, size_t(Fs * d), 1.0 / std::sqrt(double(d)));
    if (pb.swiglu()) pb.shared_w3 = normal_vector(rng, size_t(Fs * d), 1.0 / std::sqrt(double(d)));
    pb.shared_w2 = normal_vector(rng, size_t(d * Fs), 1.0 / std::sqrt(double(Fs)));
    if (o.shared_gate) pb.shared_gate = normal_vector(rng, size_t(d), 1.0 / std::sqrt(double(d)));
  }
  if (pb.traits.needs_token_ids) {
    std::uniform_int_distribution<int64_t> id(0, vocab - 1);
    pb.token_ids.resize(size_t(o.T));
    for (int64_t& v : pb.token_ids) v = id(rng);
  }
  if (pb.traits.needs_token_frequencies) {
    // Counts over the ids' vocabulary, a quarter of them 0 (ids that never occur), so that
    // frequent and infrequent ids mix.
    std::uniform_int_distribution<int64_t> count(-10, 30);
    pb.token_counts.resize(size_t(2 * o.T + 4));
    for (int64_t& c : pb.token_counts) c = std::max<int64_t>(count(rng), 0);
    pb.layer->set_token_frequencies(pb.token_counts, "test token counts");
  }
  if (pb.traits.needs_token_importance) {
    // Multiples of 1/8 in [0, 4] (sums exact in float64, so every path finds the same K_t), a
    // tenth of them 0 (a token that gets k_min; a sequence that starts at mean 0).
    std::uniform_int_distribution<int> eighths(0, 32);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    pb.token_importance.resize(size_t(o.T));
    for (float& v : pb.token_importance) v = u(rng) < 0.1 ? 0.0f : float(eighths(rng)) / 8.0f;
  }
  pb.seq_lens = o.seq_lens;
  if (o.global_counts) {
    std::uniform_int_distribution<int> c(0, 50);
    pb.global_counts.resize(size_t(pb.R));
    for (double& v : pb.global_counts) v = double(c(rng));
  }
  return pb;
}

// ---------------------------------------------------------------------------------------------
// Well-separated routing: the tokens whose discrete decisions are within `margin` of flipping.

struct Margins {
  double score = 1e-4;     // probabilities / selection scores
  double logit = 1e-3;     // raw logits (ReMoE's sign, BASE's argmax)
  double priority = 1e-5;  // batch-priority first weights across tokens
  double clamp = 1e-4;     // swiglu_clamped: pre-activations against ±limit (the clamps' kinks)
};

inline std::vector<std::pair<int64_t, int64_t>> test_groups(const Problem& pb) {
  return routing_groups(pb.config.routing_groups, pb.seq_lens, pb.T);
}

inline std::vector<double> double_logits(const Problem& pb) {
  const int64_t d = pb.shape.d, R = pb.R;
  if (!pb.router.empty())
    return reference::router_logits(pb.router_params, pb.shape, R, pb.ref_params(), pb.ref_batch(),
                                    pb.noise);
  std::vector<double> z(static_cast<size_t>(pb.T * R), 0.0);
  if (pb.gate.empty()) return z;
  for (int64_t t = 0; t < pb.T; ++t)
    for (int64_t r = 0; r < R; ++r) {
      double sum = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        double xv = pb.x[t * d + j];
        if (!pb.noise.jitter.empty()) xv *= double(pb.noise.jitter[t * d + j]);
        sum += xv * double(pb.gate[r * d + j]);
      }
      z[t * R + r] = sum;
    }
  return z;
}

inline std::vector<double> softmax_of(const double* z, int64_t n) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < n; ++i) m = std::max(m, z[i]);
  std::vector<double> p(static_cast<size_t>(n));
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += (p[i] = std::exp(z[i] - m));
  for (double& v : p) v /= s;
  return p;
}

inline std::vector<int64_t> sorted_desc(const std::vector<double>& v) {
  std::vector<int64_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::stable_sort(idx.begin(), idx.end(), [&](int64_t a, int64_t b) { return v[a] > v[b]; });
  return idx;
}

// True when the first `positions` consecutive gaps of the descending values are all > margin.
inline bool gaps_ok(const std::vector<double>& values, int64_t positions, double margin) {
  const std::vector<int64_t> idx = sorted_desc(values);
  for (int64_t i = 0; i < positions && i + 1 < int64_t(idx.size()); ++i) {
    const double a = values[idx[i]], b = values[idx[i + 1]];
    if (b == -std::numeric_limits<double>::infinity()) break;
    if (!(a - b > margin)) return false;
  }
  return true;
}

inline void topk_bad_tokens(const Problem& pb, const std::vector<double>& z, const Margins& m,
                            std::vector<bool>& bad) {
  const auto& p = pb.router_params;
  const int64_t k = p.at("k"), G = p.at("groups"), TG = p.at("topk_groups");
  const std::string score = p.at("score");
  const bool normalize = p.at("normalize");
  const double scale = p.at("route_scale");
  const double cf = p.at(pb.config.training ? "capacity_factor" : "eval_capacity_factor");
  const bool random_second = pb.config.training && p.at("second_expert") == "random";
  const bool adaptive = p.at("second_expert") == "adaptive";
  const double broadcast = pb.config.training ? double(p.at("broadcast_threshold")) : 0.0;
  const double threshold = p.at("adaptive_threshold");
  // Sinkhorn selection (training): the balanced scores decide, computed as the reference does.
  std::vector<double> balanced;
  if (pb.config.training && p.at("selection") == "sinkhorn") {
    balanced.assign(size_t(pb.T * pb.shape.E), 0.0);
    for (const auto& g : test_groups(pb)) {
      if (g.second - g.first == 1) {  // selects by its scores
        std::fill_n(balanced.begin() + g.first * pb.shape.E, pb.shape.E,
                    std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      const std::vector<double> b =
          reference::sinkhorn_balanced(z, g, pb.shape.E, pb.R, p.at("sinkhorn_tolerance"));
      // Rows sum to 1/n: scaled to sum to 1, the margin means what it means for probabilities.
      const double n = double(g.second - g.first);
      for (size_t i = 0; i < b.size(); ++i) balanced[size_t(g.first * pb.shape.E) + i] = b[i] * n;
    }
  }
  const bool bpr = cf > 0.0 && p.at("drop_order") == "batch_priority";
  const int64_t E = pb.shape.E, R = pb.R;
  // LocMoE's selection bonus for the token's own node's (or rank's) experts.
  const double bonus = p.at("local_bonus");
  const ExpertPlacement& pl = pb.config.placement;
  const std::vector<int32_t> home =
      bonus > 0 ? token_home_ranks(pl, pb.seq_lens, pb.T) : std::vector<int32_t>{};
  const int64_t per_domain = p.at("locality") == "node" ? pl.ranks_per_node : 1;
  std::vector<double> first_weight(static_cast<size_t>(pb.T), 0.0);
  for (int64_t t = 0; t < pb.T; ++t) {
    std::vector<double> s(static_cast<size_t>(R));
    if (score == "sigmoid") {
      for (int64_t r = 0; r < R; ++r) s[r] = 1.0 / (1.0 + std::exp(-z[t * R + r]));
    } else if (score == "sqrtsoftplus") {
      for (int64_t r = 0; r < R; ++r) s[r] = std::sqrt(std::log1p(std::exp(z[t * R + r])));
    } else {
      s = softmax_of(&z[t * R], R);
    }
    std::vector<double> sel = s;
    for (int64_t e = 0; e < E && !pb.gate_bias.empty(); ++e) sel[e] += pb.gate_bias[e];
    for (int64_t e = 0; e < E && bonus > 0; ++e)
      if (e / (E / pl.expert_parallel) / per_domain == home[t] / per_domain) sel[e] += bonus;
    if (!balanced.empty() && !std::isnan(balanced[size_t(t * E)]))
      std::copy_n(balanced.begin() + t * E, E, sel.begin());
    if (G > 1 && TG < G) {
      const int64_t size = E / G;
      std::vector<double> gs(static_cast<size_t>(G));
      for (int64_t g = 0; g < G; ++g) {
        std::vector<double> mem(sel.begin() + g * size, sel.begin() + (g + 1) * size);
        std::sort(mem.rbegin(), mem.rend());
        gs[g] = size == 1 ? mem[0] : mem[0] + mem[1];
      }
      const auto gi = sorted_desc(gs);
      if (!(gs[gi[TG - 1]] - gs[gi[TG]] > m.score)) bad[t] = true;
      for (int64_t i = TG; i < G; ++i)
        for (int64_t e = gi[i] * size; e < (gi[i] + 1) * size; ++e)
          sel[e] = -std::numeric_limits<double>::infinity();
    }
    if (!gaps_ok(sel, k, m.score)) bad[t] = true;
    if (broadcast > 0 && R > 1) {  // GW-MoE: the normalised entropy must be clear of the threshold
      double sum = 0.0, h = 0.0;
      for (double v : s) sum += v;
      for (double v : s)
        if (v > 0) h -= v / sum * std::log(v / sum);
      if (!(std::abs(h / std::log(double(R)) - broadcast) > m.score)) bad[t] = true;
      if (h / std::log(double(R)) >= broadcast && cf > 0 && !gaps_ok(sel, R, m.score))
        bad[t] = true;  // every expert chosen: the whole order sets the capacity slots
    }
    const auto order = sorted_desc(sel);
    double norm = 0.0;
    for (int64_t i = 0; i < k; ++i)
      if (order[i] < E) norm += s[order[i]];
    auto weight = [&](int64_t e) { return (normalize ? s[e] / norm : s[e]) * scale; };
    first_weight[t] = order[0] < E ? weight(order[0]) : 0.0;
    if (adaptive && k >= 2 && order[0] < E && order[1] < E &&
        !(std::abs(s[order[0]] - s[order[1]] - threshold) > m.score))
      bad[t] = true;
    if (random_second)
      for (int64_t i = 1; i < k; ++i)
        if (order[i] < E && !(std::abs(2.0 * weight(order[i]) - pb.noise.uniform[t]) > m.score))
          bad[t] = true;
  }
  if (bpr && R > 1)  // one output: every first weight is exactly 1 in both precisions
    for (const auto& [b, e] : test_groups(pb))
      for (int64_t t = b; t < e; ++t)
        for (int64_t u = b; u < t; ++u)
          if (std::abs(first_weight[t] - first_weight[u]) <= m.priority) bad[t] = true;
}

inline void expert_choice_bad_tokens(const Problem& pb, const std::vector<double>& z,
                                     const Margins& m, std::vector<bool>& bad) {
  const double c = pb.router_params.at("capacity_factor");
  const int64_t E = pb.shape.E;
  std::vector<double> s(z.size());
  for (int64_t t = 0; t < pb.T; ++t) {
    const auto p = softmax_of(&z[t * E], E);
    std::copy(p.begin(), p.end(), s.begin() + t * E);
  }
  for (const auto& [b, end] : test_groups(pb)) {
    const int64_t n = end - b;
    const int64_t C = std::min(n, int64_t(std::ceil(double(n) * c / double(E))));
    if (C >= n) continue;
    for (int64_t e = 0; e < E; ++e) {
      std::vector<double> col(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) col[i] = s[(b + i) * E + e];
      const auto idx = sorted_desc(col);
      if (!(col[idx[C - 1]] - col[idx[C]] > m.score)) bad[b + idx[C]] = true;
    }
  }
}

inline void top_p_bad_tokens(const Problem& pb, const std::vector<double>& z, const Margins& m,
                             std::vector<bool>& bad) {
  const double thr = pb.router_params.at("threshold");
  const int64_t E = pb.shape.E;
  for (int64_t t = 0; t < pb.T; ++t) {
    const auto p = softmax_of(&z[t * E], E);
    const auto idx = sorted_desc(p);
    double run = 0.0;
    int64_t last = E - 1;
    for (int64_t i = 0; i < E; ++i) {
      run += p[idx[i]];
      if (!(std::abs(run - thr) > m.score)) bad[t] = true;
      if (run > thr) {
        last = i;
        break;
      }
    }
    if (!gaps_ok(p, last + 1, m.score)) bad[t] = true;
  }
}

// sparsemixer: per slot, the argmax of the remaining logits, every threshold-mask boundary and,
// in training, the Gumbel-perturbed argmax over the kept set must be clear by m.logit (the mask
// boundary measured in logits: |(z_max − z_j) − 2ε max(|z_j|, z_max)|). The Heun coin U > 0.75
// needs no margin: U is the same float in every path and 0.75 is exact, and resampling x could not
// move it anyway.
inline void sparsemixer_bad_tokens(const Problem& pb, const std::vector<double>& z,
                                   const Margins& m, std::vector<bool>& bad) {
  const int64_t E = pb.shape.E, n = 2 * E + 2;
  const double eps = pb.router_params.at("jitter_eps");
  const bool training = pb.config.training;
  for (int64_t t = 0; t < pb.T; ++t) {
    const double* zt = &z[t * E];
    int64_t first = -1;
    for (int64_t slot = 0; slot < 2; ++slot) {
      std::vector<double> rest(static_cast<size_t>(E), -std::numeric_limits<double>::infinity());
      for (int64_t j = 0; j < E; ++j)
        if (j != first) rest[j] = zt[j];
      if (!gaps_ok(rest, 1, m.logit)) bad[t] = true;
      const int64_t top = sorted_desc(rest)[0];
      const double zmax = rest[top];
      std::vector<double> perturbed(static_cast<size_t>(E),
                                    -std::numeric_limits<double>::infinity());
      for (int64_t j = 0; j < E; ++j) {
        if (j == first) continue;
        const double scale = std::max(std::abs(zt[j]), zmax);
        if (j != top && !(std::abs((zmax - zt[j]) - 2.0 * eps * scale) > m.logit)) bad[t] = true;
        if ((zmax - zt[j]) / scale > 2.0 * eps) continue;  // masked
        if (training)
          perturbed[j] =
              zt[j] - std::log(-std::log(double(pb.noise.uniform[t * n + slot * E + j])));
      }
      int64_t chosen = top;
      if (training) {
        if (!gaps_ok(perturbed, 1, m.logit)) bad[t] = true;
        chosen = sorted_desc(perturbed)[0];
      }
      first = chosen;
    }
  }
}

// rectify: the k + 1 best scores (the top-k set, its rank order, the fill-in candidate) must be
// clear by m.score; then, replaying the routing, an expert's fill-in boundary (its last filled
// candidate against the first left out) and a rectified token's best expert on its rank among
// those not serving it. Capacity positions are token positions, with no margin to keep.
inline void rectify_bad_tokens(const Problem& pb, const std::vector<double>& z, const Margins& m,
                               std::vector<bool>& bad) {
  const auto& p = pb.router_params;
  const int64_t E = pb.shape.E, k = p.at("k");
  const double cf = p.at("capacity_factor");
  const bool intra = p.at("intra_rank"), fill = bool(p.at("fill_in")) && k < E;
  std::vector<std::vector<double>> s(static_cast<size_t>(pb.T));
  std::vector<std::vector<int64_t>> order(static_cast<size_t>(pb.T));
  for (int64_t t = 0; t < pb.T; ++t) {
    s[t] = softmax_of(&z[t * E], E);
    order[t] = sorted_desc(s[t]);
    if (!gaps_ok(s[t], fill ? k + 1 : k, m.score)) bad[t] = true;
  }
  const std::vector<int32_t> home =
      intra ? token_home_ranks(pb.config.placement, pb.seq_lens, pb.T) : std::vector<int32_t>{};
  const int64_t per_rank = intra ? E / pb.config.placement.expert_parallel : E;
  for (const auto& [b, end] : test_groups(pb)) {
    const int64_t C = int64_t(std::ceil(double(end - b) * double(k) * cf / double(E)));
    std::vector<int64_t> used(static_cast<size_t>(E), 0);
    std::vector<std::vector<bool>> serving(static_cast<size_t>(end - b),
                                           std::vector<bool>(static_cast<size_t>(E), false));
    std::vector<int64_t> served(static_cast<size_t>(end - b), 0);
    for (int64_t r = 0; r < k; ++r)
      for (int64_t t = b; t < end; ++t) {
        const int64_t e = order[t][r];
        if (used[e] < C) {
          ++used[e];
          serving[t - b][e] = true;
          ++served[t - b];
        }
      }
    for (int64_t e = 0; fill && e < E; ++e) {
      std::vector<double> score;
      std::vector<int64_t> who;
      for (int64_t t = b; t < end; ++t)
        if (order[t][k] == e) {
          score.push_back(s[t][e]);
          who.push_back(t);
        }
      const std::vector<int64_t> rank = sorted_desc(score);
      const int64_t free = std::max<int64_t>(0, C - used[e]);
      for (int64_t i = 0; i < std::min<int64_t>(free, int64_t(who.size())); ++i) {
        serving[who[rank[i]] - b][e] = true;
        ++served[who[rank[i]] - b];
      }
      if (free > 0 && free < int64_t(who.size()) &&
          !(score[rank[free - 1]] - score[rank[free]] > m.score)) {
        bad[who[rank[free - 1]]] = true;
        bad[who[rank[free]]] = true;
      }
    }
    for (int64_t t = b; t < end && intra; ++t) {
      if (served[t - b] >= k) continue;
      std::vector<double> local(static_cast<size_t>(E), -std::numeric_limits<double>::infinity());
      for (int64_t e = home[t] * per_rank; e < (home[t] + 1) * per_rank; ++e)
        if (!serving[t - b][e]) local[e] = s[t][e];
      if (!gaps_ok(local, 1, m.score)) bad[t] = true;
    }
  }
}

// float64 pre-activations of token t: h1 = w1 g (n, F) and h3 = w3 x, n = E experts (and the
// shared expert's Fs values, appended) from the (n, F, ·) stacks; the gate input g is x, or where
// w1 reads the logit function's activations (gate_in r > 0, AoE) router.down's rows of expert e
// times the jittered x.
inline void pre_activations(const Problem& pb, int64_t t, std::vector<double>& h1,
                            std::vector<double>& h3) {
  const int64_t d = pb.shape.d, E = pb.shape.E, F = pb.shape.F, Fs = pb.shape.Fs;
  const int64_t gr = pb.layer->shape().gate_in;
  std::vector<double> x(static_cast<size_t>(d)), a(static_cast<size_t>(E * gr), 0.0);
  for (int64_t j = 0; j < d; ++j) x[size_t(j)] = pb.x[size_t(t * d + j)];
  if (gr > 0) {
    const std::vector<float>& down = pb.router.at(0);  // (R r, d)
    for (int64_t i = 0; i < E * gr; ++i)
      for (int64_t j = 0; j < d; ++j) {
        const double xr = pb.noise.jitter.empty()
                              ? x[size_t(j)]
                              : x[size_t(j)] * double(pb.noise.jitter[size_t(t * d + j)]);
        a[size_t(i)] += double(down[size_t(i * d + j)]) * xr;
      }
  }
  h1.assign(size_t(E * F + Fs), 0.0);
  h3.assign(size_t(E * F + Fs), 0.0);
  for (int64_t r = 0; r < E * F + Fs; ++r) {
    const bool shared = r >= E * F;
    const float* w3 = shared ? &pb.shared_w3[size_t((r - E * F) * d)] : &pb.w3[size_t(r * d)];
    for (int64_t j = 0; j < d; ++j) h3[size_t(r)] += double(w3[j]) * x[size_t(j)];
    if (!shared && gr > 0) {
      const int64_t e = r / F;
      for (int64_t j = 0; j < gr; ++j)
        h1[size_t(r)] += double(pb.w1[size_t(r * gr + j)]) * a[size_t(e * gr + j)];
      continue;
    }
    const float* w1 = shared ? &pb.shared_w1[size_t((r - E * F) * d)] : &pb.w1[size_t(r * d)];
    for (int64_t j = 0; j < d; ++j) h1[size_t(r)] += double(w1[j]) * x[size_t(j)];
  }
}

// swiglu_clamped: marks the tokens with a pre-activation within m.clamp of a clamp's kink (gate
// h1 at +limit, up h3 at ±limit), for every expert whether routed or not, the shared expert, and
// SMEAR's merged experts (p-weighted sums of the experts' pre-activations). A finite-difference
// step (1e-6) or float32 rounding cannot cross a kink at that distance.
inline void clamp_bad_tokens(const Problem& pb, const Margins& m, std::vector<bool>& bad) {
  if (!pb.clamped()) return;
  const int64_t d = pb.shape.d, E = pb.shape.E, F = pb.shape.F;
  const double limit = pb.config.swiglu_clamp.limit;
  auto near = [&](double h1, double h3) {
    return std::abs(h1 - limit) <= m.clamp || std::abs(h3 - limit) <= m.clamp ||
           std::abs(h3 + limit) <= m.clamp;
  };
  std::vector<double> h1, h3;
  if (pb.family() == "smear") {
    const auto seqs =
        routing_groups(RoutingGroups::Sequence, pb.seq_lens, pb.T);  // SMEAR's sequences
    for (const auto& [b, e] : seqs) {
      std::vector<double> mean(size_t(d), 0.0), z(size_t(E), 0.0);
      for (int64_t t = b; t < e; ++t)
        for (int64_t j = 0; j < d; ++j) {
          double xv = pb.x[size_t(t * d + j)];
          if (!pb.noise.jitter.empty()) xv *= double(pb.noise.jitter[size_t(t * d + j)]);
          mean[size_t(j)] += xv / double(e - b);
        }
      for (int64_t r = 0; r < E; ++r)
        for (int64_t j = 0; j < d; ++j)
          z[size_t(r)] += double(pb.gate[size_t(r * d + j)]) * mean[size_t(j)];
      const std::vector<double> p = softmax_of(z.data(), E);
      for (int64_t t = b; t < e; ++t) {
        pre_activations(pb, t, h1, h3);
        for (int64_t f = 0; f < F; ++f) {
          double g = 0.0, u = 0.0;
          for (int64_t ex = 0; ex < E; ++ex) {
            g += p[size_t(ex)] * h1[size_t(ex * F + f)];
            u += p[size_t(ex)] * h3[size_t(ex * F + f)];
          }
          if (near(g, u)) bad[size_t(t)] = true;
        }
        for (size_t r = size_t(E * F); r < h1.size(); ++r)
          if (near(h1[r], h3[r])) bad[size_t(t)] = true;
      }
    }
    return;
  }
  for (int64_t t = 0; t < pb.T; ++t) {
    pre_activations(pb, t, h1, h3);
    for (size_t r = 0; r < h1.size(); ++r)
      if (near(h1[r], h3[r])) bad[size_t(t)] = true;
  }
}

// How many of the pre-activations a forward used (the cache's h1, h3: dispatched rows or SMEAR's
// merged experts, and the shared expert's) the clamps cut: the gate above +limit, the up
// projection above +limit and below -limit. A clamped case that cuts none tests nothing.
struct ClampCounts {
  int64_t gate_top = 0, up_top = 0, up_bottom = 0;
};
inline ClampCounts clamp_counts(const Problem& pb, const MoECache& c) {
  ClampCounts n;
  const float limit = float(pb.config.swiglu_clamp.limit);
  for (const auto* v : {&c.h1, &c.shared_h1})
    for (float h : *v) n.gate_top += h > limit;
  for (const auto* v : {&c.h3, &c.shared_h3})
    for (float h : *v) {
      n.up_top += h > limit;
      n.up_bottom += h < -limit;
    }
  return n;
}

// Marks the tokens whose routing could differ between float32 and float64 (or flip under a
// finite-difference step), and (swiglu_clamped) those with a pre-activation at a clamp's kink.
inline std::vector<bool> bad_tokens(const Problem& pb, const Margins& m) {
  std::vector<bool> bad(static_cast<size_t>(pb.T), false);
  clamp_bad_tokens(pb, m, bad);
  const std::string f = pb.family();
  const std::vector<double> z = double_logits(pb);
  const int64_t R = pb.R;
  if (f == "topk") {
    topk_bad_tokens(pb, z, m, bad);
  } else if (f == "expert_choice") {
    expert_choice_bad_tokens(pb, z, m, bad);
  } else if (f == "top_p") {
    top_p_bad_tokens(pb, z, m, bad);
  } else if (f == "damoe") {  // K_t is exact (dyadic importances): the K_t-th score must be clear
    const double k = pb.router_params.at("k");
    const int64_t lo = std::min(pb.router_params.at("k_min").get<int64_t>(), R);
    const int64_t hi = std::min(pb.router_params.at("k_max").get<int64_t>(), R);
    for (const auto& [b, e] : routing_groups(RoutingGroups::Sequence, pb.seq_lens, pb.T)) {
      double sum = 0.0;
      for (int64_t t = b; t < e; ++t) {
        sum += double(pb.token_importance[size_t(t)]);
        const double mean = sum / double(t - b + 1);
        const double ratio = mean > 0.0 ? double(pb.token_importance[size_t(t)]) / mean : 1.0;
        const double K =
            std::clamp(std::min(std::floor(k * ratio + 0.5), double(R)), double(lo), double(hi));
        if (!gaps_ok(softmax_of(&z[t * R], R), int64_t(K), m.score)) bad[size_t(t)] = true;
      }
    }
  } else if (f == "smile") {  // both levels' argmax must be clear
    const int64_t N = pb.router_params.at("nodes");
    for (int64_t t = 0; t < pb.T; ++t) {
      const auto q = softmax_of(&z[t * R], N), r = softmax_of(&z[t * R + N], R - N);
      if (!gaps_ok(q, 1, m.score) || !gaps_ok(r, 1, m.score)) bad[t] = true;
    }
  } else if (f == "prototype") {  // every prototype's argmax must be clear
    const int64_t K = pb.router_params.at("prototypes"), M = pb.shape.E / K;
    for (int64_t t = 0; t < pb.T; ++t)
      for (int64_t p = 0; p < K; ++p)
        if (!gaps_ok(softmax_of(&z[t * R + p * M], M), 1, m.score)) bad[t] = true;
  } else if (f == "sparsemixer") {
    sparsemixer_bad_tokens(pb, z, m, bad);
  } else if (f == "rectify") {
    rectify_bad_tokens(pb, z, m, bad);
  } else if (f == "moec") {
    // The argmax over E must be clear and, where the dropout re-routes, the order within the
    // argmax's cluster. The drop test U < rate needs no margin (the same float in every path).
    const int64_t M = pb.router_params.at("cluster_size");
    const bool drop = pb.config.training && double(pb.router_params.at("cluster_dropout")) > 0.0;
    for (int64_t t = 0; t < pb.T; ++t) {
      const std::vector<double> p = softmax_of(&z[t * R], R);
      if (!gaps_ok(p, 1, m.score)) bad[t] = true;
      const int64_t first = sorted_desc(p)[0] / M * M;
      if (drop &&
          !gaps_ok(std::vector<double>(p.begin() + first, p.begin() + first + M), M - 1, m.score))
        bad[t] = true;
    }
  } else if (f == "maskmoe") {
    // The k best probabilities of the visible experts (softmax over them) must be clear.
    const std::vector<uint8_t> visible =
        reference::maskmoe_visible(pb.router_params, pb.token_counts, pb.token_ids, R);
    const int64_t k = pb.router_params.at("k");
    for (int64_t t = 0; t < pb.T; ++t) {
      std::vector<double> zt(z.begin() + t * R, z.begin() + (t + 1) * R);
      for (int64_t r = 0; r < R; ++r)
        if (!visible[size_t(t * R + r)]) zt[size_t(r)] = -std::numeric_limits<double>::infinity();
      std::vector<double> p = softmax_of(zt.data(), R);
      for (int64_t r = 0; r < R; ++r)
        if (!visible[size_t(t * R + r)]) p[size_t(r)] = -std::numeric_limits<double>::infinity();
      if (!gaps_ok(p, k, m.score)) bad[t] = true;
    }
  } else if (f == "stablemoe") {
    // The routing block's argmax: s in stage-1 training (the distillation target too), ŝ in
    // stage 2 and in evaluation (fill_x_row draws a new id for it). Capacity goes by position.
    const int64_t E = pb.shape.E;
    const bool backbone = pb.config.training && pb.router_params.at("stage") == 1;
    for (int64_t t = 0; t < pb.T; ++t) {
      const auto first = z.begin() + t * R + (backbone ? 0 : E);
      if (!gaps_ok(std::vector<double>(first, first + E), 1, m.logit)) bad[t] = true;
    }
  } else if (f == "competesmoe") {
    // The top k by the affinities on a competing call (every expert's output on every token, as
    // the reference computes them), else the top k of softmax(z).
    const int64_t k = pb.router_params.at("k"), E = pb.shape.E;
    const std::vector<double> s = reference::competesmoe_affinities(
        pb.config, pb.router_params, pb.shape, pb.ref_params(), pb.ref_batch(), pb.noise);
    for (int64_t t = 0; t < pb.T; ++t) {
      const std::vector<double> v =
          s.empty() ? softmax_of(&z[t * R], R)
                    : std::vector<double>(s.begin() + t * E, s.begin() + (t + 1) * E);
      if (!gaps_ok(v, k, m.score)) bad[t] = true;
    }
  } else if (f == "vqmoe") {
    // The nearest code (the codebook block's argmax) must be clear, and in pretrain the
    // continuous top-k set of softmax(s) as well.
    const int64_t E = pb.shape.E;
    const bool pretrain = pb.router_params.at("mode") == "pretrain";
    const int64_t k = pb.router_params.at("k");
    for (int64_t t = 0; t < pb.T; ++t) {
      const auto first = z.begin() + t * R;
      if (!gaps_ok(std::vector<double>(first + E, first + 2 * E), 1, m.logit)) bad[t] = true;
      if (pretrain && !gaps_ok(softmax_of(&z[t * R], E), k, m.score)) bad[t] = true;
    }
  } else if (f == "duollm") {
    // The argmax of softmax(z) over the outputs (random routes go by the uniform draw, the same
    // float in every path: no margin).
    const bool random = pb.config.training && pb.router_params.at("random_routes").get<bool>();
    for (int64_t t = 0; t < pb.T && !random; ++t)
      if (!gaps_ok(softmax_of(&z[t * R], R), 1, m.score)) bad[t] = true;
  } else if (f == "flextron") {
    // The top-k set of the experts block and the width block's argmax.
    const int64_t E = pb.shape.E, k = pb.router_params.at("k");
    for (int64_t t = 0; t < pb.T; ++t)
      if (!gaps_ok(softmax_of(&z[t * R], E), k, m.score) ||
          !gaps_ok(softmax_of(&z[t * R + E], R - E), 1, m.score))
        bad[t] = true;
  } else if (f == "remoe") {
    for (int64_t t = 0; t < pb.T; ++t)
      for (int64_t r = 0; r < R; ++r)
        if (!(std::abs(z[t * R + r]) > m.logit)) bad[t] = true;
  } else if (f == "base") {
    // In training the auction runs on exact (dyadic) logits; in eval the argmax must be clear.
    // With the finite differences of the gradient test the auction also needs clear logits.
    for (int64_t t = 0; t < pb.T; ++t)
      if (!gaps_ok(std::vector<double>(z.begin() + t * R, z.begin() + (t + 1) * R), 1, m.logit))
        bad[t] = true;
  }
  return bad;
}

// Resamples the offending tokens' inputs until every discrete decision is clear. Returns false
// when that did not converge.
inline bool separate_routing(Problem& pb, std::mt19937_64& rng, const Margins& m = {}) {
  for (int iter = 0; iter < 20000; ++iter) {
    const std::vector<bool> bad = bad_tokens(pb, m);
    bool any = false;
    for (int64_t t = 0; t < pb.T; ++t)
      if (bad[t]) {
        any = true;
        fill_x_row(pb, rng, t);
      }
    if (!any) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Comparisons.

inline double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::abs(x));
  return m;
}

template <typename A, typename B>
double max_abs_diff(const std::vector<A>& a, const std::vector<B>& b) {
  double m = 0.0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i)
    m = std::max(m, std::abs(double(a[i]) - double(b[i])));
  return m;
}

}  // namespace switchyard::testing_support
