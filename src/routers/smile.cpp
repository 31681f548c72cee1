// SMILE bi-level routing (docs/routers/smile.md; the form is a reconstruction, see there): a
// node gate picks one of N nodes, a gate shared by the nodes picks one of the M = E/N experts
// inside it; expert n M + j, weight q_n r_j. Two Switch-style balance losses, one per level.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <cmath>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class SmileRouter final : public Router {
 public:
  SmileRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    nodes_ = r.get_int("nodes", 2, 1, 1 << 20);
    capacity_factor_ = r.get_double("capacity_factor", 0.0, 0.0, 1e6);
    node_balance_ = r.get_double("node_balance", 0.01, 0.0, 1e6);
    expert_balance_ = r.get_double("expert_balance", 0.01, 0.0, 1e6);
    r.finish();
    traits_.batch_dependent = capacity_factor_ > 0.0;
    traits_.supports_losses = false;  // its two balance losses are its own (own_loss)
    traits_.has_own_loss = true;
  }

  const RouterTraits& traits() const override { return traits_; }
  // Logits: [0, N) the node gate, [N, N + E/N) the in-node gate.
  int64_t num_outputs(int64_t E) const override { return nodes_ + E / nodes_; }
  void check_shape(int64_t E, const std::string& context) const override {
    if (E % nodes_ != 0)
      fail("{}: nodes = {} does not divide the number of experts E = {}", context, nodes_, E);
  }
  nlohmann::json params() const override {
    return {{"router", "smile"},
            {"nodes", nodes_},
            {"k", 1},
            {"capacity_factor", capacity_factor_},
            {"node_balance", node_balance_},
            {"expert_balance", expert_balance_}};
  }
  std::string describe() const override {
    return fmt::format(
        "SMILE bi-level: top-1 of {} nodes, then top-1 of the node's experts, weight q·r{}", nodes_,
        capacity_factor_ > 0
            ? fmt::format(", capacity factor {} (batch-dependent)", capacity_factor_)
            : ", dropless");
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t N = nodes_, M = in.E / N;
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    std::vector<double> q(static_cast<size_t>(N)), r(static_cast<size_t>(M));
    std::vector<int32_t> best;
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      for (int64_t t = begin; t < end; ++t) {
        scores(in, t, q.data(), r.data());
        top_k_indices(q.data(), N, 1, best);
        const int32_t n = best[0];
        top_k_indices(r.data(), M, 1, best);
        const int32_t j = best[0];
        plan.add(int32_t(t), int32_t(n * M + j), int32_t(g), float(q[size_t(n)] * r[size_t(j)]));
        plan.selection_counts[size_t(n)] += 1.0;
        plan.selection_counts[size_t(N + j)] += 1.0;
      }
      plan.capacity.push_back(
          capacity_factor_ > 0
              ? int64_t(std::ceil(double(end - begin) * capacity_factor_ / double(in.E)))
              : 0);
    }
  }

  // w = q_n r_j: ∂w/∂q_n = r_j, ∂w/∂r_j = q_n, then each level's softmax Jacobian.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    const int64_t N = nodes_, M = in.E / N;
    std::vector<double> q(static_cast<size_t>(N)), r(static_cast<size_t>(M));
    std::vector<double> dq(static_cast<size_t>(N)), dr(static_cast<size_t>(M));
    for (size_t a = 0; a < plan.size(); ++a) {
      if (!plan.kept[a] || d_weight[a] == 0.0f) continue;
      const int64_t t = plan.token[a], n = plan.expert[a] / M, j = plan.expert[a] % M;
      scores(in, t, q.data(), r.data());
      std::fill(dq.begin(), dq.end(), 0.0);
      std::fill(dr.begin(), dr.end(), 0.0);
      dq[size_t(n)] = d_weight[a] * r[size_t(j)];
      dr[size_t(j)] = d_weight[a] * q[size_t(n)];
      scores_backward(ScoreKind::Softmax, q.data(), dq.data(), N, d_logits + t * in.R);
      scores_backward(ScoreKind::Softmax, r.data(), dr.data(), M, d_logits + t * in.R + N);
    }
  }

  // L = α N Σ_n f_n Q_n + β M Σ_j f_j R_j over the routed batch: f the share of tokens choosing
  // node n (in-node expert j), counted before drops, no gradient; Q, R the mean probabilities.
  double own_loss(const RouterInput& in, const RoutingPlan& plan, float* d_logits) const override {
    const int64_t N = nodes_, M = in.E / N, T = in.T;
    if (T == 0) return 0.0;
    std::vector<double> q(static_cast<size_t>(N)), r(static_cast<size_t>(M));
    std::vector<double> dq(static_cast<size_t>(N)), dr(static_cast<size_t>(M));
    const std::vector<double>& f = plan.selection_counts;  // (N + M) choices
    for (int64_t n = 0; n < N; ++n) dq[size_t(n)] = node_balance_ * double(N) * f[size_t(n)] / T;
    for (int64_t j = 0; j < M; ++j)
      dr[size_t(j)] = expert_balance_ * double(M) * f[size_t(N + j)] / T;
    // ∂L/∂q_tn = α N f_n / T (and likewise for r), the same for every token.
    std::vector<double> gq(static_cast<size_t>(N)), gr(static_cast<size_t>(M));
    for (int64_t n = 0; n < N; ++n) gq[size_t(n)] = dq[size_t(n)] / double(T);
    for (int64_t j = 0; j < M; ++j) gr[size_t(j)] = dr[size_t(j)] / double(T);
    double loss = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      scores(in, t, q.data(), r.data());
      for (int64_t n = 0; n < N; ++n) loss += gq[size_t(n)] * q[size_t(n)];
      for (int64_t j = 0; j < M; ++j) loss += gr[size_t(j)] * r[size_t(j)];
      if (!d_logits) continue;
      scores_backward(ScoreKind::Softmax, q.data(), gq.data(), N, d_logits + t * in.R);
      scores_backward(ScoreKind::Softmax, r.data(), gr.data(), M, d_logits + t * in.R + N);
    }
    return loss;
  }

 private:
  // q = softmax of the node logits, r = softmax of the in-node logits, for token t.
  void scores(const RouterInput& in, int64_t t, double* q, double* r) const {
    compute_scores(ScoreKind::Softmax, in.logits + t * in.R, nodes_, q);
    compute_scores(ScoreKind::Softmax, in.logits + t * in.R + nodes_, in.E / nodes_, r);
  }

  RouterTraits traits_;
  int64_t nodes_ = 2;
  double capacity_factor_ = 0.0, node_balance_ = 0.01, expert_balance_ = 0.01;
};

}  // namespace

std::unique_ptr<Router> make_smile(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<SmileRouter>(p, c);
}

}  // namespace switchyard::routers
