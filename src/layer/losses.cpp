#include "layer/losses.h"

#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "routers/router_common.h"

namespace switchyard {
namespace {

// q = balance probabilities of one token: softmax(z), or sigmoid(z) / Σ sigmoid(z).
void balance_probs(ScoreKind kind, const float* z, int64_t R, double* s, double* q) {
  routers::compute_scores(kind, z, R, s);
  if (kind == ScoreKind::Softmax) {
    std::copy(s, s + R, q);
    return;
  }
  const double sum = std::accumulate(s, s + R, 0.0);
  for (int64_t j = 0; j < R; ++j) q[j] = s[j] / sum;
}

// dz += (∂q/∂z)^T dq for one token.
void balance_probs_backward(ScoreKind kind, const double* s, const double* q, const double* dq,
                            int64_t R, float* dz, std::vector<double>& ds) {
  if (kind == ScoreKind::Softmax) {
    routers::scores_backward(kind, s, dq, R, dz);
    return;
  }
  const double sum = std::accumulate(s, s + R, 0.0);
  double dot = 0.0;
  for (int64_t j = 0; j < R; ++j) dot += dq[j] * q[j];
  ds.resize(static_cast<size_t>(R));
  for (int64_t j = 0; j < R; ++j) ds[size_t(j)] = (dq[j] - dot) / sum;
  routers::scores_backward(kind, s, ds.data(), R, dz);
}

// Balance loss over tokens [begin, end) with counts c: value α R Σ f_e P_e; dq_te = α R f_e / n ·
// scale.
double balance_term(const LossInput& in, double alpha, int64_t begin, int64_t end,
                    const std::vector<double>& counts, double scale, float* d_logits) {
  const int64_t R = in.R, n = end - begin;
  const double total = std::accumulate(counts.begin(), counts.end(), 0.0);
  if (n == 0 || total <= 0) return 0.0;
  std::vector<double> P(static_cast<size_t>(R), 0.0);
#pragma omp parallel
  {
    std::vector<double> s(static_cast<size_t>(R)), q(static_cast<size_t>(R)),
        local(static_cast<size_t>(R), 0.0), dq(static_cast<size_t>(R)), ds;
    for (int64_t j = 0; j < R; ++j)
      dq[size_t(j)] = scale * alpha * double(R) * (counts[size_t(j)] / total) / double(n);
#pragma omp for schedule(static)
    for (int64_t t = begin; t < end; ++t) {
      balance_probs(in.score, in.logits + t * R, R, s.data(), q.data());
      for (int64_t j = 0; j < R; ++j) local[size_t(j)] += q[size_t(j)] / double(n);
      if (d_logits)
        balance_probs_backward(in.score, s.data(), q.data(), dq.data(), R, d_logits + t * R, ds);
    }
#pragma omp critical
    for (int64_t j = 0; j < R; ++j) P[size_t(j)] += local[size_t(j)];
  }
  double loss = 0.0;
  for (int64_t j = 0; j < R; ++j) loss += counts[size_t(j)] / total * P[size_t(j)];
  return scale * alpha * double(R) * loss;
}

double balance_loss(const LossConfig& config, const LossInput& in, float* d_logits) {
  const RoutingPlan& plan = *in.plan;
  std::vector<double> counts = config.balance_top1_only && !plan.first_choice_counts.empty()
                                   ? plan.first_choice_counts
                                   : plan.selection_counts;
  switch (config.balance_mode) {
    case BalanceMode::MicroBatch:
      return balance_term(in, config.balance, 0, in.T, counts, 1.0, d_logits);
    case BalanceMode::GlobalBatch:
      if (in.global_counts)
        for (int64_t j = 0; j < in.R; ++j) counts[size_t(j)] += in.global_counts[j];
      return balance_term(in, config.balance, 0, in.T, counts, 1.0, d_logits);
    case BalanceMode::Sequence: {
      // Per-sequence counts from the plan's assignments (every choice, kept or dropped).
      std::vector<int64_t> sequence_of(size_t(in.T));
      for (size_t s = 0; s < in.sequences.size(); ++s)
        for (int64_t t = in.sequences[s].first; t < in.sequences[s].second; ++t)
          sequence_of[size_t(t)] = int64_t(s);
      std::vector<std::vector<double>> per(in.sequences.size(), std::vector<double>(size_t(in.R)));
      for (size_t a = 0; a < plan.size(); ++a)
        per[size_t(sequence_of[size_t(plan.token[a])])][size_t(plan.expert[a])] += 1.0;
      const double scale = 1.0 / double(in.sequences.size());
      double loss = 0.0;
      for (size_t s = 0; s < in.sequences.size(); ++s)
        loss += balance_term(in, config.balance, in.sequences[s].first, in.sequences[s].second,
                             per[s], scale, d_logits);
      return loss;
    }
  }
  return 0.0;
}

double z_loss(double coefficient, const LossInput& in, float* d_logits) {
  const int64_t R = in.R;
  double loss = 0.0;
#pragma omp parallel for schedule(static) reduction(+ : loss)
  for (int64_t t = 0; t < in.T; ++t) {
    const float* z = in.logits + t * R;
    const double max = *std::max_element(z, z + R);
    double sum = 0.0;
    for (int64_t j = 0; j < R; ++j) sum += std::exp(double(z[j]) - max);
    const double lse = max + std::log(sum);
    loss += lse * lse;
    if (d_logits)
      for (int64_t j = 0; j < R; ++j)
        d_logits[t * R + j] +=
            float(coefficient * 2.0 / double(in.T) * lse * std::exp(double(z[j]) - lse));
  }
  return coefficient * loss / double(in.T);
}

double entropy_loss(double coefficient, const LossInput& in, float* d_logits) {
  const int64_t R = in.R;
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    std::vector<double> s(static_cast<size_t>(R)), q(static_cast<size_t>(R)),
        dq(static_cast<size_t>(R)), ds;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < in.T; ++t) {
      balance_probs(in.score, in.logits + t * R, R, s.data(), q.data());
      for (int64_t j = 0; j < R; ++j) {
        const double v = q[size_t(j)];
        total -= v > 0 ? v * std::log(v) : 0.0;
        dq[size_t(j)] = -coefficient / double(in.T) * (v > 0 ? std::log(v) + 1.0 : 0.0);
      }
      if (d_logits)
        balance_probs_backward(in.score, s.data(), q.data(), dq.data(), R, d_logits + t * R, ds);
    }
  }
  return coefficient * total / double(in.T);
}

}  // namespace

double aux_losses(const LossConfig& config, const LossInput& in,
                  std::map<std::string, double>& each, float* d_logits) {
  double sum = 0.0;
  if (config.balance > 0) sum += each["balance"] = balance_loss(config, in, d_logits);
  if (config.z > 0) sum += each["z"] = z_loss(config.z, in, d_logits);
  if (config.entropy > 0) sum += each["entropy"] = entropy_loss(config.entropy, in, d_logits);
  return sum;
}

double mean_router_entropy(const LossInput& in, std::pair<int64_t, int64_t> columns) {
  if (in.logits == nullptr || in.T == 0) return 0.0;
  const auto [first, n] = columns;
  double total = 0.0;
#pragma omp parallel reduction(+ : total)
  {
    std::vector<double> s(static_cast<size_t>(n)), q(static_cast<size_t>(n));
#pragma omp for schedule(static)
    for (int64_t t = 0; t < in.T; ++t) {
      balance_probs(in.score, in.logits + t * in.R + first, n, s.data(), q.data());
      for (double v : q) total -= v > 0 ? v * std::log(v) : 0.0;
    }
  }
  return total / double(in.T);
}

}  // namespace switchyard
