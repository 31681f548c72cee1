// MaskMoE (docs/routers/maskmoe.md; Su et al., arXiv 2407.09816): a fixed routing mask per token
// id, drawn once from the training data's id counts. The ⌊P·n⌋ most frequent of the n ids that
// occur see V' = min(V, E) experts, every other id one; the visible experts of id v are the first
// of a partial Fisher-Yates shuffle of the experts driven by splitmix64 draws from (mask_seed, v).
// Then softmax over the visible experts' logits (−∞ on the others), top-k among them, weight p
// (not renormalised), dropless.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class MaskMoERouter final : public Router {
 public:
  MaskMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    k_ = r.get_int("k", 1, 1, 1 << 20);
    visible_ = r.get_int("visible_experts", 8, 1, 1 << 20);
    frequent_fraction_ = r.get_double("frequent_fraction", 0.4, 0.0, 1.0);
    seed_ = uint64_t(r.get_int("mask_seed", 0, 0, INT64_MAX));
    r.finish();
    traits_.needs_token_ids = true;
    traits_.needs_token_frequencies = true;
  }

  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return double(k_); }
  void check_shape(int64_t E, const std::string& context) const override {
    if (k_ > E) fail("{}: k = {} exceeds the number of experts E = {}", context, k_, E);
  }
  nlohmann::json params() const override {
    return {{"router", "maskmoe"},
            {"k", k_},
            {"visible_experts", visible_},
            {"frequent_fraction", frequent_fraction_},
            {"mask_seed", seed_}};
  }
  std::string describe() const override {
    return fmt::format(
        "MaskMoE: top-{} over the softmax of the visible experts' logits; a fixed mask per token "
        "id from the training data's counts: the {}% most frequent ids see {} random experts, "
        "the others 1 (mask_seed {}); weight p, not renormalised, dropless",
        k_, 100.0 * frequent_fraction_, visible_, seed_);
  }

  // The frequent ids: by count descending (ties by id), the first ⌊P·n⌋ of the n that occur.
  void set_token_frequencies(const std::vector<int64_t>& counts,
                             const std::string& context) override {
    if (counts.empty()) fail("{}: router maskmoe: no token counts (an empty vocabulary)", context);
    int64_t seen = 0;
    for (size_t v = 0; v < counts.size(); ++v) {
      if (counts[v] < 0)
        fail("{}: router maskmoe: token id {} has a negative count {}", context, v, counts[v]);
      seen += counts[v] > 0;
    }
    std::vector<int64_t> ids(counts.size());
    std::iota(ids.begin(), ids.end(), int64_t{0});
    std::stable_sort(ids.begin(), ids.end(),
                     [&](int64_t a, int64_t b) { return counts[size_t(a)] > counts[size_t(b)]; });
    const auto n_frequent = int64_t(std::floor(frequent_fraction_ * double(seen)));
    frequent_.assign(counts.size(), 0);
    for (int64_t i = 0; i < n_frequent; ++i) frequent_[size_t(ids[size_t(i)])] = 1;
    counts_ = counts;
  }
  nlohmann::json state() const override {
    if (counts_.empty()) return nlohmann::json::object();
    return {{"token_counts", counts_}};
  }
  void set_state(const nlohmann::json& state) override {
    if (state.contains("token_counts"))
      set_token_frequencies(state.at("token_counts").get<std::vector<int64_t>>(),
                            "router maskmoe state");
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const std::vector<float> z = masked_logits(in);
    std::vector<double> s(size_t(in.E));
    std::vector<int32_t> top;
    route_per_token(in, plan, [&](int64_t t, auto&& emit) {
      const float* zt = z.data() + t * in.E;
      compute_scores(ScoreKind::Softmax, zt, in.E, s.data());
      for (int64_t e = 0; e < in.E; ++e)  // masked experts are never chosen, even with p = 0
        if (zt[e] == -std::numeric_limits<float>::infinity())
          s[size_t(e)] = -std::numeric_limits<double>::infinity();
      top_k_indices(s.data(), in.E, k_, top);
      for (int32_t e : top) emit(e, s[size_t(e)]);
    });
  }

  // Through the masked softmax: only the visible experts' logits get gradient.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    const std::vector<float> z = masked_logits(in);
    RouterInput masked = in;
    masked.logits = z.data();
    backward_raw_scores(ScoreKind::Softmax, masked, plan, d_weight, 1.0, d_logits);
  }

 private:
  // The logits (T, E) with −∞ on every expert the token's id does not see.
  std::vector<float> masked_logits(const RouterInput& in) const {
    if (in.token_ids == nullptr) fail("router maskmoe: needs token_ids (T) int64");
    if (frequent_.empty())
      fail(
          "router maskmoe: no token frequencies set (a model sets them from its training data, a "
          "layer file gives them as the tensor token_counts)");
    const int64_t E = in.E, vocab = int64_t(frequent_.size());
    std::vector<float> z(size_t(in.T * E), -std::numeric_limits<float>::infinity());
    std::vector<int32_t> perm(static_cast<size_t>(E));
    for (int64_t t = 0; t < in.T; ++t) {
      const int64_t id = in.token_ids[t];
      if (id < 0 || id >= vocab)
        fail("router maskmoe: token id {} is outside the vocabulary of {} token counts", id, vocab);
      // Partial Fisher-Yates shuffle: the first m entries are the id's visible experts.
      const int64_t m = frequent_[size_t(id)] ? std::min(visible_, E) : 1;
      const uint64_t base = splitmix64(seed_ ^ splitmix64(uint64_t(id)));
      std::iota(perm.begin(), perm.end(), 0);
      for (int64_t i = 0; i < m; ++i) {
        const auto j = i + int64_t(splitmix64(base + uint64_t(i)) % uint64_t(E - i));
        std::swap(perm[size_t(i)], perm[size_t(j)]);
        z[size_t(t * E + perm[size_t(i)])] = in.logits[t * in.R + perm[size_t(i)]];
      }
    }
    return z;
  }

  RouterTraits traits_;
  int64_t k_ = 1, visible_ = 8;
  double frequent_fraction_ = 0.4;
  uint64_t seed_ = 0;
  std::vector<int64_t> counts_;    // (vocab) the training data's id counts (the state)
  std::vector<uint8_t> frequent_;  // (vocab) 1 for a frequent id
};

}  // namespace

std::unique_ptr<Router> make_maskmoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<MaskMoERouter>(p, c);
}

}  // namespace switchyard::routers
