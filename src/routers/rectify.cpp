// Rectify-Router (docs/routers/rectify.md; Zeng et al., "Turn Waste into Worth: Rectifying Top-k
// Router of MoE", arXiv 2402.12399): top-k with capacity, then
//   Fill-in Rectification (FR): an expert's slots left free after every top-k choice is placed go
//     to the tokens whose (k+1)-th choice it is, best score first;
//   Intra-GPU Rectification (IR): a token left with D = k - (its kept experts) > 0 goes to its
//     best-scoring expert on its own expert-parallel rank (RouterInput::token_rank) not already
//     serving it, counted D times in the weights, without a capacity limit.
// Weights: the kept experts' softmax scores (the IR expert's times D), renormalised over the
// token's kept experts. The drops, FR and IR are decided here, so every group has capacity 0 and
// the dispatch drops nothing more; a dropped top-k choice stays in the plan with kept = 0.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class RectifyRouter final : public Router {
 public:
  RectifyRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_int("k", 2, 1, 1 << 20);
    capacity_factor_ = r.get_double("capacity_factor", 1.0, 0.0, 1e6);
    normalize_ = r.get_bool("normalize", k_ > 1);
    intra_rank_ = r.get_bool("intra_rank", true);
    fill_in_ = r.get_bool("fill_in", true);
    r.finish();
    if (!(capacity_factor_ > 0.0))
      fail("{}: capacity_factor must be > 0: Rectify-Router rectifies capacity drops and padding",
           context);
    if (normalize_ && k_ == 1)
      fail(
          "{}: normalize = true with k = 1 makes a token's weight 1 whenever it keeps one expert, "
          "so the router gets no gradient; set normalize to false",
          context);
    traits_.batch_dependent = true;  // capacity, fill-in and the rectified weights
    traits_.needs_placement = intra_rank_;
    traits_.supports_losses = true;
  }

  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return double(k_); }
  void check_shape(int64_t E, const std::string& context) const override {
    if (k_ > E) fail("{}: k = {} exceeds the number of experts E = {}", context, k_, E);
  }
  nlohmann::json params() const override {
    return {{"router", "rectify"},
            {"k", k_},
            {"capacity_factor", capacity_factor_},
            {"normalize", normalize_},
            {"intra_rank", intra_rank_},
            {"fill_in", fill_in_}};
  }
  std::string describe() const override {
    std::string text =
        fmt::format("Rectify-Router: top-{} over softmax, capacity factor {} (batch-dependent)", k_,
                    capacity_factor_);
    if (fill_in_) text += fmt::format(", free slots filled by (k+1)-th choices (top-{})", k_ + 1);
    if (intra_rank_) text += ", dropped choices to the best expert on the token's own rank";
    text += normalize_ ? ", weights renormalised over the kept experts" : ", raw softmax weights";
    return text;
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t T = in.T, E = in.E, k = k_;
    const int64_t K = fill_in_ ? std::min(k + 1, E) : k;  // choices looked at per token
    plan.clear();
    plan.selection_counts.assign(size_t(E), 0.0);
    plan.first_choice_counts.assign(size_t(E), 0.0);
    std::vector<double> s(static_cast<size_t>(T * E));     // (T, E) softmax
    std::vector<int32_t> top(static_cast<size_t>(T * K));  // (T, K) choices, best first
#pragma omp parallel
    {
      std::vector<int32_t> best;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < T; ++t) {
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R, E, s.data() + t * E);
        top_k_indices(s.data() + t * E, E, K, best);
        std::copy(best.begin(), best.end(), top.begin() + t * K);
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      for (int64_t r = 0; r < k; ++r) plan.selection_counts[size_t(top[size_t(t * K + r)])] += 1.0;
      plan.first_choice_counts[size_t(top[size_t(t * K)])] += 1.0;
    }
    if (intra_rank_ && (!in.token_rank || in.ranks <= 0 || E % in.ranks != 0))
      fail(
          "rectify router: intra_rank needs the placement of tokens and experts (E = {}, ranks {})",
          E, in.ranks);
    const int64_t per_rank = intra_rank_ ? E / in.ranks : E;
    // One group's entries in plan order: (token, expert, multiplicity), multiplicity 0 = dropped.
    struct Entry {
      int32_t t, e;
      int32_t count;
    };
    std::vector<Entry> entries;
    std::vector<double> norm(static_cast<size_t>(T), 0.0);        // Σ count · s over kept entries
    std::vector<int32_t> served(static_cast<size_t>(T), 0);       // kept experts per token
    std::vector<int32_t> mine(static_cast<size_t>(T * (k + 1)));  // (T, k + 1) those experts
    auto serve = [&](int64_t t, int32_t e) { mine[size_t(t * (k + 1) + served[size_t(t)]++)] = e; };
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      const int64_t C =
          int64_t(std::ceil(double(end - begin) * double(k) * capacity_factor_ / double(E)));
      entries.clear();
      std::vector<int64_t> used(static_cast<size_t>(E), 0);
      // Top-k, rank-major, position order within a rank.
      for (int64_t r = 0; r < k; ++r)
        for (int64_t t = begin; t < end; ++t) {
          const int32_t e = top[size_t(t * K + r)];
          const bool kept = used[size_t(e)] < C;
          if (kept) {
            ++used[size_t(e)];
            serve(t, e);
          }
          entries.push_back({int32_t(t), e, int32_t(kept)});
        }
      // FR: per expert, its free slots to the tokens whose (k+1)-th choice it is, by descending
      // score (ties -> lower position).
      if (K > k) {
        std::vector<std::vector<int32_t>> candidates(static_cast<size_t>(E));
        for (int64_t t = begin; t < end; ++t)
          candidates[size_t(top[size_t(t * K + k)])].push_back(int32_t(t));
        for (int64_t e = 0; e < E; ++e) {
          std::vector<int32_t>& c = candidates[size_t(e)];
          const int64_t free = C - used[size_t(e)];
          if (free <= 0 || c.empty()) continue;
          std::stable_sort(c.begin(), c.end(), [&](int32_t a, int32_t b) {
            return s[size_t(a * E + e)] > s[size_t(b * E + e)];
          });
          for (int64_t i = 0; i < std::min<int64_t>(free, int64_t(c.size())); ++i) {
            entries.push_back({c[size_t(i)], int32_t(e), 1});
            serve(c[size_t(i)], int32_t(e));
          }
        }
      }
      // IR: D = k - kept experts > 0 -> the best local expert not already serving the token.
      if (intra_rank_) {
        for (int64_t t = begin; t < end; ++t) {
          const int32_t D = int32_t(k) - served[size_t(t)];
          if (D <= 0) continue;
          const int32_t* taken = mine.data() + t * (k + 1);
          const int64_t first = int64_t(in.token_rank[t]) * per_rank;
          int32_t h = -1;
          for (int64_t e = first; e < first + per_rank; ++e)
            if (std::find(taken, taken + served[size_t(t)], int32_t(e)) ==
                    taken + served[size_t(t)] &&
                (h < 0 || s[size_t(t * E + e)] > s[size_t(t * E + h)]))
              h = int32_t(e);
          if (h >= 0) entries.push_back({int32_t(t), h, D});
        }
      }
      for (const Entry& x : entries) norm[size_t(x.t)] += x.count * s[size_t(x.t * E + x.e)];
      for (const Entry& x : entries) {
        const double num = x.count * s[size_t(x.t * E + x.e)];
        const double w = !normalize_ ? num : norm[size_t(x.t)] > 0 ? num / norm[size_t(x.t)] : 0.0;
        plan.add(x.t, x.e, int32_t(g), float(w));
        plan.kept.back() = x.count > 0;
        plan.saved.push_back(float(x.count));  // the multiplicity, for backward
      }
      plan.capacity.push_back(0);  // applied above
    }
  }

  // w_a = c_a s_a / N, N = Σ_b c_b s_b over the token's kept assignments b (c: multiplicity):
  // ∂L/∂s_{e_b} = c_b (u_b − Σ_a u_a w_a) / N with u = ∂L/∂w; raw weights: c_b u_b. Then the
  // softmax Jacobian.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    const int64_t E = in.E;
    const TokenAssignments by_token = assignments_by_token(plan, in.T);
#pragma omp parallel
    {
      std::vector<double> s(static_cast<size_t>(E)), ds(static_cast<size_t>(E));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < in.T; ++t) {
        const int64_t begin = by_token.offsets[size_t(t)], end = by_token.offsets[size_t(t) + 1];
        compute_scores(ScoreKind::Softmax, in.logits + t * in.R, E, s.data());
        std::fill(ds.begin(), ds.end(), 0.0);
        double N = 0.0, weighted = 0.0;  // Σ c s, Σ u c s
        bool any = false;
        for (int64_t i = begin; i < end; ++i) {
          const size_t a = size_t(by_token.index[size_t(i)]);
          if (!plan.kept[a]) continue;
          const double c = plan.saved[a], se = s[size_t(plan.expert[a])];
          N += c * se;
          weighted += double(d_weight[a]) * c * se;
          any = any || d_weight[a] != 0.0f;
        }
        if (!any || !(N > 0)) continue;
        for (int64_t i = begin; i < end; ++i) {
          const size_t a = size_t(by_token.index[size_t(i)]);
          if (!plan.kept[a]) continue;
          const double c = plan.saved[a], u = d_weight[a];
          ds[size_t(plan.expert[a])] += normalize_ ? c * (u - weighted / N) / N : c * u;
        }
        scores_backward(ScoreKind::Softmax, s.data(), ds.data(), E, d_logits + t * in.R);
      }
    }
  }

 private:
  RouterTraits traits_;
  int64_t k_ = 2;
  double capacity_factor_ = 1.0;
  bool normalize_ = true, intra_rank_ = true, fill_in_ = true;
};

}  // namespace

std::unique_ptr<Router> make_rectify(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<RectifyRouter>(p, c);
}

}  // namespace switchyard::routers
