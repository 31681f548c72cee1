// LLM-routing data readers: the RFC 4180 CSV parser, RouterBench CSV/JSONL tables written here,
// the bad-row policy (skipped and reported, or strict), and the real RouteLLM and LLMRouter files
// in ../shared/data/llm-routing (skipped loudly when that folder is absent).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <switchyard/csv.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/llm_data.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace fs = std::filesystem;

#include "scratch_dir.h"

using switchyard::CsvRecord;
using switchyard::Error;
using switchyard::parse_csv;
using switchyard::ReadOptions;
using switchyard::RoutingTable;
using switchyard::testing_support::error_of;
using switchyard::testing_support::llm_routing_data_dir;
using switchyard::testing_support::ScratchDir;
using testing::ElementsAre;
using testing::HasSubstr;

TEST(Csv, QuotesCommasNewlinesAndDoubledQuotes) {
  const auto records = parse_csv("a,\"b,c\",\"say \"\"hi\"\"\"\n\"multi\nline\",x,\n", "t.csv");
  ASSERT_EQ(records.size(), 2u);
  EXPECT_THAT(records[0].fields, ElementsAre("a", "b,c", "say \"hi\""));
  EXPECT_THAT(records[1].fields, ElementsAre("multi\nline", "x", ""));
  EXPECT_EQ(records[0].line, 1u);
  EXPECT_EQ(records[1].line, 2u);
}

TEST(Csv, CrlfEmptyFieldsAndLineNumbers) {
  const auto records = parse_csv("h1,h2\r\n,\r\n\"a\r\nb\",\"\"\r\nlast,row", "t.csv");
  ASSERT_EQ(records.size(), 4u);
  EXPECT_THAT(records[0].fields, ElementsAre("h1", "h2"));
  EXPECT_THAT(records[1].fields, ElementsAre("", ""));
  EXPECT_THAT(records[2].fields, ElementsAre("a\r\nb", ""));  // CRLF inside quotes is data
  EXPECT_THAT(records[3].fields, ElementsAre("last", "row"));
  EXPECT_EQ(records[3].line, 5u);  // the quoted field spanned lines 3 and 4
}

TEST(Csv, EmptyTextAndByteOrderMark) {
  EXPECT_TRUE(parse_csv("", "t.csv").empty());
  const auto records = parse_csv("\xEF\xBB\xBFprompt,m\n", "t.csv");
  ASSERT_EQ(records.size(), 1u);
  EXPECT_THAT(records[0].fields, ElementsAre("prompt", "m"));
}

TEST(Csv, MalformedQuotingNamesTheLine) {
  EXPECT_THAT(error_of([] { parse_csv("a,b\nc,\"open\nstill open\n", "bad.csv"); }),
              HasSubstr("bad.csv:2: unterminated quoted field"));
  EXPECT_THAT(error_of([] { parse_csv("a,\"b\"x\n", "bad.csv"); }),
              HasSubstr("bad.csv:1: unexpected character 'x' after a closing quote"));
  EXPECT_THAT(error_of([] { parse_csv("a,b\nc,d\"e\n", "bad.csv"); }),
              HasSubstr("bad.csv:2: quote inside an unquoted field"));
}

TEST(RouterBench, CsvRoundTrip) {
  ScratchDir dir;
  const std::string file =
      dir.write("bench.csv",
                "prompt,eval_name,gpt-4,gpt-4|total_cost,llama,llama|total_cost,sample_id\n"
                "\"What is 2+2?\nThink.\",gsm8k,1.0,0.003,0,0.0001,a\n"
                "\"Say \"\"x\"\", please\",mmlu,0.5,,1,2e-5,b\r\n");
  ReadOptions options;
  options.ignore_columns = {"sample_id"};
  const RoutingTable t = switchyard::read_routerbench(file, options);
  EXPECT_THAT(t.models, ElementsAre("gpt-4", "llama"));
  EXPECT_THAT(t.prompts, ElementsAre("What is 2+2?\nThink.", "Say \"x\", please"));
  EXPECT_THAT(t.eval_names, ElementsAre("gsm8k", "mmlu"));
  EXPECT_THAT(t.scores, ElementsAre(1.0, 0.0, 0.5, 1.0));
  EXPECT_DOUBLE_EQ(t.cost(0, 0), 0.003);
  EXPECT_DOUBLE_EQ(t.cost(0, 1), 0.0001);
  EXPECT_TRUE(std::isnan(t.cost(1, 0)));  // empty cost = unknown, not zero
  EXPECT_DOUBLE_EQ(t.cost(1, 1), 2e-5);
  EXPECT_TRUE(t.issues.empty());
}

TEST(RouterBench, CsvWithoutCostsOrEvalName) {
  ScratchDir dir;
  const std::string file = dir.write("b.csv", "a,prompt,b\n1,p,0\n");
  const RoutingTable t = switchyard::read_routerbench(file);
  EXPECT_THAT(t.models, ElementsAre("a", "b"));
  EXPECT_THAT(t.eval_names, ElementsAre(""));
  ASSERT_EQ(t.costs.size(), 2u);
  EXPECT_TRUE(std::isnan(t.costs[0]) && std::isnan(t.costs[1]));
}

TEST(RouterBench, JsonlRoundTrip) {
  ScratchDir dir;
  const std::string file =
      dir.write("bench.jsonl",
                "{\"prompt\": \"p1\", \"eval_name\": \"e\", \"m1\": 1, \"m1|total_cost\": 0.25, "
                "\"m2\": 0.75}\n"
                "\n"
                "{\"prompt\": \"p2\", \"m2\": false, \"m1\": true, \"m1|total_cost\": null}\r\n");
  const RoutingTable t = switchyard::read_routerbench(file);
  EXPECT_THAT(t.models, ElementsAre("m1", "m2"));  // the first row's key order
  EXPECT_THAT(t.prompts, ElementsAre("p1", "p2"));
  EXPECT_THAT(t.eval_names, ElementsAre("e", ""));
  EXPECT_THAT(t.scores, ElementsAre(1.0, 0.75, 1.0, 0.0));
  EXPECT_DOUBLE_EQ(t.cost(0, 0), 0.25);
  EXPECT_TRUE(std::isnan(t.cost(0, 1)));
  EXPECT_TRUE(std::isnan(t.cost(1, 0)));
  EXPECT_TRUE(t.issues.empty());
}

TEST(RouterBench, UnknownColumnsAreErrorsUnlessIgnored) {
  ScratchDir dir;
  const std::string file = dir.write("u.csv", "prompt,m1,m1|model_response,m2\np,1,text,0\n");
  EXPECT_THAT(error_of([&] { switchyard::read_routerbench(file); }),
              HasSubstr("unknown column 'm1|model_response'"));
  ReadOptions options;
  options.ignore_columns = {"*|model_response"};
  EXPECT_THAT(switchyard::read_routerbench(file, options).models, ElementsAre("m1", "m2"));

  const std::string orphan = dir.write("o.csv", "prompt,m1,m9|total_cost\np,1,0.1\n");
  EXPECT_THAT(error_of([&] { switchyard::read_routerbench(orphan); }),
              HasSubstr("cost column 'm9|total_cost' names no model"));
  const std::string no_prompt = dir.write("n.csv", "question,m1\np,1\n");
  EXPECT_THAT(error_of([&] { switchyard::read_routerbench(no_prompt); }),
              HasSubstr("no 'prompt' column"));
  EXPECT_THAT(error_of([&] { switchyard::read_routerbench(dir.write("x.tsv", "")); }),
              HasSubstr("unknown extension '.tsv'"));
}

TEST(RouterBench, BadRowsAreSkippedAndReported) {
  ScratchDir dir;
  const std::string file = dir.write("bad.csv",
                                     "prompt,m1,m1|total_cost,m2\n"
                                     "good,1,0.5,0\n"           // line 2
                                     "\"two\nlines\",,0.5,1\n"  // line 3: missing score
                                     "nan score,abc,0.5,1\n"    // line 5
                                     "bad cost,1,cheap,1\n"     // line 6
                                     "short,1\n"                // line 7
                                     "good,0,0.1,1\n"           // line 8: duplicate prompt
                                     "also good,0,0.1,1\n");
  const RoutingTable t = switchyard::read_routerbench(file);
  EXPECT_THAT(t.prompts, ElementsAre("good", "also good"));
  EXPECT_THAT(t.scores, ElementsAre(1.0, 0.0, 0.0, 1.0));  // the first "good" row is kept
  ASSERT_EQ(t.issues.size(), 5u);
  std::vector<std::size_t> lines;
  for (const auto& issue : t.issues) {
    EXPECT_EQ(issue.file, file);
    lines.push_back(issue.line);
  }
  EXPECT_THAT(lines, ElementsAre(3u, 5u, 6u, 7u, 8u));
  EXPECT_EQ(t.issues[0].column, "m1");
  EXPECT_EQ(t.issues[0].reason, "missing score");
  EXPECT_EQ(t.issues[1].reason, "non-numeric score 'abc'");
  EXPECT_EQ(t.issues[2].column, "m1|total_cost");
  EXPECT_EQ(t.issues[2].reason, "non-numeric cost 'cheap'");
  EXPECT_EQ(t.issues[3].reason, "expected 4 fields, got 2");
  EXPECT_EQ(t.issues[4].column, "prompt");
  EXPECT_EQ(t.issues[4].reason, "duplicate prompt (first at line 2)");
}

TEST(RouterBench, StrictModeThrowsAtTheFirstBadRow) {
  ScratchDir dir;
  ReadOptions strict;
  strict.strict = true;
  const std::string file = dir.write("s.csv", "prompt,m1,m2\nok,1,0\nx,1,nan\n");
  const std::string message = error_of([&] { switchyard::read_routerbench(file, strict); });
  EXPECT_THAT(message, HasSubstr(fmt::format("{}:3: column 'm2': non-numeric score 'nan'", file)));

  const std::string dup = dir.write("d.jsonl",
                                    "{\"prompt\": \"p\", \"m\": 1}\n"
                                    "{\"prompt\": \"p\", \"m\": 0}\n");
  EXPECT_THAT(
      error_of([&] { switchyard::read_routerbench(dup, strict); }),
      HasSubstr(fmt::format("{}:2: column 'prompt': duplicate prompt (first at line 1)", dup)));
  const RoutingTable lenient = switchyard::read_routerbench(dup);
  EXPECT_EQ(lenient.rows(), 1u);
  ASSERT_EQ(lenient.issues.size(), 1u);
  EXPECT_EQ(lenient.issues[0].line, 2u);
}

TEST(RouterBench, JsonlBadRows) {
  ScratchDir dir;
  const std::string file = dir.write("b.jsonl",
                                     "{\"prompt\": \"a\", \"m\": 1, \"m|total_cost\": 1}\n"
                                     "{\"prompt\": \"b\"}\n"
                                     "{\"prompt\": \"c\", \"m\": \"high\"}\n"
                                     "{\"prompt\": \"d\", \"m\": 1, \"m|total_cost\": \"x\"}\n"
                                     "{not json\n"
                                     "{\"prompt\": \"e\", \"m\": \"0.25\"}\n");
  const RoutingTable t = switchyard::read_routerbench(file);
  EXPECT_THAT(t.prompts, ElementsAre("a", "e"));
  EXPECT_THAT(t.scores, ElementsAre(1.0, 0.25));
  ASSERT_EQ(t.issues.size(), 4u);
  EXPECT_EQ(t.issues[0].line, 2u);
  EXPECT_EQ(t.issues[0].reason, "missing score");
  EXPECT_EQ(t.issues[1].line, 3u);
  EXPECT_EQ(t.issues[2].line, 4u);
  EXPECT_EQ(t.issues[2].column, "m|total_cost");
  EXPECT_EQ(t.issues[3].line, 5u);
  EXPECT_THAT(t.issues[3].reason, HasSubstr("invalid JSON"));

  const std::string extra = dir.write("e.jsonl",
                                      "{\"prompt\": \"a\", \"m\": 1}\n"
                                      "{\"prompt\": \"b\", \"m\": 1, \"surprise\": 2}\n");
  EXPECT_THAT(error_of([&] { switchyard::read_routerbench(extra); }),
              HasSubstr(":2: unknown key 'surprise'"));
}

TEST(RouteLlm, PairwiseSmallFile) {
  ScratchDir dir;
  const std::string file = dir.write("gsm8k_responses.csv",
                                     "prompt,weak,strong,weak_response,strong_response\n"
                                     "q1,True,True,\"a, b\",c\n"
                                     "q2,False,True,x,y\n"
                                     "q3,maybe,True,x,y\n");
  const RoutingTable t = switchyard::read_routellm_pairwise(file);
  EXPECT_THAT(t.models, ElementsAre("weak", "strong"));
  EXPECT_THAT(t.scores, ElementsAre(1.0, 1.0, 0.0, 1.0));
  EXPECT_THAT(t.eval_names, ElementsAre("gsm8k", "gsm8k"));
  ASSERT_EQ(t.issues.size(), 1u);
  EXPECT_EQ(t.issues[0].line, 4u);
  EXPECT_EQ(t.issues[0].column, "weak");
  EXPECT_EQ(t.issues[0].reason, "expected True or False, got 'maybe'");
}

TEST(LlmRouter, SmallFileWithPrices) {
  ScratchDir dir;
  const std::string file =
      dir.write("d.json",
                R"([{"question": "q1", "scores": {"b": 0.5, "a": 1.0}, "cluster_id": 2},
          {"question": "q2", "scores": {"b": 0.0}},
          {"question": "q1", "scores": {"b": 1.0, "a": 1.0}}])");
  const std::string prices = dir.write(
      "p.json",
      R"({"a": {"input_price": 0.2, "output_price": 0.4}, "b": {"input_price": 1, "output_price": 2}})");
  const RoutingTable t = switchyard::read_llmrouter(file, prices);
  EXPECT_THAT(t.models, ElementsAre("b", "a"));
  EXPECT_THAT(t.prompts, ElementsAre("q1"));
  EXPECT_THAT(t.eval_names, ElementsAre("cluster_2"));
  EXPECT_THAT(t.scores, ElementsAre(0.5, 1.0));
  EXPECT_THAT(t.input_price_per_mtok, ElementsAre(1.0, 0.2));
  EXPECT_THAT(t.output_price_per_mtok, ElementsAre(2.0, 0.4));
  ASSERT_EQ(t.issues.size(), 2u);
  EXPECT_EQ(t.issues[0].record, 1u);
  EXPECT_EQ(t.issues[0].column, "a");
  EXPECT_EQ(t.issues[1].reason, "duplicate prompt (first at record 0)");

  ReadOptions strict;
  strict.strict = true;
  EXPECT_THAT(error_of([&] { switchyard::read_llmrouter(file, prices, strict); }),
              HasSubstr(fmt::format("{}: record 1: column 'a': missing score", file)));
  const std::string no_price =
      dir.write("q.json", R"({"a": {"input_price": 0.2, "output_price": 0.4}})");
  EXPECT_THAT(error_of([&] { switchyard::read_llmrouter(file, no_price); }),
              HasSubstr("no price for model 'b'"));
}

TEST(RealData, RouteLlmGsm8k) {
  SKIP_WITHOUT_LLM_DATA();
  ReadOptions strict;
  strict.strict = true;
  const RoutingTable t = switchyard::read_routellm_pairwise(
      (llm_routing_data_dir() / "routellm" / "gsm8k_responses.csv").string(), strict);
  EXPECT_THAT(t.models, ElementsAre("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"));
  std::printf("RouteLLM GSM8K: %zu rows, %zu issues\n", t.rows(), t.issues.size());
  EXPECT_GT(t.rows(), 1000u);
  EXPECT_LT(t.rows(), 2000u);
  double strong = 0.0;
  for (std::size_t r = 0; r < t.rows(); ++r) strong += t.score(r, 1);
  EXPECT_GT(strong / static_cast<double>(t.rows()), 0.5);  // GPT-4 solves most of GSM8K
}

TEST(RealData, RouteLlmMmlu) {
  SKIP_WITHOUT_LLM_DATA();
  std::size_t rows = 0;
  std::size_t issues = 0;
  std::size_t files = 0;
  for (const auto& entry :
       fs::directory_iterator(llm_routing_data_dir() / "routellm" / "mmlu_responses")) {
    if (entry.path().extension() != ".csv") continue;
    const RoutingTable t = switchyard::read_routellm_pairwise(entry.path().string());
    EXPECT_THAT(t.models,
                ElementsAre("mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"));
    for (const auto& issue : t.issues) {
      EXPECT_EQ(issue.reason.rfind("duplicate prompt", 0), 0u) << issue.file << ":" << issue.line;
    }
    rows += t.rows();
    issues += t.issues.size();
    ++files;
  }
  std::printf("RouteLLM MMLU: %zu files, %zu rows, %zu duplicate prompts skipped\n", files, rows,
              issues);
  EXPECT_EQ(files, 57u);
  EXPECT_GT(rows, 13000u);
  EXPECT_LT(rows, 15000u);
}

TEST(RealData, LlmRouter) {
  SKIP_WITHOUT_LLM_DATA();
  const std::string prices = (llm_routing_data_dir() / "llmrouter" / "default_llm.json").string();
  ReadOptions strict;
  strict.strict = true;
  for (const char* name : {"train.json", "test.json"}) {
    const RoutingTable t = switchyard::read_llmrouter(
        (llm_routing_data_dir() / "llmrouter" / name).string(), prices, strict);
    std::printf("LLMRouter %s: %zu rows x %zu models\n", name, t.rows(), t.models.size());
    EXPECT_EQ(t.models.size(), 9u);
    EXPECT_THAT(t.models, testing::Contains("qwen2.5-7b-instruct"));
    EXPECT_THAT(t.models, testing::Contains("llama-3.3-nemotron-super-49b-v1"));
    EXPECT_GT(t.rows(), 100u);
    for (std::size_t k = 0; k < t.models.size(); ++k) {
      EXPECT_GT(t.input_price_per_mtok[k], 0.0) << t.models[k];
    }
    for (double s : t.scores) {
      EXPECT_GE(s, 0.0);
      EXPECT_LE(s, 1.0);
    }
  }
}
