// Hugging Face folder -> GGUF with llama.cpp's names (src/llama-arch.cpp, gguf-py constants) and
// the transformations of its converter (convert_hf_to_gguf.py): q/k rows permuted for "llama"
// (interleaved RoPE there, rotate-half in HF), experts stacked (E, ...), DeepSeek's kv_b split
// into k_b (transposed) and v_b, 1-D tensors, norms and routers in F32. Norm weights are stored
// as they are (llama.cpp's RMSNorm multiplies by w, like HF: no +1).
#include <fmt/ranges.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/infer/checkpoint.h>
#include <switchyard/infer/gguf.h>
#include <switchyard/infer/model_spec.h>
#include <switchyard/infer/routing_control.h>
#include <switchyard/router.h>
#include <switchyard/safetensors.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "infer/rope.h"

namespace switchyard::infer {

using nlohmann::json;

namespace {

using Rows = std::vector<int64_t>;

// Reads rows of checkpoint tensors as float32 straight from the memory map. A tensor is viewed as
// (shape[0], the rest) rows; a 1-D tensor as one row.
class Source {
 public:
  explicit Source(const Checkpoint& ckpt) : ckpt_(ckpt) {}

  // Checks that `name` exists with `shape` (marking it used) before anything is written.
  void need(const std::string& name, const std::vector<int64_t>& shape) const {
    ckpt_.skip(name, shape);
  }
  int64_t num_rows(const std::string& name) const {
    const CheckpointTensor& t = ckpt_.tensor(name);
    return t.shape.size() == 1 ? 1 : t.shape[0];
  }
  int64_t row_len(const std::string& name) const {
    const CheckpointTensor& t = ckpt_.tensor(name);
    int64_t n = 1;
    for (size_t i = t.shape.size() == 1 ? 0 : 1; i < t.shape.size(); ++i) n *= t.shape[i];
    return n;
  }
  void rows(const std::string& name, int64_t r0, int64_t n, float* dst) const {
    const CheckpointTensor& t = ckpt_.tensor(name);
    if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
      fail("{}: tensor '{}' has dtype {}; weights must be F32, BF16 or F16", ckpt_.file_of(name),
           name, dtype_name(t.dtype));
    const int64_t len = row_len(name);
    convert_to_f32(t.dtype, t.data + size_t(r0 * len) * dtype_size(t.dtype), size_t(n * len), dst);
  }
  std::vector<float> all(const std::string& name) const {
    const int64_t n = num_rows(name);
    std::vector<float> out(static_cast<size_t>(n * row_len(name)));
    rows(name, 0, n, out.data());
    return out;
  }

 private:
  const Checkpoint& ckpt_;
};

// Streams whole tensors one after the other (a stack of experts is their concatenation).
GgufWriter::Producer copy(const Source* src, std::vector<std::string> names) {
  return [src, names = std::move(names)](GgufTensorSink& sink) {
    std::vector<float> buf;
    for (const std::string& name : names) {
      const int64_t len = src->row_len(name);
      const int64_t rows = src->num_rows(name);
      const int64_t chunk = std::max<int64_t>(1, (int64_t(1) << 20) / len);
      for (int64_t r = 0; r < rows; r += chunk) {
        const int64_t n = std::min(chunk, rows - r);
        buf.resize(size_t(n * len));
        src->rows(name, r, n, buf.data());
        sink.write(buf);
      }
    }
  };
}

// Output row i = source row order[i] × scale[i] (scale empty: 1).
GgufWriter::Producer pick_rows(const Source* src, std::string name, Rows order,
                               std::vector<float> scale = {}) {
  return [src, name = std::move(name), order = std::move(order),
          scale = std::move(scale)](GgufTensorSink& sink) {
    const int64_t len = src->row_len(name);
    std::vector<float> row(static_cast<size_t>(len));
    for (size_t i = 0; i < order.size(); ++i) {
      src->rows(name, order[i], 1, row.data());
      if (!scale.empty() && scale[i] != 1.0f)
        for (float& x : row) x *= scale[i];
      sink.write(row);
    }
  };
}

// Elements `keep` of a 1-D tensor, plus `add` (same length as the tensor) when given.
GgufWriter::Producer pick_values(const Source* src, std::string name, Rows keep,
                                 std::vector<float> add) {
  return [src, name = std::move(name), keep = std::move(keep),
          add = std::move(add)](GgufTensorSink& sink) {
    const std::vector<float> all = src->all(name);
    std::vector<float> out;
    for (int64_t e : keep) out.push_back(all[size_t(e)] + (add.empty() ? 0.0f : add[size_t(e)]));
    sink.write(out);
  };
}

GgufWriter::Producer values(std::vector<float> v) {
  return [v = std::move(v)](GgufTensorSink& sink) { sink.write(v); };
}

// HF rotate-half rows of one head (i, i + D/2) -> interleaved (2i, 2i + 1): convert_hf_to_gguf's
// permute. Returns the source row of each output row for `heads` heads of `dim` rows.
Rows interleave_rows(int64_t heads, int64_t dim) {
  Rows order;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < dim / 2; ++j)
      for (int64_t t = 0; t < 2; ++t) order.push_back(h * dim + t * (dim / 2) + j);
  return order;
}

Rows iota_rows(int64_t n) {
  Rows r(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) r[size_t(i)] = i;
  return r;
}

double g_mscale(double factor, double m) {
  return factor <= 1.0 ? 1.0 : 0.1 * m * std::log(factor) + 1.0;
}

// What llama.cpp (llama-context.cpp, models/deepseek2.cpp, ggml's rope_yarn) makes of a file's
// RoPE keys at run time, before rope.scaling.attn_factor (A): the cos/sin multiplier is A·r and
// DeepSeek2's softmax-scale multiplier A²·kq.
struct LlamaRope {
  double r = 1.0, kq = 1.0;
};
LlamaRope llama_rope(const RopeConfig& rope, double log_mul) {
  const bool scaled = rope.type == "linear" || rope.type == "yarn";
  const double factor = scaled ? rope.factor : 1.0, ln = std::log(factor);
  double c = 1.0;
  const bool yarn = rope.type == "yarn";
  if (yarn) {
    if (log_mul != 0.0) {
      const double ms = log_mul != 1.0 ? log_mul : 1.0;  // deepseek2's special case
      c = g_mscale(factor, ms) / g_mscale(factor, log_mul);
    } else {
      c = g_mscale(factor, 1.0);
    }
    c *= 1.0 / (1.0 + 0.1 * ln);
  }
  LlamaRope out;
  out.r = c * (yarn ? 1.0 + 0.1 * ln : 1.0);
  const double m = c * (1.0 + 0.1 * ln) * (1.0 + 0.1 * log_mul * ln);
  out.kq = m * m;
  return out;
}

std::string arch_of(const ModelSpec& spec) {
  const std::string& a = spec.architecture;
  if (a == "LlamaForCausalLM" || a == "MistralForCausalLM" || a == "MixtralForCausalLM")
    return "llama";
  if (a == "Qwen2ForCausalLM") return "qwen2";
  if (a == "Qwen3ForCausalLM") return "qwen3";
  if (a == "Qwen2MoeForCausalLM") return "qwen2moe";
  if (a == "Qwen3MoeForCausalLM") return "qwen3moe";
  if (a == "OlmoeForCausalLM") return "olmoe";
  if (a == "DeepseekV3ForCausalLM") return "deepseek2";
  fail(
      "{}: field 'architectures' = \"{}\" has no GGUF export (llama.cpp architectures: Llama, "
      "Mistral, Mixtral, Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, OLMoE, DeepSeek-V3)",
      spec.source, a);
}

// A routing rule in one canonical form (every parameter resolved), to compare overrides with
// the checkpoint's rule.
json canonical_router(const json& router, const std::string& context) {
  json layer = router;
  layer["activation"] = "swiglu";
  const LayerConfig config = parse_layer_config(layer, context);
  json p = make_router(config.router, config.router_params, context)->params();
  p["routing_groups"] = config.routing_groups == RoutingGroups::Batch ? "batch" : "sequence";
  return p;
}

// GPT-2's byte-level alphabet: printable bytes stand for themselves, the others for U+0100...
std::string byte_token(int b) {
  int cp = b;
  if (!((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255))) {
    int n = 0;
    for (int c = 0; c < b; ++c)
      if (!((c >= 33 && c <= 126) || (c >= 161 && c <= 172) || (c >= 174 && c <= 255))) ++n;
    cp = 256 + n;
  }
  std::string out;
  if (cp < 0x80) {
    out += char(cp);
  } else {
    out += char(0xc0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3f));
  }
  return out;
}

// The pre-tokenizer names llama.cpp gives the byte-level BPE families (llama-vocab.cpp), by the
// Split regexes of tokenizer.json's pre_tokenizer; "" = not one llama.cpp knows.
std::string llama_pre_tokenizer(const json& pre) {
  std::vector<std::string> splits;
  bool byte_level = false, byte_level_regex = false;
  const json steps = pre.is_object() && pre.value("type", "") == "Sequence"
                         ? pre.value("pretokenizers", json::array())
                         : json::array({pre});
  for (const json& step : steps) {
    if (!step.is_object()) return "";
    const std::string type = step.value("type", "");
    if (type == "Split" && step.contains("pattern") && step["pattern"].contains("Regex")) {
      splits.push_back(step["pattern"]["Regex"].get<std::string>());
    } else if (type == "ByteLevel") {
      byte_level = true;
      byte_level_regex = step.value("use_regex", true);
    } else {
      return "";
    }
  }
  if (!byte_level) return "";
  const std::string qwen2 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const std::string llama3 =
      "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
      "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  const std::vector<std::string> deepseek3 = {
      "\\p{N}{1,3}", "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?["
      "\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"};
  if (splits.empty() && byte_level_regex) return "gpt-2";
  if (byte_level_regex) return "";
  if (splits == std::vector<std::string>{qwen2}) return "qwen2";
  if (splits == std::vector<std::string>{llama3}) return "llama-bpe";
  if (splits == deepseek3) return "deepseek-v3";
  return "";
}

// The tokens and types of a GGUF vocabulary, filled from tokenizer.json (both vocabulary kinds).
struct VocabTable {
  const ModelSpec& spec;
  std::string path;
  std::vector<std::string> tokens = std::vector<std::string>(static_cast<size_t>(spec.vocab));
  std::vector<int32_t> types = std::vector<int32_t>(static_cast<size_t>(spec.vocab), 5);  // UNUSED
  void put(int64_t id, const std::string& text, int32_t type, const char* field) {
    if (id < 0 || id >= spec.vocab)
      fail("{}: field '{}' has id {} for '{}', beyond vocab_size = {} ({})", path, field, id, text,
           spec.vocab, spec.source);
    tokens[size_t(id)] = text;
    types[size_t(id)] = type;
  }
  // Ids no token names get a placeholder text (they stay UNUSED).
  void name_unused() {
    for (int64_t i = 0; i < spec.vocab; ++i)
      if (types[size_t(i)] == 5) tokens[size_t(i)] = fmt::format("[PAD{}]", i);
  }
};

// bos/eos from config.json, add_bos_token (default `add_bos`) and chat_template from
// tokenizer_config.json (`tc`, or null).
void write_special_tokens(GgufWriter& w, const ModelSpec& spec, const json& tc, bool add_bos) {
  if (spec.bos_id >= 0) w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(uint32_t(spec.bos_id)));
  if (!spec.eos_ids.empty())
    w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(uint32_t(spec.eos_ids[0])));
  w.set("tokenizer.ggml.add_bos_token",
        GgufValue::boolean(tc.is_object() ? tc.value("add_bos_token", add_bos) : false));
  if (tc.is_object() && tc.contains("chat_template") && tc["chat_template"].is_string())
    w.set("tokenizer.chat_template", GgufValue::str(tc["chat_template"].get<std::string>()));
}

// Whether a tokenizer.json normalizer is SentencePiece's as Llama 2, Mistral and Mixtral ship it:
// prepend "▁", spaces to "▁" (llama.cpp's "llama" vocabulary does the same with add_space_prefix).
bool is_spm_normalizer(const json& n) {
  if (!n.is_object() || n.value("type", "") != "Sequence") return false;
  bool prepend = false, replace = false;
  for (const json& s : n.value("normalizers", json::array())) {
    if (s.value("type", "") == "Prepend" && s.value("prepend", "") == "\xE2\x96\x81")
      prepend = true;
    else if (s.value("type", "") == "Replace" && s.contains("pattern") &&
             s["pattern"].value("String", "") == " " && s.value("content", "") == "\xE2\x96\x81")
      replace = true;
    else
      return false;
  }
  return prepend && replace;
}

// tokenizer.json's SentencePiece-style BPE with byte fallback as llama.cpp's "llama" vocabulary:
// tokens, scores and types. llama.cpp merges the adjacent pair whose joined token scores highest;
// a token's score is minus the rank of the merge that makes it, so the merges go in
// tokenizer.json's order. Types: <unk> UNKNOWN, <0xXX> BYTE, special added tokens CONTROL.
bool write_spm_tokenizer_json(GgufWriter& w, const ModelSpec& spec, const json& t,
                              const std::string& path, const json& tc) {
  const json& m = t["model"];
  if (!(m.value("type", "") == "BPE" && m.value("byte_fallback", false) &&
        is_spm_normalizer(t.value("normalizer", json())) &&
        t.value("pre_tokenizer", json()).is_null()))
    return false;
  VocabTable table{spec, path};
  std::vector<float> scores(static_cast<size_t>(spec.vocab), 0.0f);
  const json vocab = m.value("vocab", json::object());  // a named copy: items() refers to it
  std::map<std::string, int64_t> id_of;
  for (const auto& [text, id] : vocab.items()) {
    const bool byte = text.size() == 6 && text.rfind("<0x", 0) == 0 && text.back() == '>';
    table.put(id.get<int64_t>(), text, byte ? 6 : 1, "model.vocab");  // BYTE or NORMAL
    id_of[text] = id.get<int64_t>();
  }
  const json merges = m.value("merges", json::array());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& mg = merges[rank];
    std::string joined;
    if (mg.is_string()) {
      const std::string text = mg.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos)
        fail("{}: field 'model.merges' entry {} has no space", path, rank);
      joined = text.substr(0, space) + text.substr(space + 1);
    } else {
      joined = mg.at(0).get<std::string>() + mg.at(1).get<std::string>();
    }
    const auto it = id_of.find(joined);
    if (it != id_of.end() && scores[size_t(it->second)] == 0.0f)
      scores[size_t(it->second)] = -float(rank + 1);
  }
  const std::string unk =
      m.value("unk_token", json()).is_string() ? m["unk_token"].get<std::string>() : "";
  for (const json& a : t.value("added_tokens", json::array())) {
    const std::string text = a.value("content", "");
    const int64_t id = a.value("id", int64_t(-1));
    table.put(id, text, text == unk ? 2 : a.value("special", false) ? 3 : 4, "added_tokens");
  }
  table.name_unused();
  w.set("tokenizer.ggml.model", GgufValue::str("llama"));
  w.set("tokenizer.ggml.pre", GgufValue::str("default"));
  w.set("tokenizer.ggml.tokens", GgufValue::str_array(table.tokens));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array(scores));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(table.types));
  if (!unk.empty() && id_of.count(unk))
    w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(uint32_t(id_of[unk])));
  w.set("tokenizer.ggml.add_space_prefix", GgufValue::boolean(true));
  w.set("tokenizer.ggml.add_eos_token",
        GgufValue::boolean(tc.is_object() && tc.value("add_eos_token", false)));
  write_special_tokens(w, spec, tc, true);
  return true;
}

// tokenizer.json's byte-level BPE as llama.cpp's gpt2 vocabulary (tokens, types, merges, the
// pre-tokenizer's name, bos/eos, chat template), or its SentencePiece-style BPE as the "llama"
// one (write_spm_tokenizer_json). False when the folder has none or it is not a
// form llama.cpp runs the same way (then `why` says so).
bool write_tokenizer_json(GgufWriter& w, const ModelSpec& spec, const std::string& dir,
                          std::string& why) {
  namespace fs = std::filesystem;
  const fs::path path = fs::path(dir) / "tokenizer.json";
  if (!fs::exists(path)) return false;
  const json t = json::parse(read_file_text(path.string()), nullptr, false);
  if (t.is_discarded() || !t.is_object() || !t.contains("model") || !t["model"].is_object()) {
    why = path.string() + " is not a tokenizer.json object";
    return false;
  }
  const json& m = t["model"];
  const fs::path config = fs::path(dir) / "tokenizer_config.json";
  const json tc =
      fs::exists(config) ? json::parse(read_file_text(config.string()), nullptr, false) : json();
  if (write_spm_tokenizer_json(w, spec, t, path.string(), tc)) return true;
  if (m.value("type", "") != "BPE" || m.value("byte_fallback", false)) {
    why = fmt::format(
        "{}: model type {} (byte_fallback {}) is neither byte-level BPE nor SentencePiece-style "
        "BPE with the Llama normalizer",
        path.string(), m.value("type", "?"), m.value("byte_fallback", false));
    return false;
  }
  const std::string pre = llama_pre_tokenizer(t.value("pre_tokenizer", json()));
  if (pre.empty()) {
    why = path.string() +
          ": field 'pre_tokenizer' is not one llama.cpp names (qwen2, llama-bpe, "
          "deepseek-v3, gpt-2)";
    return false;
  }
  VocabTable table{spec, path.string()};
  const json vocab = m.value("vocab", json::object());  // a named copy: items() refers to it
  for (const auto& [text, id] : vocab.items())
    table.put(id.get<int64_t>(), text, 1, "model.vocab");  // NORMAL
  for (const json& a : t.value("added_tokens", json::array()))
    table.put(a.value("id", int64_t(-1)), a.value("content", ""), a.value("special", false) ? 3 : 4,
              "added_tokens");  // CONTROL or USER_DEFINED
  table.name_unused();
  std::vector<std::string> merges;
  for (const json& mg : m.value("merges", json::array()))
    merges.push_back(mg.is_string()
                         ? mg.get<std::string>()
                         : mg.at(0).get<std::string>() + " " + mg.at(1).get<std::string>());
  w.set("tokenizer.ggml.model", GgufValue::str("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::str(pre));
  w.set("tokenizer.ggml.tokens", GgufValue::str_array(table.tokens));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(table.types));
  w.set("tokenizer.ggml.merges", GgufValue::str_array(merges));
  write_special_tokens(w, spec, tc, false);
  return true;
}

// llama.cpp needs a vocabulary that tokenises (node-llama-cpp tokenises at load; the "none"
// vocabulary asserts there): a gpt2 BPE one whose first 256 tokens are the bytes, no merges, the
// rest placeholders, and the config's bos/eos ids.
void write_placeholder_vocab(GgufWriter& w, const ModelSpec& spec) {
  std::vector<std::string> tokens;
  std::vector<int32_t> types(static_cast<size_t>(spec.vocab), 1);  // NORMAL
  for (int64_t i = 0; i < spec.vocab; ++i)
    tokens.push_back(i < 256 && spec.vocab >= 256 ? byte_token(int(i))
                                                  : fmt::format("[switchyard {}]", i));
  w.set("tokenizer.ggml.model", GgufValue::str("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::str("default"));
  if (spec.bos_id >= 0) {
    types[size_t(spec.bos_id)] = 3;  // CONTROL
    w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(uint32_t(spec.bos_id)));
  }
  if (!spec.eos_ids.empty()) {
    for (int64_t id : spec.eos_ids) types[size_t(id)] = 3;
    w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(uint32_t(spec.eos_ids[0])));
  }
  w.set("tokenizer.ggml.tokens", GgufValue::str_array(tokens));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
  w.set("tokenizer.ggml.merges", GgufValue::str_array({}));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(false));
}

void write_vocab(GgufWriter& w, const ModelSpec& spec, const std::string& dir,
                 std::vector<std::string>& notes) {
  std::string why;
  if (write_tokenizer_json(w, spec, dir, why)) return;
  write_placeholder_vocab(w, spec);
  if (!why.empty())
    notes.push_back(why + ": the GGUF has a placeholder byte-level vocabulary (feed token ids)");
}

GgufTensorType parse_dtype(const std::string& dtype, DType main, const std::string& dir) {
  if (dtype.empty()) {
    if (main == DType::BF16) return GgufTensorType::BF16;
    if (main == DType::F16) return GgufTensorType::F16;
    if (main == DType::F32) return GgufTensorType::F32;
    fail("{}: the checkpoint's main dtype {} has no GGUF float type; give dtype f32, bf16 or f16",
         dir, dtype_name(main));
  }
  if (dtype == "f32") return GgufTensorType::F32;
  if (dtype == "bf16") return GgufTensorType::BF16;
  if (dtype == "f16") return GgufTensorType::F16;
  fail("export-gguf: dtype '{}' is not supported (f32, bf16, f16)", dtype);
}

uint32_t ftype_of(GgufTensorType t) {
  return t == GgufTensorType::F32 ? 0 : t == GgufTensorType::F16 ? 1 : 32;  // LLAMA_FTYPE_*
}

}  // namespace

GgufExportReport export_gguf(const std::string& model_dir, const std::string& out_path,
                             const GgufExportOptions& options) {
  const ModelSpec spec = load_model_spec(model_dir);
  const std::string& cfg = spec.source;
  const std::string arch = arch_of(spec);
  const std::vector<LayerRouting> routing =
      resolve_routing(spec, options.routing, options.routing_source);
  const Checkpoint ckpt = Checkpoint::open(model_dir);
  const GgufTensorType wtype = parse_dtype(options.dtype, ckpt.main_dtype(), model_dir);
  const Source src(ckpt);
  const TensorNames& n = spec.names;
  const bool latent = spec.attention == AttentionKind::Latent;
  const int64_t d = spec.d, V = spec.vocab, H = spec.n_heads, Hkv = spec.n_kv_heads;
  const int64_t Dq = spec.q_head_dim(), Dv = spec.v_dim(), rope = spec.rope_dim;
  GgufExportReport report;
  report.architecture = arch;
  report.dtype = gguf_tensor_type_name(wtype);

  auto reject = [&](const std::string& field, const std::string& value, const std::string& why) {
    fail("{}: field '{}' = {} cannot be expressed in GGUF: {}", cfg, field, value, why);
  };

  // --- What llama.cpp's graph for `arch` can run.
  const bool moe = spec.num_moe_layers() > 0;
  int64_t lead_dense = 0;
  while (lead_dense < spec.n_layers && !spec.moe_layer[size_t(lead_dense)]) ++lead_dense;
  for (int64_t l = lead_dense; l < spec.n_layers; ++l)
    if (!spec.moe_layer[size_t(l)]) {
      if (arch == "deepseek2")
        reject("moe_layer_freq", "(dense layer " + std::to_string(l) + ")",
               "llama.cpp's deepseek2 has dense layers only before the first MoE layer "
               "(leading_dense_block_count)");
      if (arch == "qwen2moe" || arch == "qwen3moe")
        reject("mlp_only_layers", "(dense layer " + std::to_string(l) + ")",
               "llama.cpp's " + arch + " has an MoE FFN in every layer");
    }
  if ((arch == "qwen2moe" || arch == "qwen3moe") && lead_dense > 0)
    reject("mlp_only_layers", "(dense layer 0)",
           "llama.cpp's " + arch + " has an MoE FFN in every layer");
  if (arch == "qwen2moe" && spec.shared_ff == 0)
    reject("shared_expert_intermediate_size", "0", "llama.cpp's qwen2moe needs a shared expert");
  if (arch == "deepseek2" && moe && spec.shared_ff == 0)
    reject("n_shared_experts", "0", "llama.cpp's deepseek2 needs shared experts");
  const bool normalize = moe && spec.router.value("normalize", true);
  if (arch == "qwen2moe" && normalize)
    reject("norm_topk_prob", "true", "llama.cpp's qwen2moe never renormalises the top-k weights");
  if (arch == "olmoe" && normalize)
    reject("norm_topk_prob", "true", "llama.cpp's olmoe never renormalises the top-k weights");
  if (arch == "qwen3moe" && !normalize)
    reject("norm_topk_prob", "false", "llama.cpp's qwen3moe always renormalises the top-k weights");
  if (spec.clip_qkv > 0)
    reject("clip_qkv", fmt::format("{}", spec.clip_qkv), "llama.cpp's olmoe does not clip q, k, v");
  if (!latent && rope != spec.head_dim)
    reject("partial_rotary_factor", fmt::format("{}/{}", rope, spec.head_dim),
           "llama.cpp rotates whole heads for " + arch);
  if ((arch == "qwen2" || arch == "qwen2moe" || arch == "olmoe") && H * spec.head_dim != d)
    reject("head_dim", std::to_string(spec.head_dim),
           fmt::format("llama.cpp's {} needs num_attention_heads × head_dim = hidden_size ({})",
                       arch, d));
  if (arch == "olmoe" && Hkv != H)
    reject("num_key_value_heads", std::to_string(Hkv),
           fmt::format("llama.cpp's olmoe norms k over hidden_size, so it needs {} kv heads", H));
  const RopeConfig& rc = spec.rope;
  if (rc.type == "llama3" && arch != "llama")
    reject("rope_type", "\"llama3\"", "only llama.cpp's llama reads rope_freqs");
  if (rc.type == "yarn") {
    if (rc.beta_fast != 32.0 || rc.beta_slow != 1.0)
      reject("beta_fast", fmt::format("{} (beta_slow {})", rc.beta_fast, rc.beta_slow),
             "llama.cpp's " + arch + " uses yarn's defaults 32 and 1");
    if (!rc.truncate) reject("truncate", "false", "ggml's yarn floors and ceils the range");
  }
  if (spec.sliding_window > 0)
    report.notes.push_back(fmt::format(
        "sliding_window = {} is not in the GGUF: llama.cpp's {} attends to every position, so "
        "sequences longer than the window differ",
        spec.sliding_window, arch));
  if (latent && std::abs(spec.norm_eps - 1e-6) > 1e-12)
    report.notes.push_back(fmt::format(
        "llama.cpp's deepseek2 uses rms_norm_eps = {} for the q_a/kv_a norms too (HF: 1e-6)",
        spec.norm_eps));

  // --- Routing: only k and disabled experts (and DeepSeek's selection bias) map to GGUF.
  const std::string& rsrc = options.routing_source;
  const int64_t L = spec.num_moe_layers();
  std::vector<Rows> kept(static_cast<size_t>(L));
  int64_t E = spec.experts, k = spec.top_k();
  if (moe) {
    const json base = canonical_router(spec.router, cfg + " [routing rule]");
    for (int64_t m = 0; m < L; ++m) {
      const LayerRouting& r = routing[size_t(m)];
      const std::string ctx = fmt::format("{} [MoE layer {}]", rsrc, m);
      const json cur = canonical_router(r.router, ctx);
      auto refuse = [&](const std::string& field, const std::string& why) {
        fail("{}: field '{}' = {} cannot be expressed in GGUF: {}", ctx, field,
             cur.contains(field) ? cur[field].dump() : r.router.dump(), why);
      };
      if (cur["router"] != base["router"])
        refuse("router", fmt::format("llama.cpp runs only the checkpoint's rule ({})",
                                     base["router"].dump()));
      if (cur.value("capacity_factor", 0.0) > 0.0)
        refuse("capacity_factor", "llama.cpp has no expert capacity (it drops no token)");
      for (const auto& [key, value] : cur.items())
        if (key != "k" && (!base.contains(key) || base[key] != value))
          refuse(key, fmt::format("llama.cpp runs the checkpoint's {} = {}", key,
                                  base.contains(key) ? base[key].dump() : "(none)"));
      if (!r.selection_bias.empty() && arch != "deepseek2")
        fail(
            "{}: field 'bias' cannot be expressed in GGUF: llama.cpp's {} has no selection bias "
            "(only deepseek2's exp_probs_b)",
            ctx, arch);
      for (int64_t e = 0; e < spec.experts; ++e)
        if (!std::binary_search(r.disabled.begin(), r.disabled.end(), e))
          kept[size_t(m)].push_back(e);
      const int64_t Em = int64_t(kept[size_t(m)].size()), km = cur["k"].get<int64_t>();
      if (m == 0) {
        E = Em;
        k = km;
      } else if (Em != E) {
        fail(
            "{}: field 'disabled_experts' leaves {} experts but MoE layer 0 keeps {}: GGUF's "
            "expert_count is one number for every layer",
            ctx, Em, E);
      } else if (km != k) {
        fail(
            "{}: field 'k' = {} but MoE layer 0 routes k = {}: GGUF's expert_used_count is one "
            "number for every layer",
            ctx, km, k);
      }
      json layer = r.router;
      layer["activation"] = "swiglu";
      const LayerConfig lc = parse_layer_config(layer, ctx);
      make_router(lc.router, lc.router_params, ctx)->check_shape(Em, ctx);
    }
  }
  report.experts = moe ? E : 0;
  report.k = moe ? k : 0;

  // --- Metadata.
  GgufWriter w(options.alignment);
  const std::string P = arch + ".";
  auto u32 = [&](const std::string& key, int64_t v) {
    if (v < 0 || v > int64_t(UINT32_MAX)) fail("GGUF: key '{}' = {} is not a uint32", key, v);
    w.set(key, GgufValue::u32(uint32_t(v)));
  };
  auto f32 = [&](const std::string& key, double v) { w.set(key, GgufValue::f32(float(v))); };
  w.set("general.architecture", GgufValue::str(arch));
  const std::filesystem::path dir_path = std::filesystem::path(model_dir).lexically_normal();
  w.set("general.name",
        GgufValue::str(dir_path.has_filename() ? dir_path.filename().string()
                                               : dir_path.parent_path().filename().string()));
  u32("general.file_type", ftype_of(wtype));
  u32(P + "vocab_size", V);
  u32(P + "context_length", spec.max_positions);
  u32(P + "embedding_length", d);
  u32(P + "block_count", spec.n_layers);
  u32(P + "feed_forward_length", spec.dense_ff > 0 ? spec.dense_ff : spec.expert_ff);
  u32(P + "attention.head_count", H);
  u32(P + "attention.head_count_kv", latent ? 1 : Hkv);
  f32(P + "attention.layer_norm_rms_epsilon", spec.norm_eps);
  f32(P + "rope.freq_base", rc.theta);
  u32(P + "rope.dimension_count", rope);
  if (latent) {
    // MLA as llama.cpp runs it: MQA over the latent (kv_lora_rank + rope) with absorbed k_b/v_b.
    u32(P + "leading_dense_block_count", lead_dense);
    u32(P + "attention.q_lora_rank", spec.q_lora_rank);
    u32(P + "attention.kv_lora_rank", spec.kv_lora_rank);
    u32(P + "attention.key_length", spec.kv_lora_rank + rope);
    u32(P + "attention.value_length", spec.kv_lora_rank);
    u32(P + "attention.key_length_mla", Dq);
    u32(P + "attention.value_length_mla", Dv);
  } else {
    u32(P + "attention.key_length", spec.head_dim);
    u32(P + "attention.value_length", spec.head_dim);
  }
  if (moe) {
    u32(P + "expert_count", E);
    u32(P + "expert_used_count", k);
    if (arch != "llama" && arch != "olmoe") u32(P + "expert_feed_forward_length", spec.expert_ff);
    if (arch == "qwen2moe") u32(P + "expert_shared_feed_forward_length", spec.shared_ff);
    if (arch == "deepseek2") {
      u32(P + "expert_shared_count", spec.shared_ff / spec.expert_ff);
      f32(P + "expert_weights_scale", spec.router.value("route_scale", 1.0));
      w.set(P + "expert_weights_norm", GgufValue::boolean(normalize));
      const std::string score = spec.router.value("score", "softmax");
      if (score != "softmax" && score != "sigmoid")
        fail("{}: router score '{}' has no GGUF expert_gating_func (softmax or sigmoid only)", rsrc,
             score);
      u32(P + "expert_gating_func", score == "sigmoid" ? 2 : 1);
      const int64_t groups = spec.router.value("groups", int64_t(1));
      const int64_t used = spec.router.value("topk_groups", groups);
      if (groups > 1 && used < groups) {  // all groups used = no group limit
        if (E % groups != 0)
          fail("{}: {} experts after disabled_experts do not split into n_group = {} groups", rsrc,
               E, groups);
        u32(P + "expert_group_count", groups);
        u32(P + "expert_group_used_count", used);
      }
    }
  }
  // RoPE scaling. llama3 becomes per-frequency divisors (rope_freqs, below).
  double rope_mul = 1.0;  // DeepSeek: baked into the rope rows of q and k
  if (rc.type == "linear" || rc.type == "yarn") {
    w.set(P + "rope.scaling.type", GgufValue::str(rc.type));
    f32(P + "rope.scaling.factor", rc.factor);
  }
  if (rc.type == "yarn") u32(P + "rope.scaling.original_context_length", rc.original_max_positions);
  {
    const RopeTable table = make_rope_table(rc, rope, spec.rope_layout, cfg);
    double log_mul = 0.0;
    if (latent && rc.type == "yarn" && rc.mscale_all_dim > 0) {
      log_mul = rc.mscale_all_dim;
      f32(P + "rope.scaling.yarn_log_multiplier", 0.1 * log_mul);  // llama.cpp divides by 0.1
    }
    const LlamaRope lr = llama_rope(rc, log_mul);
    double A = table.attention_factor / lr.r;  // standard attention: match the cos/sin scale
    if (latent) {
      // Match the softmax scale with A, then the cos/sin scale through the weights.
      const double want_kq = spec.attention_scale * std::sqrt(double(Dq));
      A = std::sqrt(want_kq / lr.kq);
      rope_mul = table.attention_factor / (A * lr.r);
    }
    if (std::abs(A - 1.0) > 1e-7) f32(P + "rope.scaling.attn_factor", A);
  }
  write_vocab(w, spec, model_dir, report.notes);

  // --- Tensors.
  auto type_for = [&](const std::string& name, size_t dims) {
    const bool f32_only = dims == 1 || name.ends_with("_norm.weight") ||
                          name.find("ffn_gate_inp") != std::string::npos ||
                          !name.ends_with(".weight");
    return f32_only ? GgufTensorType::F32 : wtype;
  };
  int64_t params = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, GgufWriter::Producer p) {
    int64_t count = 1;
    for (int64_t x : shape) count *= x;
    params += count;
    const size_t dims = shape.size();
    w.add_tensor(name, std::move(shape), type_for(name, dims), std::move(p));
  };
  // A checkpoint tensor copied as it is.
  auto plain = [&](const std::string& gname, const std::string& hf, std::vector<int64_t> shape) {
    src.need(hf, shape);
    add(gname, shape, copy(&src, {hf}));
  };
  auto blk = [](int64_t l, const std::string& what) { return fmt::format("blk.{}.{}", l, what); };

  plain("token_embd.weight", n.embed, {V, d});
  plain("output_norm.weight", n.final_norm, {d});
  if (!spec.tie_embeddings) {
    plain("output.weight", n.lm_head, {V, d});
  } else {
    if (ckpt.has(n.lm_head)) src.need(n.lm_head, {V, d});  // a tied copy: the embedding serves
    if (arch == "qwen2moe" || arch == "olmoe")             // these graphs need output.weight
      add("output.weight", {V, d}, copy(&src, {n.embed}));
  }
  if (rc.type == "llama3") {
    // ggml divides each frequency by rope_freqs[i]: the ratio of plain to llama3 frequencies.
    RopeConfig plain_rope = rc;
    plain_rope.type = "default";
    const RopeTable a = make_rope_table(plain_rope, rope, spec.rope_layout, cfg);
    const RopeTable b = make_rope_table(rc, rope, spec.rope_layout, cfg);
    std::vector<float> ratio;
    for (size_t i = 0; i < a.inv_freq.size(); ++i)
      ratio.push_back(float(a.inv_freq[i] / b.inv_freq[i]));
    add("rope_freqs.weight", {rope / 2}, values(ratio));
  }

  const bool permute_qk = arch == "llama";
  int64_t moe_index = 0;
  for (int64_t l = 0; l < spec.n_layers; ++l) {
    auto t = [&](const std::string& pattern) { return tensor_name(pattern, l); };
    plain(blk(l, "attn_norm.weight"), t(n.attn_norm), {d});
    plain(blk(l, "ffn_norm.weight"), t(n.ffn_norm), {d});
    if (!latent) {
      auto qk = [&](const std::string& gname, const std::string& hf, int64_t heads,
                    std::vector<int64_t> shape) {
        src.need(hf, shape);
        add(gname, shape,
            permute_qk ? pick_rows(&src, hf, interleave_rows(heads, spec.head_dim))
                       : copy(&src, {hf}));
      };
      qk(blk(l, "attn_q.weight"), t(n.q), H, {H * Dq, d});
      qk(blk(l, "attn_k.weight"), t(n.k), Hkv, {Hkv * Dq, d});
      plain(blk(l, "attn_v.weight"), t(n.v), {Hkv * Dv, d});
      if (!n.q_bias.empty()) {
        qk(blk(l, "attn_q.bias"), t(n.q_bias), H, {H * Dq});
        qk(blk(l, "attn_k.bias"), t(n.k_bias), Hkv, {Hkv * Dq});
        plain(blk(l, "attn_v.bias"), t(n.v_bias), {Hkv * Dv});
      }
      if (spec.qk_norm != QKNorm::None) {
        const bool full = spec.qk_norm == QKNorm::Full;
        plain(blk(l, "attn_q_norm.weight"), t(n.q_norm), {full ? H * Dq : Dq});
        plain(blk(l, "attn_k_norm.weight"), t(n.k_norm), {full ? Hkv * Dq : Dq});
      }
    } else {
      // The rope rows of q and of the shared key: interleaved for ggml's "normal" RoPE and
      // scaled by rope_mul (the part of yarn's magnitude llama.cpp does not apply).
      const int64_t nope = spec.qk_nope_dim, Rkv = spec.kv_lora_rank;
      Rows q_order, kv_order;
      std::vector<float> q_scale, kv_scale;
      const Rows head_rope =
          spec.rope_layout == RopeLayout::Half ? interleave_rows(1, rope) : iota_rows(rope);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Dq; ++i) {
          q_order.push_back(h * Dq + (i < nope ? i : nope + head_rope[size_t(i - nope)]));
          q_scale.push_back(i < nope ? 1.0f : float(rope_mul));
        }
      for (int64_t i = 0; i < Rkv + rope; ++i) {
        kv_order.push_back(i < Rkv ? i : Rkv + head_rope[size_t(i - Rkv)]);
        kv_scale.push_back(i < Rkv ? 1.0f : float(rope_mul));
      }
      if (spec.q_lora_rank > 0) {
        plain(blk(l, "attn_q_a.weight"), t(n.q_a), {spec.q_lora_rank, d});
        plain(blk(l, "attn_q_a_norm.weight"), t(n.q_a_norm), {spec.q_lora_rank});
        src.need(t(n.q_b), {H * Dq, spec.q_lora_rank});
        add(blk(l, "attn_q_b.weight"), {H * Dq, spec.q_lora_rank},
            pick_rows(&src, t(n.q_b), q_order, q_scale));
      } else {
        src.need(t(n.q), {H * Dq, d});
        add(blk(l, "attn_q.weight"), {H * Dq, d}, pick_rows(&src, t(n.q), q_order, q_scale));
      }
      src.need(t(n.kv_a), {Rkv + rope, d});
      add(blk(l, "attn_kv_a_mqa.weight"), {Rkv + rope, d},
          pick_rows(&src, t(n.kv_a), kv_order, kv_scale));
      plain(blk(l, "attn_kv_a_norm.weight"), t(n.kv_a_norm), {Rkv});
      // kv_b (H (nope + v), Rkv) -> k_b (H, Rkv, nope), each head's nope rows transposed, and
      // v_b (H, v, Rkv), each head's value rows.
      const std::string kvb = t(n.kv_b);
      src.need(kvb, {H * (nope + Dv), Rkv});
      add(blk(l, "attn_k_b.weight"), {H, Rkv, nope},
          [&src, kvb, H, nope, Dv, Rkv](GgufTensorSink& s) {
            std::vector<float> block(static_cast<size_t>(nope * Rkv)), out(block.size());
            for (int64_t h = 0; h < H; ++h) {
              src.rows(kvb, h * (nope + Dv), nope, block.data());
              for (int64_t i = 0; i < nope; ++i)
                for (int64_t j = 0; j < Rkv; ++j)
                  out[size_t(j * nope + i)] = block[size_t(i * Rkv + j)];
              s.write(out);
            }
          });
      Rows v_rows;
      for (int64_t h = 0; h < H; ++h)
        for (int64_t i = 0; i < Dv; ++i) v_rows.push_back(h * (nope + Dv) + nope + i);
      add(blk(l, "attn_v_b.weight"), {H, Dv, Rkv}, pick_rows(&src, kvb, v_rows));
    }
    plain(blk(l, "attn_output.weight"), t(n.o), {d, H * Dv});

    if (!spec.moe_layer[size_t(l)]) {
      plain(blk(l, "ffn_gate.weight"), t(n.dense_w1), {spec.dense_ff, d});
      plain(blk(l, "ffn_up.weight"), t(n.dense_w3), {spec.dense_ff, d});
      plain(blk(l, "ffn_down.weight"), t(n.dense_w2), {d, spec.dense_ff});
      continue;
    }
    const LayerRouting& r = routing[size_t(moe_index)];
    const Rows& keep = kept[size_t(moe_index)];
    ++moe_index;
    const int64_t F = spec.expert_ff;
    src.need(t(n.router), {spec.experts, d});
    add(blk(l, "ffn_gate_inp.weight"), {E, d}, pick_rows(&src, t(n.router), keep));
    if (!n.router_bias.empty()) {  // DeepSeek: e_score_correction_bias (+ an override's bias)
      src.need(t(n.router_bias), {spec.experts});
      add(blk(l, "exp_probs_b.bias"), {E},
          pick_values(&src, t(n.router_bias), keep, r.selection_bias));
    }
    std::vector<std::string> w1, w3, w2;
    for (int64_t e = 0; e < spec.experts; ++e) {
      const std::string a = tensor_name(n.expert_w1, l, e), b = tensor_name(n.expert_w3, l, e),
                        c = tensor_name(n.expert_w2, l, e);
      src.need(a, {F, d});
      src.need(b, {F, d});
      src.need(c, {d, F});
      if (!std::binary_search(keep.begin(), keep.end(), e)) continue;  // pruned
      w1.push_back(a);
      w3.push_back(b);
      w2.push_back(c);
    }
    add(blk(l, "ffn_gate_exps.weight"), {E, F, d}, copy(&src, w1));
    add(blk(l, "ffn_up_exps.weight"), {E, F, d}, copy(&src, w3));
    add(blk(l, "ffn_down_exps.weight"), {E, d, F}, copy(&src, w2));
    if (spec.shared_ff > 0) {
      const int64_t Fs = spec.shared_ff;
      plain(blk(l, "ffn_gate_shexp.weight"), t(n.shared_w1), {Fs, d});
      plain(blk(l, "ffn_up_shexp.weight"), t(n.shared_w3), {Fs, d});
      plain(blk(l, "ffn_down_shexp.weight"), t(n.shared_w2), {d, Fs});
      if (!n.shared_gate.empty()) {  // (1, d) in HF, (d) in llama.cpp
        src.need(t(n.shared_gate), {1, d});
        add(blk(l, "ffn_gate_inp_shexp.weight"), {d}, copy(&src, {t(n.shared_gate)}));
      }
    }
    if (!r.disabled.empty()) {
      std::vector<uint32_t> ids(keep.begin(), keep.end());
      w.set(fmt::format("switchyard.blk.{}.expert_ids", l), GgufValue::u32_array(ids));
    }
  }

  std::vector<std::string> extra;
  for (const std::string& name : ckpt.unread())
    if (name.find("rotary_emb.inv_freq") == std::string::npos) extra.push_back(name);
  if (!extra.empty())
    fail("{}: tensor '{}' (in {}) is not a weight of {}{}", model_dir, extra[0],
         ckpt.file_of(extra[0]), spec.architecture,
         extra.size() > 1 ? fmt::format(" ({} more unexpected tensors)", extra.size() - 1) : "");

  w.set("switchyard.source_architecture", GgufValue::str(spec.architecture));
  w.set("switchyard.parameter_count", GgufValue::u64(uint64_t(params)));
  if (!options.routing.is_null())
    w.set("switchyard.routing", GgufValue::str(options.routing.dump()));
  w.write(out_path);
  report.tensors = w.tensor_count();
  report.bytes = std::filesystem::file_size(out_path);
  return report;
}

}  // namespace switchyard::infer
