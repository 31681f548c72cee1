// Trained prompt routers: training, prediction, cost estimates, save/load and the decision rules.
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/llm_router.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <numeric>
#include <tuple>

#include "routers/router_common.h"

namespace switchyard {
namespace {

using nlohmann::json;
constexpr const char* kFormat = "switchyard-llm-router";
constexpr int kVersion = 1;

bool all_finite(const std::vector<double>& v) {
  return !v.empty() && std::all_of(v.begin(), v.end(), [](double x) { return std::isfinite(x); });
}

std::vector<double> mean_scores(const RoutingTable& table, const std::vector<size_t>& rows) {
  const size_t M = table.models.size();
  std::vector<double> mean(M, 0.0);
  for (size_t r : rows)
    for (size_t m = 0; m < M; ++m) mean[m] += table.score(r, m) / double(rows.size());
  return mean;
}

// A list of non-negative numbers (its length is checked against the models by PromptRouter::load).
std::vector<double> number_list(const json& v, const char* key, const std::string& src) {
  if (v.is_null()) return {};
  if (!v.is_array()) fail("{}: cost.{} must be a list of numbers, got {}", src, key, v.dump());
  std::vector<double> out;
  for (const auto& x : v) {
    if (!x.is_number() || !std::isfinite(x.get<double>()) || x.get<double>() < 0)
      fail("{}: cost.{} holds {}, expected non-negative numbers", src, key, x.dump());
    out.push_back(x.get<double>());
  }
  return out;
}

}  // namespace

CostModel CostModel::fit(const RoutingTable& table, const std::vector<size_t>& rows,
                         double output_tokens) {
  const size_t M = table.models.size();
  CostModel c;
  c.output_tokens = output_tokens;
  if (all_finite(table.input_price_per_mtok) && all_finite(table.output_price_per_mtok)) {
    c.input_price_per_mtok = table.input_price_per_mtok;
    c.output_price_per_mtok = table.output_price_per_mtok;
    return c;
  }
  std::vector<double> sum(M, 0.0), count(M, 0.0);
  for (size_t r : rows)
    for (size_t m = 0; m < M; ++m)
      if (std::isfinite(table.cost(r, m))) {
        sum[m] += table.cost(r, m);
        count[m] += 1;
      }
  if (std::all_of(count.begin(), count.end(), [](double n) { return n > 0; })) {
    for (size_t m = 0; m < M; ++m) c.mean_cost.push_back(sum[m] / count[m]);
    return c;
  }
  const std::vector<double> mean = mean_scores(table, rows);
  std::vector<size_t> order(M);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return mean[a] < mean[b]; });
  c.rank_cost.assign(M, 0.0);
  for (size_t i = 0; i < M; ++i) c.rank_cost[order[i]] = double(i + 1);
  return c;
}

double priced_call_cost(size_t prompt_bytes, double output_tokens, double input_price_per_mtok,
                        double output_price_per_mtok) {
  const double in_tokens = std::max(1.0, std::ceil(double(prompt_bytes) / 4.0));
  return (in_tokens * input_price_per_mtok + output_tokens * output_price_per_mtok) / 1e6;
}

void CostModel::estimate(std::string_view prompt, double* out) const {
  if (!input_price_per_mtok.empty()) {
    for (size_t m = 0; m < input_price_per_mtok.size(); ++m)
      out[m] = priced_call_cost(prompt.size(), output_tokens, input_price_per_mtok[m],
                                output_price_per_mtok[m]);
    return;
  }
  const std::vector<double>& per_call = mean_cost.empty() ? rank_cost : mean_cost;
  std::copy(per_call.begin(), per_call.end(), out);
}

std::string CostModel::source() const {
  if (!input_price_per_mtok.empty()) return "prices";
  return mean_cost.empty() ? "rank" : "mean_cost";
}

json CostModel::to_json() const {
  json j = {{"source", source()}};
  if (!input_price_per_mtok.empty()) {
    j["input_price_per_mtok"] = input_price_per_mtok;
    j["output_price_per_mtok"] = output_price_per_mtok;
    j["output_tokens"] = output_tokens;
  } else if (!mean_cost.empty()) {
    j["mean_cost"] = mean_cost;
  } else {
    j["rank_cost"] = rank_cost;
  }
  return j;
}

CostModel CostModel::from_json(const json& j, const std::string& source) {
  if (!j.is_object()) fail("{}: cost must be an object", source);
  ParamReader r(j, source + ": cost");
  const std::string kind = r.get_choice("source", "", {"prices", "mean_cost", "rank"});
  CostModel c;
  auto list = [&](const char* key) { return number_list(r.get_json(key, json()), key, source); };
  if (kind == "prices") {
    c.input_price_per_mtok = list("input_price_per_mtok");
    c.output_price_per_mtok = list("output_price_per_mtok");
    c.output_tokens = r.get_double("output_tokens", 256, 0, 1e7);
  } else if (kind == "mean_cost") {
    c.mean_cost = list("mean_cost");
  } else {
    c.rank_cost = list("rank_cost");
  }
  r.finish();
  return c;
}

void PromptRouter::predict(std::string_view prompt, double* quality_out, double* cost_out) const {
  predict(featurizer->featurize(prompt), prompt, quality_out, cost_out);
}

void PromptRouter::predict(const SparseVector& x, std::string_view prompt, double* quality_out,
                           double* cost_out) const {
  quality->predict(x, quality_out);
  cost.estimate(prompt, cost_out);
}

void PromptRouter::save(const std::string& dir) const {
  std::filesystem::create_directories(dir);
  SafetensorsFile file;
  featurizer->save(file);
  quality->save(file);
  file.metadata["format"] = kFormat;
  write_safetensors((std::filesystem::path(dir) / "router.safetensors").string(), file);
  const json j = {{"format", kFormat},
                  {"version", kVersion},
                  {"name", name},
                  {"models", models},
                  {"strong", models.at(size_t(strong))},
                  {"weak", models.at(size_t(weak))},
                  {"features", featurizer->params()},
                  {"quality", {{"kind", quality->kind()}, {"params", quality->params()}}},
                  {"cost", cost.to_json()},
                  {"cost_scale", cost_scale},
                  {"tensors", "router.safetensors"}};
  write_file_atomic((std::filesystem::path(dir) / "router.json").string(), j.dump(2) + "\n");
}

PromptRouter PromptRouter::load(const std::string& dir) {
  const std::string path = (std::filesystem::path(dir) / "router.json").string();
  if (!std::filesystem::exists(path))
    fail("{}: no router.json here (a router folder from `switchyard llm train`)", dir);
  const json j = parse_json_strict(read_file_text(path), path);
  if (!j.is_object()) fail("{}: expected a JSON object", path);
  ParamReader r(j, path);
  if (r.get_string("format", "") != kFormat) fail("{}: format must be \"{}\"", path, kFormat);
  const int64_t version = r.get_int("version", 0, 0, 1000);
  if (version != kVersion)
    fail("{}: version {} is not supported (expected {})", path, version, kVersion);
  PromptRouter router;
  router.name = r.get_string("name", "");
  router.models = r.get_string_list("models");
  if (router.models.size() < 2) fail("{}: models must list at least two models", path);
  auto model_index = [&](const char* key) {
    const std::string m = r.get_string(key, "");
    const auto it = std::find(router.models.begin(), router.models.end(), m);
    if (it == router.models.end()) fail("{}: {} = \"{}\" is not one of models", path, key, m);
    return int(it - router.models.begin());
  };
  router.strong = model_index("strong");
  router.weak = model_index("weak");
  const std::string tensors_name = r.get_string("tensors", "router.safetensors");
  if (tensors_name.find('/') != std::string::npos || tensors_name.find("..") != std::string::npos)
    fail("{}: tensors = \"{}\" must be a file name inside the router folder", path, tensors_name);
  const std::string tensors_path = (std::filesystem::path(dir) / tensors_name).string();
  const SafetensorsFile file = read_safetensors(tensors_path);

  const json features = r.get_object("features", json());
  if (!features.is_object() || !features.contains("kind"))
    fail("{}: features must be an object with a kind", path);
  const std::string kind = features["kind"].is_string() ? features["kind"].get<std::string>() : "";
  if (kind == "ngram") {
    router.featurizer = NgramFeaturizer::load(features, file, tensors_path);
  } else if (kind == "embedding") {
    router.featurizer = EmbeddingFeaturizer::load(features, file, tensors_path);
  } else {
    fail("{}: features.kind = {} (expected \"ngram\" or \"embedding\")", path,
         features["kind"].dump());
  }

  const json quality = r.get_object("quality", json());
  if (!quality.is_object() || !quality.contains("kind") || !quality["kind"].is_string())
    fail("{}: quality must be an object with a kind", path);
  ParamReader q(quality, path + ": quality");
  const std::string qkind = q.get_string("kind", "");
  router.quality =
      make_quality_model(qkind, q.get_object("params", json::object()), path + ": quality.params");
  q.finish();
  router.quality->load(file, tensors_path);
  if (router.quality->num_models() != router.models.size())
    fail("{}: the {} model predicts {} models, router.json lists {}", tensors_path, qkind,
         router.quality->num_models(), router.models.size());

  router.cost = CostModel::from_json(r.get_object("cost", json()), path);
  for (const auto* list : {&router.cost.input_price_per_mtok, &router.cost.output_price_per_mtok,
                           &router.cost.mean_cost, &router.cost.rank_cost})
    if (!list->empty() && list->size() != router.models.size())
      fail("{}: cost lists must have one value per model ({})", path, router.models.size());
  router.cost_scale = r.get_double("cost_scale", 1.0, 1e-300, 1e300);
  r.finish();
  return router;
}

PromptRouter train_router(const RouterSpec& spec, const RoutingTable& table,
                          const std::vector<size_t>& rows) {
  if (rows.empty()) fail("llm train: no training rows");
  const size_t M = table.models.size();
  PromptRouter router;
  router.name = spec.name;
  router.models = table.models;
  std::vector<std::string> prompts;
  prompts.reserve(rows.size());
  for (size_t r : rows) prompts.push_back(table.prompts[r]);
  if (!spec.embeddings_path.empty()) {
    router.featurizer = EmbeddingFeaturizer::read(spec.embeddings_path);
  } else {
    auto ngram = std::make_unique<NgramFeaturizer>(spec.features);
    ngram->fit(prompts);
    router.featurizer = std::move(ngram);
  }
  std::vector<SparseVector> X(rows.size());
#pragma omp parallel for schedule(dynamic, 64)
  for (size_t i = 0; i < rows.size(); ++i) X[i] = router.featurizer->featurize(prompts[i]);
  std::vector<double> Y(rows.size() * M);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t m = 0; m < M; ++m) Y[i * M + m] = table.score(rows[i], m);
  router.quality = make_quality_model(spec.quality, spec.quality_params, "router " + spec.name);
  router.quality->fit(X, Y, M, spec.seed);
  router.cost = CostModel::fit(table, rows, spec.output_tokens);

  std::tie(router.strong, router.weak) = default_strong_weak(table, rows);
  std::vector<double> c(M), scale(M, 0.0);
  for (const auto& p : prompts) {
    router.cost.estimate(p, c.data());
    for (size_t m = 0; m < M; ++m) scale[m] += c[m] / double(prompts.size());
  }
  router.cost_scale = std::max(*std::max_element(scale.begin(), scale.end()), 1e-300);
  return router;
}

std::pair<int, int> default_strong_weak(const RoutingTable& table,
                                        const std::vector<size_t>& rows) {
  const std::vector<double> mean = mean_scores(table, rows);
  const int strong = int(std::max_element(mean.begin(), mean.end()) - mean.begin());
  int weak = int(std::min_element(mean.begin(), mean.end()) - mean.begin());
  if (strong == weak) weak = strong == 0 ? 1 : 0;
  return {strong, weak};
}

int choose_cost_aware(const double* q, const double* c, size_t M, double lambda, double c_scale) {
  int best = 0;
  double best_u = -std::numeric_limits<double>::infinity();
  for (size_t m = 0; m < M; ++m) {
    const double u = cost_aware_utility(q[m], c[m], lambda, c_scale);
    if (u > best_u) {
      best_u = u;
      best = int(m);
    }
  }
  return best;
}

int choose_threshold(const double* q, int strong, int weak, double threshold) {
  return q[strong] - q[weak] >= threshold ? strong : weak;
}

int choose_cascade(const double* q, const double* c, size_t M, double tau) {
  std::vector<size_t> order(M);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return c[a] < c[b]; });
  for (size_t m : order)
    if (q[m] >= tau) return int(m);
  return int(order.back());
}

double calibrate_threshold(std::vector<double> gains, double strong_share) {
  if (gains.empty()) fail("calibrate_threshold: no prompts to calibrate on");
  if (!(strong_share >= 0.0 && strong_share <= 1.0))
    fail("calibrate_threshold: strong share {} outside [0, 1]", strong_share);
  std::sort(gains.begin(), gains.end(), std::greater<double>());
  // Routing `gain >= threshold` to the strong model sends the top `count` prompts there.
  const size_t count = size_t(std::llround(strong_share * double(gains.size())));
  if (count == 0) return std::nextafter(gains.front(), std::numeric_limits<double>::infinity());
  return gains[count - 1];
}

std::vector<int32_t> route_batch_with_capacity(const std::vector<double>& q,
                                               const std::vector<double>& c, size_t n, size_t M,
                                               const std::vector<int64_t>& capacity, double lambda,
                                               double c_scale) {
  if (q.size() != n * M || c.size() != n * M)
    fail("route_batch_with_capacity: q and c must be (n = {}, M = {}), got {} and {} values", n, M,
         q.size(), c.size());
  if (capacity.size() != M)
    fail("route_batch_with_capacity: {} capacities for {} models", capacity.size(), M);
  std::vector<int64_t> cap(M);
  int64_t total = 0;
  for (size_t m = 0; m < M; ++m) {
    if (capacity[m] < 0) fail("route_batch_with_capacity: capacity[{}] = {} < 0", m, capacity[m]);
    cap[m] = std::min<int64_t>(capacity[m], int64_t(n));
    total += cap[m];
  }
  if (total < int64_t(n))
    fail("route_batch_with_capacity: capacities sum to {} < {} prompts", total, n);
  if (n == 0) return {};
  // When no capacity binds, each prompt's own best model is the optimum.
  std::vector<int32_t> best(n);
  std::vector<int64_t> load(M, 0);
  bool fits = true;
  for (size_t i = 0; i < n; ++i) {
    best[i] = int32_t(choose_cost_aware(&q[i * M], &c[i * M], M, lambda, c_scale));
    fits = fits && ++load[size_t(best[i])] <= cap[size_t(best[i])];
  }
  if (fits) return best;
  std::vector<double> A(size_t(total) * M, 0.0);  // (total, M) utilities; padding rows stay 0
  for (size_t i = 0; i < n; ++i)
    for (size_t m = 0; m < M; ++m)
      A[i * M + m] = cost_aware_utility(q[i * M + m], c[i * M + m], lambda, c_scale);
  // The auction fills every model exactly, so padding rows of zero utility absorb the slack.
  // ε-scaling down to range·1e-3/rows keeps the total within 1e-3·range of the optimum.
  routers::AuctionOptions options;
  options.scaling = true;
  options.eps_divisor = 1e3 * double(total);
  options.min_eps = 1e-12;
  options.max_rounds = 1'000'000;
  std::vector<int32_t> owner = routers::balanced_assignment(A, total, int64_t(M), cap, options);
  owner.resize(n);
  return owner;
}

}  // namespace switchyard
