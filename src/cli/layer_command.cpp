// `switchyard layer`: one MoE layer from files (docs/layer-config.md).
#include <fmt/format.h>
#include <switchyard/error.h>
#include <switchyard/moe_layer.h>
#include <switchyard/safetensors.h>

#include <set>

#include "cli/commands.h"

namespace switchyard::cli {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("({})", fmt::join(shape, ", "));
}

struct Inputs {
  const SafetensorsFile& file;
  const std::string& path;
  std::set<std::string> used;

  const TensorData* find(const std::string& name) {
    used.insert(name);
    auto it = file.tensors.find(name);
    return it == file.tensors.end() ? nullptr : &it->second;
  }
  const TensorData& require(const std::string& name) {
    const TensorData* t = find(name);
    if (!t) fail("{}: required tensor '{}' is missing", path, name);
    return *t;
  }
  void expect_shape(const std::string& name, const TensorData& t,
                    const std::vector<int64_t>& shape) {
    if (t.shape != shape)
      fail("{}: tensor '{}' has shape {}, expected {}", path, name, shape_str(t.shape),
           shape_str(shape));
  }
  std::vector<float> floats(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorData& t = require(name);
    expect_shape(name, t, shape);
    return t.to_f32(path + ": tensor " + name);
  }
  std::vector<float> optional_floats(const std::string& name, const std::vector<int64_t>& shape) {
    return find(name) ? floats(name, shape) : std::vector<float>{};
  }
};

const float* ptr(const std::vector<float>& v) {
  return v.empty() ? nullptr : v.data();
}

}  // namespace

int run_layer(const std::string& config_path, const std::string& in_path,
              const std::string& out_path) {
  const LayerConfig config = load_layer_config(config_path);
  const SafetensorsFile file = read_safetensors(in_path);
  Inputs in{file, in_path, {}};

  const TensorData& x_t = in.require("x");
  if (x_t.shape.size() != 2)
    fail("{}: tensor 'x' must be (T, d), got {}", in_path, shape_str(x_t.shape));
  const int64_t T = x_t.shape[0], d = x_t.shape[1];
  const TensorData& w1_t = in.require("experts.w1");
  if (w1_t.shape.size() != 3)
    fail("{}: tensor 'experts.w1' must be (E, F, {}), got {}", in_path, d, shape_str(w1_t.shape));
  MoEShape shape{d, w1_t.shape[0], w1_t.shape[1], 0, config.vocab_size};
  const int64_t E = shape.E, F = shape.F;
  if (const TensorData* s = in.find("shared.w1")) {
    if (s->shape.size() != 2 || s->shape[1] != d)
      fail("{}: tensor 'shared.w1' must be (Fs, {}), got {}", in_path, d, shape_str(s->shape));
    shape.Fs = s->shape[0];
  }
  MoELayer layer(config, shape);
  const int64_t R = layer.num_router_outputs();
  // w1 reads x (d), or the router's per-expert activations (MoEShape::gate_in, AoE).
  const int64_t w1_in = layer.shape().w1_in();
  if (w1_t.shape[2] != w1_in)
    fail(
        "{}: tensor 'experts.w1' must be (E, F, {}){}, got {}", in_path, w1_in,
        w1_in != d ? fmt::format(" (router '{}' feeds it its own activations)", config.router) : "",
        shape_str(w1_t.shape));
  const bool swiglu = has_up_projection(config.activation);

  const std::vector<float> x = in.floats("x", {T, d});
  const std::vector<float> w1 = in.floats("experts.w1", {E, F, w1_in});
  const std::vector<float> w2 = in.floats("experts.w2", {E, d, F});
  const std::vector<float> w3 = swiglu ? in.floats("experts.w3", {E, F, d}) : std::vector<float>{};
  const RouterTraits& traits = layer.router().traits();
  if (!traits.needs_gate && file.tensors.count("gate.weight"))
    fail("{}: tensor 'gate.weight' is not used by router '{}' (it has no gate)", in_path,
         config.router);
  if (!traits.needs_token_ids && file.tensors.count("token_ids"))
    fail("{}: tensor 'token_ids' is not used by router '{}' (it does not route by token id)",
         in_path, config.router);
  if (!traits.needs_token_frequencies && file.tensors.count("token_counts"))
    fail("{}: tensor 'token_counts' is not used by router '{}' (it needs no token frequencies)",
         in_path, config.router);
  // A router with its own logit function reads router.NAME tensors instead of gate.weight.
  const LogitFunction* logit_function = layer.router().logit_function();
  const std::vector<RouterTensorSpec>& router_specs = layer.router_tensor_specs();
  if (logit_function && file.tensors.count("gate.weight"))
    fail("{}: tensor 'gate.weight' is not used by router '{}' (its logits come from router.*)",
         in_path, config.router);
  std::vector<std::vector<float>> router_tensors;
  std::vector<const float*> router_views;
  for (const RouterTensorSpec& spec : router_specs)
    router_tensors.push_back(in.floats("router." + spec.name, spec.shape));
  for (const auto& t : router_tensors) router_views.push_back(t.data());
  const std::vector<float> gate = traits.needs_gate && !logit_function
                                      ? in.floats("gate.weight", {R, d})
                                      : std::vector<float>{};
  std::vector<float> bias = in.optional_floats("gate.bias", {E});
  std::vector<float> sw1, sw2, sw3, shared_gate;
  if (shape.Fs > 0) {
    sw1 = in.floats("shared.w1", {shape.Fs, d});
    sw2 = in.floats("shared.w2", {d, shape.Fs});
    if (swiglu) sw3 = in.floats("shared.w3", {shape.Fs, d});
    shared_gate = in.optional_floats("shared.gate", {1, d});
  }
  MoEBatch batch;
  batch.T = T;
  batch.x = x.data();
  std::vector<int64_t> token_ids;
  if (const TensorData* t = in.find("token_ids")) {
    in.expect_shape("token_ids", *t, {T});
    token_ids = t->to_i64(in_path + ": tensor token_ids");
    batch.token_ids = token_ids.data();
  }
  std::vector<float> token_importance;  // (T) the importance a model's attention would give
  if (in.find("token_importance")) {
    if (!traits.needs_token_importance)
      fail("{}: tensor 'token_importance' is not used by router '{}' (it reads no importance)",
           in_path, config.router);
    token_importance = in.floats("token_importance", {T});
    batch.token_importance = token_importance.data();
  } else if (traits.needs_token_importance) {
    fail(
        "{}: router '{}' needs the tensor 'token_importance' (T = {}) float32, each token's "
        "importance >= 0",
        in_path, config.router, T);
  }
  if (traits.needs_token_frequencies) {  // the training data's id counts (MaskMoE's masks)
    const TensorData* t = in.find("token_counts");
    if (!t)
      fail(
          "{}: router '{}' needs the tensor 'token_counts' (vocab) int64, each token id's count "
          "in the training data",
          in_path, config.router);
    if (t->shape.size() != 1)
      fail("{}: tensor 'token_counts' must be 1-D (vocab), got {}", in_path, shape_str(t->shape));
    const std::string source = in_path + ": tensor token_counts";
    layer.set_token_frequencies(t->to_i64(source), source);
  }
  if (const TensorData* t = in.find("seq_lens")) {
    if (t->shape.size() != 1)
      fail("{}: tensor 'seq_lens' must be 1-D, got {}", in_path, shape_str(t->shape));
    batch.seq_lens = t->to_i64(in_path + ": tensor seq_lens");
    if (batch.seq_lens.empty())
      fail("{}: tensor 'seq_lens' is empty; omit it for one sequence", in_path);
  }
  std::vector<double> global_counts;
  if (const TensorData* t = in.find("global_counts")) {
    in.expect_shape("global_counts", *t, {R});
    global_counts = t->to_f64(in_path + ": tensor global_counts");
    batch.global_counts = global_counts.data();
  }
  // RMoE's carry from the previous MoE layer and the gradient reaching this layer's carry out.
  const int64_t carry_dim = layer.router_carry_dim();
  std::vector<float> router_carry, d_router_carry_out;
  if (carry_dim > 0) {
    router_carry = in.optional_floats("router_carry", {T, carry_dim});
    d_router_carry_out = in.optional_floats("d_router_carry_out", {T, carry_dim});
    batch.router_carry = ptr(router_carry);
  }
  const std::vector<float> dy = in.optional_floats("dy", {T, d});
  for (const auto& [name, tensor] : file.tensors)
    if (!in.used.count(name))
      fail("{}: unknown tensor '{}' {} (see docs/layer-config.md)", in_path, name,
           shape_str(tensor.shape));

  MoEParams params{ptr(gate), ptr(bias), ptr(w1), ptr(w3), ptr(w2), ptr(sw1), ptr(sw3), ptr(sw2)};
  if (logit_function) params.router = router_views.data();
  params.shared_gate = ptr(shared_gate);
  MoECache cache;
  std::vector<float> y(size_t(T * d));
  // Errors found in the data name the input file.
  auto with_file = [&](auto&& step) {
    try {
      step();
    } catch (const Error& e) {
      fail("{}: {}", in_path, e.what());
    }
  };
  with_file([&] {
    layer.validate(params, batch);
    layer.forward(params, batch, cache, y.data());
  });
  const RoutingStats& stats = cache.stats;

  SafetensorsFile out;
  out.tensors["y"] = TensorData::from_f32({T, d}, y);
  out.tensors["combine"] = TensorData::from_f32({T, E}, layer.combine_matrix(cache));
  out.tensors["aux_loss"] = TensorData::from_f32({}, {float(stats.aux_loss)});
  out.tensors["tokens_per_expert"] = TensorData::from_i64({E}, stats.tokens_per_expert);
  if (carry_dim > 0)
    out.tensors["router_carry_out"] = TensorData::from_f32({T, carry_dim}, cache.router_carry);
  if (!dy.empty()) {
    std::vector<float> dx(size_t(T * d)), dgate(size_t(R * d)), dw1(w1.size()), dw2(w2.size()),
        dw3(w3.size()), dsw1(sw1.size()), dsw2(sw2.size()), dsw3(sw3.size());
    MoEGrads grads{gate.empty() ? nullptr : dgate.data(), dw1.data(),
                   swiglu ? dw3.data() : nullptr,         dw2.data(),
                   ptr(dsw1) ? dsw1.data() : nullptr,     sw3.empty() ? nullptr : dsw3.data(),
                   sw2.empty() ? nullptr : dsw2.data()};
    std::vector<std::vector<float>> d_router;
    std::vector<float*> d_router_views;
    for (const auto& t : router_tensors) d_router.emplace_back(t.size());
    for (auto& t : d_router) d_router_views.push_back(t.data());
    if (logit_function) grads.router = d_router_views.data();
    std::vector<float> d_shared_gate(shared_gate.size());
    if (!shared_gate.empty()) grads.shared_gate = d_shared_gate.data();
    std::vector<float> d_router_carry(router_carry.size());
    grads.router_carry = ptr(d_router_carry) ? d_router_carry.data() : nullptr;
    with_file([&] {
      layer.backward(params, batch, cache, dy.data(), dx.data(), grads, 1.0f,
                     ptr(d_router_carry_out));
    });
    if (!router_carry.empty())
      out.tensors["d_router_carry"] = TensorData::from_f32({T, carry_dim}, d_router_carry);
    for (size_t i = 0; i < router_specs.size(); ++i)
      out.tensors["d_router." + router_specs[i].name] =
          TensorData::from_f32(router_specs[i].shape, d_router[i]);
    out.tensors["dx"] = TensorData::from_f32({T, d}, dx);
    if (!gate.empty()) out.tensors["d_gate.weight"] = TensorData::from_f32({R, d}, dgate);
    out.tensors["d_experts.w1"] = TensorData::from_f32({E, F, w1_in}, dw1);
    out.tensors["d_experts.w2"] = TensorData::from_f32({E, d, F}, dw2);
    if (swiglu) out.tensors["d_experts.w3"] = TensorData::from_f32({E, F, d}, dw3);
    if (shape.Fs > 0) {
      out.tensors["d_shared.w1"] = TensorData::from_f32({shape.Fs, d}, dsw1);
      out.tensors["d_shared.w2"] = TensorData::from_f32({d, shape.Fs}, dsw2);
      if (swiglu) out.tensors["d_shared.w3"] = TensorData::from_f32({shape.Fs, d}, dsw3);
      if (!shared_gate.empty())
        out.tensors["d_shared.gate"] = TensorData::from_f32({1, d}, d_shared_gate);
    }
  }
  out.metadata["stats"] = stats_json(stats).dump();
  out.metadata["router"] = layer.router().params().dump();
  write_safetensors(out_path, out);
  fmt::print("{}: {}\n", config.router, layer.router().describe());
  fmt::print(
      "wrote {} (T = {}, d = {}, E = {}, aux_loss = {:.6g}, dropped = {}, MaxVio = {:.3f})\n",
      out_path, T, d, E, stats.aux_loss, stats.dropped, stats.max_vio);
  return 0;
}

nlohmann::json stats_json(const RoutingStats& s) {
  return {{"tokens_per_expert", s.tokens_per_expert},
          {"assignments", s.assignments},
          {"dropped", s.dropped},
          {"max_vio", s.max_vio},
          {"cv", s.cv},
          {"entropy", s.entropy},
          {"experts_per_token", s.experts_per_token},
          {"hidden_per_token", s.hidden_per_token},
          {"losses", s.losses},
          {"aux_loss", s.aux_loss}};
}

}  // namespace switchyard::cli
