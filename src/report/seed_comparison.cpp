#include "report/seed_comparison.h"

#include <switchyard/error.h>

#include <cmath>
#include <limits>
#include <map>

namespace switchyard::report {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

void mean_sd(const std::vector<double>& v, double& mean, double& sd) {
  mean = 0;
  for (double x : v) mean += x;
  mean /= double(v.size());
  if (v.size() < 2) {
    sd = kNaN;
    return;
  }
  double ss = 0;
  for (double x : v) ss += (x - mean) * (x - mean);
  sd = std::sqrt(ss / double(v.size() - 1));
}

}  // namespace

double t_critical_95(int df) {
  // Two-sided 0.975 quantiles of Student's t (standard tables), then the normal's 1.96.
  static const double table[] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                 2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                                 2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                                 2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (df < 1) fail("t_critical_95: degrees of freedom {} < 1", df);
  if (df <= 30) return table[df - 1];
  return df <= 60 ? 2.000 : df <= 120 ? 1.980 : 1.960;
}

SeedComparison compare_seeds(const std::vector<SeededValue>& values, const std::string& baseline) {
  SeedComparison out;
  std::vector<std::string> order;
  std::map<std::string, std::map<uint64_t, double>> by_group;  // group → seed → value
  std::map<std::string, int> runs;
  for (const SeededValue& v : values) {
    if (!by_group.count(v.group)) order.push_back(v.group);
    ++runs[v.group];
    if (std::isfinite(v.value))
      by_group[v.group][v.seed] = v.value;
    else
      by_group[v.group];
  }
  for (const auto& [group, count] : runs) out.any_repeated |= count >= 2;
  if (order.empty()) return out;
  out.baseline = baseline.empty() ? order.front() : baseline;
  if (!by_group.count(out.baseline)) {
    std::string names;
    for (const std::string& g : order) names += (names.empty() ? "" : ", ") + g;
    fail("report: baseline '{}' is not one of the runs' groups ({})", out.baseline, names);
  }
  for (const std::string& g : order) {
    std::vector<double> v;
    for (const auto& [seed, x] : by_group[g]) v.push_back(x);
    GroupSummary s{g, int(v.size()), kNaN, kNaN};
    if (!v.empty()) mean_sd(v, s.mean, s.sd);
    out.groups.push_back(s);
  }
  const auto& base = by_group[out.baseline];
  for (const std::string& g : order) {
    if (g == out.baseline) continue;
    std::vector<double> diff;
    for (const auto& [seed, x] : by_group[g])
      if (const auto it = base.find(seed); it != base.end()) diff.push_back(x - it->second);
    PairedDifference d{g, int(diff.size()), kNaN, kNaN, kNaN, kNaN, false};
    if (!diff.empty()) mean_sd(diff, d.mean, d.sd);
    if (diff.size() >= 2) {
      const double half =
          t_critical_95(int(diff.size()) - 1) * d.sd / std::sqrt(double(diff.size()));
      d.lo = d.mean - half;
      d.hi = d.mean + half;
      d.outside_noise = d.lo > 0 || d.hi < 0;
    }
    out.paired.push_back(d);
  }
  return out;
}

}  // namespace switchyard::report
