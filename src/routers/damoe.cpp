// DA-MoE (Aghdam, Jin, Wu 2024; docs/routers/damoe.md): each token's number of experts K_t from
// an importance given from outside the layer (a model's attention), then its top-K_t experts
// with raw softmax weights. K_t = clamp(round(k · s_t / m_t), k_min, k_max), m_t the running
// mean of the importance over the token's sequence up to and including t: causal, and the mean
// number of experts stays near the budget k; with budget "prefix" no prefix of n tokens of a
// sequence spends more than floor(k n) expert slots (unspent slots carry forward).
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class DaMoERouter final : public Router {
 public:
  DaMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_double("k", 2.0, 1.0, double(1 << 20));
    k_min_ = r.get_int("k_min", 1, 1, 1 << 20);
    k_max_ = r.get_int("k_max", 4, 1, 1 << 20);
    prefix_budget_ = r.get_choice("budget", "none", {"none", "prefix"}) == "prefix";
    r.finish();
    if (double(k_min_) > k_)
      fail("{}: field 'k_min' = {} exceeds the mean budget k = {}", context, k_min_, k_);
    if (double(k_max_) < k_)
      fail("{}: field 'k_max' = {} is below the mean budget k = {}", context, k_max_, k_);
    traits_.needs_token_importance = true;
    traits_.batch_dependent = true;  // m_t reads the earlier tokens of the sequence
  }
  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t E) const override {
    return std::min(k_, double(std::max<int64_t>(E, 1)));
  }
  nlohmann::json params() const override {
    return {{"router", "damoe"},
            {"k", k_},
            {"k_min", k_min_},
            {"k_max", k_max_},
            {"budget", prefix_budget_ ? "prefix" : "none"}};
  }
  std::string describe() const override {
    return fmt::format(
        "DA-MoE: top-K_t by token importance, K_t = clamp(round({} s_t / causal mean), {}, {}), "
        "raw softmax weights, dropless{}",
        k_, k_min_, k_max_,
        prefix_budget_ ? ", at most floor(k n) experts over every n-token prefix" : "");
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    if (!in.token_importance)
      fail("damoe: the router input has no token_importance (T = {})", in.T);
    const std::vector<int64_t> K = experts_per_token(in);  // (T)
    std::vector<double> s(size_t(in.R));
    std::vector<int32_t> top;
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      compute_scores(ScoreKind::Softmax, in.logits + t * in.R, in.R, s.data());
      top_k_indices(s.data(), in.R, K[size_t(t)], top);
      for (int32_t e : top) emit(e, s[size_t(e)]);
    });
  }

  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    // K_t is piecewise constant in the importance: the gradient reaches the scores only.
    backward_raw_scores(ScoreKind::Softmax, in, plan, d_weight, 1.0, d_logits);
  }

 private:
  // (T) K_t per token: the importance over its running mean within the token's sequence; under
  // the prefix budget also at most floor(k n) - (slots the sequence's earlier tokens took). That
  // cap is never below k_min: floor(k n) - floor(k (n - 1)) >= floor(k) >= k_min.
  std::vector<int64_t> experts_per_token(const RouterInput& in) const {
    const int64_t lo = std::min<int64_t>(k_min_, in.R), hi = std::min<int64_t>(k_max_, in.R);
    std::vector<int64_t> K(size_t(in.T), lo);
    const std::pair<int64_t, int64_t> all{0, in.T};
    const std::pair<int64_t, int64_t>* seqs = in.sequences ? in.sequences : &all;
    const int64_t n_seq = in.sequences ? in.num_sequences : 1;
    for (int64_t q = 0; q < n_seq; ++q) {
      double sum = 0.0;
      int64_t spent = 0;  // expert slots of the sequence's tokens before t
      for (int64_t t = seqs[q].first; t < seqs[q].second; ++t) {
        const double st = double(in.token_importance[t]);
        sum += st;
        const double mean = sum / double(t - seqs[q].first + 1);
        const double ratio = mean > 0.0 ? st / mean : 1.0;
        const double rounded = std::floor(k_ * ratio + 0.5);
        int64_t Kt = std::clamp(int64_t(std::min(rounded, double(in.R))), lo, hi);
        if (prefix_budget_) {
          const double n = double(t - seqs[q].first + 1);
          Kt = std::min(Kt, int64_t(std::floor(k_ * n)) - spent);
        }
        spent += Kt;
        K[size_t(t)] = Kt;
      }
    }
    return K;
  }

  RouterTraits traits_;
  double k_ = 2.0;
  int64_t k_min_ = 1, k_max_ = 4;
  bool prefix_budget_ = false;
};

}  // namespace

std::unique_ptr<Router> make_damoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<DaMoERouter>(p, c);
}

}  // namespace switchyard::routers
