// The MoE language model: decoder-only transformer with explicit forward and backward
// (docs/model.md). Float32 on the CPU; one allocation for parameters, one for their gradients.
#pragma once

#include <switchyard/config.h>
#include <switchyard/moe_layer.h>
#include <switchyard/safetensors.h>

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard {
namespace dist {
class Communicator;
}  // namespace dist

// MindSkip (Router-Tuning, docs/routers/mindskip.md): a router per listed layer scores each
// sequence, s = σ(w · mean_t rmsnorm(h_t) · attn_norm); the layer's attention runs for the
// sequence only where s ≥ threshold (h += g · Attn, g = 1 with a straight-through gradient, or g
// = s), else it is not computed; the skip loss λ · mean(g or s) joins the aux loss.
struct AttentionSkipConfig {
  enum class Gate { STE, Score };
  bool enabled = false;
  double threshold = 0.5, loss = 0.0;
  Gate gate = Gate::STE;
  std::vector<int64_t> layers;  // sorted, resolved (the default rule already applied)
  bool skips(int64_t l) const {
    return enabled && std::find(layers.begin(), layers.end(), l) != layers.end();
  }
};

struct ModelConfig {
  int64_t vocab_size = 256, d_model = 128, n_layers = 4, n_heads = 4, seq_len = 128;
  int64_t moe_every = 1, experts = 8, d_ff = 256, shared_d_ff = 0, dense_d_ff = 512;
  Activation activation = Activation::SwiGLU;  // the experts' and the dense FFNs'
  SwigluClamp swiglu_clamp;                    // activation swiglu_clamped only
  bool tied_head = true;
  bool shared_expert_gate = false;  // Qwen2-MoE: the shared expert's output times σ(x · g)
  double rope_theta = 10000.0, norm_eps = 1e-5, init_std = 0.02;
  nlohmann::json router = {{"router", "mixtral"}, {"k", 2}};  // a layer.json object

  // Which layers are MoE (Megatron's per-layer list); empty: every moe_every-th.
  std::vector<int64_t> moe_layers;
  // MoE sub-layers per MoE block (CartesianMoE's Cartesian product layer: 2). Each is an ordinary
  // MoE layer of `experts` experts of width d_ff with its own router (the `router` config);
  // sub-layer s > 0 reads x_s = RMSNorm(x_{s-1} + y_{s-1}) and the block adds the last one's
  // output to the residual stream (docs/model.md, docs/routers/cartesianmoe.md). 1: a plain MoE
  // block. Every sub-layer is one "MoE layer" of layer_stats(), state() and the metrics.
  int64_t moe_sublayers = 1;
  // "attention_skip" (absent: off, and the model is exactly the one without it).
  AttentionSkipConfig attention_skip;

  bool is_moe_layer(int64_t l) const {
    if (!moe_layers.empty())
      return std::find(moe_layers.begin(), moe_layers.end(), l) != moe_layers.end();
    return (l + 1) % moe_every == 0;
  }
  nlohmann::json to_json() const;
};
ModelConfig parse_model_config(const nlohmann::json& j, const std::string& source);

// This process's part of a data- and expert-parallel run (src/train/data_parallel.cpp): its
// batch is one shard of the global batch, routed with all the others' tokens; its MoE layers
// send rows to the experts' ranks. The communicators must outlive the model.
struct ModelParallel {
  dist::Communicator* routing = nullptr;  // every rank of the job: the global batch's routing
  dist::Communicator* experts = nullptr;  // this rank's expert-parallel group (null or size 1: all
                                          // experts here)
  double loss_share = 1.0;  // this shard's tokens / the global batch's (its share of the mean)
  int ranks_per_node = 0;   // > 0 and < the group's size: the hierarchical dispatcher
  // Where tokens and experts sit, for locality-aware routers; a placement in the config must
  // equal it.
  ExpertPlacement placement;
};

// One skipping layer's decisions in the last forward (AttentionSkipConfig).
struct AttentionSkipStats {
  int64_t layer = 0;
  std::vector<float> scores;  // (B) s_b
  std::vector<uint8_t> kept;  // (B) 1 where the attention ran
  double skip_rate = 0.0, mean_score = 0.0, loss = 0.0;
  int64_t attention_runs = 0;  // sequences whose attention was computed (counted at the call)
};

// A named view into the parameter buffer.
struct ParamTensor {
  std::string name;
  std::vector<int64_t> shape;  // as held here
  size_t offset = 0, size = 0;
  bool decay = false;     // weight decay applies (matrices)
  bool trainable = true;  // false for non-gradient state (selection bias)
  // Left alone by the optimiser for now (Router::frozen_tensors; no moment update, no decay, not
  // in the gradient norm). Unlike !trainable its moments stay in checkpoints; the model sets it
  // from the routers' state.
  bool frozen = false;
  // An expert tensor held in part (ExpertShard): rows [expert_first, expert_first + shape[0]) of
  // expert_rows experts; 0: held whole.
  int64_t expert_first = 0, expert_rows = 0;
  std::vector<int64_t> full_shape() const;
};

// This process's part of a whole tensor's values (its rows of a sharded expert tensor).
std::vector<float> shard_of_tensor(const ParamTensor& t, std::vector<float> full);

// The experts this process holds under expert parallelism: [first, first + count); count -1 =
// all of them (every other case).
struct ExpertShard {
  int64_t first = 0, count = -1;
};

class Model {
 public:
  // Parameters are drawn from `seed` as for the whole model, whatever the shard, so a sharded run
  // starts from the one-process weights.
  Model(const ModelConfig& config, uint64_t seed, ExpertShard shard = {});
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  std::vector<float>& params() { return params_; }
  const std::vector<float>& params() const { return params_; }
  std::vector<float>& grads() { return grads_; }
  const std::vector<float>& grads() const { return grads_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& tensor(const std::string& name) const;
  float* param(const std::string& name) { return params_.data() + tensor(name).offset; }

  // tokens (B, T) int32 in [0, V); targets (B, T) or null. Returns the mean cross-entropy (0 if no
  // targets); the aux losses are in layer_stats(). logits() holds (B, T, V) afterwards. Where the
  // router asks for consistency regularisation (Router::consistency_weight, THOR), a training
  // forward with targets runs two passes with independent draws and returns their mean
  // cross-entropy; aux_loss() then adds ½ α · the mean symmetric KL divergence of the passes.
  double forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                 bool training);
  // Accumulates into grads() the gradient of (mean cross-entropy + Σ aux losses) × scale; under
  // set_parallel, this shard's part of the global batch's (the mean is the global one).
  void backward(float scale = 1.0f);
  // Runs MoE layers across ranks (see ModelParallel); set before the first forward.
  void set_parallel(const ModelParallel& parallel);
  // Called during backward with each [begin, end) of the parameter buffer whose gradients are
  // complete (a layer at a time, last first; then the embeddings and final norm), so gradient
  // all-reduces can start while backward goes on. Null: none.
  void set_gradient_ready(std::function<void(size_t begin, size_t end)> ready);
  void zero_grads();
  const std::vector<float>& logits() const { return logits_; }
  // Σ over MoE layers of the last forward's aux loss (two passes: their mean, plus the
  // consistency term).
  double aux_loss() const;
  // One per MoE layer (per MoE sub-layer, in order, when moe_sublayers > 1).
  std::vector<const RoutingStats*> layer_stats() const;
  std::vector<const MoECache*> layer_caches() const;
  // One per skipping layer (attention_skip), in layer order; empty when the option is off.
  std::vector<AttentionSkipStats> attention_skip_stats() const;
  // Router-Tuning: every tensor but the attention-skip routers (layers.L.attn_skip.*) frozen, and
  // the MoE routers' non-gradient state left as it is (update_router_state does nothing).
  void set_router_tuning(bool on);
  bool router_tuning() const { return router_tuning_; }
  // Router state after an optimiser step (selection bias, ReMoE's λ); then the frozen flags.
  void update_router_state();
  // The training data's token-id counts (vocab) for every MoE layer's router (MaskMoE's masks;
  // Router::set_token_frequencies), and whether any router needs them.
  void set_token_frequencies(const std::vector<int64_t>& counts);
  bool needs_token_frequencies() const;
  // The training run's schedule for every MoE layer's router (Router::set_schedule), given once
  // before the first step of a fresh or resumed run.
  void set_schedule(const TrainingSchedule& schedule);
  int64_t num_moe_layers() const;  // MoE sub-layers included (the routing units)
  // Non-gradient state besides the parameters (router state, noise counters), for checkpoints.
  nlohmann::json state() const;
  void set_state(const nlohmann::json& state, const std::string& source);

  SafetensorsFile to_safetensors() const;
  // Every tensor must be in the file with its shape. allow_missing_attention_skip: the
  // attention-skip routers (layers.L.attn_skip.*) may be missing (a base checkpoint for
  // Router-Tuning); they keep their values. Returns the names left at their values.
  std::vector<std::string> load_safetensors(const SafetensorsFile& file, const std::string& source,
                                            bool allow_missing_attention_skip = false);
  int64_t parameter_count() const;
  int64_t active_parameter_count() const;  // per token: routed experts count k (or mean)

 private:
  double forward_pass(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                      bool training);
  // extra_dlogits (N, V) is added to the cross-entropy's gradient; `last`: the gradients are
  // complete afterwards (gradient_ready fires).
  void backward_pass(float scale, const float* extra_dlogits, bool last);
  void carve_activations();
  void swap_passes();
  // ParamTensor::frozen from every MoE layer's Router::frozen_tensors (a tensor shared across
  // layers: when all of them freeze it).
  void refresh_frozen();
  struct Impl;
  ModelConfig config_;
  std::vector<ParamTensor> tensors_;
  std::vector<float> params_, grads_;
  std::vector<float> logits_;
  std::unique_ptr<Impl> impl_;
  double loss_share_ = 1.0;
  bool router_tuning_ = false;
  std::function<void(size_t, size_t)> gradient_ready_;
};

struct AdamWConfig {
  double lr = 3e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  double grad_clip = 1.0, min_lr_ratio = 0.1;
  int64_t warmup_steps = 20, steps = 200;
};

class AdamW {
 public:
  AdamW(const AdamWConfig& config, size_t n);
  double learning_rate(int64_t step) const;  // step counts from 0
  // Clips grads to the global norm (returns the norm before clipping) and updates params.
  double step(Model& model, int64_t step);
  // The same with the gradients' global norm given (data and expert parallelism: a rank holds
  // part of the expert gradients, so the norm needs the others').
  double step(Model& model, int64_t step, double grad_norm);
  // √(Σ g²) over the trainable tensors that are not frozen.
  static double grad_norm(const Model& model);
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }

 private:
  AdamWConfig config_;
  std::vector<float> m_, v_;
};

}  // namespace switchyard
