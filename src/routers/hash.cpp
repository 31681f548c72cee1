// Hash layers (routers.md section 6): a fixed token-id -> expert table, no learned router.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <map>

#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

class HashRouter final : public Router {
 public:
  HashRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    balanced_ = r.get_choice("table", "random", {"random", "balanced"}) == "balanced";
    seed_ = uint64_t(r.get_int("hash_seed", 0, 0, INT64_MAX));
    r.finish();
    traits_.needs_gate = false;
    traits_.needs_token_ids = true;
    traits_.supports_losses = false;
    traits_.batch_dependent = balanced_;  // the table depends on the group's id frequencies
  }
  const RouterTraits& traits() const override { return traits_; }
  nlohmann::json params() const override {
    return {{"router", "hash"}, {"table", balanced_ ? "balanced" : "random"}, {"hash_seed", seed_}};
  }
  std::string describe() const override {
    return balanced_ ? "hash layer, balanced table built from the token-id frequencies of each "
                       "routing group"
                     : "hash layer, random table (splitmix64 of the token id)";
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    if (in.token_ids == nullptr) fail("router hash: needs token_ids (T) int64");
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    for (size_t g = 0; g < in.groups.size(); ++g) {
      // Built per routing group, so that one sequence never changes another's table.
      std::map<int64_t, int32_t> table;
      if (balanced_) table = balanced_table(in, in.groups[g].first, in.groups[g].second);
      for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t) {
        const int64_t id = in.token_ids[t];
        const int32_t e =
            balanced_ ? table.at(id) : int32_t(splitmix64(uint64_t(id) ^ seed_) % uint64_t(in.E));
        plan.add(int32_t(t), e, int32_t(g), 1.0f);
        plan.selection_counts[size_t(e)] += 1.0;
      }
      plan.capacity.push_back(0);
    }
  }

  void backward(const RouterInput&, const RoutingPlan&, const float*, const float*,
                float*) const override {}

 private:
  // Distinct ids by descending frequency (ties by id), each to the least-loaded expert.
  std::map<int64_t, int32_t> balanced_table(const RouterInput& in, int64_t begin,
                                            int64_t end) const {
    std::map<int64_t, int64_t> frequency;
    for (int64_t t = begin; t < end; ++t) ++frequency[in.token_ids[t]];
    std::vector<std::pair<int64_t, int64_t>> ids(frequency.begin(), frequency.end());
    std::stable_sort(ids.begin(), ids.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    std::vector<int64_t> load(size_t(in.E), 0);
    std::map<int64_t, int32_t> table;
    for (const auto& [id, count] : ids) {
      const auto e = int32_t(std::min_element(load.begin(), load.end()) - load.begin());
      table[id] = e;
      load[size_t(e)] += count;
    }
    return table;
  }

  RouterTraits traits_;
  bool balanced_ = false;
  uint64_t seed_ = 0;
};

}  // namespace

std::unique_ptr<Router> make_hash(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<HashRouter>(p, c);
}

}  // namespace switchyard::routers
