// Model-level routing: choose which LLM answers a prompt, trading predicted quality against cost.
// A PromptRouter = a featurizer (hashed n-gram TF-IDF, or user embeddings) + a quality model
// (predicts each model's score for a prompt) + a cost model, with the decision rules of
// docs/llm-routing.md on top: CARROT's cost-aware argmax, two-model threshold, cascade, and
// batch routing under per-model capacity.
#pragma once

#include <switchyard/llm_data.h>
#include <switchyard/text_features.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace switchyard {

// Predicts each model's score for one prompt from its feature vector.
class QualityModel {
 public:
  virtual ~QualityModel() = default;
  virtual std::string kind() const = 0;
  // X: one feature vector per training prompt; Y: (n, M) row-major scores.
  virtual void fit(const std::vector<SparseVector>& X, const std::vector<double>& Y, size_t M,
                   uint64_t seed) = 0;
  // out: M predicted scores.
  virtual void predict(const SparseVector& x, double* out) const = 0;
  virtual size_t num_models() const = 0;  // M, after fit or load
  // Hyper-parameters (JSON) and learned tensors; load() receives what save() wrote.
  virtual nlohmann::json params() const = 0;
  virtual void save(SafetensorsFile& file) const = 0;
  virtual void load(const SafetensorsFile& file, const std::string& source) = 0;
};

// Quality models by kind: "random", "best_single", "knn", "logistic", "mf". `params` holds the
// kind's hyper-parameters (unknown keys are errors naming `context`).
std::unique_ptr<QualityModel> make_quality_model(const std::string& kind,
                                                 const nlohmann::json& params,
                                                 const std::string& context);
const std::vector<std::string>& quality_model_kinds();

// Dollars for one call from per-million-token prices: about four bytes of English per input token
// (at least one), plus `output_tokens` of answer. Shared by CostModel and the gateway.
double priced_call_cost(size_t prompt_bytes, double output_tokens, double input_price_per_mtok,
                        double output_price_per_mtok);

// Estimated dollars (or the data's cost unit) per call of each model for a prompt.
struct CostModel {
  // Per-model price in dollars per million tokens, when the data has a price list.
  std::vector<double> input_price_per_mtok, output_price_per_mtok;
  double output_tokens = 256;  // assumed answer length when costs come from prices
  // Per-model mean cost per call from the training rows, when the data has per-row costs.
  std::vector<double> mean_cost;
  // Used when neither is known: every call costs the model's index + 1 in the order of
  // increasing mean training score (cheap = weak). Only orders the models.
  std::vector<double> rank_cost;

  static CostModel fit(const RoutingTable& table, const std::vector<size_t>& rows,
                       double output_tokens);
  // Estimate for one prompt, into out (M).
  void estimate(std::string_view prompt, double* out) const;
  std::string source() const;  // "prices", "mean_cost" or "rank"
  nlohmann::json to_json() const;
  static CostModel from_json(const nlohmann::json& j, const std::string& source);
};

// A trained router: what `switchyard llm train` writes and `llm eval` / `llm serve` load.
struct PromptRouter {
  std::string name;                 // e.g. "knn"
  std::vector<std::string> models;  // M, the table's model names
  std::unique_ptr<Featurizer> featurizer;
  std::unique_ptr<QualityModel> quality;
  CostModel cost;
  double cost_scale = 1.0;     // largest per-model mean estimated cost over the training prompts
  int strong = -1, weak = -1;  // the two-model pair (default: best / worst mean training score)

  // Predicted score (M) and estimated cost (M) of every model for a prompt.
  void predict(std::string_view prompt, double* quality_out, double* cost_out) const;
  void predict(const SparseVector& x, std::string_view prompt, double* quality_out,
               double* cost_out) const;

  // Saves router.json and router.safetensors into folder `dir` (atomically, creating `dir`).
  void save(const std::string& dir) const;
  static PromptRouter load(const std::string& dir);
};

// Training options of one router.
struct RouterSpec {
  std::string name;     // label in reports and the gateway ("knn", "knn-emb", ...)
  std::string quality;  // quality model kind
  nlohmann::json quality_params = nlohmann::json::object();
  FeaturizerConfig features;
  std::string embeddings_path;  // when set, features are these embeddings, not n-grams
  double output_tokens = 256;
  uint64_t seed = 0;
};
PromptRouter train_router(const RouterSpec& spec, const RoutingTable& table,
                          const std::vector<size_t>& rows);

// The default two-model pair on these rows: {strong, weak} = the best and the worst mean score
// (ties: the lower index; when all models score the same, weak is the first other model).
std::pair<int, int> default_strong_weak(const RoutingTable& table, const std::vector<size_t>& rows);

// ---- Decision rules. Each takes predicted qualities q (M) and costs c (M) of one prompt. ----

// CARROT: argmax_m (1-λ) q_m - λ c_m / c_scale (ties -> lower index). λ in [0, 1].
int choose_cost_aware(const double* q, const double* c, size_t M, double lambda, double c_scale);
// The utility that rule maximises for one model.
inline double cost_aware_utility(double q, double c, double lambda, double c_scale) {
  return (1.0 - lambda) * q - lambda * c / c_scale;
}
// Two-model: strong when q_strong - q_weak >= threshold.
int choose_threshold(const double* q, int strong, int weak, double threshold);
// Cascade: models by increasing cost; the first whose predicted score is >= tau, else the
// most expensive.
int choose_cascade(const double* q, const double* c, size_t M, double tau);
// Threshold that sends `strong_share` of `gains` (q_strong - q_weak on the user's own prompts)
// to the strong model: the (1 - share) quantile.
double calibrate_threshold(std::vector<double> gains, double strong_share);

// Batch routing under per-model capacity: assigns n prompts to models, model m taking at most
// capacity[m] (Σ capacity >= n), maximising Σ (1-λ) q - λ c / c_scale with the BASE auction.
// q, c: (n, M) row-major. Returns the model of each prompt. Throws when Σ capacity < n.
std::vector<int32_t> route_batch_with_capacity(const std::vector<double>& q,
                                               const std::vector<double>& c, size_t n, size_t M,
                                               const std::vector<int64_t>& capacity, double lambda,
                                               double c_scale);

}  // namespace switchyard
