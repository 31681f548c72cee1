#include <switchyard/error.h>
#include <switchyard/model.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "dist/communicator.h"
#include "kernels/cpu/kernels.h"
#include "layer/expert_backend.h"
#include "layer/expert_parallel_dispatcher.h"
#include "model/ops.h"

namespace switchyard {

using nlohmann::json;

json ModelConfig::to_json() const {
  json j = {{"vocab_size", vocab_size},
            {"d_model", d_model},
            {"n_layers", n_layers},
            {"n_heads", n_heads},
            {"seq_len", seq_len},
            {"moe_every", moe_every},
            {"experts", experts},
            {"d_ff", d_ff},
            {"shared_d_ff", shared_d_ff},
            {"dense_d_ff", dense_d_ff},
            {"activation", activation_name(activation)},
            {"tied_head", tied_head},
            {"rope_theta", rope_theta},
            {"norm_eps", norm_eps},
            {"init_std", init_std},
            {"router", router}};
  write_activation(j, activation, swiglu_clamp);          // swiglu_clamped: alpha and limit too
  if (!moe_layers.empty()) j["moe_layers"] = moe_layers;  // absent in older model.json files
  if (shared_expert_gate) j["shared_expert_gate"] = true;
  if (moe_sublayers != 1) j["moe_sublayers"] = moe_sublayers;
  if (attention_skip.enabled)  // absent in model.json files without the option
    j["attention_skip"] = {
        {"threshold", attention_skip.threshold},
        {"loss", attention_skip.loss},
        {"gate", attention_skip.gate == AttentionSkipConfig::Gate::STE ? "ste" : "score"},
        {"layers", attention_skip.layers}};
  return j;
}

namespace {

// torch.nn.init.orthogonal_ for a (rows, cols) tensor (cols: the product of the other
// dimensions): A ~ N(0, 1) (rows, cols), transposed to (n, m) = (cols, rows) when rows < cols;
// A = Q R with R's diagonal positive (Q · sign(diag R) of any QR: modified Gram-Schmidt gives it
// directly), Q transposed back, times `gain`.
void orthogonal_init(int64_t rows, int64_t cols, double gain, std::mt19937_64& rng, float* v) {
  const bool flip = rows < cols;
  const int64_t n = flip ? cols : rows, m = flip ? rows : cols;  // n >= m
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> a(size_t(n * m));  // (n, m) row-major: a[i * m + j]
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) a[size_t(flip ? c * m + r : r * m + c)] = normal(rng);
  for (int64_t j = 0; j < m; ++j) {  // column j: minus its projections, then unit length
    for (int64_t k = 0; k < j; ++k) {
      double dot = 0.0;
      for (int64_t i = 0; i < n; ++i) dot += a[size_t(i * m + k)] * a[size_t(i * m + j)];
      for (int64_t i = 0; i < n; ++i) a[size_t(i * m + j)] -= dot * a[size_t(i * m + k)];
    }
    double sq = 0.0;
    for (int64_t i = 0; i < n; ++i) sq += a[size_t(i * m + j)] * a[size_t(i * m + j)];
    const double norm = std::sqrt(sq);
    for (int64_t i = 0; i < n; ++i)
      a[size_t(i * m + j)] = norm > 0 ? a[size_t(i * m + j)] / norm : 0;
  }
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      v[r * cols + c] = float(gain * a[size_t(flip ? c * m + r : r * m + c)]);
}

// A router tensor's initial values by its spec (Normal: N(0, value or init_std)).
void init_router_tensor(const RouterTensorSpec& spec, double init_std, std::mt19937_64& rng,
                        float* v, size_t n) {
  using Init = RouterTensorSpec::Init;
  if (spec.init == Init::Orthogonal) {
    const int64_t rows = spec.shape.empty() ? 1 : spec.shape[0];
    orthogonal_init(rows, int64_t(n) / std::max<int64_t>(rows, 1), spec.value, rng, v);
    return;
  }
  if (spec.init == Init::Constant) {
    std::fill(v, v + n, float(spec.value));
    return;
  }
  if (spec.init == Init::Uniform) {
    std::uniform_real_distribution<float> uniform(-float(spec.value), float(spec.value));
    for (size_t i = 0; i < n; ++i) v[i] = uniform(rng);
    return;
  }
  std::normal_distribution<float> normal(0.0f, float(spec.value > 0 ? spec.value : init_std));
  for (size_t i = 0; i < n; ++i) v[i] = normal(rng);
  if (spec.init != Init::RowNorm) return;
  const size_t cols = size_t(spec.shape.back());
  for (size_t r = 0; r < n / cols; ++r) {
    double sq = 0.0;
    for (size_t j = 0; j < cols; ++j) sq += double(v[r * cols + j]) * double(v[r * cols + j]);
    const double norm = std::sqrt(sq);
    for (size_t j = 0; j < cols; ++j)
      v[r * cols + j] = norm > 0 ? float(double(v[r * cols + j]) * spec.value / norm) : 0.0f;
  }
}

// The layer.json object the model gives each MoE layer.
json layer_json(const ModelConfig& c) {
  json j = c.router;
  write_activation(j, c.activation, c.swiglu_clamp);
  return j;
}

// Under an expert shard the layer takes per-expert blocks: expert e's (F, C) / (C, F) rows of w1,
// w3, w2 where this process holds e, null elsewhere. `at` maps a parameter offset to the buffer
// (parameters, or the layer's gradient block). views: (3 E) pointers, kept by the caller.
template <typename Ptr, typename At>
void expert_views(const ExpertShard& shard, int64_t E, int64_t block, size_t w1, size_t w3,
                  size_t w2, At at, std::vector<Ptr>& views, Ptr const*& v1, Ptr const*& v3,
                  Ptr const*& v2) {
  views.assign(size_t(3 * E), nullptr);
  for (int64_t e = shard.first; e < shard.first + shard.count; ++e) {
    const size_t row = size_t(e - shard.first) * size_t(block);
    views[size_t(e)] = at(w1 + row);
    if (w3 != SIZE_MAX) views[size_t(E + e)] = at(w3 + row);
    views[size_t(2 * E + e)] = at(w2 + row);
  }
  v1 = views.data();
  v3 = w3 != SIZE_MAX ? views.data() + E : nullptr;
  v2 = views.data() + 2 * E;
}

}  // namespace

namespace {

// model.json's "attention_skip" object (docs/routers/mindskip.md).
AttentionSkipConfig parse_attention_skip(const json& j, int64_t n_layers,
                                         const std::string& source) {
  const std::string where = source + " [attention_skip]";
  ParamReader r(j, where);
  AttentionSkipConfig a;
  a.enabled = true;
  a.threshold = r.get_double("threshold", a.threshold, 0.0, 1.0);
  a.loss = r.get_double("loss", a.loss, 0.0, 1e6);
  a.gate = r.get_choice("gate", "ste", {"ste", "score"}) == "ste"
               ? AttentionSkipConfig::Gate::STE
               : AttentionSkipConfig::Gate::Score;
  const json layers = r.get_json("layers", json());
  r.finish();
  if (layers.is_null()) {  // the released code's rule: the floor(L/2) layers below the last
    for (int64_t l = n_layers - 1 - n_layers / 2; l <= n_layers - 2; ++l) a.layers.push_back(l);
    if (a.layers.empty())
      fail(
          "{}: the default layers (the floor(n_layers / 2) below the last) are none for n_layers "
          "= {}; give 'layers' (a list of layer indices or \"all\")",
          where, n_layers);
  } else if (layers.is_string() && layers.get<std::string>() == "all") {
    for (int64_t l = 0; l < n_layers; ++l) a.layers.push_back(l);
  } else {
    if (!layers.is_array() || layers.empty())
      fail("{}: field 'layers' = {} must be \"all\" or a non-empty list of layer indices", where,
           layers.dump());
    for (const json& v : layers) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= n_layers)
        fail("{}: field 'layers' has {}, not a layer index in [0, {})", where, v.dump(), n_layers);
      if (a.skips(v.get<int64_t>()))
        fail("{}: field 'layers' lists layer {} twice", where, v.get<int64_t>());
      a.layers.push_back(v.get<int64_t>());
    }
    std::sort(a.layers.begin(), a.layers.end());
  }
  return a;
}

bool is_attention_skip_tensor(const std::string& name) {
  return name.find(".attn_skip.") != std::string::npos;
}

// Calls fn(b0, b1) for each run [b0, b1) of consecutive sequences whose attention runs (MindSkip:
// kept[b] = 1), so that each run is one batch of GEMMs.
template <typename Fn>
void for_each_kept_run(const std::vector<uint8_t>& kept, Fn&& fn) {
  const int64_t B = int64_t(kept.size());
  for (int64_t b0 = 0; b0 < B;) {
    if (!kept[size_t(b0)]) {
      ++b0;
      continue;
    }
    int64_t b1 = b0 + 1;
    while (b1 < B && kept[size_t(b1)]) ++b1;
    fn(b0, b1);
    b0 = b1;
  }
}

}  // namespace

ModelConfig parse_model_config(const json& j, const std::string& source) {
  ParamReader r(j, source);
  ModelConfig c;
  c.vocab_size = r.get_int("vocab_size", c.vocab_size, 2, 1 << 20);
  c.d_model = r.get_int("d_model", c.d_model, 2, 1 << 16);
  c.n_layers = r.get_int("n_layers", c.n_layers, 1, 1024);
  c.n_heads = r.get_int("n_heads", c.n_heads, 1, 1024);
  c.seq_len = r.get_int("seq_len", c.seq_len, 1, 1 << 16);
  c.moe_every = r.get_int("moe_every", c.moe_every, 1, 1024);
  const json moe_layers = r.get_json("moe_layers", json());
  c.experts = r.get_int("experts", c.experts, 1, 1 << 14);
  c.d_ff = r.get_int("d_ff", c.d_ff, 1, 1 << 20);
  c.shared_d_ff = r.get_int("shared_d_ff", c.shared_d_ff, 0, 1 << 20);
  c.shared_expert_gate = r.get_bool("shared_expert_gate", c.shared_expert_gate);
  if (c.shared_expert_gate && c.shared_d_ff == 0)
    fail("{}: field 'shared_expert_gate' = true needs a shared expert (shared_d_ff > 0)", source);
  c.dense_d_ff = r.get_int("dense_d_ff", c.dense_d_ff, 1, 1 << 20);
  read_activation(r, c.activation, c.swiglu_clamp);
  c.tied_head = r.get_bool("tied_head", c.tied_head);
  c.rope_theta = r.get_double("rope_theta", c.rope_theta, 1.0, 1e9);
  c.norm_eps = r.get_double("norm_eps", c.norm_eps, 1e-12, 1.0);
  c.init_std = r.get_double("init_std", c.init_std, 1e-6, 10.0);
  c.router = r.get_object("router", c.router);
  c.moe_sublayers = r.get_int("moe_sublayers", c.moe_sublayers, 1, 8);
  const bool skip = r.has("attention_skip");
  const json skip_json = r.get_object("attention_skip", json::object());
  r.finish();
  if (skip) c.attention_skip = parse_attention_skip(skip_json, c.n_layers, source);
  if (!moe_layers.is_null()) {
    if (!moe_layers.is_array() || moe_layers.empty())
      fail("{}: field 'moe_layers' = {} must be a non-empty list of layer indices", source,
           moe_layers.dump());
    if (c.moe_every != 1)
      fail("{}: give 'moe_layers' or 'moe_every' = {}, not both", source, c.moe_every);
    for (const json& v : moe_layers) {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= c.n_layers)
        fail("{}: field 'moe_layers' has {}, not a layer index in [0, {})", source, v.dump(),
             c.n_layers);
      if (std::find(c.moe_layers.begin(), c.moe_layers.end(), v.get<int64_t>()) !=
          c.moe_layers.end())
        fail("{}: field 'moe_layers' lists layer {} twice", source, v.get<int64_t>());
      c.moe_layers.push_back(v.get<int64_t>());
    }
    std::sort(c.moe_layers.begin(), c.moe_layers.end());
  }
  if (c.moe_sublayers > 1) {
    bool any = false;
    for (int64_t l = 0; l < c.n_layers; ++l) any = any || c.is_moe_layer(l);
    if (!any)
      fail("{}: field 'moe_sublayers' = {} needs an MoE layer, but moe_every = {} > n_layers = {}",
           source, c.moe_sublayers, c.moe_every, c.n_layers);
  }
  if (c.d_model % c.n_heads != 0 || (c.d_model / c.n_heads) % 2 != 0)
    fail("{}: d_model = {} must split into n_heads = {} heads of even width (RoPE)", source,
         c.d_model, c.n_heads);
  for (const char* key :
       {"activation", "swiglu_alpha", "swiglu_limit", "training", "seed", "vocab_size"})
    if (c.router.contains(key))
      fail("{}: field 'router.{}' is set by the model, remove it", source, key);
  const LayerConfig layer = parse_layer_config(layer_json(c), source + " [router]");
  make_router(layer.router, layer.router_params, source + " [router]")
      ->check_shape(c.experts, source + " [router]");
  return c;
}

struct Model::Impl {
  // One MoE layer: an MoE block's only one, or one of its moe_sublayers sub-layers.
  struct Unit {
    // Parameter offsets (SIZE_MAX = absent) and the block [begin, end) they occupy.
    size_t gate = SIZE_MAX, gate_bias = SIZE_MAX, w1 = SIZE_MAX, w3 = SIZE_MAX, w2 = SIZE_MAX;
    size_t sw1 = SIZE_MAX, sw3 = SIZE_MAX, sw2 = SIZE_MAX, block_begin = 0, block_end = 0;
    size_t shared_gate = SIZE_MAX;  // (1, C) Qwen2-MoE's shared-expert gate
    // (C) sub-layers after the first: x = RMSNorm(u) · in_norm, u = the previous sub-layer's
    // input plus its output (outside [block_begin, block_end)).
    size_t in_norm = SIZE_MAX;
    // The router's logit-function tensors (instead of gate), with views for MoEParams/MoEGrads.
    std::vector<size_t> router_tensors;
    std::vector<bool> router_tensor_shared;  // held once for all MoE layers (moe.router.NAME)
    std::vector<const float*> router_params;
    std::vector<float*> router_grads;
    std::unique_ptr<MoELayer> moe_layer;
    MoECache cache;
    MoECache other_cache;  // the other pass's (consistency regularisation)
    // (R) the router's choices in this step's earlier micro-batches (global-batch balance loss);
    // empty at the first. Cleared by zero_grads, which starts a step.
    std::vector<double> earlier_counts;
    bool global_batch_balance() const {
      const LossConfig& losses = moe_layer->config().losses;
      return losses.balance > 0 && losses.balance_mode == BalanceMode::GlobalBatch;
    }
    // Activations (views into acts): x (N, C) the input (the first: the block's m), y (N, C)
    // the output (the last: the block's f); after the first, u (N, C) and rstd (N) of in_norm.
    float *x = nullptr, *y = nullptr, *u = nullptr, *rstd = nullptr;
  };
  struct Layer {
    bool moe = false;
    size_t attn_norm = 0, wqkv = 0, wo = 0, mlp_norm = 0;
    size_t w1 = SIZE_MAX, w3 = SIZE_MAX, w2 = SIZE_MAX;  // dense FFN
    std::vector<Unit> subs;  // MoE: moe_sublayers units, applied in order; dense: none
    // Attention skip (AttentionSkipConfig): the router's (1, C) offset, SIZE_MAX where the
    // attention always runs; the last forward's decisions (other_skip: the other pass's).
    size_t skip_w = SIZE_MAX;
    struct Skip {
      std::vector<float> pool, score;  // (B, C) mean of a over each sequence; (B) s
      std::vector<uint8_t> kept;       // (B)
      double loss = 0.0;
      int64_t attention_runs = 0;  // sequences whose attention ran
    };
    Skip skip, other_skip;
    // Activations (views into acts).
    float *h_in, *a, *rstd1, *qkv, *probs, *o, *h_mid, *m, *rstd2, *f, *dh1, *dh3, *dact;
  };
  std::vector<Layer> layers;
  size_t wte = 0, final_norm = 0, lm_head = SIZE_MAX;
  int64_t B = 0, T = 0;
  std::vector<float> acts;  // one allocation for the activations of a (B, T) batch
  // Consistency regularisation (Router::consistency_weight, THOR): a training forward runs two
  // passes; the first pass's activations, MoE caches and logits wait in other_* meanwhile.
  double consistency = 0.0;  // the weight α; 0: one pass
  bool paired = false;       // the last forward ran two passes
  bool paired_backward_done = false;
  double consistency_loss = 0.0;
  std::vector<float> other_acts, other_logits;
  float *h_out = nullptr, *hf = nullptr, *rstd_f = nullptr;
  std::vector<float> scratch;  // backward scratch: dh, dtmp, dqkv, dprobs, dm, dlogits
  std::vector<float> moe_grads;
  // Router tensors shared across the MoE layers (RouterTensorSpec::shared_across_layers): they
  // sit at [shared_begin, shared_end), after the final norm and head, so their gradient, summed
  // over the layers, is complete with the last gradient_ready call. One layer's part is written
  // to shared_grads first and then added.
  size_t shared_begin = 0, shared_end = 0;
  std::vector<float> shared_grads;
  // The router carry's gradient between MoE layers in backward (LogitCarry), (N, C) each.
  std::vector<float> d_carry_above, d_carry_below;
  // Backward between MoE sub-layers (moe_sublayers > 1): ∂L/∂x of a sub-layer after the first
  // and ∂L/∂u of its in_norm's input, (N, C) each.
  std::vector<float> d_sub_x, d_sub_u;
  std::vector<int32_t> tokens, targets;
  std::vector<int64_t> token_ids;
  // (N) the token importance of the current layer's attention, for a router that reads it
  // (RouterTraits::needs_token_importance; ops::attention_self_importance).
  std::vector<float> token_importance;
  bool has_targets = false;
  ExpertShard shard;
  // Per-expert views of a shard's experts (null: held elsewhere), per MoE layer: w1, w3, w2.
  std::vector<const float*> expert_params;
  std::vector<float*> expert_grads;
};

std::vector<float> shard_of_tensor(const ParamTensor& t, std::vector<float> full) {
  if (t.expert_rows == 0) return full;
  const size_t per_row = t.size / size_t(t.shape[0]), first = size_t(t.expert_first) * per_row;
  return std::vector<float>(full.begin() + long(first), full.begin() + long(first + t.size));
}

std::vector<int64_t> ParamTensor::full_shape() const {
  std::vector<int64_t> s = shape;
  if (expert_rows > 0) s[0] = expert_rows;
  return s;
}

Model::Model(const ModelConfig& config, uint64_t seed, ExpertShard shard)
    : config_(config), impl_(new Impl) {
  const ModelConfig& c = config_;
  if (shard.count < 0) shard = {0, c.experts};
  if (shard.first < 0 || shard.count < 1 || shard.first + shard.count > c.experts)
    fail("model: expert shard [{}, {}) is outside the {} experts", shard.first,
         shard.first + shard.count, c.experts);
  const bool sharded = shard.count != c.experts;
  impl_->shard = shard;
  const int64_t C = c.d_model, V = c.vocab_size;
  const bool swiglu = has_up_projection(c.activation);
  size_t total = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool trainable = true) {
    size_t size = 1;
    for (int64_t v : shape) size *= size_t(v);
    tensors_.push_back({name, shape, total, size, shape.size() >= 2, trainable});
    total += size;
    return tensors_.back().offset;
  };
  // Routed experts' tensors: this shard's rows only.
  auto add_experts = [&](const std::string& name, int64_t a, int64_t b) {
    const size_t offset = add(name, {shard.count, a, b});
    if (sharded) {
      tensors_.back().expert_first = shard.first;
      tensors_.back().expert_rows = c.experts;
    }
    return offset;
  };
  Impl& im = *impl_;
  std::vector<std::pair<size_t, RouterTensorSpec>> router_specs;  // (tensor index, spec)
  // Shared router tensors, allocated after the layers: (layer, sub-layer, position in
  // router_tensors).
  std::vector<std::pair<RouterTensorSpec, std::vector<std::array<size_t, 3>>>> shared_specs;
  im.wte = add("wte", {V, C});
  const LayerConfig lc = parse_layer_config(layer_json(c), "model router");
  for (int64_t l = 0; l < c.n_layers; ++l) {
    Impl::Layer L;
    const std::string p = "layers." + std::to_string(l) + ".";
    L.moe = c.is_moe_layer(l);
    L.attn_norm = add(p + "attn_norm", {C});
    L.wqkv = add(p + "attn.wqkv", {3 * C, C});
    L.wo = add(p + "attn.wo", {C, C});
    if (c.attention_skip.skips(l)) L.skip_w = add(p + "attn_skip.weight", {1, C});
    L.mlp_norm = add(p + "mlp_norm", {C});
    for (int64_t sub = 0; L.moe && sub < c.moe_sublayers; ++sub) {
      Impl::Unit U;
      // Sub-layers are named apart: layers.L.subS.moe.* (one sub-layer: layers.L.moe.*).
      const std::string q = c.moe_sublayers == 1 ? p : p + "sub" + std::to_string(sub) + ".";
      if (sub > 0) U.in_norm = add(q + "norm", {C});
      // Each MoE layer draws its own random stream (seed = its index among layers and
      // sub-layers): with one seed for all, every layer's draws (THOR's experts, MoEC's coins,
      // jitter) would be the same.
      LayerConfig layer_config = lc;
      layer_config.seed = uint64_t(l * c.moe_sublayers + sub);
      U.moe_layer = std::make_unique<MoELayer>(
          layer_config, MoEShape{C, c.experts, c.d_ff, c.shared_d_ff, c.vocab_size});
      if (c.attention_skip.skips(l) && U.moe_layer->router().traits().needs_token_importance)
        fail(
            "model: router '{}' reads the token importance of layer {}'s attention, which "
            "attention_skip may skip; list other layers in attention_skip.layers",
            lc.router, l);
      impl_->consistency = U.moe_layer->router().consistency_weight();
      if (impl_->consistency > 0 && U.global_batch_balance())
        fail(
            "model: router '{}' runs two passes per step (consistency {}); the global-batch "
            "balance loss cannot be combined with it",
            lc.router, impl_->consistency);
      const int64_t R = U.moe_layer->num_router_outputs(), E = c.experts, F = c.d_ff;
      U.block_begin = total;
      if (U.moe_layer->router().logit_function()) {
        for (const RouterTensorSpec& spec : U.moe_layer->router_tensor_specs()) {
          U.router_tensor_shared.push_back(spec.shared_across_layers);
          if (spec.shared_across_layers) {
            auto it = std::find_if(shared_specs.begin(), shared_specs.end(),
                                   [&](const auto& e) { return e.first.name == spec.name; });
            if (it == shared_specs.end()) it = shared_specs.insert(shared_specs.end(), {spec, {}});
            it->second.push_back({size_t(l), size_t(sub), U.router_tensors.size()});
            U.router_tensors.push_back(SIZE_MAX);  // its offset comes after the layers
            continue;
          }
          U.router_tensors.push_back(
              add(q + "moe.router." + spec.name, spec.shape, spec.trainable));
          tensors_.back().decay = spec.decay;
          router_specs.emplace_back(tensors_.size() - 1, spec);
        }
      } else if (U.moe_layer->router().traits().needs_gate) {
        U.gate = add(q + "moe.gate.weight", {R, C});
      }  // routers without a gate (hash, THOR's random experts) hold no gate tensor
      U.gate_bias = add(q + "moe.gate.bias", {E}, false);
      // w1 reads x (F, C), or the router's per-expert activations (F, gate_in; AoE).
      const int64_t w1_in = U.moe_layer->shape().w1_in();
      if (sharded && w1_in != C)
        fail(
            "model: router '{}' feeds its own activations to the experts' gate projection "
            "(experts.w1 is (E, F, {})); expert parallelism does not carry them yet",
            lc.router, w1_in);
      U.w1 = add_experts(q + "moe.experts.w1", F, w1_in);
      if (swiglu) U.w3 = add_experts(q + "moe.experts.w3", F, C);
      U.w2 = add_experts(q + "moe.experts.w2", C, F);
      if (c.shared_d_ff > 0) {
        U.sw1 = add(q + "moe.shared.w1", {c.shared_d_ff, C});
        if (swiglu) U.sw3 = add(q + "moe.shared.w3", {c.shared_d_ff, C});
        U.sw2 = add(q + "moe.shared.w2", {C, c.shared_d_ff});
        if (c.shared_expert_gate) U.shared_gate = add(q + "moe.shared.gate", {1, C});
      }
      U.block_end = total;
      L.subs.push_back(std::move(U));
    }
    if (!L.moe) {
      L.w1 = add(p + "mlp.w1", {c.dense_d_ff, C});
      if (swiglu) L.w3 = add(p + "mlp.w3", {c.dense_d_ff, C});
      L.w2 = add(p + "mlp.w2", {C, c.dense_d_ff});
    }
    im.layers.push_back(std::move(L));
  }
  im.final_norm = add("final_norm", {C});
  if (!c.tied_head) im.lm_head = add("lm_head", {V, C});
  im.shared_begin = total;
  for (const auto& [spec, uses] : shared_specs) {
    const size_t offset = add("moe.router." + spec.name, spec.shape, spec.trainable);
    tensors_.back().decay = spec.decay;
    router_specs.emplace_back(tensors_.size() - 1, spec);
    for (const auto& [layer, sub, position] : uses)
      im.layers[layer].subs[sub].router_tensors[position] = offset;
  }
  im.shared_end = total;
  im.shared_grads.assign(im.shared_end - im.shared_begin, 0.0f);
  params_.assign(total, 0.0f);
  grads_.assign(total, 0.0f);

  std::mt19937_64 rng(seed);
  const double out_std = c.init_std / std::sqrt(2.0 * double(c.n_layers));
  for (const ParamTensor& t : tensors_) {
    const bool is_norm = t.shape.size() == 1 && t.name.find("norm") != std::string::npos;
    if (is_norm) {
      std::fill_n(params_.begin() + long(t.offset), t.size, 1.0f);
      continue;
    }
    if (!t.trainable) continue;                      // selection bias starts at 0
    if (is_attention_skip_tensor(t.name)) continue;  // drawn last: the rest as without them
    const bool residual_out = t.name.ends_with("attn.wo") || t.name.ends_with("w2");
    std::normal_distribution<float> normal(0.0f, float(residual_out ? out_std : c.init_std));
    // A shard draws the whole tensor and keeps its rows: the one-process weights.
    const size_t per_row = t.expert_rows > 0 ? t.size / size_t(t.shape[0]) : 0;
    const size_t before = per_row * size_t(t.expert_first);
    const size_t after =
        t.expert_rows > 0 ? per_row * size_t(t.expert_rows - t.expert_first - t.shape[0]) : 0;
    for (size_t i = 0; i < before; ++i) normal(rng);
    for (size_t i = 0; i < t.size; ++i) params_[t.offset + i] = normal(rng);
    for (size_t i = 0; i < after; ++i) normal(rng);
  }
  // Router tensors whose spec asks for more than N(0, init_std), drawn after the others.
  for (const auto& [index, spec] : router_specs)
    init_router_tensor(spec, c.init_std, rng, params_.data() + tensors_[index].offset,
                       tensors_[index].size);
  // The attention-skip routers, N(0, init_std) (Hugging Face's nn.Linear init in the released
  // code), after everything else.
  for (const ParamTensor& t : tensors_) {
    if (!is_attention_skip_tensor(t.name)) continue;
    std::normal_distribution<float> normal(0.0f, float(c.init_std));
    for (size_t i = 0; i < t.size; ++i) params_[t.offset + i] = normal(rng);
  }
  refresh_frozen();  // a router may start frozen (StableMoE's stage 2)
}

void Model::refresh_frozen() {
  // Per parameter offset: the layers that use it, and how many of them freeze it.
  std::map<size_t, std::pair<int, int>> uses;
  for (const auto& L : impl_->layers)
    for (const auto& U : L.subs) {
      const std::vector<std::string> names = U.moe_layer->router().frozen_tensors();
      const std::vector<RouterTensorSpec>& specs = U.moe_layer->router_tensor_specs();
      for (size_t i = 0; i < specs.size() && i < U.router_tensors.size(); ++i) {
        auto& [users, freezing] = uses[U.router_tensors[i]];
        ++users;
        freezing += std::find(names.begin(), names.end(), specs[i].name) != names.end();
      }
    }
  for (ParamTensor& t : tensors_) {
    const auto it = uses.find(t.offset);
    t.frozen = it != uses.end() && it->second.first == it->second.second;
    // Router-Tuning: only the attention-skip routers learn.
    if (router_tuning_ && !is_attention_skip_tensor(t.name)) t.frozen = true;
  }
}

Model::~Model() = default;

const ParamTensor& Model::tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return t;
  fail("model: no parameter named '{}'", name);
}

namespace {

// Elements of the whole tensor (every shard's).
double full_size(const ParamTensor& t) {
  return t.expert_rows > 0 ? double(t.size) / double(t.shape[0]) * double(t.expert_rows)
                           : double(t.size);
}

}  // namespace

int64_t Model::parameter_count() const {
  double n = 0;
  for (const auto& t : tensors_)
    if (t.trainable) n += full_size(t);
  return int64_t(n);
}

int64_t Model::active_parameter_count() const {
  // Nominal experts per token (Router::nominal_experts_per_token).
  // Every MoE (sub-)layer has the same router config, and each sub-layer's experts count
  // apart: moe_sublayers = 2 at k per sub-layer activates 2 k experts of width d_ff per token.
  // Elastic-width routers run a share of each expert's hidden units per row
  // (Router::nominal_width_fraction; 1 for every other router).
  double k = 1.0;
  for (const auto& L : impl_->layers) {
    if (L.subs.empty()) continue;
    const Router& router = L.subs[0].moe_layer->router();
    k = router.nominal_experts_per_token(config_.experts);
    if (const double f = router.nominal_width_fraction(); f != 1.0) k *= f;
    break;
  }
  double n = 0;
  for (const auto& t : tensors_) {
    if (!t.trainable) continue;
    const bool routed = t.name.find("moe.experts.") != std::string::npos;
    n += routed ? full_size(t) * std::min(1.0, k / double(config_.experts)) : full_size(t);
  }
  return int64_t(n);
}

int64_t Model::num_moe_layers() const {
  int64_t n = 0;
  for (const auto& L : impl_->layers) n += int64_t(L.subs.size());
  return n;
}

void Model::carve_activations() {
  const ModelConfig& c = config_;
  Impl& im = *impl_;
  const int64_t B = im.B, T = im.T, N = B * T, C = c.d_model, H = c.n_heads, Fd = c.dense_d_ff;
  const size_t per_layer = size_t(N * C * 6 + N * 2 + N * 3 * C + B * H * T * T + N * Fd * 3);
  // Each MoE sub-layer after the first: its x, u, rstd and the previous one's y.
  const size_t per_sub = size_t(N * C * 3 + N);
  size_t subs = 0;
  for (const auto& L : im.layers) subs += L.subs.empty() ? 0 : L.subs.size() - 1;
  im.acts.resize(per_layer * size_t(c.n_layers) + per_sub * subs + size_t(N * C * 2 + N), 0.0f);
  float* p = im.acts.data();
  auto take = [&](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  for (auto& L : im.layers) {
    L.h_in = take(N * C), L.a = take(N * C), L.rstd1 = take(N), L.qkv = take(N * 3 * C);
    L.probs = take(B * H * T * T), L.o = take(N * C), L.h_mid = take(N * C), L.m = take(N * C);
    L.rstd2 = take(N), L.f = take(N * C), L.dh1 = take(N * Fd), L.dh3 = take(N * Fd);
    L.dact = take(N * Fd);
    for (size_t s = 0; s < L.subs.size(); ++s) {
      Impl::Unit& U = L.subs[s];
      if (s == 0) {
        U.x = L.m;
      } else {
        U.x = take(N * C), U.u = take(N * C), U.rstd = take(N);
        L.subs[s - 1].y = take(N * C);
      }
    }
    if (!L.subs.empty()) L.subs.back().y = L.f;
  }
  im.h_out = take(N * C), im.hf = take(N * C), im.rstd_f = take(N);
  logits_.resize(size_t(N * c.vocab_size), 0.0f);
}

// The other pass becomes the current one: activations (re-carved: the views follow the buffer),
// MoE caches and logits trade places.
void Model::swap_passes() {
  Impl& im = *impl_;
  std::swap(im.acts, im.other_acts);
  std::swap(logits_, im.other_logits);
  for (auto& L : im.layers) {
    for (auto& U : L.subs) std::swap(U.cache, U.other_cache);
    std::swap(L.skip, L.other_skip);
  }
  carve_activations();
}

double Model::forward(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                      bool training) {
  Impl& im = *impl_;
  im.paired = training && targets != nullptr && im.consistency > 0.0;
  im.paired_backward_done = false;
  im.consistency_loss = 0.0;
  if (!im.paired) return forward_pass(tokens, targets, B, T, training);
  // Two passes, each with its own draws (the layers' call counters move on).
  const double first = forward_pass(tokens, targets, B, T, training);
  swap_passes();
  const double second = forward_pass(tokens, targets, B, T, training);
  // Half the released code's objective CE₁ + CE₂ + α · KLₛ, so the gradient keeps a single
  // pass's scale and α its meaning.
  im.consistency_loss = 0.5 * im.consistency *
                        ops::symmetric_kl(B * T, config_.vocab_size, im.other_logits.data(),
                                          logits_.data(), nullptr, nullptr, 0.0f);
  return 0.5 * (first + second);
}

double Model::forward_pass(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t T,
                           bool training) {
  const ModelConfig& c = config_;
  const int64_t C = c.d_model, V = c.vocab_size, H = c.n_heads, D = C / H, N = B * T;
  const bool swiglu = has_up_projection(c.activation);
  const cpu::Act dense_act = layer::expert_activation(c.activation, c.swiglu_clamp);
  Impl& im = *impl_;
  if (T > c.seq_len) fail("model: sequence length {} exceeds seq_len = {}", T, c.seq_len);
  for (int64_t n = 0; n < N; ++n)
    if (tokens[n] < 0 || tokens[n] >= V)
      fail("model: token {} at position {} is outside the vocabulary [0, {})", tokens[n], n, V);
  if (B != im.B || T != im.T) {  // carve the activation buffer
    im.B = B;
    im.T = T;
    carve_activations();
  }
  im.tokens.assign(tokens, tokens + N);
  im.has_targets = targets != nullptr;
  if (targets) im.targets.assign(targets, targets + N);
  im.token_ids.assign(tokens, tokens + N);

  const float* P = params_.data();
  for (int64_t n = 0; n < N; ++n)
    std::copy_n(P + im.wte + size_t(tokens[n]) * size_t(C), C, im.layers[0].h_in + n * C);
  MoEBatch batch;
  batch.T = N;
  batch.token_ids = im.token_ids.data();
  batch.seq_lens.assign(size_t(B), T);
  batch.router_carry = nullptr;  // the first MoE layer's carry in is zeros
  for (size_t l = 0; l < im.layers.size(); ++l) {
    auto& L = im.layers[l];
    ops::rmsnorm_forward(N, C, L.h_in, P + L.attn_norm, c.norm_eps, L.a, L.rstd1);
    if (L.skip_w == SIZE_MAX) {
      cpu::gemm(false, true, N, 3 * C, C, 1.0f, L.a, C, P + L.wqkv, C, 0.0f, L.qkv, 3 * C);
      ops::rope(B, T, H, D, c.rope_theta, L.qkv, false);
      ops::attention_forward(B, T, H, D, L.qkv, L.probs, L.o);
      cpu::gemm(false, true, N, C, C, 1.0f, L.o, C, P + L.wo, C, 0.0f, L.h_mid, C);
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < N * C; ++i) L.h_mid[i] += L.h_in[i];
    } else {
      // MindSkip (docs/routers/mindskip.md): s_b = σ(w · mean_t a_{b,t}) per sequence; the
      // attention runs only for the sequences with s_b >= threshold, on runs of consecutive
      // kept sequences; h_mid = h_in + g_b · o Woᵀ there and h_in elsewhere.
      const AttentionSkipConfig& sk = c.attention_skip;
      const bool ste = sk.gate == AttentionSkipConfig::Gate::STE;
      Impl::Layer::Skip& S = L.skip;
      S.pool.assign(size_t(B * C), 0.0f);
      S.score.assign(size_t(B), 0.0f);
      S.kept.assign(size_t(B), 0);
      const float* w = P + L.skip_w;
      std::vector<double> acc(static_cast<size_t>(C));
      double gate_sum = 0.0;
      for (int64_t b = 0; b < B; ++b) {
        std::fill(acc.begin(), acc.end(), 0.0);
        for (int64_t t = 0; t < T; ++t)
          for (int64_t i = 0; i < C; ++i) acc[size_t(i)] += L.a[(b * T + t) * C + i];
        double z = 0.0;
        for (int64_t i = 0; i < C; ++i) {
          S.pool[size_t(b * C + i)] = float(acc[size_t(i)] / double(T));
          z += double(w[i]) * double(S.pool[size_t(b * C + i)]);
        }
        S.score[size_t(b)] = float(1.0 / (1.0 + std::exp(-z)));
        S.kept[size_t(b)] = double(S.score[size_t(b)]) >= sk.threshold ? 1 : 0;
        gate_sum += ste ? double(S.kept[size_t(b)]) : double(S.score[size_t(b)]);
      }
      S.loss = sk.loss * gate_sum / double(B);
      S.attention_runs = 0;
      for_each_kept_run(S.kept, [&](int64_t b0, int64_t b1) {
        const int64_t r0 = b0 * T, rows = (b1 - b0) * T;
        cpu::gemm(false, true, rows, 3 * C, C, 1.0f, L.a + r0 * C, C, P + L.wqkv, C, 0.0f,
                  L.qkv + r0 * 3 * C, 3 * C);
        ops::rope(b1 - b0, T, H, D, c.rope_theta, L.qkv + r0 * 3 * C, false);
        ops::attention_forward(b1 - b0, T, H, D, L.qkv + r0 * 3 * C, L.probs + b0 * H * T * T,
                               L.o + r0 * C);
        S.attention_runs += b1 - b0;
        cpu::gemm(false, true, rows, C, C, 1.0f, L.o + r0 * C, C, P + L.wo, C, 0.0f,
                  L.h_mid + r0 * C, C);
      });
      for (int64_t b = 0; b < B; ++b) {
        const float g = ste ? 1.0f : S.score[size_t(b)];
        float* hm = L.h_mid + b * T * C;
        const float* hi = L.h_in + b * T * C;
        if (!S.kept[size_t(b)]) {
          std::copy_n(hi, T * C, hm);
        } else if (ste) {
          for (int64_t i = 0; i < T * C; ++i) hm[i] += hi[i];
        } else {
          for (int64_t i = 0; i < T * C; ++i) hm[i] = hi[i] + g * hm[i];
        }
      }
    }
    ops::rmsnorm_forward(N, C, L.h_mid, P + L.mlp_norm, c.norm_eps, L.m, L.rstd2);
    for (size_t sub = 0; sub < L.subs.size(); ++sub) {
      Impl::Unit& U = L.subs[sub];
      if (sub > 0) {  // u = x_{s-1} + y_{s-1}; x_s = RMSNorm(u) · in_norm
        const Impl::Unit& below = L.subs[sub - 1];
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < N * C; ++i) U.u[i] = below.x[i] + below.y[i];
        ops::rmsnorm_forward(N, C, U.u, P + U.in_norm, c.norm_eps, U.x, U.rstd);
      }
      auto opt = [&](size_t off) { return off == SIZE_MAX ? nullptr : P + off; };
      MoEParams mp{opt(U.gate), opt(U.gate_bias), opt(U.w1),  opt(U.w3),
                   opt(U.w2),   opt(U.sw1),       opt(U.sw3), opt(U.sw2)};
      if (!U.router_tensors.empty()) {
        U.router_params.clear();
        for (size_t off : U.router_tensors) U.router_params.push_back(P + off);
        mp.router = U.router_params.data();
      }
      mp.shared_gate = opt(U.shared_gate);
      if (im.shard.count != c.experts) {
        mp.w1 = mp.w3 = mp.w2 = nullptr;
        expert_views(
            im.shard, c.experts, c.d_ff * C, U.w1, U.w3, U.w2,
            [&](size_t off) -> const float* { return P + off; }, im.expert_params, mp.w1_experts,
            mp.w3_experts, mp.w2_experts);
      }
      batch.x = U.x;
      // The block's attention gives each token an importance (no gradient flows back into it).
      batch.token_importance = nullptr;
      if (U.moe_layer->router().traits().needs_token_importance) {
        im.token_importance.resize(size_t(N));
        ops::attention_self_importance(B, T, H, L.probs, im.token_importance.data());
        batch.token_importance = im.token_importance.data();
      }
      batch.global_counts = training && U.global_batch_balance() && !U.earlier_counts.empty()
                                ? U.earlier_counts.data()
                                : nullptr;
      U.moe_layer->set_training(training);
      U.moe_layer->forward(mp, batch, U.cache, U.y);
      if (!U.cache.router_carry.empty()) batch.router_carry = U.cache.router_carry.data();
    }
    if (!L.moe) {
      cpu::ffn_forward(dense_act, N, C, c.dense_d_ff, L.m, P + L.w1, swiglu ? P + L.w3 : nullptr,
                       P + L.w2, L.dh1, L.dh3, L.dact, L.f);
    }
    float* next = l + 1 < im.layers.size() ? im.layers[l + 1].h_in : im.h_out;
#pragma omp parallel for simd schedule(static)
    for (int64_t i = 0; i < N * C; ++i) next[i] = L.h_mid[i] + L.f[i];
  }
  ops::rmsnorm_forward(N, C, im.h_out, P + im.final_norm, c.norm_eps, im.hf, im.rstd_f);
  const float* head = P + (c.tied_head ? im.wte : im.lm_head);
  cpu::gemm(false, true, N, V, C, 1.0f, im.hf, C, head, C, 0.0f, logits_.data(), V);
  return targets ? ops::cross_entropy(N, V, logits_.data(), targets, nullptr, 1.0f) : 0.0;
}

void Model::backward(float scale) {
  Impl& im = *impl_;
  if (!im.has_targets) fail("model: backward needs a forward with targets");
  if (!im.paired) return backward_pass(scale, nullptr, true);
  if (im.paired_backward_done) fail("model: backward ran twice after one two-pass forward");
  // ½ (CE + aux) of each pass + ½ α · mean symmetric KL of the two passes' distributions; the
  // second pass is current. Gradients are complete (gradient_ready) only in the last pass.
  const int64_t N = im.B * im.T, V = config_.vocab_size;
  std::vector<float> d_first(size_t(N * V), 0.0f), d_second(size_t(N * V), 0.0f);
  ops::symmetric_kl(N, V, im.other_logits.data(), logits_.data(), d_first.data(), d_second.data(),
                    float(0.5 * double(scale) * loss_share_ * im.consistency));
  backward_pass(0.5f * scale, d_second.data(), false);
  swap_passes();
  backward_pass(0.5f * scale, d_first.data(), true);
  swap_passes();  // the second pass is current again, as after forward (logits, caches)
  im.paired_backward_done = true;
}

void Model::backward_pass(float scale, const float* extra_dlogits, bool last) {
  const ModelConfig& c = config_;
  Impl& im = *impl_;
  const int64_t B = im.B, T = im.T, N = B * T, C = c.d_model, V = c.vocab_size, H = c.n_heads;
  const int64_t D = C / H;
  const bool swiglu = has_up_projection(c.activation);
  const cpu::Act dense_act = layer::expert_activation(c.activation, c.swiglu_clamp);
  const float* P = params_.data();
  float* G = grads_.data();
  // Every buffer below is fully written before it is read, except dh, which accumulates.
  im.scratch.resize(size_t(N * C * 4 + N * 3 * C + B * H * T * T + N * V));
  float* dh = im.scratch.data();            // (N, C) gradient of the residual stream
  float* dtmp = dh + N * C;                 // (N, C)
  float* dm = dtmp + N * C;                 // (N, C)
  float* da = dm + N * C;                   // (N, C)
  float* dqkv = da + N * C;                 // (N, 3C)
  float* dprobs = dqkv + N * 3 * C;         // (B, H, T, T)
  float* dlogits = dprobs + B * H * T * T;  // (N, V)

  std::fill(dh, dh + N * C, 0.0f);
  ops::cross_entropy(N, V, logits_.data(), im.targets.data(), dlogits,
                     float(double(scale) * loss_share_));
  if (extra_dlogits)
    for (int64_t i = 0; i < N * V; ++i) dlogits[i] += extra_dlogits[i];
  const size_t head = c.tied_head ? im.wte : im.lm_head;
  cpu::gemm(true, false, V, C, N, 1.0f, dlogits, V, im.hf, C, 1.0f, G + head, C);
  cpu::gemm(false, false, N, C, V, 1.0f, dlogits, V, P + head, C, 0.0f, dtmp, C);
  ops::rmsnorm_backward(N, C, im.h_out, P + im.final_norm, im.rstd_f, dtmp, dh, G + im.final_norm);

  MoEBatch batch;
  batch.T = N;
  batch.token_ids = im.token_ids.data();
  batch.seq_lens.assign(size_t(B), T);
  // The router carry: the MoE layer below this one gave it (null at the lowest MoE layer), per
  // MoE (sub-)layer in forward order.
  std::vector<bool> carry_from_below;
  for (const auto& L : im.layers)
    for (size_t sub = 0; sub < L.subs.size(); ++sub)
      carry_from_below.push_back(!carry_from_below.empty());
  size_t unit = carry_from_below.size();  // counts down with backward
  bool have_d_carry = false;              // d_carry_above holds the layers above's ∂L/∂carry
  if (c.moe_sublayers > 1) {
    im.d_sub_x.resize(size_t(N * C));
    im.d_sub_u.resize(size_t(N * C));
  }
  for (size_t li = im.layers.size(); li-- > 0;) {
    auto& L = im.layers[li];
    std::fill(dm, dm + N * C, 0.0f);
    // The last sub-layer's output adds to the residual stream: dy = dh (scale applies through
    // dh already). Below it, dy is ∂L/∂u of the in_norm above.
    const float* dy = dh;
    for (size_t sub = L.subs.size(); sub-- > 0;) {
      Impl::Unit& U = L.subs[sub];
      --unit;
      float* dx = sub == 0 ? dm : im.d_sub_x.data();  // (N, C) ∂L/∂x of this sub-layer
      std::fill(dx, dx + N * C, 0.0f);
      im.moe_grads.assign(U.block_end - U.block_begin, 0.0f);
      auto opt = [&](size_t off) { return off == SIZE_MAX ? nullptr : P + off; };
      auto grad = [&](size_t off) {
        if (off == SIZE_MAX) return static_cast<float*>(nullptr);
        if (off >= im.shared_begin && off < im.shared_end)
          return im.shared_grads.data() + (off - im.shared_begin);
        return im.moe_grads.data() + (off - U.block_begin);
      };
      MoEParams mp{opt(U.gate), opt(U.gate_bias), opt(U.w1),  opt(U.w3),
                   opt(U.w2),   opt(U.sw1),       opt(U.sw3), opt(U.sw2)};
      MoEGrads mg{grad(U.gate), grad(U.w1),  grad(U.w3), grad(U.w2),
                  grad(U.sw1),  grad(U.sw3), grad(U.sw2)};
      if (!U.router_tensors.empty()) {
        U.router_params.clear();
        U.router_grads.clear();
        for (size_t off : U.router_tensors) {
          U.router_params.push_back(P + off);
          U.router_grads.push_back(grad(off));
        }
        mp.router = U.router_params.data();
        mg.router = U.router_grads.data();
      }
      mp.shared_gate = opt(U.shared_gate);
      mg.shared_gate = grad(U.shared_gate);
      if (im.shard.count != c.experts) {
        mp.w1 = mp.w3 = mp.w2 = nullptr;
        mg.w1 = mg.w3 = mg.w2 = nullptr;
        expert_views(
            im.shard, c.experts, c.d_ff * C, U.w1, U.w3, U.w2,
            [&](size_t off) -> const float* { return P + off; }, im.expert_params, mp.w1_experts,
            mp.w3_experts, mp.w2_experts);
        expert_views(im.shard, c.experts, c.d_ff * C, U.w1, U.w3, U.w2, grad, im.expert_grads,
                     mg.w1_experts, mg.w3_experts, mg.w2_experts);
      }
      batch.x = U.x;
      batch.global_counts =
          U.global_batch_balance() && !U.earlier_counts.empty() ? U.earlier_counts.data() : nullptr;
      // The carry this layer read came from the MoE layer below: its gradient goes there.
      const size_t carry = U.cache.router_carry.size();
      if (carry > 0 && carry_from_below[unit]) {
        im.d_carry_below.resize(carry);
        mg.router_carry = im.d_carry_below.data();
      }
      std::fill(im.shared_grads.begin(), im.shared_grads.end(), 0.0f);
      U.moe_layer->backward(mp, batch, U.cache, dy, dx, mg, scale,
                            have_d_carry ? im.d_carry_above.data() : nullptr);
      if (carry > 0) {
        have_d_carry = carry_from_below[unit];
        std::swap(im.d_carry_above, im.d_carry_below);
      }
      // Every MoE layer reads every shared tensor (one router config for all of them).
      for (size_t i = 0; i < im.shared_grads.size(); ++i)
        G[im.shared_begin + i] += im.shared_grads[i];
      if (U.global_batch_balance()) {
        // The next micro-batch's balance loss counts this one's choices too (the ones the loss
        // counts: first choices only under balance_top1_only).
        const RoutingPlan& plan = U.cache.routing_plan();
        const bool first =
            U.moe_layer->config().losses.balance_top1_only && !plan.first_choice_counts.empty();
        const std::vector<double>& counts =
            first ? plan.first_choice_counts : plan.selection_counts;
        U.earlier_counts.resize(counts.size(), 0.0);
        for (size_t i = 0; i < counts.size(); ++i) U.earlier_counts[i] += counts[i];
      }
      for (size_t i = 0; i < im.moe_grads.size(); ++i) G[U.block_begin + i] += im.moe_grads[i];
      if (sub + 1 < L.subs.size()) {
        // u_{s+1} = x_s + y_s: the residual inside the block, dy (= ∂L/∂u) reaches x_s too.
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < N * C; ++i) dx[i] += dy[i];
      }
      if (sub > 0) {  // x_s = RMSNorm(u_s) · in_norm: ∂L/∂u_s is the next one down's dy
        float* du = im.d_sub_u.data();
        std::fill(du, du + N * C, 0.0f);
        ops::rmsnorm_backward(N, C, U.u, P + U.in_norm, U.rstd, dx, du, G + U.in_norm);
        dy = du;
      }
    }
    if (!L.moe) {
      std::vector<float> dact(size_t(N * c.dense_d_ff)), dh3(swiglu ? size_t(N * c.dense_d_ff) : 0);
      cpu::ffn_backward(dense_act, N, C, c.dense_d_ff, L.m, P + L.w1, swiglu ? P + L.w3 : nullptr,
                        P + L.w2, L.dh1, L.dh3, L.dact, dh, dact.data(),
                        swiglu ? dh3.data() : nullptr, G + L.w1, swiglu ? G + L.w3 : nullptr,
                        G + L.w2, dm, true);
    }
    ops::rmsnorm_backward(N, C, L.h_mid, P + L.mlp_norm, L.rstd2, dm, dh, G + L.mlp_norm);
    if (L.skip_w == SIZE_MAX) {
      // Attention block: h_mid = h_in + o Woᵀ.
      cpu::gemm(true, false, C, C, N, 1.0f, dh, C, L.o, C, 1.0f, G + L.wo, C);
      cpu::gemm(false, false, N, C, C, 1.0f, dh, C, P + L.wo, C, 0.0f, dtmp, C);
      ops::attention_backward(B, T, H, D, L.qkv, L.probs, dtmp, dqkv, dprobs);
      ops::rope(B, T, H, D, c.rope_theta, dqkv, true);
      cpu::gemm(true, false, 3 * C, C, N, 1.0f, dqkv, 3 * C, L.a, C, 1.0f, G + L.wqkv, C);
      cpu::gemm(false, false, N, C, 3 * C, 1.0f, dqkv, 3 * C, P + L.wqkv, C, 0.0f, da, C);
    } else {
      // MindSkip: h_mid = h_in + g_b · o Woᵀ on kept sequences. ∂L/∂s_b = ⟨δ, o Woᵀ⟩ over the
      // sequence (g = s, or g = 1 with the straight-through gradient: the same expression) plus
      // the skip loss's λ · share / B; then through σ and the mean into w and every token's a.
      const AttentionSkipConfig& sk = c.attention_skip;
      const bool ste = sk.gate == AttentionSkipConfig::Gate::STE;
      const Impl::Layer::Skip& S = L.skip;
      std::fill(da, da + N * C, 0.0f);
      std::vector<double> ds(size_t(B), 0.0);
      for_each_kept_run(S.kept, [&](int64_t b0, int64_t b1) {
        const int64_t r0 = b0 * T, rows = (b1 - b0) * T;
        cpu::gemm(false, false, rows, C, C, 1.0f, dh + r0 * C, C, P + L.wo, C, 0.0f, dtmp + r0 * C,
                  C);
        for (int64_t b = b0; b < b1; ++b) {
          const float* dt = dtmp + b * T * C;
          const float* o = L.o + b * T * C;
          double dot = 0.0;
          for (int64_t i = 0; i < T * C; ++i) dot += double(dt[i]) * double(o[i]);
          ds[size_t(b)] = dot;
          const float g = ste ? 1.0f : S.score[size_t(b)];
          cpu::gemm(true, false, C, C, T, g, dh + b * T * C, C, o, C, 1.0f, G + L.wo, C);
          if (!ste)
            for (int64_t i = 0; i < T * C; ++i) dtmp[b * T * C + i] *= g;
        }
        ops::attention_backward(b1 - b0, T, H, D, L.qkv + r0 * 3 * C, L.probs + b0 * H * T * T,
                                dtmp + r0 * C, dqkv + r0 * 3 * C, dprobs + b0 * H * T * T);
        ops::rope(b1 - b0, T, H, D, c.rope_theta, dqkv + r0 * 3 * C, true);
        cpu::gemm(true, false, 3 * C, C, rows, 1.0f, dqkv + r0 * 3 * C, 3 * C, L.a + r0 * C, C,
                  1.0f, G + L.wqkv, C);
        cpu::gemm(false, false, rows, C, 3 * C, 1.0f, dqkv + r0 * 3 * C, 3 * C, P + L.wqkv, C, 0.0f,
                  da + r0 * C, C);
      });
      const double loss_grad = sk.loss * double(scale) * loss_share_ / double(B);
      const float* w = P + L.skip_w;
      for (int64_t b = 0; b < B; ++b) {
        const double s = double(S.score[size_t(b)]);
        const double dz = (ds[size_t(b)] + loss_grad) * s * (1.0 - s);
        for (int64_t i = 0; i < C; ++i)
          G[L.skip_w + size_t(i)] += float(dz * double(S.pool[size_t(b * C + i)]));
        for (int64_t i = 0; i < C; ++i) {
          const float d = float(dz * double(w[i]) / double(T));
          for (int64_t t = 0; t < T; ++t) da[(b * T + t) * C + i] += d;
        }
      }
    }
    ops::rmsnorm_backward(N, C, L.h_in, P + L.attn_norm, L.rstd1, da, dh, G + L.attn_norm);
    if (gradient_ready_ && last)
      gradient_ready_(L.attn_norm,
                      li + 1 < im.layers.size() ? im.layers[li + 1].attn_norm : im.final_norm);
  }
  for (int64_t n = 0; n < N; ++n) {
    float* row = G + im.wte + size_t(im.tokens[size_t(n)]) * size_t(C);
    for (int64_t i = 0; i < C; ++i) row[i] += dh[n * C + i];
  }
  if (gradient_ready_ && last) {
    gradient_ready_(0, im.layers.empty() ? im.final_norm : im.layers[0].attn_norm);
    gradient_ready_(im.final_norm, grads_.size());
  }
}

void Model::set_parallel(const ModelParallel& parallel) {
  loss_share_ = parallel.loss_share;
  // The expert-parallel dispatcher keeps one call's exchange plan for its backward.
  if (impl_->consistency > 0 && parallel.experts && parallel.experts->size() > 1)
    fail(
        "model: two passes per step (consistency regularisation, router thor) do not run under "
        "expert parallelism yet; use --expert-parallel 1 (data parallelism works)");
  for (auto& L : impl_->layers)
    for (auto& U : L.subs) {
      const ExpertPlacement& declared = U.moe_layer->placement();
      if (declared.declared() && parallel.placement.declared() && !(declared == parallel.placement))
        fail(
            "model: the router config's placement {} differs from this run's layout {} (ranks = "
            "the job's size, expert_parallel = --expert-parallel, ranks_per_node = "
            "--ranks-per-node); change one to match",
            placement_json(declared).dump(), placement_json(parallel.placement).dump());
      if (parallel.placement.declared()) U.moe_layer->set_placement(parallel.placement);
      U.moe_layer->set_routing_communicator(parallel.routing);
      if (parallel.experts && parallel.experts->size() > 1)
        U.moe_layer->set_dispatcher(std::make_unique<layer::ExpertParallelDispatcher>(
            *parallel.experts, parallel.ranks_per_node));
    }
}

void Model::set_gradient_ready(std::function<void(size_t, size_t)> ready) {
  gradient_ready_ = std::move(ready);
}

void Model::zero_grads() {
  for (auto& L : impl_->layers)
    for (auto& U : L.subs) U.earlier_counts.clear();
  float* g = grads_.data();
  const int64_t n = int64_t(grads_.size());
#pragma omp parallel for simd schedule(static)
  for (int64_t i = 0; i < n; ++i) g[i] = 0.0f;
}

double Model::aux_loss() const {
  const Impl& im = *impl_;
  double total = 0.0;
  for (const auto& L : im.layers)
    for (const auto& U : L.subs)
      total += im.paired ? 0.5 * (U.cache.stats.aux_loss + U.other_cache.stats.aux_loss)
                         : U.cache.stats.aux_loss;
  for (const auto& L : im.layers)  // MindSkip's skip loss
    if (L.skip_w != SIZE_MAX)
      total += im.paired ? 0.5 * (L.skip.loss + L.other_skip.loss) : L.skip.loss;
  return total + im.consistency_loss;
}

std::vector<const RoutingStats*> Model::layer_stats() const {
  std::vector<const RoutingStats*> out;
  for (const auto& L : impl_->layers)
    for (const auto& U : L.subs) out.push_back(&U.cache.stats);
  return out;
}

std::vector<AttentionSkipStats> Model::attention_skip_stats() const {
  std::vector<AttentionSkipStats> out;
  for (size_t l = 0; l < impl_->layers.size(); ++l) {
    const Impl::Layer& L = impl_->layers[l];
    if (L.skip_w == SIZE_MAX) continue;
    AttentionSkipStats st;
    st.layer = int64_t(l);
    st.scores = L.skip.score;
    st.kept = L.skip.kept;
    st.loss = L.skip.loss;
    st.attention_runs = L.skip.attention_runs;
    const double n = double(std::max<size_t>(1, st.kept.size()));
    for (size_t b = 0; b < st.kept.size(); ++b) {
      st.skip_rate += (1.0 - double(st.kept[b])) / n;
      st.mean_score += double(st.scores[b]) / n;
    }
    out.push_back(std::move(st));
  }
  return out;
}

void Model::set_router_tuning(bool on) {
  if (on && !config_.attention_skip.enabled)
    fail(
        "model: Router-Tuning ('router_tuning' = true) trains only the attention-skip routers, "
        "but the model config has no 'attention_skip'");
  router_tuning_ = on;
  refresh_frozen();
}

std::vector<const MoECache*> Model::layer_caches() const {
  std::vector<const MoECache*> out;
  for (const auto& L : impl_->layers)
    for (const auto& U : L.subs) out.push_back(&U.cache);
  return out;
}

nlohmann::json Model::state() const {
  json layers = json::array();
  for (const auto& L : impl_->layers)
    for (const auto& U : L.subs)
      layers.push_back(
          {{"router", U.moe_layer->router().state()}, {"calls", U.moe_layer->calls()}});
  return {{"moe_layers", layers}};
}

void Model::set_state(const json& state, const std::string& source) {
  try {
    const json& layers = state.at("moe_layers");
    if (!layers.is_array() || int64_t(layers.size()) != num_moe_layers())
      fail("{}: state.moe_layers must list {} MoE layers", source, num_moe_layers());
    size_t i = 0;
    for (auto& L : impl_->layers)
      for (auto& U : L.subs) {
        U.moe_layer->router().set_state(layers.at(i).at("router"));
        U.moe_layer->set_calls(layers.at(i).at("calls").get<uint64_t>());
        ++i;
      }
  } catch (const json::exception& e) {
    fail("{}: malformed model state: {}", source, e.what());
  }
  refresh_frozen();
}

void Model::update_router_state() {
  if (router_tuning_) {  // Router-Tuning: the rest of the model, router state included, stays
    refresh_frozen();
    return;
  }
  std::vector<RouterStepStats> stats;
  for (auto& L : impl_->layers)
    for (auto& U : L.subs)
      stats.push_back(U.moe_layer->router_step_stats(U.cache, params_.data() + U.gate_bias));
  double mean = 0.0;
  for (const RouterStepStats& s : stats) mean += s.zero_fraction / double(stats.size());
  size_t i = 0;
  for (auto& L : impl_->layers)
    for (auto& U : L.subs) {
      stats[i].model_zero_fraction = mean;
      U.moe_layer->update_router_state(stats[i++]);
    }
  refresh_frozen();
}

void Model::set_token_frequencies(const std::vector<int64_t>& counts) {
  if (int64_t(counts.size()) != config_.vocab_size)
    fail("model: {} token counts for a vocabulary of {}", counts.size(), config_.vocab_size);
  for (auto& L : impl_->layers)
    for (auto& U : L.subs) U.moe_layer->set_token_frequencies(counts, "model token counts");
}

void Model::set_schedule(const TrainingSchedule& schedule) {
  for (auto& L : impl_->layers)
    for (auto& U : L.subs) U.moe_layer->set_schedule(schedule);
  refresh_frozen();  // the schedule may have switched a router's stage (S₁ = 0)
}

bool Model::needs_token_frequencies() const {
  for (const auto& L : impl_->layers)
    for (const auto& U : L.subs)
      if (U.moe_layer->router().traits().needs_token_frequencies) return true;
  return false;
}

SafetensorsFile Model::to_safetensors() const {
  SafetensorsFile file;
  for (const auto& t : tensors_)
    file.tensors[t.name] = TensorData::from_f32(
        t.shape, std::vector<float>(params_.begin() + long(t.offset),
                                    params_.begin() + long(t.offset + t.size)));
  return file;
}

std::vector<std::string> Model::load_safetensors(const SafetensorsFile& file,
                                                 const std::string& source,
                                                 bool allow_missing_attention_skip) {
  for (const auto& [name, data] : file.tensors) {
    bool known = false;
    for (const auto& t : tensors_) known = known || t.name == name;
    if (!known) fail("{}: unknown tensor '{}' for this model config", source, name);
  }
  std::vector<std::string> kept;
  for (const auto& t : tensors_) {
    auto it = file.tensors.find(t.name);
    if (it == file.tensors.end() && allow_missing_attention_skip &&
        is_attention_skip_tensor(t.name)) {
      kept.push_back(t.name);
      continue;
    }
    if (it == file.tensors.end()) fail("{}: tensor '{}' is missing", source, t.name);
    if (it->second.shape != t.full_shape())
      fail("{}: tensor '{}' has shape ({}), the model config needs ({})", source, t.name,
           fmt::join(it->second.shape, ", "), fmt::join(t.full_shape(), ", "));
    const std::vector<float> v = shard_of_tensor(t, it->second.to_f32(t.name));
    for (float x : v)
      if (!std::isfinite(x)) fail("{}: tensor '{}' has a non-finite value {}", source, t.name, x);
    std::copy(v.begin(), v.end(), params_.begin() + long(t.offset));
  }
  return kept;
}

AdamW::AdamW(const AdamWConfig& config, size_t n) : config_(config), m_(n, 0.0f), v_(n, 0.0f) {}

double AdamW::learning_rate(int64_t step) const {
  const AdamWConfig& c = config_;
  if (step < c.warmup_steps) return c.lr * double(step + 1) / double(c.warmup_steps);
  const double span = double(std::max<int64_t>(1, c.steps - c.warmup_steps));
  const double progress = std::clamp(double(step - c.warmup_steps) / span, 0.0, 1.0);
  const double min_lr = c.lr * c.min_lr_ratio;
  return min_lr + 0.5 * (c.lr - min_lr) * (1.0 + std::cos(M_PI * progress));
}

double AdamW::grad_norm(const Model& model) {
  const std::vector<float>& g = model.grads();
  double norm_sq = 0.0;
  for (const auto& t : model.tensors()) {
    if (!t.trainable || t.frozen) continue;
    const float* gg = g.data() + t.offset;
    const int64_t n = int64_t(t.size);
    double sum = 0.0;
#pragma omp parallel for simd schedule(static) reduction(+ : sum) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) sum += double(gg[i]) * gg[i];
    norm_sq += sum;
  }
  return std::sqrt(norm_sq);
}

double AdamW::step(Model& model, int64_t step) {
  return this->step(model, step, grad_norm(model));
}

double AdamW::step(Model& model, int64_t step, double norm) {
  const AdamWConfig& c = config_;
  std::vector<float>& p = model.params();
  std::vector<float>& g = model.grads();
  const double clip = c.grad_clip > 0 && norm > c.grad_clip ? c.grad_clip / norm : 1.0;
  const double lr = learning_rate(step);
  const double bc1 = 1.0 - std::pow(c.beta1, double(step + 1));
  const double bc2 = 1.0 - std::pow(c.beta2, double(step + 1));
  const float b1 = float(c.beta1), b2 = float(c.beta2), eps = float(c.eps);
  const float step_size = float(lr / bc1), inv_sqrt_bc2 = float(1.0 / std::sqrt(bc2));
  const float gscale = float(clip);
  for (const auto& t : model.tensors()) {
    if (!t.trainable || t.frozen) continue;  // frozen: no moment update, no decay
    const float decay = t.decay ? float(1.0 - lr * c.weight_decay) : 1.0f;
    float* pp = p.data() + t.offset;
    const float* gg = g.data() + t.offset;
    float* mm = m_.data() + t.offset;
    float* vv = v_.data() + t.offset;
    const int64_t n = int64_t(t.size);
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; ++i) {
      const float grad = gg[i] * gscale;
      mm[i] = b1 * mm[i] + (1.0f - b1) * grad;
      vv[i] = b2 * vv[i] + (1.0f - b2) * grad * grad;
      pp[i] = pp[i] * decay - step_size * mm[i] / (std::sqrt(vv[i]) * inv_sqrt_bc2 + eps);
    }
  }
  return norm;
}

}  // namespace switchyard
