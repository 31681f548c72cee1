// Results over several seeds (compare --seeds N): runs grouped by their group name, mean ± sample
// standard deviation of a final metric per group, and each group's paired difference from a
// baseline group over the seeds both ran, with a 95 % t interval; a difference whose interval
// excludes 0 is outside seed noise.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace switchyard::report {

struct SeededValue {
  std::string group;
  uint64_t seed = 0;
  double value = 0;  // NaN: the run has none (diverged, or not evaluated yet)
};

struct GroupSummary {
  std::string group;
  int n = 0;                // runs with a finite value
  double mean = 0, sd = 0;  // sd: NaN when n < 2
};

struct PairedDifference {
  std::string group;
  int n = 0;                                // seeds both groups ran with finite values
  double mean = 0, sd = 0, lo = 0, hi = 0;  // group − baseline; the 95 % t interval [lo, hi]
  bool outside_noise = false;               // n >= 2 and the interval excludes 0
};

struct SeedComparison {
  std::string baseline;
  std::vector<GroupSummary> groups;      // in first-appearance order
  std::vector<PairedDifference> paired;  // every group but the baseline
  bool any_repeated = false;             // some group has two or more runs
};

// Two-sided 95 % critical value of Student's t with `df` degrees of freedom (df >= 1).
double t_critical_95(int df);

// `baseline` names a group; empty: the first group. Fails when it names none.
SeedComparison compare_seeds(const std::vector<SeededValue>& values, const std::string& baseline);

}  // namespace switchyard::report
