// M6-T expert prototyping (docs/routers/prototype.md): the E experts form K prototypes of M = E/K
// consecutive experts; each token takes the top-1 expert of every prototype, weighted by the
// softmax over that prototype's M logits (not renormalised), so K experts per token. The
// prototypes' Switch balance losses, averaged, are the router's own loss.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class PrototypeRouter final : public Router {
 public:
  PrototypeRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    prototypes_ = r.get_int("prototypes", 2, 1, 1 << 20);
    capacity_factor_ = r.get_double("capacity_factor", 0.0, 0.0, 1e6);
    balance_ = r.get_double("prototype_balance", 0.01, 0.0, 1e6);
    r.finish();
    traits_.batch_dependent = capacity_factor_ > 0.0;
    // The layer's losses use one softmax over all E logits, which this router never forms.
    traits_.supports_losses = false;
    traits_.has_own_loss = true;
  }

  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return double(prototypes_); }
  void check_shape(int64_t E, const std::string& context) const override {
    if (E % prototypes_ != 0)
      fail("{}: prototypes = {} does not divide the number of experts E = {}", context, prototypes_,
           E);
  }
  nlohmann::json params() const override {
    return {{"router", "prototype"},
            {"prototypes", prototypes_},
            {"capacity_factor", capacity_factor_},
            {"prototype_balance", balance_}};
  }
  std::string describe() const override {
    return fmt::format(
        "M6-T expert prototyping: top-1 in each of {} prototypes, weight = the prototype's "
        "softmax{}",
        prototypes_,
        capacity_factor_ > 0
            ? fmt::format(", capacity factor {} (batch-dependent)", capacity_factor_)
            : ", dropless");
  }

  // Per group, tokens in position order, each with its K choices (one per prototype). The
  // prototypes' experts are disjoint, so position order is every expert's drop order.
  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t K = prototypes_, M = in.E / K;
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    std::vector<double> s(static_cast<size_t>(M));  // (M) one prototype's softmax
    std::vector<int32_t> best;
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      for (int64_t t = begin; t < end; ++t)
        for (int64_t p = 0; p < K; ++p) {
          compute_scores(ScoreKind::Softmax, in.logits + t * in.R + p * M, M, s.data());
          top_k_indices(s.data(), M, 1, best);
          const int32_t e = int32_t(p * M + best[0]);
          plan.add(int32_t(t), e, int32_t(g), float(s[size_t(best[0])]));
          plan.selection_counts[size_t(e)] += 1.0;
        }
      // C = ⌈n · K · cf / E⌉: an expert expects n / M = n K / E of the group's n tokens.
      plan.capacity.push_back(capacity_factor_ > 0
                                  ? int64_t(std::ceil(double(end - begin) * double(K) *
                                                      capacity_factor_ / double(in.E)))
                                  : 0);
    }
  }

  // w = s_j of prototype p: ds is one-hot at j, then that prototype's softmax Jacobian.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    const int64_t M = in.E / prototypes_;
    std::vector<double> s(static_cast<size_t>(M)), ds(static_cast<size_t>(M));  // (M)
    for (size_t a = 0; a < plan.size(); ++a) {
      if (!plan.kept[a] || d_weight[a] == 0.0f) continue;
      const int64_t t = plan.token[a], p = plan.expert[a] / M, j = plan.expert[a] % M;
      float* dz = d_logits + t * in.R + p * M;
      compute_scores(ScoreKind::Softmax, in.logits + t * in.R + p * M, M, s.data());
      std::fill(ds.begin(), ds.end(), 0.0);
      ds[size_t(j)] = d_weight[a];
      scores_backward(ScoreKind::Softmax, s.data(), ds.data(), M, dz);
    }
  }

  // L = (α/K) Σ_p M Σ_{e in p} f_e P_e over the routed batch: f_e the share of tokens choosing e
  // (before drops, no gradient), P_e the mean of the prototype softmax. The mean over prototypes
  // keeps L = α at perfect balance for any K (K = 1 is Switch's loss).
  double own_loss(const RouterInput& in, const RoutingPlan& plan, float* d_logits) const override {
    const int64_t K = prototypes_, M = in.E / K, T = in.T;
    if (T == 0 || balance_ == 0.0) return 0.0;
    // ∂L/∂s_te = α M f_e / (K T), the same for every token.
    std::vector<double> coef(static_cast<size_t>(in.E));  // (E)
    for (int64_t e = 0; e < in.E; ++e)
      coef[size_t(e)] = balance_ * double(M) / double(K) *
                        (plan.selection_counts[size_t(e)] / double(T)) / double(T);
    std::vector<double> s(static_cast<size_t>(M));  // (M)
    double loss = 0.0;
    for (int64_t t = 0; t < T; ++t)
      for (int64_t p = 0; p < K; ++p) {
        const double* c = coef.data() + p * M;
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R + p * M, M, s.data());
        for (int64_t j = 0; j < M; ++j) loss += c[j] * s[size_t(j)];
        if (d_logits)
          scores_backward(ScoreKind::Softmax, s.data(), c, M, d_logits + t * in.R + p * M);
      }
    return loss;
  }

 private:
  RouterTraits traits_;
  int64_t prototypes_ = 2;
  double capacity_factor_ = 0.0, balance_ = 0.01;
};

}  // namespace

std::unique_ptr<Router> make_prototype(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<PrototypeRouter>(p, c);
}

}  // namespace switchyard::routers
