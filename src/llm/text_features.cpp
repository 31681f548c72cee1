// Hashed n-gram TF-IDF features and user-supplied embeddings (include/switchyard/text_features.h).
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/text_features.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <limits>

namespace switchyard {
namespace {

// FNV-1a, 64 bits; `kind` separates word from character n-grams of the same bytes.
uint64_t fnv1a(std::string_view bytes, uint64_t kind) {
  uint64_t h = 1469598103934665603ull ^ (kind * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

// Letters, digits and every byte of a multi-byte UTF-8 character belong to words.
bool is_word_byte(unsigned char c) {
  return std::isalnum(c) || c >= 0x80;
}

void normalise(SparseVector& v) {
  double norm2 = 0.0;
  for (float x : v.value) norm2 += double(x) * x;
  if (norm2 <= 0.0) return;
  const float inv = float(1.0 / std::sqrt(norm2));
  for (float& x : v.value) x *= inv;
}

// Sorts (index, value) pairs by index and sums duplicates.
SparseVector from_pairs(std::vector<std::pair<uint32_t, float>>& pairs) {
  std::sort(pairs.begin(), pairs.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  SparseVector v;
  for (const auto& [i, x] : pairs) {
    if (!v.index.empty() && v.index.back() == i) {
      v.value.back() += x;
    } else {
      v.index.push_back(i);
      v.value.push_back(x);
    }
  }
  return v;
}

}  // namespace

double sparse_dot(const SparseVector& a, const SparseVector& b) {
  double sum = 0.0;
  size_t i = 0, j = 0;
  while (i < a.index.size() && j < b.index.size()) {
    if (a.index[i] < b.index[j]) {
      ++i;
    } else if (a.index[i] > b.index[j]) {
      ++j;
    } else {
      sum += double(a.value[i++]) * b.value[j++];
    }
  }
  return sum;
}

nlohmann::json FeaturizerConfig::to_json() const {
  return {{"word_ngrams", {word_min, word_max}},
          {"char_ngrams", {char_min, char_max}},
          {"hash_bits", hash_bits},
          {"lowercase", lowercase},
          {"sublinear_tf", sublinear_tf}};
}

FeaturizerConfig FeaturizerConfig::from_json(const nlohmann::json& j, const std::string& context) {
  FeaturizerConfig c;
  if (!j.is_object()) fail("{}: features must be a JSON object, got {}", context, j.dump());
  ParamReader r(j, context);
  auto range = [&](const char* key, int& lo, int& hi) {
    if (!r.has(key)) return;
    const nlohmann::json v = r.get_json(key, nlohmann::json());
    if (!v.is_array() || v.size() != 2 || !v[0].is_number_integer() || !v[1].is_number_integer())
      fail("{}: {} must be [min, max] integers, got {}", context, key, v.dump());
    lo = v[0].get<int>();
    hi = v[1].get<int>();
    if (lo < 0 || hi < lo || hi > 8 || (lo == 0 && hi != 0))
      fail("{}: {} = {} must satisfy 1 <= min <= max <= 8 (or [0, 0] for none)", context, key,
           v.dump());
  };
  range("word_ngrams", c.word_min, c.word_max);
  range("char_ngrams", c.char_min, c.char_max);
  c.hash_bits = int(r.get_int("hash_bits", c.hash_bits, 8, 24));
  c.lowercase = r.get_bool("lowercase", c.lowercase);
  c.sublinear_tf = r.get_bool("sublinear_tf", c.sublinear_tf);
  r.finish();
  if (c.word_max == 0 && c.char_max == 0)
    fail("{}: word_ngrams and char_ngrams are both [0, 0]: no features", context);
  return c;
}

NgramFeaturizer::NgramFeaturizer(FeaturizerConfig config) : config_(config) {}

SparseVector NgramFeaturizer::counts(std::string_view prompt) const {
  std::string text(prompt);
  if (config_.lowercase)
    for (char& ch : text) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  std::vector<std::string_view> words;
  for (size_t i = 0; i < text.size();) {
    if (!is_word_byte(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && is_word_byte(static_cast<unsigned char>(text[j]))) ++j;
    words.emplace_back(text.data() + i, j - i);
    i = j;
  }
  const uint32_t mask = (uint32_t(1) << config_.hash_bits) - 1;
  std::vector<std::pair<uint32_t, float>> pairs;
  std::string gram;
  for (int n = config_.word_min; n >= 1 && n <= config_.word_max; ++n) {
    for (size_t w = 0; w + size_t(n) <= words.size(); ++w) {
      gram.assign(words[w]);
      for (int k = 1; k < n; ++k) {
        gram += ' ';
        gram += words[w + size_t(k)];
      }
      pairs.emplace_back(uint32_t(fnv1a(gram, uint64_t(n))) & mask, 1.0f);
    }
  }
  if (config_.char_max > 0) {
    for (const std::string_view word : words) {
      gram.assign(" ");
      gram += word;
      gram += ' ';
      for (int n = config_.char_min; n <= config_.char_max; ++n) {
        if (size_t(n) > gram.size()) break;
        for (size_t s = 0; s + size_t(n) <= gram.size(); ++s)
          pairs.emplace_back(
              uint32_t(fnv1a(std::string_view(gram).substr(s, size_t(n)), 100 + uint64_t(n))) &
                  mask,
              1.0f);
      }
    }
  }
  return from_pairs(pairs);
}

void NgramFeaturizer::fit(const std::vector<std::string>& prompts) {
  std::vector<uint32_t> df(dimension(), 0);
  for (const auto& p : prompts)
    for (uint32_t i : counts(p).index) ++df[i];
  const double n = double(prompts.size());
  idf_.resize(dimension());
  for (size_t i = 0; i < idf_.size(); ++i)
    idf_[i] = float(std::log((1.0 + n) / (1.0 + df[i])) + 1.0);
}

SparseVector NgramFeaturizer::featurize(std::string_view prompt) const {
  if (idf_.empty()) fail("NgramFeaturizer: featurize before fit");
  SparseVector v = counts(prompt);
  for (size_t k = 0; k < v.nnz(); ++k) {
    const float tf = config_.sublinear_tf ? 1.0f + std::log(v.value[k]) : v.value[k];
    v.value[k] = tf * idf_[v.index[k]];
  }
  normalise(v);
  return v;
}

nlohmann::json NgramFeaturizer::params() const {
  nlohmann::json j = config_.to_json();
  j["kind"] = "ngram";
  return j;
}

void NgramFeaturizer::save(SafetensorsFile& file) const {
  file.tensors["features.idf"] = TensorData::from_f32({int64_t(idf_.size())}, idf_);
}

std::unique_ptr<NgramFeaturizer> NgramFeaturizer::load(const nlohmann::json& params,
                                                       const SafetensorsFile& file,
                                                       const std::string& source) {
  nlohmann::json config = params;
  config.erase("kind");
  auto f =
      std::make_unique<NgramFeaturizer>(FeaturizerConfig::from_json(config, source + ": features"));
  const auto it = file.tensors.find("features.idf");
  if (it == file.tensors.end()) fail("{}: tensor features.idf is missing", source);
  f->idf_ = it->second.to_f32(source + ": features.idf");
  if (f->idf_.size() != f->dimension())
    fail("{}: features.idf has {} values, expected 2^{} = {}", source, f->idf_.size(),
         f->config_.hash_bits, f->dimension());
  for (float x : f->idf_)
    if (!std::isfinite(x) || x < 1.0f)
      fail("{}: features.idf holds {}, expected finite values >= 1", source, x);
  return f;
}

std::unique_ptr<EmbeddingFeaturizer> EmbeddingFeaturizer::read(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the embeddings file", path);
  auto f = std::make_unique<EmbeddingFeaturizer>();
  f->path_ = path;
  std::string line;
  size_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", path, line_no);
    const nlohmann::json j = parse_json_strict(line, where);
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string() ||
        !j.contains("embedding") || !j["embedding"].is_array())
      fail("{}: expected {{\"prompt\": string, \"embedding\": [numbers]}}", where);
    if (j.size() != 2) fail("{}: unknown key besides prompt and embedding", where);
    const auto& e = j["embedding"];
    if (f->dim_ == 0) {
      if (e.empty()) fail("{}: embedding is empty", where);
      f->dim_ = e.size();
    }
    if (e.size() != f->dim_)
      fail("{}: embedding has {} values, earlier lines have {}", where, e.size(), f->dim_);
    std::vector<double> v(f->dim_);
    double norm2 = 0.0;
    for (size_t k = 0; k < f->dim_; ++k) {
      // Stored as float: a value beyond float's range would become infinite.
      if (!e[k].is_number() || !std::isfinite(e[k].get<double>()) ||
          std::fabs(e[k].get<double>()) > double(std::numeric_limits<float>::max()))
        fail("{}: embedding[{}] = {} is not a finite float", where, k, e[k].dump());
      v[k] = e[k].get<double>();
    }
    // Scaled by the largest magnitude first so that the squares cannot overflow.
    double scale = 0.0;
    for (double x : v) scale = std::max(scale, std::fabs(x));
    if (scale <= 0.0) fail("{}: embedding is all zeros", where);
    for (double x : v) norm2 += (x / scale) * (x / scale);
    const double norm = scale * std::sqrt(norm2);
    const std::string prompt = j["prompt"].get<std::string>();
    if (f->row_of_.count(prompt)) fail("{}: prompt repeats an earlier line's prompt", where);
    f->row_of_.emplace(prompt, f->prompts_.size());
    f->prompts_.push_back(prompt);
    for (double x : v) f->vectors_.push_back(float(x / norm));
  }
  if (f->prompts_.empty()) fail("{}: no embeddings in the file", path);
  return f;
}

bool EmbeddingFeaturizer::contains(std::string_view prompt) const {
  return row_of_.count(std::string(prompt)) > 0;
}

SparseVector EmbeddingFeaturizer::featurize(std::string_view prompt) const {
  const auto it = row_of_.find(std::string(prompt));
  if (it == row_of_.end())
    fail("{}: no embedding for the prompt \"{}\" (user embeddings cover only the file's prompts)",
         path_, prompt.substr(0, 80));
  SparseVector v;
  v.index.resize(dim_);
  v.value.assign(vectors_.begin() + long(it->second * dim_),
                 vectors_.begin() + long((it->second + 1) * dim_));
  for (size_t k = 0; k < dim_; ++k) v.index[k] = uint32_t(k);
  return v;
}

nlohmann::json EmbeddingFeaturizer::params() const {
  return {{"kind", "embedding"}, {"dimension", dim_}, {"source", path_}};
}

void EmbeddingFeaturizer::save(SafetensorsFile& file) const {
  file.tensors["features.embeddings"] =
      TensorData::from_f32({int64_t(prompts_.size()), int64_t(dim_)}, vectors_);
  // Prompts go to the metadata as one JSON array (safetensors holds numeric tensors only).
  file.metadata["features.prompts"] = nlohmann::json(prompts_).dump();
}

std::unique_ptr<EmbeddingFeaturizer> EmbeddingFeaturizer::load(const nlohmann::json& params,
                                                               const SafetensorsFile& file,
                                                               const std::string& source) {
  auto f = std::make_unique<EmbeddingFeaturizer>();
  f->path_ = params.value("source", source);
  const auto it = file.tensors.find("features.embeddings");
  const auto meta = file.metadata.find("features.prompts");
  if (it == file.tensors.end() || meta == file.metadata.end())
    fail("{}: features.embeddings or the features.prompts metadata is missing", source);
  if (it->second.shape.size() != 2) fail("{}: features.embeddings must be 2-D", source);
  f->dim_ = size_t(it->second.shape[1]);
  f->vectors_ = it->second.to_f32(source + ": features.embeddings");
  const nlohmann::json prompts = parse_json_strict(meta->second, source + ": features.prompts");
  if (!prompts.is_array() || prompts.size() != size_t(it->second.shape[0]))
    fail("{}: features.prompts must list {} prompts", source, it->second.shape[0]);
  for (const auto& p : prompts) {
    if (!p.is_string()) fail("{}: features.prompts holds a non-string", source);
    f->row_of_.emplace(p.get<std::string>(), f->prompts_.size());
    f->prompts_.push_back(p.get<std::string>());
  }
  return f;
}

}  // namespace switchyard
