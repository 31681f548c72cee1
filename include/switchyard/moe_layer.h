// The MoE layer: router -> dispatch (tokens grouped by expert) -> expert FFNs -> combine, with an
// explicit backward. Float32 on the CPU. The front end (this class) validates; kernels only
// compute.
#pragma once

#include <switchyard/config.h>
#include <switchyard/router.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace switchyard {
namespace layer {
class TokenDispatcher;
class ExpertBackend;
}  // namespace layer
namespace dist {
class Communicator;
}  // namespace dist

struct MoEShape {
  int64_t d = 0;   // model width
  int64_t E = 0;   // routed experts
  int64_t F = 0;   // expert hidden width
  int64_t Fs = 0;  // shared expert hidden width, 0 = none
  // Token-id vocabulary, for a logit function that reads ids (LogitFunction::needs_vocab): the
  // model's vocab_size, layer.json's vocab_size; 0 = unknown.
  int64_t vocab = 0;
  // Input width of the experts' gate projection w1 where the router's logit function supplies
  // the gate inputs (LogitFunction::expert_gate_input_dim, Autonomy-of-Experts): w1 is (E, F,
  // gate_in). 0: w1 reads x, (E, F, d). MoELayer sets it from its router; read it from shape().
  int64_t gate_in = 0;
  int64_t w1_in() const { return gate_in > 0 ? gate_in : d; }
};

// Parameter views (not owned). Weights use PyTorch's (out, in) layout.
struct MoEParams {
  const float* gate = nullptr;       // (R, d); null for routers without a gate
  const float* gate_bias = nullptr;  // (E) selection bias, or null
  const float* w1 = nullptr;         // (E, F, d), or (E, F, gate_in) (MoEShape::gate_in)
  const float* w3 = nullptr;         // (E, F, d), SwiGLU only
  const float* w2 = nullptr;         // (E, d, F)
  const float* shared_w1 = nullptr;  // (Fs, d)
  const float* shared_w3 = nullptr;  // (Fs, d), SwiGLU only
  const float* shared_w2 = nullptr;  // (d, Fs)
  // Inference: BF16 expert weights (bfloat16 bits, same shapes) instead of w1, w3, w2; forward
  // only (fp32 accumulation).
  const uint16_t* w1_bf16 = nullptr;
  const uint16_t* w3_bf16 = nullptr;
  const uint16_t* w2_bf16 = nullptr;
  // BF16 experts: inputs rounded to BF16 for the AVX-512 BF16 dot product (as llama.cpp and
  // PyTorch's bf16 do), or kept float32 (slower, exact to float32).
  bool bf16_round_activations = true;
  // Experts held one block each instead of stacked, where w1 is null: a process that holds only
  // some of them (its share under expert parallelism). (E) pointers to expert e's w1 (F, d),
  // w3 (F, d), w2 (d, F); a null entry is an expert held elsewhere, to which no row may go.
  const float* const* w1_experts = nullptr;
  const float* const* w3_experts = nullptr;
  const float* const* w2_experts = nullptr;
  // The router's logit function's tensors (Router::logit_function), in its tensors() order,
  // instead of gate; null for the linear gate.
  const float* const* router = nullptr;
  // Qwen2-MoE's gate on the shared expert: its output times σ(x · shared_gate); null: weight 1.
  const float* shared_gate = nullptr;  // (d)
};

// Gradient views (not owned), same shapes; null entries are skipped. Backward overwrites them.
struct MoEGrads {
  float* gate = nullptr;
  float* w1 = nullptr;
  float* w3 = nullptr;
  float* w2 = nullptr;
  float* shared_w1 = nullptr;
  float* shared_w3 = nullptr;
  float* shared_w2 = nullptr;
  // Per-expert blocks as MoEParams::w*_experts (where w1 is null); null entries are skipped.
  float* const* w1_experts = nullptr;
  float* const* w3_experts = nullptr;
  float* const* w2_experts = nullptr;
  float* const* router = nullptr;  // as MoEParams::router
  float* shared_gate = nullptr;    // (d)
  // (T, C) ∂L/∂MoEBatch::router_carry, where the logit function carries a state and the batch
  // gave one; null: not wanted.
  float* router_carry = nullptr;
};

struct MoEBatch {
  int64_t T = 0;
  const float* x = nullptr;               // (T, d)
  const int64_t* token_ids = nullptr;     // (T), routers and logit functions that read ids
  std::vector<int64_t> seq_lens;          // sums to T; empty = one sequence
  const double* global_counts = nullptr;  // (R) earlier micro-batches' counts (global-batch loss)
  // Replay of recorded routing: (T, forced_k) expert ids per token, -1 = none (RouterInput).
  const int32_t* forced_experts = nullptr;
  int64_t forced_k = 0;
  // (T, C) the previous MoE layer's router carry (LogitCarry; RMoE's GRU output), for a logit
  // function whose carry_dim C > 0; null: zeros (the first MoE layer).
  const float* router_carry = nullptr;
  // (T) per-token importance (>= 0, finite) for a router whose traits say
  // needs_token_importance (DA-MoE); the model passes its preceding attention's
  // (docs/model.md, "Token importance"). Treated as a constant: no gradient is returned for it.
  const float* token_importance = nullptr;
};

struct RoutingStats {
  std::vector<int64_t> tokens_per_expert;  // (E) kept assignments
  int64_t assignments = 0;                 // chosen (token, expert) pairs before drops
  int64_t dropped = 0;                     // dropped by capacity or by the router's own policy
  int64_t declined = 0;  // of those, declined by the router before capacity (GShard's random
                         // second expert, Adaptive Gating's confident tokens)
  double max_vio = 0.0;  // (max load - mean load) / mean load
  double cv = 0.0;       // std / mean of the load
  double entropy = 0.0;  // mean per-token router entropy (nats)
  double experts_per_token = 0.0;  // kept true-expert assignments per token
  // Expert hidden units run per token, in units of F: Σ over kept rows of width / F, over T.
  // Equals experts_per_token for every router without per-assignment widths (traits'
  // elastic_width); Duo-LLM's small module counts its width fraction.
  double hidden_per_token = 0.0;
  std::map<std::string, double> losses;  // each enabled loss, coefficient applied
  double aux_loss = 0.0;                 // their sum
  // Forward wall time per phase: shared_expert, route (logits + router), dispatch (capacity,
  // grouping, gather), experts, combine, statistics (loads, losses, checks).
  std::map<std::string, double> phase_ms;
};

// The random draws of one call, made from the seed so that the reference can replay them.
struct RouterNoise {
  std::vector<float> jitter;   // (T, d) multipliers, empty when off
  std::vector<float> uniform;  // (T, n) U[0,1), n = uniform_draws(traits, R)
};
RouterNoise make_router_noise(const LayerConfig& config, const RouterTraits& traits, int64_t T,
                              int64_t d, int64_t R, uint64_t call_index);

// Activations saved by forward for backward. Reused across calls to avoid reallocating.
struct MoECache {
  int64_t T = 0;
  std::vector<std::pair<int64_t, int64_t>> groups;     // routing groups
  std::vector<std::pair<int64_t, int64_t>> sequences;  // token ranges of the sequences
  RouterNoise noise;
  std::vector<float> router_in;         // (T, d) jittered input, or (S, d) sequence means for SMEAR
  std::vector<float> logits;            // (T, R) or (S, R)
  std::vector<float> logit_saved;       // the logit function's saved values for backward
  std::vector<float> router_carry;      // (T, C) the logit function's carry out; empty when C = 0
  std::vector<float> token_importance;  // (T) MoEBatch::token_importance, kept for backward
  RoutingPlan plan;
  std::vector<int64_t> expert_offsets;  // (E + 1) into the dispatched rows
  std::vector<int32_t> row_assignment;  // (A_kept) assignment of each dispatched row
  std::vector<int32_t> row_token;       // (A_kept) its token
  std::vector<float> row_weight;        // (A_kept) its combine weight
  // (A_kept) its hidden width (RoutingPlan::width), where the plan has widths: rows of an expert
  // are then ordered by width, descending (stable), so equal widths form contiguous segments
  // that run as one GEMM chain on F' = width units; and a row's h1, h3, act take (width) values
  // packed at (row offset of its segment) · F + (row within the segment) · width. Empty: all F.
  std::vector<int32_t> row_width;
  std::vector<int64_t> token_offsets;  // (T + 1) CSR of dispatched rows by token
  std::vector<int32_t> token_rows;     // (A_kept)
  std::vector<float> xd;               // (A_kept, d) gathered inputs
  // (A_kept, gate_in) each row's gate input from the logit function (MoEShape::gate_in > 0),
  // what w1 reads instead of xd; empty otherwise.
  std::vector<float> gate_in;
  std::vector<float> h1;   // (A_kept, F) w1 pre-activation
  std::vector<float> h3;   // (A_kept, F) w3 output (SwiGLU)
  std::vector<float> act;  // (A_kept, F) activation fed to w2
  std::vector<float> out;  // (A_kept, d) expert outputs before weighting
  std::vector<float> shared_h1, shared_h3, shared_act;  // (T, Fs)
  std::vector<float> shared_out;    // (T, d) the shared expert's output, when it is gated
  std::vector<float> shared_gate;   // (T) σ(x · shared.gate), when it is gated
  std::vector<float> merged;        // SMEAR: (S, 2F d + d F) merged expert weights
  std::vector<int32_t> token_rank;  // (T routed) home expert-parallel rank (needs_placement)
  // Dense scoring (Router::dense_scoring): the call ran every expert on every token first. The
  // dispatched rows above are then dense_plan's (T E rows), responses (T, E, d) their outputs
  // token by token, dense_row (T E) the row of each (token, expert) pair; plan is the router's
  // choice among them. Empty (dense false) on ordinary calls.
  bool dense = false;
  RoutingPlan dense_plan;
  std::vector<float> responses;
  std::vector<int32_t> dense_row;
  // Expert parallelism (src/layer/expert_parallel_dispatcher.h): what the exchanges of the last
  // forward and backward moved; the exchange state itself is the dispatcher's (one per layer).
  struct ExpertParallel {
    // Bytes to and from the other ranks per phase of the last forward and backward: dispatch
    // (token rows and row entries), combine (summed outputs back), backward dispatch (dy token
    // rows to the experts, the combine weights' gradients back), backward combine (dx token rows
    // back). Counters (mutable: backward reads a const cache).
    struct Traffic {
      int64_t sent = 0, received = 0;
      double seconds = 0.0;  // inside this phase's all-to-alls (waiting for the others included)
    };
    mutable Traffic dispatch, combine, backward_dispatch, backward_combine;
    mutable Traffic inter_node;  // the part across nodes, all phases (hierarchical; no seconds)
    double exchange_seconds() const {
      return dispatch.seconds + combine.seconds + backward_dispatch.seconds +
             backward_combine.seconds;
    }
  } ep;
  // Routing over several ranks' tokens (MoELayer::set_routing_communicator): the global batch
  // is every rank's tokens in rank order, this rank's at [offset, offset + T). plan, logits and
  // noise above are this rank's part; these are the whole batch's, which every rank routes.
  struct GlobalRouting {
    bool active = false;
    int64_t T = 0, offset = 0;
    std::vector<int64_t> rank_tokens, rank_offsets;   // (ranks)
    std::vector<int64_t> token_ids, seq_lens;         // (T_global), the sequences' lengths
    std::vector<std::pair<int64_t, int64_t>> groups;  // routing groups of the global batch
    std::vector<float> logits;                        // (T_global, R)
    RoutingPlan plan;                                 // (A_global), capacity applied (kept)
    std::vector<int32_t> local_assignment;            // (A_local) its index in plan
    int64_t kept = 0;                                 // kept assignments of the global batch
  } global;
  RoutingStats stats;

  // The routing as the router saw it: the global batch's under routing across ranks.
  const RoutingPlan& routing_plan() const { return global.active ? global.plan : plan; }
  int64_t routing_tokens() const { return global.active ? global.T : T; }
};

class MoELayer {
 public:
  MoELayer(const LayerConfig& config, const MoEShape& shape);
  ~MoELayer();

  const LayerConfig& config() const { return config_; }
  // Training mode: jitter, random policies, BASE's auction (the model toggles it for evaluation).
  void set_training(bool training) { config_.training = training; }
  // Forward calls so far: the noise of call i is drawn from (seed, i); checkpoints keep it so a
  // resumed run draws what the uninterrupted one would.
  uint64_t calls() const { return calls_; }
  void set_calls(uint64_t calls) { calls_ = calls; }
  const MoEShape& shape() const { return shape_; }
  int64_t num_router_outputs() const { return R_; }
  Router& router() { return *router_; }
  const Router& router() const { return *router_; }
  // The training data's token-id counts (vocab), for a router whose traits say
  // needs_token_frequencies (Router::set_token_frequencies); `context` names their source.
  void set_token_frequencies(const std::vector<int64_t>& counts, const std::string& context) {
    router_->set_token_frequencies(counts, context);
  }
  // The training run's schedule, for a router with a step-dependent rule (Router::set_schedule).
  void set_schedule(const TrainingSchedule& schedule) { router_->set_schedule(schedule); }

  // Validates the batch and parameters (presence, finiteness, sequence lengths, ids), naming the
  // field and value. forward() runs it without the weight scan (check_weights = false).
  void validate(const MoEParams& p, const MoEBatch& batch, bool check_weights = true) const;
  // y (T, d). Saves activations in cache. Returns the routing statistics (also in cache.stats).
  const RoutingStats& forward(const MoEParams& p, const MoEBatch& batch, MoECache& cache, float* y);
  // Makes the cache's expert buffers hold `rows` dispatched rows (tokens × experts per token)
  // now, on huge pages where the system has them, so the first large forward does not pay for
  // fresh memory (inference engines reserve their batch's buffers the same way).
  void reserve(MoECache& cache, int64_t rows) const;
  // dy (T, d) -> dx (T, d) and parameter gradients (overwritten). Includes the aux losses'
  // gradients (the aux loss is added to the objective with weight 1).
  // `aux_weight` scales the aux losses' share (for gradient accumulation over micro-batches).
  // `d_router_carry` (T, C): ∂L/∂cache.router_carry from the MoE layers above; null: zeros.
  void backward(const MoEParams& p, const MoEBatch& batch, const MoECache& cache, const float* dy,
                float* dx, const MoEGrads& grads, float aux_weight = 1.0f,
                const float* d_router_carry = nullptr);
  // Width of the router carry (LogitCarry), 0 for routers without one.
  int64_t router_carry_dim() const;
  // The logit function's tensors (router.NAME), in its order; empty for the linear gate.
  const std::vector<RouterTensorSpec>& router_tensor_specs() const { return router_specs_; }
  // Combine weights (T, E) from the last forward: weight of expert e for token t, 0 if not routed.
  std::vector<float> combine_matrix(const MoECache& cache) const;
  // Non-gradient router state after a step (bias, λ); counts from the cache's plan.
  void update_router_state(const MoECache& cache, float* gate_bias);
  // The same in two halves, for a model that first averages the zero fraction over its layers:
  // what the step's routing says, then the update from it.
  RouterStepStats router_step_stats(const MoECache& cache, float* gate_bias) const;
  void update_router_state(const RouterStepStats& stats);
  // Replaces the local dispatcher (e.g. with layer::ExpertParallelDispatcher across ranks).
  void set_dispatcher(std::unique_ptr<layer::TokenDispatcher> dispatcher);
  // Routes the tokens of all of comm's ranks together (null: this process's tokens alone). The
  // gate logits (and hash ids, sequence lengths) are all-gathered and every rank routes the
  // global batch, keeping its own tokens' assignments, so capacity, expert choice, BASE, the
  // balance losses and the bias updates see the global batch as one process would. Backward
  // all-reduces the combine-weight gradients (A_global) for the router's backward. Every rank
  // must call forward and backward together. Not for SMEAR (it merges experts per sequence).
  void set_routing_communicator(dist::Communicator* comm);
  // The placement of a run across ranks, where layer.json declares none (it must then match).
  void set_placement(const ExpertPlacement& placement);
  const ExpertPlacement& placement() const { return config_.placement; }

 private:
  LayerConfig config_;
  MoEShape shape_;
  std::unique_ptr<Router> router_;
  int64_t R_ = 0;
  std::vector<RouterTensorSpec> router_specs_;  // the logit function's, read once
  // c.gate_in (rows, gate_in): each dispatched row's (token, expert) row of the logit function's
  // gate inputs (LogitFunction::expert_gate_inputs); cleared when gate_in is 0.
  void gather_gate_inputs(MoECache& c) const;
  // The plan's widths: present (one per assignment, in [1, F]) exactly where the router's
  // traits say elastic_width.
  void check_widths(const RoutingPlan& plan) const;
  // Dense scoring (Router::dense_scoring): every expert on every token through the dispatcher and
  // the experts, into c.responses (T, E, d) and c.dense_row; and y from the plan over them.
  void dense_forward(const MoEParams& p, const MoEBatch& batch, MoECache& c);
  void dense_combine(const MoECache& c, float* y) const;
  // Its backward: d_weight (A) of the plan, and dout (T E rows, d) of the dense rows from the
  // combine's w · dy and Router::backward_responses.
  void dense_backward_rows(const MoEParams& p, const MoEBatch& batch, const MoECache& c,
                           const float* dy, float aux_weight, float* d_weight, float* dout) const;
  // Dispatch and combine (src/layer/token_dispatcher.h), the experts' FFNs
  // (src/layer/expert_backend.h).
  std::unique_ptr<layer::TokenDispatcher> dispatcher_;
  std::unique_ptr<layer::ExpertBackend> experts_;
  // Backward scratch kept across calls: allocating and faulting in (rows, d) buffers on every
  // call cost more than the routing itself.
  std::vector<float> ws_dout_, ws_dxd_, ws_dxr_;
  std::vector<float> ws_dgate_rows_, ws_dgate_;  // (rows, gate_in), (T, R gate_in)
  uint64_t calls_ = 0;
  dist::Communicator* routing_comm_ = nullptr;
  // Global routing's scratch: this rank's logits, the capacity pass's counters and rows.
  std::vector<float> ws_local_logits_;
  std::vector<int64_t> ws_slots_, ws_offsets_;
  std::vector<int32_t> ws_rows_;
};

// The expert-parallel rank holding each token (ExpertPlacement): the sequences split over
// placement.ranks in order, as evenly as they go (a run across ranks splits them exactly).
std::vector<int32_t> token_home_ranks(const ExpertPlacement& placement,
                                      const std::vector<int64_t>& seq_lens, int64_t T);

// Routing groups from the sequence lengths: the whole batch, or one group per sequence.
std::vector<std::pair<int64_t, int64_t>> routing_groups(RoutingGroups mode,
                                                        const std::vector<int64_t>& seq_lens,
                                                        int64_t T);

}  // namespace switchyard
