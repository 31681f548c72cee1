// Flextron's elastic MLP inside the experts (docs/routers/flextron.md; Cai et al., NVIDIA, ICML
// 2024, arXiv 2406.10260): per token the router picks how many of an expert's hidden units run, a
// prefix [0, F_j) of F from a list of width fractions, and the experts as top-k does.
// Logits (one linear gate, R = E + W): [s = experts block (E) | m = width block (W)].
//   p = softmax(s), K = top-k(p), p̃_e = p_e (or p_e / Σ_K p with normalize);
//   q = softmax(m), j* = argmax q, F_j = round(f_j F);
//   token t sends (e, weight p̃_e q_j*, width F_j*) for e in K (top-1 width with its probability
//   as a factor of the weight, so the width block learns from the language loss).
//   own loss: balance α E Σ_e f_e P_e on the experts block (Switch's), plus the compute loss
//   λ (C − c*)², C = mean_t Σ_j q_tj F_j / F (the expected share of F per routed row).
// Dropless; every decision is the token's own.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class FlextronRouter final : public Router {
 public:
  FlextronRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_int("k", 1, 1, 1 << 20);
    normalize_ = r.get_bool("normalize", false);
    const nlohmann::json widths = r.get_json("widths", nlohmann::json{0.25, 0.5, 0.75, 1.0});
    if (!widths.is_array() || widths.empty())
      fail("{}: field 'widths' = {} must be a non-empty list of fractions in (0, 1]", context,
           widths.dump());
    for (const nlohmann::json& w : widths) {
      if (!w.is_number() || !(w.get<double>() > 0.0) || w.get<double>() > 1.0)
        fail("{}: field 'widths' = {} must hold fractions in (0, 1], got {}", context,
             widths.dump(), w.dump());
      if (!widths_.empty() && !(w.get<double>() > widths_.back()))
        fail("{}: field 'widths' = {} must be strictly increasing", context, widths.dump());
      widths_.push_back(w.get<double>());
    }
    target_ = r.get_double("compute_target", 0.5, 0.0, 1.0);
    lambda_ = r.get_double("compute_loss", 0.1, 0.0, 1e6);
    alpha_ = r.get_double("balance_loss", 0.01, 0.0, 1e6);
    r.finish();
    traits_.elastic_width = true;
    traits_.has_own_loss = true;
    traits_.supports_losses = false;  // the row holds two blocks: the balance term is its own
  }

  const RouterTraits& traits() const override { return traits_; }
  int64_t num_outputs(int64_t E) const override { return E + int64_t(widths_.size()); }
  double nominal_experts_per_token(int64_t) const override { return double(k_); }
  double nominal_width_fraction() const override { return lambda_ > 0.0 ? target_ : 1.0; }
  void check_shape(int64_t E, const std::string& context) const override {
    if (k_ > E) fail("{}: k = {} exceeds the number of experts E = {}", context, k_, E);
  }
  std::pair<int64_t, int64_t> scored_columns(const RouterInput& in) const override {
    return {0, in.E};
  }
  nlohmann::json params() const override {
    return {{"router", "flextron"},      {"k", k_},
            {"normalize", normalize_},   {"widths", widths_},
            {"compute_target", target_}, {"compute_loss", lambda_},
            {"balance_loss", alpha_}};
  }
  std::string describe() const override {
    return fmt::format(
        "Flextron: softmax top-{}{} over E experts, each at the width argmax of softmax over {} "
        "width fractions of F (weight p q); compute loss λ = {:g} toward {:g} of F, balance "
        "α = {:g}; dropless",
        k_, normalize_ ? " (renormalised)" : "", widths_.size(), lambda_, target_, alpha_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t E = in.E, R = in.R, W = R - E;
    std::vector<double> p(static_cast<size_t>(E)), q(static_cast<size_t>(W));
    std::vector<int32_t> K;
    plan.clear();
    plan.selection_counts.assign(size_t(R), 0.0);
    for (size_t g = 0; g < in.groups.size(); ++g) {
      for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t) {
        scores(in, t, p, q, K);
        const int32_t j = top_k_indices(q.data(), W, 1)[0];
        const int32_t width = hidden_width(widths_[size_t(j)], in.F);
        double sum = 0.0;
        for (int32_t e : K) sum += p[size_t(e)];
        for (int32_t e : K) {
          const double pe = normalize_ ? p[size_t(e)] / sum : p[size_t(e)];
          plan.add_width(int32_t(t), e, int32_t(g), float(pe * q[size_t(j)]), width);
          plan.selection_counts[size_t(e)] += 1.0;
        }
        plan.selection_counts[size_t(E + j)] += 1.0;
      }
      plan.capacity.push_back(0);
    }
  }

  // w_e = p̃_e q_j: ∂p̃_e = u_e q_j, ∂q_j = Σ_e u_e p̃_e; renormalised, ∂p_f = (∂p̃_f − Σ_e ∂p̃_e p̃_e)
  // / Σ_K p on K; then both softmax Jacobians.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    const int64_t E = in.E, R = in.R, W = R - E;
    const TokenAssignments by_token = assignments_by_token(plan, in.T);
    std::vector<double> p(static_cast<size_t>(E)), q(static_cast<size_t>(W)),
        dp(static_cast<size_t>(E)), dq(static_cast<size_t>(W));
    std::vector<int32_t> K;
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t begin = by_token.offsets[size_t(t)], end = by_token.offsets[size_t(t) + 1];
      if (begin == end) continue;
      scores(in, t, p, q, K);
      const int32_t j = top_k_indices(q.data(), W, 1)[0];
      double sum = 0.0;
      for (int32_t e : K) sum += p[size_t(e)];
      std::fill(dp.begin(), dp.end(), 0.0);
      std::fill(dq.begin(), dq.end(), 0.0);
      double dot = 0.0;  // Σ_e ∂p̃_e p̃_e
      for (int64_t i = begin; i < end; ++i) {
        const int32_t a = by_token.index[size_t(i)];
        const int32_t e = plan.expert[size_t(a)];
        const double u = plan.kept[size_t(a)] ? double(d_weight[a]) : 0.0;
        const double pe = normalize_ ? p[size_t(e)] / sum : p[size_t(e)];
        dq[size_t(j)] += u * pe;
        dp[size_t(e)] += u * q[size_t(j)];
        dot += u * q[size_t(j)] * pe;
      }
      if (normalize_)
        for (int32_t e : K) dp[size_t(e)] = (dp[size_t(e)] - dot) / sum;
      scores_backward(ScoreKind::Softmax, p.data(), dp.data(), E, d_logits + t * R);
      scores_backward(ScoreKind::Softmax, q.data(), dq.data(), W, d_logits + t * R + E);
    }
  }

  double own_loss(const RouterInput& in, const RoutingPlan&, float* d_logits) const override {
    const int64_t T = in.T, E = in.E, R = in.R, W = R - E;
    if (T == 0) return 0.0;
    std::vector<double> cost(static_cast<size_t>(W));
    for (int64_t j = 0; j < W; ++j)
      cost[size_t(j)] = double(hidden_width(widths_[size_t(j)], in.F)) / double(in.F);
    std::vector<double> P(static_cast<size_t>(T * E)), Q(static_cast<size_t>(T * W)),
        f(size_t(E), 0.0), mean(size_t(E), 0.0);
    std::vector<double> p(static_cast<size_t>(E)), q(static_cast<size_t>(W));
    std::vector<int32_t> K;
    double C = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      scores(in, t, p, q, K);
      std::copy(p.begin(), p.end(), P.begin() + t * E);
      std::copy(q.begin(), q.end(), Q.begin() + t * W);
      for (int32_t e : K) f[size_t(e)] += 1.0 / (double(T) * double(k_));
      for (int64_t e = 0; e < E; ++e) mean[size_t(e)] += p[size_t(e)] / double(T);
      for (int64_t j = 0; j < W; ++j) C += q[size_t(j)] * cost[size_t(j)] / double(T);
    }
    double bal = 0.0;
    for (int64_t e = 0; e < E; ++e) bal += f[size_t(e)] * mean[size_t(e)];
    const double gap = C - target_;
    if (d_logits) {
      std::vector<double> dp(static_cast<size_t>(E)), dq(static_cast<size_t>(W));
      for (int64_t e = 0; e < E; ++e) dp[size_t(e)] = alpha_ * double(E) * f[size_t(e)] / double(T);
      for (int64_t j = 0; j < W; ++j)
        dq[size_t(j)] = 2.0 * lambda_ * gap * cost[size_t(j)] / double(T);
      for (int64_t t = 0; t < T; ++t) {
        if (alpha_ > 0.0)
          scores_backward(ScoreKind::Softmax, P.data() + t * E, dp.data(), E, d_logits + t * R);
        if (lambda_ > 0.0)
          scores_backward(ScoreKind::Softmax, Q.data() + t * W, dq.data(), W, d_logits + t * R + E);
      }
    }
    return alpha_ * double(E) * bal + lambda_ * gap * gap;
  }

 private:
  // Token t's expert scores p, width scores q and top-k experts K (descending p, ties low).
  void scores(const RouterInput& in, int64_t t, std::vector<double>& p, std::vector<double>& q,
              std::vector<int32_t>& K) const {
    const int64_t E = in.E, R = in.R;
    const float* z = in.logits + t * R;
    compute_scores(ScoreKind::Softmax, z, E, p.data());
    compute_scores(ScoreKind::Softmax, z + E, R - E, q.data());
    top_k_indices(p.data(), E, k_, K);
  }

  RouterTraits traits_;
  int64_t k_ = 1;
  bool normalize_ = false;
  std::vector<double> widths_;
  double target_ = 0.5, lambda_ = 0.1, alpha_ = 0.01;
};

}  // namespace

std::unique_ptr<Router> make_flextron(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<FlextronRouter>(p, c);
}

}  // namespace switchyard::routers
