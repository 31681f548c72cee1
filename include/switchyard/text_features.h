// Prompt features without a model download: hashed word and character n-grams weighted by
// TF-IDF, as L2-normalised sparse vectors; or user-supplied embeddings read from a file.
#pragma once

#include <switchyard/safetensors.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace switchyard {

// Sorted by index, no duplicates, L2 norm 1 (or empty).
struct SparseVector {
  std::vector<uint32_t> index;
  std::vector<float> value;
  size_t nnz() const { return index.size(); }
};

// Dot product of two sorted sparse vectors.
double sparse_dot(const SparseVector& a, const SparseVector& b);

struct FeaturizerConfig {
  int word_min = 1, word_max = 2;  // word n-grams (0 0 = none); words are runs of letters/digits
  // Character n-grams within words padded by spaces (0 0 = none). Off by default: on RouteLLM's
  // data they cost 8x the routing latency for no APGR gain (docs/llm-routing.md).
  int char_min = 0, char_max = 0;
  int hash_bits = 20;  // feature space 2^hash_bits
  bool lowercase = true;
  bool sublinear_tf = true;  // tf -> 1 + log(tf)
  nlohmann::json to_json() const;
  static FeaturizerConfig from_json(const nlohmann::json& j, const std::string& context);
};

class Featurizer {
 public:
  virtual ~Featurizer() = default;
  virtual std::string kind() const = 0;  // "ngram" or "embedding"
  virtual SparseVector featurize(std::string_view prompt) const = 0;
  virtual size_t dimension() const = 0;
  virtual nlohmann::json params() const = 0;
  virtual void save(SafetensorsFile& file) const = 0;
};

class NgramFeaturizer final : public Featurizer {
 public:
  explicit NgramFeaturizer(FeaturizerConfig config);
  // Learns the inverse document frequencies: idf = ln((1 + n) / (1 + df)) + 1 (scikit-learn's
  // smooth idf). Features never seen in training get the largest idf.
  void fit(const std::vector<std::string>& prompts);
  // Raw term counts of the hashed n-grams, sorted by index (before TF-IDF).
  SparseVector counts(std::string_view prompt) const;
  std::string kind() const override { return "ngram"; }
  SparseVector featurize(std::string_view prompt) const override;
  size_t dimension() const override { return size_t(1) << config_.hash_bits; }
  nlohmann::json params() const override;
  void save(SafetensorsFile& file) const override;
  static std::unique_ptr<NgramFeaturizer> load(const nlohmann::json& params,
                                               const SafetensorsFile& file,
                                               const std::string& source);
  const FeaturizerConfig& config() const { return config_; }

 private:
  FeaturizerConfig config_;
  std::vector<float> idf_;  // (2^hash_bits); empty before fit
};

// Embeddings from a JSON Lines file: {"prompt": "...", "embedding": [float, ...]} per line, all of
// one dimension, finite. Lookup is by exact prompt text; an unknown prompt is an error.
class EmbeddingFeaturizer final : public Featurizer {
 public:
  static std::unique_ptr<EmbeddingFeaturizer> read(const std::string& path);
  std::string kind() const override { return "embedding"; }
  SparseVector featurize(std::string_view prompt) const override;
  size_t dimension() const override { return dim_; }
  nlohmann::json params() const override;
  void save(SafetensorsFile& file) const override;
  static std::unique_ptr<EmbeddingFeaturizer> load(const nlohmann::json& params,
                                                   const SafetensorsFile& file,
                                                   const std::string& source);
  bool contains(std::string_view prompt) const;

 private:
  std::string path_;
  size_t dim_ = 0;
  std::unordered_map<std::string, size_t> row_of_;
  std::vector<std::string> prompts_;
  std::vector<float> vectors_;  // (rows, dim), L2-normalised
};

}  // namespace switchyard
