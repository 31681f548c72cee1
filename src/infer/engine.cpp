#include <fmt/ranges.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/infer/checkpoint.h>
#include <switchyard/infer/engine.h>
#include <switchyard/moe_layer.h>
#include <switchyard/safetensors.h>

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/huge_pages.h"
#include "infer/blocks.h"
#include "infer/rope.h"
#include "kernels/cpu/kernels.h"

namespace switchyard::infer {

using nlohmann::json;

namespace {

using Buffer = std::vector<float>;
using blocks::Matrix;

struct LayerWeights {
  Buffer attn_norm, ffn_norm;  // (d)
  Matrix wq, wk, wv, wo;       // (H Dq, d), (Hkv Dq, d), (Hkv Dv, d), (d, H Dv)
  Buffer bq, bk, bv;           // biases or empty
  Buffer q_norm, k_norm;       // (Dq) per head or (H Dq) whole, or empty
  // Latent attention: q_a (Rq, d), q_a_norm (Rq), q_b (H Dq, Rq); kv_a (Rkv + rope, d),
  // kv_a_norm (Rkv), kv_b (H (nope + Dv), Rkv).
  Matrix q_a, q_b, kv_a, kv_b;
  Buffer q_a_norm, kv_a_norm;
  Matrix dense_w1, dense_w3, dense_w2;  // (Fd, d), (Fd, d), (d, Fd)
  // MoE.
  Buffer gate, gate_bias;                           // (E, d), (E) or empty
  Buffer w1, w3, w2;                                // (E, F, d), (E, F, d), (E, d, F)
  std::vector<uint16_t> w1_bf16, w3_bf16, w2_bf16;  // the same in BF16 (the file\'s dtype)
  Matrix shared_w1, shared_w3, shared_w2;           // (Fs, d), (Fs, d), (d, Fs), (1, d)
  Buffer shared_gate;
  std::unique_ptr<MoELayer> moe;
  int64_t moe_index = -1;
  std::vector<int32_t> expert_ids;  // (E kept) checkpoint id of each expert the layer holds
};

// Scratch of one forward call, kept across calls.
struct Scratch {
  Buffer h, a, q, k, v, att, o, ffn, ffn_h, shared, shared_gate, lat, ckv, kvb;
  MoECache moe;  // every MoE layer's, in turn (its routing is read before the next layer runs)
};

// Adds the wall time since the previous lap to a phase of Model::profile.
class PhaseClock {
 public:
  explicit PhaseClock(std::map<std::string, double>& ms) : ms_(ms) {}
  void lap(const std::string& phase) {
    const auto now = std::chrono::steady_clock::now();
    ms_[phase] += std::chrono::duration<double, std::milli>(now - last_).count();
    last_ = now;
  }

 private:
  std::map<std::string, double>& ms_;
  std::chrono::steady_clock::time_point last_ = std::chrono::steady_clock::now();
};

}  // namespace

struct Model::Impl {
  ModelSpec spec;
  RopeTable rope;
  Matrix embed, lm_head;  // (V, d), (d), (V, d) or empty when tied
  Buffer final_norm;
  std::vector<LayerWeights> layers;
  std::vector<LayerRouting> routing;  // per MoE layer
  Scratch s;
  int64_t params = 0;

  std::string routing_source;
  bool keep_bf16 = true;
  bool round_bf16_activations = true;
  int64_t moe_count = 0;
  double kept_assignments = 0;  // over all MoE layers and tokens run so far
  int64_t moe_rows = 0;         // tokens × MoE layers run so far
  std::map<std::string, double> profile_ms;
  void load_weights(const Checkpoint& ckpt);
  void reserve(int64_t tokens);
  void attention(int64_t l, std::span<const Chunk> chunks, int64_t N,
                 const std::vector<int64_t>& pos, PhaseClock& clock);
  void latent_projections(const LayerWeights& w, int64_t N);
  void record(const LayerWeights& w, int64_t N, ForwardCapture& capture);
  std::vector<int32_t> forced_ids(const LayerWeights& w, const ForwardReplay& replay,
                                  int64_t N) const;
};

Model::Model() : impl_(std::make_unique<Impl>()) {}
Model::~Model() = default;

const ModelSpec& Model::spec() const {
  return impl_->spec;
}
const std::vector<LayerRouting>& Model::routing() const {
  return impl_->routing;
}

namespace {

// A gate weight (E, d) from another file (routing.json's "gate"), checked against the model.
Buffer replacement_gate(const LayerRouting& r, int64_t E, int64_t d) {
  const SafetensorsFile f = read_safetensors(r.gate_file);
  const auto it = f.tensors.find(r.gate_tensor);
  if (it == f.tensors.end())
    fail("{}: tensor '{}' (routing overrides' gate) is not in the file", r.gate_file,
         r.gate_tensor);
  if (it->second.shape != std::vector<int64_t>{E, d})
    fail("{}: tensor '{}' has {} dimensions [{}], the layer's gate is [{}, {}]", r.gate_file,
         r.gate_tensor, it->second.shape.size(), fmt::join(it->second.shape, ", "), E, d);
  Buffer g = it->second.to_f32(r.gate_tensor);
  for (float v : g)
    if (!std::isfinite(v))
      fail("{}: tensor '{}' holds a non-finite value", r.gate_file, r.gate_tensor);
  return g;
}

}  // namespace

void Model::Impl::load_weights(const Checkpoint& ckpt) {
  const ModelSpec& m = spec;
  const TensorNames& n = m.names;
  auto read = [&](const std::string& pattern, int64_t l, std::vector<int64_t> shape, Buffer& dst) {
    const std::string name = tensor_name(pattern, l);
    dst = ckpt.read_f32(name, shape);
    params += int64_t(dst.size());
  };
  auto read_if = [&](const std::string& pattern, int64_t l, std::vector<int64_t> shape,
                     Buffer& dst) {
    if (!pattern.empty()) read(pattern, l, std::move(shape), dst);
  };
  // Matrices stay BF16 where the file has BF16 (and keep_bf16), else float32.
  auto read_matrix = [&](const std::string& pattern, int64_t l, std::vector<int64_t> shape,
                         Matrix& dst) {
    if (pattern.empty()) return;
    const std::string name = tensor_name(pattern, l);
    if (keep_bf16 && ckpt.tensor(name).dtype == DType::BF16) {
      dst.bf16 = ckpt.read_bf16(name, shape);
      dst.acts =
          round_bf16_activations ? cpu::Bf16Activations::Round : cpu::Bf16Activations::Float32;
    } else {
      dst.f32 = ckpt.read_f32(name, shape);
    }
    params += int64_t(dst.size());
  };
  const int64_t d = m.d, H = m.n_heads, Hkv = m.n_kv_heads, Dq = m.q_head_dim(), Dv = m.v_dim();
  read_matrix(n.embed, 0, {m.vocab, d}, embed);
  read(n.final_norm, 0, {d}, final_norm);
  if (!m.tie_embeddings) {
    read_matrix(n.lm_head, 0, {m.vocab, d}, lm_head);
  } else if (ckpt.has(n.lm_head)) {
    ckpt.read_f32(n.lm_head,
                  {m.vocab, d});  // a tied copy some exporters write; the embedding serves
  }
  layers.resize(size_t(m.n_layers));
  for (int64_t l = 0; l < m.n_layers; ++l) {
    LayerWeights& w = layers[size_t(l)];
    read(n.attn_norm, l, {d}, w.attn_norm);
    read(n.ffn_norm, l, {d}, w.ffn_norm);
    read_matrix(n.q, l, {H * Dq, d}, w.wq);
    read_matrix(n.k, l, {Hkv * Dq, d}, w.wk);
    read_matrix(n.v, l, {Hkv * Dv, d}, w.wv);
    read_matrix(n.o, l, {d, H * Dv}, w.wo);
    if (m.attention == AttentionKind::Latent) {
      if (m.q_lora_rank > 0) {
        read_matrix(n.q_a, l, {m.q_lora_rank, d}, w.q_a);
        read(n.q_a_norm, l, {m.q_lora_rank}, w.q_a_norm);
        read_matrix(n.q_b, l, {H * Dq, m.q_lora_rank}, w.q_b);
      }
      read_matrix(n.kv_a, l, {m.kv_lora_rank + m.rope_dim, d}, w.kv_a);
      read(n.kv_a_norm, l, {m.kv_lora_rank}, w.kv_a_norm);
      read_matrix(n.kv_b, l, {H * (m.qk_nope_dim + Dv), m.kv_lora_rank}, w.kv_b);
    }
    read_if(n.q_bias, l, {H * Dq}, w.bq);
    read_if(n.k_bias, l, {Hkv * Dq}, w.bk);
    read_if(n.v_bias, l, {Hkv * Dv}, w.bv);
    const bool full = m.qk_norm == QKNorm::Full;
    if (m.qk_norm != QKNorm::None) {
      read(n.q_norm, l, {full ? H * Dq : Dq}, w.q_norm);
      read(n.k_norm, l, {full ? Hkv * Dq : Dq}, w.k_norm);
    }
    if (!m.moe_layer[size_t(l)]) {
      read_matrix(n.dense_w1, l, {m.dense_ff, d}, w.dense_w1);
      read_matrix(n.dense_w3, l, {m.dense_ff, d}, w.dense_w3);
      read_matrix(n.dense_w2, l, {d, m.dense_ff}, w.dense_w2);
      continue;
    }
    w.moe_index = moe_count++;
    const LayerRouting& routing_l = routing[size_t(w.moe_index)];
    const int64_t F = m.expert_ff;
    for (int32_t e = 0; e < int32_t(m.experts); ++e)
      if (!std::binary_search(routing_l.disabled.begin(), routing_l.disabled.end(), e))
        w.expert_ids.push_back(e);
    const int64_t E = int64_t(w.expert_ids.size());
    // The gate and bias rows of the experts kept; a disabled expert is not in the layer at all.
    Buffer gate = ckpt.read_f32(tensor_name(n.router, l), {m.experts, d});
    if (!routing_l.gate_file.empty()) gate = replacement_gate(routing_l, m.experts, d);
    Buffer bias = n.router_bias.empty() ? Buffer(size_t(m.experts), 0.0f)
                                        : ckpt.read_f32(tensor_name(n.router_bias, l), {m.experts});
    params += int64_t(gate.size()) + (n.router_bias.empty() ? 0 : m.experts);
    if (!routing_l.selection_bias.empty())
      for (int64_t e = 0; e < m.experts; ++e)
        bias[size_t(e)] += routing_l.selection_bias[size_t(e)];
    for (int32_t e : w.expert_ids) {
      w.gate.insert(w.gate.end(), gate.begin() + e * d, gate.begin() + (e + 1) * d);
      if (!n.router_bias.empty() || !routing_l.selection_bias.empty())
        w.gate_bias.push_back(bias[size_t(e)]);
    }
    // BF16 experts when every kept expert's tensors are BF16 in the file.
    bool bf16 = keep_bf16;
    for (int32_t e : w.expert_ids)
      for (const std::string& pattern : {n.expert_w1, n.expert_w3, n.expert_w2})
        bf16 = bf16 && ckpt.tensor(tensor_name(pattern, l, e)).dtype == DType::BF16;
    auto expert = [&](const std::string& pattern, int32_t e, int64_t i, std::vector<int64_t> shape,
                      Buffer& f32, std::vector<uint16_t>& b16) {
      const int64_t size = shape[0] * shape[1];
      const std::string name = tensor_name(pattern, l, e);
      if (bf16) {
        resize_on_huge_pages(b16, size_t(E * size));
        ckpt.read_bf16(name, shape, b16.data() + i * size);
      } else {
        resize_on_huge_pages(f32, size_t(E * size));
        ckpt.read_f32(name, shape, f32.data() + i * size);
      }
    };
    for (int32_t e = 0, i = 0; e < int32_t(m.experts); ++e) {
      if (i >= E || w.expert_ids[size_t(i)] != e) {
        ckpt.skip(tensor_name(n.expert_w1, l, e), {F, d});
        ckpt.skip(tensor_name(n.expert_w3, l, e), {F, d});
        ckpt.skip(tensor_name(n.expert_w2, l, e), {d, F});
        continue;
      }
      expert(n.expert_w1, e, i, {F, d}, w.w1, w.w1_bf16);
      expert(n.expert_w3, e, i, {F, d}, w.w3, w.w3_bf16);
      expert(n.expert_w2, e, i, {d, F}, w.w2, w.w2_bf16);
      ++i;
    }
    params += 3 * E * F * d;
    if (m.shared_ff > 0) {
      read_matrix(n.shared_w1, l, {m.shared_ff, d}, w.shared_w1);
      read_matrix(n.shared_w3, l, {m.shared_ff, d}, w.shared_w3);
      read_matrix(n.shared_w2, l, {d, m.shared_ff}, w.shared_w2);
      read_if(n.shared_gate, l, {1, d}, w.shared_gate);
    }
    json layer = routing_l.router;
    layer["activation"] = "swiglu";
    const std::string context = fmt::format("{} [MoE layer {}]", routing_source, w.moe_index);
    const LayerConfig config = parse_layer_config(layer, context);
    w.moe = std::make_unique<MoELayer>(config, MoEShape{d, E, F, 0, m.vocab});
    w.moe->router().check_shape(E, context);
    if (w.moe->num_router_outputs() != E)
      fail("{}: router '{}' needs {} gate outputs but the layer has {} experts", context,
           config.router, w.moe->num_router_outputs(), E);
    if (w.moe->router().logit_function())
      fail(
          "{}: router '{}' computes its logits from its own learned tensors, which a checkpoint's "
          "gate weight cannot supply; use a router over the gate's logits",
          context, config.router);
    if (!w.gate_bias.empty() && w.moe->router().params().value("router", "") != "topk")
      fail(
          "{}: router '{}' does not read a selection bias ('bias', or the checkpoint's "
          "e_score_correction_bias); use a top-k router",
          context, config.router);
    if (!w.moe->router().traits().needs_gate) w.gate.clear();
  }
}

std::unique_ptr<Model> Model::load(const std::string& dir, const LoadOptions& options) {
  cpu::init_blas_threads();
  std::unique_ptr<Model> model(new Model());
  Impl& m = *model->impl_;
  m.spec = load_model_spec(dir);
  m.routing_source = options.routing_source;
  m.keep_bf16 = options.keep_bf16;
  m.round_bf16_activations = options.round_bf16_activations;
  m.routing = resolve_routing(m.spec, options.routing, options.routing_source);
  m.rope = make_rope_table(m.spec.rope, m.spec.rope_dim, m.spec.rope_layout, m.spec.source);
  const Checkpoint ckpt = Checkpoint::open(dir);
  m.load_weights(ckpt);
  m.reserve(options.reserve_tokens);
  std::vector<std::string> extra;
  for (const std::string& name : ckpt.unread())
    if (name.find("rotary_emb.inv_freq") == std::string::npos) extra.push_back(name);
  if (!extra.empty())
    fail("{}: tensor '{}' (in {}) is not a weight of {}{}", dir, extra[0], ckpt.file_of(extra[0]),
         m.spec.architecture,
         extra.size() > 1 ? fmt::format(" ({} more unexpected tensors)", extra.size() - 1) : "");
  return model;
}

void Model::Impl::reserve(int64_t tokens) {
  if (tokens <= 0) return;
  const ModelSpec& m = spec;
  const int64_t N = tokens, d = m.d, H = m.n_heads, Hkv = m.n_kv_heads;
  const int64_t Dq = m.q_head_dim(), Dv = m.v_dim();
  for (auto [buffer, size] : {std::pair{&s.h, N * d},
                              {&s.a, N * d},
                              {&s.q, N * H * Dq},
                              {&s.k, N * std::max(H, Hkv) * Dq},
                              {&s.v, N * std::max(H, Hkv) * Dv},
                              {&s.att, N * H * Dv},
                              {&s.o, N * d},
                              {&s.ffn, N * d}}) {
    resize_on_huge_pages(*buffer, size_t(size));
    buffer->clear();
  }
  for (LayerWeights& w : layers)
    if (w.moe) {
      const int64_t k = routing[size_t(w.moe_index)].router.value("k", int64_t(1));
      w.moe->reserve(s.moe, N * std::min<int64_t>(k, int64_t(w.expert_ids.size())));
      break;  // the layers share one cache
    }
}

KVCache Model::new_cache() const {
  KVCache c;
  c.k.resize(size_t(impl_->spec.n_layers));
  c.v.resize(size_t(impl_->spec.n_layers));
  return c;
}

int64_t Model::parameter_count() const {
  return impl_->params;
}

int64_t Model::active_parameter_count() const {
  const ModelSpec& m = impl_->spec;
  int64_t active = impl_->params - int64_t(impl_->embed.size());
  if (m.tie_embeddings) active += int64_t(impl_->embed.size());  // the head reads it
  const double measured = experts_per_token();
  for (const LayerWeights& w : impl_->layers) {
    if (!w.moe) continue;
    const double E = double(w.expert_ids.size());
    const double k = std::isnan(measured)
                         ? double(impl_->routing[size_t(w.moe_index)].router.value("k", int64_t(1)))
                         : measured;
    active -= int64_t(std::llround((E - std::min(k, E)) * 3.0 * double(m.expert_ff * m.d)));
  }
  return active;
}

// DeepSeek's latent attention, decompressed per head: q (N, H, nope + rope) from the q LoRA
// (or q_proj), keys [kv_b(norm(c))_nope | the shared rotary key] and values kv_b(norm(c))_v.
// The RoPE of the rotary parts comes after, with every other architecture's.
void Model::Impl::latent_projections(const LayerWeights& w, int64_t N) {
  const ModelSpec& m = spec;
  const int64_t d = m.d, H = m.n_heads, Dq = m.q_head_dim(), Dv = m.v_dim();
  const int64_t Rq = m.q_lora_rank, Rkv = m.kv_lora_rank, nope = m.qk_nope_dim;
  constexpr double kLoraNormEps = 1e-6;  // DeepSeek's q_a/kv_a norms keep their own default
  if (Rq > 0) {
    s.lat.resize(size_t(N * Rq));
    blocks::linear(N, d, Rq, s.a.data(), w.q_a, nullptr, s.lat.data());
    blocks::rmsnorm(N, Rq, s.lat.data(), w.q_a_norm.data(), kLoraNormEps, s.lat.data());
    blocks::linear(N, Rq, H * Dq, s.lat.data(), w.q_b, nullptr, s.q.data());
  } else {
    blocks::linear(N, d, H * Dq, s.a.data(), w.wq, nullptr, s.q.data());
  }
  s.ckv.resize(size_t(N * (Rkv + m.rope_dim)));  // (N, Rkv + rope)
  blocks::linear(N, d, Rkv + m.rope_dim, s.a.data(), w.kv_a, nullptr, s.ckv.data());
  s.lat.resize(size_t(N * Rkv));
  for (int64_t r = 0; r < N; ++r)
    blocks::rmsnorm(1, Rkv, s.ckv.data() + r * (Rkv + m.rope_dim), w.kv_a_norm.data(), kLoraNormEps,
                    s.lat.data() + r * Rkv);
  s.kvb.resize(size_t(N * H * (nope + Dv)));  // (N, H, nope + Dv)
  blocks::linear(N, Rkv, H * (nope + Dv), s.lat.data(), w.kv_b, nullptr, s.kvb.data());
  for (int64_t r = 0; r < N; ++r)
    for (int64_t h = 0; h < H; ++h) {
      const float* src = s.kvb.data() + (r * H + h) * (nope + Dv);
      float* k = s.k.data() + (r * H + h) * Dq;
      std::copy_n(src, nope, k);
      std::copy_n(s.ckv.data() + r * (Rkv + m.rope_dim) + Rkv, m.rope_dim, k + nope);
      std::copy_n(src + nope, Dv, s.v.data() + (r * H + h) * Dv);
    }
}

const std::map<std::string, double>& Model::profile() const {
  return impl_->profile_ms;
}

void Model::reset_profile() {
  impl_->profile_ms.clear();
}

double Model::experts_per_token() const {
  return impl_->moe_rows > 0 ? impl_->kept_assignments / double(impl_->moe_rows) : NAN;
}

double Model::flops_per_token(int64_t context) const {
  const ModelSpec& m = impl_->spec;
  // Norm weights are elementwise, not matrix products; the few hundred thousand are noise.
  double flops = 2.0 * double(active_parameter_count());
  flops += double(m.n_layers) * 2.0 * double(m.n_heads) * double(m.q_head_dim() + m.v_dim()) *
           double(context);
  return flops;
}

void Model::Impl::attention(int64_t l, std::span<const Chunk> chunks, int64_t N,
                            const std::vector<int64_t>& pos, PhaseClock& clock) {
  const ModelSpec& m = spec;
  LayerWeights& w = layers[size_t(l)];
  const int64_t d = m.d, H = m.n_heads, Hkv = m.n_kv_heads, Dq = m.q_head_dim(), Dv = m.v_dim();
  s.q.resize(size_t(N * H * Dq));
  s.k.resize(size_t(N * Hkv * Dq));
  s.v.resize(size_t(N * Hkv * Dv));
  if (m.attention == AttentionKind::Latent) {
    latent_projections(w, N);
  } else {
    blocks::linear(N, d, H * Dq, s.a.data(), w.wq, w.bq.empty() ? nullptr : w.bq.data(),
                   s.q.data());
    blocks::linear(N, d, Hkv * Dq, s.a.data(), w.wk, w.bk.empty() ? nullptr : w.bk.data(),
                   s.k.data());
    blocks::linear(N, d, Hkv * Dv, s.a.data(), w.wv, w.bv.empty() ? nullptr : w.bv.data(),
                   s.v.data());
  }
  if (m.qk_norm == QKNorm::Full) {
    blocks::rmsnorm(N, H * Dq, s.q.data(), w.q_norm.data(), m.norm_eps, s.q.data());
    blocks::rmsnorm(N, Hkv * Dq, s.k.data(), w.k_norm.data(), m.norm_eps, s.k.data());
  } else if (m.qk_norm == QKNorm::PerHead) {
    blocks::rmsnorm(N * H, Dq, s.q.data(), w.q_norm.data(), m.norm_eps, s.q.data());
    blocks::rmsnorm(N * Hkv, Dq, s.k.data(), w.k_norm.data(), m.norm_eps, s.k.data());
  }
  // OLMoE clips after the norms.
  if (m.clip_qkv > 0)
    for (Buffer* b : {&s.q, &s.k, &s.v})
      for (float& x : *b) x = std::clamp(x, float(-m.clip_qkv), float(m.clip_qkv));
  clock.lap("attention projections");
  const int64_t rope_off = Dq - m.rope_dim;  // latent attention rotates the tail of each head
  apply_rope(rope, N, H, H * Dq, Dq, pos.data(), s.q.data() + rope_off);
  apply_rope(rope, N, Hkv, Hkv * Dq, Dq, pos.data(), s.k.data() + rope_off);
  s.att.resize(size_t(N * H * Dv));
  const float scale =
      m.attention_scale > 0 ? float(m.attention_scale) : float(1.0 / std::sqrt(double(Dq)));
  int64_t row = 0;
  for (const Chunk& c : chunks) {
    const int64_t n = int64_t(c.tokens.size()), L0 = c.cache->length;
    Buffer& K = c.cache->k[size_t(l)];
    Buffer& V = c.cache->v[size_t(l)];
    std::copy_n(s.k.data() + row * Hkv * Dq, n * Hkv * Dq, K.data() + L0 * Hkv * Dq);
    std::copy_n(s.v.data() + row * Hkv * Dv, n * Hkv * Dv, V.data() + L0 * Hkv * Dv);
    blocks::attention(n, L0, H, Hkv, Dq, Dv, s.q.data() + row * H * Dq, K.data(), V.data(), scale,
                      m.sliding_window, s.att.data() + row * H * Dv);
    row += n;
  }
  clock.lap("attention (rope, scores, values)");
  s.o.resize(size_t(N * d));
  blocks::linear(N, H * Dv, d, s.att.data(), w.wo, nullptr, s.o.data());
  for (int64_t i = 0; i < N * d; ++i) s.h[size_t(i)] += s.o[size_t(i)];
  clock.lap("attention projections");
}

// A replay's checkpoint expert ids as the layer's own (a disabled expert cannot be replayed).
std::vector<int32_t> Model::Impl::forced_ids(const LayerWeights& w, const ForwardReplay& replay,
                                             int64_t N) const {
  const std::vector<int32_t>& ids = replay.ids.at(size_t(w.moe_index));
  if (int64_t(ids.size()) != N * replay.k)
    fail("replay: MoE layer {} has {} expert ids for {} rows of {}", w.moe_index, ids.size(), N,
         replay.k);
  std::vector<int32_t> local(size_t(spec.experts), -1);
  for (size_t i = 0; i < w.expert_ids.size(); ++i) local[size_t(w.expert_ids[i])] = int32_t(i);
  std::vector<int32_t> out(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0) {
      out[i] = -1;
      continue;
    }
    if (ids[i] >= spec.experts || local[size_t(ids[i])] < 0)
      fail("replay: MoE layer {} routes to expert {}, which this model does not hold", w.moe_index,
           ids[i]);
    out[i] = local[size_t(ids[i])];
  }
  return out;
}

// Router logits and decisions in checkpoint expert ids.
void Model::Impl::record(const LayerWeights& w, int64_t N, ForwardCapture& capture) {
  const int64_t E = int64_t(w.expert_ids.size());
  if (capture.router_logits) {
    std::vector<float> full(size_t(N * spec.experts), -INFINITY);
    const std::vector<float>& z = s.moe.logits;  // (N, R), R ≥ E
    const int64_t R = int64_t(z.size()) / N;
    for (int64_t r = 0; r < N; ++r)
      for (int64_t e = 0; e < E; ++e)
        full[size_t(r * spec.experts + w.expert_ids[size_t(e)])] = z[size_t(r * R + e)];
    capture.logits.push_back(std::move(full));
  }
  if (capture.decisions) {
    const RoutingPlan& plan = s.moe.plan;
    LayerDecisions d;
    for (size_t a = 0; a < plan.size(); ++a)
      if (plan.kept[a] && plan.expert[a] < E) {
        d.row.push_back(plan.token[a]);
        d.expert.push_back(w.expert_ids[size_t(plan.expert[a])]);
        d.weight.push_back(plan.weight[a]);
      }
    capture.routing.push_back(std::move(d));
  }
}

void Model::forward(std::span<const Chunk> chunks, bool all_logits, std::vector<float>& logits,
                    ForwardCapture* capture, const ForwardReplay* replay) {
  Impl& m = *impl_;
  const ModelSpec& spec = m.spec;
  const int64_t d = spec.d, V = spec.vocab;
  int64_t N = 0;
  std::vector<int64_t> pos, seq_lens;
  std::vector<int64_t> ids;
  for (const Chunk& c : chunks) {
    if (!c.cache) fail("forward: a chunk has no KV cache");
    if (c.tokens.empty()) fail("forward: a chunk has no tokens");
    for (size_t i = 0; i < c.tokens.size(); ++i) {
      const int32_t t = c.tokens[i];
      if (t < 0 || t >= V) fail("forward: token id {} is outside the vocabulary [0, {})", t, V);
      pos.push_back(c.cache->length + int64_t(i));
      ids.push_back(t);
    }
    N += int64_t(c.tokens.size());
    seq_lens.push_back(int64_t(c.tokens.size()));
    // Grow each cache to hold the new positions (doubling, so decode appends are amortised).
    const int64_t need = c.cache->length + int64_t(c.tokens.size());
    if (need > c.cache->capacity) {
      const int64_t cap = std::max(need, 2 * c.cache->capacity);
      for (int64_t l = 0; l < spec.n_layers; ++l) {
        c.cache->k[size_t(l)].resize(size_t(cap * spec.n_kv_heads * spec.k_cached_dim()));
        c.cache->v[size_t(l)].resize(size_t(cap * spec.n_kv_heads * spec.v_dim()));
      }
      c.cache->capacity = cap;
    }
  }
  Scratch& s = m.s;
  PhaseClock clock(m.profile_ms);
  s.h.resize(size_t(N * d));
  s.a.resize(size_t(N * d));
  for (int64_t r = 0; r < N; ++r) blocks::copy_row(m.embed, d, ids[size_t(r)], s.h.data() + r * d);
  clock.lap("embedding");
  if (capture) {
    capture->logits.clear();
    capture->routing.clear();
  }
  for (int64_t l = 0; l < spec.n_layers; ++l) {
    LayerWeights& w = m.layers[size_t(l)];
    blocks::rmsnorm(N, d, s.h.data(), w.attn_norm.data(), spec.norm_eps, s.a.data());
    clock.lap("norms and residuals");
    m.attention(l, chunks, N, pos, clock);
    blocks::rmsnorm(N, d, s.h.data(), w.ffn_norm.data(), spec.norm_eps, s.a.data());
    clock.lap("norms and residuals");
    s.ffn.resize(size_t(N * d));
    if (!w.moe) {
      s.ffn_h.resize(size_t(2 * N * spec.dense_ff));
      blocks::swiglu(N, d, spec.dense_ff, s.a.data(), w.dense_w1, w.dense_w3, w.dense_w2,
                     s.ffn_h.data(), s.ffn.data());
      clock.lap("dense FFN");
    } else {
      MoEParams p;
      p.gate = w.gate.empty() ? nullptr : w.gate.data();
      p.gate_bias = w.gate_bias.empty() ? nullptr : w.gate_bias.data();
      if (w.w1_bf16.empty()) {
        p.w1 = w.w1.data();
        p.w3 = w.w3.data();
        p.w2 = w.w2.data();
      } else {
        p.w1_bf16 = w.w1_bf16.data();
        p.w3_bf16 = w.w3_bf16.data();
        p.w2_bf16 = w.w2_bf16.data();
        p.bf16_round_activations = m.round_bf16_activations;
      }
      MoEBatch batch;
      batch.T = N;
      batch.x = s.a.data();
      batch.token_ids = ids.data();
      batch.seq_lens = seq_lens;
      std::vector<int32_t> forced;
      if (replay) {
        forced = m.forced_ids(w, *replay, N);
        batch.forced_experts = forced.data();
        batch.forced_k = replay->k;
      }
      const RoutingStats& stats = w.moe->forward(p, batch, s.moe, s.ffn.data());
      m.kept_assignments += stats.experts_per_token * double(N);
      m.moe_rows += N;
      if (capture) m.record(w, N, *capture);
      clock.lap("moe (other)");  // less the layer's own phases, below
      for (const auto& [phase, ms] : stats.phase_ms) {
        m.profile_ms["moe " + phase] += ms;
        m.profile_ms["moe (other)"] -= ms;
      }
      if (spec.shared_ff > 0) {
        // The always-on shared expert, scaled by sigmoid(gate · x) where the model has a gate.
        s.shared.resize(size_t(N * d));
        s.ffn_h.resize(size_t(2 * N * spec.shared_ff));
        blocks::swiglu(N, d, spec.shared_ff, s.a.data(), w.shared_w1, w.shared_w3, w.shared_w2,
                       s.ffn_h.data(), s.shared.data());
        s.shared_gate.assign(size_t(N), 1.0f);
        if (!w.shared_gate.empty()) {
          blocks::linear(N, d, 1, s.a.data(), w.shared_gate.data(), nullptr, s.shared_gate.data());
          for (float& g : s.shared_gate) g = 1.0f / (1.0f + std::exp(-g));
        }
        for (int64_t r = 0; r < N; ++r)
          for (int64_t j = 0; j < d; ++j)
            s.ffn[size_t(r * d + j)] += s.shared_gate[size_t(r)] * s.shared[size_t(r * d + j)];
        clock.lap("shared expert");
      }
    }
    for (int64_t i = 0; i < N * d; ++i) s.h[size_t(i)] += s.ffn[size_t(i)];
    clock.lap("norms and residuals");
  }
  // The rows whose logits are wanted: all, or each chunk's last token.
  std::vector<int64_t> rows;
  if (all_logits) {
    for (int64_t r = 0; r < N; ++r) rows.push_back(r);
  } else {
    int64_t end = 0;
    for (const Chunk& c : chunks) rows.push_back((end += int64_t(c.tokens.size())) - 1);
  }
  const int64_t R = int64_t(rows.size());
  for (int64_t i = 0; i < R; ++i)
    blocks::rmsnorm(1, d, s.h.data() + rows[size_t(i)] * d, m.final_norm.data(), spec.norm_eps,
                    s.a.data() + i * d);
  logits.resize(size_t(R * V));
  blocks::linear(R, d, V, s.a.data(), spec.tie_embeddings ? m.embed : m.lm_head, nullptr,
                 logits.data());
  clock.lap("final norm and LM head");
  for (const Chunk& c : chunks) c.cache->length += int64_t(c.tokens.size());
}

}  // namespace switchyard::infer
