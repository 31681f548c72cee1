// CompeteSMoE (docs/routers/competesmoe.md; Nguyen et al., arXiv 2505.13380, after Pham et al.,
// arXiv 2402.02526): on a share λ of the training calls every expert runs on every token (dense
// scoring) and the experts compete: the affinity s_te = mean_j softplus(o_te,j) of expert e's
// output picks the top k, weighted s / Σ_chosen s (gradient into the experts), and the linear
// router learns to predict the competition: β_r · MSE(softmax z, softmax s) with s detached, plus
// the chosen outputs' diversity loss β_d · mean cos. Other calls, and evaluation: top-k of
// softmax z, renormalised. A call competes when steps ≥ W (warm-up) and u < λ, u the first draw
// of the call's noise stream, so the choice is a function of the seed, the call and the step.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

double softplus(double v) {
  return v > 20.0 ? v : std::log1p(std::exp(v));
}
double sigmoid(double v) {
  return 1.0 / (1.0 + std::exp(-v));
}

class CompeteSMoERouter final : public Router {
 public:
  CompeteSMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_int("k", 2, 1, 1 << 20);
    lambda_ = r.get_double("competition", 0.05, 0.0, 1.0);
    warmup_fraction_ = r.get_double("warmup_fraction", 0.05, 0.0, 1.0);
    warmup_steps_ = r.get_int("warmup_steps", -1, -1, int64_t(1) << 40);
    router_loss_ = r.get_double("router_loss", 0.01, 0.0, 1e6);
    diversity_loss_ = r.get_double("diversity_loss", 0.01, 0.0, 1e6);
    r.finish();
    traits_.has_own_loss = true;
    traits_.score = ScoreKind::Softmax;
  }

  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return double(k_); }
  void check_shape(int64_t E, const std::string& context) const override {
    if (k_ > E) fail("{}: k = {} is more than the {} experts", context, k_, E);
  }

  nlohmann::json params() const override {
    return {{"router", "competesmoe"},
            {"k", k_},
            {"competition", lambda_},
            {"warmup_fraction", warmup_fraction_},
            {"warmup_steps", warmup_steps_},
            {"warmup", warmup()},
            {"steps", steps_},
            {"router_loss", router_loss_},
            {"diversity_loss", diversity_loss_}};
  }
  std::string describe() const override {
    return fmt::format(
        "CompeteSMoE: top-{} over softmax scores, renormalised; on a share {:g} of the training "
        "calls after a warm-up of {} steps every expert runs on every token and the top {} by "
        "mean softplus of their outputs win, weighted s / sum s, with the router loss {:g} "
        "(MSE to the competition's softmax) and the diversity loss {:g}",
        k_, lambda_, warmup(), k_, router_loss_, diversity_loss_);
  }

  bool dense_scoring(const RouterInput& in) const override {
    return in.training && in.T > 0 && in.uniform && steps_ >= warmup() &&
           double(in.uniform[0]) < lambda_;
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t E = in.E, R = in.R, d = in.d;
    std::vector<double> s(static_cast<size_t>(E));
    std::vector<int32_t> top;
    route_per_token(in, plan, [&](int64_t t, auto emit) {
      if (in.responses) {
        for (int64_t e = 0; e < E; ++e) s[size_t(e)] = affinity(in.responses + (t * E + e) * d, d);
      } else {
        compute_scores(ScoreKind::Softmax, in.logits + t * R, R, s.data());
      }
      top_k_indices(s.data(), E, k_, top);
      double sum = 0.0;
      for (int32_t e : top) sum += s[size_t(e)];
      for (int32_t e : top) emit(e, s[size_t(e)] / sum);
    });
  }

  // Ordinary calls: g = p_e / Σ_chosen p, through the softmax. Competition calls: the weights do
  // not read the logits (their gradient goes to the responses, backward_responses).
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    if (in.responses) return;
    const int64_t R = in.R;
    const TokenAssignments by = assignments_by_token(plan, in.T);
    std::vector<double> p(static_cast<size_t>(R)), dp(static_cast<size_t>(R));
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t b = by.offsets[size_t(t)], end = by.offsets[size_t(t) + 1];
      if (b == end) continue;
      compute_scores(ScoreKind::Softmax, in.logits + t * R, R, p.data());
      double sum = 0.0, mean = 0.0;
      for (int64_t i = b; i < end; ++i) sum += p[size_t(plan.expert[size_t(by.index[size_t(i)])])];
      for (int64_t i = b; i < end; ++i) {
        const int32_t a = by.index[size_t(i)];
        mean += double(d_weight[a]) * p[size_t(plan.expert[size_t(a)])] / sum;
      }
      std::fill(dp.begin(), dp.end(), 0.0);
      for (int64_t i = b; i < end; ++i) {
        const int32_t a = by.index[size_t(i)];
        dp[size_t(plan.expert[size_t(a)])] = (double(d_weight[a]) - mean) / sum;
      }
      scores_backward(ScoreKind::Softmax, p.data(), dp.data(), R, d_logits + t * R);
    }
  }

  // Competition calls: w = s / Σ_chosen s, s = mean softplus(o): ∂s/∂o_j = σ(o_j) / d; and the
  // diversity loss's gradient into the chosen outputs, times aux_weight.
  void backward_responses(const RouterInput& in, const RoutingPlan& plan, const float* d_weight,
                          double aux_weight, float* d_resp) const override {
    if (!in.responses) return;
    const int64_t E = in.E, d = in.d;
    const TokenAssignments by = assignments_by_token(plan, in.T);
    std::vector<double> ds;
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t b = by.offsets[size_t(t)], end = by.offsets[size_t(t) + 1];
      const int64_t n = end - b;
      if (n == 0) continue;
      double sum = 0.0, mean = 0.0;
      ds.assign(size_t(n), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        const int32_t a = by.index[size_t(b + i)];
        ds[size_t(i)] = affinity(in.responses + (t * E + plan.expert[size_t(a)]) * d, d);
        sum += ds[size_t(i)];
      }
      for (int64_t i = 0; i < n; ++i)
        mean += double(d_weight[by.index[size_t(b + i)]]) * ds[size_t(i)] / sum;
      for (int64_t i = 0; i < n; ++i) {
        const int32_t a = by.index[size_t(b + i)];
        const double g = (double(d_weight[a]) - mean) / sum / double(d);
        const int64_t pair = t * E + plan.expert[size_t(a)];
        const float* o = in.responses + pair * d;
        for (int64_t j = 0; j < d; ++j) d_resp[pair * d + j] += float(g * sigmoid(double(o[j])));
      }
    }
    if (diversity_loss_ > 0) diversity(in, plan, aux_weight, d_resp);
  }

  // Competition calls only: β_r · MSE(softmax z, softmax s) (logits' gradient) + β_d · the
  // diversity loss (its gradient is backward_responses').
  double own_loss(const RouterInput& in, const RoutingPlan& plan, float* d_logits) const override {
    if (!in.responses || in.T == 0) return 0.0;
    const int64_t T = in.T, E = in.E, R = in.R, d = in.d;
    const double scale = router_loss_ / double(T * E);
    std::vector<double> p(static_cast<size_t>(E)), q(static_cast<size_t>(E)),
        dp(static_cast<size_t>(E));
    double mse = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t e = 0; e < E; ++e) q[size_t(e)] = affinity(in.responses + (t * E + e) * d, d);
      softmax(q);
      compute_scores(ScoreKind::Softmax, in.logits + t * R, R, p.data());
      for (int64_t e = 0; e < E; ++e) {
        const double diff = p[size_t(e)] - q[size_t(e)];
        mse += scale * diff * diff;
        dp[size_t(e)] = 2.0 * scale * diff;
      }
      if (d_logits) scores_backward(ScoreKind::Softmax, p.data(), dp.data(), R, d_logits + t * R);
    }
    return mse + (diversity_loss_ > 0 ? diversity(in, plan, 0.0, nullptr) : 0.0);
  }

  void set_schedule(const TrainingSchedule& schedule) override {
    if (schedule.total_steps <= 0)
      fail("router competesmoe: the run's schedule needs total_steps > 0, got {}",
           schedule.total_steps);
    total_steps_ = schedule.total_steps;
  }
  void update_state(const RouterStepStats&) override { ++steps_; }
  nlohmann::json state() const override { return {{"steps", steps_}}; }
  void set_state(const nlohmann::json& state) override {
    if (!state.is_object() || !state.contains("steps") || !state.at("steps").is_number_integer() ||
        state.at("steps").get<int64_t>() < 0)
      fail("router competesmoe state: needs {{\"steps\": n}} with an integer n >= 0, got {}",
           state.dump());
    steps_ = state.at("steps").get<int64_t>();
  }

 private:
  static double affinity(const float* o, int64_t d) {
    double sum = 0.0;
    for (int64_t j = 0; j < d; ++j) sum += softplus(double(o[j]));
    return sum / double(d);
  }
  static void softmax(std::vector<double>& v) {
    const double max = *std::max_element(v.begin(), v.end());
    double sum = 0.0;
    for (double& x : v) sum += (x = std::exp(x - max));
    for (double& x : v) x /= sum;
  }
  // W: warmup_steps, or ⌊warmup_fraction · total steps⌋ of the schedule; 0 without one.
  int64_t warmup() const {
    if (warmup_steps_ >= 0) return warmup_steps_;
    return int64_t(std::floor(warmup_fraction_ * double(total_steps_)));
  }
  // β_d / (T k²) Σ_t Σ_{i ≠ j chosen} cos(o_ti, o_tj); its gradient times `weight` into d_resp
  // where given. An output of norm 0 has cosine 0 and gets no gradient.
  double diversity(const RouterInput& in, const RoutingPlan& plan, double weight,
                   float* d_resp) const {
    const int64_t E = in.E, d = in.d;
    const double scale = diversity_loss_ / (double(in.T) * double(k_) * double(k_));
    const TokenAssignments by = assignments_by_token(plan, in.T);
    double loss = 0.0;
    std::vector<double> norm, grad;
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t b = by.offsets[size_t(t)], n = by.offsets[size_t(t) + 1] - b;
      auto out = [&](int64_t i) {
        return in.responses + (t * E + plan.expert[size_t(by.index[size_t(b + i)])]) * d;
      };
      norm.assign(size_t(n), 0.0);
      for (int64_t i = 0; i < n; ++i) {
        double sq = 0.0;
        for (int64_t j = 0; j < d; ++j) sq += double(out(i)[j]) * double(out(i)[j]);
        norm[size_t(i)] = std::sqrt(sq);
      }
      for (int64_t i = 0; i < n; ++i) {
        if (norm[size_t(i)] == 0.0) continue;
        grad.assign(size_t(d), 0.0);
        for (int64_t m = 0; m < n; ++m) {
          if (m == i || norm[size_t(m)] == 0.0) continue;
          double dot = 0.0;
          for (int64_t j = 0; j < d; ++j) dot += double(out(i)[j]) * double(out(m)[j]);
          const double c = dot / (norm[size_t(i)] * norm[size_t(m)]);
          loss += scale * c;
          // ∂cos/∂o_i = (o_m / |o_m| − c o_i / |o_i|) / |o_i|; the pair counts twice (i, m), (m,
          // i).
          for (int64_t j = 0; j < d; ++j)
            grad[size_t(j)] +=
                2.0 * scale *
                (double(out(m)[j]) / norm[size_t(m)] - c * double(out(i)[j]) / norm[size_t(i)]) /
                norm[size_t(i)];
        }
        if (!d_resp) continue;
        float* dr = d_resp + (t * E + plan.expert[size_t(by.index[size_t(b + i)])]) * d;
        for (int64_t j = 0; j < d; ++j) dr[j] += float(weight * grad[size_t(j)]);
      }
    }
    return loss;
  }

  RouterTraits traits_;
  int64_t k_ = 2, warmup_steps_ = -1, total_steps_ = 0;
  double lambda_ = 0.05, warmup_fraction_ = 0.05, router_loss_ = 0.01, diversity_loss_ = 0.01;
  int64_t steps_ = 0;  // the state: optimiser steps counted by update_state
};

}  // namespace

std::unique_ptr<Router> make_competesmoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<CompeteSMoERouter>(p, c);
}

}  // namespace switchyard::routers
