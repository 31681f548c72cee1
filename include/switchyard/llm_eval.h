// Evaluation of prompt routers on a seeded train/test split (docs/llm-routing.md has the
// definitions): two-model PGR, APGR and CPT; many-model cost–quality points, their
// non-decreasing convex hull and AIQ.
#pragma once

#include <switchyard/llm_data.h>
#include <switchyard/llm_router.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard {

struct EvalConfig {
  std::vector<RouterSpec> routers;  // trained on the training split; random/oracle/zero added
  double train_fraction = 0.5;
  uint64_t seed = 0;         // the split's seed
  std::string strong, weak;  // the two-model pair; "" = best / worst training mean
  std::vector<double> strong_shares = {0.2, 0.5, 0.8};  // thresholds calibrated on train prompts
  int sweep_points = 41;                                // λ and τ values per cost–quality curve
  double output_tokens = 256;                           // answer length for price-list costs
};

struct CurvePoint {
  double param = 0;         // threshold, λ or τ
  double cost = 0;          // mean cost per prompt on the test split
  double quality = 0;       // mean score on the test split
  double strong_share = 0;  // share of test prompts sent to the strong model (two-model)
};

struct ThresholdResult {
  double target_share = 0, threshold = 0, test_share = 0, pgr = 0;
};

struct RouterEval {
  std::string name;                                  // "knn", "oracle", "random", "zero", ...
  std::string kind;                                  // quality model kind, or "oracle"
  nlohmann::json params = nlohmann::json::object();  // after training (e.g. the k chosen)
  // Two-model: the full routing curve, every distinct threshold on the test gains.
  std::vector<CurvePoint> pair_curve;
  double apgr = 0;              // area under PGR over the strong share, exact curve
  double apgr_deciles = 0;      // RouteLLM's estimate: thresholds at the gains' deciles
  double cpt50 = 0, cpt80 = 0;  // strong share needed for 50% / 80% PGR (NaN if never)
  std::vector<ThresholdResult> thresholds;
  // Many-model: cost–quality points of the cost-aware rule (λ sweep) and of the cascade (τ).
  std::vector<CurvePoint> cost_aware, cascade, hull;
  double aiq = 0;          // over the hull of both rules' points
  double fit_seconds = 0;  // training time
  double route_us = 0;     // featurise + predict, microseconds per prompt (mean)
};

struct EvalResult {
  std::string dataset;
  std::vector<std::string> models;
  size_t train_rows = 0, test_rows = 0, skipped_rows = 0;
  std::vector<size_t> train, test;  // the split: row indices into the table
  int strong = 0, weak = 0;
  std::string cost_source;
  std::vector<double> model_quality, model_cost;  // (M) on the test split
  double cost_lo = 0, cost_hi = 0;                // AIQ's cost range (cheapest..dearest model)
  std::vector<CurvePoint> zero_hull;              // convex mixtures of the single models
  double zero_aiq = 0;
  std::vector<RouterEval> routers;
  EvalConfig config;
};

EvalResult evaluate_routers(const RoutingTable& table, const EvalConfig& config,
                            const std::string& dataset);

// Seeded split: a permutation of the rows, the first round(fraction·n) for training.
void split_rows(size_t n, double train_fraction, uint64_t seed, std::vector<size_t>& train,
                std::vector<size_t>& test);

// The upper convex hull of the points, cut where quality stops increasing (sorted by cost).
std::vector<CurvePoint> nondecreasing_convex_hull(std::vector<CurvePoint> points);
// Mean of the hull's quality over [lo, hi] (linear between points, flat beyond the ends).
double average_improved_quality(const std::vector<CurvePoint>& hull, double lo, double hi);
// Area under the PGR curve over the strong share in [0, 1] (trapezoids; curve sorted by share).
double area_under_pgr(const std::vector<CurvePoint>& curve, double weak_q, double strong_q);

nlohmann::json eval_to_json(const EvalResult& result);
std::string eval_text_table(const EvalResult& result);
std::string eval_html(const EvalResult& result);

}  // namespace switchyard
