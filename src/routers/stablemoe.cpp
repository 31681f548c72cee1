// StableMoE (docs/routers/stablemoe.md; Dai et al., ACL 2022, arXiv 2204.08396): greedy top-1
// with a sigmoid gate over backbone affinities s = W x, distilled during training into a
// lightweight router ŝ = K Q[id] that reads only the token's id.
//   Stage 1 (training): route by argmax s; own loss L_bal + L_dis: the balance loss
//     α/T Σ_t ((c_a − n̄)/n̄) σ(s_{t,a}) (counts c before drops, n̄ = T/E) and the distillation
//     loss β/T Σ_t CE(softmax ŝ_t, argmax s_t), whose target carries no gradient.
//   Stage 2, and evaluation in either stage: route by argmax ŝ (a fixed function of the id), no
//     own loss; in stage 2 the distilled router's tensors are frozen (frozen_tensors).
// The gate is σ(s_{t,a}) in both stages; capacity ⌈cf · n_g / E⌉ per routing group in position
// order. The stage moves from 1 to 2 once update_state has counted S₁ optimiser steps.
#include <switchyard/config.h>
#include <switchyard/error.h>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "routers/distilled_logits.h"
#include "routers/router_common.h"
#include "routers/routers.h"

namespace switchyard::routers {
namespace {

double sigmoid(double z) {
  return 1.0 / (1.0 + std::exp(-z));
}

class StableMoERouter final : public Router {
 public:
  StableMoERouter(const nlohmann::json& params, const std::string& context) {
    ParamReader r(params, context);
    stage1_fraction_ = r.get_double("stage1_fraction", 0.1, 0.0, 1.0);
    stage1_steps_ = r.get_int("stage1_steps", -1, -1, int64_t(1) << 40);
    stage_ = r.get_int("stage", 1, 1, 2);
    alpha_ = r.get_double("balance_loss", 0.3, 0.0, 1e6);
    beta_ = r.get_double("distill_loss", 0.3, 0.0, 1e6);
    DistilledLogitsConfig c;
    c.dim = r.get_int("distill_dim", c.dim, 1, 1 << 16);
    capacity_factor_ = r.get_double("capacity_factor", 2.0, 0.0, 1e6);
    r.finish();
    logits_ = std::make_unique<DistilledLogits>(c);
    traits_.needs_token_ids = true;
    traits_.supports_losses = false;
    traits_.has_own_loss = true;
    traits_.score = ScoreKind::Sigmoid;
    traits_.batch_dependent = capacity_factor_ > 0.0;
  }

  const RouterTraits& traits() const override { return traits_; }
  int64_t num_outputs(int64_t E) const override { return 2 * E; }
  const LogitFunction* logit_function() const override { return logits_.get(); }
  nlohmann::json params() const override {
    return {{"router", "stablemoe"},
            {"logits", "distilled"},
            {"stage1_fraction", stage1_fraction_},
            {"stage1_steps", stage1_steps_},
            {"stage", stage_},
            {"balance_loss", alpha_},
            {"distill_loss", beta_},
            {"distill_dim", logits_->config().dim},
            {"capacity_factor", capacity_factor_}};
  }
  std::string describe() const override {
    const std::string s1 = stage1_steps_ >= 0 ? fmt::format("{} steps", stage1_steps_)
                                              : fmt::format("{:g} of the run", stage1_fraction_);
    return fmt::format(
        "StableMoE (stage {}): greedy top-1, gate σ(W x); stage 1 ({}) routes by W x with the "
        "balance loss α = {:g} and distils it (β = {:g}) into a token-id router K Q[id] of width "
        "{}, which routes frozen in stage 2 and in evaluation; {}",
        stage_, s1, alpha_, beta_, logits_->config().dim,
        capacity_factor_ > 0 ? fmt::format("capacity factor {:g}, position order (batch-dependent)",
                                           capacity_factor_)
                             : std::string("dropless"));
  }

  std::pair<int64_t, int64_t> scored_columns(const RouterInput& in) const override {
    return {routes_by_backbone(in) ? 0 : in.E, in.E};
  }
  void route(const RouterInput& in, RoutingPlan& plan) const override {
    const int64_t E = in.E, R = in.R;
    const int64_t block = routes_by_backbone(in) ? 0 : E;  // s, or ŝ
    plan.clear();
    plan.selection_counts.assign(size_t(R), 0.0);
    for (size_t g = 0; g < in.groups.size(); ++g) {
      const auto [begin, end] = in.groups[g];
      for (int64_t t = begin; t < end; ++t) {
        const float* z = in.logits + t * R;
        const int32_t e = first_argmax(z + block, E);
        plan.add(int32_t(t), e, int32_t(g), float(sigmoid(double(z[e]))));
        plan.selection_counts[size_t(e)] += 1.0;
      }
      plan.capacity.push_back(
          capacity_factor_ > 0
              ? int64_t(std::ceil(capacity_factor_ * double(end - begin) / double(E)))
              : 0);
    }
  }

  // The gate σ(s_{t,a}): u g (1 − g) on column a of the backbone block.
  void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight, const float*,
                float* d_logits) const override {
    backward_raw_scores(ScoreKind::Sigmoid, in, plan, d_weight, 1.0, d_logits);
  }

  // Stage-1 training only: L_bal + L_dis (docs/routers/stablemoe.md, section 2).
  double own_loss(const RouterInput& in, const RoutingPlan& plan, float* d_logits) const override {
    if (!routes_by_backbone(in) || in.T == 0) return 0.0;
    const int64_t T = in.T, E = in.E, R = in.R;
    const double mean = double(T) / double(E), scale_bal = alpha_ / double(T);
    double balance = 0.0;
    for (size_t a = 0; a < plan.size(); ++a) {  // dropped tokens too: c and σ are before drops
      const int64_t t = plan.token[a], e = plan.expert[a];
      const double coef = (plan.selection_counts[size_t(e)] - mean) / mean;  // no gradient
      const double g = sigmoid(double(in.logits[t * R + e]));
      balance += scale_bal * coef * g;
      if (d_logits) d_logits[t * R + e] += float(scale_bal * coef * g * (1.0 - g));
    }
    if (beta_ == 0.0) return balance;
    const double scale_dis = beta_ / double(T);
    double distill = 0.0;
    std::vector<double> p(static_cast<size_t>(E));
    for (int64_t t = 0; t < T; ++t) {
      const float* z = in.logits + t * R;
      const int32_t target = first_argmax(z, E);  // argmax s: an index, no gradient into s
      const float* zd = z + E;
      double max = double(zd[0]);
      for (int64_t j = 1; j < E; ++j) max = std::max(max, double(zd[j]));
      double sum = 0.0;
      for (int64_t j = 0; j < E; ++j) sum += (p[size_t(j)] = std::exp(double(zd[j]) - max));
      distill += scale_dis * (max + std::log(sum) - double(zd[target]));
      if (!d_logits) continue;
      for (int64_t j = 0; j < E; ++j)
        d_logits[t * R + E + j] +=
            float(scale_dis * (p[size_t(j)] / sum - (j == target ? 1.0 : 0.0)));
    }
    return balance + distill;
  }

  // S₁ from the run's length where stage1_steps is −1; a run whose S₁ has passed (S₁ = 0, or a
  // state from elsewhere) starts in stage 2.
  void set_schedule(const TrainingSchedule& schedule) override {
    if (schedule.total_steps <= 0)
      fail("router stablemoe: the run's schedule needs total_steps > 0, got {}",
           schedule.total_steps);
    total_steps_ = schedule.total_steps;
    if (stage_ == 1 && steps_ >= switch_step()) stage_ = 2;
  }
  // One optimiser step done: the code's num_updates; stage 2 from step S₁ on.
  void update_state(const RouterStepStats&) override {
    ++steps_;
    if (stage_ == 1 && steps_ >= switch_step()) stage_ = 2;
  }
  // Stage 2: the distilled router is frozen (the paper's "freeze it"; exact here, section 4).
  std::vector<std::string> frozen_tensors() const override {
    if (stage_ == 2) return {"token_embedding", "token_centroids"};
    return {};
  }
  nlohmann::json state() const override { return {{"steps", steps_}, {"stage", stage_}}; }
  void set_state(const nlohmann::json& state) override {
    const char* context = "router stablemoe state";
    if (!state.is_object() || !state.contains("steps") || !state.contains("stage"))
      fail("{}: needs {{\"steps\": n, \"stage\": 1 or 2}}, got {}", context, state.dump());
    const nlohmann::json &steps = state.at("steps"), &stage = state.at("stage");
    if (!steps.is_number_integer() || steps.get<int64_t>() < 0)
      fail("{}: steps = {} must be an integer >= 0", context, steps.dump());
    if (!stage.is_number_integer() || (stage.get<int64_t>() != 1 && stage.get<int64_t>() != 2))
      fail("{}: stage = {} must be 1 or 2", context, stage.dump());
    steps_ = steps.get<int64_t>();
    stage_ = stage.get<int64_t>();
  }

 private:
  bool routes_by_backbone(const RouterInput& in) const { return stage_ == 1 && in.training; }
  // S₁: stage1_steps, or ⌊stage1_fraction · total steps⌋ of the run's schedule.
  int64_t switch_step() const {
    if (stage1_steps_ >= 0) return stage1_steps_;
    if (total_steps_ > 0) return int64_t(std::floor(stage1_fraction_ * double(total_steps_)));
    fail(
        "router stablemoe: the switch to stage 2 is unknown: set stage1_steps (the run's schedule, "
        "which stage1_fraction = {:g} needs, was not given)",
        stage1_fraction_);
  }

  RouterTraits traits_;
  std::unique_ptr<DistilledLogits> logits_;
  double stage1_fraction_ = 0.1, alpha_ = 0.3, beta_ = 0.3, capacity_factor_ = 2.0;
  int64_t stage1_steps_ = -1, total_steps_ = 0;  // total_steps_: the schedule's, 0 = unknown
  int64_t stage_ = 1, steps_ = 0;  // the state: current stage, optimiser steps counted
};

}  // namespace

std::unique_ptr<Router> make_stablemoe(const nlohmann::json& p, const std::string& c) {
  return std::make_unique<StableMoERouter>(p, c);
}

}  // namespace switchyard::routers
