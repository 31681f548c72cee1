// Statistics of the comparison report (report_stats.h): EMA smoothing, tail means, summaries.
#include "report/report_stats.h"

#include <algorithm>
#include <array>
#include <functional>

namespace switchyard::report {
namespace {

double mean_finite(const std::vector<double>& v) {
  double sum = 0;
  int n = 0;
  for (double x : v)
    if (finite(x)) sum += x, ++n;
  return n ? sum / n : kNaN;
}

// Mean over a row's layers of one statistic (NaN-skipping; NaN when none is known).
double layer_mean(const MetricsRow& row, const std::function<double(const LayerMetrics&)>& get) {
  std::vector<double> v;
  for (const LayerMetrics& l : row.layers) v.push_back(get(l));
  return mean_finite(v);
}

// Per-step series are noisy at small batch sizes; plots and "final" values use an EMA whose span
// grows with the run (about a twentieth of it, at most 50 steps).
double ema_beta(size_t n) {
  const double window = std::clamp(double(n) / 20.0, 1.0, 50.0);
  return 1.0 - 1.0 / window;
}

std::vector<double> ema(const std::vector<double>& v, double beta) {
  std::vector<double> out(v.size(), kNaN);
  double state = kNaN;
  for (size_t i = 0; i < v.size(); ++i) {
    if (finite(v[i])) state = finite(state) ? beta * state + (1 - beta) * v[i] : v[i];
    out[i] = state;
  }
  return out;
}

// Mean over the last tenth of the values (at least one): single steps are too noisy to rank by.
double tail_mean(const std::vector<double>& v) {
  if (v.empty()) return kNaN;
  const size_t n = std::max<size_t>(1, v.size() / 10);
  return mean_finite(std::vector<double>(v.end() - std::ptrdiff_t(n), v.end()));
}

double median_finite(std::vector<double> v) {
  std::erase_if(v, [](double x) { return !finite(x); });
  if (v.empty()) return kNaN;
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : 0.5 * (v[m - 1] + v[m]);
}

}  // namespace

Derived derive(const RunData& run) {
  Derived d;
  std::vector<double> train;
  for (const MetricsRow& row : run.rows) {
    d.steps.push_back(double(row.step));
    train.push_back(row.train_loss);
    d.max_vio.push_back(layer_mean(row, [](const LayerMetrics& l) { return l.max_vio; }));
    d.dropped.push_back(layer_mean(row, [](const LayerMetrics& l) { return l.dropped_frac; }));
    d.experts_per_token.push_back(
        layer_mean(row, [](const LayerMetrics& l) { return l.experts_per_token; }));
    d.entropy.push_back(layer_mean(row, [](const LayerMetrics& l) { return l.entropy; }));
    if (row.val_loss) {
      d.eval_steps.push_back(double(row.step));
      d.val_loss.push_back(*row.val_loss);
    }
    const double fl =
        layer_mean(row, [](const LayerMetrics& l) { return opt_or_nan(l.fluctuation); });
    if (finite(fl)) d.fluct_steps.push_back(double(row.step)), d.fluctuation.push_back(fl);
    const double mi =
        layer_mean(row, [](const LayerMetrics& l) { return opt_or_nan(l.domain_mi); });
    if (finite(mi)) d.mi_steps.push_back(double(row.step)), d.domain_mi.push_back(mi);
  }
  d.beta = ema_beta(run.rows.size());
  d.train_loss_ema = ema(train, d.beta);
  d.max_vio_ema = ema(d.max_vio, d.beta);
  d.experts_per_token_ema = ema(d.experts_per_token, d.beta);
  return d;
}

Summary summarize(const RunData& run, const Derived& d) {
  Summary s;
  for (double v : d.val_loss)
    if (finite(v)) s.best_val = finite(s.best_val) ? std::min(s.best_val, v) : v;
  if (!d.val_loss.empty()) s.final_val = d.val_loss.back();  // a diverged run shows NaN
  if (!d.train_loss_ema.empty()) s.final_train = d.train_loss_ema.back();
  s.max_vio_mean = mean_finite(d.max_vio);
  s.max_vio_final = tail_mean(d.max_vio);
  s.dropped = mean_finite(d.dropped);
  s.experts_per_token = tail_mean(d.experts_per_token);
  s.entropy = tail_mean(d.entropy);
  if (!d.fluctuation.empty()) s.fluctuation = d.fluctuation.back();
  if (!d.domain_mi.empty()) s.domain_mi = d.domain_mi.back();
  std::vector<double> tps;
  for (const MetricsRow& row : run.rows) tps.push_back(row.tokens_per_s);
  s.tokens_per_s = median_finite(tps);
  return s;
}

std::optional<ParallelMetrics> parallel_means(const RunData& run) {
  ParallelMetrics m;
  m.expert_rows_imbalance = m.step_time_imbalance = 0;
  int n = 0;
  for (const MetricsRow& row : run.rows) {
    if (!row.parallel) continue;
    const ParallelMetrics& p = *row.parallel;
    m.ranks = p.ranks;
    m.dispatch_bytes += p.dispatch_bytes;
    m.combine_bytes += p.combine_bytes;
    m.backward_bytes += p.backward_bytes;
    m.all_to_all_share += p.all_to_all_share;
    if (p.share_by_phase) {
      if (!m.share_by_phase) m.share_by_phase = std::array<double, 3>{};
      for (size_t i = 0; i < 3; ++i) (*m.share_by_phase)[i] += (*p.share_by_phase)[i];
    }
    m.expert_rows_imbalance += p.expert_rows_imbalance;
    m.step_time_imbalance += p.step_time_imbalance;
    ++n;
  }
  if (n == 0) return std::nullopt;
  for (double* v : {&m.dispatch_bytes, &m.combine_bytes, &m.backward_bytes, &m.all_to_all_share,
                    &m.expert_rows_imbalance, &m.step_time_imbalance})
    *v /= n;
  if (m.share_by_phase)
    for (double& v : *m.share_by_phase) v /= n;
  return m;
}

}  // namespace switchyard::report
