// The router interface: logits -> routing plan (forward), gradient of the combine weights ->
// gradient of the logits (backward), and non-gradient state updates. One file per router in
// src/routers/, one line in src/routers/registry.cpp; the shared tests pick every router up.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace switchyard {

// A router's per-output scores s(z): softmax over the outputs, or per output sigmoid(z) or
// sqrt(softplus(z)) (DeepSeek-V4's). The balance and entropy losses use softmax, or s / Σ s.
enum class ScoreKind { Softmax, Sigmoid, SqrtSoftplus };
const char* score_name(ScoreKind kind);

struct RouterTraits {
  bool batch_dependent = false;  // a token's route depends on other tokens of its routing group
  bool needs_gate = true;        // routes by logits: gate.weight's or its logit function's (hash
                                 // routers do not)
  bool needs_token_ids = false;  // hash routers
  // Routes by the training data's token-id counts (MaskMoE's masks): the model passes them in
  // with set_token_frequencies before the first step.
  bool needs_token_frequencies = false;
  bool pooled_per_sequence = false;  // SMEAR: one route per sequence from the mean input
  bool supports_losses = true;       // balance / z / entropy losses are meaningful
  bool supports_forced = false;      // can route to given experts (RouterInput::forced)
  bool needs_placement = false;      // routes by locality (RouterInput::token_rank)
  // Reads a per-token importance from outside the layer (RouterInput::token_importance; a
  // model gives its preceding attention's, MoEBatch::token_importance; layer files the tensor
  // token_importance). DA-MoE's number of experts per token. No gradient flows into it.
  bool needs_token_importance = false;
  bool has_own_loss = false;  // own_loss is reported (as the "router" loss), even when 0
  ScoreKind score = ScoreKind::Softmax;
  double jitter = 0.0;  // multiplicative input noise U[1-ε, 1+ε] in training
  // U[0,1) draws per token in training: n = uniforms_per_token + uniforms_per_output · R
  // (RouterNoise::uniform and RouterInput::uniform are (T, n); uniform_draws below).
  int64_t uniforms_per_token = 1;
  int64_t uniforms_per_output = 0;  // SparseMixer: a Gumbel draw per output and slot
  // Draws at inference too (THOR's random experts): a fixed stream per layer, the same at every
  // call, so evaluation is reproducible and leaves the training stream alone.
  bool draws_at_inference = false;
  // Gives each assignment a hidden width (RoutingPlan::width): the expert runs only its hidden
  // units [0, width) for that row (Duo-LLM's small module, Flextron's elastic width). The layer
  // refuses what it cannot run that way yet (BF16 experts, expert parallelism, routing across
  // ranks, gate inputs, dense scoring).
  bool elastic_width = false;
};
// The draws per token n of RouterTraits for R router outputs.
inline int64_t uniform_draws(const RouterTraits& traits, int64_t R) {
  return traits.uniforms_per_token + traits.uniforms_per_output * R;
}

// Everything a router reads. Routing groups are [begin, end) token ranges; a router never looks
// across a group boundary.
struct RouterInput {
  const float* logits = nullptr;  // (T, R)
  int64_t T = 0, R = 0, E = 0;
  const float* bias = nullptr;         // (E) selection bias, or null
  const int64_t* token_ids = nullptr;  // (T), or null
  const float* uniform = nullptr;      // (T, uniforms_per_token) U[0,1) draws for random policies
  std::vector<std::pair<int64_t, int64_t>> groups;
  bool training = false;
  // Replay: (T, forced_k) expert ids each token must be routed to (-1 = none); the router keeps
  // its own weight rule over them. Only routers whose traits say supports_forced read it.
  const int32_t* forced = nullptr;
  int64_t forced_k = 0;
  // Locality (ExpertPlacement), for routers whose traits say needs_placement: (T) the
  // expert-parallel rank whose batch shard holds each token; expert e sits on rank
  // e / (E / ranks), ranks_per_node consecutive ranks share a node.
  const int32_t* token_rank = nullptr;
  int64_t ranks = 0, ranks_per_node = 0;
  int64_t uniforms_per_token = 1;  // draws per token in `uniform` (uniform_draws)
  // Dense scoring (Router::dense_scoring): (T, E, d) every expert's output for every token, token
  // by token, on the calls where the router asked for them; null otherwise. d: the model width.
  const float* responses = nullptr;
  int64_t d = 0;
  // (T) a non-negative importance per token, for routers whose traits say
  // needs_token_importance (a constant of the routing: it receives no gradient); else null.
  const float* token_importance = nullptr;
  // The experts' hidden width F, for routers whose traits say elastic_width (their widths are
  // shares of it); set on every call.
  int64_t F = 0;
  // The sequences, (num_sequences) token ranges [begin, end) in order covering the T tokens
  // (MoEBatch::seq_lens), each inside one routing group; null under routing across ranks.
  const std::pair<int64_t, int64_t>* sequences = nullptr;
  int64_t num_sequences = 0;
};

// A model's training run as its routers see it (Router::set_schedule): routers with a
// step-dependent rule (StableMoE's switch to stage 2) take their step from it.
struct TrainingSchedule {
  int64_t total_steps = 0;  // optimiser steps of the whole run (a resumed run's too)
};

// Assignments are listed group by group, each group in priority order (earlier = kept first when
// capacity binds). The dispatch enforces `capacity[g]` (0 = unlimited) and fills `kept`.
struct RoutingPlan {
  std::vector<int32_t> token;               // (A)
  std::vector<int32_t> expert;              // (A) in [0, E)
  std::vector<int32_t> group;               // (A) routing group index
  std::vector<float> weight;                // (A) combine weight g
  std::vector<uint8_t> kept;                // (A) 0 when dropped by capacity or a random policy
  std::vector<int64_t> capacity;            // (G) per-expert capacity in each group, 0 = unlimited
  std::vector<float> passthrough;           // (T) coefficient of x added to y; empty if none
  std::vector<double> selection_counts;     // (R) choices per router output before any drop
  std::vector<double> first_choice_counts;  // (R) first choices only (top-k routers), else empty
  // Router-specific values saved for backward (e.g. normalisers), indexed as the router likes.
  std::vector<float> saved;
  // (A) the hidden units [0, width) of its expert's F this assignment runs (1 <= width <= F),
  // for routers whose traits say elastic_width; empty: every assignment runs all F (every other
  // router). Fill it with add_width.
  std::vector<int32_t> width;

  void clear();
  size_t size() const { return token.size(); }
  void add(int32_t t, int32_t e, int32_t g, float w) {
    token.push_back(t);
    expert.push_back(e);
    group.push_back(g);
    weight.push_back(w);
    kept.push_back(1);
  }
  // add() with a hidden width (routers whose traits say elastic_width use it for every row).
  void add_width(int32_t t, int32_t e, int32_t g, float w, int32_t hidden) {
    add(t, e, g, w);
    width.push_back(hidden);
  }
};

// What a router's non-gradient state update sees of the step just taken.
struct RouterStepStats {
  std::vector<double> counts;  // (E) choices per expert over the global batch, before drops
  double zero_fraction = 0.0;  // share of (token, expert) pairs that routed nothing (ReMoE)
  // The same share averaged over the model's MoE layers (ReMoE's controller reads this one, as
  // the paper's S does); the layer's own where it stands alone.
  double model_zero_fraction = 0.0;
  float* bias = nullptr;  // (E) the selection bias to update in place, or null
  int64_t E = 0;
};

// A tensor a router's logit function reads instead of gate.weight, held by the model as
// layers.L.moe.router.NAME and by layer files as router.NAME.
struct RouterTensorSpec {
  enum class Init {
    Normal,    // N(0, value), value 0: the model's init_std
    RowNorm,   // random directions, every row of norm `value` (expert embeddings)
    Constant,  // every entry `value`
    Uniform,   // U(-value, value) (PyTorch's nn.Linear initialisation)
    // A (semi-)orthogonal matrix times the gain `value` (torch.nn.init.orthogonal_): the QR
    // factor of a N(0, 1) draw of the tensor's 2-D shape (transposed when it has fewer rows than
    // columns), its columns' signs fixed by diag(R). Rows orthonormal (times the gain) where
    // rows <= columns.
    Orthogonal,
  };
  std::string name;
  std::vector<int64_t> shape;
  Init init = Init::Normal;
  double value = 0.0;
  bool decay = true;      // weight decay applies
  bool trainable = true;  // false: fixed after initialisation (HyperRouter's hypernetwork)
  // One tensor for all of a model's MoE layers (RMoE's GRU cell): the model holds it once, as
  // moe.router.NAME, and adds every layer's gradient; a layer on its own sees an ordinary input.
  bool shared_across_layers = false;
};

// The state a logit function carries from one MoE layer of a model to the next (RMoE's GRU
// output), (T, C) with C = LogitFunction::carry_dim. The model chains it through its MoE layers
// in forward and chains its gradient back in backward; a layer file passes it as router_carry.
struct LogitCarry {
  const float* in = nullptr;  // the previous MoE layer's; null: zeros (the first MoE layer)
  float* out = nullptr;       // this layer's; null when carry_dim is 0
};
struct LogitCarryGrad {
  const float* d_out = nullptr;  // ∂L/∂out from the layers above; null: zeros
  float* d_in = nullptr;         // ∂L/∂in, overwritten; null: not wanted
};

// The sizes a logit function's tensors are shaped by: the model width d, the router outputs R and
// the token-id vocabulary (MoEShape::vocab: the model's vocabulary, or layer.json's vocab_size;
// 0 where unknown, which only a function whose needs_vocab() is false may see).
struct LogitShape {
  int64_t d = 0, R = 0, vocab = 0;
};
// What a logit function may read besides x: the tokens' ids (MoEBatch::token_ids, (T), null when
// the batch has none; the layer checks them against the vocabulary where needs_vocab() says so)
// and the sequences, (num_sequences) token ranges [begin, end) in order that cover the call's T
// tokens (MoEBatch::seq_lens; null: one sequence of all T tokens), whatever the routing groups.
struct LogitContext {
  const int64_t* token_ids = nullptr;
  int64_t vocab = 0;
  const std::pair<int64_t, int64_t>* sequences = nullptr;
  int64_t num_sequences = 0;
};

// How a router's logits come from its input where that is not x · gate.weightᵀ (X-MoE's
// low-dimensional cosine). Tensors are passed in tensors() order.
class LogitFunction {
 public:
  virtual ~LogitFunction() = default;
  virtual std::vector<RouterTensorSpec> tensors(const LogitShape& shape) const = 0;
  // Reads token ids and has tensors shaped by the vocabulary (StableMoE's token embedding): the
  // layer then requires a vocabulary and ids inside it.
  virtual bool needs_vocab() const { return false; }
  // Width C of the state carried across MoE layers (LogitCarry); 0: none.
  virtual int64_t carry_dim(int64_t /*d*/, int64_t /*R*/) const { return 0; }
  // A token's logits read the earlier tokens of its sequence (LogitContext::sequences), never
  // later ones or other sequences (SpeechMoE2's causal global embedding): routes are then
  // causal but depend on other tokens, and backward sends gradient to the earlier tokens' x.
  virtual bool reads_earlier_tokens() const { return false; }
  // x (T, d) -> logits (T, R) (and carry.out); `saved` keeps what backward reads.
  virtual void forward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                       const LogitContext& context, const LogitCarry& carry, float* logits,
                       std::vector<float>& saved) const = 0;
  // ∂L/∂logits (T, R) (and ∂L/∂carry.out) -> dx (T, d), ∂L/∂carry.in and the tensors' gradients
  // dw, all overwritten; a null dw entry is skipped.
  virtual void backward(int64_t T, int64_t d, int64_t R, const float* x, const float* const* w,
                        const LogitContext& context, const std::vector<float>& saved,
                        const LogitCarryGrad& carry, const float* d_logits, float* dx,
                        float* const* dw) const = 0;
  // The experts' gate inputs (Autonomy-of-Experts: the router's scores are part of the experts).
  // A width r > 0 says that expert e's gate projection w1 reads, for token t, the row (t, e) of
  // the (T, R, r) activations expert_gate_inputs(saved) left by forward instead of x: the model
  // and the layer then shape experts.w1 (E, F, r) (MoEShape::gate_in). 0: w1 reads x (E, F, d).
  virtual int64_t expert_gate_input_dim(int64_t /*d*/, int64_t /*R*/) const { return 0; }
  virtual const float* expert_gate_inputs(const std::vector<float>& /*saved*/) const {
    return nullptr;
  }
  // Where expert_gate_input_dim > 0: the gradient d_gate (T, R, r) of those activations (zero
  // rows where a token did not reach the expert) -> accumulated into dx (T, d) and dw (the
  // entries of backward, which the layer calls first; a null dw entry is skipped).
  virtual void backward_gate_inputs(int64_t /*T*/, int64_t /*d*/, int64_t /*R*/, const float* /*x*/,
                                    const float* const* /*w*/, const std::vector<float>& /*saved*/,
                                    const float* /*d_gate*/, float* /*dx*/,
                                    float* const* /*dw*/) const {}
};

class Router {
 public:
  virtual ~Router() = default;
  virtual const RouterTraits& traits() const = 0;
  // Experts a token's FFN compute stands for, nominally (the active-parameter count): k for
  // token-choice routers, the capacity factor for expert choice, E for dense soft routing.
  virtual double nominal_experts_per_token(int64_t /*num_experts*/) const { return 1.0; }
  // The share of an expert's F hidden units a routed row runs, nominally (elastic-width routers:
  // their compute target; 1 for every other router). The active-parameter count multiplies it
  // with nominal_experts_per_token.
  virtual double nominal_width_fraction() const { return 1.0; }
  // Number of router outputs R for E experts (E + null experts for AdaMoE).
  virtual int64_t num_outputs(int64_t num_experts) const { return num_experts; }
  // The block of logit columns [first, first + count) whose scores choose the experts here, which
  // the router-entropy statistic reads; the whole row unless the row holds more than one router
  // (StableMoE's two, VQMoE's gate, codebook and mixing blocks).
  virtual std::pair<int64_t, int64_t> scored_columns(const RouterInput& in) const {
    return {0, in.R};
  }
  // Rejects an expert count the router cannot route (k > R, groups not dividing E); `context`
  // names the config in the message. Called when the layer is built, before any data is read.
  virtual void check_shape(int64_t /*num_experts*/, const std::string& /*context*/) const {}
  // The one expert count the router is built for (Duo-LLM's small and big module: 2), which
  // `compare --routers` gives its model and the tests use; 0: any count check_shape accepts.
  virtual int64_t required_experts() const { return 0; }
  // The logit function, where the router has its own (its tensors replace gate.weight); null:
  // the linear gate.
  virtual const LogitFunction* logit_function() const { return nullptr; }
  // The model hook for consistency regularisation (THOR): > 0 makes a model's training forward
  // run two passes with independent draws; its objective is ½ (CE₁ + CE₂) + ½ α · the mean
  // symmetric KL divergence of their next-token distributions, α this weight (docs/model.md).
  // 0: one pass.
  virtual double consistency_weight() const { return 0.0; }
  // Dense scoring (CompeteSMoE's competition): true asks the layer to run every expert on every
  // token of this call before routing it, and to route with RouterInput::responses set (the
  // outputs, (T, E, d)); y is then combined from those outputs. Asked once per forward call,
  // with responses null; the answer must be a function of `in` and the router's state. Such
  // calls are dropless (capacity 0) and local (no routing across ranks, expert parallelism, gate
  // inputs or forced experts).
  virtual bool dense_scoring(const RouterInput& /*in*/) const { return false; }
  virtual void route(const RouterInput& in, RoutingPlan& plan) const = 0;
  // Accumulates ∂L/∂logits (T, R) given ∂L/∂weight per assignment (A) (0 for dropped ones) and
  // ∂L/∂passthrough (T) where the router has one.
  virtual void backward(const RouterInput& in, const RoutingPlan& plan, const float* d_weight,
                        const float* d_passthrough, float* d_logits) const = 0;
  // On dense-scoring calls: accumulates ∂L/∂responses (T, E, d) from d_weight (A), through the
  // weights' dependence on the responses, plus aux_weight times the own loss's gradient with
  // respect to them (own_loss gives its logits' part).
  virtual void backward_responses(const RouterInput& /*in*/, const RoutingPlan& /*plan*/,
                                  const float* /*d_weight*/, double /*aux_weight*/,
                                  float* /*d_responses*/) const {}
  // A router's own regulariser (ReMoE's adaptive L1): value with coefficients applied, and its
  // gradient accumulated into d_logits when d_logits is not null.
  virtual double own_loss(const RouterInput&, const RoutingPlan&, float* /*d_logits*/) const {
    return 0.0;
  }
  // Non-gradient state after an optimiser step: the selection bias (aux-loss-free balancing),
  // ReMoE's λ; what the step's routing tells them is in RouterStepStats.
  virtual void update_state(const RouterStepStats& /*stats*/) {}
  // Mutable non-gradient state for checkpoints (ReMoE's λ); the selection bias lives in the
  // parameters instead.
  virtual nlohmann::json state() const { return nlohmann::json::object(); }
  virtual void set_state(const nlohmann::json& /*state*/) {}
  // The model hook for routers with a step-dependent rule: train() gives the run's schedule once
  // before the first step, in fresh and resumed runs alike (the steps taken come from state());
  // layer files never do.
  virtual void set_schedule(const TrainingSchedule& /*schedule*/) {}
  // The model hook for routers whose traits say needs_token_frequencies: counts (vocab) of each
  // token id over the training data, counted once before the first step (a router keeps them in
  // state() so that a resumed run has them); `context` names their source in messages.
  virtual void set_token_frequencies(const std::vector<int64_t>& /*counts*/,
                                     const std::string& /*context*/) {}
  // Names of the logit function's tensors (RouterTensorSpec::name) that the optimiser must leave
  // untouched now, given the router's state (StableMoE's distilled router in stage 2): no moment
  // update, no weight decay. The model asks again after every state change.
  virtual std::vector<std::string> frozen_tensors() const { return {}; }
  // Every parameter with its resolved value, for logs and for the float64 reference.
  virtual nlohmann::json params() const = 0;
  virtual std::string describe() const = 0;
};

struct RouterEntry {
  std::string name;
  std::string summary;
  // Loss coefficients used when layer.json has no "losses" object (the paper's setting).
  nlohmann::json default_losses = nlohmann::json::object();
  // Builds the router from its JSON parameters; must reject unknown keys (ParamReader::finish).
  std::function<std::unique_ptr<Router>(const nlohmann::json& params, const std::string& context)>
      make;
};

const std::vector<RouterEntry>& router_registry();
std::unique_ptr<Router> make_router(const std::string& name, const nlohmann::json& params,
                                    const std::string& context);

}  // namespace switchyard
