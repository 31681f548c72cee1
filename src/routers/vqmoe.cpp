// VQMoE (docs/routers/vqmoe.md; Do, Pham, Le, Tran, TMLR 2025, arXiv 2411.19402): the token's
// nearest code in a learned codebook names its expert (vector quantisation), trained by VQ-VAE's
// codebook and commitment terms.
//   pretrain: y = g_c Σ_{e∈top-k(p)} p_e E_e(x) + g_d E_{e*}(x), p = softmax(W x),
//     (g_c, g_d) = softmax(M x), e* = argmin_e ‖x − C_e‖²; own loss L_bal (Switch's, on p) + L_vq.
//   finetune: y = E_{e*}(x); own loss L_vq.
//   L_vq = λ/(T d) Σ_t (‖sg[x_t] − C_{e*}‖² + β ‖x_t − sg[C_{e*}]‖²).
// Logits (VQLogits): [s = W x | a = −‖sg[x] − C‖²/d | b = −‖x − sg[C]‖²/d | m = M x], R = 3E + 2.
// Dropless; every decision is the token's own.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"
#include "routers/vq_logits.h"

namespace switchyard::routers {
namespace {

// One token's routing quantities, recomputed from its logit row wherever they are needed.
struct TokenRoute {
  std::vector<double> p;   // (E) softmax(s)
  double g[2] = {0, 0};    // softmax(m): g_c, g_d
  std::vector<int32_t> K;  // the continuous top-k, by descending p
  int32_t vq = 0;          // e*, the nearest code's expert
};

class VQMoERouter final : public Router {
 public:
  VQMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    finetune_ = r.get_choice("mode", "pretrain", {"pretrain", "finetune"}) == "finetune";
    k_ = r.get_int("k", 1, 1, 1 << 20);
    beta_ = r.get_double("commitment", 0.25, 0.0, 1e6);
    lambda_ = r.get_double("vq_loss", 1.0, 0.0, 1e6);
    alpha_ = r.get_double("balance_loss", 0.01, 0.0, 1e6);
    r.finish();
    traits_.supports_losses = false;
    traits_.has_own_loss = true;
  }

  const RouterTraits& traits() const override { return traits_; }
  int64_t num_outputs(int64_t E) const override { return 3 * E + 2; }
  double nominal_experts_per_token(int64_t) const override {
    return finetune_ ? 1.0 : double(k_ + 1);
  }
  void check_shape(int64_t E, const std::string& context) const override {
    if (!finetune_ && k_ > E)
      fail("{}: k = {} exceeds the number of experts E = {}", context, k_, E);
  }
  const LogitFunction* logit_function() const override { return &logits_; }
  nlohmann::json params() const override {
    return {{"router", "vqmoe"},
            {"logits", "vq"},
            {"mode", finetune_ ? "finetune" : "pretrain"},
            {"k", k_},
            {"commitment", beta_},
            {"vq_loss", lambda_},
            {"balance_loss", alpha_}};
  }
  std::string describe() const override {
    const std::string vq = fmt::format(
        "the expert of the nearest of E codes (L2), VQ loss λ = {:g} with commitment β = {:g}",
        lambda_, beta_);
    if (finetune_) return "VQMoE (finetune): " + vq + ", weight 1; dropless";
    return fmt::format(
        "VQMoE (pretrain): softmax top-{} of W x weighted g_c p, plus {} weighted g_d, (g_c, g_d) "
        "= softmax(M x); balance loss α = {:g}; dropless",
        k_, vq, alpha_);
  }

  // The gate W x picks the continuous experts; in finetune mode the codebook distances alone.
  std::pair<int64_t, int64_t> scored_columns(const RouterInput& in) const override {
    return {finetune_ ? in.E : 0, in.E};
  }
  void route(const RouterInput& in, RoutingPlan& plan) const override {
    TokenRoute tr;
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      token_route(in, t, tr);
      if (finetune_) return emit(tr.vq, 1.0);
      bool merged = false;
      for (int32_t e : tr.K) {
        const bool same = e == tr.vq;
        merged |= same;
        emit(e, tr.g[0] * tr.p[size_t(e)] + (same ? tr.g[1] : 0.0));
      }
      if (!merged) emit(tr.vq, tr.g[1]);
    });
  }

  // Pretrain: ∂g_c = Σ_{e∈K} u_e p_e, ∂g_d = u_{e*}, ∂p_e = g_c u_e on K; then both softmaxes'
  // Jacobians. Finetune's weights are the constant 1.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    if (finetune_) return;
    const int64_t E = in.E, R = in.R;
    const TokenAssignments by_token = assignments_by_token(plan, in.T);
    TokenRoute tr;
    std::vector<double> dp(static_cast<size_t>(E));
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t begin = by_token.offsets[size_t(t)], end = by_token.offsets[size_t(t) + 1];
      if (begin == end) continue;
      token_route(in, t, tr);
      std::fill(dp.begin(), dp.end(), 0.0);
      double dg[2] = {0.0, 0.0};
      for (int64_t i = begin; i < end; ++i) {
        const int32_t a = by_token.index[size_t(i)];
        const int32_t e = plan.expert[size_t(a)];
        const double u = plan.kept[size_t(a)] ? double(d_weight[a]) : 0.0;
        if (std::find(tr.K.begin(), tr.K.end(), e) != tr.K.end()) {
          dp[size_t(e)] += tr.g[0] * u;
          dg[0] += tr.p[size_t(e)] * u;
        }
        if (e == tr.vq) dg[1] += u;
      }
      scores_backward(ScoreKind::Softmax, tr.p.data(), dp.data(), E, d_logits + t * R);
      scores_backward(ScoreKind::Softmax, tr.g, dg, 2, d_logits + t * R + 3 * E);
    }
  }

  // L_bal (pretrain) + L_vq (docs/routers/vqmoe.md, section 2), training and evaluation alike.
  double own_loss(const RouterInput& in, const RoutingPlan&, float* d_logits) const override {
    const int64_t T = in.T, E = in.E, R = in.R;
    if (T == 0) return 0.0;
    double loss = 0.0;
    TokenRoute tr;
    // L_vq: −a_{t,e*} − β b_{t,e*} (mean squared distances: the 1/d is in the logits), times λ/T.
    const double scale_vq = lambda_ / double(T);
    for (int64_t t = 0; t < T; ++t) {
      const float* z = in.logits + t * R;
      const int32_t e = first_argmax(z + E, E);
      loss += scale_vq * (-double(z[E + e]) - beta_ * double(z[2 * E + e]));
      if (!d_logits) continue;
      d_logits[t * R + E + e] += float(-scale_vq);
      d_logits[t * R + 2 * E + e] += float(-scale_vq * beta_);
    }
    if (finetune_ || alpha_ == 0.0) return loss;
    // L_bal = α E Σ_e f_e P_e, f_e = n_e / (T k) (no gradient), P_e = mean_t p_{t,e}.
    std::vector<double> f(size_t(E), 0.0), P(size_t(E), 0.0);
    std::vector<std::vector<double>> probs(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      token_route(in, t, tr);
      for (int32_t e : tr.K) f[size_t(e)] += 1.0 / (double(T) * double(k_));
      for (int64_t e = 0; e < E; ++e) P[size_t(e)] += tr.p[size_t(e)] / double(T);
      probs[size_t(t)] = tr.p;
    }
    double bal = 0.0;
    for (int64_t e = 0; e < E; ++e) bal += f[size_t(e)] * P[size_t(e)];
    loss += alpha_ * double(E) * bal;
    if (d_logits) {
      std::vector<double> dp(static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e) dp[size_t(e)] = alpha_ * double(E) * f[size_t(e)] / double(T);
      for (int64_t t = 0; t < T; ++t)
        scores_backward(ScoreKind::Softmax, probs[size_t(t)].data(), dp.data(), E,
                        d_logits + t * R);
    }
    return loss;
  }

 private:
  void token_route(const RouterInput& in, int64_t t, TokenRoute& tr) const {
    const int64_t E = in.E, R = in.R;
    const float* z = in.logits + t * R;
    tr.vq = first_argmax(z + E, E);
    if (finetune_) return;
    tr.p.resize(size_t(E));
    compute_scores(ScoreKind::Softmax, z, E, tr.p.data());
    top_k_indices(tr.p.data(), E, k_, tr.K);
    compute_scores(ScoreKind::Softmax, z + 3 * E, 2, tr.g);
  }

  RouterTraits traits_;
  VQLogits logits_;
  bool finetune_ = false;
  int64_t k_ = 1;
  double beta_ = 0.25, lambda_ = 1.0, alpha_ = 0.01;
};

}  // namespace

std::unique_ptr<Router> make_vqmoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<VQMoERouter>(p, c);
}

}  // namespace switchyard::routers
