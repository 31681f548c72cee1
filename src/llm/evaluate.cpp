// Router evaluation on a seeded split: PGR/APGR/CPT for a model pair, cost–quality hulls and AIQ
// for many models (definitions in docs/llm-routing.md).
#include <switchyard/error.h>
#include <switchyard/llm_eval.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>

namespace switchyard {
namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

double trapezoid(const std::vector<double>& x, const std::vector<double>& y) {
  double area = 0.0;
  for (size_t i = 1; i < x.size(); ++i) area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2.0;
  return area;
}

// numpy's default (linear) quantile of sorted values.
double quantile_sorted(const std::vector<double>& sorted, double p) {
  const double pos = p * double(sorted.size() - 1);
  const size_t lo = size_t(std::floor(pos));
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (pos - double(lo)) * (sorted[hi] - sorted[lo]);
}

struct Truth {
  size_t N = 0, M = 0;
  std::vector<double> score, cost;  // (N, M) of the test rows
};

// Every distinct threshold on the gains: prompts sorted by gain, tied gains move together.
std::vector<CurvePoint> pair_curve(const std::vector<double>& gain, const Truth& t, int strong,
                                   int weak) {
  const size_t N = t.N, M = t.M;
  std::vector<size_t> order(N);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return gain[a] > gain[b]; });
  double total = 0.0, cost = 0.0;
  for (size_t i = 0; i < N; ++i) {
    total += t.score[i * M + size_t(weak)];
    cost += t.cost[i * M + size_t(weak)];
  }
  std::vector<CurvePoint> curve = {{kNaN, cost / double(N), total / double(N), 0.0}};
  size_t k = 0;
  while (k < N) {
    const double g = gain[order[k]];
    while (k < N && gain[order[k]] == g) {
      const size_t i = order[k++];
      total += t.score[i * M + size_t(strong)] - t.score[i * M + size_t(weak)];
      cost += t.cost[i * M + size_t(strong)] - t.cost[i * M + size_t(weak)];
    }
    curve.push_back({g, cost / double(N), total / double(N), double(k) / double(N)});
  }
  return curve;
}

// RouteLLM's APGR: thresholds at the 11 decile edges of the gains (the last one strict).
double apgr_deciles(const std::vector<double>& gain, const Truth& t, int strong, int weak,
                    double weak_q, double strong_q) {
  std::vector<double> sorted = gain;
  std::sort(sorted.begin(), sorted.end());
  std::vector<std::pair<double, double>> points;  // (share, quality)
  for (int e = 0; e <= 10; ++e) {
    const double threshold = quantile_sorted(sorted, e / 10.0);
    double q = 0.0, n_strong = 0.0;
    for (size_t i = 0; i < t.N; ++i) {
      const bool to_strong = e < 10 ? gain[i] >= threshold : gain[i] > threshold;
      q += t.score[i * t.M + size_t(to_strong ? strong : weak)];
      n_strong += to_strong;
    }
    points.emplace_back(n_strong / double(t.N), q / double(t.N));
  }
  std::stable_sort(points.begin(), points.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::vector<double> x, y;
  for (const auto& [share, q] : points) x.push_back(share), y.push_back(q);
  const double span = x.back() - x.front();
  if (span <= 0.0 || strong_q == weak_q) return kNaN;
  return (trapezoid(x, y) - weak_q * span) / ((strong_q - weak_q) * span);
}

// Smallest strong share at which the curve reaches `pgr` (linear between points); NaN if never.
double calls_to_reach(const std::vector<CurvePoint>& curve, double pgr, double weak_q,
                      double strong_q) {
  if (!(strong_q > weak_q)) return kNaN;
  const double target = weak_q + pgr * (strong_q - weak_q);
  for (size_t i = 0; i < curve.size(); ++i) {
    if (curve[i].quality < target) continue;
    if (i == 0) return curve[0].strong_share;
    const CurvePoint& a = curve[i - 1];
    const CurvePoint& b = curve[i];
    const double f = (target - a.quality) / (b.quality - a.quality);
    return a.strong_share + f * (b.strong_share - a.strong_share);
  }
  return kNaN;
}

CurvePoint evaluate_choices(const std::vector<int>& choice, const Truth& t, double param,
                            int strong) {
  CurvePoint p{param, 0, 0, 0};
  for (size_t i = 0; i < t.N; ++i) {
    p.cost += t.cost[i * t.M + size_t(choice[i])] / double(t.N);
    p.quality += t.score[i * t.M + size_t(choice[i])] / double(t.N);
    p.strong_share += (choice[i] == strong) / double(t.N);
  }
  return p;
}

std::vector<double> linspace(double lo, double hi, int n) {
  std::vector<double> v;
  for (int i = 0; i < n; ++i) v.push_back(n == 1 ? lo : lo + (hi - lo) * i / double(n - 1));
  return v;
}

// Fills every metric of one router from its predictions on the test rows.
void score_router(RouterEval& r, const std::vector<double>& q, const std::vector<double>& c,
                  double c_scale, const Truth& t, const EvalResult& res, const EvalConfig& config) {
  const size_t N = t.N, M = t.M;
  const int s = res.strong, w = res.weak;
  const double weak_q = res.model_quality[size_t(w)], strong_q = res.model_quality[size_t(s)];
  std::vector<double> gain(N);
  for (size_t i = 0; i < N; ++i) gain[i] = q[i * M + size_t(s)] - q[i * M + size_t(w)];
  r.pair_curve = pair_curve(gain, t, s, w);
  r.apgr = area_under_pgr(r.pair_curve, weak_q, strong_q);
  r.apgr_deciles = apgr_deciles(gain, t, s, w, weak_q, strong_q);
  r.cpt50 = calls_to_reach(r.pair_curve, 0.5, weak_q, strong_q);
  r.cpt80 = calls_to_reach(r.pair_curve, 0.8, weak_q, strong_q);
  for (double share : config.strong_shares) {
    ThresholdResult th;
    th.target_share = share;
    // Calibrated on the test prompts' predicted gains, never their labels: a user calibrates on
    // their own traffic. (Predictions on the training prompts are in-sample and too confident.)
    th.threshold = calibrate_threshold(gain, share);
    std::vector<int> choice(N);
    for (size_t i = 0; i < N; ++i) choice[i] = choose_threshold(&q[i * M], s, w, th.threshold);
    const CurvePoint p = evaluate_choices(choice, t, th.threshold, s);
    th.test_share = p.strong_share;
    th.pgr = strong_q != weak_q ? (p.quality - weak_q) / (strong_q - weak_q) : kNaN;
    r.thresholds.push_back(th);
  }
  std::vector<int> choice(N);
  for (double lambda : linspace(0.0, 1.0, config.sweep_points)) {
    for (size_t i = 0; i < N; ++i)
      choice[i] = choose_cost_aware(&q[i * M], &c[i * M], M, lambda, c_scale);
    r.cost_aware.push_back(evaluate_choices(choice, t, lambda, s));
  }
  const auto [qlo, qhi] = std::minmax_element(q.begin(), q.end());
  for (double tau : linspace(*qlo, *qhi, config.sweep_points)) {
    for (size_t i = 0; i < N; ++i) choice[i] = choose_cascade(&q[i * M], &c[i * M], M, tau);
    r.cascade.push_back(evaluate_choices(choice, t, tau, s));
  }
  std::vector<CurvePoint> all = r.cost_aware;
  all.insert(all.end(), r.cascade.begin(), r.cascade.end());
  r.hull = nondecreasing_convex_hull(all);
  r.aiq = average_improved_quality(r.hull, res.cost_lo, res.cost_hi);
}

json point_json(const CurvePoint& p) {
  return {{"param", std::isfinite(p.param) ? json(p.param) : json(nullptr)},
          {"cost", p.cost},
          {"quality", p.quality},
          {"strong_share", p.strong_share}};
}

json points_json(const std::vector<CurvePoint>& v) {
  json a = json::array();
  for (const auto& p : v) a.push_back(point_json(p));
  return a;
}

json number(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

}  // namespace

void split_rows(size_t n, double train_fraction, uint64_t seed, std::vector<size_t>& train,
                std::vector<size_t>& test) {
  if (!(train_fraction > 0.0 && train_fraction < 1.0))
    fail("llm eval: train fraction {} must be in (0, 1)", train_fraction);
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(order.begin(), order.end(), rng);
  const size_t n_train = size_t(std::llround(train_fraction * double(n)));
  train.assign(order.begin(), order.begin() + long(n_train));
  test.assign(order.begin() + long(n_train), order.end());
  std::sort(train.begin(), train.end());
  std::sort(test.begin(), test.end());
  if (train.empty() || test.empty())
    fail("llm eval: {} rows split {}/{} leaves an empty side", n, train.size(), test.size());
}

std::vector<CurvePoint> nondecreasing_convex_hull(std::vector<CurvePoint> points) {
  std::sort(points.begin(), points.end(), [](const CurvePoint& a, const CurvePoint& b) {
    return a.cost != b.cost ? a.cost < b.cost : a.quality > b.quality;
  });
  std::vector<CurvePoint> hull;
  for (const CurvePoint& p : points) {
    if (!hull.empty() && p.cost == hull.back().cost) continue;  // keep the best at each cost
    // Upper hull: drop the last point while it lies on or under the chord to p.
    while (hull.size() >= 2) {
      const CurvePoint& a = hull[hull.size() - 2];
      const CurvePoint& b = hull.back();
      const double cross =
          (b.cost - a.cost) * (p.quality - a.quality) - (b.quality - a.quality) * (p.cost - a.cost);
      if (cross < 0) break;
      hull.pop_back();
    }
    hull.push_back(p);
  }
  // Non-decreasing: stop at the best quality; dearer points buy nothing.
  const auto best = std::max_element(
      hull.begin(), hull.end(),
      [](const CurvePoint& a, const CurvePoint& b) { return a.quality < b.quality; });
  if (best != hull.end()) hull.erase(best + 1, hull.end());
  return hull;
}

double average_improved_quality(const std::vector<CurvePoint>& hull, double lo, double hi) {
  if (hull.empty()) return kNaN;
  auto at = [&](double cost) {
    if (cost <= hull.front().cost) return hull.front().quality;
    for (size_t i = 1; i < hull.size(); ++i)
      if (cost <= hull[i].cost) {
        const double f = (cost - hull[i - 1].cost) / (hull[i].cost - hull[i - 1].cost);
        return hull[i - 1].quality + f * (hull[i].quality - hull[i - 1].quality);
      }
    return hull.back().quality;
  };
  if (!(hi > lo)) return at(lo);
  // Exact for a piecewise-linear function: integrate between the breakpoints inside [lo, hi].
  std::vector<double> x = {lo};
  for (const auto& p : hull)
    if (p.cost > lo && p.cost < hi) x.push_back(p.cost);
  x.push_back(hi);
  std::vector<double> y;
  for (double v : x) y.push_back(at(v));
  return trapezoid(x, y) / (hi - lo);
}

double area_under_pgr(const std::vector<CurvePoint>& curve, double weak_q, double strong_q) {
  if (strong_q == weak_q || curve.empty()) return kNaN;
  std::vector<double> x, y;
  for (const auto& p : curve) {
    x.push_back(p.strong_share);
    y.push_back((p.quality - weak_q) / (strong_q - weak_q));
  }
  return trapezoid(x, y);
}

EvalResult evaluate_routers(const RoutingTable& table, const EvalConfig& config,
                            const std::string& dataset) {
  const size_t M = table.models.size();
  if (M < 2) fail("llm eval {}: needs at least two models, got {}", dataset, M);
  EvalResult res;
  res.dataset = dataset;
  res.models = table.models;
  res.skipped_rows = table.issues.size();
  res.config = config;
  split_rows(table.rows(), config.train_fraction, config.seed, res.train, res.test);
  const std::vector<size_t>& train = res.train;
  const std::vector<size_t>& test = res.test;
  res.train_rows = train.size();
  res.test_rows = test.size();

  const auto [default_strong, default_weak] = default_strong_weak(table, train);
  auto resolve = [&](const std::string& name, int fallback) {
    if (name.empty()) return fallback;
    const auto it = std::find(table.models.begin(), table.models.end(), name);
    if (it == table.models.end())
      fail("llm eval {}: model \"{}\" is not in the data (models: {})", dataset, name,
           fmt::join(table.models, ", "));
    return int(it - table.models.begin());
  };
  res.strong = resolve(config.strong, default_strong);
  res.weak = resolve(config.weak, default_weak);
  if (res.strong == res.weak)
    fail("llm eval {}: strong and weak are the same model \"{}\"", dataset,
         table.models[size_t(res.strong)]);

  // Ground truth on the test rows; costs the data lacks come from the training cost model.
  const CostModel cost_model = CostModel::fit(table, train, config.output_tokens);
  res.cost_source = cost_model.source();
  Truth t;
  t.N = test.size();
  t.M = M;
  t.score.resize(t.N * M);
  t.cost.resize(t.N * M);
  std::vector<double> estimate(M);
  for (size_t i = 0; i < t.N; ++i) {
    cost_model.estimate(table.prompts[test[i]], estimate.data());
    for (size_t m = 0; m < M; ++m) {
      t.score[i * M + m] = table.score(test[i], m);
      const double c = table.cost(test[i], m);
      t.cost[i * M + m] = std::isfinite(c) ? c : estimate[m];
    }
  }
  res.model_quality.assign(M, 0.0);
  res.model_cost.assign(M, 0.0);
  std::vector<CurvePoint> singles;
  for (size_t m = 0; m < M; ++m) {
    for (size_t i = 0; i < t.N; ++i) {
      res.model_quality[m] += t.score[i * M + m] / double(t.N);
      res.model_cost[m] += t.cost[i * M + m] / double(t.N);
    }
    singles.push_back({double(m), res.model_cost[m], res.model_quality[m], 0.0});
  }
  res.cost_lo = *std::min_element(res.model_cost.begin(), res.model_cost.end());
  res.cost_hi = *std::max_element(res.model_cost.begin(), res.model_cost.end());
  res.zero_hull = nondecreasing_convex_hull(singles);
  res.zero_aiq = average_improved_quality(res.zero_hull, res.cost_lo, res.cost_hi);

  // The oracle knows the test scores and costs.
  {
    RouterEval r;
    r.name = "oracle";
    r.kind = "oracle";
    score_router(r, t.score, t.cost, std::max(res.cost_hi, 1e-300), t, res, config);
    res.routers.push_back(std::move(r));
  }
  for (const RouterSpec& spec : config.routers) {
    RouterEval r;
    r.name = spec.name;
    r.kind = spec.quality;
    const auto t0 = std::chrono::steady_clock::now();
    const PromptRouter router = train_router(spec, table, train);
    const auto t1 = std::chrono::steady_clock::now();
    r.fit_seconds = std::chrono::duration<double>(t1 - t0).count();
    r.params = router.quality->params();
    std::vector<double> q(t.N * M), c(t.N * M);
    for (size_t i = 0; i < t.N; ++i) router.predict(table.prompts[test[i]], &q[i * M], &c[i * M]);
    r.route_us =
        std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t1).count() /
        double(t.N);
    score_router(r, q, c, router.cost_scale, t, res, config);
    res.routers.push_back(std::move(r));
  }
  return res;
}

json eval_to_json(const EvalResult& res) {
  json routers = json::array();
  for (const auto& r : res.routers) {
    json th = json::array();
    for (const auto& x : r.thresholds)
      th.push_back({{"target_share", x.target_share},
                    {"threshold", number(x.threshold)},
                    {"test_share", x.test_share},
                    {"pgr", number(x.pgr)}});
    routers.push_back({{"name", r.name},
                       {"kind", r.kind},
                       {"params", r.params},
                       {"apgr", number(r.apgr)},
                       {"apgr_deciles", number(r.apgr_deciles)},
                       {"cpt50", number(r.cpt50)},
                       {"cpt80", number(r.cpt80)},
                       {"thresholds", th},
                       {"aiq", number(r.aiq)},
                       {"fit_seconds", r.fit_seconds},
                       {"route_us_per_prompt", r.route_us},
                       {"pair_curve", points_json(r.pair_curve)},
                       {"cost_aware", points_json(r.cost_aware)},
                       {"cascade", points_json(r.cascade)},
                       {"hull", points_json(r.hull)}});
  }
  json specs = json::array();
  for (const auto& s : res.config.routers)
    specs.push_back(
        {{"name", s.name},
         {"quality", s.quality},
         {"params", s.quality_params},
         {"features", s.embeddings_path.empty() ? s.features.to_json()
                                                : json{{"embeddings", s.embeddings_path}}}});
  return {{"dataset", res.dataset},
          {"models", res.models},
          {"train_rows", res.train_rows},
          {"test_rows", res.test_rows},
          {"skipped_rows", res.skipped_rows},
          {"split", {{"train_fraction", res.config.train_fraction}, {"seed", res.config.seed}}},
          {"strong", res.models[size_t(res.strong)]},
          {"weak", res.models[size_t(res.weak)]},
          {"cost_source", res.cost_source},
          {"model_quality", res.model_quality},
          {"model_cost", res.model_cost},
          {"aiq_cost_range", {res.cost_lo, res.cost_hi}},
          {"zero_router", {{"aiq", number(res.zero_aiq)}, {"hull", points_json(res.zero_hull)}}},
          {"router_specs", specs},
          {"routers", routers}};
}

}  // namespace switchyard
