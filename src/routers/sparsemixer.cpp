// SparseMixer-v2 as trained in GRIN / Phi-3.5-MoE (docs/routers/sparsemixer.md): two experts per
// token, chosen one slot after the other. A slot keeps the logits close to its largest one (the
// threshold mask), forms the softmax π over them and takes D = argmax (evaluation) or a Gumbel-max
// sample (training). The weight is π_D, times ω ∈ {1, 1/3} in training (Heun's third-order
// step); the router backward is that of π_D alone. The second slot removes the first expert and
// repeats. Dropless and batch-independent.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "routers/routers.h"

namespace switchyard::routers {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// One slot's decision for one token.
struct Slot {
  int32_t expert = -1;  // D
  double prob = 0.0;    // π_D
  double omega = 1.0;   // Heun multiplier (1 in evaluation)
};

class SparseMixerRouter final : public Router {
 public:
  SparseMixerRouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    eps_ = r.get_double("jitter_eps", 0.01, 0.0, 1e6);
    traits_.jitter = r.get_double("jitter", 0.0, 0.0, 1.0);
    r.finish();
    // Per token and slot: R Gumbel uniforms and one Heun coin, 2 R + 2 draws (the layout is in
    // check_noise below).
    traits_.uniforms_per_token = 2;
    traits_.uniforms_per_output = 2;
  }

  const RouterTraits& traits() const override { return traits_; }
  double nominal_experts_per_token(int64_t) const override { return 2.0; }
  void check_shape(int64_t E, const std::string& context) const override {
    if (E < 2)
      fail("{}: sparsemixer routes two experts per token and needs E >= 2, got {}", context, E);
  }
  nlohmann::json params() const override {
    return {{"router", "sparsemixer"}, {"jitter_eps", eps_}, {"jitter", traits_.jitter}};
  }
  std::string describe() const override {
    return fmt::format(
        "SparseMixer-v2 (GRIN): top-2 by slots, softmax over the logits within 2ε = {} (relative) "
        "of the slot's largest; training: Gumbel-max sample, weight π_D·ω with ω = 1 or 1/3 "
        "(Heun), backward of π_D; evaluation: argmax, weight π_D{}; dropless",
        2.0 * eps_, traits_.jitter > 0 ? fmt::format("; input jitter {}", traits_.jitter) : "");
  }

  void route(const RouterInput& in, RoutingPlan& plan) const override {
    check_noise(in);
    plan.clear();
    plan.selection_counts.assign(size_t(in.R), 0.0);
    plan.first_choice_counts.assign(size_t(in.R), 0.0);
    std::vector<double> pi(size_t(in.R));
    for (size_t g = 0; g < in.groups.size(); ++g) {
      for (int64_t t = in.groups[g].first; t < in.groups[g].second; ++t) {
        int32_t first = -1;
        for (int slot = 0; slot < 2; ++slot) {
          const Slot s = decide(in, t, slot, first, pi.data());
          plan.add(int32_t(t), s.expert, int32_t(g), float(s.prob * s.omega));
          plan.selection_counts[size_t(s.expert)] += 1.0;
          if (slot == 0) plan.first_choice_counts[size_t(s.expert)] += 1.0;
          first = s.expert;
        }
      }
      plan.capacity.push_back(0);
    }
  }

  // GRIN's estimator: with u = ∂L/∂weight of a slot, ∂L/∂z_j += u π_D (1[j = D] − π_j) over the
  // slot's kept logits (π_j = 0 elsewhere). ω does not enter: the slot's π_D is the multiplier
  // that the backward scales by. In evaluation (ω = 1) this is the exact gradient of π_D.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    std::vector<double> pi(size_t(in.R));
    for (size_t a = 0; a < plan.size(); a += 2) {  // a token's two slots are adjacent
      const int64_t t = plan.token[a];
      int32_t first = -1;
      for (int slot = 0; slot < 2; ++slot) {
        const Slot s = decide(in, t, slot, first, pi.data());
        first = s.expert;
        const double u = d_weight[a + size_t(slot)];
        if (!plan.kept[a + size_t(slot)] || u == 0.0) continue;
        const double scaled = u * s.prob;
        float* dz = d_logits + t * in.R;
        for (int64_t j = 0; j < in.R; ++j)
          if (pi[size_t(j)] != 0.0)
            dz[j] += float(scaled * ((j == s.expert ? 1.0 : 0.0) - pi[size_t(j)]));
      }
    }
  }

 private:
  // Draws of token t (RouterInput::uniform is (T, 2R + 2)): Gumbel uniforms of slot s at
  // [s R, (s + 1) R), the Heun coin of slot s at 2R + s.
  void check_noise(const RouterInput& in) const {
    if (!in.training) return;
    if (!in.uniform || in.uniforms_per_token != 2 * in.R + 2)
      fail(
          "sparsemixer: training needs {} uniform draws per token (2 E + 2), got {} (was the "
          "router's check_shape called for E = {}?)",
          2 * in.R + 2, in.uniform ? in.uniforms_per_token : 0, in.R);
  }

  // Slot `slot` of token t, `first` the expert of slot 0 (removed from slot 1). Fills pi (R) with
  // the slot's masked softmax (0 outside the kept set).
  Slot decide(const RouterInput& in, int64_t t, int slot, int32_t first, double* pi) const {
    const int64_t R = in.R;
    const float* z = in.logits + t * R;
    // The largest remaining logit (ties -> lower index); it is always kept.
    int32_t best = -1;
    double zmax = kNegInf;
    for (int32_t j = 0; j < int32_t(R); ++j)
      if (j != first && (best < 0 || double(z[j]) > zmax)) {
        best = j;
        zmax = double(z[j]);
      }
    // Threshold mask: drop j when (zmax − z_j) / max(|z_j|, zmax) > 2ε (a 0/0 keeps j).
    double sum = 0.0;
    for (int32_t j = 0; j < int32_t(R); ++j) {
      pi[j] = 0.0;
      if (j == first) continue;
      const double zj = double(z[j]);
      if ((zmax - zj) / std::max(std::abs(zj), zmax) > 2.0 * eps_) continue;
      sum += (pi[j] = std::exp(zj - zmax));
    }
    for (int64_t j = 0; j < R; ++j) pi[j] /= sum;

    Slot s;
    s.expert = best;
    if (in.training) {
      const float* u = in.uniform + t * in.uniforms_per_token;
      double top = kNegInf;
      int32_t sample = -1;
      for (int32_t j = 0; j < int32_t(R); ++j) {
        if (pi[j] == 0.0) continue;
        const double gumbel = -std::log(-std::log(double(u[slot * R + j])));
        const double v = double(z[j]) + gumbel;
        if (sample < 0 || v > top) {
          sample = j;
          top = v;
        }
      }
      s.expert = sample;
      s.omega = (sample == best || double(u[2 * R + slot]) > 0.75) ? 1.0 : 1.0 / 3.0;
    }
    s.prob = pi[s.expert];
    return s;
  }

  RouterTraits traits_;
  double eps_ = 0.01;
};

}  // namespace

std::unique_ptr<Router> make_sparsemixer(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<SparseMixerRouter>(p, c);
}

}  // namespace switchyard::routers
