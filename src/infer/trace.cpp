#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/trace.h>
#include <switchyard/safetensors.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <map>

namespace switchyard::infer {

using nlohmann::json;

TraceRecorder::TraceRecorder(const Model& model, bool logits) : model_(model), logits_(logits) {}

void TraceRecorder::add(std::span<const Model::Chunk> chunks, const std::vector<int64_t>& sequence,
                        const ForwardCapture& capture) {
  const int64_t L = int64_t(capture.routing.size()), E = model_.spec().experts;
  const size_t first = rows_.size();
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t n = int64_t(chunks[c].tokens.size()), start = chunks[c].cache->length - n;
    for (int64_t i = 0; i < n; ++i) {
      Row r{chunks[c].tokens[size_t(i)], start + i, sequence[c], {}, {}};
      r.choices.resize(size_t(L));
      if (logits_) r.logits.resize(size_t(L * E));
      rows_.push_back(std::move(r));
    }
  }
  for (int64_t l = 0; l < L; ++l) {
    const LayerDecisions& d = capture.routing[size_t(l)];
    for (size_t a = 0; a < d.row.size(); ++a)
      rows_[first + size_t(d.row[a])].choices[size_t(l)].push_back({d.expert[a], d.weight[a]});
    if (logits_) {
      const std::vector<float>& z = capture.logits[size_t(l)];  // (rows, E)
      for (size_t r = first; r < rows_.size(); ++r)
        std::copy_n(z.data() + (r - first) * size_t(E), E, rows_[r].logits.data() + l * E);
    }
  }
}

RoutingTrace TraceRecorder::finish(const std::string& model_dir,
                                   const std::vector<std::string>& labels) const {
  const ModelSpec& spec = model_.spec();
  RoutingTrace t;
  t.layers = spec.num_moe_layers();
  t.experts = spec.experts;
  for (const Row& r : rows_)
    for (const auto& c : r.choices) t.k = std::max(t.k, int64_t(c.size()));
  const int64_t N = int64_t(rows_.size()), L = t.layers, K = t.k, E = t.experts;
  t.ids.assign(size_t(N * L * K), -1);
  t.weights.assign(size_t(N * L * K), 0.0f);
  if (logits_) t.logits.resize(size_t(N * L * E));
  for (int64_t n = 0; n < N; ++n) {
    const Row& r = rows_[size_t(n)];
    t.tokens.push_back(r.token);
    t.positions.push_back(r.position);
    t.sequences.push_back(r.sequence);
    for (int64_t l = 0; l < L; ++l)
      for (size_t j = 0; j < r.choices[size_t(l)].size(); ++j) {
        t.ids[size_t((n * L + l) * K) + j] = r.choices[size_t(l)][j].first;
        t.weights[size_t((n * L + l) * K) + j] = r.choices[size_t(l)][j].second;
      }
    if (logits_) std::copy(r.logits.begin(), r.logits.end(), t.logits.begin() + n * L * E);
  }
  json moe_layers = json::array(), routing = json::array();
  for (int64_t l = 0; l < spec.n_layers; ++l)
    if (spec.moe_layer[size_t(l)]) moe_layers.push_back(l);
  for (const LayerRouting& r : model_.routing())
    routing.push_back({{"router", r.router}, {"disabled_experts", r.disabled}});
  t.meta = {{"format", "switchyard-routing-trace"},
            {"version", 1},
            {"model", model_dir},
            {"architecture", spec.architecture},
            {"moe_layers", moe_layers},
            {"experts", E},
            {"routing", routing},
            {"labels", labels}};
  return t;
}

namespace {

std::string sidecar(const std::string& path) {
  std::filesystem::path p(path);
  if (p.extension() != ".safetensors") fail("{}: a trace file name must end in .safetensors", path);
  return p.replace_extension(".json").string();
}

}  // namespace

void write_trace(const std::string& path, const RoutingTrace& t) {
  const std::string meta_path = sidecar(path);
  const int64_t N = t.size(), L = t.layers, K = t.k;
  SafetensorsFile f;
  TensorData ids;
  ids.dtype = DType::I32;
  ids.shape = {N, L, K};
  ids.bytes.resize(t.ids.size() * 4);
  if (!t.ids.empty()) std::memcpy(ids.bytes.data(), t.ids.data(), ids.bytes.size());
  f.tensors["experts"] = std::move(ids);
  f.tensors["weights"] = TensorData::from_f32({N, L, K}, t.weights);
  f.tensors["tokens"] = TensorData::from_i64({N}, t.tokens);
  f.tensors["positions"] = TensorData::from_i64({N}, t.positions);
  f.tensors["sequences"] = TensorData::from_i64({N}, t.sequences);
  if (!t.logits.empty())
    f.tensors["router_logits"] = TensorData::from_f32({N, L, t.experts}, t.logits);
  write_safetensors(path, f);
  write_file_atomic(meta_path, t.meta.dump(2) + "\n");
}

RoutingTrace read_trace(const std::string& path) {
  const std::string meta_path = sidecar(path);
  RoutingTrace t;
  if (!std::filesystem::exists(meta_path))
    fail("{}: the trace's metadata file is missing (written beside it by --trace)", meta_path);
  t.meta = parse_json_strict(read_file_text(meta_path), meta_path);
  if (!t.meta.is_object() || t.meta.value("format", "") != "switchyard-routing-trace")
    fail("{}: field 'format' must be \"switchyard-routing-trace\"", meta_path);
  const SafetensorsFile f = read_safetensors(path);
  auto tensor = [&](const char* name) -> const TensorData& {
    const auto it = f.tensors.find(name);
    if (it == f.tensors.end()) fail("{}: tensor '{}' is missing", path, name);
    return it->second;
  };
  const TensorData& ids = tensor("experts");
  if (ids.dtype != DType::I32 || ids.shape.size() != 3)
    fail("{}: tensor 'experts' must be int32 (tokens, layers, k)", path);
  const int64_t N = ids.shape[0];
  t.layers = ids.shape[1];
  t.k = ids.shape[2];
  t.experts = t.meta.value("experts", int64_t(0));
  if (t.experts <= 0) fail("{}: field 'experts' must be a positive integer", meta_path);
  const std::vector<int64_t> raw = ids.to_i64("experts");
  for (size_t i = 0; i < raw.size(); ++i) {
    if (raw[i] < -1 || raw[i] >= t.experts)
      fail("{}: tensor 'experts' holds {} at index {}, not an expert id in [0, {}) or -1", path,
           raw[i], i, t.experts);
    t.ids.push_back(int32_t(raw[i]));
  }
  auto expect_shape = [&](const char* name, const std::vector<int64_t>& shape) {
    if (tensor(name).shape != shape)
      fail("{}: tensor '{}' has {} dimensions of other sizes than experts' (tokens, layers, k)",
           path, name, tensor(name).shape.size());
  };
  expect_shape("weights", {N, t.layers, t.k});
  t.weights = tensor("weights").to_f32("weights");
  for (const char* name : {"tokens", "positions", "sequences"}) expect_shape(name, {N});
  t.tokens = tensor("tokens").to_i64("tokens");
  t.positions = tensor("positions").to_i64("positions");
  t.sequences = tensor("sequences").to_i64("sequences");
  if (f.tensors.count("router_logits")) {
    expect_shape("router_logits", {N, t.layers, t.experts});
    t.logits = tensor("router_logits").to_f32("router_logits");
  }
  return t;
}

ForwardReplay replay_rows(const RoutingTrace& trace, std::span<const Model::Chunk> chunks,
                          const std::vector<int64_t>& sequence, const std::string& source) {
  std::map<std::pair<int64_t, int64_t>, int64_t> index;  // (sequence, position) -> trace row
  for (int64_t n = 0; n < trace.size(); ++n)
    index[{trace.sequences[size_t(n)], trace.positions[size_t(n)]}] = n;
  ForwardReplay r;
  r.k = trace.k;
  const int64_t L = trace.layers, K = trace.k;
  r.ids.resize(size_t(L));
  for (size_t c = 0; c < chunks.size(); ++c) {
    const int64_t n = int64_t(chunks[c].tokens.size()), start = chunks[c].cache->length;
    for (int64_t i = 0; i < n; ++i) {
      const auto it = index.find({sequence[c], start + i});
      if (it == index.end())
        fail("{}: no routing recorded for sequence {} position {}", source, sequence[c], start + i);
      if (trace.tokens[size_t(it->second)] != chunks[c].tokens[size_t(i)])
        fail("{}: sequence {} position {} was token {} when recorded, not {}", source, sequence[c],
             start + i, trace.tokens[size_t(it->second)], chunks[c].tokens[size_t(i)]);
      for (int64_t l = 0; l < L; ++l) {
        const int32_t* row = trace.ids.data() + (it->second * L + l) * K;
        r.ids[size_t(l)].insert(r.ids[size_t(l)].end(), row, row + K);
      }
    }
  }
  return r;
}

}  // namespace switchyard::infer
