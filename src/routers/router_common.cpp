#include "routers/router_common.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace switchyard {

const char* score_name(ScoreKind kind) {
  switch (kind) {
    case ScoreKind::Softmax:
      return "softmax";
    case ScoreKind::Sigmoid:
      return "sigmoid";
    case ScoreKind::SqrtSoftplus:
      return "sqrtsoftplus";
  }
  return "?";
}

}  // namespace switchyard

namespace switchyard::routers {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

int32_t first_argmax(const float* v, int64_t n) {
  int32_t best = 0;
  for (int32_t i = 1; i < int32_t(n); ++i)
    if (v[i] > v[best]) best = i;
  return best;
}

void compute_scores(ScoreKind kind, const float* z, int64_t R, double* s) {
  if (kind == ScoreKind::Sigmoid) {
    for (int64_t j = 0; j < R; ++j) s[j] = 1.0 / (1.0 + std::exp(-double(z[j])));
    return;
  }
  if (kind == ScoreKind::SqrtSoftplus) {  // softplus(z) = max(z, 0) + log1p(exp(-|z|))
    for (int64_t j = 0; j < R; ++j) {
      const double v = double(z[j]);
      s[j] = std::sqrt(std::max(v, 0.0) + std::log1p(std::exp(-std::abs(v))));
    }
    return;
  }
  double max = -std::numeric_limits<double>::infinity();
  for (int64_t j = 0; j < R; ++j) max = std::max(max, double(z[j]));
  double sum = 0.0;
  for (int64_t j = 0; j < R; ++j) sum += (s[j] = std::exp(double(z[j]) - max));
  for (int64_t j = 0; j < R; ++j) s[j] /= sum;
}

void top_k_indices(const double* values, int64_t n, int64_t k, std::vector<int32_t>& out) {
  out.clear();
  for (int32_t i = 0; i < int32_t(n); ++i)
    if (!(values[i] == -std::numeric_limits<double>::infinity()) && !std::isnan(values[i]))
      out.push_back(i);
  k = std::min<int64_t>(k, int64_t(out.size()));
  auto better = [&](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  };
  std::partial_sort(out.begin(), out.begin() + k, out.end(), better);
  out.resize(size_t(k));
}

std::vector<int32_t> top_k_indices(const double* values, int64_t n, int64_t k) {
  std::vector<int32_t> out;
  out.reserve(size_t(n));
  top_k_indices(values, n, k, out);
  return out;
}

void scores_backward(ScoreKind kind, const double* s, const double* ds, int64_t R, float* dz) {
  if (kind == ScoreKind::Sigmoid) {
    for (int64_t j = 0; j < R; ++j) dz[j] += float(ds[j] * s[j] * (1.0 - s[j]));
    return;
  }
  if (kind == ScoreKind::SqrtSoftplus) {  // ds/dz = sigmoid(z) / (2 s), sigmoid(z) = 1 - e^{-s²}
    for (int64_t j = 0; j < R; ++j)
      if (s[j] > 0) dz[j] += float(ds[j] * -std::expm1(-s[j] * s[j]) / (2.0 * s[j]));
    return;
  }
  double dot = 0.0;
  for (int64_t j = 0; j < R; ++j) dot += ds[j] * s[j];
  for (int64_t j = 0; j < R; ++j) dz[j] += float(s[j] * (ds[j] - dot));
}

TokenAssignments assignments_by_token(const RoutingPlan& plan, int64_t T) {
  TokenAssignments out;
  out.offsets.assign(size_t(T + 1), 0);
  for (int32_t t : plan.token) ++out.offsets[size_t(t) + 1];
  std::partial_sum(out.offsets.begin(), out.offsets.end(), out.offsets.begin());
  std::vector<int64_t> fill(out.offsets.begin(), out.offsets.end() - 1);
  out.index.resize(plan.size());
  for (size_t a = 0; a < plan.size(); ++a)
    out.index[size_t(fill[size_t(plan.token[a])]++)] = int32_t(a);
  return out;
}

int32_t hidden_width(double fraction, int64_t F) {
  const double w = std::floor(fraction * double(F) + 0.5);
  return int32_t(std::clamp<double>(w, 1.0, double(F)));
}

void backward_raw_scores(ScoreKind kind, const RouterInput& in, const RoutingPlan& plan,
                         const float* d_weight, double scale, float* d_logits) {
  const TokenAssignments by_token = assignments_by_token(plan, in.T);
#pragma omp parallel
  {
    std::vector<double> s(size_t(in.R)), ds(size_t(in.R));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t begin = by_token.offsets[size_t(t)], end = by_token.offsets[size_t(t) + 1];
      if (begin == end) continue;
      std::fill(ds.begin(), ds.end(), 0.0);
      for (int64_t i = begin; i < end; ++i) {
        const int32_t a = by_token.index[size_t(i)];
        if (plan.kept[size_t(a)]) ds[size_t(plan.expert[size_t(a)])] += scale * d_weight[a];
      }
      compute_scores(kind, in.logits + t * in.R, in.R, s.data());
      scores_backward(kind, s.data(), ds.data(), in.R, d_logits + t * in.R);
    }
  }
}

void route_all_experts(const RouterInput& in, RoutingPlan& plan) {
  std::vector<double> s(size_t(in.R));
  route_per_token(in, plan, [&](int64_t t, auto&& emit) {
    compute_scores(ScoreKind::Softmax, in.logits + t * in.R, in.R, s.data());
    for (int64_t e = 0; e < in.E; ++e) emit(int32_t(e), s[size_t(e)]);
  });
}

// Auction (Bertsekas) with ε scaled to the affinity range; shared by the BASE router and the
// LLM batch router.
std::vector<int32_t> balanced_assignment(const std::vector<double>& A, int64_t n, int64_t E,
                                         const std::vector<int64_t>& capacity,
                                         const AuctionOptions& options) {
  std::vector<int32_t> owner(size_t(n), -1);
  std::vector<int64_t> held(size_t(E), 0);
  if (n == 0) return owner;
  const auto [lo, hi] = std::minmax_element(A.begin(), A.end());
  const double range = *hi - *lo;
  const double eps_final = std::max(options.min_eps, range / options.eps_divisor);
  // ε-scaling: coarse phases find prices fast; each phase restarts the assignment from them.
  double eps = options.scaling ? std::max(eps_final, range / 4.0) : eps_final;
  std::vector<double> price(size_t(n), 0.0);
  std::vector<double> best_bid(static_cast<size_t>(n)), values(static_cast<size_t>(n));
  std::vector<int32_t> best_bidder(static_cast<size_t>(n));
  for (;;) {
    std::fill(owner.begin(), owner.end(), -1);
    std::fill(held.begin(), held.end(), 0);
    for (int64_t round = 0; round < options.max_rounds; ++round) {
      bool full = true;
      for (int64_t e = 0; e < E; ++e) full = full && held[size_t(e)] == capacity[size_t(e)];
      if (full) break;
      std::fill(best_bid.begin(), best_bid.end(), -std::numeric_limits<double>::infinity());
      std::fill(best_bidder.begin(), best_bidder.end(), -1);
      for (int64_t e = 0; e < E; ++e) {
        const int64_t need = capacity[size_t(e)] - held[size_t(e)];
        if (need <= 0) continue;
        for (int64_t t = 0; t < n; ++t)
          values[size_t(t)] = owner[size_t(t)] == e ? -std::numeric_limits<double>::infinity()
                                                    : A[size_t(t * E + e)] - price[size_t(t)];
        const std::vector<int32_t> order = top_k_indices(values.data(), n, need + 1);
        const int64_t taken = std::min<int64_t>(need, int64_t(order.size()));
        if (taken == 0) continue;
        const double next = int64_t(order.size()) > need ? values[size_t(order[size_t(need)])]
                                                         : values[size_t(order[size_t(taken - 1)])];
        for (int64_t i = 0; i < taken; ++i) {
          const int32_t t = order[size_t(i)];
          const double bid = values[size_t(t)] - next + eps;
          if (bid > best_bid[size_t(t)]) {  // strict: ties keep the lower expert
            best_bid[size_t(t)] = bid;
            best_bidder[size_t(t)] = int32_t(e);
          }
        }
      }
      for (int64_t t = 0; t < n; ++t) {
        const int32_t e = best_bidder[size_t(t)];
        if (e < 0) continue;
        if (owner[size_t(t)] >= 0) --held[size_t(owner[size_t(t)])];
        owner[size_t(t)] = e;
        ++held[size_t(e)];
        price[size_t(t)] += best_bid[size_t(t)];
      }
    }
    if (eps <= eps_final) break;
    eps = std::max(eps_final, eps / 5.0);
  }
  // Tokens the rounds left unowned go greedily to the best expert with room.
  for (int64_t t = 0; t < n; ++t) {
    if (owner[size_t(t)] >= 0) continue;
    int32_t best = -1;
    for (int64_t e = 0; e < E; ++e)
      if (held[size_t(e)] < capacity[size_t(e)] &&
          (best < 0 || A[size_t(t * E + e)] > A[size_t(t * E + best)]))
        best = int32_t(e);
    owner[size_t(t)] = best;
    ++held[size_t(best)];
  }
  return owner;
}

}  // namespace switchyard::routers
