// Front end of the MoE layer: validation, routing, dispatch, experts, combine, backward.
#include <fmt/ranges.h>
#include <omp.h>
#include <switchyard/error.h>
#include <switchyard/moe_layer.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "core/huge_pages.h"
#include "kernels/cpu/kernels.h"
#include "layer/expert_backend.h"
#include "layer/global_routing.h"
#include "layer/layer_checks.h"
#include "layer/losses.h"
#include "layer/merged_experts.h"
#include "layer/token_dispatcher.h"

namespace switchyard {
namespace {

using layer::check_finite;
using layer::check_overflow;

cpu::Act act_of(const LayerConfig& c) {
  return layer::expert_activation(c.activation, c.swiglu_clamp);
}

std::vector<std::pair<int64_t, int64_t>> sequences_of(const std::vector<int64_t>& seq_lens,
                                                      int64_t T) {
  return routing_groups(RoutingGroups::Sequence, seq_lens, T);
}

}  // namespace

std::vector<int32_t> token_home_ranks(const ExpertPlacement& placement,
                                      const std::vector<int64_t>& seq_lens, int64_t T) {
  const std::vector<int64_t> lens = seq_lens.empty() ? std::vector<int64_t>{T} : seq_lens;
  const int64_t rows = int64_t(lens.size()), N = placement.ranks;
  std::vector<int32_t> rank;
  rank.reserve(size_t(T));
  for (int64_t b = 0; b < rows; ++b)  // rows [r rows / N, (r + 1) rows / N) are rank r's
    rank.insert(rank.end(), size_t(lens[size_t(b)]),
                int32_t((b * N / rows) % placement.expert_parallel));
  return rank;
}

std::vector<std::pair<int64_t, int64_t>> routing_groups(RoutingGroups mode,
                                                        const std::vector<int64_t>& seq_lens,
                                                        int64_t T) {
  if (mode == RoutingGroups::Batch || seq_lens.empty()) return {{0, T}};
  std::vector<std::pair<int64_t, int64_t>> groups;
  int64_t begin = 0;
  for (int64_t len : seq_lens) {
    groups.emplace_back(begin, begin + len);
    begin += len;
  }
  return groups;
}

RouterNoise make_router_noise(const LayerConfig& config, const RouterTraits& traits, int64_t T,
                              int64_t d, int64_t R, uint64_t call_index) {
  RouterNoise noise;
  if (!config.training && !traits.draws_at_inference) return noise;
  // Inference draws come from one fixed stream, call index 2^64 - 1, whatever the call.
  if (!config.training) call_index = ~uint64_t(0);
  std::mt19937_64 rng(config.seed * 0x9e3779b97f4a7c15ULL + call_index);
  auto uniform01 = [&] { return float(double(rng() >> 11) * 0x1.0p-53); };
  // (T, n) draws, n = uniform_draws (1 for most routers: the stream is unchanged).
  noise.uniform.resize(static_cast<size_t>(T * std::max<int64_t>(uniform_draws(traits, R), 1)));
  for (auto& u : noise.uniform) u = uniform01();
  if (traits.jitter > 0 && config.training) {
    noise.jitter.resize(size_t(T * d));
    for (auto& v : noise.jitter) v = float(1.0 - traits.jitter + 2.0 * traits.jitter * uniform01());
  }
  return noise;
}

namespace {

// What the router reads: this process's batch, or the global batch under routing across ranks.
RouterInput make_router_input(const MoEParams& p, const MoEBatch& batch, const MoECache& c,
                              int64_t R, int64_t E, int64_t F, bool training,
                              const ExpertPlacement& placement) {
  const bool global = c.global.active;
  const std::vector<float>& logits = global ? c.global.logits : c.logits;
  const int64_t* ids =
      global ? (c.global.token_ids.empty() ? nullptr : c.global.token_ids.data()) : batch.token_ids;
  RouterInput in{logits.empty() ? nullptr : logits.data(),
                 c.routing_tokens(),
                 R,
                 E,
                 p.gate_bias,
                 ids,
                 c.noise.uniform.empty() ? nullptr : c.noise.uniform.data(),
                 global ? c.global.groups : c.groups,
                 training,
                 global ? nullptr : batch.forced_experts,
                 global ? 0 : batch.forced_k};
  in.F = F;
  if (in.T > 0 && !c.noise.uniform.empty())
    in.uniforms_per_token = int64_t(c.noise.uniform.size()) / in.T;
  if (!c.token_importance.empty()) in.token_importance = c.token_importance.data();
  if (!global) {
    in.sequences = c.sequences.data();
    in.num_sequences = int64_t(c.sequences.size());
  }
  if (!c.token_rank.empty()) {
    in.token_rank = c.token_rank.data();
    in.ranks = placement.expert_parallel;
    in.ranks_per_node = placement.ranks_per_node;
  }
  return in;
}

LossInput make_loss_input(const MoEBatch& batch, const MoECache& c, int64_t R, ScoreKind score) {
  if (!c.global.active)
    return LossInput{c.logits.data(),    c.T, R, score, &c.plan, sequences_of(batch.seq_lens, c.T),
                     batch.global_counts};
  const int64_t T = c.global.T;
  return LossInput{
      c.global.logits.data(), T, R, score, &c.global.plan, sequences_of(c.global.seq_lens, T),
      batch.global_counts};
}

}  // namespace

void MoELayer::set_placement(const ExpertPlacement& placement) {
  if (shape_.E % placement.expert_parallel != 0)
    fail("moe_layer: expert_parallel = {} does not divide the {} experts",
         placement.expert_parallel, shape_.E);
  config_.placement = placement;
}

void MoELayer::set_routing_communicator(dist::Communicator* comm) {
  if (comm && comm->size() > 1 && shape_.gate_in > 0)
    fail(
        "moe_layer: router '{}' feeds its own activations to the experts' gate projection; "
        "routing across ranks does not carry them yet",
        config_.router);
  if (comm && comm->size() > 1 && router_->traits().elastic_width)
    fail(
        "moe_layer: router '{}' gives each assignment a hidden width; routing across ranks does "
        "not carry the widths yet",
        config_.router);
  routing_comm_ = comm && comm->size() > 1 ? comm : nullptr;
}

MoELayer::MoELayer(const LayerConfig& config, const MoEShape& shape)
    : config_(config),
      shape_(shape),
      dispatcher_(std::make_unique<layer::LocalDispatcher>()),
      experts_(std::make_unique<layer::CpuExpertBackend>()) {
  if (shape.d <= 0 || shape.E <= 0 || shape.F <= 0 || shape.Fs < 0)
    fail("moe_layer: invalid shape d = {}, E = {}, F = {}, Fs = {} (all must be positive)", shape.d,
         shape.E, shape.F, shape.Fs);
  router_ = make_router(config.router, config.router_params, config.source);
  R_ = router_->num_outputs(shape.E);
  router_->check_shape(shape.E, config.source + " [router " + config.router + "]");
  if (const LogitFunction* lf = router_->logit_function()) {
    if (lf->needs_vocab() && shape.vocab <= 0)
      fail(
          "{}: router '{}' reads token ids and needs the vocabulary size (layer.json's "
          "\"vocab_size\"; a model sets it from its vocab_size)",
          config.source, config.router);
    router_specs_ = lf->tensors(LogitShape{shape.d, R_, shape.vocab});
    // The experts' gate projection reads the logit function's activations (AoE): w1's input.
    shape_.gate_in = lf->expert_gate_input_dim(shape.d, R_);
  } else {
    shape_.gate_in = 0;
  }
  if (router_->traits().elastic_width &&
      (shape_.gate_in > 0 || router_->traits().pooled_per_sequence))
    fail(
        "{}: router '{}' gives each assignment a hidden width, which the experts' gate inputs and "
        "merged experts do not support",
        config.source, config.router);
  if (router_->logit_function() && router_->traits().pooled_per_sequence)
    fail(
        "{}: router '{}' merges experts per sequence with gate.weight and cannot have its own "
        "logit function",
        config.source, config.router);
  if (config.placement.declared() && shape.E % config.placement.expert_parallel != 0)
    fail("{}: placement.expert_parallel = {} does not divide the {} experts", config.source,
         config.placement.expert_parallel, shape.E);
  const SwigluClamp& clamp = config.swiglu_clamp;
  if (config.activation == Activation::SwiGLUClamped &&
      !(clamp.alpha > 0 && clamp.limit > 0 && std::isfinite(clamp.alpha) &&
        std::isfinite(clamp.limit)))
    fail("{}: swiglu_alpha = {} and swiglu_limit = {} must be positive", config.source, clamp.alpha,
         clamp.limit);
  const LossConfig& losses = config.losses;
  const bool any_loss = losses.balance > 0 || losses.z > 0 || losses.entropy > 0;
  if (any_loss && !router_->traits().supports_losses)
    fail(
        "{}: router '{}' does not support the balance, z or entropy losses; set their "
        "coefficients to 0",
        config.source, config.router);
  if (losses.balance > 0 && losses.balance_mode == BalanceMode::Sequence &&
      (R_ != shape.E || losses.balance_top1_only))
    fail("{}: balance_mode 'sequence' is not supported with null experts or balance_top1_only",
         config.source);
}

MoELayer::~MoELayer() = default;

void MoELayer::set_dispatcher(std::unique_ptr<layer::TokenDispatcher> dispatcher) {
  if (!dispatcher) fail("moe_layer: set_dispatcher needs a dispatcher");
  if (router_->traits().pooled_per_sequence)
    fail("moe_layer: router '{}' merges experts per sequence and has no dispatcher",
         config_.router);
  // The gate-input rows (MoECache::gate_in) are gathered from this process's tokens: a
  // dispatcher that moves rows to other ranks would have to move them too.
  if (shape_.gate_in > 0 && !dynamic_cast<layer::LocalDispatcher*>(dispatcher.get()))
    fail(
        "moe_layer: router '{}' feeds its own activations to the experts' gate projection "
        "(experts.w1 is (E, F, {})); expert parallelism does not carry them yet",
        config_.router, shape_.gate_in);
  if (router_->traits().elastic_width && !dynamic_cast<layer::LocalDispatcher*>(dispatcher.get()))
    fail(
        "moe_layer: router '{}' gives each assignment a hidden width; expert parallelism does not "
        "carry the widths yet",
        config_.router);
  dispatcher_ = std::move(dispatcher);
}

void MoELayer::validate(const MoEParams& p, const MoEBatch& batch, bool check_weights) const {
  const auto& s = shape_;
  const RouterTraits& traits = router_->traits();
  if (batch.T <= 0) fail("moe_layer: x must have at least one token, got T = {}", batch.T);
  if (!batch.x) fail("moe_layer: x (T, d) is missing");
  check_finite("x", batch.x, batch.T * s.d, s.d);
  if (const LogitFunction* lf = router_->logit_function()) {
    const std::vector<RouterTensorSpec>& specs = router_specs_;
    for (size_t i = 0; i < specs.size(); ++i) {
      const std::string name = "router." + specs[i].name;
      if (!p.router || !p.router[i])
        fail("moe_layer: router '{}' needs {} ({})", config_.router, name,
             fmt::join(specs[i].shape, ", "));
      int64_t n = 1;
      for (int64_t v : specs[i].shape) n *= v;
      if (check_weights) check_finite(name.c_str(), p.router[i], n, specs[i].shape.back());
    }
    if (const int64_t C = lf->carry_dim(s.d, R_); C > 0 && batch.router_carry)
      check_finite("router_carry", batch.router_carry, batch.T * C, C);
  } else if (batch.router_carry) {
    fail("moe_layer: router_carry is given but router '{}' carries no state across layers",
         config_.router);
  } else if (traits.needs_gate) {
    if (!p.gate) fail("moe_layer: router '{}' needs gate.weight ({}, {})", config_.router, R_, s.d);
    if (check_weights) check_finite("gate.weight", p.gate, R_ * s.d, s.d);
  }
  if (p.gate_bias && check_weights) check_finite("gate.bias", p.gate_bias, s.E, s.E);
  const bool bf16 = p.w1_bf16 != nullptr;
  if (bf16 && s.gate_in > 0)
    fail(
        "moe_layer: router '{}' feeds its own activations to the experts' gate projection; the "
        "BF16 experts do not take them",
        config_.router);
  if (bf16 && (p.w1 || p.w2 || p.w3 || !p.w2_bf16 || traits.pooled_per_sequence))
    fail(
        "moe_layer: BF16 experts need w1_bf16 and w2_bf16 and no float32 experts, and a router "
        "that routes tokens ('{}' with BF16 experts)",
        config_.router);
  if (bf16 && traits.elastic_width)
    fail(
        "moe_layer: router '{}' gives each assignment a hidden width; the BF16 experts run every "
        "hidden unit (use float32 experts)",
        config_.router);
  const bool swiglu = has_up_projection(config_.activation);
  const bool per_expert = p.w1_experts || p.w2_experts || p.w3_experts;
  if (per_expert && (p.w1 || p.w2 || p.w3 || bf16 || !p.w1_experts || !p.w2_experts ||
                     swiglu != (p.w3_experts != nullptr)))
    fail(
        "moe_layer: per-expert weights need experts.w1 and experts.w2 per expert{} and no stacked "
        "or BF16 experts",
        swiglu ? " and experts.w3" : "");
  if (per_expert && traits.pooled_per_sequence)
    fail("moe_layer: router '{}' merges all experts and needs them stacked, not per expert",
         config_.router);
  if (!bf16 && !per_expert && (!p.w1 || !p.w2))
    fail("moe_layer: experts.w1 and experts.w2 are required");
  if (check_weights && !bf16 && !per_expert) {
    check_finite("experts.w1", p.w1, s.E * s.F * s.w1_in(), s.w1_in());
    check_finite("experts.w2", p.w2, s.E * s.d * s.F, s.F);
  }
  if (per_expert)
    for (int64_t e = 0; e < s.E; ++e) {
      const bool w1 = p.w1_experts[e], w2 = p.w2_experts[e], w3 = swiglu && p.w3_experts[e];
      if (w1 != w2 || (swiglu && w1 != w3))
        fail("moe_layer: expert {} has some of its per-expert weights but not all", e);
      if (!check_weights || !w1) continue;
      check_finite("experts.w1 (an expert's)", p.w1_experts[e], s.F * s.w1_in(), s.w1_in());
      check_finite("experts.w2 (an expert's)", p.w2_experts[e], s.d * s.F, s.F);
      if (swiglu) check_finite("experts.w3 (an expert's)", p.w3_experts[e], s.F * s.d, s.d);
    }
  const bool has_w3 = bf16 ? p.w3_bf16 != nullptr : (p.w3 != nullptr || p.w3_experts != nullptr);
  if (swiglu != has_w3)
    fail("moe_layer: experts.w3 is {} but the activation is {}", has_w3 ? "given" : "missing",
         activation_name(config_.activation));
  if (p.w3 && check_weights) check_finite("experts.w3", p.w3, s.E * s.F * s.d, s.d);
  if (s.Fs > 0) {
    if (!p.shared_w1 || !p.shared_w2 || swiglu != (p.shared_w3 != nullptr))
      fail("moe_layer: the shared expert needs shared.w1, shared.w2{}",
           swiglu ? ", shared.w3" : "");
    if (check_weights) check_finite("shared.w1", p.shared_w1, s.Fs * s.d, s.d);
    if (check_weights) check_finite("shared.w2", p.shared_w2, s.d * s.Fs, s.Fs);
    if (p.shared_w3 && check_weights) check_finite("shared.w3", p.shared_w3, s.Fs * s.d, s.d);
    if (p.shared_gate && check_weights) check_finite("shared.gate", p.shared_gate, s.d, s.d);
  } else if (p.shared_gate) {
    fail("moe_layer: shared.gate is given but the layer has no shared expert (Fs = 0)");
  }
  if (batch.forced_experts) {
    if (!traits.supports_forced)
      fail(
          "moe_layer: router '{}' cannot replay recorded routing (forced experts); use a top-k "
          "router",
          config_.router);
    for (int64_t i = 0; i < batch.T * batch.forced_k; ++i)
      if (batch.forced_experts[i] < -1 || batch.forced_experts[i] >= s.E)
        fail("moe_layer: forced expert {} at token {} is not an expert id in [0, {})",
             batch.forced_experts[i], i / batch.forced_k, s.E);
  }
  if (traits.needs_token_ids) {
    if (!batch.token_ids)
      fail("moe_layer: router '{}' needs token_ids (T = {})", config_.router, batch.T);
    for (int64_t t = 0; t < batch.T; ++t)
      if (batch.token_ids[t] < 0)
        fail("moe_layer: token_ids[{}] = {} is negative", t, batch.token_ids[t]);
  }
  if (traits.needs_token_importance) {
    if (!batch.token_importance)
      fail(
          "moe_layer: router '{}' needs token_importance (T = {}), a per-token importance >= 0 "
          "(a model gives its attention's; a layer file the tensor token_importance)",
          config_.router, batch.T);
    for (int64_t t = 0; t < batch.T; ++t)
      if (!std::isfinite(batch.token_importance[t]) || batch.token_importance[t] < 0.0f)
        fail("moe_layer: token_importance[{}] = {} must be finite and >= 0", t,
             batch.token_importance[t]);
  } else if (batch.token_importance) {
    fail("moe_layer: token_importance is given but router '{}' does not read it", config_.router);
  }
  // A logit function indexes its tensors by id: every id must lie in the vocabulary.
  if (const LogitFunction* lf = router_->logit_function(); lf && lf->needs_vocab()) {
    if (!batch.token_ids)
      fail("moe_layer: router '{}' reads token ids and needs token_ids (T = {})", config_.router,
           batch.T);
    for (int64_t t = 0; t < batch.T; ++t)
      if (batch.token_ids[t] < 0 || batch.token_ids[t] >= s.vocab)
        fail("moe_layer: token_ids[{}] = {} is outside the vocabulary [0, {})", t,
             batch.token_ids[t], s.vocab);
  }
  int64_t total = 0;
  for (size_t i = 0; i < batch.seq_lens.size(); ++i) {
    if (batch.seq_lens[i] <= 0)
      fail("moe_layer: seq_lens[{}] = {} must be positive", i, batch.seq_lens[i]);
    total += batch.seq_lens[i];
  }
  if (!batch.seq_lens.empty() && total != batch.T)
    fail("moe_layer: seq_lens sum to {} but x has T = {} tokens", total, batch.T);
  if (batch.global_counts) {
    if (config_.losses.balance_mode != BalanceMode::GlobalBatch)
      fail("moe_layer: global_counts given but the balance loss is not in global_batch mode");
    for (int64_t j = 0; j < R_; ++j)
      if (!std::isfinite(batch.global_counts[j]) || batch.global_counts[j] < 0)
        fail("moe_layer: global_counts[{}] = {} must be a finite count >= 0", j,
             batch.global_counts[j]);
  }
}

void MoELayer::reserve(MoECache& c, int64_t rows) const {
  const int64_t d = shape_.d, F = shape_.F;
  const bool swiglu = act_of(config_).has_up();
  for (auto [buffer, size] : {std::pair{&c.xd, rows * d},
                              {&c.h1, rows * F},
                              {&c.h3, swiglu ? rows * F : 0},
                              {&c.act, rows * F},
                              {&c.out, rows * d}}) {
    resize_on_huge_pages(*buffer, size_t(size));  // touched here: faulted in once
    buffer->clear();                              // the capacity stays
  }
}

const RoutingStats& MoELayer::forward(const MoEParams& p, const MoEBatch& batch, MoECache& c,
                                      float* y) {
  // Weights are not scanned on every call (100 MB for a fine-grained layer); a non-finite weight
  // that is used shows up in the logits or y checks below.
  validate(p, batch, /*check_weights=*/false);
  const int64_t T = batch.T, d = shape_.d, E = shape_.E, R = R_;
  const RouterTraits& traits = router_->traits();
  const cpu::Act act = act_of(config_);
  c.T = T;
  dist::Communicator* const global = routing_comm_;
  c.global.active = false;
  if (global) {
    if (traits.pooled_per_sequence)
      fail("moe_layer: {} merges experts per sequence and cannot route across ranks",
           config_.router);
    if (batch.forced_experts) fail("moe_layer: forced routing does not run across ranks");
    if (traits.needs_token_importance)
      fail(
          "moe_layer: router '{}' reads token_importance, which routing across ranks does not "
          "gather yet",
          config_.router);
    layer::gather_batch(*global, batch, traits.needs_token_ids, c);
  }
  // Noise of the routed batch (the global one across ranks); this rank's rows start at `first`.
  const int64_t routed_T = global ? c.global.T : T, first = global ? c.global.offset : 0;
  c.noise = make_router_noise(config_, traits, routed_T, d, R_, calls_++);
  const float* jitter = c.noise.jitter.empty() ? nullptr : c.noise.jitter.data() + first * d;
  RoutingStats& stats = c.stats;
  stats = RoutingStats{};
  // Wall time per phase, for the routing-overhead figures (stats.phase_ms).
  auto clock = std::chrono::steady_clock::now();
  auto lap = [&](const char* phase) {
    const auto now = std::chrono::steady_clock::now();
    stats.phase_ms[phase] += std::chrono::duration<double, std::milli>(now - clock).count();
    clock = now;
  };

  // Shared expert first: it writes y, the routed experts add to it.
  if (shape_.Fs > 0) {
    c.shared_h1.resize(size_t(T * shape_.Fs));
    c.shared_h3.resize(act.has_up() ? size_t(T * shape_.Fs) : 0);
    c.shared_act.resize(size_t(T * shape_.Fs));
    // Gated (Qwen2-MoE): the output is kept for backward and scaled per token by σ(x · g).
    float* out = y;
    if (p.shared_gate) {
      c.shared_out.resize(size_t(T * d));
      c.shared_gate.resize(size_t(T));
      out = c.shared_out.data();
    } else {
      c.shared_out.clear();
      c.shared_gate.clear();
    }
    cpu::ffn_forward(act, T, d, shape_.Fs, batch.x, p.shared_w1, p.shared_w3, p.shared_w2,
                     c.shared_h1.data(), c.shared_h3.data(), c.shared_act.data(), out);
    if (p.shared_gate) {
      cpu::gemm(false, true, T, 1, d, 1.0f, batch.x, d, p.shared_gate, d, 0.0f,
                c.shared_gate.data(), 1);
      for (int64_t t = 0; t < T; ++t) {
        const float g = 1.0f / (1.0f + std::exp(-c.shared_gate[size_t(t)]));
        c.shared_gate[size_t(t)] = g;
        for (int64_t j = 0; j < d; ++j) y[t * d + j] = g * out[t * d + j];
      }
    }
  } else {
    std::fill(y, y + T * d, 0.0f);
  }

  if (traits.pooled_per_sequence) {
    layer::merged_experts_forward(*router_, config_.training, act, shape_, R, p, batch, c, y,
                                  stats);
    return stats;
  }

  lap("shared_expert");
  // Router.
  c.groups = routing_groups(config_.routing_groups, batch.seq_lens, T);
  c.sequences = sequences_of(batch.seq_lens, T);
  if (traits.needs_token_importance)  // kept: backward routes from the cache, not the batch
    c.token_importance.assign(batch.token_importance, batch.token_importance + T);
  else
    c.token_importance.clear();
  const float* router_input = batch.x;
  if (jitter) {
    c.router_in.resize(size_t(T * d));
    cpu::multiply(T * d, batch.x, jitter, c.router_in.data());
    router_input = c.router_in.data();
  } else {
    c.router_in.clear();
  }
  if (traits.needs_gate) {
    c.logits.resize(size_t(T * R));
    if (const LogitFunction* lf = router_->logit_function()) {
      LogitCarry carry;
      if (const int64_t C = lf->carry_dim(d, R); C > 0) {
        c.router_carry.resize(size_t(T * C));
        carry = {batch.router_carry, c.router_carry.data()};
      } else {
        c.router_carry.clear();
      }
      const LogitContext context{batch.token_ids, shape_.vocab, c.sequences.data(),
                                 int64_t(c.sequences.size())};
      lf->forward(T, d, R, router_input, p.router, context, carry, c.logits.data(), c.logit_saved);
      check_overflow("router logits (the router's logit function)", c.logits.data(), T * R, R);
    } else {
      cpu::gemm(false, true, T, R, d, 1.0f, router_input, d, p.gate, d, 0.0f, c.logits.data(), R);
      check_overflow("router logits x gate.weight^T", c.logits.data(), T * R, R);
    }
    if (global) layer::gather_logits(*global, c.logits.data(), R, c);
  } else {
    c.logits.clear();
    c.global.logits.clear();
  }
  if (global) c.global.groups = routing_groups(config_.routing_groups, c.global.seq_lens, routed_T);
  c.token_rank.clear();
  if (traits.needs_placement) {
    if (!config_.placement.declared())
      fail(
          "moe_layer: router {} routes by locality and needs to know where tokens and experts "
          "sit: declare \"placement\": {{\"ranks\": N, \"expert_parallel\": P, "
          "\"ranks_per_node\": G}} in {}, or train across ranks (mpirun ... --expert-parallel P)",
          config_.router, config_.source);
    c.token_rank =
        token_home_ranks(config_.placement, global ? c.global.seq_lens : batch.seq_lens, routed_T);
  }
  RouterInput in =
      make_router_input(p, batch, c, R, E, shape_.F, config_.training, config_.placement);
  // Dense scoring: every expert on every token first, the router routes from their outputs.
  c.dense = router_->dense_scoring(in);
  if (c.dense && traits.elastic_width)
    fail(
        "moe_layer: router '{}' asks for dense scoring and per-assignment widths together, which "
        "the layer does not run",
        config_.router);
  if (c.dense && global)
    fail(
        "moe_layer: router '{}' runs every expert on every token on this call (dense scoring); "
        "routing across ranks does not carry the experts' outputs",
        config_.router);
  if (c.dense) {
    dense_forward(p, batch, c);
    in.responses = c.responses.data();
    in.d = d;
    lap("dense_experts");
  } else {
    c.dense_plan.clear();
    c.responses.clear();
    c.dense_row.clear();
  }
  if (global) {
    router_->route(in, c.global.plan);
    layer::take_local_plan(E, ws_slots_, ws_offsets_, ws_rows_, c);
  } else {
    router_->route(in, c.plan);
  }
  RoutingPlan& plan = c.plan;
  check_widths(plan);
  const RoutingPlan& chosen = c.routing_plan();  // before dispatch: kept == 0 is the router's
  stats.declined = std::count(chosen.kept.begin(), chosen.kept.end(), uint8_t{0});

  lap("route");
  int64_t rows = 0;
  if (c.dense) {
    for (int64_t cap : plan.capacity)
      if (cap != 0)
        fail("moe_layer: router '{}' set a capacity on a dense-scoring call, which is dropless",
             config_.router);
    rows = std::count(plan.kept.begin(), plan.kept.end(), uint8_t{1});
    dense_combine(c, y);
  } else {
    // Dispatch (capacity, grouping by expert, the rows to their experts), the experts, combine.
    rows = dispatcher_->dispatch_preprocess(plan, batch.x, T, d, E, c);
    dispatcher_->dispatch_communicate(d, c);
    dispatcher_->dispatch_postprocess(d, c);
    gather_gate_inputs(c);
    if (p.w1_experts)
      for (int64_t e = 0; e < E; ++e)
        if (!p.w1_experts[e] && c.expert_offsets[size_t(e) + 1] > c.expert_offsets[size_t(e)])
          fail("moe_layer: {} rows are routed to expert {}, which this process does not hold",
               c.expert_offsets[size_t(e) + 1] - c.expert_offsets[size_t(e)], e);
    lap("dispatch");
    experts_->forward(act, shape_, p, c);
    lap("experts");
    dispatcher_->combine(c, T, d, y);
  }
  if (!plan.passthrough.empty()) cpu::add_scaled_rows(T, d, plan.passthrough.data(), batch.x, y);

  lap("combine");
  // Statistics and losses, of the routed (global) batch.
  const RoutingPlan& routed = c.routing_plan();
  const int64_t routed_A = int64_t(routed.size()), routed_rows = global ? c.global.kept : rows;
  stats.tokens_per_expert.resize(static_cast<size_t>(E));
  if (global || c.dense) {
    std::fill(stats.tokens_per_expert.begin(), stats.tokens_per_expert.end(), 0);
    for (int64_t a = 0; a < routed_A; ++a)
      if (routed.kept[size_t(a)]) ++stats.tokens_per_expert[size_t(routed.expert[size_t(a)])];
  } else {
    for (int64_t e = 0; e < E; ++e)
      stats.tokens_per_expert[size_t(e)] =
          c.expert_offsets[size_t(e) + 1] - c.expert_offsets[size_t(e)];
  }
  stats.assignments = routed_A;
  stats.dropped = routed_A - routed_rows;
  const double mean = double(routed_rows) / double(E);
  if (mean > 0) {
    double max = 0.0, var = 0.0;
    for (int64_t n : stats.tokens_per_expert) {
      max = std::max(max, double(n));
      var += (double(n) - mean) * (double(n) - mean) / double(E);
    }
    stats.max_vio = (max - mean) / mean;
    stats.cv = std::sqrt(var) / mean;
  }
  stats.experts_per_token = double(routed_rows) / double(routed_T);
  stats.hidden_per_token = stats.experts_per_token;
  if (!c.row_width.empty()) {
    double units = 0.0;
    for (int32_t w : c.row_width) units += double(w);
    stats.hidden_per_token = units / double(shape_.F) / double(routed_T);
  }
  if (traits.needs_gate) {
    const LossInput li = make_loss_input(batch, c, R, traits.score);
    stats.entropy = mean_router_entropy(li, router_->scored_columns(in));
    stats.aux_loss = aux_losses(config_.losses, li, stats.losses, nullptr);
    const double own = router_->own_loss(in, routed, nullptr);
    if (traits.has_own_loss) {
      stats.losses["router"] = own;
      stats.aux_loss += own;
    }
  }
  check_overflow("y", y, T * d, d);
  lap("statistics");
  return stats;
}

void MoELayer::check_widths(const RoutingPlan& plan) const {
  if (!router_->traits().elastic_width) {
    if (!plan.width.empty())
      fail("moe_layer: router '{}' set hidden widths but its traits do not say elastic_width",
           config_.router);
    return;
  }
  if (plan.width.size() != plan.size())
    fail("moe_layer: router '{}' gave {} hidden widths for {} assignments", config_.router,
         plan.width.size(), plan.size());
  for (size_t a = 0; a < plan.size(); ++a)
    if (plan.width[a] < 1 || plan.width[a] > shape_.F)
      fail("moe_layer: router '{}' gave assignment {} the hidden width {}, outside [1, F = {}]",
           config_.router, a, plan.width[a], shape_.F);
}

void MoELayer::dense_forward(const MoEParams& p, const MoEBatch& batch, MoECache& c) {
  const int64_t T = c.T, d = shape_.d, E = shape_.E;
  if (shape_.gate_in > 0 || batch.forced_experts || p.w1_experts ||
      !dynamic_cast<layer::LocalDispatcher*>(dispatcher_.get()))
    fail(
        "moe_layer: router '{}' runs every expert on every token on some training calls (dense "
        "scoring), which needs local stacked experts: no expert parallelism, per-expert weights, "
        "gate inputs or forced experts",
        config_.router);
  // The dense plan: assignment t E + e sends token t to expert e, no capacity.
  RoutingPlan& dense = c.dense_plan;
  dense.clear();
  for (size_t g = 0; g < c.groups.size(); ++g) {
    for (int64_t t = c.groups[g].first; t < c.groups[g].second; ++t)
      for (int64_t e = 0; e < E; ++e) dense.add(int32_t(t), int32_t(e), int32_t(g), 1.0f);
    dense.capacity.push_back(0);
  }
  dispatcher_->dispatch_preprocess(dense, batch.x, T, d, E, c);
  dispatcher_->dispatch_communicate(d, c);
  dispatcher_->dispatch_postprocess(d, c);
  c.gate_in.clear();
  experts_->forward(act_of(config_), shape_, p, c);
  // The rows' outputs, token by token: responses (T, E, d); dense_row (T E) their rows.
  const int64_t rows = int64_t(c.row_assignment.size());
  c.responses.resize(size_t(T * E * d));
  c.dense_row.assign(size_t(T * E), -1);
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t a = c.row_assignment[size_t(i)];
    const int64_t pair = int64_t(dense.token[size_t(a)]) * E + dense.expert[size_t(a)];
    c.dense_row[size_t(pair)] = int32_t(i);
    std::copy_n(c.out.data() + i * d, d, c.responses.data() + pair * d);
  }
}

void MoELayer::dense_combine(const MoECache& c, float* y) const {
  const int64_t d = shape_.d, E = shape_.E;
  const RoutingPlan& plan = c.plan;
  for (size_t a = 0; a < plan.size(); ++a) {
    if (!plan.kept[a]) continue;
    const float w = plan.weight[a];
    const float* o = c.responses.data() + (int64_t(plan.token[a]) * E + plan.expert[a]) * d;
    float* yt = y + int64_t(plan.token[a]) * d;
    for (int64_t j = 0; j < d; ++j) yt[j] += w * o[j];
  }
}

void MoELayer::dense_backward_rows(const MoEParams& p, const MoEBatch& batch, const MoECache& c,
                                   const float* dy, float aux_weight, float* d_weight,
                                   float* dout) const {
  const int64_t T = c.T, d = shape_.d, E = shape_.E;
  const RoutingPlan& plan = c.plan;
  // ∂L/∂responses (T, E, d): w · dy from the combine, then the router's share.
  std::vector<float> d_resp(size_t(T * E * d), 0.0f);
  for (size_t a = 0; a < plan.size(); ++a) {
    if (!plan.kept[a]) continue;
    const int64_t t = plan.token[a], pair = t * E + plan.expert[a];
    const float* o = c.responses.data() + pair * d;
    const float* dyt = dy + t * d;
    float* dr = d_resp.data() + pair * d;
    double u = 0.0;
    for (int64_t j = 0; j < d; ++j) {
      u += double(dyt[j]) * double(o[j]);
      dr[j] += plan.weight[a] * dyt[j];
    }
    d_weight[a] = float(u);
  }
  RouterInput in =
      make_router_input(p, batch, c, R_, E, shape_.F, config_.training, config_.placement);
  in.responses = c.responses.data();
  in.d = d;
  router_->backward_responses(in, plan, d_weight, double(aux_weight), d_resp.data());
  // Back to the dense rows.
  for (int64_t pair = 0; pair < T * E; ++pair)
    std::copy_n(d_resp.data() + pair * d, d, dout + int64_t(c.dense_row[size_t(pair)]) * d);
}

void MoELayer::gather_gate_inputs(MoECache& c) const {
  const int64_t r = shape_.gate_in, R = R_;
  if (r == 0) {
    c.gate_in.clear();
    return;
  }
  const float* a = router_->logit_function()->expert_gate_inputs(c.logit_saved);  // (T, R, r)
  const int64_t rows = int64_t(c.row_token.size());
  c.gate_in.resize(size_t(rows * r));
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t t = c.row_token[size_t(i)];
    const int64_t e = c.plan.expert[size_t(c.row_assignment[size_t(i)])];
    std::copy_n(a + (t * R + e) * r, r, c.gate_in.data() + i * r);
  }
}

int64_t MoELayer::router_carry_dim() const {
  const LogitFunction* lf = router_->logit_function();
  return lf ? lf->carry_dim(shape_.d, R_) : 0;
}

void MoELayer::backward(const MoEParams& p, const MoEBatch& batch, const MoECache& c,
                        const float* dy, float* dx, const MoEGrads& g, float aux_weight,
                        const float* d_router_carry) {
  const int64_t T = batch.T, d = shape_.d, E = shape_.E, R = R_;
  if (T != c.T) fail("moe_layer backward: the batch has T = {} but forward saw T = {}", T, c.T);
  if (p.w1_bf16) fail("moe_layer backward: BF16 experts are for inference (forward only)");
  const RouterTraits& traits = router_->traits();
  const cpu::Act act = act_of(config_);
  const bool swiglu = act.has_up();
  const RoutingPlan& plan = c.plan;
  check_finite("dy", dy, T * d, d);
  std::fill(dx, dx + T * d, 0.0f);
  std::vector<float> d_logits(c.logits.size(), 0.0f);  // (T, R) or (S, R)
  std::vector<float> d_weight(plan.size(), 0.0f);      // (A)

  if (shape_.Fs > 0) {
    std::vector<float> dact(size_t(T * shape_.Fs)), dh3(swiglu ? size_t(T * shape_.Fs) : 0);
    std::vector<float> dxs(size_t(T * d));
    // Gated: the FFN sees g_t dy_t, and the gate's logit gets g (1 - g) <dy_t, out_t>.
    const float* d_out = dy;
    std::vector<float> gated_dy, d_gate_logit;
    if (p.shared_gate) {
      if (c.shared_gate.size() != size_t(T))
        fail("moe_layer backward: shared.gate is given but forward ran without it");
      gated_dy.resize(size_t(T * d));
      d_gate_logit.resize(size_t(T));
      for (int64_t t = 0; t < T; ++t) {
        const float gt = c.shared_gate[size_t(t)];
        double u = 0.0;
        for (int64_t j = 0; j < d; ++j) {
          gated_dy[size_t(t * d + j)] = gt * dy[t * d + j];
          u += double(dy[t * d + j]) * double(c.shared_out[size_t(t * d + j)]);
        }
        d_gate_logit[size_t(t)] = float(u * double(gt) * (1.0 - double(gt)));
      }
      d_out = gated_dy.data();
      if (g.shared_gate)
        cpu::gemm(true, false, 1, d, T, 1.0f, d_gate_logit.data(), 1, batch.x, d, 0.0f,
                  g.shared_gate, d);
    }
    cpu::ffn_backward(act, T, d, shape_.Fs, batch.x, p.shared_w1, p.shared_w3, p.shared_w2,
                      c.shared_h1.data(), c.shared_h3.data(), c.shared_act.data(), d_out,
                      dact.data(), dh3.data(), g.shared_w1, g.shared_w3, g.shared_w2, dxs.data(),
                      false);
    for (int64_t i = 0; i < T * d; ++i) dx[i] += dxs[size_t(i)];
    for (int64_t t = 0; t < T && p.shared_gate; ++t)
      for (int64_t j = 0; j < d; ++j) dx[t * d + j] += d_gate_logit[size_t(t)] * p.shared_gate[j];
  }

  if (traits.pooled_per_sequence) {
    layer::merged_experts_backward(*router_, config_.training, act, shape_, R, p, batch, c, dy,
                                   d_weight, d_logits, dx, g);
    return;
  }

  // Routed experts: dout = w · dy per row, u = <dy, out> per row for the router; dout and dxd
  // are the experts' rows (another process's rows under expert parallelism).
  const int64_t rows = int64_t(c.xd.size()) / d;
  auto take = [](std::vector<float>& v, int64_t n) {
    if (v.size() < size_t(n)) v.resize(size_t(n));
    return v.data();
  };
  float* dout = take(ws_dout_, rows * d);  // (rows, d)
  float* dxd = take(ws_dxd_, rows * d);    // (rows, d)
  if (c.dense) {
    dense_backward_rows(p, batch, c, dy, aux_weight, d_weight.data(), dout);
  } else {
    dispatcher_->combine_backward(c, dy, d, dout, d_weight.data());
  }
  const int64_t r = shape_.gate_in;
  float* dgate_rows = r > 0 ? take(ws_dgate_rows_, rows * r) : nullptr;  // (rows, r)
  experts_->backward(act, shape_, p, c, dout, g, dxd, dgate_rows);
  dispatcher_->dispatch_backward(c, dxd, T, d, dx);
  // The gate inputs' gradient, back to the logit function's (T, R, r) activations (a row is one
  // (token, expert) pair, so rows do not collide).
  float* dgate = nullptr;
  if (r > 0) {
    ws_dgate_.assign(size_t(T * R * r), 0.0f);
    dgate = ws_dgate_.data();
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t t = c.row_token[size_t(i)];
      const int64_t e = plan.expert[size_t(c.row_assignment[size_t(i)])];
      std::copy_n(dgate_rows + i * r, r, dgate + (t * R + e) * r);
    }
  }

  std::vector<float> d_pass;
  if (!plan.passthrough.empty()) {
    d_pass.assign(size_t(T), 0.0f);
    cpu::add_scaled_rows_backward(T, d, plan.passthrough.data(), batch.x, dy, dx, d_pass.data());
  }

  if (!traits.needs_gate) {
    if (g.gate) std::fill(g.gate, g.gate + R * d, 0.0f);
    return;
  }
  RouterInput in =
      make_router_input(p, batch, c, R, E, shape_.F, config_.training, config_.placement);
  if (c.dense) {
    in.responses = c.responses.data();
    in.d = d;
  }
  const LossInput li = make_loss_input(batch, c, R, traits.score);
  std::map<std::string, double> unused;
  if (c.global.active) {
    // The router's backward over the global batch, from every rank's weight gradients; this
    // rank keeps its tokens' rows of ∂L/∂logits.
    std::vector<float> dw_global, dpass_global, dl_global(c.global.logits.size(), 0.0f);
    layer::gather_router_gradients(*routing_comm_, c, d_weight.data(),
                                   d_pass.empty() ? nullptr : d_pass.data(), dw_global,
                                   dpass_global);
    router_->backward(in, c.global.plan, dw_global.data(),
                      dpass_global.empty() ? nullptr : dpass_global.data(), dl_global.data());
    std::vector<float> d_aux(dl_global.size(), 0.0f);
    aux_losses(config_.losses, li, unused, d_aux.data());
    router_->own_loss(in, c.global.plan, d_aux.data());
    const size_t begin = size_t(c.global.offset * R);
    for (size_t i = 0; i < d_logits.size(); ++i)
      d_logits[i] = dl_global[begin + i] + aux_weight * d_aux[begin + i];
  } else {
    router_->backward(in, plan, d_weight.data(), d_pass.empty() ? nullptr : d_pass.data(),
                      d_logits.data());
    std::vector<float> d_aux(d_logits.size(), 0.0f);
    aux_losses(config_.losses, li, unused, d_aux.data());
    router_->own_loss(in, plan, d_aux.data());
    for (size_t i = 0; i < d_aux.size(); ++i) d_logits[i] += aux_weight * d_aux[i];
  }

  const float* router_input = c.router_in.empty() ? batch.x : c.router_in.data();
  float* dxr = take(ws_dxr_, T * d);  // (T, d)
  if (const LogitFunction* lf = router_->logit_function()) {
    if (d_router_carry)
      check_finite("d_router_carry", d_router_carry, int64_t(c.router_carry.size()), 1);
    const LogitCarryGrad carry{c.router_carry.empty() ? nullptr : d_router_carry,
                               c.router_carry.empty() ? nullptr : g.router_carry};
    const LogitContext context{batch.token_ids, shape_.vocab, c.sequences.data(),
                               int64_t(c.sequences.size())};
    lf->backward(T, d, R, router_input, p.router, context, c.logit_saved, carry, d_logits.data(),
                 dxr, g.router);
    if (dgate)
      lf->backward_gate_inputs(T, d, R, router_input, p.router, c.logit_saved, dgate, dxr,
                               g.router);
  } else {
    if (g.gate)
      cpu::gemm(true, false, R, d, T, 1.0f, d_logits.data(), R, router_input, d, 0.0f, g.gate, d);
    cpu::gemm(false, false, T, d, R, 1.0f, d_logits.data(), R, p.gate, d, 0.0f, dxr, d);
  }
  const int64_t first = c.global.active ? c.global.offset : 0;
  cpu::add_product(T * d, dxr, c.noise.jitter.empty() ? nullptr : c.noise.jitter.data() + first * d,
                   dx);
}

std::vector<float> MoELayer::combine_matrix(const MoECache& c) const {
  const int64_t E = shape_.E;
  std::vector<float> combine(size_t(c.T * E), 0.0f);
  const RoutingPlan& plan = c.plan;
  if (router_->traits().pooled_per_sequence) {
    // Plan rows are sequences: every token of a sequence gets its sequence's weights.
    for (size_t a = 0; a < plan.size(); ++a) {
      const auto [b, e] = c.sequences[size_t(plan.token[a])];
      for (int64_t t = b; t < e; ++t) combine[size_t(t * E + plan.expert[a])] = plan.weight[a];
    }
    return combine;
  }
  for (size_t a = 0; a < plan.size(); ++a)
    if (plan.kept[a]) combine[size_t(plan.token[a] * E + plan.expert[a])] += plan.weight[a];
  return combine;
}

void MoELayer::update_router_state(const MoECache& c, float* gate_bias) {
  update_router_state(router_step_stats(c, gate_bias));
}

void MoELayer::update_router_state(const RouterStepStats& stats) {
  router_->update_state(stats);
}

RouterStepStats MoELayer::router_step_stats(const MoECache& c, float* gate_bias) const {
  const int64_t E = shape_.E;
  RouterStepStats stats;
  stats.counts.assign(c.plan.selection_counts.begin(),
                      c.plan.selection_counts.begin() +
                          std::min<int64_t>(E, int64_t(c.plan.selection_counts.size())));
  stats.counts.resize(size_t(E), 0.0);
  // Rows of the routing (a dense-scoring call dispatched every pair, but routed the plan's).
  const double rows =
      double(c.global.active ? c.global.kept
             : c.dense       ? int64_t(std::count(c.plan.kept.begin(), c.plan.kept.end(), 1))
                             : int64_t(c.row_assignment.size()));
  stats.zero_fraction = 1.0 - rows / (double(c.routing_tokens()) * double(E));
  stats.model_zero_fraction = stats.zero_fraction;
  stats.bias = gate_bias;
  stats.E = E;
  return stats;
}

}  // namespace switchyard
