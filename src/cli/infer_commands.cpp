// `switchyard forward`, `generate`: a Hugging Face checkpoint through the inference engine.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <switchyard/chat_template.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/engine.h>
#include <switchyard/infer/generate.h>
#include <switchyard/infer/trace.h>
#include <switchyard/safetensors.h>
#include <switchyard/tokenizer.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>

#include "cli/commands.h"

namespace switchyard::cli {

using nlohmann::json;

// --routing FILE first, then the flags on top of it (also used by export-gguf).
json routing_overrides(const InferFlags& flags, std::string& source) {
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
  if (sources.empty()) return nullptr;
  source = fmt::format("{}", fmt::join(sources, " + "));
  return routing;
}

namespace {

infer::LoadOptions load_options(const InferFlags& flags) {
  infer::LoadOptions o;
  o.routing = routing_overrides(flags, o.routing_source);
  o.round_bf16_activations = !flags.float32_activations;
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

namespace {

std::string model_file(const std::string& dir, const char* name) {
  const std::string path = (std::filesystem::path(dir) / name).string();
  if (!std::filesystem::exists(path))
    fail("{}: {} not found in the model folder (needed for text prompts)", path, name);
  return path;
}

// End-of-sequence ids: config.json's, plus generation_config.json's (chat models stop there).
std::vector<int64_t> stop_ids(const infer::ModelSpec& spec, const std::string& dir) {
  std::vector<int64_t> ids = spec.eos_ids;
  const std::string path = (std::filesystem::path(dir) / "generation_config.json").string();
  if (!std::filesystem::exists(path)) return ids;
  const json g = parse_json_strict(read_file_text(path), path);
  if (!g.is_object()) return ids;
  for (int64_t id : infer::parse_eos_ids(g.value("eos_token_id", json()), spec.vocab, path))
    if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
  return ids;
}

void print_stats(const infer::Model& model, const infer::GenerateStats& stats) {
  const double decode_tps =
      stats.decode_seconds > 0 ? double(stats.generated_tokens - 1) / stats.decode_seconds : 0.0;
  fmt::print(stderr,
             "switchyard: {} prompt tokens in {:.3f} s ({:.1f} tokens/s), {} generated, decode "
             "{:.1f} tokens/s; {} parameters, {} active per token, {:.3g} FLOPs per token at "
             "{} positions\n",
             stats.prompt_tokens, stats.prefill_seconds,
             stats.prefill_seconds > 0 ? double(stats.prompt_tokens) / stats.prefill_seconds : 0.0,
             stats.generated_tokens, decode_tps, model.parameter_count(),
             model.active_parameter_count(),
             model.flops_per_token(stats.prompt_tokens + stats.generated_tokens),
             stats.prompt_tokens + stats.generated_tokens);
}

// The phases of Model::profile, largest first, with their share of the wall time.
void print_profile(const char* what, const std::map<std::string, double>& ms, double seconds) {
  std::vector<std::pair<double, std::string>> rows;
  double sum = 0;
  for (const auto& [phase, t] : ms) {
    rows.emplace_back(t, phase);
    sum += t;
  }
  std::sort(rows.rbegin(), rows.rend());
  fmt::print(stderr, "{} profile ({:.1f} ms in forward calls of {:.1f} ms):\n", what, sum,
             seconds * 1e3);
  for (const auto& [t, phase] : rows)
    fmt::print(stderr, "  {:<36} {:>10.1f} ms {:>6.1f}%\n", phase, t,
               sum > 0 ? 100.0 * t / sum : 0.0);
}

// Reads --replay and makes the layers' k fit the trace unless the user chose one.
infer::RoutingTrace replay_trace(const InferFlags& flags, infer::LoadOptions& options) {
  infer::RoutingTrace trace = infer::read_trace(flags.replay);
  if (flags.k == 0 && trace.k > 0) {
    if (options.routing.is_null()) options.routing = json::object();
    options.routing["k"] = trace.k;
    options.routing_source += options.routing_source.empty() ? "--replay" : " + --replay";
  }
  return trace;
}

}  // namespace

int run_forward(const InferFlags& flags, const std::string& in_path, const std::string& out_path) {
  infer::LoadOptions options = load_options(flags);
  infer::RoutingTrace replay;
  if (!flags.replay.empty()) replay = replay_trace(flags, options);
  auto model = infer::Model::load(flags.model, options);
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
  std::vector<int64_t> sequence;
  for (int64_t b = 0; b < B; ++b) {
    caches[size_t(b)] = model->new_cache();
    chunks.push_back({&caches[size_t(b)], std::span<const int32_t>(ids.data() + b * T, size_t(T))});
    sequence.push_back(b);
  }
  infer::ForwardReplay rows;
  if (!flags.replay.empty()) rows = infer::replay_rows(replay, chunks, sequence, flags.replay);
  infer::ForwardCapture capture;
  capture.router_logits = true;
  capture.decisions = !flags.trace.empty();
  std::vector<float> logits;
  model->forward(chunks, true, logits, &capture, flags.replay.empty() ? nullptr : &rows);
  SafetensorsFile out;
  out.tensors["logits"] = TensorData::from_f32({B, T, V}, logits);
  for (size_t i = 0; i < capture.logits.size(); ++i) {
    const int64_t R = int64_t(capture.logits[i].size()) / (B * T);
    out.tensors[fmt::format("router_logits.{}", i)] =
        TensorData::from_f32({B * T, R}, capture.logits[i]);
  }
  write_safetensors(out_path, out);
  if (!flags.trace.empty()) {
    infer::TraceRecorder recorder(*model, flags.trace_logits);
    recorder.add(chunks, sequence, capture);
    infer::write_trace(flags.trace, recorder.finish(flags.model, std::vector<std::string>(
                                                                     size_t(B), flags.label)));
  }
  return 0;
}

int run_generate(const InferFlags& flags, const GenerateFlags& gen) {
  if (!flags.replay.empty()) fail("generate: --replay is for forward (recorded positions only)");
  auto model = infer::Model::load(flags.model, load_options(flags));
  const infer::ModelSpec& spec = model->spec();
  if (gen.ids.empty() == gen.prompt.empty())
    fail("generate: give the prompt either as --ids (token ids) or as --prompt (text)");
  if (gen.chat && gen.prompt.empty()) fail("generate: --chat renders a text --prompt");
  std::optional<text::Tokenizer> tokenizer;
  std::vector<int32_t> prompt;
  if (!gen.prompt.empty()) {
    tokenizer = text::Tokenizer::load(model_file(flags.model, "tokenizer.json"));
    if (gen.chat) {
      const auto config =
          text::load_chat_template_config(model_file(flags.model, "tokenizer_config.json"));
      nlohmann::ordered_json messages = nlohmann::ordered_json::array();
      if (!gen.system.empty()) messages.push_back({{"role", "system"}, {"content", gen.system}});
      messages.push_back({{"role", "user"}, {"content", gen.prompt}});
      text::ChatRenderOptions render;
      render.add_generation_prompt = true;
      // The template writes the special tokens itself (BOS included).
      prompt = tokenizer->encode(text::apply_chat_template(config, messages, render), false);
    } else {
      prompt = tokenizer->encode(gen.prompt, true);
    }
    if (prompt.empty()) fail("generate: --prompt encodes to no tokens");
    for (int32_t id : prompt)
      if (id >= spec.vocab)
        fail("generate: the tokenizer gave id {}, beyond the model's vocab_size {}", id,
             spec.vocab);
  } else {
    prompt = parse_ids(gen.ids, spec.vocab);
  }
  infer::GenerateOptions options;
  options.max_new_tokens = gen.max_new_tokens;
  options.sampling = {gen.temperature, gen.top_k, gen.top_p, gen.seed};
  options.stop_ids = stop_ids(spec, flags.model);
  if (gen.ignore_eos) options.stop_ids.clear();
  std::optional<infer::TraceRecorder> recorder;
  if (!flags.trace.empty()) {
    recorder.emplace(*model, flags.trace_logits);
    options.capture_decisions = true;
    options.capture_router_logits = flags.trace_logits;
    options.on_forward =
        [&](std::span<const infer::Model::Chunk> chunks, const std::vector<int64_t>& sequence,
            const infer::ForwardCapture& capture) { recorder->add(chunks, sequence, capture); };
  }
  const bool json_out = gen.format == "json";
  infer::GenerateStats stats;
  std::vector<int32_t> generated;
  size_t printed = 0;
  const auto out = infer::generate(
      *model, {prompt}, options,
      [&](size_t, int32_t id) {
        generated.push_back(id);
        if (json_out) return;
        if (!tokenizer) {
          fmt::print("{} ", id);
        } else {
          // Decoded so far, minus what is printed; a trailing U+FFFD may be half a character.
          const std::string so_far = tokenizer->decode(generated, true);
          if (so_far.size() >= 3 && so_far.compare(so_far.size() - 3, 3, "\xEF\xBF\xBD") == 0)
            return;
          if (so_far.size() > printed) fmt::print("{}", so_far.substr(printed));
          printed = std::max(printed, so_far.size());
        }
        std::fflush(stdout);
      },
      &stats);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), out[0].begin(), out[0].end());
  if (json_out) {
    json result = {{"ids", all}};
    if (tokenizer) result["text"] = tokenizer->decode(out[0], true);
    fmt::print("{}\n", result.dump());
  } else {
    if (tokenizer) {
      const std::string rest = tokenizer->decode(generated, true);
      if (rest.size() > printed) fmt::print("{}", rest.substr(printed));
    }
    fmt::print("\n");
  }
  if (recorder) infer::write_trace(flags.trace, recorder->finish(flags.model, {flags.label}));
  print_stats(*model, stats);
  if (gen.profile) {
    print_profile("prefill", stats.prefill_profile_ms, stats.prefill_seconds);
    print_profile("decode", stats.decode_profile_ms, stats.decode_seconds);
  }
  return 0;
}

int run_ppl(const InferFlags& flags, const std::string& text_path, int64_t context) {
  auto model = infer::Model::load(flags.model, load_options(flags));
  const infer::ModelSpec& spec = model->spec();
  const text::Tokenizer tokenizer =
      text::Tokenizer::load(model_file(flags.model, "tokenizer.json"));
  const std::vector<int32_t> ids = tokenizer.encode(read_file_text(text_path), true);
  if (ids.size() < 2)
    fail("{}: the text encodes to {} tokens; perplexity needs 2", text_path, ids.size());
  for (int32_t id : ids)
    if (id >= spec.vocab)
      fail("ppl: the tokenizer gave id {}, beyond the model's vocab_size {}", id, spec.vocab);
  if (context <= 1) context = std::min<int64_t>(spec.max_positions, 1024);
  // Windows of `context` tokens that do not overlap: each token after a window's first is
  // predicted from the window's earlier tokens only.
  double nll = 0;
  int64_t predicted = 0;
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<float> logits;
  for (size_t begin = 0; begin + 1 < ids.size(); begin += size_t(context)) {
    const size_t n = std::min(ids.size() - begin, size_t(context));
    if (n < 2) break;
    infer::KVCache cache = model->new_cache();
    std::vector<infer::Model::Chunk> chunks = {
        {&cache, std::span<const int32_t>(ids.data() + begin, n)}};
    model->forward(chunks, true, logits);
    const int64_t V = spec.vocab;
    for (size_t i = 0; i + 1 < n; ++i) {
      const float* z = logits.data() + int64_t(i) * V;
      const float max = *std::max_element(z, z + V);
      double sum = 0;
      for (int64_t j = 0; j < V; ++j) sum += std::exp(double(z[j] - max));
      nll += std::log(sum) + double(max) - double(z[ids[begin + i + 1]]);
      ++predicted;
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  fmt::print("{}\n", json{{"perplexity", std::exp(nll / double(predicted))},
                          {"mean_nll", nll / double(predicted)},
                          {"tokens", ids.size()},
                          {"predicted", predicted},
                          {"context", context},
                          {"tokens_per_s", double(ids.size()) / seconds},
                          {"parameters", model->parameter_count()},
                          {"active_parameters", model->active_parameter_count()},
                          {"experts_per_token", model->experts_per_token()},
                          {"flops_per_token", model->flops_per_token(context / 2)}}
                         .dump());
  return 0;
}

}  // namespace switchyard::cli
