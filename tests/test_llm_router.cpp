// Prompt routers (issue 4): the n-gram TF-IDF and embedding featurizers, the quality models against
// float64 references (kNN brute force) or learnable synthetic tasks (logistic, mf), save/load and
// corrupted router folders (ASan-clean), the decision rules, batch routing under capacity against
// brute force, the evaluation maths on hand cases and a synthetic table, multi-file data, and the
// real RouteLLM / LLMRouter data in ../shared/data/llm-routing (skipped loudly when absent).
//
// Random inputs come from SWITCHYARD_TEST_SEED when set, else a fresh seed printed on failure.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/llm_data.h>
#include <switchyard/llm_eval.h>
#include <switchyard/llm_router.h>
#include <switchyard/safetensors.h>
#include <switchyard/text_features.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <typeinfo>
#include <vector>

#include "reference_test_support.h"
#include "scratch_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;
using switchyard::CostModel;
using switchyard::CurvePoint;
using switchyard::EmbeddingFeaturizer;
using switchyard::Error;
using switchyard::EvalConfig;
using switchyard::EvalResult;
using switchyard::FeaturizerConfig;
using switchyard::NgramFeaturizer;
using switchyard::PromptRouter;
using switchyard::RouterEval;
using switchyard::RouterSpec;
using switchyard::RoutingTable;
using switchyard::SparseVector;
using switchyard::testing_support::llm_routing_data_dir;
using switchyard::testing_support::ScratchDir;
using switchyard::testing_support::seed_trace;
using switchyard::testing_support::test_rng;
using testing::HasSubstr;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The message of the switchyard::Error that `body` throws. Any other exception type is a test
// failure (the CLI would report it as an internal error); no exception gives "<no error>".
template <typename Body>
std::string error_of(Body&& body) {
  try {
    body();
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw " << typeid(e).name() << " instead of switchyard::Error: " << e.what();
    return std::string("<not a switchyard::Error> ") + e.what();
  }
  return "<no error>";
}

// ---- random prompts ----

const std::vector<std::string>& vocabulary() {
  static const std::vector<std::string> words = {
      "apple",  "river", "stone", "cloud", "seven", "blue",  "quick", "lamp",
      "forest", "echo",  "iron",  "maple", "delta", "orbit", "pixel", "quartz",
      "x",      "42",    "b7",    "tree",  "salt",  "wind",  "glass", "north"};
  return words;
}

// Words from `words` with random case and separators (spaces, punctuation, newlines).
std::string random_prompt(std::mt19937_64& rng, int min_words, int max_words,
                          const std::vector<std::string>& words = vocabulary()) {
  static const std::vector<std::string> separators = {" ", " ", ", ", "! ", "  ", "\n", "?", "-"};
  const int count = std::uniform_int_distribution<int>(min_words, max_words)(rng);
  std::string out;
  for (int w = 0; w < count; ++w) {
    if (w > 0) out += separators[rng() % separators.size()];
    std::string word = words[rng() % words.size()];
    if (rng() % 4 == 0) word[0] = char(std::toupper(static_cast<unsigned char>(word[0])));
    out += word;
  }
  return out;
}

// ---- float64 references for the featurizer ----

// Words: maximal runs of ASCII letters and digits (the prompts here are ASCII).
std::vector<std::string> reference_words(std::string_view prompt, bool lowercase) {
  std::vector<std::string> words;
  std::string current;
  for (char ch : prompt) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u)) {
      current += lowercase ? char(std::tolower(u)) : ch;
    } else if (!current.empty()) {
      words.push_back(current);
      current.clear();
    }
  }
  if (!current.empty()) words.push_back(current);
  return words;
}

// Every n-gram of the configuration with its count, keyed by kind and text.
std::map<std::string, int> reference_ngrams(std::string_view prompt, const FeaturizerConfig& c) {
  const std::vector<std::string> words = reference_words(prompt, c.lowercase);
  std::map<std::string, int> grams;
  if (c.word_min > 0) {
    for (int n = c.word_min; n <= c.word_max; ++n) {
      for (size_t w = 0; w + size_t(n) <= words.size(); ++w) {
        std::string g = "w:" + words[w];
        for (int k = 1; k < n; ++k) g += " " + words[w + size_t(k)];
        ++grams[g];
      }
    }
  }
  if (c.char_min > 0) {
    for (const std::string& word : words) {
      const std::string padded = " " + word + " ";
      for (int n = c.char_min; n <= c.char_max; ++n)
        for (size_t s = 0; s + size_t(n) <= padded.size(); ++s)
          ++grams["c" + std::to_string(n) + ":" + padded.substr(s, size_t(n))];
    }
  }
  return grams;
}

double l2_norm(const SparseVector& v) {
  double s = 0.0;
  for (float x : v.value) s += double(x) * x;
  return std::sqrt(s);
}

void expect_valid_sparse(const SparseVector& v) {
  ASSERT_EQ(v.index.size(), v.value.size());
  for (size_t k = 1; k < v.nnz(); ++k) EXPECT_LT(v.index[k - 1], v.index[k]) << "position " << k;
  if (v.nnz() > 0) {
    EXPECT_NEAR(l2_norm(v), 1.0, 1e-5);
  }
}

FeaturizerConfig word_config(int lo, int hi) {
  FeaturizerConfig c;
  c.word_min = lo;
  c.word_max = hi;
  c.char_min = c.char_max = 0;
  return c;
}

// Sorted multiset of the counts.
std::vector<double> sorted_values(const SparseVector& v) {
  std::vector<double> out(v.value.begin(), v.value.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

// ================================ n-gram featurizer ================================

TEST(NgramFeaturizer, CountsOfARepeatedWordHandDerived) {
  const NgramFeaturizer unigrams(word_config(1, 1));
  const SparseVector a = unigrams.counts("a b a");
  EXPECT_EQ(sorted_values(a), (std::vector<double>{1.0, 2.0}));
  // Which index holds which count: "a" alone names its own feature.
  const uint32_t index_a = unigrams.counts("a").index.at(0);
  const uint32_t index_b = unigrams.counts("b").index.at(0);
  ASSERT_NE(index_a, index_b);
  for (size_t k = 0; k < a.nnz(); ++k)
    EXPECT_EQ(a.value[k], a.index[k] == index_a ? 2.0f : 1.0f) << "index " << a.index[k];

  // [1, 2] adds the bigrams "a b" and "b a" (one each): counts 2, 1, 1, 1.
  const NgramFeaturizer bigrams(word_config(1, 2));
  EXPECT_EQ(sorted_values(bigrams.counts("a b a")), (std::vector<double>{1.0, 1.0, 1.0, 2.0}));
  // [2, 2]: bigrams only; their indices are those of the bigram prompts alone.
  const NgramFeaturizer only_bigrams(word_config(2, 2));
  const SparseVector ab_ba = only_bigrams.counts("a b a");
  std::set<uint32_t> expected = {only_bigrams.counts("a b").index.at(0),
                                 only_bigrams.counts("b a").index.at(0)};
  EXPECT_EQ(std::set<uint32_t>(ab_ba.index.begin(), ab_ba.index.end()), expected);
  EXPECT_EQ(only_bigrams.counts("single").nnz(), 0u);  // one word has no bigram
}

TEST(NgramFeaturizer, WordsAreRunsOfLettersAndDigitsAndLowercaseIsOptional) {
  const NgramFeaturizer f(word_config(1, 2));
  const SparseVector plain = f.counts("alpha beta 42");
  EXPECT_EQ(f.counts("  Alpha,beta!!42\n").index, plain.index);
  EXPECT_EQ(f.counts("  Alpha,beta!!42\n").value, plain.value);
  EXPECT_EQ(f.counts("ALPHA BETA 42").index, plain.index);
  // UTF-8 bytes belong to words: "café" is one word, not "caf".
  EXPECT_EQ(f.counts("caf\xC3\xA9").nnz(), 1u);
  EXPECT_NE(f.counts("caf\xC3\xA9").index, f.counts("caf").index);

  FeaturizerConfig cased = word_config(1, 1);
  cased.lowercase = false;
  const NgramFeaturizer g(cased);
  EXPECT_NE(g.counts("Alpha").index, g.counts("alpha").index);
  EXPECT_EQ(g.counts("alpha").index, f.counts("Alpha").index);  // same hash for the same bytes
}

TEST(NgramFeaturizer, NoWordsGivesAnEmptyVector) {
  FeaturizerConfig c = word_config(1, 2);
  c.char_min = 2;
  c.char_max = 4;
  NgramFeaturizer f(c);
  f.fit({"some words", "more words here"});
  for (const char* prompt : {"", " ", "?!, ...\n\t", "--"}) {
    EXPECT_EQ(f.counts(prompt).nnz(), 0u) << '"' << prompt << '"';
    EXPECT_EQ(f.featurize(prompt).nnz(), 0u) << '"' << prompt << '"';
  }
}

TEST(NgramFeaturizer, CharNgramsStayInsidePaddedWords) {
  FeaturizerConfig c;
  c.word_min = c.word_max = 0;
  c.char_min = 2;
  c.char_max = 3;
  const NgramFeaturizer f(c);
  // " ab ": 2-grams " a", "ab", "b "; 3-grams " ab", "ab ": five distinct.
  const SparseVector ab = f.counts("ab");
  EXPECT_EQ(sorted_values(ab), std::vector<double>(5, 1.0));
  EXPECT_EQ(sorted_values(f.counts("ab ab")), std::vector<double>(5, 2.0));
  // No gram crosses a word boundary: "ab cd" is exactly the sum of "ab" and "cd".
  const SparseVector cd = f.counts("cd");
  const SparseVector both = f.counts("ab, cd");
  std::map<uint32_t, float> sum;
  for (const SparseVector* v : {&ab, &cd})
    for (size_t k = 0; k < v->nnz(); ++k) sum[v->index[k]] += v->value[k];
  std::map<uint32_t, float> got;
  for (size_t k = 0; k < both.nnz(); ++k) got[both.index[k]] = both.value[k];
  EXPECT_EQ(got, sum);
  // Grams longer than the padded word are skipped: " a " has 3 + 2 + 1 grams of lengths 1-3,
  // five distinct (" " twice).
  c.char_min = 1;
  c.char_max = 8;
  EXPECT_EQ(sorted_values(NgramFeaturizer(c).counts("a")).size(), 5u);
  double total = 0.0;
  for (float x : NgramFeaturizer(c).counts("a").value) total += x;
  EXPECT_EQ(total, 6.0);  // the space 1-gram counts twice
}

// counts() against the reference n-gram multiset on random prompts and configurations. Hashing
// may merge two n-grams (rarely, at 2^20 buckets), so the exact multiset is required of most
// prompts and the total count of all.
TEST(NgramFeaturizer, CountsMatchAReferenceOnRandomPrompts) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  const std::vector<std::array<int, 4>> configs = {{1, 1, 0, 0}, {1, 2, 0, 0}, {2, 3, 0, 0},
                                                   {1, 2, 2, 4}, {0, 0, 1, 3}, {1, 3, 3, 5}};
  int exact = 0, total_prompts = 0;
  for (const auto& [wlo, whi, clo, chi] : configs) {
    FeaturizerConfig c;
    c.word_min = wlo, c.word_max = whi, c.char_min = clo, c.char_max = chi;
    c.lowercase = rng() % 2 == 0;
    const NgramFeaturizer f(c);
    for (int i = 0; i < 60; ++i) {
      const std::string prompt = random_prompt(rng, 0, 9);
      SCOPED_TRACE(fmt::format("config [{},{}] [{},{}] lowercase {}, prompt \"{}\"", wlo, whi, clo,
                               chi, c.lowercase, prompt));
      const SparseVector v = f.counts(prompt);
      ASSERT_EQ(v.index.size(), v.value.size());
      for (size_t k = 1; k < v.nnz(); ++k) ASSERT_LT(v.index[k - 1], v.index[k]);
      for (uint32_t index : v.index) EXPECT_LT(index, f.dimension());
      const auto grams = reference_ngrams(prompt, c);
      double want_total = 0.0, got_total = 0.0;
      std::vector<double> want;
      for (const auto& [gram, n] : grams) want_total += n, want.push_back(n);
      for (float x : v.value) got_total += x;
      EXPECT_EQ(got_total, want_total);
      EXPECT_LE(v.nnz(), grams.size());
      std::sort(want.begin(), want.end());
      exact += sorted_values(v) == want;
      ++total_prompts;
    }
  }
  EXPECT_GE(exact, total_prompts * 95 / 100) << exact << " of " << total_prompts;
}

// featurize() = L2-normalised tf·idf with idf = ln((1 + n) / (1 + df)) + 1, recomputed here from
// counts() in float64 on random corpora (df counts documents, unseen features have df = 0).
TEST(NgramFeaturizer, TfIdfMatchesAFloat64Reference) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  for (int trial = 0; trial < 12; ++trial) {
    FeaturizerConfig c;
    c.word_min = 1;
    c.word_max = 1 + int(rng() % 3);
    c.char_min = trial % 3 == 0 ? 2 : 0;
    c.char_max = trial % 3 == 0 ? 4 : 0;
    c.sublinear_tf = trial % 2 == 0;
    c.lowercase = trial % 4 < 2;
    c.hash_bits = 12 + int(rng() % 9);
    const size_t n = 1 + rng() % 15;
    std::vector<std::string> corpus;
    for (size_t i = 0; i < n; ++i) corpus.push_back(random_prompt(rng, 0, 8));
    NgramFeaturizer f(c);
    f.fit(corpus);
    std::map<uint32_t, int> df;
    for (const auto& p : corpus)
      for (uint32_t index : f.counts(p).index) ++df[index];
    std::vector<std::string> queries = corpus;
    for (int q = 0; q < 10; ++q) queries.push_back(random_prompt(rng, 0, 12));
    for (const auto& p : queries) {
      SCOPED_TRACE(fmt::format("trial {}, n = {}, sublinear {}, prompt \"{}\"", trial, n,
                               c.sublinear_tf, p));
      const SparseVector counts = f.counts(p);
      std::vector<double> want(counts.nnz());
      double norm2 = 0.0;
      for (size_t k = 0; k < counts.nnz(); ++k) {
        const double tf =
            c.sublinear_tf ? 1.0 + std::log(double(counts.value[k])) : counts.value[k];
        const double idf = std::log((1.0 + double(n)) / (1.0 + df[counts.index[k]])) + 1.0;
        want[k] = tf * idf;
        norm2 += want[k] * want[k];
      }
      const SparseVector v = f.featurize(p);
      expect_valid_sparse(v);
      ASSERT_EQ(v.index, counts.index);
      for (size_t k = 0; k < v.nnz(); ++k)
        EXPECT_NEAR(v.value[k], want[k] / std::sqrt(norm2), 2e-6) << "feature " << v.index[k];
    }
  }
}

TEST(NgramFeaturizer, SmoothIdfHandDerived) {
  NgramFeaturizer f(word_config(1, 1));
  f.fit({"a b", "a c", "a"});  // n = 3: df(a) = 3, df(b) = df(c) = 1, df(z) = 0
  const uint32_t a = f.counts("a").index.at(0), b = f.counts("b").index.at(0),
                 z = f.counts("z").index.at(0);
  auto value_of = [](const SparseVector& v, uint32_t index) {
    for (size_t k = 0; k < v.nnz(); ++k)
      if (v.index[k] == index) return double(v.value[k]);
    return kNaN;
  };
  // idf(a) = ln(4/4) + 1 = 1, idf(b) = ln(4/2) + 1, idf(z) = ln(4/1) + 1.
  const double ib = std::log(2.0) + 1.0, iz = std::log(4.0) + 1.0;
  const SparseVector ab = f.featurize("a b");
  EXPECT_NEAR(value_of(ab, a), 1.0 / std::hypot(1.0, ib), 1e-6);
  EXPECT_NEAR(value_of(ab, b), ib / std::hypot(1.0, ib), 1e-6);
  // Sublinear tf: "a a b" has tf(a) = 1 + ln 2 = idf(b), so both weights are equal.
  const SparseVector aab = f.featurize("a a b");
  EXPECT_NEAR(value_of(aab, a), std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(value_of(aab, b), std::sqrt(0.5), 1e-6);
  // An unseen word gets the largest idf.
  const SparseVector za = f.featurize("z a");
  EXPECT_NEAR(value_of(za, z), iz / std::hypot(1.0, iz), 1e-6);
  // Raw tf: "a a" -> weight 2 on a alone, normalised to 1.
  FeaturizerConfig raw = word_config(1, 1);
  raw.sublinear_tf = false;
  NgramFeaturizer g(raw);
  g.fit({"a b", "a c", "a"});
  const SparseVector aab_raw = g.featurize("a a b");
  EXPECT_NEAR(value_of(aab_raw, a), 2.0 / std::hypot(2.0, ib), 1e-6);
}

TEST(NgramFeaturizer, DeterministicAndRejectsFeaturizeBeforeFit) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::vector<std::string> corpus;
  for (int i = 0; i < 25; ++i) corpus.push_back(random_prompt(rng, 1, 8));
  FeaturizerConfig c;
  c.char_min = 2;
  c.char_max = 3;
  NgramFeaturizer f(c), g(c);
  f.fit(corpus);
  g.fit(corpus);
  for (int i = 0; i < 25; ++i) {
    const std::string p = random_prompt(rng, 0, 10);
    const SparseVector a = f.featurize(p), b = g.featurize(p);
    EXPECT_EQ(a.index, b.index);
    EXPECT_EQ(a.value, b.value);
    expect_valid_sparse(a);
  }
  NgramFeaturizer unfitted(c);
  EXPECT_THAT(error_of([&] { unfitted.featurize("x"); }), HasSubstr("before fit"));
}

TEST(NgramFeaturizer, ConfigValidationNamesTheField) {
  auto message = [](const json& j) {
    return error_of([&] { FeaturizerConfig::from_json(j, "ctx.features"); });
  };
  EXPECT_THAT(message({{"word_ngrams", {2, 1}}}), HasSubstr("word_ngrams"));
  EXPECT_THAT(message({{"word_ngrams", {0, 3}}}), HasSubstr("word_ngrams"));
  EXPECT_THAT(message({{"word_ngrams", {1, 9}}}), HasSubstr("word_ngrams"));
  EXPECT_THAT(message({{"word_ngrams", {1}}}), HasSubstr("word_ngrams"));
  EXPECT_THAT(message({{"word_ngrams", "1-2"}}), HasSubstr("word_ngrams"));
  EXPECT_THAT(message({{"word_ngrams", {1.5, 2}}}), HasSubstr("word_ngrams"));
  EXPECT_THAT(message({{"char_ngrams", {-1, 2}}}), HasSubstr("char_ngrams"));
  EXPECT_THAT(message({{"hash_bits", 7}}), HasSubstr("hash_bits"));
  EXPECT_THAT(message({{"hash_bits", 25}}), HasSubstr("hash_bits"));
  EXPECT_THAT(message({{"lowercase", "yes"}}), HasSubstr("lowercase"));
  EXPECT_THAT(message({{"wordngrams", {1, 2}}}), HasSubstr("unknown field 'wordngrams'"));
  EXPECT_THAT(message({{"word_ngrams", {0, 0}}, {"char_ngrams", {0, 0}}}),
              HasSubstr("no features"));
  EXPECT_THAT(message(json::array({1, 2})), HasSubstr("ctx.features"));
  EXPECT_THAT(message({{"hash_bits", 7}}), HasSubstr("ctx.features"));
  // A valid configuration survives to_json / from_json.
  FeaturizerConfig c;
  c.word_min = 2, c.word_max = 3, c.char_min = 1, c.char_max = 5, c.hash_bits = 9;
  c.lowercase = false, c.sublinear_tf = false;
  const FeaturizerConfig back = FeaturizerConfig::from_json(c.to_json(), "round trip");
  EXPECT_EQ(back.to_json(), c.to_json());
  EXPECT_EQ(back.hash_bits, 9);
}

// ================================ embedding featurizer ================================

TEST(EmbeddingFeaturizer, ReadsNormalisesAndLooksUpByExactPrompt) {
  ScratchDir dir;
  const std::string file =
      dir.write("e.jsonl",
                "{\"prompt\": \"first\", \"embedding\": [3, 0, -4]}\n"
                "\n"
                "{\"embedding\": [0.5, 0.5, 0.5], \"prompt\": \"Second one\"}\r\n"
                "{\"prompt\": \"\", \"embedding\": [0, 2e-3, 0]}\n");
  const auto f = EmbeddingFeaturizer::read(file);
  EXPECT_EQ(f->kind(), "embedding");
  EXPECT_EQ(f->dimension(), 3u);
  EXPECT_TRUE(f->contains("Second one"));
  EXPECT_FALSE(f->contains("second one"));
  const SparseVector a = f->featurize("first");
  EXPECT_EQ(a.index, (std::vector<uint32_t>{0, 1, 2}));
  EXPECT_NEAR(a.value[0], 0.6, 1e-7);
  EXPECT_NEAR(a.value[1], 0.0, 1e-7);
  EXPECT_NEAR(a.value[2], -0.8, 1e-7);
  expect_valid_sparse(f->featurize("Second one"));
  EXPECT_NEAR(f->featurize("").value.at(1), 1.0, 1e-7);  // the empty prompt is a prompt too
  EXPECT_THAT(error_of([&] { f->featurize("unknown prompt"); }),
              testing::AllOf(HasSubstr(file), HasSubstr("unknown prompt")));
}

TEST(EmbeddingFeaturizer, CorruptedFilesNameFileAndLine) {
  ScratchDir dir;
  const std::string good = "{\"prompt\": \"a\", \"embedding\": [1, 2]}\n";
  struct Case {
    const char* name;
    std::string text;
    std::string where;  // ":line" or "" for whole-file errors
    std::string says;
  };
  const std::vector<Case> cases = {
      {"bad JSON", good + "{not json\n", ":2", "json"},
      {"wrong dimension",
       good + "{\"prompt\": \"b\", \"embedding\": [1, 2]}\n" +
           "{\"prompt\": \"c\", \"embedding\": [1, 2, 3]}\n",
       ":3", "3 values"},
      // The JSON parser itself rejects a number beyond double range, naming the number.
      {"infinite value", "{\"prompt\": \"a\", \"embedding\": [1, 1e999]}\n", ":1", "1e999"},
      {"string value", good + "{\"prompt\": \"b\", \"embedding\": [\"x\", 1]}\n", ":2",
       "embedding[0]"},
      {"null value", "{\"prompt\": \"a\", \"embedding\": [null, 1]}\n", ":1", "embedding[0]"},
      {"missing embedding", good + good.substr(0, 14) + "}\n", ":2", "embedding"},
      {"missing prompt", "{\"embedding\": [1, 2]}\n", ":1", "prompt"},
      {"prompt not a string", "{\"prompt\": 7, \"embedding\": [1, 2]}\n", ":1", "prompt"},
      {"extra key", "{\"prompt\": \"a\", \"embedding\": [1], \"id\": 3}\n", ":1", "unknown key"},
      {"duplicate prompt", good + "\n" + good, ":3", "repeats"},
      {"all zeros", "{\"prompt\": \"a\", \"embedding\": [0, 0]}\n", ":1", "zeros"},
      {"empty embedding", "{\"prompt\": \"a\", \"embedding\": []}\n", ":1", "empty"},
      {"not an object", "[1, 2]\n", ":1", "prompt"},
      {"empty file", "", "", "no embeddings"},
      {"blank lines only", "\n  \n\t\n", "", "no embeddings"},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const std::string file = dir.write(fmt::format("case{}.jsonl", i), cases[i].text);
    const std::string message = error_of([&] { EmbeddingFeaturizer::read(file); });
    EXPECT_THAT(message, HasSubstr(file + cases[i].where));
    std::string lower = message;
    for (char& ch : lower) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    EXPECT_THAT(lower, HasSubstr(cases[i].says)) << message;
  }
  const std::string missing = dir.path("nope.jsonl");
  EXPECT_THAT(error_of([&] { EmbeddingFeaturizer::read(missing); }), HasSubstr(missing));
}

// A value finite as a double but beyond float range (3e38) must not turn into Inf/NaN features:
// either the file is rejected naming the line, or the features are finite.
TEST(EmbeddingFeaturizer, ValuesBeyondFloatRangeAreRejectedOrFinite) {
  ScratchDir dir;
  const std::string file = dir.write("big.jsonl",
                                     "{\"prompt\": \"a\", \"embedding\": [1e39, 1]}\n"
                                     "{\"prompt\": \"b\", \"embedding\": [1, 1]}\n");
  std::unique_ptr<EmbeddingFeaturizer> f;
  try {
    f = EmbeddingFeaturizer::read(file);
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr(file + ":1"));
    return;
  }
  const SparseVector v = f->featurize("a");
  for (float x : v.value) EXPECT_TRUE(std::isfinite(x)) << "feature value " << x;
}

// ================================ kNN against brute force ================================

namespace {

// A random unit vector with 1..max_nnz features in [0, space), normal values.
SparseVector random_unit_sparse(std::mt19937_64& rng, uint32_t space, size_t max_nnz) {
  std::set<uint32_t> indices;
  const size_t nnz = 1 + rng() % max_nnz;
  while (indices.size() < nnz) indices.insert(uint32_t(rng() % space));
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(indices.size());
  double norm2 = 0.0;
  for (double& x : v) x = normal(rng), norm2 += x * x;
  SparseVector out;
  out.index.assign(indices.begin(), indices.end());
  for (double x : v) out.value.push_back(float(x / std::sqrt(norm2)));
  return out;
}

// float64 dot product through a map (independent of sparse_dot's merge).
double dot64(const SparseVector& a, const SparseVector& b) {
  std::map<uint32_t, double> m;
  for (size_t k = 0; k < a.nnz(); ++k) m[a.index[k]] += a.value[k];
  double s = 0.0;
  for (size_t k = 0; k < b.nnz(); ++k) {
    const auto it = m.find(b.index[k]);
    if (it != m.end()) s += it->second * double(b.value[k]);
  }
  return s;
}

bool shares_a_feature(const SparseVector& a, const SparseVector& b) {
  for (uint32_t i : a.index)
    if (std::binary_search(b.index.begin(), b.index.end(), i)) return true;
  return false;
}

bool same_vector(const SparseVector& a, const SparseVector& b) {
  return a.index == b.index && a.value == b.value;
}

struct KnnReference {
  std::vector<double> out;
  bool ambiguous = false;  // a near-tie at the k-th place (or near 0) that float32 may flip
};

// Brute-force kNN (docs/llm-routing.md): cosine (the vectors are unit) against every training
// vector, the k most similar with ties to the lower index, the mean of their scores (uniform) or
// weighted by max(0, similarity). A query with no positively similar training vector (for TF-IDF:
// sharing no feature) gets the training mean.
KnnReference knn_reference(const std::vector<SparseVector>& X, const std::vector<double>& Y,
                           size_t M, const SparseVector& q, size_t k, bool weighted) {
  const size_t n = X.size();
  KnnReference r;
  std::vector<double> sim(n), mean(M, 0.0);
  for (size_t d = 0; d < n; ++d) {
    sim[d] = dot64(X[d], q);
    for (size_t m = 0; m < M; ++m) mean[m] += Y[d * M + m] / double(n);
  }
  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return sim[a] > sim[b]; });
  const size_t kk = std::min(k, n);
  for (size_t i = 0; i < kk; ++i)
    for (size_t j = kk; j < n; ++j) {
      const size_t a = order[i], b = order[j];
      if (std::abs(sim[a] - sim[b]) >= 1e-5) continue;
      const bool exact_tie =
          sim[a] == sim[b] &&
          (same_vector(X[a], X[b]) || (!shares_a_feature(X[a], q) && !shares_a_feature(X[b], q)));
      if (!exact_tie) r.ambiguous = true;
    }
  const double top = n ? sim[order[0]] : 0.0;
  if (std::abs(top) < 1e-5 && top != 0.0) r.ambiguous = true;
  r.out.assign(M, 0.0);
  double weight_sum = 0.0;
  for (size_t i = 0; i < kk; ++i) {
    const double w = weighted ? std::max(0.0, sim[order[i]]) : 1.0;
    weight_sum += w;
    for (size_t m = 0; m < M; ++m) r.out[m] += w * Y[order[i] * M + m];
  }
  if (top <= 0.0) {
    r.out = mean;
  } else {
    for (double& x : r.out) x /= weight_sum;
  }
  return r;
}

std::unique_ptr<switchyard::QualityModel> knn(int64_t k, const char* weights) {
  return switchyard::make_quality_model("knn", {{"k", k}, {"weights", weights}}, "test knn");
}

}  // namespace

TEST(KnnModel, MatchesBruteForceOnRandomCorpora) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  int compared = 0, ambiguous = 0;
  for (size_t n : {1, 2, 3, 7, 13, 40}) {
    for (size_t M : {1, 3}) {
      std::vector<SparseVector> X;
      for (size_t d = 0; d < n; ++d) {
        // Every third vector repeats an earlier one (exact ties, different scores).
        if (d > 0 && rng() % 3 == 0) {
          X.push_back(X[rng() % d]);
        } else {
          X.push_back(random_unit_sparse(rng, 24, 6));
        }
      }
      std::vector<double> Y(n * M);
      for (double& y : Y) y = rng() % 5 == 0 ? double(rng() % 2) : uniform(rng);
      std::vector<SparseVector> queries = X;
      for (int i = 0; i < 25; ++i) queries.push_back(random_unit_sparse(rng, 30, 6));
      for (int64_t k : {int64_t(1), int64_t(3), int64_t(n), int64_t(n) + 5}) {
        for (const char* weights : {"uniform", "similarity"}) {
          auto model = knn(k, weights);
          model->fit(X, Y, M, 0);
          for (size_t qi = 0; qi < queries.size(); ++qi) {
            const KnnReference ref =
                knn_reference(X, Y, M, queries[qi], size_t(k), std::string(weights) != "uniform");
            if (ref.ambiguous) {
              ++ambiguous;
              continue;
            }
            std::vector<double> out(M + 1, -7.0);
            model->predict(queries[qi], out.data());
            ++compared;
            EXPECT_EQ(out[M], -7.0) << "predict wrote past M";
            for (size_t m = 0; m < M; ++m)
              EXPECT_NEAR(out[m], ref.out[m], 1e-5)
                  << "n " << n << ", M " << M << ", k " << k << ", " << weights << ", query " << qi
                  << ", model " << m;
          }
        }
      }
    }
  }
  std::printf("kNN vs brute force: %d queries compared, %d skipped as near-ties\n", compared,
              ambiguous);
  EXPECT_LT(ambiguous, compared / 20);
}

TEST(KnnModel, DuplicateTrainingPromptsTieToTheLowerIndex) {
  SparseVector v, w;
  v.index = {1, 4};
  v.value = {0.6f, 0.8f};
  w.index = {4, 9};
  w.value = {0.8f, -0.6f};
  const std::vector<SparseVector> X = {w, v, w, v};
  const std::vector<double> Y = {0.0, 0.25, 0.5, 1.0};  // M = 1
  double out = -1;
  auto one = knn(1, "uniform");
  one->fit(X, Y, 1, 0);
  one->predict(v, &out);
  EXPECT_EQ(out, 0.25);  // copies of v at 1 and 3: the lower index
  auto two = knn(2, "uniform");
  two->fit(X, Y, 1, 0);
  two->predict(v, &out);
  EXPECT_EQ(out, (0.25 + 1.0) / 2);
  // Three nearest of v: both copies (similarity 1), then w at index 0 (similarity 0.64 both).
  auto three = knn(3, "uniform");
  three->fit(X, Y, 1, 0);
  three->predict(v, &out);
  EXPECT_DOUBLE_EQ(out, (0.25 + 1.0 + 0.0) / 3);
  auto weighted = knn(3, "similarity");
  weighted->fit(X, Y, 1, 0);
  weighted->predict(v, &out);
  const double s = 0.8 * 0.8;  // v·w
  EXPECT_NEAR(out, (0.25 + 1.0 + s * 0.0) / (2.0 + s), 1e-6);
}

// A query with no feature in common with any training prompt carries no neighbour information:
// every similarity is 0. The prediction must be the training mean, not the scores of whichever
// training prompts happen to come first.
TEST(KnnModel, QueryWithoutSharedFeaturesGetsTheTrainingMean) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::vector<SparseVector> X;
  for (int d = 0; d < 9; ++d) X.push_back(random_unit_sparse(rng, 20, 4));
  const size_t M = 2;
  std::vector<double> Y(X.size() * M);
  for (size_t i = 0; i < Y.size(); ++i) Y[i] = double(i % 7) / 6.0;
  double mean[M] = {0, 0};
  for (size_t d = 0; d < X.size(); ++d)
    for (size_t m = 0; m < M; ++m) mean[m] += Y[d * M + m] / double(X.size());
  SparseVector far, empty;
  far.index = {1000};
  far.value = {1.0f};
  for (const char* weights : {"uniform", "similarity"})
    for (int64_t k : {1, 3, 9, 50})
      for (const SparseVector* q : {&far, &empty}) {
        SCOPED_TRACE(fmt::format("{}, k = {}, query {}", weights, k, q == &far ? "far" : "empty"));
        auto model = knn(k, weights);
        model->fit(X, Y, M, 0);
        double out[M];
        model->predict(*q, out);
        for (size_t m = 0; m < M; ++m) EXPECT_NEAR(out[m], mean[m], 1e-12) << "model " << m;
      }
}

TEST(KnnModel, ParametersAreValidated) {
  auto message = [](const json& p) {
    return error_of([&] { switchyard::make_quality_model("knn", p, "routers[0].params"); });
  };
  EXPECT_THAT(message({{"k", 0}}), testing::AllOf(HasSubstr("'k'"), HasSubstr("routers[0]")));
  EXPECT_THAT(message({{"k", 2.5}}), HasSubstr("'k'"));
  EXPECT_THAT(message({{"weights", "cosine"}}), HasSubstr("weights"));
  EXPECT_THAT(message({{"kk", 3}}), HasSubstr("unknown field 'kk'"));
  EXPECT_THAT(message(json::array()), HasSubstr("routers[0].params"));
  EXPECT_THAT(error_of([] { switchyard::make_quality_model("svm", json::object(), "ctx"); }),
              HasSubstr("svm"));
  for (const char* kind : {"random", "best_single"})
    EXPECT_THAT(error_of([&] {
                  switchyard::make_quality_model(kind, {{"k", 3}}, "ctx");
                }),
                HasSubstr("unknown field 'k'"));
  EXPECT_THAT(error_of([] {
                switchyard::make_quality_model("logistic", {{"epochs", 0}}, "c");
              }),
              HasSubstr("epochs"));
  EXPECT_THAT(error_of([] {
                switchyard::make_quality_model("mf", {{"dim", 0}}, "c");
              }),
              HasSubstr("dim"));
}

// ================================ trained quality models ================================

namespace {

RoutingTable make_table(const std::vector<std::string>& models,
                        const std::vector<std::string>& prompts, const std::vector<double>& scores,
                        std::vector<double> costs = {}) {
  RoutingTable t;
  t.models = models;
  t.prompts = prompts;
  t.eval_names.assign(prompts.size(), "");
  t.scores = scores;
  if (costs.empty()) costs.assign(scores.size(), kNaN);
  t.costs = costs;
  t.input_price_per_mtok.assign(models.size(), kNaN);
  t.output_price_per_mtok.assign(models.size(), kNaN);
  return t;
}

std::vector<size_t> all_rows(const RoutingTable& t) {
  std::vector<size_t> rows(t.rows());
  std::iota(rows.begin(), rows.end(), 0);
  return rows;
}

// Prompts of 3-7 filler words; `marked` ones also hold `marker` at a random position.
std::string marked_prompt(std::mt19937_64& rng, bool marked, const std::string& marker) {
  std::vector<std::string> words;
  const int count = 3 + int(rng() % 5);
  for (int w = 0; w < count; ++w) words.push_back(vocabulary()[rng() % vocabulary().size()]);
  if (marked) words.insert(words.begin() + long(rng() % (words.size() + 1)), marker);
  std::string out;
  for (const auto& w : words) out += (out.empty() ? "" : " ") + w;
  return out;
}

// Model 0 is right exactly on prompts containing "alpha", model 1 exactly on the others.
struct AlphaTask {
  RoutingTable train;
  std::vector<std::string> test;
  std::vector<int> test_alpha;
};

AlphaTask alpha_task(std::mt19937_64& rng, size_t n_train, size_t n_test) {
  AlphaTask task;
  std::vector<std::string> prompts;
  std::vector<double> scores;
  std::set<std::string> seen;
  while (prompts.size() < n_train) {
    const bool alpha = rng() % 2 == 0;
    const std::string p = marked_prompt(rng, alpha, "alpha");
    if (!seen.insert(p).second) continue;
    prompts.push_back(p);
    scores.push_back(alpha);
    scores.push_back(!alpha);
  }
  task.train = make_table({"alpha-expert", "generalist"}, prompts, scores);
  while (task.test.size() < n_test) {
    const bool alpha = rng() % 2 == 0;
    const std::string p = marked_prompt(rng, alpha, "alpha");
    if (!seen.insert(p).second) continue;  // held out: never a training prompt
    task.test.push_back(p);
    task.test_alpha.push_back(alpha);
  }
  return task;
}

RouterSpec spec_of(const std::string& kind, json params = json::object(), uint64_t seed = 0) {
  RouterSpec spec;
  spec.name = kind;
  spec.quality = kind;
  spec.quality_params = std::move(params);
  spec.features.hash_bits = 16;
  spec.seed = seed;
  return spec;
}

std::vector<double> predict_all(const PromptRouter& router, const std::vector<std::string>& prompts,
                                std::vector<double>* costs = nullptr) {
  const size_t M = router.models.size();
  std::vector<double> q(prompts.size() * M), c(prompts.size() * M);
  for (size_t i = 0; i < prompts.size(); ++i) router.predict(prompts[i], &q[i * M], &c[i * M]);
  if (costs) *costs = c;
  return q;
}

}  // namespace

TEST(QualityModels, LogisticAndMfLearnAWordRule) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  const AlphaTask task = alpha_task(rng, 300, 200);
  for (const auto& [kind, params] :
       std::vector<std::pair<std::string, json>>{{"logistic", json::object()},
                                                 {"mf", {{"dim", 16}}},
                                                 {"mf", {{"dim", 16}, {"loss", "pairwise"}}},
                                                 {"mf", {{"dim", 16}, {"loss", "both"}}}}) {
    SCOPED_TRACE(params.dump());
    SCOPED_TRACE(kind);
    const uint64_t seed = rng();
    const PromptRouter router =
        switchyard::train_router(spec_of(kind, params, seed), task.train, all_rows(task.train));
    const std::vector<double> q = predict_all(router, task.test);
    int right = 0;
    double on_alpha = 0.0, off_alpha = 0.0;
    for (size_t i = 0; i < task.test.size(); ++i) {
      for (size_t m = 0; m < 2; ++m) {
        EXPECT_GE(q[i * 2 + m], 0.0);
        EXPECT_LE(q[i * 2 + m], 1.0);
      }
      right += (q[i * 2] > q[i * 2 + 1]) == bool(task.test_alpha[i]);
      (task.test_alpha[i] ? on_alpha : off_alpha) += q[i * 2];
    }
    const double accuracy = double(right) / double(task.test.size());
    std::printf("%s: held-out accuracy %.3f (chance 0.5)\n", kind.c_str(), accuracy);
    EXPECT_GE(accuracy, 0.85);
    const size_t n_alpha = size_t(std::count(task.test_alpha.begin(), task.test_alpha.end(), 1));
    // Pairwise training fixes only differences of scores, so only their order is checked.
    if (params.value("loss", "pointwise") != "pairwise") {
      EXPECT_GT(on_alpha / double(n_alpha) - off_alpha / double(task.test.size() - n_alpha), 0.5);
    }

    // Deterministic for a seed; another seed trains another model.
    const PromptRouter again =
        switchyard::train_router(spec_of(kind, params, seed), task.train, all_rows(task.train));
    EXPECT_EQ(predict_all(again, task.test), q);
    const PromptRouter other =
        switchyard::train_router(spec_of(kind, params, seed + 1), task.train, all_rows(task.train));
    EXPECT_NE(predict_all(other, task.test), q);
  }
}

TEST(QualityModels, BestSinglePredictsTheTrainingMeans) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  // Dyadic scores on 2^k rows: every mean is exact in binary, so equality is exact.
  for (size_t n : {1, 4, 64}) {
    const size_t M = 3;
    std::vector<std::string> prompts;
    std::vector<double> scores;
    for (size_t i = 0; i < n; ++i) {
      prompts.push_back(fmt::format("prompt {} {}", i, random_prompt(rng, 0, 4)));
      for (size_t m = 0; m < M; ++m) scores.push_back(double(rng() % 9) / 8.0);
    }
    const RoutingTable t = make_table({"a", "b", "c"}, prompts, scores);
    // Train on a subset of rows: the means are over those rows only.
    std::vector<size_t> rows;
    for (size_t i = 0; i < n; i += 2) rows.push_back(i);
    if (n == 1) rows = {0};
    const PromptRouter r = switchyard::train_router(spec_of("best_single"), t, rows);
    std::vector<double> mean(M, 0.0);
    for (size_t row : rows)
      for (size_t m = 0; m < M; ++m) mean[m] += t.score(row, m);
    for (double& x : mean) x /= double(rows.size());
    for (const std::string& p : {std::string("anything"), std::string(""), prompts.back()}) {
      std::vector<double> q(M), c(M);
      r.predict(p, q.data(), c.data());
      EXPECT_EQ(q, mean) << "n = " << n << ", prompt \"" << p << "\"";
    }
    // The pair: best and worst training means (first on ties).
    EXPECT_EQ(r.strong, int(std::max_element(mean.begin(), mean.end()) - mean.begin()));
    const int worst = int(std::min_element(mean.begin(), mean.end()) - mean.begin());
    if (worst != r.strong) {
      EXPECT_EQ(r.weak, worst);
    } else {
      EXPECT_NE(r.weak, r.strong);
    }
  }
}

TEST(QualityModels, RandomIsUniformPerPromptAndReproducible) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::vector<std::string> prompts;
  std::vector<double> scores;
  for (int i = 0; i < 20; ++i) {
    prompts.push_back(fmt::format("train {} {}", i, random_prompt(rng, 1, 5)));
    scores.insert(scores.end(), {1.0, 0.0, 0.5});
  }
  const RoutingTable t = make_table({"a", "b", "c"}, prompts, scores);
  const uint64_t seed = rng();
  const PromptRouter r =
      switchyard::train_router(spec_of("random", json::object(), seed), t, all_rows(t));
  const PromptRouter same =
      switchyard::train_router(spec_of("random", json::object(), seed), t, all_rows(t));
  const PromptRouter other =
      switchyard::train_router(spec_of("random", json::object(), seed + 1), t, all_rows(t));
  std::vector<std::string> queries;
  std::set<std::string> distinct;
  while (queries.size() < 300) {
    const std::string p = fmt::format("{} {}", queries.size(), random_prompt(rng, 1, 6));
    if (distinct.insert(p).second) queries.push_back(p);
  }
  const std::vector<double> q = predict_all(r, queries);
  double sum = 0.0;
  for (double x : q) {
    EXPECT_GE(x, 0.0);
    EXPECT_LT(x, 1.0);
    sum += x;
  }
  EXPECT_NEAR(sum / double(q.size()), 0.5, 0.05);  // 900 uniforms: sd 0.0096
  EXPECT_EQ(predict_all(r, queries), q);           // same prompt, same draw
  EXPECT_EQ(predict_all(same, queries), q);        // same seed, same draws
  EXPECT_NE(predict_all(other, queries), q);
  // Different prompts (hence features), different draws; the models differ within a prompt.
  std::set<double> firsts;
  for (size_t i = 0; i < queries.size(); ++i) {
    firsts.insert(q[i * 3]);
    EXPECT_NE(q[i * 3], q[i * 3 + 1]);
  }
  EXPECT_EQ(firsts.size(), queries.size());
}

// ================================ save / load ================================

namespace {

// Small hyper-parameters per kind, so that the router files stay small (the fuzz test flips bytes).
json small_params(const std::string& kind) {
  if (kind == "knn") return {{"k", 3}};
  if (kind == "logistic") return {{"epochs", 3}};
  if (kind == "mf") return {{"dim", 4}, {"proj_bits", 6}, {"epochs", 3}};
  if (kind == "ensemble")
    return {{"members",
             {{{"kind", "knn"}, {"params", {{"k", 2}, {"weights", "similarity"}}}},
              {{"kind", "mf"}, {"params", {{"dim", 3}, {"proj_bits", 4}, {"epochs", 2}}}}}}};
  return json::object();
}

// 30 training prompts over 3 models with per-row costs, 10 more prompts to route, and an
// embeddings file that covers all 40.
struct SmallData {
  RoutingTable table;
  std::vector<std::string> queries;
  std::string embeddings;
};

SmallData small_data(std::mt19937_64& rng, const ScratchDir& dir) {
  SmallData d;
  std::vector<std::string> prompts;
  std::set<std::string> seen;
  while (prompts.size() + d.queries.size() < 40) {
    const std::string p = random_prompt(rng, 1, 7);
    if (!seen.insert(p).second) continue;
    (prompts.size() < 30 ? prompts : d.queries).push_back(p);
  }
  std::vector<double> scores, costs;
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (size_t i = 0; i < prompts.size(); ++i)
    for (size_t m = 0; m < 3; ++m) {
      scores.push_back(rng() % 3 == 0 ? u(rng) : double(rng() % 2));
      costs.push_back(rng() % 7 == 0 ? kNaN : 0.001 * double(m + 1) * (1.0 + u(rng)));
    }
  d.table = make_table({"small", "medium", "large"}, prompts, scores, costs);
  std::string text;
  std::normal_distribution<double> normal(0.0, 1.0);
  for (const auto* list : {&prompts, &d.queries})
    for (const auto& p : *list) {
      std::vector<double> e(6);
      for (double& x : e) x = normal(rng);
      text += json({{"prompt", p}, {"embedding", e}}).dump() + "\n";
    }
  d.embeddings = dir.write("embeddings.jsonl", text);
  return d;
}

RouterSpec small_spec(const std::string& kind, const std::string& embeddings = "") {
  RouterSpec spec = spec_of(kind, small_params(kind), 7);
  spec.name = kind + (embeddings.empty() ? "-ngram" : "-emb");
  spec.features.hash_bits = 8;
  spec.features.char_min = 2;
  spec.features.char_max = 3;
  spec.embeddings_path = embeddings;
  return spec;
}

json read_json(const std::string& path) {
  return json::parse(switchyard::read_file_text(path));
}

void write_json(const std::string& path, const json& j) {
  switchyard::write_file_atomic(path, j.dump(2));
}

std::string copy_folder(const std::string& from, const std::string& to) {
  fs::remove_all(to);
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

}  // namespace

TEST(PromptRouterFiles, EveryKindRoundTripsExactly) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  ScratchDir dir;
  const SmallData data = small_data(rng, dir);
  std::vector<std::string> prompts = data.table.prompts;
  prompts.insert(prompts.end(), data.queries.begin(), data.queries.end());
  for (const std::string& kind : switchyard::quality_model_kinds()) {
    for (const std::string& embeddings : {std::string(), data.embeddings}) {
      const RouterSpec spec = small_spec(kind, embeddings);
      SCOPED_TRACE(spec.name);
      const PromptRouter trained = switchyard::train_router(spec, data.table, all_rows(data.table));
      const std::string folder = dir.path("routers/" + spec.name);
      trained.save(folder);
      const json file = read_json(folder + "/router.json");
      EXPECT_EQ(file.at("format"), "switchyard-llm-router");
      EXPECT_EQ(file.at("version"), 1);
      EXPECT_EQ(file.at("tensors"), "router.safetensors");
      EXPECT_EQ(file.at("quality").at("kind"), kind);
      EXPECT_EQ(file.at("features").at("kind"), embeddings.empty() ? "ngram" : "embedding");
      const PromptRouter loaded = PromptRouter::load(folder);
      EXPECT_EQ(loaded.name, trained.name);
      EXPECT_EQ(loaded.models, trained.models);
      EXPECT_EQ(loaded.strong, trained.strong);
      EXPECT_EQ(loaded.weak, trained.weak);
      EXPECT_EQ(loaded.cost_scale, trained.cost_scale);
      EXPECT_EQ(loaded.cost.source(), "mean_cost");
      EXPECT_EQ(loaded.quality->params(), trained.quality->params());
      std::vector<double> c_trained, c_loaded;
      const std::vector<double> q_trained = predict_all(trained, prompts, &c_trained);
      EXPECT_EQ(predict_all(loaded, prompts, &c_loaded), q_trained);
      EXPECT_EQ(c_loaded, c_trained);
      // Saving the loaded router again gives a router that predicts the same.
      loaded.save(folder + "-again");
      EXPECT_EQ(predict_all(PromptRouter::load(folder + "-again"), prompts), q_trained);
    }
  }
}

TEST(PromptRouterFiles, CostModelsRoundTrip) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  ScratchDir dir;
  SmallData data = small_data(rng, dir);
  // Prices (dollars per million tokens) win over per-row costs.
  RoutingTable priced = data.table;
  priced.input_price_per_mtok = {0.1, 1.0, 10.0};
  priced.output_price_per_mtok = {0.2, 2.0, 20.0};
  // Without any cost, rank costs order the models by mean training score.
  RoutingTable unpriced = data.table;
  unpriced.costs.assign(unpriced.costs.size(), kNaN);
  for (const auto& [table, source] : std::vector<std::pair<RoutingTable*, std::string>>{
           {&priced, "prices"}, {&data.table, "mean_cost"}, {&unpriced, "rank"}}) {
    SCOPED_TRACE(source);
    RouterSpec spec = small_spec("best_single");
    spec.output_tokens = 100;
    const PromptRouter trained = switchyard::train_router(spec, *table, all_rows(*table));
    EXPECT_EQ(trained.cost.source(), source);
    trained.save(dir.path(source));
    const PromptRouter loaded = PromptRouter::load(dir.path(source));
    EXPECT_EQ(loaded.cost.source(), source);
    std::vector<double> a, b;
    predict_all(trained, data.queries, &a);
    predict_all(loaded, data.queries, &b);
    EXPECT_EQ(a, b);
  }
}

TEST(CostModel, EstimatesHandDerived) {
  RoutingTable t = make_table({"cheap", "dear", "mid"}, {"p0", "p1", "p2"},
                              {0.9, 0.1, 0.5, 0.9, 0.1, 0.5, 0.0, 0.7, 0.5},
                              {1.0, kNaN, 5, 3.0, 4.0, 6, 100, 100, 100});
  double c[3];
  // Per-row costs: the mean of the finite costs of the given rows only (row 2 left out).
  const CostModel mean = CostModel::fit(t, {0, 1}, 256);
  EXPECT_EQ(mean.source(), "mean_cost");
  mean.estimate("anything", c);
  EXPECT_EQ(c[0], 2.0);
  EXPECT_EQ(c[1], 4.0);
  EXPECT_EQ(c[2], 5.5);
  // No cost for one model: rank costs 1..M by increasing mean training score (0.6, 0.3, 0.5).
  t.costs[1] = t.costs[4] = t.costs[7] = kNaN;
  const CostModel rank = CostModel::fit(t, {0, 1, 2}, 256);
  EXPECT_EQ(rank.source(), "rank");
  rank.estimate("x", c);
  EXPECT_EQ(std::vector<double>(c, c + 3), (std::vector<double>{3, 1, 2}));
  // Prices: (ceil(bytes / 4) * input + output_tokens * output) / 1e6, at least one input token.
  t.input_price_per_mtok = {1, 10, 3};
  t.output_price_per_mtok = {2, 20, 5};
  const CostModel prices = CostModel::fit(t, {0}, 100);
  EXPECT_EQ(prices.source(), "prices");
  prices.estimate("123456789", c);  // 9 bytes: 3 tokens
  EXPECT_DOUBLE_EQ(c[0], (3 * 1 + 100 * 2) / 1e6);
  EXPECT_DOUBLE_EQ(c[1], (3 * 10 + 100 * 20) / 1e6);
  EXPECT_DOUBLE_EQ(c[2], (3 * 3 + 100 * 5) / 1e6);
  prices.estimate("", c);  // at least one token
  EXPECT_DOUBLE_EQ(c[0], (1 * 1 + 100 * 2) / 1e6);
  // A price list with a NaN is not a price list.
  t.input_price_per_mtok[1] = kNaN;
  EXPECT_EQ(CostModel::fit(t, {0}, 100).source(), "rank");
}

TEST(PromptRouterFiles, CorruptedRouterJsonIsAnErrorNamingTheField) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  ScratchDir dir;
  const SmallData data = small_data(rng, dir);
  const std::string good = dir.path("good");
  switchyard::train_router(small_spec("knn"), data.table, all_rows(data.table)).save(good);
  const json original = read_json(good + "/router.json");
  struct Case {
    const char* name;
    std::function<void(json&)> edit;
    std::vector<std::string> says;
  };
  const std::vector<Case> cases = {
      {"wrong format", [](json& j) { j["format"] = "other"; }, {"format"}},
      {"wrong version", [](json& j) { j["version"] = 2; }, {"version", "2"}},
      {"version as text", [](json& j) { j["version"] = "1"; }, {"version"}},
      {"unknown key", [](json& j) { j["extra"] = 1; }, {"unknown field 'extra'"}},
      {"strong not in models", [](json& j) { j["strong"] = "nope"; }, {"strong", "nope"}},
      {"weak not in models", [](json& j) { j["weak"] = "huge"; }, {"weak", "huge"}},
      {"one model", [](json& j) { j["models"] = {"small"}; }, {"models"}},
      {"models not strings",
       [](json& j) {
         j["models"] = {1, 2, 3};
       },
       {"models"}},
      {"missing models", [](json& j) { j.erase("models"); }, {"models"}},
      {"model count differs from the tensors",
       [](json& j) {
         j["models"] = {"small", "medium", "large", "extra"};
       },
       {"model"}},
      {"features without kind", [](json& j) { j["features"].erase("kind"); }, {"features"}},
      {"features kind unknown", [](json& j) { j["features"]["kind"] = "bert"; }, {"bert"}},
      {"features unknown key", [](json& j) { j["features"]["ngrams"] = 2; }, {"ngrams"}},
      {"hash_bits differs from the idf",
       [](json& j) { j["features"]["hash_bits"] = 9; },
       {"features.idf"}},
      {"quality kind unknown", [](json& j) { j["quality"]["kind"] = "svm"; }, {"svm"}},
      {"quality params bad k", [](json& j) { j["quality"]["params"]["k"] = 0; }, {"'k'"}},
      {"quality unknown key", [](json& j) { j["quality"]["extra"] = true; }, {"extra"}},
      {"cost list length",
       [](json& j) {
         j["cost"]["mean_cost"] = {1, 2};
       },
       {"cost"}},
      {"cost negative",
       [](json& j) {
         j["cost"]["mean_cost"] = {1, -2, 3};
       },
       {"mean_cost"}},
      {"cost source unknown", [](json& j) { j["cost"]["source"] = "magic"; }, {"source"}},
      {"cost_scale zero", [](json& j) { j["cost_scale"] = 0; }, {"cost_scale"}},
      {"tensors escapes the folder",
       [](json& j) { j["tensors"] = "../good/router.safetensors"; },
       {"tensors"}},
      {"tensors absolute",
       [&](json& j) { j["tensors"] = good + "/router.safetensors"; },
       {"tensors"}},
      {"tensors in a subfolder",
       [](json& j) { j["tensors"] = "sub/router.safetensors"; },
       {"tensors"}},
      {"tensors names the folder", [](json& j) { j["tensors"] = "."; }, {}},
      {"tensors empty", [](json& j) { j["tensors"] = ""; }, {}},
      {"tensors names a missing file",
       [](json& j) { j["tensors"] = "other.safetensors"; },
       {"other.safetensors"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].name);
    const std::string folder = copy_folder(good, dir.path(fmt::format("case{}", i)));
    json j = original;
    cases[i].edit(j);
    write_json(folder + "/router.json", j);
    const std::string message = error_of([&] { PromptRouter::load(folder); });
    EXPECT_THAT(message, HasSubstr(folder)) << "the message names the router folder or file";
    for (const auto& s : cases[i].says) EXPECT_THAT(message, HasSubstr(s));
  }
  // Files missing or not JSON.
  const std::string no_json = copy_folder(good, dir.path("no_json"));
  fs::remove(no_json + "/router.json");
  EXPECT_THAT(error_of([&] { PromptRouter::load(no_json); }), HasSubstr("router.json"));
  EXPECT_THAT(error_of([&] { PromptRouter::load(dir.path("does_not_exist")); }),
              HasSubstr("does_not_exist"));
  const std::string bad_json = copy_folder(good, dir.path("bad_json"));
  switchyard::write_file_atomic(bad_json + "/router.json", "{\"format\": \"switchyard-llm-r");
  EXPECT_THAT(error_of([&] { PromptRouter::load(bad_json); }), HasSubstr(bad_json));
  const std::string not_object = copy_folder(good, dir.path("not_object"));
  switchyard::write_file_atomic(not_object + "/router.json", "[1, 2]");
  EXPECT_THAT(error_of([&] { PromptRouter::load(not_object); }), HasSubstr("router.json"));
  const std::string duplicate = copy_folder(good, dir.path("duplicate"));
  switchyard::write_file_atomic(duplicate + "/router.json",
                                "{\"version\": 1, " + original.dump().substr(1));
  EXPECT_THAT(error_of([&] { PromptRouter::load(duplicate); }), HasSubstr("version"));
  // A number beyond double range is invalid JSON like any other.
  const std::string overflow = copy_folder(good, dir.path("overflow"));
  std::string text = original.dump();
  const size_t at = text.find("\"cost_scale\":");
  ASSERT_NE(at, std::string::npos);
  text.insert(at + 13, "1e999,\"x\":");
  switchyard::write_file_atomic(overflow + "/router.json", text);
  EXPECT_THAT(error_of([&] { PromptRouter::load(overflow); }), HasSubstr("router.json"));
  const std::string no_tensors = copy_folder(good, dir.path("no_tensors"));
  fs::remove(no_tensors + "/router.safetensors");
  EXPECT_THAT(error_of([&] { PromptRouter::load(no_tensors); }), HasSubstr("router.safetensors"));
}

namespace {

void edit_tensors(const std::string& folder,
                  const std::function<void(switchyard::SafetensorsFile&)>& edit) {
  const std::string path = folder + "/router.safetensors";
  switchyard::SafetensorsFile file = switchyard::read_safetensors(path);
  edit(file);
  switchyard::write_safetensors(path, file);
}

// Loading must fail with a switchyard::Error whose message holds every one of `says`. When it
// loads, the test fails and shows whether predict() writes past the router's M outputs.
void expect_load_rejected(const std::string& folder, const std::vector<std::string>& says,
                          const std::vector<std::string>& prompts) {
  std::optional<PromptRouter> loaded;
  std::string message;
  try {
    loaded.emplace(PromptRouter::load(folder));
  } catch (const Error& e) {
    message = e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "threw " << typeid(e).name() << " instead of switchyard::Error: " << e.what();
    return;
  }
  if (loaded) {
    ADD_FAILURE() << "the corrupted router loaded without an error";
    const size_t M = loaded->models.size();
    for (const auto& p : prompts) {
      std::vector<double> q(M + 8, -7.0), c(M + 8, -7.0);
      try {
        loaded->predict(p, q.data(), c.data());
      } catch (const Error&) {
      }
      for (size_t m = M; m < M + 8; ++m) EXPECT_EQ(q[m], -7.0) << "predict wrote past M = " << M;
    }
    return;
  }
  for (const auto& s : says) EXPECT_THAT(message, HasSubstr(s));
}

// A tensor of float32 values with the given shape (values 1.5).
switchyard::TensorData f32_tensor(std::vector<int64_t> shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return switchyard::TensorData::from_f32(std::move(shape), std::vector<float>(size_t(n), 1.5f));
}

std::vector<int64_t> shape_of(const switchyard::SafetensorsFile& f, const std::string& name) {
  return f.tensors.at(name).shape;
}

}  // namespace

TEST(PromptRouterFiles, CorruptedTensorsAreErrorsNamingTheTensor) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  ScratchDir dir;
  const SmallData data = small_data(rng, dir);
  using File = switchyard::SafetensorsFile;
  struct Case {
    std::string kind;  // router to corrupt ("knn-emb": knn on the embeddings)
    const char* name;
    std::function<void(File&)> edit;
    std::vector<std::string> says;
  };
  auto remove = [](const char* name) { return [=](File& f) { f.tensors.erase(name); }; };
  auto resize = [](const char* name, std::vector<int64_t> shape) {
    return [=](File& f) { f.tensors[name] = f32_tensor(shape); };
  };
  const std::vector<Case> cases = {
      {"best_single", "idf missing", remove("features.idf"), {"features.idf"}},
      {"best_single", "idf too short", resize("features.idf", {100}), {"features.idf"}},
      {"best_single",
       "idf below 1",
       [](File& f) {
         auto v = f.tensors["features.idf"].to_f32();
         v[7] = 0.5f;
         f.tensors["features.idf"] = switchyard::TensorData::from_f32({int64_t(v.size())}, v);
       },
       {"features.idf"}},
      {"best_single", "mean missing", remove("best_single.mean"), {"best_single.mean"}},
      {"best_single", "mean of 4 models", resize("best_single.mean", {4}), {"models"}},
      {"best_single", "mean of 2 models", resize("best_single.mean", {2}), {"models"}},
      {"knn", "scores missing", remove("knn.scores"), {"knn.scores"}},
      {"knn", "features missing", remove("knn.features"), {"knn.features"}},
      {"knn", "offsets missing", remove("knn.offsets"), {"knn.offsets"}},
      {"knn", "docs missing", remove("knn.docs"), {"knn.docs"}},
      {"knn", "values missing", remove("knn.values"), {"knn.values"}},
      {"knn", "scores 1-D", resize("knn.scores", {90}), {"knn.scores"}},
      {"knn",
       "scores of 4 models",
       [](File& f) {
         f.tensors["knn.scores"] = f32_tensor({shape_of(f, "knn.scores")[0], 4});
       },
       {"models"}},
      {"knn",
       "offsets too short",
       [](File& f) {
         auto v = f.tensors["knn.offsets"].to_i64();
         v.pop_back();
         f.tensors["knn.offsets"] = switchyard::TensorData::from_i64({int64_t(v.size())}, v);
       },
       {"knn.offsets"}},
      {"knn",
       "offsets decreasing",
       [](File& f) {
         auto v = f.tensors["knn.offsets"].to_i64();
         std::swap(v[1], v[2]);
         f.tensors["knn.offsets"] = switchyard::TensorData::from_i64({int64_t(v.size())}, v);
       },
       {"knn.offsets"}},
      {"knn",
       "docs out of range",
       [](File& f) {
         auto v = f.tensors["knn.docs"].to_i64();
         v[0] = 30;  // 30 training prompts: 0..29
         f.tensors["knn.docs"] = switchyard::TensorData::from_i64({int64_t(v.size())}, v);
       },
       {"knn.docs", "30"}},
      {"knn",
       "docs negative",
       [](File& f) {
         auto v = f.tensors["knn.docs"].to_i64();
         v.back() = -1;
         f.tensors["knn.docs"] = switchyard::TensorData::from_i64({int64_t(v.size())}, v);
       },
       {"knn.docs", "-1"}},
      {"knn",
       "features not increasing",
       [](File& f) {
         auto v = f.tensors["knn.features"].to_i64();
         v[1] = v[0];
         f.tensors["knn.features"] = switchyard::TensorData::from_i64({int64_t(v.size())}, v);
       },
       {"knn.features"}},
      {"knn",
       "values too short",
       [](File& f) { f.tensors["knn.values"] = f32_tensor({shape_of(f, "knn.values")[0] - 1}); },
       {"knn.values"}},
      // (The message names the file and the dtypes, not which tensor: see the report.)
      {"knn",
       "docs stored as floats",
       [](File& f) { f.tensors["knn.docs"] = f32_tensor(shape_of(f, "knn.docs")); },
       {"F32"}},
      {"logistic", "weight missing", remove("logistic.weight"), {"logistic.weight"}},
      {"logistic", "bias missing", remove("logistic.bias"), {"logistic.bias"}},
      {"logistic", "bias of 2", resize("logistic.bias", {2}), {"logistic.bias"}},
      {"logistic", "weight 1-D", resize("logistic.weight", {12}), {"logistic.weight"}},
      {"logistic",
       "4 models",
       [](File& f) {
         f.tensors["logistic.weight"] = f32_tensor({4, shape_of(f, "logistic.weight")[1]});
         f.tensors["logistic.bias"] = switchyard::TensorData::from_f64({4}, {0, 0, 0, 0});
       },
       {"models"}},
      {"mf", "projection missing", remove("mf.projection"), {"mf.projection"}},
      {"mf", "projection wrong size", resize("mf.projection", {63, 4}), {"mf.projection"}},
      {"mf", "w wrong size", resize("mf.w", {5}), {"mf.w"}},
      {"mf",
       "model_embedding wrong size",
       resize("mf.model_embedding", {3, 5}),
       {"mf.model_embedding"}},
      {"mf",
       "4 models",
       [](File& f) {
         f.tensors["mf.model_embedding"] = f32_tensor({4, 4});
         f.tensors["mf.bias"] = f32_tensor({4});
       },
       {"models"}},
      {"random", "seed missing", [](File& f) { f.metadata.erase("random.seed"); }, {"random.seed"}},
      {"random",
       "seed not a number",
       [](File& f) { f.metadata["random.seed"] = "abc"; },
       {"random.seed", "abc"}},
      {"random",
       "seed beyond 64 bits",
       [](File& f) { f.metadata["random.seed"] = "99999999999999999999999"; },
       {"random.seed"}},
      {"random", "4 models", [](File& f) { f.metadata["random.models"] = "4"; }, {"models"}},
      {"random",
       "models negative",
       [](File& f) { f.metadata["random.models"] = "-1"; },
       {"random.models"}},
      {"ensemble",
       "count metadata missing",
       [](File& f) { f.metadata.erase("ensemble.models"); },
       {"ensemble.models"}},
      {"ensemble", "4 models", [](File& f) { f.metadata["ensemble.models"] = "4"; }, {"models"}},
      {"ensemble", "member tensor missing", remove("m0/knn.scores"), {"knn.scores"}},
      {"ensemble",
       "member of 4 models",
       [](File& f) { f.tensors["m1/mf.bias"] = f32_tensor({4}); },
       {"ensemble member 1"}},
      {"knn-emb", "embeddings missing", remove("features.embeddings"), {"features.embeddings"}},
      {"knn-emb",
       "prompts metadata missing",
       [](File& f) { f.metadata.erase("features.prompts"); },
       {"features.prompts"}},
      {"knn-emb",
       "prompts metadata not JSON",
       [](File& f) { f.metadata["features.prompts"] = "[\"a\", "; },
       {"features.prompts"}},
      {"knn-emb",
       "one prompt too few",
       [](File& f) {
         json p = json::parse(f.metadata["features.prompts"]);
         p.erase(p.size() - 1);
         f.metadata["features.prompts"] = p.dump();
       },
       {"features.prompts"}},
      {"knn-emb",
       "prompts not strings",
       [](File& f) {
         json p = json::parse(f.metadata["features.prompts"]);
         p[0] = 5;
         f.metadata["features.prompts"] = p.dump();
       },
       {"features.prompts"}},
      {"knn-emb", "embeddings 1-D", resize("features.embeddings", {240}), {"features.embeddings"}},
  };
  std::map<std::string, std::string> good;
  for (const std::string kind : {"best_single", "knn", "logistic", "mf", "random", "ensemble"}) {
    good[kind] = dir.path("good-" + kind);
    switchyard::train_router(small_spec(kind), data.table, all_rows(data.table)).save(good[kind]);
  }
  good["knn-emb"] = dir.path("good-knn-emb");
  switchyard::train_router(small_spec("knn", data.embeddings), data.table, all_rows(data.table))
      .save(good["knn-emb"]);
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE(cases[i].kind + ": " + cases[i].name);
    const std::string folder = copy_folder(good.at(cases[i].kind), dir.path(fmt::format("c{}", i)));
    edit_tensors(folder, cases[i].edit);
    std::vector<std::string> says = cases[i].says;
    says.push_back("router.safetensors");
    expect_load_rejected(folder, says, data.table.prompts);
  }
}

// Random byte flips and truncations of router.safetensors and router.json: loading either fails
// with a switchyard::Error or gives a router whose predictions stay inside their M outputs. Under
// ASan this also checks that no corruption reads or writes out of bounds.
TEST(PromptRouterFiles, GarbledFilesNeverCrash) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  ScratchDir dir;
  const SmallData data = small_data(rng, dir);
  std::vector<std::pair<std::string, RouterSpec>> routers;
  for (const std::string& kind : switchyard::quality_model_kinds())
    routers.emplace_back(kind, small_spec(kind));
  routers.emplace_back("knn-emb", small_spec("knn", data.embeddings));
  int rejected = 0, loaded = 0;
  for (const auto& [label, spec] : routers) {
    const std::string good = dir.path("good-" + label);
    switchyard::train_router(spec, data.table, all_rows(data.table)).save(good);
    for (const char* name : {"router.safetensors", "router.json"}) {
      const std::vector<uint8_t> original = switchyard::read_file_bytes(good + "/" + name);
      uint64_t header_end = original.size();
      if (std::string(name) == "router.safetensors") {
        uint64_t header = 0;
        for (int b = 7; b >= 0; --b) header = (header << 8) | original[size_t(b)];
        header_end = std::min<uint64_t>(8 + header, original.size());
      }
      const int trials = std::string(name) == "router.json" ? 40 : 100;
      for (int trial = 0; trial < trials; ++trial) {
        std::vector<uint8_t> bytes = original;
        std::string what;
        if (rng() % 4 == 0) {
          bytes.resize(size_t(rng() % original.size()));
          what = fmt::format("truncated to {} bytes", bytes.size());
        } else {
          const int flips = 1 + int(rng() % 4);
          for (int f = 0; f < flips; ++f) {
            // Half the flips land in the header (size field and JSON), half anywhere.
            const size_t at = size_t(rng() % (rng() % 2 ? header_end : original.size()));
            const auto mask = uint8_t(1 + rng() % 255);
            bytes[at] ^= mask;
            what += fmt::format("byte {} ^= {:#04x}; ", at, mask);
          }
        }
        SCOPED_TRACE(fmt::format("{} {}: {}", label, name, what));
        const std::string folder = dir.path("garbled");
        copy_folder(good, folder);
        switchyard::write_file_atomic(folder + "/" + name, bytes);
        std::optional<PromptRouter> router;
        try {
          router.emplace(PromptRouter::load(folder));
        } catch (const Error&) {
          ++rejected;
          continue;
        } catch (const std::exception& e) {
          ADD_FAILURE() << "threw " << typeid(e).name()
                        << " instead of switchyard::Error: " << e.what();
          continue;
        }
        ++loaded;
        const size_t M = router->models.size();
        for (size_t p = 0; p < 3; ++p) {
          std::vector<double> q(M + 8, -7.0), c(M + 8, -7.0);
          try {
            router->predict(data.table.prompts[p], q.data(), c.data());
          } catch (const Error&) {
            continue;  // e.g. an embedding router whose prompt list was garbled
          } catch (const std::exception& e) {
            ADD_FAILURE() << "predict threw " << typeid(e).name() << ": " << e.what();
            continue;
          }
          for (size_t m = M; m < M + 8; ++m) {
            EXPECT_EQ(q[m], -7.0) << "predict wrote past M = " << M;
            EXPECT_EQ(c[m], -7.0) << "the cost estimate wrote past M = " << M;
          }
        }
      }
    }
  }
  std::printf("garbled router files: %d rejected with an error, %d loaded\n", rejected, loaded);
}

// ================================ decision rules ================================

namespace {

double utility(double q, double c, double lambda, double c_scale) {
  return (1.0 - lambda) * q - lambda * c / c_scale;
}

// argmax with ties to the lower index.
int reference_argmax(const std::vector<double>& u) {
  int best = 0;
  for (size_t m = 1; m < u.size(); ++m)
    if (u[m] > u[size_t(best)]) best = int(m);
  return best;
}

// One prompt's predictions for 1..6 models: qualities and costs uniform, or (to make ties)
// quarter steps and small integers.
struct Prediction {
  size_t M = 0;
  std::vector<double> q, c;
};

Prediction random_prediction(std::mt19937_64& rng, bool tied_q, bool tied_c) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  Prediction p;
  p.M = 1 + rng() % 6;
  for (size_t m = 0; m < p.M; ++m) {
    p.q.push_back(tied_q ? double(rng() % 5) / 4 : u(rng));
    p.c.push_back(tied_c ? double(rng() % 3) : 10 * u(rng));
  }
  return p;
}

}  // namespace

TEST(DecisionRules, CostAwareIsTheArgmaxOfTheUtility) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 2000; ++trial) {
    const auto [M, q, c] = random_prediction(rng, trial % 3 == 0, trial % 5 == 0);
    const double lambda = trial % 7 == 0 ? double(rng() % 2) : u(rng);
    const double c_scale = 0.1 + 5 * u(rng);
    std::vector<double> util(M);
    for (size_t m = 0; m < M; ++m) util[m] = utility(q[m], c[m], lambda, c_scale);
    SCOPED_TRACE(fmt::format("trial {}: M {}, lambda {}", trial, M, lambda));
    ASSERT_EQ(switchyard::choose_cost_aware(q.data(), c.data(), M, lambda, c_scale),
              reference_argmax(util));
    // λ = 0: the best predicted quality; λ = 1: the cheapest (ties: the lower index).
    EXPECT_EQ(switchyard::choose_cost_aware(q.data(), c.data(), M, 0.0, c_scale),
              reference_argmax(q));
    std::vector<double> minus_c(M);
    for (size_t m = 0; m < M; ++m) minus_c[m] = -c[m];
    EXPECT_EQ(switchyard::choose_cost_aware(q.data(), c.data(), M, 1.0, c_scale),
              reference_argmax(minus_c));
  }
  const double q[] = {0.5, 0.5, 0.5}, c[] = {2, 1, 1};
  EXPECT_EQ(switchyard::choose_cost_aware(q, c, 3, 0.0, 1.0), 0);  // all equal: the first
  EXPECT_EQ(switchyard::choose_cost_aware(q, c, 3, 0.5, 1.0), 1);  // cheapest, first of a tie
}

TEST(DecisionRules, ThresholdBoundaryIsInclusive) {
  const double q[] = {0.25, 0.9, 0.75};  // weak 0, strong 2: gain 0.5 exactly
  EXPECT_EQ(switchyard::choose_threshold(q, 2, 0, 0.5), 2);
  EXPECT_EQ(switchyard::choose_threshold(q, 2, 0, std::nextafter(0.5, 1.0)), 0);
  EXPECT_EQ(switchyard::choose_threshold(q, 2, 0, -1.0), 2);
  EXPECT_EQ(switchyard::choose_threshold(q, 0, 2, -0.5), 0);  // gain -0.5 >= -0.5
  EXPECT_EQ(switchyard::choose_threshold(q, 0, 2, -0.25), 2);
}

TEST(DecisionRules, CascadeMatchesAReference) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 2000; ++trial) {
    // Equal costs keep the lower index first.
    const auto [M, q, c] = random_prediction(rng, true, trial % 2 == 1);
    const double tau = trial % 3 == 0 ? double(rng() % 6) / 4 : u(rng);
    std::vector<size_t> order(M);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return c[a] < c[b]; });
    int want = int(order.back());
    for (size_t m : order)
      if (q[m] >= tau) {
        want = int(m);
        break;
      }
    SCOPED_TRACE(fmt::format("trial {}: tau {}", trial, tau));
    ASSERT_EQ(switchyard::choose_cascade(q.data(), c.data(), M, tau), want);
  }
  const double q[] = {0.9, 0.2, 0.6}, c[] = {3.0, 1.0, 2.0};
  EXPECT_EQ(switchyard::choose_cascade(q, c, 3, 0.0), 1);   // every model passes: the cheapest
  EXPECT_EQ(switchyard::choose_cascade(q, c, 3, 0.6), 2);   // >= tau
  EXPECT_EQ(switchyard::choose_cascade(q, c, 3, 0.95), 0);  // none passes: the dearest
}

TEST(DecisionRules, CalibratedThresholdSendsTheRequestedShare) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(-1.0, 1.0);
  for (int trial = 0; trial < 300; ++trial) {
    const size_t n = 1 + rng() % 61;
    const bool ties = trial % 2 == 1;
    std::vector<double> gains(n);
    std::set<double> distinct;
    for (double& g : gains) {
      do {
        g = ties ? double(int(rng() % 5) - 2) / 4 : u(rng);
      } while (!ties && !distinct.insert(g).second);
    }
    const double share = trial % 5 == 0 ? double(rng() % 2) : (u(rng) + 1) / 2;
    const double threshold = switchyard::calibrate_threshold(gains, share);
    const size_t want = size_t(std::llround(share * double(n)));
    const size_t sent =
        size_t(std::count_if(gains.begin(), gains.end(), [&](double g) { return g >= threshold; }));
    const size_t above =
        size_t(std::count_if(gains.begin(), gains.end(), [&](double g) { return g > threshold; }));
    SCOPED_TRACE(fmt::format("trial {}: n {}, share {}, ties {}", trial, n, share, ties));
    if (!ties) {
      EXPECT_EQ(sent, want);  // tie-free gains: exactly the requested count
    } else {
      // Tied gains move together: at least the requested count, and the ones strictly above
      // the threshold are fewer (the tie group at the threshold pushed it over).
      EXPECT_GE(sent, want);
      EXPECT_LT(above, std::max<size_t>(want, 1));
    }
    if (share == 0.0) {
      EXPECT_EQ(sent, 0u);
    }
    if (share == 1.0) {
      EXPECT_EQ(sent, n);
    }
  }
  EXPECT_THAT(error_of([] { switchyard::calibrate_threshold({}, 0.5); }), HasSubstr("no prompts"));
  for (double bad : {-0.1, 1.1, kNaN})
    EXPECT_THAT(error_of([&] {
                  switchyard::calibrate_threshold({0.1, 0.2}, bad);
                }),
                HasSubstr("share"))
        << bad;
  // Hand case: gains 0.3, 0.1, -0.2, 0.5; half -> the 2nd largest (0.3).
  EXPECT_EQ(switchyard::calibrate_threshold({0.3, 0.1, -0.2, 0.5}, 0.5), 0.3);
}

// ================================ batch routing under capacity ================================

namespace {

struct Instance {
  size_t n = 0, M = 0;
  std::vector<double> q, c;
  std::vector<int64_t> capacity;
  double lambda = 0, c_scale = 1;
  double u(size_t i, int m) const {
    return utility(q[i * M + size_t(m)], c[i * M + size_t(m)], lambda, c_scale);
  }
  double total(const std::vector<int32_t>& a) const {
    double s = 0.0;
    for (size_t i = 0; i < n; ++i) s += u(i, a[i]);
    return s;
  }
};

// The best total utility over all M^n assignments that respect the capacities.
double brute_force_optimum(const Instance& p) {
  std::vector<int32_t> a(p.n, 0);
  double best = -std::numeric_limits<double>::infinity();
  while (true) {
    std::vector<int64_t> used(p.M, 0);
    bool ok = true;
    for (size_t i = 0; i < p.n; ++i) ok = ok && ++used[size_t(a[i])] <= p.capacity[size_t(a[i])];
    if (ok) best = std::max(best, p.total(a));
    size_t i = 0;
    while (i < p.n && ++a[i] == int32_t(p.M)) a[i++] = 0;
    if (i == p.n) break;
  }
  return best;
}

void expect_capacities_respected(const Instance& p, const std::vector<int32_t>& a) {
  ASSERT_EQ(a.size(), p.n);
  std::vector<int64_t> used(p.M, 0);
  for (int32_t m : a) {
    ASSERT_GE(m, 0);
    ASSERT_LT(m, int32_t(p.M));
    ++used[size_t(m)];
  }
  for (size_t m = 0; m < p.M; ++m) EXPECT_LE(used[m], p.capacity[m]) << "model " << m;
}

}  // namespace

// The auction assigns Σ_m min(cap_m, n) rows (the n prompts and padding rows of utility 0), so
// its guarantee is within (that many rows)·ε of the optimum, ε = max(1e-4, range/50) with the
// padding's 0 in the range. The gap is also printed in units of n·ε.
TEST(BatchRouting, NearTheBruteForceOptimumUnderCapacity) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  double worst_ratio = 0.0;  // (optimum − auction) / (n·ε), over the instances
  int exact = 0, instances = 0;
  for (int trial = 0; trial < 1000; ++trial) {
    Instance p;
    p.n = 1 + rng() % 7;
    p.M = 1 + rng() % 3;
    p.q.resize(p.n * p.M);
    p.c.resize(p.n * p.M);
    for (size_t i = 0; i < p.n * p.M; ++i) {
      p.q[i] = trial % 4 == 0 ? double(rng() % 2) : u(rng);  // ties in the binary trials
      p.c[i] = 0.01 * (1 + double(i % p.M)) * (1 + u(rng));
    }
    p.lambda = trial % 3 == 0 ? 0.0 : u(rng);
    p.c_scale = 0.03;
    int64_t sum = 0;
    p.capacity.resize(p.M);
    for (auto& cap : p.capacity) sum += cap = int64_t(rng() % (p.n + 1));
    while (sum < int64_t(p.n)) ++p.capacity[rng() % p.M], ++sum;  // Σ capacity >= n
    if (trial % 10 == 0) p.capacity[0] = 1000;                    // clipped to n
    SCOPED_TRACE(fmt::format("trial {}: n {}, M {}, capacity [{}], lambda {}", trial, p.n, p.M,
                             fmt::join(p.capacity, ", "), p.lambda));
    const std::vector<int32_t> a =
        switchyard::route_batch_with_capacity(p.q, p.c, p.n, p.M, p.capacity, p.lambda, p.c_scale);
    expect_capacities_respected(p, a);
    const double optimum = brute_force_optimum(p);
    double lo = 0.0, hi = 0.0;
    for (size_t i = 0; i < p.n; ++i)
      for (size_t m = 0; m < p.M; ++m)
        lo = std::min(lo, p.u(i, int(m))), hi = std::max(hi, p.u(i, int(m)));
    const double eps = std::max(1e-4, (hi - lo) / 50.0);
    int64_t rows = 0;
    for (int64_t cap : p.capacity) rows += std::min<int64_t>(cap, int64_t(p.n));
    const double got = p.total(a);
    EXPECT_GE(got, optimum - double(rows) * eps - 1e-12)
        << fmt::format("optimum {}, assignment [{}], q [{}], c [{}]", optimum, fmt::join(a, ", "),
                       fmt::join(p.q, ", "), fmt::join(p.c, ", "));
    worst_ratio = std::max(worst_ratio, (optimum - got) / (double(p.n) * eps));
    exact += got >= optimum - 1e-12;
    ++instances;
  }
  std::printf("batch routing: %d of %d instances optimal; worst gap %.3f n·eps\n", exact, instances,
              worst_ratio);
}

// With no binding capacity the best assignment is each prompt's argmax. Each prompt's best model
// leads the others by 0.5 > (rows)·ε (rows <= 12, ε <= 2/50), so the auction's guarantee forces
// the argmax.
TEST(BatchRouting, UnlimitedCapacityIsThePerPromptArgmax) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 300; ++trial) {
    Instance p;
    p.n = 1 + rng() % 4;
    p.M = 1 + rng() % 3;
    p.q.resize(p.n * p.M);
    p.c.assign(p.n * p.M, 0.0);
    p.lambda = 0.0;
    std::vector<int> best(p.n);
    for (size_t i = 0; i < p.n; ++i) {
      best[i] = int(rng() % p.M);
      const double top = -0.5 + 1.5 * u(rng);
      for (size_t m = 0; m < p.M; ++m)
        p.q[i * p.M + m] =
            int(m) == best[i] ? top : std::max(-1.0, top - 0.5 - (top + 0.5) * u(rng));
    }
    p.capacity.assign(p.M, trial % 2 ? int64_t(p.n) : std::numeric_limits<int64_t>::max());
    SCOPED_TRACE(
        fmt::format("trial {}: n {}, M {}, q [{}]", trial, p.n, p.M, fmt::join(p.q, ", ")));
    const std::vector<int32_t> a =
        switchyard::route_batch_with_capacity(p.q, p.c, p.n, p.M, p.capacity, p.lambda, p.c_scale);
    EXPECT_EQ(std::vector<int>(a.begin(), a.end()), best);
  }
  // Hand case: prompt 0 is worth 0 on model 0 and less elsewhere, prompt 1 is worth -1 anywhere;
  // every model may take both. The optimum (-1) sends prompt 0 to model 0.
  const std::vector<double> q = {0, -0.75, -1, -1, -1, -1}, c(6, 0.0);
  const auto hand = switchyard::route_batch_with_capacity(q, c, 2, 3, {2, 2, 2}, 0.0, 1.0);
  EXPECT_EQ(hand.at(0), 0) << fmt::format("assignment [{}]", fmt::join(hand, ", "));
  // A larger batch: still one model per prompt, the argmax of well-separated utilities.
  Instance big;
  big.n = 500;
  big.M = 4;
  for (size_t i = 0; i < big.n; ++i)
    for (size_t m = 0; m < big.M; ++m) big.q.push_back(m == i % 4 ? 0.9 : 0.1 * u(rng));
  big.c.assign(big.q.size(), 0.0);
  big.capacity.assign(big.M, 500);
  const auto a =
      switchyard::route_batch_with_capacity(big.q, big.c, big.n, big.M, big.capacity, 0.0, 1.0);
  for (size_t i = 0; i < big.n; ++i) EXPECT_EQ(a[i], int32_t(i % 4)) << "prompt " << i;
}

TEST(BatchRouting, LargeBatchesRespectCapacities) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (size_t n : {1, 2, 63, 257, 1000}) {
    Instance p;
    p.n = n;
    p.M = 2 + rng() % 4;
    for (size_t i = 0; i < n * p.M; ++i) p.q.push_back(u(rng)), p.c.push_back(u(rng));
    p.lambda = u(rng);
    p.capacity.assign(p.M, 0);
    for (size_t i = 0; i < n; ++i) ++p.capacity[rng() % p.M];  // Σ capacity = n exactly
    SCOPED_TRACE(fmt::format("n {}, M {}, capacity [{}]", n, p.M, fmt::join(p.capacity, ", ")));
    expect_capacities_respected(
        p, switchyard::route_batch_with_capacity(p.q, p.c, p.n, p.M, p.capacity, p.lambda, 1.0));
  }
}

TEST(BatchRouting, RejectsBadSizesAndTooLittleCapacity) {
  const std::vector<double> q = {0.1, 0.2, 0.3, 0.4}, c = {1, 2, 1, 2};
  auto route = [&](size_t n, size_t M, std::vector<int64_t> cap, std::vector<double> qq) {
    return error_of([&] { switchyard::route_batch_with_capacity(qq, c, n, M, cap, 0.5, 1.0); });
  };
  EXPECT_THAT(route(2, 2, {1, 0}, q), HasSubstr("capacities sum to 1 < 2"));
  EXPECT_THAT(route(2, 2, {0, 0}, q), HasSubstr("capacities sum"));
  EXPECT_THAT(route(2, 2, {1}, q), HasSubstr("capacities"));
  EXPECT_THAT(route(2, 2, {1, -1}, q), HasSubstr("capacity[1] = -1"));
  EXPECT_THAT(route(3, 2, {3, 3}, q), HasSubstr("n = 3"));
  EXPECT_THAT(route(2, 2, {2, 2}, {0.1, 0.2, 0.3}), HasSubstr("M = 2"));
}

// No prompts: nothing to assign, an empty result (not a read of an empty utility table).
TEST(BatchRouting, EmptyBatchGivesAnEmptyAssignment) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        const auto a = switchyard::route_batch_with_capacity({}, {}, 0, 2, {3, 3}, 0.5, 1.0);
        std::exit(a.empty() ? 0 : 3);
      },
      testing::ExitedWithCode(0), "");
}

// ================================ evaluation maths ================================

namespace {

CurvePoint point(double cost, double quality, double share = 0.0) {
  return CurvePoint{kNaN, cost, quality, share};
}

std::vector<std::pair<double, double>> cost_quality(const std::vector<CurvePoint>& v) {
  std::vector<std::pair<double, double>> out;
  for (const auto& p : v) out.emplace_back(p.cost, p.quality);
  return out;
}

using Pairs = std::vector<std::pair<double, double>>;

// Value of the piecewise-linear hull at `cost`, flat beyond its ends.
double hull_at(const std::vector<CurvePoint>& hull, double cost) {
  if (cost <= hull.front().cost) return hull.front().quality;
  for (size_t i = 1; i < hull.size(); ++i)
    if (cost <= hull[i].cost)
      return hull[i - 1].quality + (cost - hull[i - 1].cost) / (hull[i].cost - hull[i - 1].cost) *
                                       (hull[i].quality - hull[i - 1].quality);
  return hull.back().quality;
}

}  // namespace

TEST(EvalMaths, ConvexHullHandCases) {
  using switchyard::nondecreasing_convex_hull;
  EXPECT_TRUE(nondecreasing_convex_hull({}).empty());
  EXPECT_EQ(cost_quality(nondecreasing_convex_hull({point(1, 0.5)})), (Pairs{{1, 0.5}}));
  // (1, 0.3) is under the chord (0, 0.2)-(2, 0.9); (0.5, 0.1) under it too; (2, 0.5) loses to
  // (2, 0.9) at equal cost; (3, 0.8) is dearer and worse: cut.
  EXPECT_EQ(
      cost_quality(nondecreasing_convex_hull({point(3, 0.8), point(1, 0.3), point(2, 0.5),
                                              point(0, 0.2), point(2, 0.9), point(0.5, 0.1)})),
      (Pairs{{0, 0.2}, {2, 0.9}}));
  // A point above the chord stays.
  EXPECT_EQ(cost_quality(nondecreasing_convex_hull({point(2, 1.0), point(0, 0), point(1, 0.8)})),
            (Pairs{{0, 0}, {1, 0.8}, {2, 1.0}}));
  // Equal costs keep the best.
  EXPECT_EQ(cost_quality(nondecreasing_convex_hull({point(1, 0.3), point(1, 0.7), point(1, 0.5)})),
            (Pairs{{1, 0.7}}));
  // Decreasing all along: only the cheapest.
  EXPECT_EQ(cost_quality(nondecreasing_convex_hull({point(0, 0.5), point(1, 0.4), point(2, 0.3)})),
            (Pairs{{0, 0.5}}));
  // The cheapest point is not the worst: the hull still starts there.
  EXPECT_EQ(cost_quality(nondecreasing_convex_hull({point(0, 0.5), point(1, 0.4), point(2, 0.9)})),
            (Pairs{{0, 0.5}, {2, 0.9}}));
}

TEST(EvalMaths, ConvexHullPropertiesOnRandomPoints) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 500; ++trial) {
    std::vector<CurvePoint> points;
    const size_t n = 1 + rng() % 30;
    for (size_t i = 0; i < n; ++i)
      points.push_back(trial % 2 ? point(double(rng() % 6), double(rng() % 5) / 4)
                                 : point(u(rng), u(rng)));
    SCOPED_TRACE(fmt::format("trial {}, {} points", trial, n));
    const auto hull = switchyard::nondecreasing_convex_hull(points);
    ASSERT_FALSE(hull.empty());
    // A subset of the points; the first is the best of the cheapest.
    for (const auto& h : hull)
      EXPECT_TRUE(std::any_of(points.begin(), points.end(), [&](const CurvePoint& p) {
        return p.cost == h.cost && p.quality == h.quality;
      }));
    double cheapest = std::numeric_limits<double>::infinity(), best_cheapest = -1;
    for (const auto& p : points) cheapest = std::min(cheapest, p.cost);
    for (const auto& p : points)
      if (p.cost == cheapest) best_cheapest = std::max(best_cheapest, p.quality);
    EXPECT_EQ(hull.front().cost, cheapest);
    EXPECT_EQ(hull.front().quality, best_cheapest);
    // Costs strictly increasing, quality strictly increasing, slopes decreasing (concave).
    for (size_t i = 1; i < hull.size(); ++i) {
      EXPECT_GT(hull[i].cost, hull[i - 1].cost);
      EXPECT_GT(hull[i].quality, hull[i - 1].quality);
      if (i >= 2) {
        const double s1 =
            (hull[i - 1].quality - hull[i - 2].quality) / (hull[i - 1].cost - hull[i - 2].cost);
        const double s2 =
            (hull[i].quality - hull[i - 1].quality) / (hull[i].cost - hull[i - 1].cost);
        EXPECT_LT(s2, s1 + 1e-12);
      }
    }
    // Every point is on or under the hull (flat beyond its ends); the last hull point is the best.
    double best = -1;
    for (const auto& p : points) {
      best = std::max(best, p.quality);
      EXPECT_LE(p.quality, hull_at(hull, p.cost) + 1e-12)
          << "point " << p.cost << ", " << p.quality;
    }
    EXPECT_EQ(hull.back().quality, best);
  }
}

TEST(EvalMaths, AverageImprovedQualityIsTheExactIntegral) {
  using switchyard::average_improved_quality;
  const std::vector<CurvePoint> two = {point(1, 0.2), point(3, 0.6)};
  // [0, 1] flat 0.2; [1, 3] linear, mean 0.4; [3, 4] flat 0.6: (0.2 + 0.8 + 0.6) / 4.
  EXPECT_NEAR(average_improved_quality(two, 0, 4), 0.4, 1e-15);
  EXPECT_NEAR(average_improved_quality(two, 2, 3), 0.5, 1e-15);
  EXPECT_NEAR(average_improved_quality(two, 1, 3), 0.4, 1e-15);
  EXPECT_NEAR(average_improved_quality(two, 5, 9), 0.6, 1e-15);   // beyond the end: flat
  EXPECT_NEAR(average_improved_quality(two, -3, 0), 0.2, 1e-15);  // before the start: flat
  EXPECT_NEAR(average_improved_quality(two, 2, 2), 0.4, 1e-15);   // empty range: the value
  const std::vector<CurvePoint> three = {point(0, 0), point(1, 0.8), point(2, 1)};
  EXPECT_NEAR(average_improved_quality(three, 0, 2), (0.4 + 0.9) / 2, 1e-15);
  EXPECT_TRUE(std::isnan(average_improved_quality({}, 0, 1)));
  // Against a fine midpoint rule on random concave hulls.
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int trial = 0; trial < 100; ++trial) {
    std::vector<CurvePoint> points;
    for (int i = 0; i < 8; ++i) points.push_back(point(u(rng), u(rng)));
    const auto hull = switchyard::nondecreasing_convex_hull(points);
    const double lo = -0.2 + 0.7 * u(rng), hi = lo + 0.8 * u(rng) + 1e-3;
    const int steps = 20000;
    double sum = 0.0;
    for (int s = 0; s < steps; ++s) sum += hull_at(hull, lo + (hi - lo) * (s + 0.5) / steps);
    // The midpoint rule is exact on linear pieces; a cell holding a kink whose slope jumps by Δ
    // is off by at most Δ·h²/8, so the mean is off by at most ΣΔ·h / (8·steps).
    // The hull is flat before its first point and after its last.
    double slope_jumps = 0.0, previous_slope = 0.0;
    for (size_t i = 0; i < hull.size(); ++i) {
      if (i + 1 < hull.size()) {
        ASSERT_LT(hull[i].cost, hull[i + 1].cost);
      }
      const double slope = i + 1 < hull.size() ? (hull[i + 1].quality - hull[i].quality) /
                                                     (hull[i + 1].cost - hull[i].cost)
                                               : 0.0;
      slope_jumps += std::abs(slope - previous_slope);
      previous_slope = slope;
    }
    const double h = (hi - lo) / steps;
    const double bound = slope_jumps * h / (8.0 * steps) + 1e-12;
    EXPECT_NEAR(average_improved_quality(hull, lo, hi), sum / steps, bound) << "trial " << trial;
  }
}

TEST(EvalMaths, AreaUnderPgr) {
  using switchyard::area_under_pgr;
  // The straight weak -> strong line: 0.5 whatever the qualities.
  EXPECT_NEAR(area_under_pgr({point(0, 0.3, 0.0), point(0, 0.7, 1.0)}, 0.3, 0.7), 0.5, 1e-15);
  EXPECT_NEAR(
      area_under_pgr({point(0, 0.3, 0.0), point(0, 0.5, 0.5), point(0, 0.7, 1.0)}, 0.3, 0.7), 0.5,
      1e-15);
  // A router that reaches the strong quality at 30% strong calls: 0.3 · 0.5 + 0.7 = 0.85.
  EXPECT_NEAR(
      area_under_pgr({point(0, 0.2, 0.0), point(0, 0.6, 0.3), point(0, 0.6, 1.0)}, 0.2, 0.6), 0.85,
      1e-15);
  // Above the strong model (the oracle can): PGR > 1 in the middle.
  EXPECT_NEAR(
      area_under_pgr({point(0, 0.2, 0.0), point(0, 1.0, 0.5), point(0, 0.6, 1.0)}, 0.2, 0.6),
      0.5 * 0.5 * (0 + 2) + 0.5 * 0.5 * (2 + 1), 1e-15);
  EXPECT_TRUE(std::isnan(area_under_pgr({point(0, 0.5, 0.0), point(0, 0.5, 1.0)}, 0.5, 0.5)));
  EXPECT_TRUE(std::isnan(area_under_pgr({}, 0.2, 0.6)));
}

TEST(EvalMaths, SplitRows) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (size_t n : {2, 3, 7, 100, 1001}) {
    for (int rep = 0; rep < 5; ++rep) {
      const double fraction = 0.05 + 0.9 * u(rng);
      const uint64_t seed = rng();
      const size_t n_train = size_t(std::llround(fraction * double(n)));
      if (n_train == 0 || n_train == n) continue;
      SCOPED_TRACE(fmt::format("n {}, fraction {}, seed {}", n, fraction, seed));
      std::vector<size_t> train, test, train2, test2;
      switchyard::split_rows(n, fraction, seed, train, test);
      EXPECT_EQ(train.size(), n_train);
      EXPECT_EQ(train.size() + test.size(), n);
      EXPECT_TRUE(std::is_sorted(train.begin(), train.end()));
      EXPECT_TRUE(std::is_sorted(test.begin(), test.end()));
      std::set<size_t> all(train.begin(), train.end());
      all.insert(test.begin(), test.end());
      EXPECT_EQ(all.size(), n);  // disjoint and covering
      EXPECT_EQ(*all.rbegin(), n - 1);
      switchyard::split_rows(n, fraction, seed, train2, test2);
      EXPECT_EQ(train2, train);
      EXPECT_EQ(test2, test);
      if (n >= 100) {
        switchyard::split_rows(n, fraction, seed + 1, train2, test2);
        EXPECT_NE(train2, train);
      }
    }
  }
  std::vector<size_t> train, test;
  for (double bad : {0.0, 1.0, -0.5, 1.5, kNaN})
    EXPECT_THAT(error_of([&] { switchyard::split_rows(10, bad, 0, train, test); }),
                HasSubstr("fraction"))
        << bad;
  EXPECT_THAT(error_of([&] { switchyard::split_rows(1, 0.5, 0, train, test); }),
              HasSubstr("empty side"));
  EXPECT_THAT(error_of([&] { switchyard::split_rows(0, 0.5, 0, train, test); }),
              HasSubstr("empty side"));
}

// ================================ evaluate_routers ================================

namespace {

// Three models; "strong" is right exactly on the prompts containing "hard", "weak" on a random
// 20% of the others, "mid" on a random 45% of all. Per-row costs 0.1, 0.5, 2 (±10%).
RoutingTable hard_table(std::mt19937_64& rng, size_t n, const std::string& weak_name = "weak") {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<std::string> prompts;
  std::vector<double> scores, costs;
  std::set<std::string> seen;
  while (prompts.size() < n) {
    const bool hard = rng() % 2 == 0;
    const std::string p = marked_prompt(rng, hard, "hard");
    if (!seen.insert(p).second) continue;
    prompts.push_back(p);
    scores.insert(scores.end(),
                  {double(!hard && u(rng) < 0.2), double(u(rng) < 0.45), double(hard)});
    costs.insert(costs.end(),
                 {0.1 * (1 + 0.1 * u(rng)), 0.5 * (1 + 0.1 * u(rng)), 2.0 * (1 + 0.1 * u(rng))});
  }
  return make_table({weak_name, "mid", "strong"}, prompts, scores, costs);
}

const RouterEval& router_named(const EvalResult& res, const std::string& name) {
  for (const auto& r : res.routers)
    if (r.name == name) return r;
  throw std::runtime_error("no router " + name);
}

}  // namespace

TEST(EvaluateRouters, SyntheticHardPrompts) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  const RoutingTable table = hard_table(rng, 600);
  EvalConfig config;
  config.seed = rng();
  config.strong = "strong";
  config.weak = "weak";
  config.routers = {spec_of("random", json::object(), 1), spec_of("best_single"),
                    spec_of("knn", {{"k", 10}}), spec_of("logistic"), spec_of("mf", {{"dim", 8}})};
  const EvalResult res = switchyard::evaluate_routers(table, config, "synthetic");
  ASSERT_EQ(res.routers.size(), 6u);
  EXPECT_EQ(res.routers[0].name, "oracle");
  EXPECT_EQ(res.train_rows + res.test_rows, 600u);
  EXPECT_EQ(res.train_rows, 300u);
  EXPECT_EQ(res.cost_source, "mean_cost");
  EXPECT_EQ(res.models[size_t(res.strong)], "strong");
  EXPECT_EQ(res.models[size_t(res.weak)], "weak");

  // Ground truth on the same split.
  std::vector<size_t> train, test;
  switchyard::split_rows(table.rows(), config.train_fraction, config.seed, train, test);
  std::vector<double> quality(3, 0.0);
  double best_possible = 0.0;
  for (size_t r : test) {
    double top = 0.0;
    for (size_t m = 0; m < 3; ++m) {
      quality[m] += table.score(r, m) / double(test.size());
      top = std::max(top, table.score(r, m));
    }
    best_possible += top / double(test.size());
  }
  for (size_t m = 0; m < 3; ++m) EXPECT_NEAR(res.model_quality[m], quality[m], 1e-12);

  const RouterEval& oracle = res.routers[0];
  for (const auto& r : res.routers) {
    SCOPED_TRACE(r.name);
    std::printf("%-12s APGR %.3f (deciles %.3f)  AIQ %.4f  CPT50 %.3f\n", r.name.c_str(), r.apgr,
                r.apgr_deciles, r.aiq, r.cpt50);
    EXPECT_GE(oracle.apgr, r.apgr - 1e-12);
    // The routing curve runs from (0, q_weak) to (1, q_strong) through increasing shares.
    ASSERT_GE(r.pair_curve.size(), 2u);
    EXPECT_EQ(r.pair_curve.front().strong_share, 0.0);
    EXPECT_NEAR(r.pair_curve.front().quality, quality[0], 1e-12);
    EXPECT_NEAR(r.pair_curve.back().strong_share, 1.0, 1e-12);
    EXPECT_NEAR(r.pair_curve.back().quality, quality[2], 1e-12);
    for (size_t i = 1; i < r.pair_curve.size(); ++i)
      EXPECT_GT(r.pair_curve[i].strong_share, r.pair_curve[i - 1].strong_share);
    EXPECT_EQ(r.cost_aware.size(), 41u);
    EXPECT_EQ(r.cascade.size(), 41u);
    for (size_t i = 1; i < r.hull.size(); ++i) EXPECT_GT(r.hull[i].quality, r.hull[i - 1].quality);
    ASSERT_EQ(r.thresholds.size(), 3u);
  }
  // The oracle at λ = 0 takes a right model whenever there is one.
  EXPECT_NEAR(oracle.cost_aware.front().quality, best_possible, 1e-12);
  // The oracle's curve by hand: shares h (hard: strong right), w (weak right), z (neither) of the
  // test prompts; q_weak = w, q_strong = h. Hard prompts first (gain +1) reach PGR h / (h - w) at
  // share h, the neither-group (gain 0) keeps it, the weak's wins (gain -1) bring it to 1.
  double h = 0.0, w = 0.0;
  for (size_t r : test) {
    h += table.score(r, 2) / double(test.size());
    w += table.score(r, 0) / double(test.size());
  }
  const double z = 1.0 - h - w, peak = h / (h - w);
  EXPECT_NEAR(oracle.apgr, h * peak / 2 + z * peak + w * (peak + 1) / 2, 1e-12);
  EXPECT_GE(oracle.aiq, res.zero_aiq - 1e-12);
  EXPECT_NEAR(router_named(res, "random").apgr, 0.5, 0.12);
  EXPECT_GT(router_named(res, "knn").apgr, 0.6);  // filler words dilute its similarities
  EXPECT_GT(router_named(res, "logistic").apgr, 0.7);
  EXPECT_GT(router_named(res, "mf").apgr, 0.7);
  // A constant gain is the straight mixture: APGR 0.5, PGR 50% at half the calls.
  const RouterEval& single = router_named(res, "best_single");
  EXPECT_NEAR(single.apgr, 0.5, 1e-12);
  EXPECT_NEAR(single.apgr_deciles, 0.5, 1e-12);
  EXPECT_NEAR(single.cpt50, 0.5, 1e-12);
  EXPECT_NEAR(single.cpt80, 0.8, 1e-12);
  // Thresholds calibrated on the test prompts' gains reach the target share up to ties.
  for (const char* name : {"random", "logistic", "mf", "knn"}) {
    for (const auto& th : router_named(res, name).thresholds) {
      std::printf("%-9s target share %.2f -> test share %.3f, PGR %.3f\n", name, th.target_share,
                  th.test_share, th.pgr);
      if (std::string(name) != "knn") {  // kNN's gains are multiples of 1/k: many ties
        EXPECT_NEAR(th.test_share, th.target_share, 0.05) << name;
      }
    }
  }

  // eval_to_json: the documented fields, with the numbers of the result.
  const json j = switchyard::eval_to_json(res);
  for (const char* key : {"dataset", "models", "train_rows", "test_rows", "skipped_rows", "split",
                          "strong", "weak", "cost_source", "model_quality", "model_cost",
                          "aiq_cost_range", "zero_router", "router_specs", "routers"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_EQ(j.at("dataset"), "synthetic");
  EXPECT_EQ(j.at("split").at("seed"), config.seed);
  EXPECT_EQ(j.at("split").at("train_fraction"), 0.5);
  EXPECT_EQ(j.at("strong"), "strong");
  EXPECT_EQ(j.at("router_specs").size(), 5u);
  EXPECT_EQ(j.at("aiq_cost_range").size(), 2u);
  EXPECT_TRUE(j.at("zero_router").contains("aiq") && j.at("zero_router").contains("hull"));
  ASSERT_EQ(j.at("routers").size(), res.routers.size());
  for (size_t i = 0; i < res.routers.size(); ++i) {
    const json& r = j.at("routers")[i];
    for (const char* key :
         {"name", "kind", "params", "apgr", "apgr_deciles", "cpt50", "cpt80", "thresholds", "aiq",
          "fit_seconds", "route_us_per_prompt", "pair_curve", "cost_aware", "cascade", "hull"})
      EXPECT_TRUE(r.contains(key)) << res.routers[i].name << ": " << key;
    EXPECT_EQ(r.at("name"), res.routers[i].name);
    EXPECT_EQ(r.at("apgr").get<double>(), res.routers[i].apgr);
    ASSERT_EQ(r.at("thresholds").size(), 3u);
    for (const char* key : {"target_share", "threshold", "test_share", "pgr"})
      EXPECT_TRUE(r.at("thresholds")[0].contains(key)) << key;
    EXPECT_EQ(r.at("pair_curve")[0].at("param"), nullptr);  // the start has no threshold
  }
  EXPECT_EQ(j.at("routers")[3].at("params").at("k"), 10);
  EXPECT_EQ(j.dump().find("NaN"), std::string::npos);  // non-finite numbers are null
  const std::string table_text = switchyard::eval_text_table(res);
  for (const auto& r : res.routers) EXPECT_THAT(table_text, HasSubstr(r.name));
}

TEST(EvaluateRouters, HtmlReportEscapesNames) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  const RoutingTable table = hard_table(rng, 80, "<w&1>");
  EvalConfig config;
  config.routers = {spec_of("best_single"), spec_of("knn", {{"k", 5}})};
  config.routers[1].name = "knn \"quoted\" <script>";
  const EvalResult res = switchyard::evaluate_routers(table, config, "data<set>&");
  const std::string html = switchyard::eval_html(res);
  std::string head = html.substr(0, 15);
  for (char& ch : head) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  EXPECT_EQ(head, "<!doctype html>");
  EXPECT_THAT(html, HasSubstr("<svg"));
  EXPECT_THAT(html, HasSubstr("</html>"));
  size_t open = 0, close = 0;
  for (size_t at = html.find("<svg"); at != std::string::npos; at = html.find("<svg", at + 1))
    ++open;
  for (size_t at = html.find("</svg>"); at != std::string::npos; at = html.find("</svg>", at + 1))
    ++close;
  EXPECT_EQ(open, close);
  EXPECT_GE(open, 2u);
  EXPECT_THAT(html, HasSubstr("&lt;w&amp;1&gt;"));
  EXPECT_THAT(html, testing::Not(HasSubstr("<w&1>")));
  EXPECT_THAT(html, testing::Not(HasSubstr("<script>")));
  EXPECT_THAT(html, testing::Not(HasSubstr("data<set>")));
}

TEST(EvaluateRouters, RejectsBadPairsAndTables) {
  SCOPED_TRACE(seed_trace());
  auto rng = test_rng();
  const RoutingTable table = hard_table(rng, 20);
  EvalConfig config;
  config.strong = "gpt-9";
  EXPECT_THAT(error_of([&] { switchyard::evaluate_routers(table, config, "d"); }),
              HasSubstr("gpt-9"));
  config.strong = config.weak = "mid";
  EXPECT_THAT(error_of([&] { switchyard::evaluate_routers(table, config, "d"); }),
              HasSubstr("same model"));
  config.strong = config.weak = "";
  config.train_fraction = 1.0;
  EXPECT_THAT(error_of([&] { switchyard::evaluate_routers(table, config, "d"); }),
              HasSubstr("fraction"));
  const RoutingTable one = make_table({"only"}, {"a", "b", "c"}, {1, 0, 1});
  EXPECT_THAT(error_of([&] { switchyard::evaluate_routers(one, EvalConfig{}, "d"); }),
              HasSubstr("two models"));
  EXPECT_THAT(error_of([&] { switchyard::train_router(spec_of("knn"), table, {}); }),
              HasSubstr("no training rows"));
}

// ================================ multi-file data ================================

TEST(RoutingData, FilesAppendAndCrossFileDuplicatesAreSkipped) {
  ScratchDir dir;
  const std::string a = dir.write("a.csv", "prompt,m1,m2\np1,1,0\np2,0,1\n");
  const std::string b = dir.write("b.csv", "prompt,m1,m2\np2,1,1\np3,0.5,0.25\n");
  const std::string c = dir.write("c.csv", "prompt,m2,m1\np4,1,0\n");  // same models, other order
  const RoutingTable t = switchyard::read_routing_data({a, b, c}, "auto", "");
  EXPECT_EQ(t.models, (std::vector<std::string>{"m1", "m2"}));
  EXPECT_EQ(t.prompts, (std::vector<std::string>{"p1", "p2", "p3", "p4"}));
  EXPECT_EQ(t.scores, (std::vector<double>{1, 0, 0, 1, 0.5, 0.25, 0, 1}));
  ASSERT_EQ(t.issues.size(), 1u);
  EXPECT_EQ(t.issues[0].file, b);
  EXPECT_EQ(t.issues[0].record, 0u);
  EXPECT_EQ(t.issues[0].line, 2u);  // the row's own line in b.csv
  EXPECT_EQ(t.lines, (std::vector<size_t>{2, 3, 3, 2}));
  EXPECT_EQ(t.issues[0].column, "prompt");
  EXPECT_THAT(t.issues[0].reason, HasSubstr("earlier file"));
  switchyard::ReadOptions strict;
  strict.strict = true;
  EXPECT_THAT(error_of([&] {
                switchyard::read_routing_data({a, b}, "auto", "", strict);
              }),
              testing::AllOf(HasSubstr(b), HasSubstr("line 2"), HasSubstr("prompt")));
  const std::string d = dir.write("d.csv", "prompt,m1,m3\nq,1,0\n");
  EXPECT_THAT(error_of([&] {
                switchyard::read_routing_data({a, d}, "auto", "");
              }),
              testing::AllOf(HasSubstr(d), HasSubstr("m3")));
  // append_table directly: into an empty table, then a mismatch.
  RoutingTable into;
  switchyard::append_table(into, switchyard::read_routerbench(a), a, false);
  EXPECT_EQ(into.rows(), 2u);
  EXPECT_THAT(
      error_of([&] { switchyard::append_table(into, switchyard::read_routerbench(d), d, false); }),
      HasSubstr(d));
}

TEST(RoutingData, FoldersReadTheirCsvFilesInNameOrder) {
  ScratchDir dir;
  dir.write("f/z.csv", "prompt,m1,m2\nfrom z,1,0\nshared,1,1\n");
  dir.write("f/a.csv", "prompt,m1,m2\nfrom a,0,1\nshared,0,0\n");
  dir.write("f/notes.txt", "not data");
  dir.write("f/sub/b.csv", "prompt,m1,m2\nnested,1,1\n");  // folders are not recursive
  const RoutingTable t = switchyard::read_routing_data({dir.path("f")}, "auto", "");
  EXPECT_EQ(t.prompts, (std::vector<std::string>{"from a", "shared", "from z"}));
  EXPECT_EQ(t.score(1, 0), 0.0);  // "shared" from a.csv, the first in name order
  ASSERT_EQ(t.issues.size(), 1u);
  EXPECT_EQ(t.issues[0].file, dir.path("f/z.csv"));
  fs::create_directories(dir.path("empty"));
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({dir.path("empty")}, "auto", ""); }),
              testing::AllOf(HasSubstr(dir.path("empty")), HasSubstr("no .csv")));
}

TEST(RoutingData, AutoFormatDetection) {
  ScratchDir dir;
  const std::string routellm = dir.write("gsm8k_responses.csv",
                                         "prompt,weak,strong,weak_response,strong_response\n"
                                         "q1,True,False,\"an answer, with a comma\",b\n"
                                         "q2,False,True,c,d\n");
  const RoutingTable r = switchyard::read_routing_data({routellm}, "auto", "");
  EXPECT_EQ(r.models, (std::vector<std::string>{"weak", "strong"}));
  EXPECT_EQ(r.scores, (std::vector<double>{1, 0, 0, 1}));
  EXPECT_EQ(r.eval_names, (std::vector<std::string>{"gsm8k", "gsm8k"}));
  // The same file read as RouterBench fails: True/False are not numeric scores.
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({routellm}, "routerbench", ""); }),
              testing::AllOf(HasSubstr(routellm), HasSubstr("'True'")));
  const std::string bench = dir.write("bench.csv", "prompt,m1,m1|total_cost,m2\np,0.5,0.1,1\n");
  const RoutingTable b = switchyard::read_routing_data({bench}, "auto", "");
  EXPECT_EQ(b.models, (std::vector<std::string>{"m1", "m2"}));
  EXPECT_EQ(b.cost(0, 0), 0.1);
  const std::string jsonl = dir.write("bench.jsonl", "{\"prompt\": \"p\", \"m1\": 1, \"m2\": 0}\n");
  EXPECT_EQ(switchyard::read_routing_data({jsonl}, "auto", "").scores, (std::vector<double>{1, 0}));
  const std::string llmrouter =
      dir.write("data.json", R"([{"question": "q", "scores": {"m1": 0.5, "m2": 1.0}}])");
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({llmrouter}, "auto", ""); }),
              HasSubstr("--prices"));
  const std::string prices =
      dir.write("prices.json", R"({"m1": {"input_price": 1, "output_price": 2},
                         "m2": {"input_price": 3, "output_price": 4}})");
  const RoutingTable l = switchyard::read_routing_data({llmrouter}, "auto", prices);
  EXPECT_EQ(l.rows(), 1u);
  EXPECT_EQ(l.input_price_per_mtok.size(), 2u);
  // Errors: no paths, a missing file, an unknown format, no rows, only bad rows.
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({}, "auto", ""); }),
              HasSubstr("--data"));
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({dir.path("nope.csv")}, "auto", ""); }),
              HasSubstr(dir.path("nope.csv")));
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({bench}, "xml", ""); }),
              HasSubstr("xml"));
  const std::string header_only = dir.write("h.csv", "prompt,m1,m2\n");
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({header_only}, "auto", ""); }),
              HasSubstr("no rows"));
  const std::string all_bad = dir.write("bad.csv", "prompt,m1,m2\np,x,1\nq,1,\n");
  EXPECT_THAT(error_of([&] { switchyard::read_routing_data({all_bad}, "auto", ""); }),
              testing::AllOf(HasSubstr("no usable rows"), HasSubstr(all_bad)));
}

// ================================ real data ================================

TEST(RoutersOnRealData, RouteLlmGsm8kKnnBeatsRandom) {
  SKIP_WITHOUT_LLM_DATA();
  const std::string file = (llm_routing_data_dir() / "routellm" / "gsm8k_responses.csv").string();
  const RoutingTable table = switchyard::read_routing_data({file}, "auto", "");
  EvalConfig config;  // the default 50/50 split, seed 0
  config.routers = {spec_of("knn", json::object()), spec_of("random")};
  for (auto& spec : config.routers) spec.features = FeaturizerConfig{};  // the defaults
  const EvalResult res = switchyard::evaluate_routers(table, config, "gsm8k");
  const RouterEval& knn_eval = router_named(res, "knn");
  std::printf("GSM8K (%zu test rows): kNN APGR %.3f (k = %s), random %.3f, oracle %.3f\n",
              res.test_rows, knn_eval.apgr, knn_eval.params.dump().c_str(),
              router_named(res, "random").apgr, res.routers[0].apgr);
  EXPECT_EQ(res.models[size_t(res.strong)], "gpt-4-1106-preview");
  EXPECT_GT(knn_eval.apgr, 0.55);
  EXPECT_GT(res.routers[0].apgr, 1.0);
}

TEST(RoutersOnRealData, LlmRouterClearsTheZeroRouter) {
  SKIP_WITHOUT_LLM_DATA();
  const std::string file = (llm_routing_data_dir() / "llmrouter" / "train.json").string();
  const std::string prices = (llm_routing_data_dir() / "llmrouter" / "default_llm.json").string();
  const RoutingTable table = switchyard::read_routing_data({file}, "auto", prices);
  EvalConfig config;
  config.routers = {spec_of("knn", json::object()), spec_of("logistic"), spec_of("best_single")};
  for (auto& spec : config.routers) spec.features = FeaturizerConfig{};  // the defaults
  const EvalResult res = switchyard::evaluate_routers(table, config, "llmrouter");
  EXPECT_EQ(res.cost_source, "prices");
  double best = -1;
  std::string best_name;
  for (size_t i = 1; i < res.routers.size(); ++i) {
    std::printf("LLMRouter %s: AIQ %.4f\n", res.routers[i].name.c_str(), res.routers[i].aiq);
    if (res.routers[i].aiq > best) best = res.routers[i].aiq, best_name = res.routers[i].name;
  }
  std::printf("LLMRouter (%zu x %zu): zero router AIQ %.4f, best router %s %.4f, oracle %.4f\n",
              res.test_rows, res.models.size(), res.zero_aiq, best_name.c_str(), best,
              res.routers[0].aiq);
  EXPECT_GE(best, res.zero_aiq - 0.005);
  EXPECT_GE(res.routers[0].aiq, res.zero_aiq);
}
