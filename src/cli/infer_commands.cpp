// `switchyard forward`, `generate`: a Hugging Face checkpoint through the inference engine.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/engine.h>
#include <switchyard/infer/generate.h>
#include <switchyard/safetensors.h>

#include <cstdio>
#include <sstream>

#include "cli/commands.h"

namespace switchyard::cli {

using nlohmann::json;

namespace {

// --routing FILE first, then the flags on top of it.
infer::LoadOptions load_options(const InferFlags& flags) {
  infer::LoadOptions o;
  json routing = json::object();
  std::vector<std::string> sources;
  if (!flags.routing.empty()) {
    routing = parse_json_strict(read_file_text(flags.routing), flags.routing);
    if (!routing.is_object()) fail("{}: routing overrides must be a JSON object", flags.routing);
    sources.push_back(flags.routing);
  }
  if (!flags.router.empty()) {
    routing["router"] = parse_json_strict(flags.router, "--router");
    sources.push_back("--router");
  }
  if (flags.k > 0) {
    routing["k"] = flags.k;
    sources.push_back("--k");
  }
  if (!flags.disabled_experts.empty()) {
    routing["disabled_experts"] = flags.disabled_experts;
    sources.push_back("--disable-experts");
  }
  if (!sources.empty()) {
    o.routing = routing;
    o.routing_source = fmt::format("{}", fmt::join(sources, " + "));
  }
  return o;
}

std::vector<int32_t> parse_ids(const std::string& text, int64_t vocab) {
  std::vector<int32_t> ids;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    size_t used = 0;
    long long v = -1;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != item.size() || v < 0 || v >= vocab)
      fail("--ids: '{}' is not a token id in [0, {})", item, vocab);
    ids.push_back(int32_t(v));
  }
  if (ids.empty()) fail("--ids: no token ids given");
  return ids;
}

}  // namespace

int run_forward(const InferFlags& flags, const std::string& in_path, const std::string& out_path) {
  auto model = infer::Model::load(flags.model, load_options(flags));
  const SafetensorsFile in = read_safetensors(in_path);
  const auto it = in.tensors.find("input_ids");
  if (it == in.tensors.end()) fail("{}: tensor 'input_ids' (int64 (B, T)) is missing", in_path);
  if (it->second.shape.size() != 2 || it->second.shape[0] < 1 || it->second.shape[1] < 1)
    fail("{}: tensor 'input_ids' must have shape (B, T), got {} dimensions", in_path,
         it->second.shape.size());
  const int64_t B = it->second.shape[0], T = it->second.shape[1], V = model->spec().vocab;
  const std::vector<int64_t> ids64 = it->second.to_i64("input_ids");
  std::vector<int32_t> ids(ids64.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids64[i] < 0 || ids64[i] >= V)
      fail("{}: tensor 'input_ids' holds {} at index {}, outside the vocabulary [0, {})", in_path,
           ids64[i], i, V);
    ids[i] = int32_t(ids64[i]);
  }
  std::vector<infer::KVCache> caches(static_cast<size_t>(B));
  std::vector<infer::Model::Chunk> chunks;
  for (int64_t b = 0; b < B; ++b) {
    caches[size_t(b)] = model->new_cache();
    chunks.push_back({&caches[size_t(b)], std::span<const int32_t>(ids.data() + b * T, size_t(T))});
  }
  infer::ForwardCapture capture;
  capture.router_logits = true;
  std::vector<float> logits;
  model->forward(chunks, true, logits, &capture);
  SafetensorsFile out;
  out.tensors["logits"] = TensorData::from_f32({B, T, V}, logits);
  for (size_t i = 0; i < capture.logits.size(); ++i) {
    const int64_t R = int64_t(capture.logits[i].size()) / (B * T);
    out.tensors[fmt::format("router_logits.{}", i)] =
        TensorData::from_f32({B * T, R}, capture.logits[i]);
  }
  write_safetensors(out_path, out);
  return 0;
}

int run_generate(const InferFlags& flags, const GenerateFlags& gen) {
  auto model = infer::Model::load(flags.model, load_options(flags));
  const infer::ModelSpec& spec = model->spec();
  if (gen.ids.empty()) fail("generate: give the prompt as --ids (token ids, comma separated)");
  const std::vector<int32_t> prompt = parse_ids(gen.ids, spec.vocab);
  infer::GenerateOptions options;
  options.max_new_tokens = gen.max_new_tokens;
  options.sampling = {gen.temperature, gen.top_k, gen.top_p, gen.seed};
  options.stop_ids = spec.eos_ids;
  if (gen.ignore_eos) options.stop_ids.clear();
  const bool json_out = gen.format == "json";
  infer::GenerateStats stats;
  const auto out = infer::generate(
      *model, {prompt}, options,
      [&](size_t, int32_t id) {
        if (!json_out) {
          fmt::print("{} ", id);
          std::fflush(stdout);
        }
      },
      &stats);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), out[0].begin(), out[0].end());
  const double decode_tps =
      stats.decode_seconds > 0 ? double(stats.generated_tokens - 1) / stats.decode_seconds : 0.0;
  if (json_out) {
    fmt::print("{}\n", json{{"ids", all}}.dump());
  } else {
    fmt::print("\n");
  }
  fmt::print(stderr,
             "switchyard: {} prompt tokens in {:.3f} s ({:.1f} tokens/s), {} generated, decode "
             "{:.1f} tokens/s; {} parameters, {} active per token\n",
             stats.prompt_tokens, stats.prefill_seconds,
             stats.prefill_seconds > 0 ? double(stats.prompt_tokens) / stats.prefill_seconds : 0.0,
             stats.generated_tokens, decode_tps, model->parameter_count(),
             model->active_parameter_count());
  return 0;
}

}  // namespace switchyard::cli
