// The float64 reference of the MoE layer (docs/layer-config.md, followed literally). Everything is
// written per token and per expert with plain loops, for clarity; nothing here is shared with the
// fast path's routers, kernels or dispatch, so the two implementations check each other.

#include <switchyard/error.h>
#include <switchyard/reference.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

namespace switchyard::reference {

namespace {

using nlohmann::json;
using Range = std::pair<int64_t, int64_t>;  // [begin, end) token range

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---------------------------------------------------------------------------------------------
// Small checks and parameter access.

void expect_size(const std::vector<double>& v, int64_t n, const char* name) {
  if (static_cast<int64_t>(v.size()) != n)
    fail("reference::forward: '{}' has {} elements, expected {}", name, v.size(), n);
}

template <typename T>
T param(const json& params, const char* key) {
  if (!params.contains(key))
    fail("reference::forward: router parameter '{}' is missing from {}", key, params.dump());
  return params.at(key).get<T>();
}

// ---------------------------------------------------------------------------------------------
// Scalar maths.

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}
double silu(double z) {
  return z * sigmoid(z);
}
double gelu_erf(double z) {
  return 0.5 * z * (1.0 + std::erf(z / std::sqrt(2.0)));
}

double logsumexp(const std::vector<double>& z) {
  double m = -kInf;
  for (double v : z) m = std::max(m, v);
  double sum = 0.0;
  for (double v : z) sum += std::exp(v - m);
  return m + std::log(sum);
}

// exp(z - max) / Σ exp(z - max): equal logits give bit-equal probabilities, so exact ties stay
// ties (across tokens too) and the tie rule decides.
std::vector<double> softmax(const std::vector<double>& z) {
  double m = -kInf;
  for (double v : z) m = std::max(m, v);
  std::vector<double> p(z.size());
  double sum = 0.0;
  for (size_t i = 0; i < z.size(); ++i) sum += (p[i] = std::exp(z[i] - m));
  for (double& v : p) v /= sum;
  return p;
}

std::vector<double> sigmoid_all(const std::vector<double>& z) {
  std::vector<double> s(z.size());
  for (size_t i = 0; i < z.size(); ++i) s[i] = sigmoid(z[i]);
  return s;
}

// DeepSeek-V4's score: sqrt(softplus(z)), softplus written to stay finite for large |z|.
std::vector<double> sqrt_softplus_all(const std::vector<double>& z) {
  std::vector<double> s(z.size());
  for (size_t i = 0; i < z.size(); ++i)
    s[i] = std::sqrt(z[i] > 0.0 ? z[i] + std::log1p(std::exp(-z[i])) : std::log1p(std::exp(z[i])));
  return s;
}

// A top-k router's scores over its outputs, by its `score` parameter.
std::vector<double> scores_of(const std::vector<double>& z, const std::string& score) {
  if (score == "sigmoid") return sigmoid_all(z);
  if (score == "sqrtsoftplus") return sqrt_softplus_all(z);
  return softmax(z);
}

std::vector<double> divide_by_sum(const std::vector<double>& v) {
  double sum = 0.0;
  for (double x : v) sum += x;
  std::vector<double> out(v.size(), 0.0);
  if (sum > 0.0)
    for (size_t i = 0; i < v.size(); ++i) out[i] = v[i] / sum;
  return out;
}

// Indices of `values` sorted by value descending, ties to the lower index.
std::vector<int64_t> order_descending(const std::vector<double>& values) {
  std::vector<int64_t> idx(values.size());
  std::iota(idx.begin(), idx.end(), int64_t{0});
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t a, int64_t b) { return values[a] > values[b]; });
  return idx;
}

// ---------------------------------------------------------------------------------------------
// Tensors as rows.

std::vector<double> row(const std::vector<double>& m, int64_t r, int64_t cols) {
  return std::vector<double>(m.begin() + r * cols, m.begin() + (r + 1) * cols);
}

// out (rows) = W x with W (rows, cols) stored row-major starting at w.
std::vector<double> matvec(const double* w, int64_t rows, int64_t cols,
                           const std::vector<double>& x) {
  std::vector<double> out(rows, 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double sum = 0.0;
    for (int64_t j = 0; j < cols; ++j) sum += w[i * cols + j] * x[j];
    out[i] = sum;
  }
  return out;
}

// One FFN on one token: SwiGLU w2 (silu(w1 g) ⊙ w3 x), GELU w2 gelu(w1 g), or the clamped
// SwiGLU w2 ((clamp(w3 x, -limit, limit) + 1) ⊙ h sigmoid(alpha h)), h = min(w1 g, limit), where
// the gate's input g is x itself, or (Autonomy-of-Experts) the expert's own low-rank activation.
// w1: (F, dg) for g of dg values; w3: (F, d); w2: (d, F). w3 is ignored for GELU.
std::vector<double> ffn_gated(const LayerConfig& config, const double* w1, const double* w3,
                              const double* w2, int64_t d, int64_t F, const std::vector<double>& x,
                              const std::vector<double>& g) {
  const std::vector<double> h1 = matvec(w1, F, static_cast<int64_t>(g.size()), g);
  std::vector<double> act(F);
  if (config.activation == Activation::SwiGLU) {
    const std::vector<double> h3 = matvec(w3, F, d, x);
    for (int64_t f = 0; f < F; ++f) act[f] = silu(h1[f]) * h3[f];
  } else if (config.activation == Activation::SwiGLUClamped) {
    const double alpha = config.swiglu_clamp.alpha, limit = config.swiglu_clamp.limit;
    const std::vector<double> h3 = matvec(w3, F, d, x);
    for (int64_t f = 0; f < F; ++f) {
      const double gate = h1[f] > limit ? limit : h1[f];
      const double up = h3[f] > limit ? limit : (h3[f] < -limit ? -limit : h3[f]);
      act[f] = (up + 1.0) * gate * sigmoid(alpha * gate);
    }
  } else {
    for (int64_t f = 0; f < F; ++f) act[f] = gelu_erf(h1[f]);
  }
  return matvec(w2, d, F, act);
}

std::vector<double> ffn(const LayerConfig& config, const double* w1, const double* w3,
                        const double* w2, int64_t d, int64_t F, const std::vector<double>& x) {
  return ffn_gated(config, w1, w3, w2, d, F, x, x);
}

// Expert e on token x; its gate reads g (x, or AoE's W_down,e x of dg values: w1 is (E, F, dg)).
std::vector<double> expert_ffn(const LayerConfig& config, const Params& p, const MoEShape& shape,
                               int64_t e, const std::vector<double>& x,
                               const std::vector<double>& g) {
  const int64_t d = shape.d, F = shape.F, dg = static_cast<int64_t>(g.size());
  const double* w3 = has_up_projection(config.activation) ? p.w3.data() + e * F * d : nullptr;
  return ffn_gated(config, p.w1.data() + e * F * dg, w3, p.w2.data() + e * d * F, d, F, x, g);
}

// Expert e on token x on its first `width` hidden units only: w1, w3 sliced to their first
// `width` rows and w2 to its first `width` columns, then the FFN of that width.
std::vector<double> expert_ffn_width(const LayerConfig& config, const Params& p,
                                     const MoEShape& shape, int64_t e, int64_t width,
                                     const std::vector<double>& x, const std::vector<double>& g) {
  const int64_t d = shape.d, F = shape.F, dg = static_cast<int64_t>(g.size());
  if (width <= 0 || width == F) return expert_ffn(config, p, shape, e, x, g);
  if (width > F) fail("reference::forward: hidden width {} exceeds F = {}", width, F);
  const std::vector<double> w1(p.w1.begin() + e * F * dg, p.w1.begin() + e * F * dg + width * dg);
  std::vector<double> w3;
  if (has_up_projection(config.activation))
    w3.assign(p.w3.begin() + e * F * d, p.w3.begin() + e * F * d + width * d);
  std::vector<double> w2(d * width);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t f = 0; f < width; ++f) w2[i * width + f] = p.w2[e * d * F + i * F + f];
  return ffn_gated(config, w1.data(), w3.empty() ? nullptr : w3.data(), w2.data(), d, width, x, g);
}

// Autonomy-of-Experts (docs/routers/aoe.md): the rank r of each expert's W_down, 0 for routers
// whose experts' gates read x.
int64_t aoe_rank(const json& router_params) {
  return router_params.value("logits", "linear") == "aoe"
             ? param<int64_t>(router_params, "aoe_rank")
             : 0;
}

// ---------------------------------------------------------------------------------------------
// Sequences and routing groups.

std::vector<Range> sequences(const std::vector<int64_t>& seq_lens, int64_t T) {
  if (seq_lens.empty()) return {{0, T}};
  std::vector<Range> out;
  int64_t begin = 0;
  for (int64_t len : seq_lens) {
    out.emplace_back(begin, begin + len);
    begin += len;
  }
  if (begin != T) fail("reference::forward: seq_lens sum to {}, expected T = {}", begin, T);
  return out;
}

std::vector<Range> routing_group_ranges(RoutingGroups mode, const std::vector<int64_t>& seq_lens,
                                        int64_t T) {
  if (mode == RoutingGroups::Batch) return {{0, T}};
  return sequences(seq_lens, T);
}

// ---------------------------------------------------------------------------------------------
// Routing result, common to every router.

struct Assignment {
  int64_t token = 0;
  int64_t expert = 0;  // a true expert, in [0, E)
  double weight = 0.0;
  bool kept = true;
  int64_t width = 0;  // hidden units [0, width) of the expert's F it runs; 0: all F
};

struct Routing {
  std::vector<Assignment> assignments;
  std::vector<double> passthrough;  // (T) coefficient of x added to y (BASE), empty if none
  // (T, R) the router's choices of each output before any drop, for the balance loss; and the
  // first choice alone (GShard's balance_top1_only).
  std::vector<double> chosen;
  std::vector<double> chosen_first;
};

// ---------------------------------------------------------------------------------------------
// topk and its presets.

struct TopkOptions {
  int64_t k = 2;
  std::string score = "softmax";
  bool normalize = true;
  double capacity_factor = 0.0;       // in training
  double eval_capacity_factor = 0.0;  // in evaluation
  int64_t min_capacity = 0;
  bool batch_priority = false;
  bool random_second = false;
  bool adaptive_second = false;  // Adaptive Gating: later choices only when p1 - p2 < threshold
  double adaptive_threshold = 0.1;
  bool sinkhorn = false;  // selection by Sinkhorn-balanced scores in training
  double sinkhorn_tolerance = 1e-4;
  double broadcast_threshold = 0.0;  // GW-MoE: uncertain tokens to every expert in training
  int64_t groups = 1;
  int64_t topk_groups = 1;
  double route_scale = 1.0;
  double local_bonus = 0.0, locality_loss = 0.0, locality_smoothing = 0.1;
  double sparsity_loss = 0.0, importance_loss = 0.0;  // SpeechMoE's α and β
};

// LocMoE's locality (docs/routers/locmoe.md): the domain (node, or rank) of every token and of
// every expert. Sequences split over placement.ranks in order (rank r: [r S/N, (r+1) S/N)); rank r
// is expert-parallel rank r % P, which holds experts [p E/P, (p+1) E/P); G consecutive ranks make a
// node.
struct Locality {
  std::vector<int64_t> token, expert;  // (T), (E) domain ids
  int64_t domains = 0;
};

Locality locality_of(const LayerConfig& config, const json& params, const Batch& b, int64_t E) {
  const ExpertPlacement& pl = config.placement;
  if (!pl.declared()) fail("reference::forward: a locality-aware router needs a placement");
  const bool by_node = param<std::string>(params, "locality") == "node";
  const int64_t P = pl.expert_parallel, G = pl.ranks_per_node;
  auto domain_of_rank = [&](int64_t rank) { return by_node ? rank / G : rank; };
  const std::vector<int64_t> lens = b.seq_lens.empty() ? std::vector<int64_t>{b.T} : b.seq_lens;
  const int64_t S = static_cast<int64_t>(lens.size());
  Locality loc;
  loc.domains = by_node ? P / G : P;
  for (int64_t seq = 0; seq < S; ++seq)
    for (int64_t i = 0; i < lens[seq]; ++i)
      loc.token.push_back(domain_of_rank((seq * pl.ranks / S) % P));
  for (int64_t e = 0; e < E; ++e) loc.expert.push_back(domain_of_rank(e / (E / P)));
  return loc;
}

// μ KL(D_c ‖ D_l) over (domain, expert) with D_c(v, e) = Σ_{t in v} softmax(z_t)_e / T and
// D_l(v, e) = T_v/T ((1-η) [e in v] / |experts in v| + η/E).
double locality_regulariser(const TopkOptions& o, const Locality& loc,
                            const std::vector<double>& logits, int64_t T, int64_t E, int64_t R) {
  std::vector<double> dc(loc.domains * E, 0.0), tokens(loc.domains, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> z(logits.begin() + t * R, logits.begin() + t * R + E);
    const std::vector<double> p = softmax(z);
    tokens[loc.token[t]] += 1.0;
    for (int64_t e = 0; e < E; ++e) dc[loc.token[t] * E + e] += p[e] / static_cast<double>(T);
  }
  double kl = 0.0;
  for (int64_t v = 0; v < loc.domains; ++v) {
    if (tokens[v] == 0.0) continue;
    double local = 0.0;
    for (int64_t e = 0; e < E; ++e) local += loc.expert[e] == v ? 1.0 : 0.0;
    for (int64_t e = 0; e < E; ++e) {
      const double target =
          tokens[v] / static_cast<double>(T) *
          ((1.0 - o.locality_smoothing) * (loc.expert[e] == v ? 1.0 / local : 0.0) +
           o.locality_smoothing / static_cast<double>(E));
      kl += dc[v * E + e] * std::log(dc[v * E + e] / target);
    }
  }
  return o.locality_loss * kl;
}

// SpeechMoE's losses (docs/routers/speechmoe2.md), p_t = softmax(z_t) over all R outputs:
// α mean_t ‖p_t / ‖p_t‖₂‖₁ + β R Σ_r (mean_t p_tr)².
double speechmoe_regulariser(const TopkOptions& o, const std::vector<double>& logits, int64_t T,
                             int64_t R) {
  if (T == 0) return 0.0;
  double sparsity = 0.0;
  std::vector<double> importance(R, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p =
        softmax(std::vector<double>(logits.begin() + t * R, logits.begin() + (t + 1) * R));
    double l2 = 0.0, l1 = 0.0;
    for (double v : p) l2 += v * v;
    l2 = std::sqrt(l2);
    for (double v : p) l1 += std::abs(v / l2);
    sparsity += l1 / static_cast<double>(T);
    for (int64_t r = 0; r < R; ++r) importance[r] += p[r] / static_cast<double>(T);
  }
  double squares = 0.0;
  for (double v : importance) squares += v * v;
  return o.sparsity_loss * sparsity + o.importance_loss * static_cast<double>(R) * squares;
}

TopkOptions read_topk_options(const json& params) {
  TopkOptions o;
  o.k = param<int64_t>(params, "k");
  o.score = param<std::string>(params, "score");
  o.normalize = param<bool>(params, "normalize");
  o.capacity_factor = param<double>(params, "capacity_factor");
  o.eval_capacity_factor = param<double>(params, "eval_capacity_factor");
  o.min_capacity = param<int64_t>(params, "min_capacity");
  o.batch_priority = param<std::string>(params, "drop_order") == "batch_priority";
  o.random_second = param<std::string>(params, "second_expert") == "random";
  o.adaptive_second = param<std::string>(params, "second_expert") == "adaptive";
  o.adaptive_threshold = param<double>(params, "adaptive_threshold");
  o.sinkhorn = param<std::string>(params, "selection") == "sinkhorn";
  o.sinkhorn_tolerance = param<double>(params, "sinkhorn_tolerance");
  o.broadcast_threshold = param<double>(params, "broadcast_threshold");
  o.groups = param<int64_t>(params, "groups");
  o.topk_groups = param<int64_t>(params, "topk_groups");
  o.route_scale = param<double>(params, "route_scale");
  o.local_bonus = param<double>(params, "local_bonus");
  o.locality_loss = param<double>(params, "locality_loss");
  o.locality_smoothing = param<double>(params, "locality_smoothing");
  o.sparsity_loss = param<double>(params, "sparsity_loss");
  o.importance_loss = param<double>(params, "importance_loss");
  return o;
}

// The experts (true and null) a token may choose after DeepSeek-V3's group limit. Groups
// partition the E true experts; null experts belong to no group and stay eligible.
std::vector<bool> group_limited_eligibility(const std::vector<double>& selection, int64_t E,
                                            int64_t groups, int64_t topk_groups) {
  std::vector<bool> eligible(selection.size(), true);
  if (groups <= 1 || topk_groups >= groups) return eligible;
  const int64_t size = E / groups;
  std::vector<double> group_score(groups);
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<double> members(selection.begin() + g * size, selection.begin() + (g + 1) * size);
    std::sort(members.begin(), members.end(), std::greater<double>());
    group_score[g] = size == 1 ? members[0] : members[0] + members[1];
  }
  const std::vector<int64_t> ranked = order_descending(group_score);
  for (int64_t i = topk_groups; i < groups; ++i)
    for (int64_t e = ranked[i] * size; e < (ranked[i] + 1) * size; ++e) eligible[e] = false;
  return eligible;
}

// One token's k choices in rank order (over all R outputs), ties to the lower index.
std::vector<int64_t> choose_top_k(const std::vector<double>& selection,
                                  const std::vector<bool>& eligible, int64_t k) {
  std::vector<double> masked = selection;
  for (size_t i = 0; i < masked.size(); ++i)
    if (!eligible[i]) masked[i] = -kInf;
  std::vector<int64_t> ranked = order_descending(masked);
  ranked.resize(static_cast<size_t>(k));
  return ranked;
}

// A token's true-expert choice with its rank (position in the top-k list).
struct Choice {
  int64_t token = 0;
  int64_t expert = 0;
  int64_t rank = 0;
  double weight = 0.0;
  bool kept = true;
};

// Capacity per expert for a group of n tokens: max(⌈n·k·cf/E⌉, min_capacity), a multiple of 4
// for batch priority; cf is the evaluation one outside training.
int64_t topk_capacity(int64_t n, const TopkOptions& o, int64_t E, bool training) {
  const double cf = training ? o.capacity_factor : o.eval_capacity_factor;
  int64_t C = static_cast<int64_t>(
      std::ceil(static_cast<double>(n) * static_cast<double>(o.k) * cf / static_cast<double>(E)));
  C = std::max(C, o.min_capacity);
  if (o.batch_priority) C = (C + 3) / 4 * 4;
  return C;
}

// Drops the choices over capacity within one routing group, visiting them rank-major and,
// within a rank, by position or by descending first-choice weight (ties to the lower token).
// A choice is dropped when its slot (earlier kept choices of its expert) is >= C.
void apply_capacity(std::vector<Choice>& choices, const std::vector<double>& first_weight,
                    const Range& group, const TopkOptions& o, int64_t E, bool training) {
  const int64_t C = topk_capacity(group.second - group.first, o, E, training);
  std::vector<size_t> visit;  // indices into `choices` of this group's live choices
  for (size_t i = 0; i < choices.size(); ++i)
    if (choices[i].token >= group.first && choices[i].token < group.second && choices[i].kept)
      visit.push_back(i);
  auto before = [&](size_t a, size_t b) {
    const Choice& ca = choices[a];
    const Choice& cb = choices[b];
    if (ca.rank != cb.rank) return ca.rank < cb.rank;
    if (o.batch_priority && first_weight[ca.token] != first_weight[cb.token])
      return first_weight[ca.token] > first_weight[cb.token];
    return ca.token < cb.token;
  };
  std::sort(visit.begin(), visit.end(), before);
  std::vector<int64_t> filled(E, 0);
  for (size_t i : visit) {
    Choice& c = choices[i];
    if (filled[c.expert] >= C)
      c.kept = false;
    else
      ++filled[c.expert];
  }
}

}  // namespace

// Sinkhorn balancing of one routing group's scores (Megatron-Core's sinkhorn, with each token's
// exp(z) divided by its largest entry, which the balancing absorbs): K = exp(z - max), then
// alternately a = 1/(n K b), b = 1/(E Kᵀ a) (with 1e-8 added to the sums) until the mean
// absolute change of b is at most `tolerance`; the result is a_t K_te b_e.
std::vector<double> sinkhorn_balanced(const std::vector<double>& logits,
                                      std::pair<int64_t, int64_t> group, int64_t E, int64_t R,
                                      double tolerance) {
  const int64_t n = group.second - group.first;
  std::vector<double> K(n * E);
  for (int64_t i = 0; i < n; ++i) {
    const std::vector<double> z = row(logits, group.first + i, R);
    const double top = *std::max_element(z.begin(), z.begin() + E);
    for (int64_t e = 0; e < E; ++e) K[i * E + e] = std::exp(z[e] - top);
  }
  std::vector<double> a(n, 1.0), b(E, 1.0);
  for (int iteration = 0; iteration < 10000; ++iteration) {
    for (int64_t i = 0; i < n; ++i) {
      double sum = 0.0;
      for (int64_t e = 0; e < E; ++e) sum += K[i * E + e] * b[e];
      a[i] = 1.0 / (static_cast<double>(n) * (sum + 1e-8));
    }
    std::vector<double> next(E);
    double change = 0.0;
    for (int64_t e = 0; e < E; ++e) {
      double sum = 0.0;
      for (int64_t i = 0; i < n; ++i) sum += K[i * E + e] * a[i];
      next[e] = 1.0 / (static_cast<double>(E) * (sum + 1e-8));
      change += std::abs(next[e] - b[e]);
    }
    b = next;
    if (change / static_cast<double>(E) <= tolerance) break;
  }
  std::vector<double> out(n * E);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t e = 0; e < E; ++e) out[i * E + e] = a[i] * K[i * E + e] * b[e];
  return out;
}

namespace {

Routing route_topk(const json& params, const std::vector<double>& logits,
                   const std::vector<double>& bias, const std::vector<Range>& groups,
                   const RouterNoise& noise, bool training, const Locality& loc, int64_t T,
                   int64_t E, int64_t R) {
  const TopkOptions o = read_topk_options(params);
  const bool random_second = o.random_second && training;
  if (random_second && static_cast<int64_t>(noise.uniform.size()) != T)
    fail("reference::forward: the random second expert needs noise.uniform of {} draws", T);
  Routing routing;
  routing.chosen.assign(T * R, 0.0);
  routing.chosen_first.assign(T * R, 0.0);
  std::vector<Choice> choices;
  std::vector<double> first_weight(T, 0.0);
  std::vector<double> balanced;  // (T, E) Sinkhorn-balanced selection scores, training only
  if (o.sinkhorn && training) {
    balanced.assign(T * E, 0.0);
    for (const Range& g : groups) {
      const std::vector<double> b = sinkhorn_balanced(logits, g, E, R, o.sinkhorn_tolerance);
      std::copy(b.begin(), b.end(), balanced.begin() + g.first * E);
      // One token balances against nothing (every expert at 1/E): it selects by its scores.
      if (g.second - g.first == 1)
        for (int64_t e = 0; e < E; ++e)
          balanced[g.first * E + e] = std::numeric_limits<double>::quiet_NaN();
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> z = row(logits, t, R);
    const std::vector<double> s = scores_of(z, o.score);
    std::vector<double> selection = s;
    if (!balanced.empty() && !std::isnan(balanced[t * E]))
      selection.assign(balanced.begin() + t * E, balanced.begin() + t * E + E);
    for (int64_t e = 0; e < E && !bias.empty(); ++e) selection[e] += bias[e];
    for (int64_t e = 0; e < E && o.local_bonus > 0.0; ++e)
      if (loc.expert[e] == loc.token[t]) selection[e] += o.local_bonus;
    const std::vector<bool> eligible =
        group_limited_eligibility(selection, E, o.groups, o.topk_groups);
    // GW-MoE: in training a token whose entropy over its (loss) probabilities, divided by ln R,
    // reaches the threshold chooses every expert.
    int64_t k = o.k;
    if (training && o.broadcast_threshold > 0.0 && R > 1) {
      const std::vector<double> q = o.score == "softmax" ? s : divide_by_sum(s);
      double entropy = 0.0;
      for (double v : q)
        if (v > 0.0) entropy -= v * std::log(v);
      if (entropy / std::log(static_cast<double>(R)) >= o.broadcast_threshold) k = E;
    }
    const std::vector<int64_t> chosen = choose_top_k(selection, eligible, k);

    double normaliser = 0.0;
    for (int64_t e : chosen)
      if (e < E) normaliser += s[e];
    auto weight_of = [&](int64_t e) {
      return (o.normalize ? s[e] / normaliser : s[e]) * o.route_scale;
    };
    // Batch priority: the weight of the first choice, 0 when it is a (removed) null expert.
    first_weight[t] = chosen[0] < E ? weight_of(chosen[0]) : 0.0;
    for (int64_t rank = 0; rank < k; ++rank) {
      const int64_t e = chosen[rank];
      routing.chosen[t * R + e] += 1.0;
      if (rank == 0) routing.chosen_first[t * R + e] += 1.0;
      if (e >= E) continue;  // null expert: outputs nothing
      Choice c{t, e, rank, weight_of(e), true};
      // GShard's test uses the gate value before any route scale.
      if (random_second && rank >= 1 && !(2.0 * c.weight / o.route_scale > noise.uniform[t]))
        c.kept = false;
      // Adaptive Gating: a confident token (first score ahead of the second by the threshold)
      // keeps its first choice only; its weights stay normalised over both.
      if (o.adaptive_second && rank >= 1 && chosen[0] < E && chosen[1] < E &&
          s[chosen[0]] - s[chosen[1]] >= o.adaptive_threshold)
        c.kept = false;
      choices.push_back(c);
    }
  }
  if ((training ? o.capacity_factor : o.eval_capacity_factor) > 0.0)
    for (const Range& g : groups) apply_capacity(choices, first_weight, g, o, E, training);
  for (const Choice& c : choices)
    routing.assignments.push_back({c.token, c.expert, c.kept ? c.weight : 0.0, c.kept});
  return routing;
}

// ---------------------------------------------------------------------------------------------
// expert_choice: per group, each expert takes its C best tokens by s[t, e].

Routing route_expert_choice(const json& params, const std::vector<double>& logits,
                            const std::vector<Range>& groups, int64_t T, int64_t E) {
  const double c = param<double>(params, "capacity_factor");
  std::vector<double> s(T * E);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = softmax(row(logits, t, E));
    std::copy(p.begin(), p.end(), s.begin() + t * E);
  }
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  for (const Range& g : groups) {
    const int64_t n = g.second - g.first;
    const int64_t C = std::min(
        n, static_cast<int64_t>(std::ceil(static_cast<double>(n) * c / static_cast<double>(E))));
    for (int64_t e = 0; e < E; ++e) {
      std::vector<double> column(n);
      for (int64_t i = 0; i < n; ++i) column[i] = s[(g.first + i) * E + e];
      const std::vector<int64_t> ranked = order_descending(column);
      for (int64_t i = 0; i < C; ++i) {
        const int64_t t = g.first + ranked[i];
        routing.assignments.push_back({t, e, s[t * E + e], true});
        routing.chosen[t * E + e] += 1.0;
      }
    }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// ---------------------------------------------------------------------------------------------
// hash: a fixed token id -> expert map, weight 1.

uint64_t splitmix64(uint64_t state) {
  uint64_t z = state + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Balanced table of one group: distinct ids by frequency descending (ties by id ascending), each
// given to the least-loaded expert so far (ties to the lower expert), load += frequency.
std::vector<int64_t> balanced_hash_experts(const std::vector<int64_t>& ids, int64_t E) {
  std::vector<std::pair<int64_t, int64_t>> freq;  // (id, count)
  std::vector<int64_t> sorted_ids = ids;
  std::sort(sorted_ids.begin(), sorted_ids.end());
  for (int64_t id : sorted_ids) {
    if (freq.empty() || freq.back().first != id)
      freq.emplace_back(id, 1);
    else
      ++freq.back().second;
  }
  std::stable_sort(freq.begin(), freq.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  std::vector<int64_t> load(E, 0);
  std::vector<std::pair<int64_t, int64_t>> table;  // (id, expert)
  for (const auto& [id, count] : freq) {
    const int64_t e = std::min_element(load.begin(), load.end()) - load.begin();
    load[e] += count;
    table.emplace_back(id, e);
  }
  std::vector<int64_t> experts;
  for (int64_t id : ids)
    for (const auto& [tid, e] : table)
      if (tid == id) experts.push_back(e);
  return experts;
}

Routing route_hash(const json& params, const std::vector<int64_t>& token_ids,
                   const std::vector<Range>& groups, int64_t T, int64_t E) {
  if (static_cast<int64_t>(token_ids.size()) != T)
    fail("reference::forward: token_ids has {} elements, expected {}", token_ids.size(), T);
  const bool balanced = param<std::string>(params, "table") == "balanced";
  const uint64_t seed = param<uint64_t>(params, "hash_seed");
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  std::vector<int64_t> expert_of(T);
  for (const Range& g : groups) {
    if (balanced) {
      const std::vector<int64_t> ids(token_ids.begin() + g.first, token_ids.begin() + g.second);
      const std::vector<int64_t> experts = balanced_hash_experts(ids, E);
      std::copy(experts.begin(), experts.end(), expert_of.begin() + g.first);
    } else {
      for (int64_t t = g.first; t < g.second; ++t)
        expert_of[t] = static_cast<int64_t>(splitmix64(static_cast<uint64_t>(token_ids[t]) ^ seed) %
                                            static_cast<uint64_t>(E));
    }
  }
  for (int64_t t = 0; t < T; ++t) {
    routing.assignments.push_back({t, expert_of[t], 1.0, true});
    routing.chosen[t * E + expert_of[t]] += 1.0;
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// THOR: weight 1 on expert floor(u · E); in training one draw (the group's first token's) for the
// whole routing group unless train_draw is "token"; at inference every token's own draw.
Routing route_thor(const json& params, const RouterNoise& noise, const std::vector<Range>& groups,
                   bool training, int64_t T, int64_t E) {
  if (static_cast<int64_t>(noise.uniform.size()) != T)
    fail("reference::forward: thor needs {} uniform draws, has {}", T, noise.uniform.size());
  const bool per_group = training && param<std::string>(params, "train_draw") == "group";
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  for (const Range& g : groups)
    for (int64_t t = g.first; t < g.second; ++t) {
      const double u = noise.uniform[per_group ? g.first : t];
      const int64_t e = std::min<int64_t>(static_cast<int64_t>(u * static_cast<double>(E)), E - 1);
      routing.assignments.push_back({t, e, 1.0, true});
      routing.chosen[t * E + e] += 1.0;
    }
  routing.chosen_first = routing.chosen;
  return routing;
}

// ---------------------------------------------------------------------------------------------
// base: balanced assignment by auction in training, greedy argmax in eval.

// Owner expert of each token of one group (A: n × E affinities), by the contract's auction.
std::vector<int64_t> auction(const std::vector<double>& A, int64_t n, int64_t E) {
  std::vector<int64_t> cap(E);
  for (int64_t e = 0; e < E; ++e) cap[e] = n / E + (e < n % E ? 1 : 0);
  const double max_a = *std::max_element(A.begin(), A.end());
  const double min_a = *std::min_element(A.begin(), A.end());
  const double eps = std::max(1e-4, (max_a - min_a) / 50.0);
  std::vector<double> price(n, 0.0);
  std::vector<int64_t> owner(n, -1);
  std::vector<int64_t> owned(E, 0);
  auto all_full = [&] {
    for (int64_t e = 0; e < E; ++e)
      if (owned[e] < cap[e]) return false;
    return true;
  };
  for (int round = 0; round < 100 && !all_full(); ++round) {
    std::vector<double> best_bid(n, -kInf);
    std::vector<int64_t> best_bidder(n, -1);
    for (int64_t e = 0; e < E; ++e) {
      const int64_t need = cap[e] - owned[e];
      if (need <= 0) continue;
      std::vector<int64_t> candidates;
      std::vector<double> values;
      for (int64_t t = 0; t < n; ++t) {
        if (owner[t] == e) continue;
        candidates.push_back(t);
        values.push_back(A[t * E + e] - price[t]);
      }
      const std::vector<int64_t> ranked = order_descending(values);
      const int64_t take = std::min<int64_t>(need, static_cast<int64_t>(candidates.size()));
      const double v_next = static_cast<int64_t>(candidates.size()) > take
                                ? values[ranked[take]]
                                : values[ranked[take - 1]];
      for (int64_t i = 0; i < take; ++i) {
        const int64_t t = candidates[ranked[i]];
        const double bid = values[ranked[i]] - v_next + eps;
        if (bid > best_bid[t]) {  // experts bid in index order: ties stay with the lower one
          best_bid[t] = bid;
          best_bidder[t] = e;
        }
      }
    }
    for (int64_t t = 0; t < n; ++t) {
      if (best_bidder[t] < 0) continue;
      if (owner[t] >= 0) --owned[owner[t]];
      owner[t] = best_bidder[t];
      ++owned[owner[t]];
      price[t] += best_bid[t];
    }
  }
  for (int64_t t = 0; t < n; ++t) {
    if (owner[t] >= 0) continue;
    int64_t best = -1;
    for (int64_t e = 0; e < E; ++e)
      if (owned[e] < cap[e] && (best < 0 || A[t * E + e] > A[t * E + best])) best = e;
    owner[t] = best;
    ++owned[best];
  }
  return owner;
}

Routing route_base(const std::vector<double>& logits, const std::vector<Range>& groups,
                   bool training, int64_t T, int64_t E) {
  std::vector<int64_t> expert_of(T);
  for (const Range& g : groups) {
    const int64_t n = g.second - g.first;
    if (training) {
      const std::vector<double> A(logits.begin() + g.first * E, logits.begin() + g.second * E);
      const std::vector<int64_t> owner = auction(A, n, E);
      std::copy(owner.begin(), owner.end(), expert_of.begin() + g.first);
    } else {
      for (int64_t t = g.first; t < g.second; ++t)
        expert_of[t] = order_descending(row(logits, t, E))[0];
    }
  }
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  routing.passthrough.assign(T, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const int64_t e = expert_of[t];
    const double alpha = sigmoid(logits[t * E + e]);
    routing.assignments.push_back({t, e, alpha, true});
    routing.passthrough[t] = 1.0 - alpha;
    routing.chosen[t * E + e] += 1.0;
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// ---------------------------------------------------------------------------------------------
// top_p: experts by descending p until the running sum exceeds the threshold; raw weights.

Routing route_top_p(const json& params, const std::vector<double>& logits, int64_t T, int64_t E) {
  const double threshold = param<double>(params, "threshold");
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  routing.chosen_first.assign(T * E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = softmax(row(logits, t, E));
    const std::vector<int64_t> ranked = order_descending(p);
    double running = 0.0;
    for (int64_t i = 0; i < E; ++i) {
      const int64_t e = ranked[i];
      routing.assignments.push_back({t, e, p[e], true});
      routing.chosen[t * E + e] += 1.0;
      if (i == 0) routing.chosen_first[t * E + e] += 1.0;
      running += p[e];
      if (running > threshold) break;
    }
  }
  return routing;
}

// ---------------------------------------------------------------------------------------------
// damoe: K_t = clamp(round(k · s_t / mean(s_b..s_t)), k_min, k_max) over the token's sequence
// [b, e) (ratio 1 where that mean is 0), then the K_t largest softmax scores, raw weights. Budget
// "prefix": K_t at most floor(k n) minus the K of the sequence's earlier tokens, n = t - b + 1.

Routing route_damoe(const json& params, const std::vector<double>& logits,
                    const std::vector<double>& importance, const std::vector<Range>& seqs,
                    int64_t T, int64_t E) {
  if (static_cast<int64_t>(importance.size()) != T)
    fail("reference::forward: token_importance has {} elements, expected {}", importance.size(), T);
  const double k = param<double>(params, "k");
  const int64_t k_min = std::min(param<int64_t>(params, "k_min"), E);
  const int64_t k_max = std::min(param<int64_t>(params, "k_max"), E);
  const bool prefix_budget = param<std::string>(params, "budget") == "prefix";
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  routing.chosen_first.assign(T * E, 0.0);
  for (const Range& seq : seqs)
    for (int64_t t = seq.first; t < seq.second; ++t) {
      double sum = 0.0;  // the importance of the sequence's tokens up to t, from scratch
      for (int64_t u = seq.first; u <= t; ++u) sum += importance[u];
      const double mean = sum / double(t - seq.first + 1);
      const double ratio = mean > 0.0 ? importance[t] / mean : 1.0;
      const double wanted = std::floor(k * ratio + 0.5);
      int64_t K = wanted >= double(E) ? E : static_cast<int64_t>(wanted);
      K = std::max(k_min, std::min(k_max, K));
      if (prefix_budget) {
        int64_t spent = 0;  // the slots of the sequence's earlier tokens, recounted from the plan
        for (const auto& a : routing.assignments)
          if (a.token >= seq.first && a.token < t) ++spent;
        K = std::min(K, static_cast<int64_t>(std::floor(k * double(t - seq.first + 1))) - spent);
      }
      const std::vector<double> p = softmax(row(logits, t, E));
      const std::vector<int64_t> ranked = order_descending(p);
      for (int64_t i = 0; i < K; ++i) {
        const int64_t e = ranked[i];
        routing.assignments.push_back({t, e, p[e], true});
        routing.chosen[t * E + e] += 1.0;
        if (i == 0) routing.chosen_first[t * E + e] += 1.0;
      }
    }
  return routing;
}

// ---------------------------------------------------------------------------------------------
// remoe: ReLU(z) is the weight; experts with z > 0 are active (z + b, the selection bias, where
// bias_update_rate > 0).

// z + b where bias_update_rate > 0 (beyond the paper; b = gate.bias, absent: 0), else z.
std::vector<double> remoe_logits(const json& params, std::vector<double> logits,
                                 const std::vector<double>& bias, int64_t T, int64_t E) {
  if (param<double>(params, "bias_update_rate") > 0.0 && !bias.empty())
    for (int64_t t = 0; t < T; ++t)
      for (int64_t e = 0; e < E; ++e) logits[size_t(t * E + e)] += bias[size_t(e)];
  return logits;
}

Routing route_remoe(const std::vector<double>& logits, int64_t T, int64_t E) {
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e)
      if (logits[t * E + e] > 0.0) {
        routing.assignments.push_back({t, e, logits[t * E + e], true});
        routing.chosen[t * E + e] += 1.0;
      }
  routing.chosen_first = routing.chosen;
  return routing;
}

// L_reg = λ · E/(k·T²) · Σ_e (Σ_t R_te) · c_e, c_e = #{t: R_te > 0}.
double remoe_regulariser(const json& params, const std::vector<double>& logits, int64_t T,
                         int64_t E) {
  const double lambda = param<double>(params, "lambda");
  const double k = param<double>(params, "k");
  double sum = 0.0;
  for (int64_t e = 0; e < E; ++e) {
    double mass = 0.0, count = 0.0;
    for (int64_t t = 0; t < T; ++t)
      if (logits[t * E + e] > 0.0) {
        mass += logits[t * E + e];
        count += 1.0;
      }
    sum += mass * count;
  }
  return lambda * static_cast<double>(E) / (k * static_cast<double>(T) * static_cast<double>(T)) *
         sum;
}

// ---------------------------------------------------------------------------------------------
// smile: q = softmax of the N node logits, r = softmax of the M = E/N in-node logits; the token
// goes to expert n* M + j* (n* = argmax q, j* = argmax r) with weight q_n* r_j*. Capacity C =
// ceil(T_group cf / E) per expert, tokens in position order.

Routing route_smile(const json& params, const std::vector<double>& logits,
                    const std::vector<Range>& groups, int64_t T, int64_t E, int64_t R) {
  const int64_t N = param<int64_t>(params, "nodes"), M = E / N;
  const double cf = param<double>(params, "capacity_factor");
  Routing routing;
  routing.chosen.assign(T * R, 0.0);
  for (const Range& g : groups) {
    const int64_t C = static_cast<int64_t>(
        std::ceil(static_cast<double>(g.second - g.first) * cf / static_cast<double>(E)));
    std::vector<int64_t> used(E, 0);
    for (int64_t t = g.first; t < g.second; ++t) {
      const std::vector<double> z = row(logits, t, R);
      const std::vector<double> q = softmax(std::vector<double>(z.begin(), z.begin() + N));
      const std::vector<double> r = softmax(std::vector<double>(z.begin() + N, z.end()));
      const int64_t n = order_descending(q)[0], j = order_descending(r)[0], e = n * M + j;
      routing.chosen[t * R + n] += 1.0;
      routing.chosen[t * R + N + j] += 1.0;
      const bool kept = cf <= 0.0 || used[e] < C;
      if (kept) ++used[e];
      routing.assignments.push_back({t, e, kept ? q[n] * r[j] : 0.0, kept});
    }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// α N Σ_n f_n Q_n + β M Σ_j f_j R_j: f the share of tokens choosing node n (in-node expert j),
// Q and R the mean probabilities.
double smile_regulariser(const json& params, const Routing& routing,
                         const std::vector<double>& logits, int64_t T, int64_t E, int64_t R) {
  const int64_t N = param<int64_t>(params, "nodes"), M = E / N;
  std::vector<double> f(R, 0.0), mean(R, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> z = row(logits, t, R);
    const std::vector<double> q = softmax(std::vector<double>(z.begin(), z.begin() + N));
    const std::vector<double> r = softmax(std::vector<double>(z.begin() + N, z.end()));
    for (int64_t i = 0; i < R; ++i) {
      f[i] += routing.chosen[t * R + i] / static_cast<double>(T);
      mean[i] += (i < N ? q[i] : r[i - N]) / static_cast<double>(T);
    }
  }
  double node = 0.0, expert = 0.0;
  for (int64_t n = 0; n < N; ++n) node += f[n] * mean[n];
  for (int64_t j = 0; j < M; ++j) expert += f[N + j] * mean[N + j];
  return param<double>(params, "node_balance") * static_cast<double>(N) * node +
         param<double>(params, "expert_balance") * static_cast<double>(M) * expert;
}

// ---------------------------------------------------------------------------------------------
// prototype (M6-T expert prototyping): prototype p holds experts [p M, (p+1) M), M = E/K. For each
// token and prototype, s = softmax of the prototype's M logits; the token goes to the argmax with
// weight s (not renormalised). Capacity C = ceil(T_group K cf / E) per expert, tokens in position
// order.

Routing route_prototype(const json& params, const std::vector<double>& logits,
                        const std::vector<Range>& groups, int64_t T, int64_t E) {
  const int64_t K = param<int64_t>(params, "prototypes"), M = E / K;
  const double cf = param<double>(params, "capacity_factor");
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  for (const Range& g : groups) {
    const int64_t C =
        static_cast<int64_t>(std::ceil(static_cast<double>(g.second - g.first) *
                                       static_cast<double>(K) * cf / static_cast<double>(E)));
    std::vector<int64_t> used(E, 0);
    for (int64_t t = g.first; t < g.second; ++t)
      for (int64_t p = 0; p < K; ++p) {
        const std::vector<double> s = softmax(std::vector<double>(
            logits.begin() + t * E + p * M, logits.begin() + t * E + (p + 1) * M));
        const int64_t j = order_descending(s)[0], e = p * M + j;
        routing.chosen[t * E + e] += 1.0;
        const bool kept = cf <= 0.0 || used[e] < C;
        if (kept) ++used[e];
        routing.assignments.push_back({t, e, kept ? s[j] : 0.0, kept});
      }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// (α/K) Σ_p M Σ_{e in p} f_e P_e over the T tokens: f_e the share of tokens choosing e, P_e the
// mean of the prototype softmax.
double prototype_regulariser(const json& params, const Routing& routing,
                             const std::vector<double>& logits, int64_t T, int64_t E) {
  const int64_t K = param<int64_t>(params, "prototypes"), M = E / K;
  double sum = 0.0;
  for (int64_t p = 0; p < K; ++p) {
    std::vector<double> f(M, 0.0), mean(M, 0.0);
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> s = softmax(std::vector<double>(
          logits.begin() + t * E + p * M, logits.begin() + t * E + (p + 1) * M));
      for (int64_t j = 0; j < M; ++j) {
        f[j] += routing.chosen[t * E + p * M + j] / static_cast<double>(T);
        mean[j] += s[j] / static_cast<double>(T);
      }
    }
    double dot = 0.0;
    for (int64_t j = 0; j < M; ++j) dot += f[j] * mean[j];
    sum += static_cast<double>(M) * dot;
  }
  return param<double>(params, "prototype_balance") * sum / static_cast<double>(K);
}

// ---------------------------------------------------------------------------------------------
// rectify (Rectify-Router, docs/routers/rectify.md). p = softmax(z) over E; choices c_1..c_k by p
// (ties to the lower expert) and the candidate c_{k+1}. Per group of n tokens, C = ceil(n k cf / E)
// slots per expert: the top-k choices take slots rank-major in position order, those without a
// slot are dropped. fill_in: an expert's remaining slots go to the tokens whose c_{k+1} it is, by
// descending p (ties to the lower token). intra_rank: a token with D = k - (experts it kept) > 0
// also goes, without a slot, to the expert of largest p on its rank (experts [q E/P, (q+1) E/P)
// of rank q; the sequences split over the ranks as for LocMoE) among those not already serving
// it, counted D times. Weights a_e p_e (a the count, 1 or D) divided by their sum over the
// token's experts (normalize), or not.

Routing route_rectify(const LayerConfig& config, const json& params,
                      const std::vector<double>& logits, const std::vector<Range>& groups,
                      const Batch& b, int64_t T, int64_t E) {
  const int64_t k = param<int64_t>(params, "k");
  const double cf = param<double>(params, "capacity_factor");
  const bool normalize = param<bool>(params, "normalize");
  const bool intra_rank = param<bool>(params, "intra_rank");
  const bool fill_in = param<bool>(params, "fill_in") && k < E;
  // Each token's expert-parallel rank.
  std::vector<int64_t> rank_of(T, 0);
  int64_t experts_per_rank = E;
  if (intra_rank) {
    const ExpertPlacement& pl = config.placement;
    if (!pl.declared()) fail("reference::forward: rectify's intra_rank needs a placement");
    const std::vector<Range> seqs = sequences(b.seq_lens, T);
    const int64_t S = static_cast<int64_t>(seqs.size());
    for (int64_t q = 0; q < S; ++q)
      for (int64_t t = seqs[q].first; t < seqs[q].second; ++t)
        rank_of[t] = (q * pl.ranks / S) % pl.expert_parallel;
    experts_per_rank = E / pl.expert_parallel;
  }
  std::vector<std::vector<double>> p(T);
  std::vector<std::vector<int64_t>> ranked(T);
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  routing.chosen_first.assign(T * E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    p[t] = softmax(row(logits, t, E));
    ranked[t] = order_descending(p[t]);
    for (int64_t r = 0; r < k; ++r) routing.chosen[t * E + ranked[t][r]] = 1.0;
    routing.chosen_first[t * E + ranked[t][0]] = 1.0;
  }
  // count[t][e]: how often expert e serves token t (0: not at all).
  std::vector<std::vector<double>> count(T, std::vector<double>(E, 0.0));
  std::vector<Assignment> dropped;
  for (const Range& g : groups) {
    const int64_t n = g.second - g.first;
    const int64_t C =
        static_cast<int64_t>(std::ceil(static_cast<double>(n * k) * cf / static_cast<double>(E)));
    std::vector<int64_t> load(E, 0);
    for (int64_t r = 0; r < k; ++r)
      for (int64_t t = g.first; t < g.second; ++t) {
        const int64_t e = ranked[t][r];
        if (load[e] < C) {
          ++load[e];
          count[t][e] = 1.0;
        } else {
          dropped.push_back({t, e, 0.0, false});
        }
      }
    if (fill_in)
      for (int64_t e = 0; e < E; ++e) {
        std::vector<int64_t> want;  // tokens whose candidate is e
        for (int64_t t = g.first; t < g.second; ++t)
          if (ranked[t][k] == e) want.push_back(t);
        std::stable_sort(want.begin(), want.end(),
                         [&](int64_t a, int64_t c) { return p[a][e] > p[c][e]; });
        for (size_t i = 0; i < want.size() && load[e] < C; ++i) {
          ++load[e];
          count[want[i]][e] = 1.0;
        }
      }
    if (intra_rank)
      for (int64_t t = g.first; t < g.second; ++t) {
        double served = 0.0;
        for (int64_t e = 0; e < E; ++e) served += count[t][e];
        const double missing = static_cast<double>(k) - served;
        if (missing <= 0.0) continue;
        int64_t best = -1;
        for (int64_t e = rank_of[t] * experts_per_rank; e < (rank_of[t] + 1) * experts_per_rank;
             ++e)
          if (count[t][e] == 0.0 && (best < 0 || p[t][e] > p[t][best])) best = e;
        if (best >= 0) count[t][best] = missing;
      }
  }
  for (int64_t t = 0; t < T; ++t) {
    double total = 0.0;
    for (int64_t e = 0; e < E; ++e) total += count[t][e] * p[t][e];
    for (int64_t e = 0; e < E; ++e)
      if (count[t][e] > 0.0) {
        const double w = count[t][e] * p[t][e];
        routing.assignments.push_back({t, e, normalize ? w / total : w, true});
      }
  }
  routing.assignments.insert(routing.assignments.end(), dropped.begin(), dropped.end());
  return routing;
}

// ---------------------------------------------------------------------------------------------
// sparsemixer (SparseMixer-v2, GRIN): two slots per token. Slot 1 looks at every expert, slot 2 at
// every expert but slot 1's. Let m be the largest logit the slot looks at (lowest index on ties).
// Expert j stays in the slot's set unless (m - z_j) / max(|z_j|, m) > 2 jitter_eps; p = softmax of
// the logits in the set. Evaluation: the slot takes the expert of m, weight p. Training: the slot
// takes argmax over the set of z_j + G_j with G_j = -log(-log U) (the slot's own R draws), and its
// weight is p times 1 when that is m's expert or the slot's coin U' > 0.75, else 1/3. Draws of a
// token: [slot 1's R Gumbel uniforms, slot 2's R, coin 1, coin 2]. Dropless.

int64_t sparsemixer_draws(int64_t R) {
  return 2 * R + 2;
}

Routing route_sparsemixer(const json& params, const std::vector<double>& logits,
                          const RouterNoise& noise, bool training, int64_t T, int64_t E) {
  const double eps = param<double>(params, "jitter_eps");
  const int64_t n = sparsemixer_draws(E);
  if (training && static_cast<int64_t>(noise.uniform.size()) != T * n)
    fail("reference::forward: sparsemixer needs noise.uniform of {} draws", T * n);
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  routing.chosen_first.assign(T * E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<bool> available(E, true);
    for (int64_t slot = 0; slot < 2; ++slot) {
      int64_t top = -1;
      for (int64_t j = 0; j < E; ++j)
        if (available[j] && (top < 0 || logits[t * E + j] > logits[t * E + top])) top = j;
      const double m = logits[t * E + top];
      std::vector<double> in_set(E, -kInf);
      for (int64_t j = 0; j < E; ++j) {
        if (!available[j]) continue;
        const double zj = logits[t * E + j];
        const double relative_gap = (m - zj) / std::max(std::abs(zj), m);
        if (!(relative_gap > 2.0 * eps)) in_set[j] = zj;  // 0/0 (m = z_j = 0) stays in
      }
      const std::vector<double> p = softmax(in_set);
      int64_t chosen = top;
      double omega = 1.0;
      if (training) {
        double best = -kInf;
        chosen = -1;
        for (int64_t j = 0; j < E; ++j) {
          if (in_set[j] == -kInf) continue;
          const double u = noise.uniform[t * n + slot * E + j];
          const double perturbed = in_set[j] - std::log(-std::log(u));
          if (chosen < 0 || perturbed > best) {
            chosen = j;
            best = perturbed;
          }
        }
        const double coin = noise.uniform[t * n + 2 * E + slot];
        omega = (chosen == top || coin > 0.75) ? 1.0 : 1.0 / 3.0;
      }
      routing.assignments.push_back({t, chosen, p[chosen] * omega, true});
      routing.chosen[t * E + chosen] += 1.0;
      if (slot == 0) routing.chosen_first[t * E + chosen] += 1.0;
      available[chosen] = false;
    }
  }
  return routing;
}

// ---------------------------------------------------------------------------------------------
// moec (MoEC, docs/routers/moec.md): clusters of M = cluster_size consecutive experts, p =
// softmax(z) over E, the token's expert the argmax of p (lowest index on ties). In training with
// rate r > 0, member i of that expert's cluster is dropped when the token's draw U_i < r, and the
// token goes to the kept member of largest p (every member dropped: the argmax). Weight p_e, not
// renormalised. capacity_factor cf > 0: C = ceil(n cf / E) per expert and group, position order.

Routing route_moec(const json& params, const std::vector<double>& logits,
                   const std::vector<Range>& groups, const RouterNoise& noise, bool training,
                   int64_t T, int64_t E) {
  const int64_t M = param<int64_t>(params, "cluster_size");
  const double rate = param<double>(params, "cluster_dropout");
  const double cf = param<double>(params, "capacity_factor");
  const bool drop = training && rate > 0.0;
  if (drop && static_cast<int64_t>(noise.uniform.size()) != T * M)
    fail("reference::forward: moec needs noise.uniform of {} draws", T * M);
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  for (const Range& g : groups) {
    const int64_t C = static_cast<int64_t>(
        std::ceil(static_cast<double>(g.second - g.first) * cf / static_cast<double>(E)));
    std::vector<int64_t> used(E, 0);
    for (int64_t t = g.first; t < g.second; ++t) {
      const std::vector<double> p = softmax(row(logits, t, E));
      int64_t e = order_descending(p)[0];
      if (drop) {
        const int64_t cluster = e / M;
        int64_t best = -1;
        for (int64_t i = 0; i < M; ++i) {
          const int64_t j = cluster * M + i;
          const bool dropped = static_cast<double>(noise.uniform[t * M + i]) < rate;
          if (!dropped && (best < 0 || p[j] > p[best])) best = j;
        }
        if (best >= 0) e = best;
      }
      routing.chosen[t * E + e] = 1.0;
      const bool kept = cf <= 0.0 || used[e] < C;
      if (kept) ++used[e];
      routing.assignments.push_back({t, e, kept ? p[e] : 0.0, kept});
    }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// μ / (T K) Σ_t Σ_k Var(p_t over cluster k), K = E / M clusters, the population variance.
double moec_regulariser(const json& params, const std::vector<double>& logits, int64_t T,
                        int64_t E) {
  const int64_t M = param<int64_t>(params, "cluster_size"), K = E / M;
  if (T == 0) return 0.0;
  double sum = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = softmax(row(logits, t, E));
    for (int64_t k = 0; k < K; ++k) {
      double mean = 0.0;
      for (int64_t i = 0; i < M; ++i) mean += p[k * M + i];
      mean /= static_cast<double>(M);
      double var = 0.0;
      for (int64_t i = 0; i < M; ++i) var += (p[k * M + i] - mean) * (p[k * M + i] - mean);
      sum += var / static_cast<double>(M);
    }
  }
  return param<double>(params, "cluster_loss") * sum / static_cast<double>(T * K);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// maskmoe (docs/routers/maskmoe.md): a fixed set of visible experts per token id, from the
// training data's counts c. Frequent ids are the first floor(P n) of the n ids with c > 0 ordered
// by c descending, then id; they see min(V, E) experts, every other id one. Id v's visible experts
// are the first m of 0..E-1 after m steps of a Fisher-Yates shuffle, step i swapping position i
// with position i + (r_i mod (E - i)), r_i = splitmix64(splitmix64(S xor splitmix64(v)) + i).

std::vector<uint8_t> maskmoe_visible(const json& params, const std::vector<int64_t>& token_counts,
                                     const std::vector<int64_t>& token_ids, int64_t E) {
  const int64_t V = param<int64_t>(params, "visible_experts");
  const double P = param<double>(params, "frequent_fraction");
  const uint64_t S = param<uint64_t>(params, "mask_seed");
  const int64_t N = static_cast<int64_t>(token_counts.size());
  if (N == 0) fail("reference::forward: maskmoe needs token_counts");
  // (-count, id) of the ids that occur: sorted, the most frequent first, ties by id.
  std::vector<std::pair<int64_t, int64_t>> occurring;
  for (int64_t v = 0; v < N; ++v)
    if (token_counts[v] > 0) occurring.emplace_back(-token_counts[v], v);
  std::sort(occurring.begin(), occurring.end());
  const int64_t frequent_ids =
      static_cast<int64_t>(std::floor(P * static_cast<double>(occurring.size())));
  std::vector<bool> frequent(N, false);
  for (int64_t i = 0; i < frequent_ids; ++i) frequent[occurring[i].second] = true;
  std::vector<uint8_t> visible(token_ids.size() * E, 0);
  for (size_t t = 0; t < token_ids.size(); ++t) {
    const int64_t v = token_ids[t];
    if (v < 0 || v >= N)
      fail("reference::forward: maskmoe token id {} is outside the {} token counts", v, N);
    const int64_t m = frequent[v] ? std::min(V, E) : 1;
    std::vector<int64_t> order(E);
    std::iota(order.begin(), order.end(), int64_t{0});
    const uint64_t base = splitmix64(S ^ splitmix64(static_cast<uint64_t>(v)));
    for (int64_t i = 0; i < m; ++i) {
      const uint64_t r = splitmix64(base + static_cast<uint64_t>(i));
      std::swap(order[i], order[i + static_cast<int64_t>(r % static_cast<uint64_t>(E - i))]);
      visible[t * E + order[i]] = 1;
    }
  }
  return visible;
}

namespace {

// p = softmax of the visible experts' logits (0 elsewhere); the min(k, #visible) visible experts
// of largest p (ties -> lower index), weight p, not renormalised; no capacity.
Routing route_maskmoe(const json& params, const std::vector<double>& logits, const Batch& batch,
                      int64_t T, int64_t E) {
  if (static_cast<int64_t>(batch.token_ids.size()) != T)
    fail("reference::forward: token_ids has {} elements, expected {}", batch.token_ids.size(), T);
  const std::vector<uint8_t> visible =
      maskmoe_visible(params, batch.token_counts, batch.token_ids, E);
  const int64_t k = param<int64_t>(params, "k");
  Routing routing;
  routing.chosen.assign(T * E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> z = row(logits, t, E), candidates(E, -1.0);
    int64_t n_visible = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (!visible[t * E + e]) z[e] = -kInf;
      n_visible += visible[t * E + e];
    }
    const std::vector<double> p = softmax(z);
    for (int64_t e = 0; e < E; ++e)
      if (visible[t * E + e]) candidates[e] = p[e];
    const std::vector<int64_t> order = order_descending(candidates);
    for (int64_t i = 0; i < std::min(k, n_visible); ++i) {
      routing.assignments.push_back({t, order[i], p[order[i]], true});
      routing.chosen[t * E + order[i]] = 1.0;
    }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// ---------------------------------------------------------------------------------------------
// competesmoe (docs/routers/competesmoe.md). A training call competes when steps >= warmup and
// the first draw of the call's noise is below λ. Competing: every expert's output o_te on every
// token, affinity s_te = mean softplus(o_te), the k largest s win with weights s / Σ s, and the
// own loss β_r · mean_{t,e} (softmax(z)_te − softmax(s)_te)² (s a constant) plus
// β_d / (T k²) · Σ_t Σ_{i≠j chosen} cos(o_ti, o_tj). Otherwise the top k of softmax(z),
// renormalised, and no own loss.

bool competesmoe_competes(const json& params, bool training, const RouterNoise& noise) {
  return training && !noise.uniform.empty() &&
         param<int64_t>(params, "steps") >= param<int64_t>(params, "warmup") &&
         static_cast<double>(noise.uniform[0]) < param<double>(params, "competition");
}

// o (T, E, d): every expert on every token.
std::vector<double> all_expert_outputs(const LayerConfig& config, const MoEShape& shape,
                                       const Params& params, const Batch& batch) {
  const int64_t T = batch.T, E = shape.E, d = shape.d;
  std::vector<double> o(T * E * d);
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < E; ++e) {
      const std::vector<double> xt = row(batch.x, t, d);
      const std::vector<double> out = expert_ffn(config, params, shape, e, xt, xt);
      std::copy(out.begin(), out.end(), o.begin() + (t * E + e) * d);
    }
  return o;
}

// s (T, E): the mean softplus of each output o (T, E, d).
std::vector<double> competesmoe_affinities_of(const std::vector<double>& o, int64_t T, int64_t E,
                                              int64_t d) {
  std::vector<double> s(T * E, 0.0);
  for (int64_t i = 0; i < T * E; ++i) {
    for (int64_t j = 0; j < d; ++j) s[i] += std::log1p(std::exp(o[i * d + j]));
    s[i] /= static_cast<double>(d);
  }
  return s;
}

Routing route_competesmoe(const json& params, const std::vector<double>& logits,
                          const std::vector<double>& affinities, int64_t T, int64_t E) {
  const int64_t k = param<int64_t>(params, "k");
  const bool competing = !affinities.empty();
  Routing r;
  r.chosen.assign(T * E, 0.0);
  r.chosen_first.assign(T * E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> score =
        competing ? row(affinities, t, E) : softmax(row(logits, t, E));
    const std::vector<int64_t> order = order_descending(score);
    double sum = 0.0;
    for (int64_t i = 0; i < k; ++i) sum += score[order[i]];
    for (int64_t i = 0; i < k; ++i) {
      r.assignments.push_back({t, order[i], score[order[i]] / sum, true});
      r.chosen[t * E + order[i]] = 1.0;
    }
    r.chosen_first[t * E + order[0]] = 1.0;
  }
  return r;
}

double competesmoe_regulariser(const json& params, const std::vector<double>& logits,
                               const std::vector<double>& affinities,
                               const std::vector<double>& outputs, const Routing& routing,
                               int64_t T, int64_t E, int64_t d) {
  if (affinities.empty()) return 0.0;
  const int64_t k = param<int64_t>(params, "k");
  double mse = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = softmax(row(logits, t, E)), q = softmax(row(affinities, t, E));
    for (int64_t e = 0; e < E; ++e) mse += (p[e] - q[e]) * (p[e] - q[e]);
  }
  double cosines = 0.0;
  for (const Assignment& a : routing.assignments)
    for (const Assignment& b : routing.assignments) {
      if (a.token != b.token || a.expert == b.expert) continue;
      const double* u = outputs.data() + (a.token * E + a.expert) * d;
      const double* v = outputs.data() + (b.token * E + b.expert) * d;
      double uv = 0.0, uu = 0.0, vv = 0.0;
      for (int64_t j = 0; j < d; ++j) {
        uv += u[j] * v[j];
        uu += u[j] * u[j];
        vv += v[j] * v[j];
      }
      if (uu > 0.0 && vv > 0.0) cosines += uv / std::sqrt(uu * vv);
    }
  return param<double>(params, "router_loss") * mse / static_cast<double>(T * E) +
         param<double>(params, "diversity_loss") * cosines / static_cast<double>(T * k * k);
}

// ---------------------------------------------------------------------------------------------
// stablemoe (docs/routers/stablemoe.md): each logit row holds s = W x in columns [0, E) and
// ŝ = K Q[id] in columns [E, 2E). In stage-1 training a token goes to the first largest s, in
// stage 2 and in evaluation to the first largest ŝ; its weight is σ(s) of that expert either way.
// capacity_factor cf > 0: each expert keeps the first ceil(n cf / E) tokens of a routing group of
// n, in position order.

bool stablemoe_stage1_training(const json& params, bool training) {
  return training && param<int64_t>(params, "stage") == 1;
}

Routing route_stablemoe(const json& params, const std::vector<double>& logits,
                        const std::vector<Range>& groups, bool training, int64_t T, int64_t E) {
  const int64_t R = 2 * E;
  const double cf = param<double>(params, "capacity_factor");
  const int64_t first = stablemoe_stage1_training(params, training) ? 0 : E;
  Routing routing;
  routing.chosen.assign(T * R, 0.0);
  for (const Range& g : groups) {
    const int64_t C = static_cast<int64_t>(
        std::ceil(cf * static_cast<double>(g.second - g.first) / static_cast<double>(E)));
    std::vector<int64_t> used(E, 0);
    for (int64_t t = g.first; t < g.second; ++t) {
      const std::vector<double> r(logits.begin() + t * R + first,
                                  logits.begin() + t * R + first + E);
      const int64_t e = order_descending(r)[0];
      const bool kept = cf <= 0.0 || used[e] < C;
      if (kept) ++used[e];
      routing.chosen[t * R + e] = 1.0;
      routing.assignments.push_back({t, e, kept ? sigmoid(logits[t * R + e]) : 0.0, kept});
    }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// Stage-1 training only. With a_t = argmax s_t, c_e = #{t : a_t = e} over the whole batch
// (dropped tokens too) and m = T / E:
//   α/T Σ_t ((c_{a_t} − m) / m) σ(s_{t,a_t})  +  β/T Σ_t (logsumexp ŝ_t − ŝ_{t,a_t}).
double stablemoe_regulariser(const json& params, const std::vector<double>& logits, bool training,
                             int64_t T, int64_t E) {
  if (!stablemoe_stage1_training(params, training) || T == 0) return 0.0;
  const int64_t R = 2 * E;
  std::vector<int64_t> a(T);
  std::vector<double> c(E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    a[t] = order_descending(
        std::vector<double>(logits.begin() + t * R, logits.begin() + t * R + E))[0];
    c[a[t]] += 1.0;
  }
  const double m = static_cast<double>(T) / static_cast<double>(E);
  double balance = 0.0, distill = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    balance += (c[a[t]] - m) / m * sigmoid(logits[t * R + a[t]]);
    const std::vector<double> hat(logits.begin() + t * R + E, logits.begin() + (t + 1) * R);
    distill += logsumexp(hat) - hat[a[t]];
  }
  return (param<double>(params, "balance_loss") * balance +
          param<double>(params, "distill_loss") * distill) /
         static_cast<double>(T);
}

// ---------------------------------------------------------------------------------------------
// vqmoe (docs/routers/vqmoe.md): each logit row holds s = W x (columns [0, E)), the codebook block
// a = −‖x − C_e‖² / d ([E, 2E)), the commitment block b of the same value ([2E, 3E)) and the
// mixing gate m = M x ([3E, 3E + 2)). The VQ expert is the nearest code (the first largest a).
// pretrain: the k experts of largest p = softmax(s) get g_c p_e, the VQ expert gets g_d (added
// to its continuous weight where it is one of them), (g_c, g_d) = softmax(m); finetune: the VQ
// expert alone, weight 1. Dropless.

struct VQToken {
  std::vector<double> p;     // (E) softmax(s)
  std::vector<double> g;     // (2) softmax(m)
  std::vector<int64_t> top;  // the k largest p, descending, ties to the lower index
  int64_t vq = 0;
};

VQToken vq_token(const json& params, const std::vector<double>& logits, int64_t t, int64_t E) {
  const int64_t R = 3 * E + 2;
  const auto first = logits.begin() + t * R;
  VQToken v;
  v.vq = order_descending(std::vector<double>(first + E, first + 2 * E))[0];
  v.p = softmax(std::vector<double>(first, first + E));
  v.g = softmax(std::vector<double>(first + 3 * E, first + 3 * E + 2));
  const std::vector<int64_t> order = order_descending(v.p);
  v.top.assign(order.begin(), order.begin() + param<int64_t>(params, "k"));
  return v;
}

bool vqmoe_finetune(const json& params) {
  return param<std::string>(params, "mode") == "finetune";
}

Routing route_vqmoe(const json& params, const std::vector<double>& logits, int64_t T, int64_t E) {
  const int64_t R = 3 * E + 2;
  Routing routing;
  routing.chosen.assign(T * R, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const VQToken v = vq_token(params, logits, t, E);
    std::vector<std::pair<int64_t, double>> picks;  // (expert, weight) in plan order
    if (vqmoe_finetune(params)) {
      picks.push_back({v.vq, 1.0});
    } else {
      for (int64_t e : v.top) picks.push_back({e, v.g[0] * v.p[e]});
      bool found = false;
      for (auto& [e, w] : picks)
        if (e == v.vq) {
          w += v.g[1];
          found = true;
        }
      if (!found) picks.push_back({v.vq, v.g[1]});
    }
    for (const auto& [e, w] : picks) {
      routing.chosen[t * R + e] = 1.0;
      routing.assignments.push_back({t, e, w, true});
    }
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// L_vq = λ/T Σ_t (1 + β) ‖x_t − C_{e*}‖² / d (the value: the stop-gradients change gradients
// only), plus in pretrain L_bal = α E Σ_e f_e P_e with f_e = #{t : e in top_t} / (T k) and
// P_e = mean_t p_{t,e}.
double vqmoe_regulariser(const json& params, const std::vector<double>& logits, int64_t T,
                         int64_t E) {
  if (T == 0) return 0.0;
  const int64_t R = 3 * E + 2;
  const double lambda = param<double>(params, "vq_loss"),
               beta = param<double>(params, "commitment");
  double vq = 0.0;
  std::vector<double> f(E, 0.0), P(E, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const VQToken v = vq_token(params, logits, t, E);
    vq += -(1.0 + beta) * logits[t * R + E + v.vq];
    for (int64_t e : v.top) f[e] += 1.0;
    for (int64_t e = 0; e < E; ++e) P[e] += v.p[e];
  }
  double loss = lambda * vq / static_cast<double>(T);
  if (vqmoe_finetune(params)) return loss;
  const double k = static_cast<double>(param<int64_t>(params, "k"));
  double bal = 0.0;
  for (int64_t e = 0; e < E; ++e)
    bal += f[e] / (static_cast<double>(T) * k) * P[e] / static_cast<double>(T);
  return loss + param<double>(params, "balance_loss") * static_cast<double>(E) * bal;
}

// ---------------------------------------------------------------------------------------------
// Elastic widths (docs/routers/duollm.md, flextron.md): a share f of F runs round(f F) hidden
// units, halves up, at least 1 and at most F.

int64_t width_of(double fraction, int64_t F) {
  return std::clamp<int64_t>(static_cast<int64_t>(std::floor(fraction * F + 0.5)), 1, F);
}

// duollm: outputs (small, big[, skip]); routed: c = the first largest p = softmax(z), weight p_c;
// random routes (training): c from the token's uniform u: skip below p_skip, big below
// p_skip + p_big, else small, weight 1. Small is expert 0 at width_of(small_width), big expert 1
// at F, skip routes nowhere.
bool duollm_random(const json& params, bool training) {
  return training && param<bool>(params, "random_routes");
}

Routing route_duollm(const json& params, const std::vector<double>& logits,
                     const RouterNoise& noise, bool training, int64_t T, int64_t R, int64_t F) {
  Routing routing;
  routing.chosen.assign(T * R, 0.0);
  const int64_t small = width_of(param<double>(params, "small_width"), F);
  const int64_t n = T > 0 ? static_cast<int64_t>(noise.uniform.size()) / T : 1;
  for (int64_t t = 0; t < T; ++t) {
    int64_t c = 0;
    double w = 1.0;
    if (duollm_random(params, training)) {
      const double u = noise.uniform[t * n];
      const double ps = param<double>(params, "p_skip"), pb = param<double>(params, "p_big");
      c = u < ps ? 2 : (u < ps + pb ? 1 : 0);
    } else {
      const std::vector<double> p = softmax(row(logits, t, R));
      c = order_descending(p)[0];
      w = p[c];
    }
    routing.chosen[t * R + c] = 1.0;
    if (c == 2) continue;
    routing.assignments.push_back({t, c, w, true, c == 0 ? small : F});
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// λ (C − c*)², C = (1/T) Σ_t Σ_j p_tj cost_j, cost = (small width / F, 1, 0).
double duollm_regulariser(const json& params, const std::vector<double>& logits, int64_t T,
                          int64_t R, int64_t F) {
  const double lambda = param<double>(params, "compute_loss");
  if (lambda == 0.0 || T == 0) return 0.0;
  const double cost[3] = {
      static_cast<double>(width_of(param<double>(params, "small_width"), F)) / F, 1.0, 0.0};
  double C = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = softmax(row(logits, t, R));
    for (int64_t j = 0; j < R; ++j) C += p[j] * cost[j] / static_cast<double>(T);
  }
  const double gap = C - param<double>(params, "compute_target");
  return lambda * gap * gap;
}

// flextron: each row [s (E) | m (W)]; the k largest p = softmax(s) (first largest on ties), each
// weighted p_e (or p_e / their sum with normalize) times q_j, q = softmax(m), j the first largest
// q, at width_of(widths[j]).
struct FlextronToken {
  std::vector<double> p, q;
  std::vector<int64_t> top;
  int64_t j = 0;
};

FlextronToken flextron_token(const json& params, const std::vector<double>& logits, int64_t t,
                             int64_t E, int64_t R) {
  FlextronToken v;
  const auto first = logits.begin() + t * R;
  v.p = softmax(std::vector<double>(first, first + E));
  v.q = softmax(std::vector<double>(first + E, first + R));
  const std::vector<int64_t> order = order_descending(v.p);
  v.top.assign(order.begin(), order.begin() + param<int64_t>(params, "k"));
  v.j = order_descending(v.q)[0];
  return v;
}

Routing route_flextron(const json& params, const std::vector<double>& logits, int64_t T, int64_t E,
                       int64_t R, int64_t F) {
  const std::vector<double> widths = params.at("widths").get<std::vector<double>>();
  const bool normalize = param<bool>(params, "normalize");
  Routing routing;
  routing.chosen.assign(T * R, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    const FlextronToken v = flextron_token(params, logits, t, E, R);
    double sum = 0.0;
    for (int64_t e : v.top) sum += v.p[e];
    for (int64_t e : v.top) {
      const double pe = normalize ? v.p[e] / sum : v.p[e];
      routing.assignments.push_back({t, e, pe * v.q[v.j], true, width_of(widths[v.j], F)});
      routing.chosen[t * R + e] = 1.0;
    }
    routing.chosen[t * R + E + v.j] = 1.0;
  }
  routing.chosen_first = routing.chosen;
  return routing;
}

// α E Σ_e f_e P_e over the experts block (f_e = #{t : e in top_t} / (T k), P_e = mean_t p_te)
// plus λ (C − c*)², C = (1/T) Σ_t Σ_j q_tj width_of(widths[j]) / F.
double flextron_regulariser(const json& params, const std::vector<double>& logits, int64_t T,
                            int64_t E, int64_t R, int64_t F) {
  if (T == 0) return 0.0;
  const std::vector<double> widths = params.at("widths").get<std::vector<double>>();
  const double k = static_cast<double>(param<int64_t>(params, "k"));
  std::vector<double> f(E, 0.0), P(E, 0.0);
  double C = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const FlextronToken v = flextron_token(params, logits, t, E, R);
    for (int64_t e : v.top) f[e] += 1.0 / (static_cast<double>(T) * k);
    for (int64_t e = 0; e < E; ++e) P[e] += v.p[e] / static_cast<double>(T);
    for (int64_t j = 0; j < R - E; ++j)
      C += v.q[j] * static_cast<double>(width_of(widths[j], F)) / F / static_cast<double>(T);
  }
  double bal = 0.0;
  for (int64_t e = 0; e < E; ++e) bal += f[e] * P[e];
  const double gap = C - param<double>(params, "compute_target");
  return param<double>(params, "balance_loss") * static_cast<double>(E) * bal +
         param<double>(params, "compute_loss") * gap * gap;
}

// ---------------------------------------------------------------------------------------------
// soft: every token uses every expert with weight softmax(z).

Routing route_soft(const std::vector<double>& logits, int64_t T, int64_t E) {
  Routing routing;
  routing.chosen.assign(T * E, 1.0);
  routing.chosen_first = routing.chosen;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = softmax(row(logits, t, E));
    for (int64_t e = 0; e < E; ++e) routing.assignments.push_back({t, e, p[e], true});
  }
  return routing;
}

// ---------------------------------------------------------------------------------------------
// Losses.

// Per-token probability over the R outputs for the balance and entropy losses.
std::vector<double> loss_probabilities(const std::vector<double>& z, const std::string& score) {
  return score == "softmax" ? softmax(z) : divide_by_sum(scores_of(z, score));
}

// α · R · Σ_e f_e P_e over the tokens [begin, end), with `extra_counts` (global batch) added to c.
double balance_over(const std::vector<double>& probs, const std::vector<double>& chosen,
                    const Range& tokens, const std::vector<double>& extra_counts, int64_t R,
                    double alpha) {
  std::vector<double> counts(R, 0.0), mean_p(R, 0.0);
  for (int64_t e = 0; e < R && !extra_counts.empty(); ++e) counts[e] = extra_counts[e];
  const double n = static_cast<double>(tokens.second - tokens.first);
  for (int64_t t = tokens.first; t < tokens.second; ++t)
    for (int64_t e = 0; e < R; ++e) {
      counts[e] += chosen[t * R + e];
      mean_p[e] += probs[t * R + e] / n;
    }
  const std::vector<double> f = divide_by_sum(counts);
  double sum = 0.0;
  for (int64_t e = 0; e < R; ++e) sum += f[e] * mean_p[e];
  return alpha * static_cast<double>(R) * sum;
}

double balance_loss(const LossConfig& losses, const std::vector<double>& probs,
                    const Routing& routing, const Batch& batch, int64_t R) {
  const std::vector<double>& chosen =
      losses.balance_top1_only ? routing.chosen_first : routing.chosen;
  const int64_t T = batch.T;
  switch (losses.balance_mode) {
    case BalanceMode::MicroBatch:
      return balance_over(probs, chosen, {0, T}, {}, R, losses.balance);
    case BalanceMode::GlobalBatch:
      return balance_over(probs, chosen, {0, T}, batch.global_counts, R, losses.balance);
    case BalanceMode::Sequence: {
      const std::vector<Range> seqs = sequences(batch.seq_lens, T);
      double sum = 0.0;
      for (const Range& s : seqs) sum += balance_over(probs, chosen, s, {}, R, losses.balance);
      return sum / static_cast<double>(seqs.size());
    }
  }
  return 0.0;
}

// (1/T) Σ_t (logsumexp_j z_tj)².
double z_loss(const std::vector<double>& logits, int64_t T, int64_t R) {
  double sum = 0.0;
  for (int64_t t = 0; t < T; ++t) {
    const double lse = logsumexp(row(logits, t, R));
    sum += lse * lse;
  }
  return sum / static_cast<double>(T);
}

// (1/T) Σ_t H(p_t).
double entropy_loss(const std::vector<double>& probs, int64_t T, int64_t R) {
  double sum = 0.0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t e = 0; e < R; ++e) {
      const double p = probs[t * R + e];
      if (p > 0.0) sum -= p * std::log(p);
    }
  return sum / static_cast<double>(T);
}

// Every enabled loss of the config, summed.
double config_losses(const LossConfig& losses, const std::vector<double>& logits,
                     const std::string& score, const Routing& routing, const Batch& batch,
                     int64_t R) {
  const int64_t T = batch.T;
  std::vector<double> probs(T * R);
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> p = loss_probabilities(row(logits, t, R), score);
    std::copy(p.begin(), p.end(), probs.begin() + t * R);
  }
  double total = 0.0;
  if (losses.balance != 0.0) total += balance_loss(losses, probs, routing, batch, R);
  if (losses.z != 0.0) total += losses.z * z_loss(logits, T, R);
  if (losses.entropy != 0.0) total += losses.entropy * entropy_loss(probs, T, R);
  return total;
}

// ---------------------------------------------------------------------------------------------
// The layer.

void check_sizes(const LayerConfig& config, const MoEShape& shape, int64_t R, const Params& p,
                 const Batch& b, const RouterNoise& noise, bool needs_gate, int64_t draws,
                 int64_t w1_in) {
  const int64_t T = b.T, d = shape.d, E = shape.E, F = shape.F, Fs = shape.Fs;
  const bool swiglu = has_up_projection(config.activation);
  expect_size(b.x, T * d, "x");
  if (needs_gate) expect_size(p.gate, R * d, "gate.weight");
  if (!p.gate_bias.empty()) expect_size(p.gate_bias, E, "gate.bias");
  expect_size(p.w1, E * F * w1_in, "experts.w1");
  if (swiglu) expect_size(p.w3, E * F * d, "experts.w3");
  expect_size(p.w2, E * d * F, "experts.w2");
  expect_size(p.shared_w1, Fs * d, "shared.w1");
  if (swiglu) expect_size(p.shared_w3, Fs * d, "shared.w3");
  expect_size(p.shared_w2, d * Fs, "shared.w2");
  if (!p.shared_gate.empty()) expect_size(p.shared_gate, d, "shared.gate");
  if (!b.global_counts.empty()) expect_size(b.global_counts, R, "global_counts");
  if (!noise.jitter.empty() && static_cast<int64_t>(noise.jitter.size()) != T * d)
    fail("reference::forward: noise.jitter has {} elements, expected {}", noise.jitter.size(),
         T * d);
  if (!noise.uniform.empty() && static_cast<int64_t>(noise.uniform.size()) != T * draws)
    fail("reference::forward: noise.uniform has {} elements, expected {}", noise.uniform.size(),
         T * draws);
}

// The router's view of x: x ⊙ jitter when the call has jitter.
std::vector<double> router_input(const std::vector<double>& x, const RouterNoise& noise) {
  std::vector<double> xr = x;
  for (size_t i = 0; i < noise.jitter.size(); ++i) xr[i] *= static_cast<double>(noise.jitter[i]);
  return xr;
}

// z = x Wᵀ for every row of `inputs` (n, d) with W (R, d).
std::vector<double> logits_of(const std::vector<double>& inputs, const std::vector<double>& gate,
                              int64_t n, int64_t d, int64_t R) {
  std::vector<double> z(n * R);
  for (int64_t t = 0; t < n; ++t) {
    const std::vector<double> out = matvec(gate.data(), R, d, row(inputs, t, d));
    std::copy(out.begin(), out.end(), z.begin() + t * R);
  }
  return z;
}

void add_shared_expert(const LayerConfig& config, const Params& p, const MoEShape& shape,
                       const std::vector<double>& x, int64_t T, std::vector<double>& y) {
  if (shape.Fs == 0) return;
  const int64_t d = shape.d;
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> out = ffn(config, p.shared_w1.data(), p.shared_w3.data(),
                                        p.shared_w2.data(), d, shape.Fs, row(x, t, d));
    // Qwen2-MoE's shared-expert gate: the output times σ(x · shared.gate).
    double gate = 1.0;
    if (!p.shared_gate.empty()) {
      double z = 0.0;
      for (int64_t j = 0; j < d; ++j) z += x[t * d + j] * p.shared_gate[j];
      gate = 1.0 / (1.0 + std::exp(-z));
    }
    for (int64_t j = 0; j < d; ++j) y[t * d + j] += gate * out[j];
  }
}

// SMEAR: per sequence, p = softmax(W mean(x)), one FFN with the p-merged expert weights.
Result forward_smear(const LayerConfig& config, const MoEShape& shape, const Params& p,
                     const Batch& b, const RouterNoise& noise) {
  const int64_t T = b.T, d = shape.d, E = shape.E, F = shape.F;
  const std::vector<double> xr = router_input(b.x, noise);
  Result r;
  r.y.assign(T * d, 0.0);
  r.combine.assign(T * E, 0.0);
  r.tokens_per_expert.assign(E, 0);
  for (const Range& s : sequences(b.seq_lens, T)) {
    std::vector<double> mean(d, 0.0);
    for (int64_t t = s.first; t < s.second; ++t)
      for (int64_t j = 0; j < d; ++j)
        mean[j] += xr[t * d + j] / static_cast<double>(s.second - s.first);
    const std::vector<double> prob = softmax(matvec(p.gate.data(), E, d, mean));
    std::vector<double> w1(F * d, 0.0), w3(F * d, 0.0), w2(d * F, 0.0);
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t i = 0; i < F * d; ++i) {
        w1[i] += prob[e] * p.w1[e * F * d + i];
        if (has_up_projection(config.activation)) w3[i] += prob[e] * p.w3[e * F * d + i];
        w2[i] += prob[e] * p.w2[e * d * F + i];
      }
    }
    for (int64_t t = s.first; t < s.second; ++t) {
      const std::vector<double> out =
          ffn(config, w1.data(), w3.data(), w2.data(), d, F, row(b.x, t, d));
      std::copy(out.begin(), out.end(), r.y.begin() + t * d);
      for (int64_t e = 0; e < E; ++e) {
        r.combine[t * E + e] = prob[e];
        ++r.tokens_per_expert[e];
      }
    }
  }
  add_shared_expert(config, p, shape, b.x, T, r.y);
  return r;
}

// The logit function's tensor router.NAME of `size` values.
const std::vector<double>& router_tensor(const Params& params, const std::string& name,
                                         int64_t size) {
  const auto it = params.router.find(name);
  if (it == params.router.end()) fail("reference::forward: router.{} is missing", name);
  expect_size(it->second, size, ("router." + name).c_str());
  return it->second;
}

}  // namespace

std::vector<double> recurrent_router_state(const json& router_params, const MoEShape& shape,
                                           const Params& params, const Batch& batch,
                                           const RouterNoise& noise) {
  const int64_t T = batch.T, d = shape.d;
  const std::vector<double> x = router_input(batch.x, noise);
  const int64_t p = param<int64_t>(router_params, "recurrent_dim");
  auto tensor = [&](const std::string& name, int64_t size) -> const std::vector<double>& {
    return router_tensor(params, name, size);
  };
  const std::vector<double>& P = tensor("projection", p * d);
  const std::vector<double>& w_ih = tensor("gru_weight_ih", 3 * p * p);
  const std::vector<double>& w_hh = tensor("gru_weight_hh", 3 * p * p);
  const std::vector<double>& b_ih = tensor("gru_bias_ih", 3 * p);
  const std::vector<double>& b_hh = tensor("gru_bias_hh", 3 * p);
  if (!batch.router_carry.empty()) expect_size(batch.router_carry, T * p, "router_carry");
  auto sigmoid = [](double v) { return 1.0 / (1.0 + std::exp(-v)); };
  // RMoE: u = P x; a GRU cell (PyTorch's equations, gates [reset; update; new]) from the
  // previous MoE layer's state h' (zeros when absent): h = (1 − z) n + z h'.
  std::vector<double> h(size_t(T * p));
  for (int64_t t = 0; t < T; ++t) {
    const std::vector<double> u = matvec(P.data(), p, d, row(x, t, d));
    const std::vector<double> prev = batch.router_carry.empty()
                                         ? std::vector<double>(size_t(p), 0.0)
                                         : row(batch.router_carry, t, p);
    std::vector<double> gi = matvec(w_ih.data(), 3 * p, p, u),
                        gh = matvec(w_hh.data(), 3 * p, p, prev);
    for (int64_t j = 0; j < p; ++j) {
      const size_t r = size_t(j), z = size_t(p + j), n = size_t(2 * p + j);
      const double reset = sigmoid(gi[r] + b_ih[r] + gh[r] + b_hh[r]);
      const double update = sigmoid(gi[z] + b_ih[z] + gh[z] + b_hh[z]);
      const double cand = std::tanh(gi[n] + b_ih[n] + reset * (gh[n] + b_hh[n]));
      h[size_t(t * p + j)] = (1.0 - update) * cand + update * prev[size_t(j)];
    }
  }
  return h;
}

namespace {

// ReMoE with gate_lr_scale ≠ 1 holds its gate as router.gate instead of gate.weight.
bool remoe_scaled_gate(const json& router_params) {
  return router_params.value("router", "") == "remoe" &&
         router_params.value("gate_lr_scale", 1.0) != 1.0;
}

}  // namespace

std::vector<double> router_logits(const json& router_params, const MoEShape& shape, int64_t R,
                                  const Params& params, const Batch& batch,
                                  const RouterNoise& noise) {
  const int64_t T = batch.T, d = shape.d;
  const std::vector<double> x = router_input(batch.x, noise);
  const std::string kind = router_params.value("logits", "linear");
  auto tensor = [&](const std::string& name, int64_t size) -> const std::vector<double>& {
    return router_tensor(params, name, size);
  };
  if (kind == "hyper") {
    // HyperRouter: [W | b] (R, d + 1) = w2 relu(w1 e + b1) + b2, logits = x Wᵀ + b.
    const int64_t h = param<int64_t>(router_params, "hyper_hidden");
    const int64_t m0 = param<int64_t>(router_params, "hyper_embedding_dim"), m = m0 > 0 ? m0 : d;
    const std::vector<double>& e = tensor("embedding", m);
    const std::vector<double>& w1 = tensor("hyper_w1", h * m);
    const std::vector<double>& b1 = tensor("hyper_b1", h);
    const std::vector<double>& w2 = tensor("hyper_w2", R * (d + 1) * h);
    const std::vector<double>& b2 = tensor("hyper_b2", R * (d + 1));
    std::vector<double> hidden = matvec(w1.data(), h, m, e);
    for (int64_t i = 0; i < h; ++i)
      hidden[size_t(i)] = std::max(hidden[size_t(i)] + b1[size_t(i)], 0.0);
    std::vector<double> gen = matvec(w2.data(), R * (d + 1), h, hidden);
    for (size_t i = 0; i < gen.size(); ++i) gen[i] += b2[i];
    std::vector<double> z(size_t(T * R));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t r = 0; r < R; ++r) {
        double sum = gen[size_t(r * (d + 1) + d)];
        for (int64_t j = 0; j < d; ++j) sum += x[size_t(t * d + j)] * gen[size_t(r * (d + 1) + j)];
        z[size_t(t * R + r)] = sum;
      }
    return z;
  }
  if (kind == "recurrent") {
    // RMoE: logits = G h, h the GRU's state (recurrent_router_state).
    const int64_t p = param<int64_t>(router_params, "recurrent_dim");
    const std::vector<double> h =
        recurrent_router_state(router_params, shape, params, batch, noise);
    return logits_of(h, tensor("gate", R * p), T, p, R);
  }
  if (kind == "global") {
    // SpeechMoE2, causal: m_t = the mean of x over t's sequence up to t, g_t = P m_t,
    // z_t = W [x_t ; g_t] with W (R, d + D).
    const int64_t D = param<int64_t>(router_params, "global_dim");
    const std::vector<double>& W = tensor("gate", R * (d + D));
    const std::vector<double>& P = tensor("global_projection", D * d);
    std::vector<double> z(size_t(T * R));
    for (const Range& seq : sequences(batch.seq_lens, T)) {
      std::vector<double> sum(d, 0.0);
      for (int64_t t = seq.first; t < seq.second; ++t) {
        std::vector<double> input = row(x, t, d);  // [x_t ; g_t]
        for (int64_t j = 0; j < d; ++j) sum[j] += x[t * d + j];
        std::vector<double> mean(d);
        for (int64_t j = 0; j < d; ++j) mean[j] = sum[j] / static_cast<double>(t - seq.first + 1);
        const std::vector<double> g = matvec(P.data(), D, d, mean);
        input.insert(input.end(), g.begin(), g.end());
        const std::vector<double> out = matvec(W.data(), R, d + D, input);
        std::copy(out.begin(), out.end(), z.begin() + t * R);
      }
    }
    return z;
  }
  if (kind == "attention") {
    // Yuan 2.0-M32: q, k, v (R) = rows [0, R), [R, 2R), [2R, 3R) of qkv times x, and
    // z_i = Σ_j softmax_j(q_i k_j) v_j.
    const std::vector<double>& qkv = tensor("qkv", 3 * R * d);
    std::vector<double> z(size_t(T * R));
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> p = matvec(qkv.data(), 3 * R, d, row(x, t, d));
      for (int64_t i = 0; i < R; ++i) {
        std::vector<double> s(static_cast<size_t>(R));
        for (int64_t j = 0; j < R; ++j) s[size_t(j)] = p[size_t(i)] * p[size_t(R + j)];
        const double m = *std::max_element(s.begin(), s.end());
        double sum = 0.0, out = 0.0;
        for (int64_t j = 0; j < R; ++j) sum += std::exp(s[size_t(j)] - m);
        for (int64_t j = 0; j < R; ++j)
          out += std::exp(s[size_t(j)] - m) / sum * p[size_t(2 * R + j)];
        z[size_t(t * R + i)] = out;
      }
    }
    return z;
  }
  if (remoe_scaled_gate(router_params)) {
    // ReMoE's gate_lr_scale s (beyond the paper): z = s · x · router.gateᵀ.
    std::vector<double> z = logits_of(x, tensor("gate", R * d), T, d, R);
    for (double& v : z) v *= param<double>(router_params, "gate_lr_scale");
    return z;
  }
  if (kind == "vq") {
    // VQMoE: [W x | −‖x − C_e‖²/d | the same | M x], E = (R − 2) / 3 codes of width d.
    const int64_t E = (R - 2) / 3;
    const std::vector<double>& W = tensor("gate", E * d);
    const std::vector<double>& C = tensor("codebook", E * d);
    const std::vector<double>& M = tensor("mix", 2 * d);
    std::vector<double> z(size_t(T * R));
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> xt = row(x, t, d);
      const std::vector<double> s = matvec(W.data(), E, d, xt), m = matvec(M.data(), 2, d, xt);
      for (int64_t e = 0; e < E; ++e) {
        double dist = 0.0;
        for (int64_t j = 0; j < d; ++j)
          dist += (xt[size_t(j)] - C[size_t(e * d + j)]) * (xt[size_t(j)] - C[size_t(e * d + j)]);
        z[size_t(t * R + e)] = s[size_t(e)];
        z[size_t(t * R + E + e)] = -dist / static_cast<double>(d);
        z[size_t(t * R + 2 * E + e)] = -dist / static_cast<double>(d);
      }
      z[size_t(t * R + 3 * E)] = m[0];
      z[size_t(t * R + 3 * E + 1)] = m[1];
    }
    return z;
  }
  if (kind == "distilled") {
    // StableMoE: [s | ŝ] with s = W x (E = R / 2 centroids) and ŝ = K Q[id], Q (vocab, D).
    const int64_t E = R / 2, D = param<int64_t>(router_params, "distill_dim"), V = shape.vocab;
    const std::vector<double>& W = tensor("centroids", E * d);
    const std::vector<double>& Q = tensor("token_embedding", V * D);
    const std::vector<double>& K = tensor("token_centroids", E * D);
    if (static_cast<int64_t>(batch.token_ids.size()) != T)
      fail("reference::forward: token_ids has {} elements, expected {}", batch.token_ids.size(), T);
    std::vector<double> z(size_t(T * R));
    for (int64_t t = 0; t < T; ++t) {
      const int64_t id = batch.token_ids[t];
      if (id < 0 || id >= V)
        fail("reference::forward: token id {} is outside the vocabulary [0, {})", id, V);
      const std::vector<double> s = matvec(W.data(), E, d, row(x, t, d));
      const std::vector<double> hat = matvec(K.data(), E, D, row(Q, id, D));
      for (int64_t e = 0; e < E; ++e) {
        z[size_t(t * R + e)] = s[size_t(e)];
        z[size_t(t * R + E + e)] = hat[size_t(e)];
      }
    }
    return z;
  }
  if (kind == "aoe") {
    // Autonomy-of-Experts: z_te = ‖a_te‖₂, a_te = W_down,e x_t, W_down,e rows [e r, (e + 1) r).
    const int64_t r = param<int64_t>(router_params, "aoe_rank");
    const std::vector<double>& down = tensor("down", R * r * d);
    std::vector<double> z(size_t(T * R));
    for (int64_t t = 0; t < T; ++t) {
      const std::vector<double> a = matvec(down.data(), R * r, d, row(x, t, d));
      for (int64_t e = 0; e < R; ++e) {
        double sq = 0.0;
        for (int64_t j = 0; j < r; ++j) sq += a[size_t(e * r + j)] * a[size_t(e * r + j)];
        z[size_t(t * R + e)] = std::sqrt(sq);
      }
    }
    return z;
  }
  if (kind != "cosine") return logits_of(x, params.gate, T, d, R);
  // X-MoE: logits = scale · cos(W x, e_r), scale = min(exp(log_scale), 1 / τ_min); a norm below
  // 1e-4 counts as 1e-4 (F.normalize).
  const int64_t D = param<int64_t>(router_params, "cosine_dim");
  const bool normalize_input = param<bool>(router_params, "cosine_normalize_input");
  const std::vector<double>& W = tensor("projection", D * d);
  const std::vector<double>& emb = tensor("expert_embeddings", R * D);
  const double scale = std::min(std::exp(tensor("log_scale", 1)[0]),
                                1.0 / param<double>(router_params, "cosine_min_temperature"));
  auto unit = [](std::vector<double> v) {
    double sq = 0.0;
    for (double a : v) sq += a * a;
    const double n = std::max(std::sqrt(sq), 1e-4);
    for (double& a : v) a /= n;
    return v;
  };
  std::vector<double> z(size_t(T * R));
  for (int64_t t = 0; t < T; ++t) {
    std::vector<double> u = matvec(W.data(), D, d, row(x, t, d));
    if (normalize_input) u = unit(u);
    for (int64_t r = 0; r < R; ++r) {
      const std::vector<double> e = unit(row(emb, r, D));
      double dot = 0.0;
      for (int64_t j = 0; j < D; ++j) dot += u[size_t(j)] * e[size_t(j)];
      z[size_t(t * R + r)] = scale * dot;
    }
  }
  return z;
}

Result forward(const LayerConfig& config, const json& router_params, const MoEShape& shape,
               int64_t R, const Params& params, const Batch& batch, const RouterNoise& noise) {
  const std::string family = param<std::string>(router_params, "router");
  const int64_t T = batch.T, d = shape.d, E = shape.E;
  const bool own_logits =
      router_params.value("logits", "linear") != "linear" || remoe_scaled_gate(router_params);
  const bool gateless = family == "hash" || family == "thor";
  const int64_t rank = aoe_rank(router_params);
  check_sizes(config, shape, R, params, batch, noise, !gateless && !own_logits,
              family == "sparsemixer" ? sparsemixer_draws(R)
              : family == "moec"      ? param<int64_t>(router_params, "cluster_size")
                                      : 1,
              rank > 0 ? rank : d);
  if (family == "smear") return forward_smear(config, shape, params, batch, noise);

  const std::vector<Range> groups = routing_group_ranges(config.routing_groups, batch.seq_lens, T);
  std::vector<double> logits;
  if (!gateless) logits = router_logits(router_params, shape, R, params, batch, noise);

  Routing routing;
  std::string score = "softmax";
  Locality loc;
  std::vector<double> competesmoe_outputs, competesmoe_affinities;  // (T, E, d), (T, E)
  if (family == "topk") {
    score = param<std::string>(router_params, "score");
    const TopkOptions o = read_topk_options(router_params);
    if (o.local_bonus > 0.0 || o.locality_loss > 0.0)
      loc = locality_of(config, router_params, batch, E);
    routing = route_topk(router_params, logits, params.gate_bias, groups, noise, config.training,
                         loc, T, E, R);
  } else if (family == "expert_choice") {
    routing = route_expert_choice(router_params, logits, groups, T, E);
  } else if (family == "hash") {
    routing = route_hash(router_params, batch.token_ids, groups, T, E);
  } else if (family == "thor") {
    routing = route_thor(router_params, noise, groups, config.training, T, E);
  } else if (family == "base") {
    routing = route_base(logits, groups, config.training, T, E);
  } else if (family == "top_p") {
    routing = route_top_p(router_params, logits, T, E);
  } else if (family == "damoe") {
    routing = route_damoe(router_params, logits, batch.token_importance,
                          sequences(batch.seq_lens, T), T, E);
  } else if (family == "remoe") {
    routing = route_remoe(remoe_logits(router_params, logits, params.gate_bias, T, E), T, E);
  } else if (family == "soft") {
    routing = route_soft(logits, T, E);
  } else if (family == "smile") {
    routing = route_smile(router_params, logits, groups, T, E, R);
  } else if (family == "prototype") {
    routing = route_prototype(router_params, logits, groups, T, E);
  } else if (family == "sparsemixer") {
    routing = route_sparsemixer(router_params, logits, noise, config.training, T, E);
  } else if (family == "rectify") {
    routing = route_rectify(config, router_params, logits, groups, batch, T, E);
  } else if (family == "moec") {
    routing = route_moec(router_params, logits, groups, noise, config.training, T, E);
  } else if (family == "maskmoe") {
    routing = route_maskmoe(router_params, logits, batch, T, E);
  } else if (family == "competesmoe") {
    if (competesmoe_competes(router_params, config.training, noise)) {
      competesmoe_outputs = all_expert_outputs(config, shape, params, batch);
      competesmoe_affinities = competesmoe_affinities_of(competesmoe_outputs, T, E, d);
    }
    routing = route_competesmoe(router_params, logits, competesmoe_affinities, T, E);
  } else if (family == "stablemoe") {
    routing = route_stablemoe(router_params, logits, groups, config.training, T, E);
  } else if (family == "vqmoe") {
    routing = route_vqmoe(router_params, logits, T, E);
  } else if (family == "duollm") {
    routing = route_duollm(router_params, logits, noise, config.training, T, R, shape.F);
  } else if (family == "flextron") {
    routing = route_flextron(router_params, logits, T, E, R, shape.F);
  } else {
    fail("reference::forward: unknown router family '{}'", family);
  }

  Result r;
  if (router_params.value("logits", "linear") == "recurrent")
    r.router_carry = recurrent_router_state(router_params, shape, params, batch, noise);
  r.y.assign(T * d, 0.0);
  r.combine.assign(T * E, 0.0);
  r.tokens_per_expert.assign(E, 0);
  double hidden_units = 0.0;
  for (const Assignment& a : routing.assignments) {
    if (!a.kept) {
      ++r.dropped;
      continue;
    }
    ++r.tokens_per_expert[a.expert];
    hidden_units += static_cast<double>(a.width > 0 ? a.width : shape.F);
    r.combine[a.token * E + a.expert] += a.weight;
    // The gate's input: x, or AoE's W_down,e times the router's (jittered) view of x.
    const std::vector<double> xt = row(batch.x, a.token, d);
    const std::vector<double> g =
        rank > 0 ? matvec(router_tensor(params, "down", R * rank * d).data() + a.expert * rank * d,
                          rank, d, row(router_input(batch.x, noise), a.token, d))
                 : xt;
    const std::vector<double> out =
        expert_ffn_width(config, params, shape, a.expert, a.width, xt, g);
    for (int64_t j = 0; j < d; ++j) r.y[a.token * d + j] += a.weight * out[j];
  }
  r.hidden_per_token = hidden_units / static_cast<double>(shape.F) / static_cast<double>(T);
  for (int64_t t = 0; t < static_cast<int64_t>(routing.passthrough.size()); ++t)
    for (int64_t j = 0; j < d; ++j) r.y[t * d + j] += routing.passthrough[t] * batch.x[t * d + j];
  add_shared_expert(config, params, shape, batch.x, T, r.y);

  if (!gateless && family != "base")
    r.aux_loss = config_losses(config.losses, logits, score, routing, batch, R);
  if (family == "remoe")
    r.aux_loss += remoe_regulariser(
        router_params, remoe_logits(router_params, logits, params.gate_bias, T, E), T, E);
  if (family == "smile") r.aux_loss += smile_regulariser(router_params, routing, logits, T, E, R);
  if (family == "prototype")
    r.aux_loss += prototype_regulariser(router_params, routing, logits, T, E);
  if (family == "moec") r.aux_loss += moec_regulariser(router_params, logits, T, E);
  if (family == "stablemoe")
    r.aux_loss += stablemoe_regulariser(router_params, logits, config.training, T, E);
  if (family == "vqmoe") r.aux_loss += vqmoe_regulariser(router_params, logits, T, E);
  if (family == "duollm") r.aux_loss += duollm_regulariser(router_params, logits, T, R, shape.F);
  if (family == "flextron")
    r.aux_loss += flextron_regulariser(router_params, logits, T, E, R, shape.F);
  if (family == "competesmoe")
    r.aux_loss += competesmoe_regulariser(router_params, logits, competesmoe_affinities,
                                          competesmoe_outputs, routing, T, E, d);
  if (family == "topk" && read_topk_options(router_params).locality_loss > 0.0)
    r.aux_loss += locality_regulariser(read_topk_options(router_params), loc, logits, T, E, R);
  if (family == "topk")
    r.aux_loss += speechmoe_regulariser(read_topk_options(router_params), logits, T, R);
  return r;
}

std::vector<double> competesmoe_affinities(const LayerConfig& config,
                                           const nlohmann::json& router_params,
                                           const MoEShape& shape, const Params& params,
                                           const Batch& batch, const RouterNoise& noise) {
  if (!competesmoe_competes(router_params, config.training, noise)) return {};
  return competesmoe_affinities_of(all_expert_outputs(config, shape, params, batch), batch.T,
                                   shape.E, shape.d);
}

}  // namespace switchyard::reference
