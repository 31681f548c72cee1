#include "switchyard/tokenizer.h"

#include <switchyard/error.h>
#include <switchyard/file_util.h>

#include "text/tokenizer_added_tokens.h"
#include "text/tokenizer_bpe.h"
#include "text/tokenizer_decoder.h"
#include "text/tokenizer_json_field.h"
#include "text/tokenizer_normalizer.h"
#include "text/tokenizer_post_processor.h"
#include "text/tokenizer_pre_tokenizer.h"
#include "text/tokenizer_utf8.h"

namespace switchyard::text {

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;

  StringMap<int32_t> added_ids;          // content -> id
  AddedTokenMatcher raw_matcher;         // tokens matched before normalization
  AddedTokenMatcher normalized_matcher;  // tokens matched in normalized text

  // id -> token over the vocabulary and the added tokens.
  enum class Kind : uint8_t { kNone, kModel, kAdded, kSpecial };
  std::vector<std::string> tokens;
  std::vector<Kind> kinds;

  Impl(const nlohmann::json& root, const std::string& origin);
  // False when `id` already names another token.
  bool add_id(int32_t id, const std::string& token, Kind kind);
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const;
  void encode_plain(std::string_view text, bool at_start, std::vector<int32_t>& ids) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens) const;
};

bool Tokenizer::Impl::add_id(int32_t id, const std::string& token, Kind kind) {
  if (static_cast<size_t>(id) >= tokens.size()) {
    tokens.resize(static_cast<size_t>(id) + 1);
    kinds.resize(static_cast<size_t>(id) + 1, Kind::kNone);
  }
  if (kinds[id] != Kind::kNone && !(kinds[id] == Kind::kModel && tokens[id] == token)) {
    return false;
  }
  tokens[id] = token;
  kinds[id] = kind;
  return true;
}

Tokenizer::Impl::Impl(const nlohmann::json& json, const std::string& origin) {
  if (!json.is_object()) fail("{}: the top level must be a JSON object", origin);
  const Field root(json, "", origin);
  const Field model_field = root.at("model");
  model = std::make_unique<BpeModel>(model_field);
  for (const auto& [token, id] : model->vocab()) {
    if (!add_id(id, token, Kind::kModel)) {
      const Field vocab = model_field.at("vocab");
      vocab.member(token, vocab.object().at(token))
          .fail(fmt::format("is {}, the id of \"{}\" too", id, tokens[id]));
    }
  }

  if (const auto field = root.find("normalizer")) normalizer = parse_normalizer(*field);
  if (const auto field = root.find("pre_tokenizer")) pre_tokenizer = parse_pre_tokenizer(*field);
  if (const auto field = root.find("decoder")) decoder = parse_decoder(*field);

  if (const auto list = root.find("added_tokens")) {
    for (size_t i = 0; i < list->array().size(); ++i) {
      const Field entry = list->at(i);
      AddedToken token;
      token.id = entry.at("id").id();
      token.content = entry.at("content").string();
      if (token.content.empty()) entry.at("content").fail("is empty");
      token.special = entry.boolean_or("special", false);
      token.single_word = entry.boolean_or("single_word", false);
      token.lstrip = entry.boolean_or("lstrip", false);
      token.rstrip = entry.boolean_or("rstrip", false);
      token.normalized = entry.boolean_or("normalized", !token.special);
      if (const auto model_id = model->find(token.content); model_id && *model_id != token.id) {
        entry.at("id").fail(fmt::format("is {}, but model.vocab gives \"{}\" id {}", token.id,
                                        token.content, *model_id));
      }
      if (!added_ids.emplace(token.content, token.id).second) {
        entry.at("content").fail(fmt::format("repeats \"{}\"", token.content));
      }
      if (!add_id(token.id, token.content, token.special ? Kind::kSpecial : Kind::kAdded)) {
        entry.at("id").fail(
            fmt::format("is {}, which already names \"{}\"", token.id, tokens[token.id]));
      }
      if (token.normalized && normalizer) {
        const std::string pattern = normalizer->normalize(token.content);
        if (!pattern.empty()) normalized_matcher.add(pattern, token);
      } else {
        (token.normalized ? normalized_matcher : raw_matcher).add(token.content, token);
      }
    }
  }

  if (const auto field = root.find("post_processor")) {
    post_processor = parse_post_processor(*field, [this](int32_t id) {
      return static_cast<size_t>(id) < kinds.size() && kinds[id] != Kind::kNone;
    });
  }
}

void Tokenizer::Impl::encode_plain(std::string_view text, bool at_start,
                                   std::vector<int32_t>& ids) const {
  std::vector<Piece> pieces{{std::string(text), at_start}};
  if (pre_tokenizer) pre_tokenizer->pre_tokenize(pieces);
  for (const Piece& piece : pieces) model->encode(piece.text, ids);
}

std::vector<int32_t> Tokenizer::Impl::encode(std::string_view text, bool add_special_tokens) const {
  if (const size_t bad = utf8::find_invalid(text); bad != std::string_view::npos) {
    fail("encode: the text is not valid UTF-8 (byte 0x{:02X} at offset {})",
         static_cast<unsigned char>(text[bad]), bad);
  }
  std::vector<int32_t> ids;
  for (const TextSegment& raw : raw_matcher.split(text)) {
    if (raw.token >= 0) {
      ids.push_back(raw.token);
      continue;
    }
    std::string normalized(text.substr(raw.begin, raw.end - raw.begin));
    if (normalizer) normalized = normalizer->normalize(std::move(normalized));
    for (const TextSegment& part : normalized_matcher.split(normalized)) {
      if (part.token >= 0) {
        ids.push_back(part.token);
      } else {
        encode_plain(std::string_view(normalized).substr(part.begin, part.end - part.begin),
                     raw.begin == 0 && part.begin == 0, ids);
      }
    }
  }
  if (post_processor) post_processor->process(ids, add_special_tokens);
  return ids;
}

std::string Tokenizer::Impl::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= kinds.size() || kinds[id] == Kind::kNone) {
      fail("decode: id {} names no token (the vocabulary has ids 0..{})", id,
           static_cast<int64_t>(kinds.size()) - 1);
    }
    if (skip_special_tokens && kinds[id] == Kind::kSpecial) continue;
    pieces.push_back(tokens[id]);
  }
  std::string out;
  if (decoder) {
    decoder->decode_chain(pieces);
    for (const std::string& piece : pieces) out += piece;
  } else {
    for (size_t i = 0; i < pieces.size(); ++i) out += (i == 0 ? "" : " ") + pieces[i];
  }
  return out;
}

Tokenizer::Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}

Tokenizer Tokenizer::load(const std::string& path) {
  return parse(read_file_text(path), path);
}

Tokenizer Tokenizer::parse(std::string_view json_text, const std::string& origin) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: not valid JSON: {}", origin, e.what());
  }
  return Tokenizer(std::make_shared<const Impl>(json, origin));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  return impl_->encode(text, add_special_tokens);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  return impl_->decode(ids, skip_special_tokens);
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const auto it = impl_->added_ids.find(token); it != impl_->added_ids.end()) {
    return it->second;
  }
  return impl_->model->find(token);
}

std::optional<std::string> Tokenizer::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->kinds.size() ||
      impl_->kinds[id] == Impl::Kind::kNone) {
    return std::nullopt;
  }
  return impl_->tokens[id];
}

int32_t Tokenizer::vocab_size() const {
  return static_cast<int32_t>(impl_->kinds.size());
}

}  // namespace switchyard::text
