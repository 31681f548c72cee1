// MoEC, Mixture of Expert Clusters (docs/routers/moec.md; Xie et al., AAAI 2023, arXiv
// 2207.09094): top-1 over softmax, the experts grouped into clusters of `cluster_size` consecutive
// experts.
//   Cluster-level expert dropout (training): each expert of the token's top-1 cluster is dropped
//     with probability `cluster_dropout` (the token's own draws, RouterInput::uniform); the token
//     goes to the best kept expert of that cluster (every one dropped: the top-1 itself).
//   Variance constraint (own_loss): μ times the mean over tokens and clusters of the variance of
//     the softmax probabilities within a cluster, so that a cluster's experts see similar tokens.
// Weight p_e (not renormalised); optional capacity in position order.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class MoECRouter final : public Router {
 public:
  MoECRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    cluster_size_ = r.get_int("cluster_size", 8, 1, 1 << 20);
    dropout_ = r.get_double("cluster_dropout", 0.5, 0.0, 1.0);
    mu_ = r.get_double("cluster_loss", 1.0, 0.0, 1e6);
    capacity_factor_ = r.get_double("capacity_factor", 0.0, 0.0, 1e6);
    r.finish();
    traits_.batch_dependent = capacity_factor_ > 0.0;
    traits_.has_own_loss = true;
    traits_.uniforms_per_token = cluster_size_;  // one draw per member of the token's cluster
  }

  const RouterTraits& traits() const override { return traits_; }
  void check_shape(int64_t E, const std::string& context) const override {
    if (E % cluster_size_ != 0)
      fail("{}: cluster_size = {} does not divide the number of experts E = {}", context,
           cluster_size_, E);
  }
  nlohmann::json params() const override {
    return {{"router", "moec"},
            {"cluster_size", cluster_size_},
            {"cluster_dropout", dropout_},
            {"cluster_loss", mu_},
            {"capacity_factor", capacity_factor_}};
  }
  std::string describe() const override {
    std::string text = fmt::format(
        "MoEC: top-1 over softmax, clusters of {} consecutive experts; training: each expert of "
        "the token's cluster dropped with rate {} (re-routed to the best kept one); variance loss "
        "μ = {} on the probabilities within each cluster",
        cluster_size_, dropout_, mu_);
    text += capacity_factor_ > 0
                ? fmt::format(", capacity factor {} (batch-dependent)", capacity_factor_)
                : std::string(", dropless");
    return text;
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t T = in.T, E = in.E, M = cluster_size_;
    const bool drop = in.training && dropout_ > 0.0;
    if (drop && (!in.uniform || in.uniforms_per_token != M))
      fail("moec router: training needs {} uniform draws per token (cluster_size), got {}", M,
           in.uniform ? in.uniforms_per_token : 0);
    plan.clear();
    plan.selection_counts.assign(size_t(E), 0.0);
    plan.first_choice_counts.assign(size_t(E), 0.0);
    std::vector<int32_t> chosen(static_cast<size_t>(T));  // (T) expert after the dropout
    std::vector<float> weight(static_cast<size_t>(T));    // (T) p of that expert
#pragma omp parallel
    {
      std::vector<double> s(static_cast<size_t>(E));
      std::vector<int32_t> top;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R, E, s.data());
        top_k_indices(s.data(), E, 1, top);
        int32_t e = top[0];
        if (drop) {
          const float* u = in.uniform + t * M;
          const int64_t first = e / M * M;
          int32_t best = -1;  // strict >: ties keep the lower expert, as top_k_indices
          for (int64_t i = 0; i < M; ++i)
            if (!(double(u[i]) < dropout_) && (best < 0 || s[size_t(first + i)] > s[size_t(best)]))
              best = int32_t(first + i);
          if (best >= 0) e = best;
        }
        chosen[size_t(t)] = e;
        weight[size_t(t)] = float(s[size_t(e)]);
      }
    }
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      for (int64_t t = begin; t < end; ++t) {
        const int32_t e = chosen[size_t(t)];
        plan.add(int32_t(t), e, int32_t(g), weight[size_t(t)]);
        plan.selection_counts[size_t(e)] += 1.0;
        plan.first_choice_counts[size_t(e)] += 1.0;
      }
      // Position order within the group; the dispatch drops past C.
      plan.capacity.push_back(
          capacity_factor_ > 0
              ? int64_t(std::ceil(double(end - begin) * capacity_factor_ / double(E)))
              : 0);
    }
  }

  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    backward_raw_scores(ScoreKind::Softmax, in, plan, d_weight, 1.0, d_logits);
  }

  // L = μ / (T C) Σ_t Σ_c Var_c(p_t), Var_c the population variance of the M probabilities of
  // cluster c: ∂L/∂p_e = μ / (T C) · 2 (p_e − mean_c) / M, then the softmax Jacobian.
  double own_loss(const RouterInput& in, const RoutingPlan&, float* d_logits) const override {
    const int64_t T = in.T, E = in.E, M = cluster_size_, C = E / M;
    if (T == 0 || mu_ == 0.0) return 0.0;
    const double scale = mu_ / (double(T) * double(C));
    double sum = 0.0;
#pragma omp parallel reduction(+ : sum)
    {
      std::vector<double> s(static_cast<size_t>(E)), ds(static_cast<size_t>(E));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R, E, s.data());
        for (int64_t c = 0; c < C; ++c) {
          double mean = 0.0, var = 0.0;
          for (int64_t i = c * M; i < (c + 1) * M; ++i) mean += s[size_t(i)] / double(M);
          for (int64_t i = c * M; i < (c + 1) * M; ++i) {
            const double dev = s[size_t(i)] - mean;
            var += dev * dev / double(M);
            ds[size_t(i)] = scale * 2.0 * dev / double(M);
          }
          sum += var;
        }
        if (d_logits)
          scores_backward(ScoreKind::Softmax, s.data(), ds.data(), E, d_logits + t * in.R);
      }
    }
    return scale * sum;
  }

 private:
  RouterTraits traits_;
  int64_t cluster_size_ = 8;
  double dropout_ = 0.5, mu_ = 1.0, capacity_factor_ = 0.0;
};

}  // namespace

std::unique_ptr<Router> make_moec(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<MoECRouter>(p, c);
}

}  // namespace switchyard::routers
