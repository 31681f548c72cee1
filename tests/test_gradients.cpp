// The fast layer's backward (MoELayer::backward, aux-loss gradients included) against central
// finite differences of the float64 reference, for every differentiable router; and the
// degenerate one-expert layer against a directly written dense FFN, forward and backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <numbers>
#include <numeric>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "reference_test_support.h"
#include "router_cases.h"

namespace switchyard {
namespace {

using nlohmann::json;
using namespace testing_support;

// Objective L = Σ y ⊙ dy + Σ carry ⊙ dc + aux_loss of the reference (dc: the gradient reaching
// the router carry out from the layers above, empty when the router carries none).
double objective(const reference::Result& r, const std::vector<double>& dy,
                 const std::vector<double>& dc) {
  double sum = r.aux_loss;
  for (size_t i = 0; i < dy.size(); ++i) sum += r.y[i] * dy[i];
  for (size_t i = 0; i < dc.size(); ++i) sum += r.router_carry[i] * dc[i];
  return sum;
}

// The discrete part of a routing result, which a finite-difference step must not change.
struct Pattern {
  std::vector<bool> support;
  std::vector<int64_t> tokens_per_expert;
  int64_t dropped = 0;
  bool operator==(const Pattern&) const = default;
};
Pattern pattern_of(const reference::Result& r) {
  Pattern p;
  for (double c : r.combine) p.support.push_back(c != 0.0);
  p.tokens_per_expert = r.tokens_per_expert;
  p.dropped = r.dropped;
  return p;
}

// One differentiable tensor: its float64 copy inside the reference inputs and the fast path's
// gradient.
struct Tensor {
  std::string name;
  std::vector<double>* values;
  const std::vector<float>* gradient;
};

class Gradients : public ::testing::TestWithParam<RouterCase> {};

TEST_P(Gradients, MatchFiniteDifferences) {
  SCOPED_TRACE(seed_trace());
  const RouterCase& gc = GetParam();
  const int64_t case_T = gc.sizes.value("T", int64_t(9)),
                case_Fs = gc.sizes.value("Fs", int64_t(0));
  SCOPED_TRACE("config " + gc.config.dump());
  std::mt19937_64 rng = test_rng();
  json config = gc.config;
  config["seed"] = std::uniform_int_distribution<int64_t>(0, 1 << 30)(rng);
  ProblemOptions o;
  o.T = case_T;
  o.E = gc.sizes.value("E", int64_t(3));
  o.Fs = case_Fs;
  o.gate_bias = gc.sizes.value("gate_bias", false);
  o.shared_gate = gc.sizes.value("shared_gate", false);
  o.router_carry = gc.sizes.value("router_carry", true);
  if (gc.sizes.value("sequences", false)) o.seq_lens = {case_T / 2, case_T - case_T / 2};
  if (config.contains("losses") && config["losses"].value("balance_mode", "") == "global_batch")
    o.global_counts = true;
  Problem pb = make_problem(config, o, rng);
  Margins margins;
  margins.score = 1e-3;
  margins.logit = 1e-2;
  margins.priority = 1e-3;
  ASSERT_TRUE(separate_routing(pb, rng, margins));

  const int64_t T = pb.T, d = pb.shape.d;
  const std::vector<float> dy = normal_vector(rng, size_t(T * d), 1.0);
  const int64_t C = pb.layer->router_carry_dim();
  const std::vector<float> dc = normal_vector(rng, size_t(T * C), 1.0);  // (T, C)

  // Fast path: forward then backward.
  MoECache cache;
  std::vector<float> y(static_cast<size_t>(T * d));
  pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
  std::vector<float> dx(pb.x.size()), dgate(pb.gate.size()), dw1(pb.w1.size()), dw3(pb.w3.size()),
      dw2(pb.w2.size()), dsw1(pb.shared_w1.size()), dsw3(pb.shared_w3.size()),
      dsw2(pb.shared_w2.size());
  MoEGrads grads;
  grads.gate = dgate.empty() ? nullptr : dgate.data();
  grads.w1 = dw1.data();
  grads.w3 = dw3.empty() ? nullptr : dw3.data();
  grads.w2 = dw2.data();
  grads.shared_w1 = dsw1.empty() ? nullptr : dsw1.data();
  grads.shared_w3 = dsw3.empty() ? nullptr : dsw3.data();
  grads.shared_w2 = dsw2.empty() ? nullptr : dsw2.data();
  std::vector<float> dsg(pb.shared_gate.size());
  grads.shared_gate = dsg.empty() ? nullptr : dsg.data();
  std::vector<std::vector<float>> d_router;
  std::vector<float*> d_router_views;
  for (const auto& t : pb.router) d_router.emplace_back(t.size(), 0.0f);
  for (auto& t : d_router) d_router_views.push_back(t.data());
  grads.router = d_router.empty() ? nullptr : d_router_views.data();
  std::vector<float> d_carry(pb.router_carry.size());
  grads.router_carry = d_carry.empty() ? nullptr : d_carry.data();
  pb.layer->backward(pb.params(), pb.batch(), cache, dy.data(), dx.data(), grads, 1.0f,
                     dc.empty() ? nullptr : dc.data());
  if (pb.clamped()) {  // the clamps cut some of the used pre-activations at both ends
    const ClampCounts n = clamp_counts(pb, cache);
    EXPECT_GT(n.gate_top, 0) << "no gate above +swiglu_limit: the case tests no clamp";
    EXPECT_GT(n.up_top, 0) << "no up projection above +swiglu_limit";
    EXPECT_GT(n.up_bottom, 0) << "no up projection below -swiglu_limit";
  }

  // Reference: central differences.
  reference::Params rp = pb.ref_params();
  reference::Batch rb = pb.ref_batch();
  const std::vector<double> dy64 = to_double(dy), dc64 = to_double(dc);
  const Pattern base_pattern = pattern_of(pb.reference(rp, rb));

  std::vector<Tensor> tensors = {
      {"x", &rb.x, &dx}, {"experts.w1", &rp.w1, &dw1}, {"experts.w2", &rp.w2, &dw2}};
  if (!pb.gate.empty()) tensors.push_back({"gate.weight", &rp.gate, &dgate});
  for (size_t i = 0; i < pb.router.size(); ++i)
    tensors.push_back(
        {"router." + pb.router_names[i], &rp.router.at(pb.router_names[i]), &d_router[i]});
  if (!pb.router_carry.empty()) tensors.push_back({"router_carry", &rb.router_carry, &d_carry});
  if (pb.swiglu()) tensors.push_back({"experts.w3", &rp.w3, &dw3});
  if (case_Fs > 0) {
    tensors.push_back({"shared.w1", &rp.shared_w1, &dsw1});
    tensors.push_back({"shared.w2", &rp.shared_w2, &dsw2});
    if (pb.swiglu()) tensors.push_back({"shared.w3", &rp.shared_w3, &dsw3});
    if (!pb.shared_gate.empty()) tensors.push_back({"shared.gate", &rp.shared_gate, &dsg});
  }

  const double h = 1e-6;
  for (const Tensor& tensor : tensors) {
    SCOPED_TRACE(tensor.name);
    std::vector<size_t> order(tensor.values->size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    double diff_sq = 0.0, fd_sq = 0.0;
    int checked = 0, skipped = 0;
    for (size_t i : order) {
      if (checked == 20) break;
      double& v = (*tensor.values)[i];
      const double saved = v;
      v = saved + h;
      const reference::Result plus = pb.reference(rp, rb);
      v = saved - h;
      const reference::Result minus = pb.reference(rp, rb);
      v = saved;
      if (!(pattern_of(plus) == base_pattern) || !(pattern_of(minus) == base_pattern)) {
        ++skipped;  // the step flipped a discrete routing decision
        continue;
      }
      const double fd = (objective(plus, dy64, dc64) - objective(minus, dy64, dc64)) / (2.0 * h);
      const double an = (*tensor.gradient)[i];
      EXPECT_LE(std::abs(fd - an), 2e-3 * std::max(1.0, std::abs(fd)))
          << tensor.name << "[" << i << "]: finite difference " << fd << ", backward " << an;
      diff_sq += (fd - an) * (fd - an);
      fd_sq += fd * fd;
      ++checked;
    }
    EXPECT_LE(skipped, checked) << "too many steps flipped the routing";
    EXPECT_LE(std::sqrt(diff_sq), 1e-2 * std::max(std::sqrt(fd_sq), 1e-3))
        << tensor.name << ": relative gradient error over " << checked << " elements";
  }
}

// The layer's forward, then its backward for the upstream gradient dy: ∂x and the router
// tensors' gradients (their buffers start at 7, so a gradient the backward leaves unwritten shows).
struct RouterGradients {
  std::vector<float> dx;
  std::vector<std::vector<float>> router;
};
RouterGradients router_gradients(const Problem& pb, const std::vector<float>& dy) {
  MoECache cache;
  std::vector<float> y(size_t(pb.T * pb.shape.d));
  pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
  RouterGradients out;
  out.dx.assign(pb.x.size(), 0.0f);
  std::vector<float*> views;
  for (const auto& t : pb.router) out.router.emplace_back(t.size(), 7.0f);
  for (auto& t : out.router) views.push_back(t.data());
  std::vector<float> dw1(pb.w1.size()), dw3(pb.w3.size()), dw2(pb.w2.size());
  MoEGrads grads;
  grads.w1 = dw1.data();
  grads.w3 = dw3.data();
  grads.w2 = dw2.data();
  grads.router = views.data();
  pb.layer->backward(pb.params(), pb.batch(), cache, dy.data(), out.dx.data(), grads);
  return out;
}

// StableMoE's distilled router (Q = router.token_embedding, K = router.token_centroids) learns only
// from the distillation loss of stage-1 training: there the rows of Q for ids absent from the
// batch get exactly 0; in evaluation, in stage 2, and with distill_loss 0, all of Q and K do.
TEST(Gradients, StableMoEDistilledRouterIsExactlyZeroWhereUnused) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const json base = {{"router", "stablemoe"}, {"vocab_size", 30}};
  const std::vector<std::pair<json, bool>> configs = {
      {{{"training", true}}, true},
      {{{"training", false}}, false},
      {{{"training", true}, {"stage", 2}}, false},
      {{{"training", true}, {"distill_loss", 0.0}}, false}};
  for (const auto& [extra, learns] : configs) {
    json config = base;
    config.update(extra);
    SCOPED_TRACE(config.dump());
    ProblemOptions o;
    o.T = 12;
    o.E = 4;
    Problem pb = make_problem(config, o, rng);
    const std::vector<float> dy = normal_vector(rng, size_t(pb.T * pb.shape.d), 1.0);
    const std::vector<std::vector<float>> d_router = router_gradients(pb, dy).router;
    ASSERT_EQ(pb.router_names,
              (std::vector<std::string>{"centroids", "token_embedding", "token_centroids"}));
    const int64_t D = pb.router_params.at("distill_dim");
    std::vector<bool> present(30, false);
    for (int64_t id : pb.token_ids) present[size_t(id)] = true;
    for (int64_t v = 0; v < 30; ++v) {
      bool nonzero = false;
      for (int64_t j = 0; j < D; ++j) nonzero |= d_router[1][size_t(v * D + j)] != 0.0f;
      EXPECT_EQ(nonzero, learns && present[size_t(v)]) << "row " << v << " of d token_embedding";
    }
    const bool k_nonzero =
        std::any_of(d_router[2].begin(), d_router[2].end(), [](float g) { return g != 0.0f; });
    EXPECT_EQ(k_nonzero, learns) << "d token_centroids";
    EXPECT_TRUE(std::any_of(d_router[0].begin(), d_router[0].end(), [](float g) {
      return g != 0.0f;
    })) << "the centroids learn through the gate in every stage";
  }
}

// VQMoE's L_vq has the value λ/T Σ (1 + β) ‖x − C_{e*}‖²/d, but VQ-VAE's stop-gradients send
// its codebook term to C only and its commitment term to x only, so finite differences of the
// value see both terms in each tensor. With dy = 0 and no balance loss, the backward must give
// ∂C = FD_C / (1 + β) and ∂x = FD_x · β / (1 + β), and nothing to the gate or the mixing gate.
TEST(Gradients, VQMoEStopGradientsSplitTheVQLoss) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  const double beta = 0.6;
  for (const char* mode : {"finetune", "pretrain"}) {
    const json config = {{"router", "vqmoe"},
                         {"mode", mode},
                         {"training", true},
                         {"commitment", beta},
                         {"vq_loss", 1.7},
                         {"balance_loss", 0.0},
                         {"k", 2}};
    SCOPED_TRACE(config.dump());
    ProblemOptions o;
    o.T = 9;
    o.E = 4;
    Problem pb = make_problem(config, o, rng);
    Margins margins;
    margins.logit = 1e-2;
    margins.score = 1e-3;
    ASSERT_TRUE(separate_routing(pb, rng, margins));
    ASSERT_EQ(pb.router_names, (std::vector<std::string>{"gate", "codebook", "mix"}));
    const RouterGradients grads =
        router_gradients(pb, std::vector<float>(size_t(pb.T * pb.shape.d), 0.0f));
    const std::vector<std::vector<float>>& d_router = grads.router;
    const std::vector<float>& dx = grads.dx;
    for (size_t i : {size_t(0), size_t(2)})
      EXPECT_TRUE(
          std::all_of(d_router[i].begin(), d_router[i].end(), [](float g) { return g == 0.0f; }))
          << "d router." << pb.router_names[i] << " must be 0 with dy = 0 and no balance loss";

    reference::Params rp = pb.ref_params();
    reference::Batch rb = pb.ref_batch();
    const double h = 1e-6;
    auto fd = [&](double& v) {
      const double saved = v;
      v = saved + h;
      const double plus = pb.reference(rp, rb).aux_loss;
      v = saved - h;
      const double minus = pb.reference(rp, rb).aux_loss;
      v = saved;
      return (plus - minus) / (2.0 * h);
    };
    std::vector<double>& C = rp.router.at("codebook");
    int nonzero = 0;
    for (size_t i = 0; i < C.size(); ++i) {
      const double expect = fd(C[i]) / (1.0 + beta);
      EXPECT_NEAR(d_router[1][i], expect, 1e-4 * std::max(1.0, std::abs(expect)))
          << "C[" << i << "]";
      nonzero += d_router[1][i] != 0.0f;
    }
    EXPECT_GT(nonzero, 0) << "no code moved";
    for (size_t i = 0; i < rb.x.size(); ++i) {
      const double expect = fd(rb.x[i]) * beta / (1.0 + beta);
      EXPECT_NEAR(dx[i], expect, 1e-4 * std::max(1.0, std::abs(expect))) << "x[" << i << "]";
    }
  }
}

// A logit function that reads the earlier tokens of the sequence (SpeechMoE2's running mean):
// its backward alone against central differences of the float64 reference logits, objective
// Σ G ⊙ z, over every x entry and every tensor entry, with three sequences (one of a single
// token). The first token's gradient must carry the later tokens' share (through the mean).
TEST(Gradients, EarlierTokenLogitsSendExactGradientToEarlierTokens) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  int routers = 0;
  for (const RouterEntry& entry : router_registry()) {
    const std::unique_ptr<Router> made = entry.make(json::object(), "test");
    const LogitFunction* probe = made->logit_function();
    if (!probe || !probe->reads_earlier_tokens()) continue;
    SCOPED_TRACE(entry.name);
    ++routers;
    ProblemOptions o;
    o.T = 9;
    o.E = 4;
    o.seq_lens = {4, 1, 4};
    Problem pb = make_problem({{"router", entry.name}}, o, rng);
    const LogitFunction& lf = *pb.layer->router().logit_function();
    const int64_t T = pb.T, d = pb.shape.d, R = pb.R;
    const auto seqs = routing_groups(RoutingGroups::Sequence, pb.seq_lens, T);
    const LogitContext context{nullptr, 0, seqs.data(), int64_t(seqs.size())};
    const MoEParams params = pb.params();
    std::vector<float> logits(size_t(T * R)), saved;
    lf.forward(T, d, R, pb.x.data(), params.router, context, LogitCarry{}, logits.data(), saved);
    const std::vector<float> G = normal_vector(rng, size_t(T * R), 1.0);  // ∂L/∂z
    std::vector<float> dx(size_t(T * d));
    std::vector<std::vector<float>> dw;
    std::vector<float*> dw_views;
    for (const auto& t : pb.router) dw.emplace_back(t.size(), 0.0f);
    for (auto& t : dw) dw_views.push_back(t.data());
    lf.backward(T, d, R, pb.x.data(), params.router, context, saved, LogitCarryGrad{}, G.data(),
                dx.data(), dw_views.data());

    reference::Params rp = pb.ref_params();
    reference::Batch rb = pb.ref_batch();
    const std::vector<double> z64 =
        reference::router_logits(pb.router_params, pb.shape, R, rp, rb, pb.noise);
    for (size_t i = 0; i < z64.size(); ++i)
      EXPECT_NEAR(z64[i], logits[i], 1e-5 * std::max(1.0, std::abs(z64[i])));
    auto objective_of = [&] {
      const std::vector<double> z =
          reference::router_logits(pb.router_params, pb.shape, R, rp, rb, pb.noise);
      double sum = 0.0;
      for (size_t i = 0; i < z.size(); ++i) sum += z[i] * double(G[i]);
      return sum;
    };
    auto check = [&](const std::string& name, std::vector<double>& values,
                     const std::vector<float>& gradient) {
      const double h = 1e-6;
      for (size_t i = 0; i < values.size(); ++i) {
        const double v = values[i];
        values[i] = v + h;
        const double plus = objective_of();
        values[i] = v - h;
        const double minus = objective_of();
        values[i] = v;
        const double fd = (plus - minus) / (2.0 * h);
        EXPECT_NEAR(gradient[i], fd, 1e-4 * std::max(1.0, std::abs(fd))) << name << "[" << i << "]";
      }
    };
    check("x", rb.x, dx);
    for (size_t i = 0; i < pb.router.size(); ++i)
      check("router." + pb.router_names[i], rp.router.at(pb.router_names[i]), dw[i]);
    // The share of token 0's gradient that comes from the later tokens' logits: the full
    // gradient minus the one through z_0 alone.
    std::vector<float> only_first(G.size(), 0.0f);
    std::copy_n(G.begin(), R, only_first.begin());
    std::vector<float> dx_first(size_t(T * d));
    lf.backward(T, d, R, pb.x.data(), params.router, context, saved, LogitCarryGrad{},
                only_first.data(), dx_first.data(), nullptr);
    double later = 0.0;
    for (int64_t j = 0; j < d; ++j) later = std::max(later, double(std::abs(dx[j] - dx_first[j])));
    EXPECT_GT(later, 1e-3) << "the later tokens' logits send token 0 no gradient";
    // Token 4 is a sequence of its own: z_4 sends gradient to x_4 alone, and x_4 gets none from
    // the other sequences' logits.
    std::vector<float> only_4(G.size(), 0.0f), dx_4(size_t(T * d));
    std::copy_n(G.begin() + 4 * R, R, only_4.begin() + 4 * R);
    lf.backward(T, d, R, pb.x.data(), params.router, context, saved, LogitCarryGrad{},
                only_4.data(), dx_4.data(), nullptr);
    for (int64_t i = 0; i < T * d; ++i) {
      if (i / d == 4)
        EXPECT_NEAR(dx_4[size_t(i)], dx[size_t(i)], 1e-5f) << "x[4][" << i % d << "]";
      else
        EXPECT_EQ(dx_4[size_t(i)], 0.0f) << "x[" << i / d << "][" << i % d << "]";
    }
  }
  EXPECT_GE(routers, 1) << "no registered router's logit function reads earlier tokens";
}

TEST(GradientsCoverage, EveryRegisteredRouterHasCases) {
  expect_every_router_has_cases("gradients");
}

INSTANTIATE_TEST_SUITE_P(Routers, Gradients, ::testing::ValuesIn(router_cases_for("gradients")),
                         [](const ::testing::TestParamInfo<RouterCase>& param_info) {
                           return param_info.param.name;
                         });

// ---------------------------------------------------------------------------------------------
// One expert, k = 1, raw softmax weight, zero gate: combine weight exactly 1, so the layer is a
// dense FFN. Compared with a directly written dense forward and backward.

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

struct DenseGrads {
  std::vector<double> y, dx, dw1, dw3, dw2;
};

// y = w2 act(w1 x [, w3 x]) per token and its gradients for the upstream dy. swiglu_clamped:
// act = (u + 1) g sigmoid(alpha g), g = min(h1, L), u = clamp(h3, -L, L); the gradient passes
// the clamps on [-L, L] with the bounds included (torch.clamp's convention).
DenseGrads dense_ffn(const Problem& pb, const std::vector<float>& dy) {
  const int64_t T = pb.T, d = pb.shape.d, F = pb.shape.F;
  const bool swiglu = pb.swiglu(), clamped = pb.clamped();
  const double alpha = pb.config.swiglu_clamp.alpha, L = pb.config.swiglu_clamp.limit;
  DenseGrads g;
  g.y.assign(size_t(T * d), 0.0);
  g.dx.assign(size_t(T * d), 0.0);
  g.dw1.assign(size_t(F * d), 0.0);
  g.dw3.assign(swiglu ? size_t(F * d) : 0, 0.0);
  g.dw2.assign(size_t(d * F), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const size_t nF = static_cast<size_t>(F);
    std::vector<double> h1(nF, 0.0), h3(nF, 0.0), a(nF, 0.0), da(nF, 0.0);
    for (int64_t f = 0; f < F; ++f)
      for (int64_t j = 0; j < d; ++j) {
        h1[f] += double(pb.w1[f * d + j]) * pb.x[t * d + j];
        if (swiglu) h3[f] += double(pb.w3[f * d + j]) * pb.x[t * d + j];
      }
    for (int64_t f = 0; f < F; ++f)
      a[f] = clamped ? (std::clamp(h3[f], -L, L) + 1.0) * std::min(h1[f], L) *
                           sigmoid(alpha * std::min(h1[f], L))
             : swiglu ? h1[f] * sigmoid(h1[f]) * h3[f]
                      : 0.5 * h1[f] * (1.0 + std::erf(h1[f] / std::sqrt(2.0)));
    for (int64_t j = 0; j < d; ++j)
      for (int64_t f = 0; f < F; ++f) {
        g.y[t * d + j] += double(pb.w2[j * F + f]) * a[f];
        g.dw2[j * F + f] += dy[t * d + j] * a[f];
        da[f] += double(pb.w2[j * F + f]) * dy[t * d + j];
      }
    for (int64_t f = 0; f < F; ++f) {
      double dh1 = 0.0, dh3 = 0.0;
      if (clamped) {
        const double gate = std::min(h1[f], L), s = sigmoid(alpha * gate);
        const double up = std::clamp(h3[f], -L, L);
        dh1 = h1[f] <= L ? da[f] * (up + 1.0) * s * (1.0 + alpha * gate * (1.0 - s)) : 0.0;
        dh3 = h3[f] >= -L && h3[f] <= L ? da[f] * gate * s : 0.0;
      } else if (swiglu) {
        const double s = sigmoid(h1[f]);
        dh1 = da[f] * h3[f] * s * (1.0 + h1[f] * (1.0 - s));
        dh3 = da[f] * h1[f] * s;
      } else {
        const double cdf = 0.5 * (1.0 + std::erf(h1[f] / std::sqrt(2.0)));
        const double pdf = std::exp(-0.5 * h1[f] * h1[f]) / std::sqrt(2.0 * std::numbers::pi);
        dh1 = da[f] * (cdf + h1[f] * pdf);
      }
      for (int64_t j = 0; j < d; ++j) {
        g.dw1[f * d + j] += dh1 * pb.x[t * d + j];
        g.dx[t * d + j] += dh1 * double(pb.w1[f * d + j]);
        if (swiglu) {
          g.dw3[f * d + j] += dh3 * pb.x[t * d + j];
          g.dx[t * d + j] += dh3 * double(pb.w3[f * d + j]);
        }
      }
    }
  }
  return g;
}

void expect_close(const std::vector<float>& fast, const std::vector<double>& want,
                  const std::string& name) {
  ASSERT_EQ(fast.size(), want.size()) << name;
  EXPECT_LE(max_abs_diff(fast, want), 1e-5 * std::max(1.0, max_abs(want))) << name;
}

TEST(Gradients, OneExpertIsDenseFFN) {
  SCOPED_TRACE(seed_trace());
  std::mt19937_64 rng = test_rng();
  for (const char* activation : {"swiglu", "gelu", "swiglu_clamped"}) {
    SCOPED_TRACE(activation);
    json config = {{"router", "topk"},
                   {"k", 1},
                   {"normalize", false},
                   {"score", "softmax"},
                   {"activation", activation}};
    if (std::string(activation) == "swiglu_clamped") {
      config["swiglu_limit"] = 0.5;
      config["swiglu_alpha"] = 1.25;
    }
    ProblemOptions o;
    o.T = 7;
    o.E = 1;
    o.zero_gate = true;
    Problem pb = make_problem(config, o, rng);
    const int64_t T = pb.T, d = pb.shape.d;
    if (pb.clamped()) {
      // Pre-activations exactly at the clamps' bounds (exact in float32 and float64): h1 of
      // unit 0 = x_0 = +limit at token 0; h3 of units 1 and 2 = ±x_0 = ±limit at tokens 0 and 1.
      pb.x[0] = 0.5f;
      pb.x[size_t(d)] = -0.5f;
      for (int64_t f = 0; f < 3; ++f) {
        std::vector<float>& w = f == 0 ? pb.w1 : pb.w3;
        std::fill_n(w.begin() + f * d, d, 0.0f);
        w[size_t(f * d)] = f == 2 ? -1.0f : 1.0f;
      }
    }
    const std::vector<float> dy = normal_vector(rng, size_t(T * d), 1.0);

    MoECache cache;
    std::vector<float> y(static_cast<size_t>(T * d));
    pb.layer->forward(pb.params(), pb.batch(), cache, y.data());
    const std::vector<float> combine = pb.layer->combine_matrix(cache);
    for (float c : combine) EXPECT_EQ(c, 1.0f);

    std::vector<float> dx(pb.x.size()), dgate(pb.gate.size(), 123.0f), dw1(pb.w1.size()),
        dw3(pb.w3.size()), dw2(pb.w2.size());
    MoEGrads grads;
    grads.gate = dgate.data();
    grads.w1 = dw1.data();
    grads.w3 = dw3.empty() ? nullptr : dw3.data();
    grads.w2 = dw2.data();
    pb.layer->backward(pb.params(), pb.batch(), cache, dy.data(), dx.data(), grads);

    const DenseGrads want = dense_ffn(pb, dy);
    expect_close(y, want.y, "y");
    expect_close(dx, want.dx, "dx");
    expect_close(dw1, want.dw1, "d_experts.w1");
    expect_close(dw2, want.dw2, "d_experts.w2");
    if (pb.swiglu()) expect_close(dw3, want.dw3, "d_experts.w3");
    for (float g : dgate) EXPECT_EQ(g, 0.0f) << "a single softmax output has no gradient";

    // The reference agrees too.
    const reference::Result ref = pb.reference(pb.ref_params(), pb.ref_batch());
    EXPECT_LE(max_abs_diff(ref.y, want.y), 1e-12 * std::max(1.0, max_abs(want.y)));
  }
}

}  // namespace
}  // namespace switchyard
