// Token-choice top-k: Switch, GShard, Mixtral, DeepSeek-V3, AdaMoE, LocMoE, Sinkhorn and Adaptive
// Gating are presets of this router (routers.md sections 1, 2, 3, 7, 10, 17; docs/routers/).
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "routers/locality.h"
#include "routers/logit_functions.h"
#include "routers/router_common.h"
#include "routers/routers.h"
#include "routers/speechmoe2.h"

namespace switchyard::routers {
namespace {

using nlohmann::json;

class TopKRouter final : public Router {
 public:
  TopKRouter(const json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_int("k", 2, 1, 1 << 20);
    const std::string score =
        r.get_choice("score", "softmax", {"softmax", "sigmoid", "sqrtsoftplus"});
    traits_.score = score == "softmax"   ? ScoreKind::Softmax
                    : score == "sigmoid" ? ScoreKind::Sigmoid
                                         : ScoreKind::SqrtSoftplus;
    normalize_ = r.get_bool("normalize", true);
    capacity_factor_ = r.get_double("capacity_factor", 0.0, 0.0, 1e6);
    // Negative: the training capacity factor also in evaluation (Switch / DeepSpeed option).
    eval_capacity_factor_ = r.get_double("eval_capacity_factor", -1.0, -1.0, 1e6);
    min_capacity_ = r.get_int("min_capacity", 0, 0, int64_t(1) << 40);
    batch_priority_ =
        r.get_choice("drop_order", "position", {"position", "batch_priority"}) == "batch_priority";
    const std::string second = r.get_choice("second_expert", "all", {"all", "random", "adaptive"});
    random_second_ = second == "random";
    adaptive_second_ = second == "adaptive";
    adaptive_threshold_ = r.get_double("adaptive_threshold", 0.1, 0.0, 1.0);
    sinkhorn_ = r.get_choice("selection", "score", {"score", "sinkhorn"}) == "sinkhorn";
    sinkhorn_tolerance_ = r.get_double("sinkhorn_tolerance", 1e-4, 1e-12, 1.0);
    broadcast_threshold_ = r.get_double("broadcast_threshold", 0.0, 0.0, 1.0);
    groups_ = r.get_int("groups", 1, 1, 1 << 20);
    topk_groups_ = r.get_int("topk_groups", groups_, 1, groups_);
    route_scale_ = r.get_double("route_scale", 1.0, 1e-6, 1e6);
    null_experts_ = r.get_int("null_experts", 0, 0, 1 << 20);
    traits_.jitter = r.get_double("jitter", 0.0, 0.0, 1.0);
    bias_update_rate_ = r.get_double("bias_update_rate", 0.0, 0.0, 1e3);
    locality_ = r.get_choice("locality", "node", {"node", "rank"}) == "node" ? LocalityLevel::Node
                                                                             : LocalityLevel::Rank;
    local_bonus_ = r.get_double("local_bonus", 0.0, 0.0, 1e6);
    locality_loss_ = r.get_double("locality_loss", 0.0, 0.0, 1e6);
    locality_smoothing_ = r.get_double("locality_smoothing", 0.1, 1e-6, 1.0);
    sparsity_loss_ = r.get_double("sparsity_loss", 0.0, 0.0, 1e6);
    importance_loss_ = r.get_double("importance_loss", 0.0, 0.0, 1e6);
    logits_ = read_logit_function(r, params, context);
    r.finish();
    if ((sparsity_loss_ > 0 || importance_loss_ > 0) && traits_.score != ScoreKind::Softmax)
      fail(
          "{}: sparsity_loss = {} and importance_loss = {} (SpeechMoE's losses) are defined on "
          "softmax gate values, but score is '{}'; set score to softmax or both losses to 0",
          context, sparsity_loss_, importance_loss_, score_name(traits_.score));
    if (normalize_ && k_ == 1 && null_experts_ == 0)
      fail(
          "{}: normalize = true with k = 1 makes every weight 1, so the router gets no gradient; "
          "set normalize to false",
          context);
    if (groups_ > 1 && null_experts_ > 0)
      fail("{}: groups = {} cannot be combined with null_experts = {}", context, groups_,
           null_experts_);
    if (sinkhorn_ &&
        (null_experts_ > 0 || groups_ > 1 || local_bonus_ > 0 || bias_update_rate_ > 0))
      fail(
          "{}: selection = sinkhorn balances the scores of the E true experts and cannot be "
          "combined with null_experts, groups, local_bonus or bias_update_rate",
          context);
    if (broadcast_threshold_ > 0 && null_experts_ > 0)
      fail("{}: broadcast_threshold (GW-MoE) cannot be combined with null_experts = {}", context,
           null_experts_);
    if (eval_capacity_factor_ < 0) eval_capacity_factor_ = capacity_factor_;
    // A logit function that reads the earlier tokens of the sequence (SpeechMoE2's running mean)
    // makes routes depend on other tokens, causally.
    const bool reads_earlier = logits_.function && logits_.function->reads_earlier_tokens();
    traits_.batch_dependent =
        capacity_factor_ > 0.0 || eval_capacity_factor_ > 0.0 || sinkhorn_ || reads_earlier;
    traits_.supports_forced = null_experts_ == 0;
    traits_.needs_placement = local_bonus_ > 0 || locality_loss_ > 0;
    traits_.has_own_loss = locality_loss_ > 0 || sparsity_loss_ > 0 || importance_loss_ > 0;
  }

  const RouterTraits& traits() const override { return traits_; }
  const LogitFunction* logit_function() const override { return logits_.function.get(); }
  int64_t num_outputs(int64_t E) const override { return E + null_experts_; }
  double nominal_experts_per_token(int64_t) const override { return double(k_); }

  json params() const override {
    json p = {{"router", "topk"},
              {"k", k_},
              {"score", score_name(traits_.score)},
              {"normalize", normalize_},
              {"capacity_factor", capacity_factor_},
              {"eval_capacity_factor", eval_capacity_factor_},
              {"min_capacity", min_capacity_},
              {"drop_order", batch_priority_ ? "batch_priority" : "position"},
              {"second_expert", random_second_     ? "random"
                                : adaptive_second_ ? "adaptive"
                                                   : "all"},
              {"adaptive_threshold", adaptive_threshold_},
              {"selection", sinkhorn_ ? "sinkhorn" : "score"},
              {"sinkhorn_tolerance", sinkhorn_tolerance_},
              {"broadcast_threshold", broadcast_threshold_},
              {"groups", groups_},
              {"topk_groups", topk_groups_},
              {"route_scale", route_scale_},
              {"null_experts", null_experts_},
              {"jitter", traits_.jitter},
              {"bias_update_rate", bias_update_rate_},
              {"locality", locality_ == LocalityLevel::Node ? "node" : "rank"},
              {"local_bonus", local_bonus_},
              {"locality_loss", locality_loss_},
              {"locality_smoothing", locality_smoothing_},
              {"sparsity_loss", sparsity_loss_},
              {"importance_loss", importance_loss_}};
    p.update(logits_.params);
    return p;
  }

  std::string describe() const override {
    std::string text =
        fmt::format("token-choice top-{} over {} scores", k_, score_name(traits_.score));
    if (normalize_) text += ", renormalised";
    if (!logits_.description.empty()) text += ", " + logits_.description;
    if (groups_ > 1) text += fmt::format(", {} of {} expert groups", topk_groups_, groups_);
    if (null_experts_ > 0) text += fmt::format(", {} null experts", null_experts_);
    if (sinkhorn_)
      text +=
          ", chosen in training by Sinkhorn-balanced scores over the routing group "
          "(batch-dependent)";
    if (adaptive_second_)
      text += fmt::format(", later choices only when p1 - p2 < {}", adaptive_threshold_);
    if (broadcast_threshold_ > 0)
      text += fmt::format(
          ", in training every expert for tokens whose normalised router entropy is >= {}",
          broadcast_threshold_);
    if (traits_.needs_placement)
      text += fmt::format(", {}-local experts: selection bonus {}, locality loss {}",
                          locality_ == LocalityLevel::Node ? "node" : "rank", local_bonus_,
                          locality_loss_);
    if (capacity_factor_ > 0)
      text += fmt::format(
          ", capacity factor {} ({} drop order): batch-dependent, a token's route depends on the "
          "other tokens of its routing group",
          capacity_factor_, batch_priority_ ? "batch-prioritised" : "position");
    else
      text += ", dropless";
    if (eval_capacity_factor_ != capacity_factor_)
      text += eval_capacity_factor_ > 0
                  ? fmt::format(", capacity factor {} in evaluation", eval_capacity_factor_)
                  : std::string(", dropless in evaluation");
    if (min_capacity_ > 0) text += fmt::format(", at least {} slots per expert", min_capacity_);
    if (sparsity_loss_ > 0 || importance_loss_ > 0)
      text += fmt::format(", SpeechMoE's sparsity L1 loss {} and mean importance loss {}",
                          sparsity_loss_, importance_loss_);
    return text;
  }

  void check_shape(int64_t E, const std::string& context) const override {
    if (k_ > E + null_experts_)
      fail("{}: k = {} exceeds the number of router outputs R = {} (E = {} experts{})", context, k_,
           E + null_experts_, E, null_experts_ ? fmt::format(" + {} null", null_experts_) : "");
    if (groups_ > 1 && E % groups_ != 0)
      fail("{}: groups = {} does not divide the number of experts E = {}", context, groups_, E);
    if (groups_ > 1 && k_ > topk_groups_ * (E / groups_))
      fail("{}: k = {} exceeds the {} experts in topk_groups = {} groups of {}", context, k_,
           topk_groups_ * (E / groups_), topk_groups_, E / groups_);
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t R = in.R, E = in.E;
    if (in.forced && in.forced_k > k_)
      fail("topk router: replaying {} experts per token needs k >= {}, got k = {}", in.forced_k,
           in.forced_k, k_);
    plan.clear();
    plan.saved.assign(size_t(in.T), 0.0f);  // per-token normaliser of the weights
    plan.selection_counts.assign(size_t(R), 0.0);
    plan.first_choice_counts.assign(size_t(R), 0.0);
    // GW-MoE (training): a token whose normalised router entropy reaches the threshold goes to
    // every expert, so each token has K = E slots then.
    const bool broadcast = in.training && broadcast_threshold_ > 0 && !in.forced;
    const int64_t K = broadcast ? std::max(k_, E) : k_;
    std::vector<int32_t> chosen(size_t(in.T * K));    // (T, K) chosen outputs, -1 = none
    std::vector<float> weights(size_t(in.T * K));     // (T, K)
    std::vector<uint8_t> confident(size_t(in.T), 0);  // adaptive gating: later choices dropped
    // Sinkhorn selection (training): each group's exp(logits) balanced over tokens and experts.
    const std::vector<double> balanced =
        sinkhorn_ && in.training ? sinkhorn_scores(in) : std::vector<double>{};
#pragma omp parallel
    {
      std::vector<double> s(static_cast<size_t>(R)), sel(static_cast<size_t>(R));
      std::vector<int32_t> top;
      top.reserve(size_t(R));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < in.T; ++t) {
        compute_scores(traits_.score, in.logits + t * R, R, s.data());
        for (int64_t j = 0; j < R; ++j)
          sel[size_t(j)] = s[size_t(j)] + (in.bias && j < E ? in.bias[j] : 0.0);
        if (!balanced.empty() && !std::isnan(balanced[size_t(t * R)]))
          std::copy_n(balanced.begin() + t * R, R, sel.begin());
        if (local_bonus_ > 0)  // LocMoE: prefer the token's own node's (or rank's) experts
          for (int64_t j = 0; j < E; ++j)
            if (expert_domain(in, locality_, j) == token_domain(in, locality_, t))
              sel[size_t(j)] += local_bonus_;
        if (in.forced) {  // replay: the recorded experts, weighed by this router's rule
          top.clear();
          for (int64_t r = 0; r < in.forced_k; ++r)
            if (const int32_t e = in.forced[t * in.forced_k + r]; e >= 0) top.push_back(e);
        } else {
          if (groups_ > 1) restrict_to_best_groups(sel.data(), E);
          const bool uncertain =
              broadcast && normalised_entropy(s.data(), R) >= broadcast_threshold_;
          top_k_indices(sel.data(), R, uncertain ? E : k_, top);
        }
        double norm = 0.0;
        for (int32_t e : top)
          if (e < E) norm += s[size_t(e)];
        plan.saved[size_t(t)] = float(norm);
        if (adaptive_second_ && !in.forced && top.size() >= 2 && top[0] < E && top[1] < E)
          confident[size_t(t)] = s[size_t(top[0])] - s[size_t(top[1])] >= adaptive_threshold_;
        for (int64_t r = 0; r < K; ++r) {
          const int32_t e = r < int64_t(top.size()) ? top[size_t(r)] : -1;
          chosen[size_t(t * K + r)] = e;
          if (e < 0) continue;
          const double g = normalize_ ? (norm > 0 ? s[size_t(e)] / norm : 0.0) : s[size_t(e)];
          weights[size_t(t * K + r)] = float(route_scale_ * g);
        }
      }
    }
    for (int64_t t = 0; t < in.T; ++t)
      for (int64_t r = 0; r < K; ++r) {
        const int32_t e = chosen[size_t(t * K + r)];
        if (e < 0) continue;
        plan.selection_counts[size_t(e)] += 1.0;
        if (r == 0) plan.first_choice_counts[size_t(e)] += 1.0;
      }
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      std::vector<int64_t> order(size_t(end - begin));
      std::iota(order.begin(), order.end(), begin);
      if (batch_priority_)  // V-MoE: tokens by descending first-choice weight
        std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
          return weights[size_t(a * K)] > weights[size_t(b * K)];
        });
      for (int64_t r = 0; r < K; ++r)
        for (int64_t t : order) {
          const int32_t e = chosen[size_t(t * K + r)];
          if (e < 0 || e >= E) continue;  // null experts output nothing
          const float w = weights[size_t(t * K + r)];
          plan.add(int32_t(t), e, int32_t(g), w);
          if (random_second_ && in.training && r >= 1 && !(2.0 * w / route_scale_ > in.uniform[t]))
            plan.kept.back() = 0;
          if (r >= 1 && confident[size_t(t)]) plan.kept.back() = 0;  // adaptive gating
        }
      int64_t capacity = 0;
      const double cf = in.training ? capacity_factor_ : eval_capacity_factor_;
      if (cf > 0) {
        capacity = int64_t(std::ceil(double(end - begin) * double(k_) * cf / double(E)));
        capacity = std::max(capacity, min_capacity_);
        if (batch_priority_) capacity = (capacity + 3) / 4 * 4;
      }
      plan.capacity.push_back(capacity);
    }
  }

  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight,
                const float* /*d_passthrough*/, float* d_logits) const override {
    if (!normalize_) {
      backward_raw_scores(traits_.score, in, plan, d_weight, route_scale_, d_logits);
      return;
    }
    // g_e = rs * s_e / N with N the sum of s over the token's chosen true experts (all of which
    // are in the plan, kept or not): dg_e/ds_j = rs * (δ_ej / N - s_e / N² [j chosen]).
    const TokenAssignments by_token = assignments_by_token(plan, in.T);
#pragma omp parallel
    {
      std::vector<double> s(size_t(in.R)), ds(size_t(in.R));
#pragma omp for schedule(static)
      for (int64_t t = 0; t < in.T; ++t) {
        const int64_t begin = by_token.offsets[size_t(t)], end = by_token.offsets[size_t(t) + 1];
        const double norm = plan.saved[size_t(t)];
        if (begin == end || norm <= 0) continue;
        compute_scores(traits_.score, in.logits + t * in.R, in.R, s.data());
        std::fill(ds.begin(), ds.end(), 0.0);
        double weighted = 0.0;  // Σ_kept u_e s_e
        for (int64_t i = begin; i < end; ++i) {
          const size_t a = size_t(by_token.index[size_t(i)]);
          if (!plan.kept[a]) continue;
          const double u = route_scale_ * d_weight[a];
          ds[size_t(plan.expert[a])] += u / norm;
          weighted += u * s[size_t(plan.expert[a])];
        }
        for (int64_t i = begin; i < end; ++i)
          ds[size_t(plan.expert[size_t(by_token.index[size_t(i)])])] -= weighted / (norm * norm);
        scores_backward(traits_.score, s.data(), ds.data(), in.R, d_logits + t * in.R);
      }
    }
  }

  double own_loss(const RouterInput& in, const RoutingPlan&, float* d_logits) const override {
    return locality_loss(in, locality_, locality_loss_, locality_smoothing_, d_logits) +
           speechmoe_losses(in, sparsity_loss_, importance_loss_, d_logits);
  }

  void update_state(const RouterStepStats& step) override {
    const std::vector<double>& counts = step.counts;
    float* const bias = step.bias;
    const int64_t E = step.E;
    if (bias_update_rate_ <= 0 || bias == nullptr) return;
    const double mean = std::accumulate(counts.begin(), counts.begin() + E, 0.0) / double(E);
    for (int64_t e = 0; e < E; ++e) {
      const double error = mean - counts[size_t(e)];
      bias[e] += float(bias_update_rate_ * double((error > 0) - (error < 0)));
    }
  }

 private:
  // DeepSeek-V3 group-limited routing: keep the topk_groups groups with the best sum of their
  // top-2 selection scores; the other experts cannot be chosen.
  void restrict_to_best_groups(double* sel, int64_t E) const {
    const int64_t size = E / groups_;
    std::vector<double> group_score(static_cast<size_t>(groups_));
    for (int64_t g = 0; g < groups_; ++g) {
      const std::vector<int32_t> best =
          top_k_indices(sel + g * size, size, std::min<int64_t>(2, size));
      double sum = 0.0;
      for (int32_t i : best) sum += sel[g * size + i];
      group_score[size_t(g)] = sum;
    }
    const std::vector<int32_t> keep = top_k_indices(group_score.data(), groups_, topk_groups_);
    std::vector<uint8_t> kept(size_t(groups_), 0);
    for (int32_t g : keep) kept[size_t(g)] = 1;
    for (int64_t e = 0; e < E; ++e)
      if (!kept[size_t(e / size)]) sel[e] = -std::numeric_limits<double>::infinity();
  }

  // Megatron's Sinkhorn load balancing: per routing group, c = exp(z - max z) (per token; the
  // balancing is invariant to a token's scale), then d0 = 1/(n (c d1)), d1 = 1/(E (d0ᵀ c)) until
  // the mean change of d1 is <= tolerance; returns (T, E) d1 c d0, in double.
  std::vector<double> sinkhorn_scores(const RouterInput& in) const {
    const int64_t E = in.E;
    std::vector<double> out(size_t(in.T * E), std::numeric_limits<double>::quiet_NaN());
    for (const auto& [begin, end] : in.groups) {
      const int64_t n = end - begin;
      if (n == 1) continue;  // every expert ties (1/E): the token selects by its scores (NaN)
      std::vector<double> c(size_t(n * E)), d0(size_t(n), 1.0), d1(size_t(E), 1.0);
      for (int64_t i = 0; i < n; ++i) {
        const float* z = in.logits + (begin + i) * in.R;
        const double m = *std::max_element(z, z + E);
        for (int64_t e = 0; e < E; ++e) c[size_t(i * E + e)] = std::exp(double(z[e]) - m);
      }
      constexpr double kEps = 1e-8;
      for (int iteration = 0; iteration < 10000; ++iteration) {
        for (int64_t i = 0; i < n; ++i) {
          double sum = 0.0;
          for (int64_t e = 0; e < E; ++e) sum += d1[size_t(e)] * c[size_t(i * E + e)];
          d0[size_t(i)] = 1.0 / double(n) / (sum + kEps);
        }
        double change = 0.0;
        for (int64_t e = 0; e < E; ++e) {
          double sum = 0.0;
          for (int64_t i = 0; i < n; ++i) sum += d0[size_t(i)] * c[size_t(i * E + e)];
          const double next = 1.0 / double(E) / (sum + kEps);
          change += std::abs(next - d1[size_t(e)]) / double(E);
          d1[size_t(e)] = next;
        }
        if (change <= sinkhorn_tolerance_) break;
      }
      for (int64_t i = 0; i < n; ++i)
        for (int64_t e = 0; e < E; ++e)
          out[size_t((begin + i) * E + e)] = d1[size_t(e)] * c[size_t(i * E + e)] * d0[size_t(i)];
    }
    return out;
  }

  // H(q) / ln R of the balance probabilities q (softmax, or s / Σ s): 1 for uniform scores.
  double normalised_entropy(const double* s, int64_t R) const {
    if (R < 2) return 0.0;
    double sum = 0.0, h = 0.0;
    for (int64_t j = 0; j < R; ++j) sum += s[j];
    for (int64_t j = 0; j < R; ++j)
      if (s[j] > 0) h -= s[j] / sum * std::log(s[j] / sum);
    return h / std::log(double(R));
  }

  RouterTraits traits_;
  LogitChoice logits_;  // X-MoE's or HyperRouter's logits; no function: the linear gate
  int64_t k_ = 2;
  bool normalize_ = true;
  double capacity_factor_ = 0.0, eval_capacity_factor_ = -1.0;
  int64_t min_capacity_ = 0;
  bool batch_priority_ = false;
  bool random_second_ = false;
  bool adaptive_second_ = false;
  double adaptive_threshold_ = 0.1;
  bool sinkhorn_ = false;
  double sinkhorn_tolerance_ = 1e-4;
  double broadcast_threshold_ = 0.0;
  int64_t groups_ = 1, topk_groups_ = 1;
  double route_scale_ = 1.0;
  int64_t null_experts_ = 0;
  double bias_update_rate_ = 0.0;
  LocalityLevel locality_ = LocalityLevel::Node;
  double local_bonus_ = 0.0, locality_loss_ = 0.0, locality_smoothing_ = 0.1;
  double sparsity_loss_ = 0.0, importance_loss_ = 0.0;  // SpeechMoE's α and β
};

// Preset defaults are overridden by the user's parameters.
std::unique_ptr<Router> with_defaults(json defaults, const json& params,
                                      const std::string& context) {
  for (const auto& [key, value] : params.items()) defaults[key] = value;
  return std::make_unique<TopKRouter>(defaults, context);
}

}  // namespace

std::unique_ptr<Router> make_topk(const json& p, const std::string& c) {
  return with_defaults(json::object(), p, c);
}
std::unique_ptr<Router> make_switch(const json& p, const std::string& c) {
  return with_defaults(
      {{"k", 1}, {"normalize", false}, {"capacity_factor", 1.25}, {"jitter", 0.01}}, p, c);
}
std::unique_ptr<Router> make_gshard(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"capacity_factor", 2.0}, {"second_expert", "random"}}, p, c);
}
std::unique_ptr<Router> make_mixtral(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"normalize", true}}, p, c);
}
std::unique_ptr<Router> make_deepseek_v3(const json& p, const std::string& c) {
  return with_defaults({{"score", "sigmoid"},
                        {"k", 8},
                        {"groups", 8},
                        {"topk_groups", 4},
                        {"route_scale", 2.5},
                        {"bias_update_rate", 0.001}},
                       p, c);
}
std::unique_ptr<Router> make_locmoe(const json& p, const std::string& c) {
  return with_defaults(
      {{"k", 1}, {"normalize", false}, {"locality", "node"}, {"locality_loss", 0.01}}, p, c);
}
std::unique_ptr<Router> make_xmoe(const json& p, const std::string& c) {
  return with_defaults({{"k", 1}, {"normalize", false}, {"logits", "cosine"}}, p, c);
}
std::unique_ptr<Router> make_hyperrouter(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"normalize", true}, {"logits", "hyper"}}, p, c);
}
std::unique_ptr<Router> make_yuan(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"normalize", true}, {"logits", "attention"}}, p, c);
}
std::unique_ptr<Router> make_rmoe(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"normalize", true}, {"logits", "recurrent"}}, p, c);
}
std::unique_ptr<Router> make_aoe(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"normalize", true}, {"logits", "aoe"}}, p, c);
}
std::unique_ptr<Router> make_sinkhorn(const json& p, const std::string& c) {
  return with_defaults(
      {{"k", 1}, {"score", "sigmoid"}, {"normalize", false}, {"selection", "sinkhorn"}}, p, c);
}
std::unique_ptr<Router> make_adaptive_gating(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"second_expert", "adaptive"}}, p, c);
}
std::unique_ptr<Router> make_gw_moe(const json& p, const std::string& c) {
  return with_defaults({{"k", 2}, {"broadcast_threshold", 0.9}}, p, c);
}
std::unique_ptr<Router> make_adamoe(const json& p, const std::string& c) {
  return with_defaults({{"k", 4}, {"null_experts", 16}}, p, c);
}

}  // namespace switchyard::routers
