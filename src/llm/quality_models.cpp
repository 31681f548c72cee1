// Quality models: predict each LLM's score for a prompt from its feature vector
// (docs/llm-routing.md gives the formulas).
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/llm_router.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

namespace switchyard {
namespace {

using nlohmann::json;

const TensorData& tensor(const SafetensorsFile& file, const std::string& name,
                         const std::string& source) {
  const auto it = file.tensors.find(name);
  if (it == file.tensors.end()) fail("{}: tensor {} is missing", source, name);
  return it->second;
}

template <typename T>
void expect_size(const std::vector<T>& v, size_t n, const std::string& name,
                 const std::string& source) {
  if (v.size() != n) fail("{}: tensor {} has {} values, expected {}", source, name, v.size(), n);
}

// Mean of each column of Y (n, M).
std::vector<double> column_means(const std::vector<double>& Y, size_t n, size_t M) {
  std::vector<double> mean(M, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t m = 0; m < M; ++m) mean[m] += Y[i * M + m] / double(n);
  return mean;
}

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

// A non-negative integer stored as metadata text.
uint64_t parse_count(const std::string& text, const char* name, const std::string& source) {
  uint64_t v = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty())
    fail("{}: metadata {} = \"{}\" is not a non-negative integer", source, name, text);
  return v;
}

// ---- random: a uniform number per (prompt, model), reproducible from the prompt's features. ----
class RandomModel final : public QualityModel {
 public:
  explicit RandomModel(uint64_t seed) : seed_(seed) {}
  std::string kind() const override { return "random"; }
  size_t num_models() const override { return M_; }
  void fit(const std::vector<SparseVector>&, const std::vector<double>& Y, size_t M,
           uint64_t seed) override {
    (void)Y;
    M_ = M;
    seed_ = seed;
  }
  void predict(const SparseVector& x, double* out) const override {
    uint64_t h = 0x243F6A8885A308D3ull ^ seed_;
    for (size_t k = 0; k < x.nnz(); ++k) {
      uint32_t bits;
      std::memcpy(&bits, &x.value[k], sizeof bits);
      h = (h ^ x.index[k]) * 0x100000001B3ull;
      h = (h ^ bits) * 0x100000001B3ull;
    }
    std::mt19937_64 rng(h);
    std::uniform_real_distribution<double> u(0.0, 1.0);
    for (size_t m = 0; m < M_; ++m) out[m] = u(rng);
  }
  json params() const override { return json::object(); }
  void save(SafetensorsFile& file) const override {
    file.metadata["random.seed"] = std::to_string(seed_);
    file.metadata["random.models"] = std::to_string(M_);
  }
  void load(const SafetensorsFile& file, const std::string& source) override {
    const auto s = file.metadata.find("random.seed");
    const auto m = file.metadata.find("random.models");
    if (s == file.metadata.end() || m == file.metadata.end())
      fail("{}: metadata random.seed / random.models is missing", source);
    seed_ = parse_count(s->second, "random.seed", source);
    M_ = parse_count(m->second, "random.models", source);
  }

 private:
  uint64_t seed_ = 0;
  size_t M_ = 0;
};

// ---- best_single: every prompt gets each model's mean training score (the "zero router"). ----
class BestSingleModel final : public QualityModel {
 public:
  std::string kind() const override { return "best_single"; }
  size_t num_models() const override { return mean_.size(); }
  void fit(const std::vector<SparseVector>& X, const std::vector<double>& Y, size_t M,
           uint64_t) override {
    mean_ = column_means(Y, X.size(), M);
  }
  void predict(const SparseVector&, double* out) const override {
    std::copy(mean_.begin(), mean_.end(), out);
  }
  json params() const override { return json::object(); }
  void save(SafetensorsFile& file) const override {
    file.tensors["best_single.mean"] = TensorData::from_f64({int64_t(mean_.size())}, mean_);
  }
  void load(const SafetensorsFile& file, const std::string& source) override {
    mean_ = tensor(file, "best_single.mean", source).to_f64(source);
  }

 private:
  std::vector<double> mean_;  // (M)
};

// ---- knn: mean score of the k most cosine-similar training prompts, via an inverted index. ----
class KnnModel final : public QualityModel {
 public:
  KnnModel(const json& p, const std::string& context) {
    ParamReader r(p, context);
    // k: a count, or "auto" to pick it from kCandidates by leave-one-out on the training set.
    const json k = r.get_json("k", "auto");
    if (k.is_string() && k.get<std::string>() == "auto") {
      auto_k_ = true;
    } else if (k.is_number_integer() && k.get<int64_t>() >= 1 && k.get<int64_t>() <= 100000) {
      k_ = k.get<int64_t>();
    } else {
      fail("{}: field 'k' = {} must be an integer in [1, 100000] or \"auto\"", context, k.dump());
    }
    weighted_ = r.get_choice("weights", "uniform", {"uniform", "similarity"}) == "similarity";
    r.finish();
  }
  std::string kind() const override { return "knn"; }
  size_t num_models() const override { return M_; }
  void fit(const std::vector<SparseVector>& X, const std::vector<double>& Y, size_t M,
           uint64_t seed) override {
    n_ = X.size();
    M_ = M;
    Y_ = Y;
    // Postings grouped by feature: CSR over the features that occur.
    std::vector<std::pair<uint32_t, uint32_t>> entries;  // (feature, doc)
    size_t total = 0;
    for (const auto& x : X) total += x.nnz();
    entries.reserve(total);
    for (size_t d = 0; d < n_; ++d)
      for (size_t k = 0; k < X[d].nnz(); ++k) entries.emplace_back(X[d].index[k], uint32_t(d));
    std::vector<size_t> order(entries.size());
    std::iota(order.begin(), order.end(), 0);
    std::vector<float> flat;
    flat.reserve(total);
    for (size_t d = 0; d < n_; ++d) flat.insert(flat.end(), X[d].value.begin(), X[d].value.end());
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return entries[a].first < entries[b].first; });
    features_.clear();
    offsets_.assign(1, 0);
    docs_.clear();
    values_.clear();
    for (size_t o : order) {
      if (features_.empty() || features_.back() != entries[o].first) {
        if (!features_.empty()) offsets_.push_back(int64_t(docs_.size()));
        features_.push_back(entries[o].first);
      }
      docs_.push_back(int64_t(entries[o].second));
      values_.push_back(flat[o]);
    }
    offsets_.push_back(int64_t(docs_.size()));
    if (features_.empty()) offsets_.assign(1, 0);
    compute_mean();
    if (auto_k_) k_ = select_k(X, seed);
  }
  void predict(const SparseVector& x, double* out) const override {
    thread_local std::vector<float> sim;
    thread_local std::vector<uint32_t> nearest;
    const size_t k = std::min<size_t>(size_t(k_), n_);
    similarities(x, sim);
    nearest_by_similarity(sim, k, -1, false, nearest);
    average(nearest, k, sim, out);
  }
  // After fit, "k" is the count in use (chosen when it was "auto").
  json params() const override {
    return {{"k", k_}, {"weights", weighted_ ? "similarity" : "uniform"}};
  }
  static constexpr int64_t kCandidates[] = {5, 10, 20, 40, 80, 160};
  void save(SafetensorsFile& file) const override {
    std::vector<int64_t> features(features_.begin(), features_.end());
    file.tensors["knn.features"] = TensorData::from_i64({int64_t(features.size())}, features);
    file.tensors["knn.offsets"] = TensorData::from_i64({int64_t(offsets_.size())}, offsets_);
    file.tensors["knn.docs"] = TensorData::from_i64({int64_t(docs_.size())}, docs_);
    file.tensors["knn.values"] = TensorData::from_f32({int64_t(values_.size())}, values_);
    file.tensors["knn.scores"] = TensorData::from_f64({int64_t(n_), int64_t(M_)}, Y_);
  }
  void load(const SafetensorsFile& file, const std::string& source) override {
    const TensorData& scores = tensor(file, "knn.scores", source);
    if (scores.shape.size() != 2) fail("{}: knn.scores must be 2-D", source);
    n_ = size_t(scores.shape[0]);
    M_ = size_t(scores.shape[1]);
    Y_ = scores.to_f64(source);
    const auto features = tensor(file, "knn.features", source).to_i64(source);
    offsets_ = tensor(file, "knn.offsets", source).to_i64(source);
    docs_ = tensor(file, "knn.docs", source).to_i64(source);
    values_ = tensor(file, "knn.values", source).to_f32(source);
    expect_size(offsets_, features.size() + 1, "knn.offsets", source);
    expect_size(values_, docs_.size(), "knn.values", source);
    features_.assign(features.begin(), features.end());
    for (size_t f = 0; f < features.size(); ++f) {
      if (features[f] < 0 || features[f] > int64_t(UINT32_MAX) ||
          (f > 0 && features[f] <= features[f - 1]))
        fail("{}: knn.features must be increasing feature indices", source);
      if (offsets_[f] > offsets_[f + 1]) fail("{}: knn.offsets must not decrease", source);
    }
    if (offsets_.front() != 0 || offsets_.back() != int64_t(docs_.size()))
      fail("{}: knn.offsets must run from 0 to the number of postings", source);
    for (int64_t d : docs_)
      if (d < 0 || d >= int64_t(n_)) fail("{}: knn.docs holds {} outside [0, {})", source, d, n_);
    compute_mean();
  }

 private:
  // sim[d] = cosine similarity of x with training prompt d (vectors are unit length).
  void similarities(const SparseVector& x, std::vector<float>& sim) const {
    sim.assign(n_, 0.0f);
    for (size_t k = 0; k < x.nnz(); ++k) {
      const auto it = std::lower_bound(features_.begin(), features_.end(), x.index[k]);
      if (it == features_.end() || *it != x.index[k]) continue;
      const size_t f = size_t(it - features_.begin());
      const float xv = x.value[k];
      for (int64_t p = offsets_[f]; p < offsets_[f + 1]; ++p)
        sim[size_t(docs_[size_t(p)])] += xv * values_[size_t(p)];
    }
  }
  // The k most similar training prompts (ties: the earlier prompt), skipping `exclude`; sorted
  // most similar first when `sorted`.
  void nearest_by_similarity(const std::vector<float>& sim, size_t k, int64_t exclude, bool sorted,
                             std::vector<uint32_t>& out) const {
    out.clear();
    for (size_t d = 0; d < n_; ++d)
      if (int64_t(d) != exclude) out.push_back(uint32_t(d));
    k = std::min(k, out.size());
    auto closer = [&](uint32_t a, uint32_t b) {
      return sim[a] != sim[b] ? sim[a] > sim[b] : a < b;
    };
    if (k == 0) return;
    if (sorted) {
      std::partial_sort(out.begin(), out.begin() + long(k), out.end(), closer);
    } else {
      std::nth_element(out.begin(), out.begin() + long(k) - 1, out.end(), closer);
    }
    out.resize(k);
  }
  // Mean (or similarity-weighted mean) score of the first k neighbours; the training mean when
  // the prompt shares no feature with any of them.
  void average(const std::vector<uint32_t>& nearest, size_t k, const std::vector<float>& sim,
               double* out) const {
    k = std::min(k, nearest.size());
    bool any = false;
    for (size_t i = 0; i < k; ++i) any = any || sim[nearest[i]] > 0.0f;
    if (!any) {
      std::copy(mean_.begin(), mean_.end(), out);
      return;
    }
    std::fill(out, out + M_, 0.0);
    double weight_sum = 0.0;
    for (size_t i = 0; i < k; ++i) {
      const uint32_t d = nearest[i];
      const double w = weighted_ ? std::max(0.0f, sim[d]) : 1.0;
      weight_sum += w;
      for (size_t m = 0; m < M_; ++m) out[m] += w * Y_[d * M_ + m];
    }
    for (size_t m = 0; m < M_; ++m) out[m] /= weight_sum;
  }
  // Leave-one-out squared error of every candidate k on (a seeded sample of up to 3,000) training
  // prompts; the smallest wins (ties: the smaller k).
  int64_t select_k(const std::vector<SparseVector>& X, uint64_t seed) const {
    std::vector<size_t> sample(n_);
    std::iota(sample.begin(), sample.end(), 0);
    std::mt19937_64 rng(seed ^ 0x5eedULL);
    std::shuffle(sample.begin(), sample.end(), rng);
    sample.resize(std::min<size_t>(n_, 3000));
    constexpr size_t C = std::size(kCandidates);
    std::vector<double> error(C, 0.0);
#pragma omp parallel
    {
      std::vector<float> sim;
      std::vector<uint32_t> nearest;
      std::vector<double> pred(M_), local(C, 0.0);
#pragma omp for schedule(dynamic, 32)
      for (size_t s = 0; s < sample.size(); ++s) {
        const size_t d = sample[s];
        similarities(X[d], sim);
        nearest_by_similarity(sim, size_t(kCandidates[C - 1]), int64_t(d), true, nearest);
        for (size_t c = 0; c < C; ++c) {
          average(nearest, size_t(kCandidates[c]), sim, pred.data());
          for (size_t m = 0; m < M_; ++m) {
            const double e = pred[m] - Y_[d * M_ + m];
            local[c] += e * e;
          }
        }
      }
#pragma omp critical
      for (size_t c = 0; c < C; ++c) error[c] += local[c];
    }
    return kCandidates[std::min_element(error.begin(), error.end()) - error.begin()];
  }
  void compute_mean() {
    mean_ = column_means(Y_, n_, M_);
  }
  int64_t k_ = 40;
  bool auto_k_ = false;
  bool weighted_ = false;
  size_t n_ = 0, M_ = 0;
  std::vector<double> Y_;  // (n, M) training scores
  std::vector<double> mean_;
  std::vector<uint32_t> features_;  // (F) features that occur, increasing
  std::vector<int64_t> offsets_;    // (F + 1)
  std::vector<int64_t> docs_;       // (P) training prompt of each posting
  std::vector<float> values_;       // (P) feature value in that prompt
};

// Sparse rows (shuffled each epoch) for the SGD-trained models.
std::vector<size_t> epoch_order(size_t n, std::mt19937_64& rng) {
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  return order;
}

// ---- logistic: one L2-regularised logistic regression per model on the sparse features,
// fitted to the (soft) score by AdaGrad on the cross-entropy. ----
class LogisticModel final : public QualityModel {
 public:
  LogisticModel(const json& p, const std::string& context) {
    ParamReader r(p, context);
    epochs_ = r.get_int("epochs", 10, 1, 1000);
    lr_ = r.get_double("learning_rate", 0.5, 1e-6, 100.0);
    l2_ = r.get_double("l2", 1e-5, 0.0, 10.0);
    r.finish();
  }
  std::string kind() const override { return "logistic"; }
  size_t num_models() const override { return M_; }
  void fit(const std::vector<SparseVector>& X, const std::vector<double>& Y, size_t M,
           uint64_t seed) override {
    M_ = M;
    D_ = 0;
    for (const auto& x : X)
      if (x.nnz()) D_ = std::max<size_t>(D_, size_t(x.index.back()) + 1);
    D_ = std::max<size_t>(D_, 1);
    W_.assign(M_ * D_, 0.0f);
    b_.assign(M_, 0.0);
    std::vector<float> G(M_ * D_, 0.0f);  // AdaGrad accumulators
    std::vector<double> Gb(M_, 0.0);
    std::mt19937_64 rng(seed);
    for (int64_t epoch = 0; epoch < epochs_; ++epoch) {
      for (size_t i : epoch_order(X.size(), rng)) {
        const SparseVector& x = X[i];
        for (size_t m = 0; m < M_; ++m) {
          float* w = &W_[m * D_];
          float* g = &G[m * D_];
          double z = b_[m];
          for (size_t k = 0; k < x.nnz(); ++k) z += double(w[x.index[k]]) * x.value[k];
          const double err = sigmoid(z) - Y[i * M_ + m];
          for (size_t k = 0; k < x.nnz(); ++k) {
            const uint32_t j = x.index[k];
            const float grad = float(err * x.value[k] + l2_ * w[j]);
            g[j] += grad * grad;
            w[j] -= float(lr_) * grad / (std::sqrt(g[j]) + 1e-8f);
          }
          Gb[m] += err * err;
          b_[m] -= lr_ * err / (std::sqrt(Gb[m]) + 1e-8);
        }
      }
    }
  }
  void predict(const SparseVector& x, double* out) const override {
    for (size_t m = 0; m < M_; ++m) {
      double z = b_[m];
      for (size_t k = 0; k < x.nnz(); ++k)
        if (x.index[k] < D_) z += double(W_[m * D_ + x.index[k]]) * x.value[k];
      out[m] = sigmoid(z);
    }
  }
  json params() const override {
    return {{"epochs", epochs_}, {"learning_rate", lr_}, {"l2", l2_}};
  }
  void save(SafetensorsFile& file) const override {
    file.tensors["logistic.weight"] = TensorData::from_f32({int64_t(M_), int64_t(D_)}, W_);
    file.tensors["logistic.bias"] = TensorData::from_f64({int64_t(M_)}, b_);
  }
  void load(const SafetensorsFile& file, const std::string& source) override {
    const TensorData& w = tensor(file, "logistic.weight", source);
    if (w.shape.size() != 2) fail("{}: logistic.weight must be 2-D", source);
    M_ = size_t(w.shape[0]);
    D_ = size_t(w.shape[1]);
    W_ = w.to_f32(source);
    b_ = tensor(file, "logistic.bias", source).to_f64(source);
    expect_size(b_, M_, "logistic.bias", source);
  }

 private:
  int64_t epochs_;
  double lr_, l2_;
  size_t M_ = 0, D_ = 0;
  std::vector<float> W_;   // (M, D)
  std::vector<double> b_;  // (M)
};

// ---- mf: RouteLLM's matrix-factorisation form on our features. The prompt is projected by an
// embedding bag P (features folded to 2^proj_bits rows, dim d): h = Σ_j x_j P[j mod 2^b];
// s_m = wᵀ(v_m ⊙ h) + b_m; predicted score σ(s_m); trained pointwise by AdaGrad. ----
class MatrixFactorisationModel final : public QualityModel {
 public:
  MatrixFactorisationModel(const json& p, const std::string& context) {
    ParamReader r(p, context);
    dim_ = r.get_int("dim", 32, 1, 1024);
    proj_bits_ = int(r.get_int("proj_bits", 16, 4, 22));
    epochs_ = r.get_int("epochs", 10, 1, 1000);
    lr_ = r.get_double("learning_rate", 0.05, 1e-6, 100.0);
    l2_ = r.get_double("l2", 1e-6, 0.0, 10.0);
    // pointwise: cross-entropy of σ(s_m) against each score. pairwise: RouteLLM's objective,
    // cross-entropy of σ(s_a - s_b) against "a scored higher than b" for every pair of models
    // whose scores differ (scores are then uncalibrated). both: the sum.
    loss_ = r.get_choice("loss", "pointwise", {"pointwise", "pairwise", "both"});
    r.finish();
  }
  std::string kind() const override { return "mf"; }
  size_t num_models() const override { return M_; }
  void fit(const std::vector<SparseVector>& X, const std::vector<double>& Y, size_t M,
           uint64_t seed) override {
    M_ = M;
    const size_t d = size_t(dim_), rows = size_t(1) << proj_bits_;
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    P_.resize(rows * d);
    for (float& x : P_) x = 0.1f * normal(rng);
    V_.resize(M * d);
    for (float& x : V_) x = 1.0f + 0.1f * normal(rng);
    w_.assign(d, 1.0f / std::sqrt(float(d)));
    b_.assign(M, 0.0f);
    std::vector<float> gP(P_.size(), 0.0f), gV(V_.size(), 0.0f), gw(d, 0.0f), gb(M, 0.0f);
    auto step = [&](float& param, float& acc, float grad) {
      acc += grad * grad;
      param -= float(lr_) * grad / (std::sqrt(acc) + 1e-8f);
    };
    std::vector<float> h(d), dh(d), ds(M);
    std::vector<double> s(M);
    for (int64_t epoch = 0; epoch < epochs_; ++epoch) {
      for (size_t i : epoch_order(X.size(), rng)) {
        const SparseVector& x = X[i];
        project(x, h.data());
        std::fill(dh.begin(), dh.end(), 0.0f);
        std::vector<float> dw(d, 0.0f);
        for (size_t m = 0; m < M; ++m) {
          double sm = b_[m];
          for (size_t k = 0; k < d; ++k) sm += double(w_[k]) * V_[m * d + k] * h[k];
          s[m] = sm;
          ds[m] = loss_ == "pairwise" ? 0.0f : float(sigmoid(sm) - Y[i * M + m]);
        }
        if (loss_ != "pointwise")
          for (size_t a = 0; a < M; ++a)
            for (size_t b = a + 1; b < M; ++b) {
              const double ya = Y[i * M + a], yb = Y[i * M + b];
              if (ya == yb) continue;
              const float g = float(sigmoid(s[a] - s[b]) - (ya > yb ? 1.0 : 0.0));
              ds[a] += g;
              ds[b] -= g;
            }
        for (size_t m = 0; m < M; ++m) {
          for (size_t k = 0; k < d; ++k) {
            dh[k] += ds[m] * w_[k] * V_[m * d + k];
            dw[k] += ds[m] * V_[m * d + k] * h[k];
          }
        }
        for (size_t m = 0; m < M; ++m) {
          for (size_t k = 0; k < d; ++k)
            step(V_[m * d + k], gV[m * d + k], ds[m] * w_[k] * h[k] + float(l2_) * V_[m * d + k]);
          step(b_[m], gb[m], ds[m]);
        }
        for (size_t k = 0; k < d; ++k) step(w_[k], gw[k], dw[k]);
        const size_t mask = rows - 1;
        for (size_t j = 0; j < x.nnz(); ++j) {
          float* p = &P_[(x.index[j] & mask) * d];
          float* g = &gP[(x.index[j] & mask) * d];
          for (size_t k = 0; k < d; ++k) step(p[k], g[k], x.value[j] * dh[k] + float(l2_) * p[k]);
        }
      }
    }
  }
  void predict(const SparseVector& x, double* out) const override {
    const size_t d = size_t(dim_);
    thread_local std::vector<float> h;
    h.resize(d);
    project(x, h.data());
    for (size_t m = 0; m < M_; ++m) {
      double s = b_[m];
      for (size_t k = 0; k < d; ++k) s += double(w_[k]) * V_[m * d + k] * h[k];
      out[m] = sigmoid(s);
    }
  }
  json params() const override {
    return {{"dim", dim_},       {"loss", loss_},        {"proj_bits", proj_bits_},
            {"epochs", epochs_}, {"learning_rate", lr_}, {"l2", l2_}};
  }
  void save(SafetensorsFile& file) const override {
    const int64_t d = dim_;
    file.tensors["mf.projection"] = TensorData::from_f32({int64_t(1) << proj_bits_, d}, P_);
    file.tensors["mf.model_embedding"] = TensorData::from_f32({int64_t(M_), d}, V_);
    file.tensors["mf.w"] = TensorData::from_f32({d}, w_);
    file.tensors["mf.bias"] = TensorData::from_f32({int64_t(M_)}, b_);
  }
  void load(const SafetensorsFile& file, const std::string& source) override {
    P_ = tensor(file, "mf.projection", source).to_f32(source);
    V_ = tensor(file, "mf.model_embedding", source).to_f32(source);
    w_ = tensor(file, "mf.w", source).to_f32(source);
    b_ = tensor(file, "mf.bias", source).to_f32(source);
    M_ = b_.size();
    expect_size(P_, (size_t(1) << proj_bits_) * size_t(dim_), "mf.projection", source);
    expect_size(V_, M_ * size_t(dim_), "mf.model_embedding", source);
    expect_size(w_, size_t(dim_), "mf.w", source);
  }

 private:
  void project(const SparseVector& x, float* h) const {
    const size_t d = size_t(dim_), mask = (size_t(1) << proj_bits_) - 1;
    std::fill(h, h + d, 0.0f);
    for (size_t j = 0; j < x.nnz(); ++j) {
      const float* p = &P_[(x.index[j] & mask) * d];
      for (size_t k = 0; k < d; ++k) h[k] += x.value[j] * p[k];
    }
  }
  int64_t dim_, epochs_;
  int proj_bits_;
  std::string loss_;
  double lr_, l2_;
  size_t M_ = 0;
  std::vector<float> P_;  // (2^proj_bits, d) prompt projection
  std::vector<float> V_;  // (M, d) model embeddings
  std::vector<float> w_;  // (d)
  std::vector<float> b_;  // (M)
};

// ---- ensemble: the mean of several quality models' predictions (e.g. knn + logistic). ----
class EnsembleModel final : public QualityModel {
 public:
  EnsembleModel(const json& p, const std::string& context) {
    ParamReader r(p, context);
    const json members =
        r.get_json("members", json::array({{{"kind", "knn"}}, {{"kind", "logistic"}}}));
    r.finish();
    if (!members.is_array() || members.empty())
      fail("{}: members must be a non-empty list of {{\"kind\", \"params\"}}", context);
    for (size_t i = 0; i < members.size(); ++i) {
      const std::string where = fmt::format("{}: members[{}]", context, i);
      if (!members[i].is_object()) fail("{}: must be an object", where);
      ParamReader m(members[i], where);
      const std::string kind = m.get_choice("kind", "", quality_model_kinds());
      members_.push_back(make_quality_model(kind, m.get_object("params", json::object()), where));
      m.finish();
    }
  }
  std::string kind() const override { return "ensemble"; }
  size_t num_models() const override { return M_; }
  void fit(const std::vector<SparseVector>& X, const std::vector<double>& Y, size_t M,
           uint64_t seed) override {
    M_ = M;
    for (size_t i = 0; i < members_.size(); ++i) members_[i]->fit(X, Y, M, seed + i);
  }
  void predict(const SparseVector& x, double* out) const override {
    thread_local std::vector<double> one;
    one.resize(M_);
    std::fill(out, out + M_, 0.0);
    for (const auto& member : members_) {
      member->predict(x, one.data());
      for (size_t m = 0; m < M_; ++m) out[m] += one[m] / double(members_.size());
    }
  }
  json params() const override {
    json members = json::array();
    for (const auto& m : members_)
      members.push_back({{"kind", m->kind()}, {"params", m->params()}});
    return {{"members", members}};
  }
  // Each member's tensors and metadata go under the prefix "m<i>/".
  void save(SafetensorsFile& file) const override {
    for (size_t i = 0; i < members_.size(); ++i) {
      SafetensorsFile part;
      members_[i]->save(part);
      const std::string prefix = fmt::format("m{}/", i);
      for (auto& [name, t] : part.tensors) file.tensors[prefix + name] = std::move(t);
      for (auto& [name, v] : part.metadata) file.metadata[prefix + name] = std::move(v);
    }
    file.metadata["ensemble.models"] = std::to_string(M_);
  }
  void load(const SafetensorsFile& file, const std::string& source) override {
    for (size_t i = 0; i < members_.size(); ++i) {
      const std::string prefix = fmt::format("m{}/", i);
      SafetensorsFile part;
      for (const auto& [name, t] : file.tensors)
        if (name.rfind(prefix, 0) == 0) part.tensors[name.substr(prefix.size())] = t;
      for (const auto& [name, v] : file.metadata)
        if (name.rfind(prefix, 0) == 0) part.metadata[name.substr(prefix.size())] = v;
      members_[i]->load(part, source + " (ensemble member " + std::to_string(i) + ")");
    }
    const auto it = file.metadata.find("ensemble.models");
    if (it == file.metadata.end()) fail("{}: metadata ensemble.models is missing", source);
    M_ = parse_count(it->second, "ensemble.models", source);
    for (const auto& member : members_)
      if (member->num_models() != M_)
        fail("{}: an ensemble member predicts {} models, the ensemble {}", source,
             member->num_models(), M_);
  }

 private:
  std::vector<std::unique_ptr<QualityModel>> members_;
  size_t M_ = 0;
};

}  // namespace

const std::vector<std::string>& quality_model_kinds() {
  static const std::vector<std::string> kinds = {"random",   "best_single", "knn",
                                                 "logistic", "mf",          "ensemble"};
  return kinds;
}

std::unique_ptr<QualityModel> make_quality_model(const std::string& kind, const json& params,
                                                 const std::string& context) {
  if (!params.is_object()) fail("{}: parameters must be a JSON object", context);
  if (kind == "random" || kind == "best_single") {
    ParamReader(params, context).finish();
    if (kind == "random") return std::make_unique<RandomModel>(0);
    return std::make_unique<BestSingleModel>();
  }
  if (kind == "knn") return std::make_unique<KnnModel>(params, context);
  if (kind == "logistic") return std::make_unique<LogisticModel>(params, context);
  if (kind == "mf") return std::make_unique<MatrixFactorisationModel>(params, context);
  if (kind == "ensemble") return std::make_unique<EnsembleModel>(params, context);
  fail("{}: unknown quality model \"{}\" (known: random, best_single, knn, logistic, mf, ensemble)",
       context, kind);
}

}  // namespace switchyard
