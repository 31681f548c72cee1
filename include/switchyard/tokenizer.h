// A Hugging Face tokenizer.json tokenizer (encode and decode) for the BPE families: byte-level BPE
// (GPT-2, Qwen2/Qwen3, DeepSeek-V3, OLMoE) and SentencePiece-style BPE with byte fallback (Llama
// 2, Mistral, Mixtral). Semantics follow the Rust `tokenizers` library; tests compare it id for id
// with tokenizers.js (tests/text/test_tokenizer.cpp).
//
// Supported: model BPE (vocab, merges as "a b" or ["a", "b"], byte_fallback, unk_token,
// fuse_unk, ignore_merges); added_tokens (special, normalized, lstrip, rstrip, single_word);
// normalizers NFC, NFD, NFKC, NFKD, Prepend, Replace, Sequence; pre-tokenizers ByteLevel, Split
// (Oniguruma patterns run with PCRE2), Digits, Metaspace, Sequence; post-processors
// TemplateProcessing, ByteLevel, Sequence; decoders ByteLevel, Metaspace, Replace, ByteFallback,
// Fuse, Strip, Sequence. Anything else fails to load. "truncation" and "padding" are ignored:
// they shape batches, not the ids of one text.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace switchyard::text {

// Immutable after loading; copies share the tables. Every method is safe to call from many
// threads at once.
class Tokenizer {
 public:
  // Reads tokenizer.json; fails (switchyard::Error naming file, field and value) on a missing or
  // malformed file and on anything unsupported.
  static Tokenizer load(const std::string& path);
  // The same from the text of a tokenizer.json; `origin` names it in errors.
  static Tokenizer parse(std::string_view json_text, const std::string& origin);

  // Fails on text that is not valid UTF-8. add_special_tokens applies the post-processor's
  // template (Llama's BOS); added tokens in the text are always recognised.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  // Fails on an id that names no token. skip_special_tokens leaves out special added tokens.
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::optional<std::string> id_to_token(int32_t id) const;
  // One more than the largest id (vocabulary and added tokens).
  int32_t vocab_size() const;

 private:
  struct Impl;
  explicit Tokenizer(std::shared_ptr<const Impl> impl);
  std::shared_ptr<const Impl> impl_;
};

}  // namespace switchyard::text
