// The comparison report (include/switchyard/report.h) on synthetic runs: what index.html and
// summary.md contain (plots, table rows, escaping, no network references), and that malformed
// metrics lines fail with an error naming the file and line.
//
// `test_report --write-fixture DIR` instead writes three synthetic runs to DIR/report-runs and
// their report to DIR/report (plus DIR/report-runs/expect.json) for the browser test
// (tests/report/test_report_browser.py).
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <switchyard/error.h>
#include <switchyard/report.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "report/seed_comparison.h"
#include "report/svg_plot.h"

namespace switchyard {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// How a synthetic router behaves; the numbers only need to look like training.
struct Profile {
  std::string name;
  json router;
  double final_loss = 2.0;
  double imbalance_start = 1.0, imbalance_end = 0.2;  // spread of the expert logits
  double experts_start = 2, experts_end = 2;          // experts per token
  double dropped = 0;                                 // dropped fraction at the start
  double mi_end = 0.3;                                // bits, with domains
  double fluctuation = 1;                             // scale of the routing fluctuation
  uint32_t seed = 1;
};

struct Shape {
  int steps = 40, eval_every = 10, layers = 2, experts = 8;
  bool domains = true;
};

std::string slurp(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t pos = haystack.find(needle); pos != std::string::npos;
       pos = haystack.find(needle, pos + needle.size()))
    ++n;
  return n;
}

// Writes run.json and metrics.jsonl for one synthetic run into `dir`.
void write_run(const fs::path& dir, const Profile& p, const Shape& s) {
  fs::create_directories(dir);
  std::mt19937 rng(p.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const int tokens_per_step = 8 * 128;
  const std::vector<std::string> domains =
      s.domains ? std::vector<std::string>{"prose", "code", "dictionary", "manpages"}
                : std::vector<std::string>{};
  json run = {{"name", p.name},
              {"router", p.router},
              {"model",
               {{"vocab_size", 256},
                {"d_model", 128},
                {"n_layers", s.layers},
                {"n_heads", 4},
                {"experts", s.experts},
                {"d_ff", 256},
                {"seq_len", 128},
                {"router", p.router}}},
              {"train",
               {{"steps", s.steps},
                {"batch", 8},
                {"seq_len", 128},
                {"lr", 3e-3},
                {"warmup_steps", 10},
                {"eval_every", s.eval_every},
                {"seed", 1234}}},
              {"params", 2'713'344},
              {"active_params", 1'140'480},
              {"tokens_per_step", tokens_per_step},
              {"wall_seconds", 12.5 + p.seed},
              {"domains", domains}};
  write_text(dir / "run.json", run.dump(2) + "\n");

  // Fixed expert preferences per layer, scaled so that the largest is 1.5: the spread alone sets
  // how unbalanced a router is. The spread shrinks as the router balances.
  std::vector<std::vector<double>> bias(size_t(s.layers), std::vector<double>(size_t(s.experts)));
  for (auto& layer : bias) {
    for (double& b : layer) b = normal(rng);
    const double top = *std::max_element(layer.begin(), layer.end());
    for (double& b : layer) b *= 1.5 / std::max(top, 0.1);
  }
  std::ofstream out(dir / "metrics.jsonl");
  int evals = 0;
  for (int step = 1; step <= s.steps; ++step) {
    const double progress = double(step) / s.steps;
    const double loss = p.final_loss + (5.545 - p.final_loss) * std::exp(-5.0 * progress);
    const double spread =
        p.imbalance_start + (p.imbalance_end - p.imbalance_start) * std::sqrt(progress);
    const double ept = p.experts_start + (p.experts_end - p.experts_start) * progress;
    const bool eval = step % s.eval_every == 0 || step == s.steps || step == 1;
    json row = {{"step", step},
                {"tokens", int64_t(step) * tokens_per_step},
                {"lr", 3e-3 * std::min(1.0, step / 10.0)},
                {"train_loss", loss + 0.04 * normal(rng)},
                {"aux_loss", 0.01 + 0.002 * normal(rng)},
                {"grad_norm", 0.8 + 0.1 * normal(rng)},
                {"tokens_per_s", 41000.0 + 4000.0 * p.seed + 900 * normal(rng)}};
    json layers = json::array();
    for (int l = 0; l < s.layers; ++l) {
      auto loads = [&](double noise) {
        std::vector<double> w(size_t(s.experts));
        double sum = 0;
        for (int e = 0; e < s.experts; ++e)
          sum += w[size_t(e)] = std::exp(spread * bias[size_t(l)][size_t(e)] + noise * normal(rng));
        std::vector<double> load(w.size());
        for (size_t e = 0; e < w.size(); ++e)
          load[e] = std::round(w[e] / sum * tokens_per_step * ept);
        return load;
      };
      const std::vector<double> load = loads(0.15);
      double mean = 0, max = 0, var = 0;
      for (double v : load) mean += v / double(load.size()), max = std::max(max, v);
      for (double v : load) var += (v - mean) * (v - mean) / double(load.size());
      json entry = {{"layer", l},
                    {"load", load},
                    {"max_vio", max / mean - 1},
                    {"cv", std::sqrt(var) / mean},
                    {"dropped_frac", p.dropped * (1 - progress)},
                    {"entropy", std::log(double(s.experts)) * (0.95 - 0.25 * progress)},
                    {"experts_per_token", ept}};
      if (eval) {
        if (evals > 0)
          entry["fluctuation"] = p.fluctuation * (0.02 + 0.3 * std::exp(-4.0 * progress));
        if (s.domains) entry["domain_mi"] = p.mi_end * std::sqrt(progress) * (1 + 0.1 * l);
        entry["val_load"] = loads(0.03);
      }
      layers.push_back(entry);
    }
    row["layers"] = layers;
    if (eval) row["val_loss"] = loss + 0.03 + 0.01 * normal(rng);
    evals += eval;
    out << row.dump() << "\n";
  }
}

std::vector<Profile> three_routers() {
  return {{.name = "mixtral",
           .router = {{"router", "mixtral"}, {"k", 2}},
           .final_loss = 2.05,
           .imbalance_start = 1.0,
           .imbalance_end = 0.45,
           .mi_end = 0.30,
           .seed = 1},
          {.name = "deepseek_v3",
           .router = {{"router", "deepseek_v3"}, {"k", 2}, {"bias_update_rate", 0.001}},
           .final_loss = 2.01,
           .imbalance_start = 0.7,
           .imbalance_end = 0.05,
           .mi_end = 0.36,
           .fluctuation = 0.7,
           .seed = 2},
          {.name = "remoe",
           .router = {{"router", "remoe"}},
           .final_loss = 2.08,
           .imbalance_start = 0.9,
           .imbalance_end = 0.25,
           .experts_start = 3.2,
           .experts_end = 2.1,
           .dropped = 0.01,
           .mi_end = 0.22,
           .fluctuation = 1.4,
           .seed = 3}};
}

// A fresh folder under the system's temporary folder, removed at the end of the test.
class ReportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = fs::temp_directory_path() /
           fmt::format("switchyard-report-{}-{}", info->name(), ::getpid());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override {
    if (!HasFailure()) fs::remove_all(dir_);
  }

  std::vector<RunData> write_and_load(const std::vector<Profile>& profiles, const Shape& s) {
    std::vector<RunData> runs;
    for (const Profile& p : profiles) {
      write_run(dir_ / "runs" / p.name, p, s);
      runs.push_back(load_run((dir_ / "runs" / p.name).string()));
    }
    return runs;
  }

  // The run folder with run.json from the first profile and `metrics` as metrics.jsonl.
  std::string run_with_metrics(const std::string& metrics) {
    const fs::path run = dir_ / "bad";
    write_run(run, three_routers()[0], Shape{4, 2, 1, 4, false});
    write_text(run / "metrics.jsonl", metrics);
    return run.string();
  }

  // The message of the Error that load_run throws for `metrics`.
  std::string load_error(const std::string& metrics) {
    const std::string run = run_with_metrics(metrics);
    try {
      load_run(run);
    } catch (const Error& e) {
      return e.what();
    }
    ADD_FAILURE() << "load_run accepted malformed metrics:\n" << metrics;
    return "";
  }

  fs::path dir_;
};

const char* kGoodLine =
    R"({"step": 1, "tokens": 512, "lr": 0.001, "train_loss": 5.5, "aux_loss": 0.01,)"
    R"( "grad_norm": 1.0, "tokens_per_s": 1000, "layers": [{"layer": 0, "load": [1, 2, 3, 4],)"
    R"( "max_vio": 0.6, "cv": 0.4, "dropped_frac": 0, "entropy": 1.2, "experts_per_token": 2}]})";

std::string good_line(int step) {
  json j = json::parse(kGoodLine);
  j["step"] = step;
  return j.dump();
}

// Whether `word` occurs in `text` with no letter or digit on either side ("nan", not "dominant").
bool has_word(const std::string& text, const std::string& word) {
  auto alnum = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; };
  for (size_t pos = text.find(word); pos != std::string::npos; pos = text.find(word, pos + 1)) {
    const bool left = pos == 0 || !alnum(text[pos - 1]);
    const size_t end = pos + word.size();
    if (left && (end == text.size() || !alnum(text[end]))) return true;
  }
  return false;
}

// The summary table's body, from index.html.
std::string summary_body(const std::string& html) {
  const size_t table = html.find("<table id=\"summary\">");
  const size_t begin = html.find("<tbody>", table);
  const size_t end = html.find("</tbody>", begin);
  if (table == std::string::npos || begin == std::string::npos || end == std::string::npos)
    return "";
  return html.substr(begin, end - begin);
}

TEST_F(ReportTest, LoadRunReadsEveryField) {
  const std::vector<RunData> runs = write_and_load({three_routers()[0]}, Shape{});
  const RunData& run = runs[0];
  EXPECT_EQ(run.name, "mixtral");
  EXPECT_EQ(run.router["k"], 2);
  EXPECT_EQ(run.params, 2'713'344);
  EXPECT_EQ(run.active_params, 1'140'480);
  EXPECT_EQ(run.domains.size(), 4u);
  ASSERT_TRUE(run.wall_seconds.has_value());
  ASSERT_EQ(run.rows.size(), 40u);
  EXPECT_EQ(run.rows.front().step, 1);
  EXPECT_EQ(run.rows.back().step, 40);
  ASSERT_EQ(run.rows[0].layers.size(), 2u);
  EXPECT_EQ(run.rows[0].layers[1].layer, 1);
  EXPECT_EQ(run.rows[0].layers[0].load.size(), 8u);
  // Step 1 is the first evaluation: no fluctuation yet, but val_load and domain MI.
  ASSERT_TRUE(run.rows[0].val_loss.has_value());
  EXPECT_FALSE(run.rows[0].layers[0].fluctuation.has_value());
  EXPECT_TRUE(run.rows[0].layers[0].domain_mi.has_value());
  EXPECT_EQ(run.rows[0].layers[0].val_load.size(), 8u);
  EXPECT_FALSE(run.rows[1].val_loss.has_value());
  EXPECT_TRUE(run.rows[9].layers[0].fluctuation.has_value());
  const auto evals = std::count_if(run.rows.begin(), run.rows.end(),
                                   [](const MetricsRow& r) { return r.val_loss.has_value(); });
  EXPECT_EQ(evals, 5);  // steps 1, 10, 20, 30, 40
}

TEST_F(ReportTest, ThreeRoutersWithDomains) {
  const std::vector<RunData> runs = write_and_load(three_routers(), Shape{});
  write_report(runs, (dir_ / "report").string());
  const std::string html = slurp(dir_ / "report" / "index.html");
  const std::string md = slurp(dir_ / "report" / "summary.md");

  // Six plots (val loss, train loss, MaxVio, experts per token, fluctuation, domain MI) and one
  // heatmap per layer and run.
  EXPECT_EQ(count(html, "<svg "), 6u + 2u * 3u);
  EXPECT_EQ(count(html, "</svg>"), 6u + 2u * 3u);
  // Every svg is labelled for screen readers.
  EXPECT_EQ(count(html, "<title id="), 6u + 2u * 3u);
  EXPECT_EQ(count(html, "role=\"img\""), 6u + 2u * 3u);
  EXPECT_GE(count(html, "<polyline "), 6u * 3u);
  const std::string body = summary_body(html);
  EXPECT_EQ(count(body, "<tr>"), 3u);
  for (const Profile& p : three_routers()) {
    EXPECT_NE(body.find(p.name), std::string::npos) << p.name;
    EXPECT_NE(md.find("| " + p.name + " |"), std::string::npos) << p.name;
    EXPECT_NE(md.find("- " + p.name + ": router "), std::string::npos) << p.name;
  }
  EXPECT_GE(count(body, "class=\"best\""), 5u);
  for (const char* header : {"Final val loss", "Best val loss", "MaxVio mean", "Dropped",
                             "Experts/token", "Router entropy", "Domain MI", "Tokens/s"})
    EXPECT_NE(html.find(header), std::string::npos) << header;
}

TEST_F(ReportTest, WithoutDomainsThereIsNoMutualInformationPlot) {
  std::vector<Profile> profiles = three_routers();
  profiles.pop_back();
  const std::vector<RunData> runs = write_and_load(profiles, Shape{30, 5, 2, 8, false});
  write_report(runs, (dir_ / "report").string());
  const std::string html = slurp(dir_ / "report" / "index.html");
  EXPECT_EQ(count(html, "<svg "), 5u + 2u * 2u);
  EXPECT_EQ(html.find("plot-mi"), std::string::npos);
  EXPECT_EQ(count(summary_body(html), "<tr>"), 2u);
}

TEST_F(ReportTest, OneRunHasOneHeatmapPerLayer) {
  const std::vector<RunData> runs = write_and_load({three_routers()[1]}, Shape{20, 5, 3, 8, true});
  write_report(runs, (dir_ / "report").string());
  const std::string html = slurp(dir_ / "report" / "index.html");
  EXPECT_EQ(count(html, "<svg "), 6u + 3u);
  EXPECT_EQ(count(summary_body(html), "<tr>"), 1u);
  EXPECT_EQ(count(html, "class=\"best\""), 0u);  // nothing to compare with
}

TEST_F(ReportTest, BestValuesAreHighlighted) {
  // deepseek_v3 has the lowest loss and the lowest MaxVio by construction.
  const std::vector<RunData> runs = write_and_load(three_routers(), Shape{});
  write_report(runs, (dir_ / "report").string());
  const std::string md = slurp(dir_ / "report" / "summary.md");
  std::istringstream lines(md);
  std::string line;
  bool found = false;
  while (std::getline(lines, line)) {
    if (line.rfind("| deepseek_v3 |", 0) != 0) continue;
    found = true;
    std::vector<std::string> cells;
    std::istringstream row(line);
    std::string cell;
    while (std::getline(row, cell, '|')) cells.push_back(cell);
    // cells[0] is empty (before the first pipe); 2: final val loss, 5: mean MaxVio.
    ASSERT_GE(cells.size(), 6u);
    EXPECT_NE(cells[2].find("**"), std::string::npos) << line;
    EXPECT_NE(cells[5].find("**"), std::string::npos) << line;
  }
  EXPECT_TRUE(found) << md;
}

TEST_F(ReportTest, NoNetworkReferences) {
  const std::vector<RunData> runs = write_and_load(three_routers(), Shape{});
  write_report(runs, (dir_ / "report").string());
  const std::string html = slurp(dir_ / "report" / "index.html");
  for (const std::string scheme : {"http://", "https://"}) {
    for (size_t pos = html.find(scheme); pos != std::string::npos;
         pos = html.find(scheme, pos + 1)) {
      const std::string before = html.substr(pos >= 7 ? pos - 7 : 0, std::min<size_t>(pos, 7));
      EXPECT_EQ(before, "xmlns=\"") << "network reference at offset " << pos << ": "
                                    << html.substr(pos >= 40 ? pos - 40 : 0, 100);
    }
  }
  for (const char* forbidden : {"<link", "<script src", "@import", "url(http", "<img"})
    EXPECT_EQ(html.find(forbidden), std::string::npos) << forbidden;
}

TEST_F(ReportTest, NamesAreEscaped) {
  std::vector<Profile> profiles = three_routers();
  profiles[0].name = "top<k>&\"co\"";
  profiles.resize(2);
  std::vector<RunData> runs = write_and_load(profiles, Shape{20, 5, 1, 4, true});
  // A folder name with these characters is awkward on some systems; the name is what matters.
  ASSERT_EQ(runs[0].name, "top<k>&\"co\"");
  write_report(runs, (dir_ / "report").string());
  const std::string html = slurp(dir_ / "report" / "index.html");
  const std::string md = slurp(dir_ / "report" / "summary.md");
  EXPECT_EQ(html.find("top<k>"), std::string::npos);
  EXPECT_EQ(html.find("<k>"), std::string::npos);
  EXPECT_NE(html.find("top&lt;k&gt;&amp;&quot;co&quot;"), std::string::npos);
  EXPECT_EQ(md.find("<k>"), std::string::npos);
  EXPECT_NE(md.find("top&lt;k&gt;&amp;"), std::string::npos);
}

TEST_F(ReportTest, BadJsonNamesTheLine) {
  const std::string message =
      load_error(good_line(1) + "\n" + good_line(2) + "\n{\"step\": 3, \"train_loss\": \n" +
                 good_line(4) + "\n");
  EXPECT_NE(message.find("metrics.jsonl:3"), std::string::npos) << message;
  EXPECT_NE(message.find("invalid JSON"), std::string::npos) << message;
}

TEST_F(ReportTest, MissingStepNamesTheLine) {
  json j = json::parse(kGoodLine);
  j.erase("step");
  const std::string message = load_error(good_line(1) + "\n" + j.dump() + "\n");
  EXPECT_NE(message.find("metrics.jsonl:2"), std::string::npos) << message;
  EXPECT_NE(message.find("'step'"), std::string::npos) << message;
}

TEST_F(ReportTest, NonNumericLossNamesTheLine) {
  json j = json::parse(kGoodLine);
  j["step"] = 2;
  j["train_loss"] = "low";
  const std::string message = load_error(good_line(1) + "\n\n" + j.dump() + "\n");
  EXPECT_NE(message.find("metrics.jsonl:3"), std::string::npos) << message;  // blank line counts
  EXPECT_NE(message.find("'train_loss'"), std::string::npos) << message;
  EXPECT_NE(message.find("low"), std::string::npos) << message;
}

TEST_F(ReportTest, BadLayerEntryNamesTheLineAndLayer) {
  json j = json::parse(kGoodLine);
  j["layers"][0]["load"][2] = "many";
  const std::string message = load_error(j.dump() + "\n");
  EXPECT_NE(message.find("metrics.jsonl:1"), std::string::npos) << message;
  EXPECT_NE(message.find("layers[0]"), std::string::npos) << message;
  EXPECT_NE(message.find("load[2]"), std::string::npos) << message;
}

TEST_F(ReportTest, EvaluationOnlyRowNeedsNoTrainingLoss) {
  const RunData run = load_run(run_with_metrics(R"({"step": 0, "val_loss": 5.6})"
                                                "\n" +
                                                good_line(1) + "\n"));
  ASSERT_EQ(run.rows.size(), 2u);
  EXPECT_TRUE(std::isnan(run.rows[0].train_loss));
  EXPECT_EQ(*run.rows[0].val_loss, 5.6);
}

TEST_F(ReportTest, NotAnObjectNamesTheLine) {
  const std::string message = load_error(good_line(1) + "\n[1, 2]\n");
  EXPECT_NE(message.find("metrics.jsonl:2"), std::string::npos) << message;
}

TEST_F(ReportTest, RunJsonErrorsNameTheFile) {
  const std::string run = run_with_metrics(good_line(1) + "\n");
  write_text(fs::path(run) / "run.json", R"({"router": {"router": "mixtral"}})");
  try {
    load_run(run);
    ADD_FAILURE() << "run.json without a name was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("run.json: missing field 'name'"), std::string::npos)
        << e.what();
  }
  write_text(fs::path(run) / "run.json", R"({"name": "x", "params": "many"})");
  EXPECT_THROW(load_run(run), Error);
  fs::remove(fs::path(run) / "run.json");
  EXPECT_THROW(load_run(run), Error);
}

TEST_F(ReportTest, UnfinishedLastLineIsSkipped) {
  // A running trainer may be halfway through a line; a complete bad line is still an error.
  const std::string run = run_with_metrics(good_line(1) + "\n" + good_line(2) + "\n{\"step\": 3, ");
  EXPECT_EQ(load_run(run).rows.size(), 2u);
  EXPECT_THROW(load_run(run_with_metrics(good_line(1) + "\n{\"step\": 2, \n")), Error);
}

TEST_F(ReportTest, ResumedRunReplacesRepeatedSteps) {
  json resumed = json::parse(good_line(2));
  resumed["train_loss"] = 4.0;
  const RunData run =
      load_run(run_with_metrics(good_line(1) + "\n" + good_line(2) + "\n" + good_line(3) + "\n" +
                                resumed.dump() + "\n" + good_line(3) + "\n"));
  ASSERT_EQ(run.rows.size(), 3u);
  EXPECT_EQ(run.rows[1].train_loss, 4.0);
  EXPECT_EQ(run.rows[2].step, 3);
}

TEST_F(ReportTest, NullReadsAsNaNAndARunWithoutStepsStillReports) {
  json j = json::parse(kGoodLine);
  j["train_loss"] = nullptr;  // how nlohmann writes a NaN loss
  RunData diverged = load_run(run_with_metrics(j.dump() + "\n"));
  EXPECT_TRUE(std::isnan(diverged.rows[0].train_loss));
  RunData empty = load_run(run_with_metrics(""));
  empty.name = "empty";
  EXPECT_TRUE(empty.rows.empty());
  write_report({diverged, empty}, (dir_ / "report").string());
  const std::string html = slurp(dir_ / "report" / "index.html");
  EXPECT_EQ(count(summary_body(html), "<tr>"), 2u);
  EXPECT_NE(html.find("no data yet"), std::string::npos);
  EXPECT_FALSE(has_word(html, "nan"));
}

// A run across ranks: the per-rank byte counters summed, means over steps in both outputs; a
// malformed "parallel" field names the line and the field.
TEST_F(ReportTest, ParallelRunsGetTheAcrossRanksTable) {
  auto line = [](int step, double dispatch, double share) {
    json j = json::parse(good_line(step));
    json rank = {{"dispatch_bytes_sent", dispatch},
                 {"combine_bytes_sent", 2e6},
                 {"backward_bytes_sent", 4e6}};
    j["parallel"] = {{"ranks", json::array({rank, rank})},
                     {"all_to_all_share", share},
                     {"expert_rows_imbalance", 1.25},
                     {"step_time_imbalance", 1.0}};
    return j.dump();
  };
  RunData run = load_run(run_with_metrics(line(1, 1e6, 0.1) + "\n" + line(2, 3e6, 0.3) + "\n"));
  ASSERT_TRUE(run.rows[0].parallel.has_value());
  EXPECT_EQ(run.rows[0].parallel->ranks, 2);
  EXPECT_EQ(run.rows[1].parallel->dispatch_bytes, 6e6);
  RunData single = load_run(run_with_metrics(good_line(1) + "\n"));
  EXPECT_FALSE(single.rows[0].parallel.has_value());
  single.name = "single";
  run.name = "two ranks";
  write_report({run, single}, (dir_ / "report").string());
  const std::string md = slurp(dir_ / "report" / "summary.md");
  // Means: dispatch (2 + 6) / 2 MB, combine 4, backward 8, share 20 %.
  EXPECT_NE(md.find("| two ranks | 2 | 4.00 | 4.00 | 8.00 | 20.0 % | 1.250 | 1.000 |"),
            std::string::npos)
      << md;
  EXPECT_EQ(md.find("| single |", md.find("## Across ranks")), std::string::npos) << md;
  EXPECT_NE(slurp(dir_ / "report" / "index.html").find("Across ranks"), std::string::npos);

  // With the share by phase (newer runs), the cell splits it: means 5 / 3 / 12 %.
  auto phased = [&](int step, double share, double d, double c, double b) {
    json j = json::parse(line(step, 1e6, share));
    j["parallel"]["all_to_all_share_by_phase"] = {{"dispatch", d}, {"combine", c}, {"backward", b}};
    return j.dump();
  };
  RunData by_phase = load_run(run_with_metrics(phased(1, 0.1, 0.02, 0.02, 0.06) + "\n" +
                                               phased(2, 0.3, 0.08, 0.04, 0.18) + "\n"));
  by_phase.name = "phased";
  write_report({by_phase}, (dir_ / "report2").string());
  const std::string md2 = slurp(dir_ / "report2" / "summary.md");
  EXPECT_NE(md2.find("| 20.0 % (dispatch 5.0, combine 3.0, backward 12.0) |"), std::string::npos)
      << md2;

  json bad = json::parse(line(1, 1e6, 0.1));
  bad["parallel"]["ranks"][1].erase("combine_bytes_sent");
  const std::string message = load_error(bad.dump() + "\n");
  EXPECT_NE(message.find("metrics.jsonl:1 [parallel]"), std::string::npos) << message;
  EXPECT_NE(message.find("combine_bytes_sent"), std::string::npos) << message;
}

// Several seeds: mean ± sample sd per group, differences paired by seed with a 95 % t interval.
TEST(SeedComparison, MeansPairedDifferencesAndVerdicts) {
  using report::compare_seeds;
  EXPECT_DOUBLE_EQ(report::t_critical_95(1), 12.706);
  EXPECT_DOUBLE_EQ(report::t_critical_95(2), 4.303);
  EXPECT_DOUBLE_EQ(report::t_critical_95(1000), 1.96);
  std::vector<report::SeededValue> v = {
      {"base", 1, 1.0},   {"base", 2, 1.1},        {"base", 3, 1.2},    // mean 1.1, sd 0.1
      {"better", 1, 0.9}, {"better", 2, 1.0},      {"better", 3, 1.1},  // always 0.1 lower
      {"noisy", 1, 1.05}, {"noisy", 2, 1.0},       {"noisy", 3, 1.3},   // Δ 0.05, -0.1, 0.1
      {"once", 2, 0.5},   {"other_seeds", 7, 1.0}, {"other_seeds", 8, 1.0}};
  const report::SeedComparison c = compare_seeds(v, "");
  EXPECT_EQ(c.baseline, "base");
  EXPECT_TRUE(c.any_repeated);
  ASSERT_EQ(c.groups.size(), 5u);
  EXPECT_NEAR(c.groups[0].mean, 1.1, 1e-12);
  EXPECT_NEAR(c.groups[0].sd, 0.1, 1e-12);
  EXPECT_TRUE(std::isnan(c.groups[3].sd));  // one run
  ASSERT_EQ(c.paired.size(), 4u);
  EXPECT_EQ(c.paired[0].n, 3);
  EXPECT_NEAR(c.paired[0].mean, -0.1, 1e-12);
  EXPECT_TRUE(c.paired[0].outside_noise);
  const double sd = std::sqrt(
      (std::pow(0.05 - 0.05 / 3, 2) + std::pow(-0.1 - 0.05 / 3, 2) + std::pow(0.1 - 0.05 / 3, 2)) /
      2);
  EXPECT_NEAR(c.paired[1].sd, sd, 1e-12);
  EXPECT_NEAR(c.paired[1].hi - c.paired[1].mean, 4.303 * sd / std::sqrt(3.0), 1e-12);
  EXPECT_FALSE(c.paired[1].outside_noise);
  EXPECT_EQ(c.paired[2].n, 1);  // one shared seed: no interval
  EXPECT_FALSE(c.paired[2].outside_noise);
  EXPECT_EQ(c.paired[3].n, 0);  // no seed in common with the baseline
  EXPECT_THROW(compare_seeds(v, "missing"), Error);
  EXPECT_EQ(compare_seeds(v, "noisy").baseline, "noisy");
}

TEST_F(ReportTest, SeveralSeedsGetTheAcrossSeedsTable) {
  auto run = [](const std::string& group, uint64_t seed, double val) {
    RunData r;
    r.name = group + " seed " + std::to_string(seed);
    r.group = group;
    r.seed = seed;
    r.train = {{"group", group}, {"seed", seed}};
    MetricsRow row;
    row.step = 10;
    row.train_loss = val;
    row.val_loss = val;
    r.rows.push_back(row);
    return r;
  };
  const std::vector<RunData> runs = {run("a", 1, 2.0), run("a", 2, 2.2), run("b", 1, 1.9),
                                     run("b", 2, 2.1)};
  write_report(runs, (dir_ / "report").string(), ReportOptions{"a"});
  const std::string md = slurp(dir_ / "report" / "summary.md");
  EXPECT_NE(md.find("## Across seeds"), std::string::npos) << md;
  // The group, like the name, is no shared setting; the seeds are one that varies.
  EXPECT_EQ(md.find("group varies"), std::string::npos) << md;
  EXPECT_NE(md.find("seed varies by run"), std::string::npos) << md;
  EXPECT_NE(md.find("| a | 2 | 2.1000 ± 0.1414 | — | — | baseline |"), std::string::npos) << md;
  EXPECT_NE(md.find("| b | 2 | 2.0000 ± 0.1414 | -0.1000 ± 0.0000 (2 paired) |"), std::string::npos)
      << md;
  EXPECT_NE(md.find("lower loss, outside seed noise"), std::string::npos) << md;
  const std::string html = slurp(dir_ / "report" / "index.html");
  EXPECT_NE(html.find("Across seeds"), std::string::npos);
  // One colour per group (the seeds of a share a's): two colours for four runs.
  EXPECT_GE(count(html, "background:#0072B2"), 2u);
  EXPECT_EQ(count(html, "background:#0072B2"), count(html, "background:#D55E00"));
  EXPECT_EQ(count(html, "background:#009E73"), 0u);
  // One run per group: no such table.
  write_report({run("a", 1, 2.0), run("b", 1, 1.9)}, (dir_ / "report1").string());
  EXPECT_EQ(slurp(dir_ / "report1" / "summary.md").find("Across seeds"), std::string::npos);
  EXPECT_THROW(write_report(runs, (dir_ / "report2").string(), ReportOptions{"zzz"}), Error);
}

TEST_F(ReportTest, NoRunsIsAnError) {
  EXPECT_THROW(write_report({}, (dir_ / "report").string()), Error);
}

// The plot engine on its own (src/report/svg_plot.h): a dashed line with a band and a gap, a
// scatter, the visible title, the description, and markers dropped from crowded lines.
TEST(SvgPlot, BandsDashesScattersGapsAndTitle) {
  report::PlotSpec spec;
  spec.id = "p";
  spec.title = "T <x>";
  spec.show_title = true;
  spec.desc = "Two series.";
  spec.x_label = "x";
  spec.y_label = "y";
  report::PlotSeries& a = spec.series.emplace_back();
  a.name = "a";
  a.colour = "#112233";
  a.dash = "5 4";
  for (int i = 0; i < 10; ++i) {
    a.x.push_back(i);
    a.y.push_back(i == 5 ? NAN : 0.1 * i);
    a.band_lo.push_back(0.1 * i - 0.05);
    a.band_hi.push_back(i == 9 ? 10.0 : 0.1 * i + 0.05);  // the band widens the y axis
  }
  report::PlotSeries& b = spec.series.emplace_back();
  b.name = "b & c";
  b.colour = "#445566";
  b.line = false;
  b.markers = true;
  b.x = {1, 2, 3};
  b.y = {0.5, 0.6, 0.7};
  const std::string svg = report::line_plot_svg(spec);
  EXPECT_EQ(count(svg, "<svg "), 1u);
  EXPECT_NE(svg.find("<text class=\"title\" x=\"58.0\" y=\"18\">T &lt;x&gt;</text>"),
            std::string::npos)
      << svg;
  EXPECT_NE(svg.find("aria-labelledby=\"p-title p-desc\""), std::string::npos);
  EXPECT_NE(svg.find("Two series. Last values: a: 0.900 at x 9; b &amp; c: 0.700 at x 3."),
            std::string::npos)
      << svg;
  EXPECT_EQ(count(svg, "<polygon "), 1u);                   // the band
  EXPECT_EQ(count(svg, "<polyline "), 2u);                  // a, split at its NaN; b has no line
  EXPECT_EQ(count(svg, "stroke-dasharray=\"5 4\""), 3u);    // a's legend entry and two stretches
  EXPECT_EQ(count(svg, "r=\"3.5\" fill=\"#445566\""), 3u);  // b's points
  EXPECT_EQ(count(svg, "r=\"3\" fill=\"#445566\""), 1u);    // b's legend dot
  EXPECT_NE(svg.find(">10</text>"), std::string::npos);     // a y tick from the band
  EXPECT_FALSE(has_word(svg, "nan"));

  // No description: none referenced. A marked line with more points than max_marked_points loses
  // its markers; the scatter keeps its points.
  spec.desc.clear();
  spec.describe_last = false;
  spec.series[0].markers = true;
  spec.max_marked_points = 5;
  const std::string plain = report::line_plot_svg(spec);
  EXPECT_EQ(plain.find("<desc"), std::string::npos);
  EXPECT_NE(plain.find("aria-labelledby=\"p-title\""), std::string::npos);
  EXPECT_EQ(count(plain, "fill=\"#112233\"><title>"), 0u);
  EXPECT_EQ(count(plain, "r=\"3.5\" fill=\"#445566\""), 3u);
  spec.max_marked_points = 60;
  EXPECT_EQ(count(report::line_plot_svg(spec), "fill=\"#112233\"><title>"), 9u);  // no NaN
}

// The browser test's input: three routers, two layers, eight experts, with domains.
int write_fixture(const fs::path& root) {
  const fs::path runs_dir = root / "report-runs";
  fs::remove_all(runs_dir);
  const Shape shape{200, 10, 2, 8, true};
  std::vector<RunData> runs;
  for (const Profile& p : three_routers()) {
    write_run(runs_dir / p.name, p, shape);
    runs.push_back(load_run((runs_dir / p.name).string()));
  }
  write_report(runs, (root / "report").string());
  const json expect = {{"runs", runs.size()},
                       {"plots", 6},
                       {"svgs", 6 + shape.layers * int(runs.size())},
                       {"polylines_min", 6 * int(runs.size())},
                       {"colours", {"#0072B2", "#D55E00", "#009E73"}}};
  write_text(runs_dir / "expect.json", expect.dump(2) + "\n");
  std::printf("wrote %s\n", (root / "report" / "index.html").c_str());
  return 0;
}

}  // namespace
}  // namespace switchyard

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--write-fixture") == 0) {
    try {
      return switchyard::write_fixture(argv[2]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "test_report --write-fixture: %s\n", e.what());
      return 1;
    }
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
