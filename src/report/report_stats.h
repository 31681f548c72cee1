// Statistics of the comparison report: per-run series, summary numbers, means across ranks.
#pragma once

#include <switchyard/report.h>

#include <cmath>
#include <limits>
#include <optional>
#include <vector>

namespace switchyard::report {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

inline bool finite(double v) {
  return std::isfinite(v);
}

inline double opt_or_nan(const std::optional<double>& v) {
  return v.value_or(kNaN);
}

// Per-run series derived from the rows, shared by the table and the plots.
struct Derived {
  std::vector<double> steps;
  std::vector<double> train_loss_ema;
  std::vector<double> max_vio;  // mean over layers
  std::vector<double> max_vio_ema;
  std::vector<double> dropped;
  std::vector<double> experts_per_token;
  std::vector<double> experts_per_token_ema;
  std::vector<double> entropy;
  // Evaluation steps.
  std::vector<double> eval_steps, val_loss, fluct_steps, fluctuation, mi_steps, domain_mi;
  double beta = 0;
};

Derived derive(const RunData& run);

struct Summary {
  double final_val = kNaN, best_val = kNaN, final_train = kNaN, max_vio_mean = kNaN,
         max_vio_final = kNaN, dropped = kNaN, experts_per_token = kNaN, entropy = kNaN,
         fluctuation = kNaN, domain_mi = kNaN, tokens_per_s = kNaN;
};

Summary summarize(const RunData& run, const Derived& d);

// Means over the steps of a run across ranks (nullopt for a one-process run).
std::optional<ParallelMetrics> parallel_means(const RunData& run);

}  // namespace switchyard::report
