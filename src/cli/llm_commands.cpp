// `switchyard llm train | eval | route`: prompt routers across LLMs (docs/llm-routing.md).
#include <fmt/format.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/llm_eval.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "cli/commands.h"

namespace switchyard::cli {
namespace {

using nlohmann::json;

RoutingTable load_data(const LlmDataFlags& data) {
  ReadOptions options;
  options.strict = data.strict;
  options.ignore_columns = data.ignore_columns;
  RoutingTable table = read_routing_data(data.paths, data.format, data.prices, options);
  if (!table.issues.empty()) {
    fmt::print(stderr, "switchyard: skipped {} bad rows (--strict rejects them instead):\n",
               table.issues.size());
    for (size_t i = 0; i < std::min<size_t>(table.issues.size(), 10); ++i) {
      const ReadIssue& issue = table.issues[i];
      // JSON formats have no line per record: the record index alone locates it.
      const std::string where =
          issue.line > 0 ? fmt::format("{}:{}", issue.file, issue.line) : issue.file;
      fmt::print(stderr, "  {} (record {}) {}: {}\n", where, issue.record,
                 issue.column.empty() ? "row" : issue.column, issue.reason);
    }
    if (table.issues.size() > 10) fmt::print(stderr, "  ... {} more\n", table.issues.size() - 10);
  }
  return table;
}

// A router spec from a JSON object {"name", "quality", "params", "features", "embeddings"}.
RouterSpec spec_from_json(const json& j, const std::string& context) {
  if (!j.is_object()) fail("{}: each router must be a JSON object", context);
  ParamReader r(j, context);
  RouterSpec spec;
  spec.quality = r.get_choice("quality", "", quality_model_kinds());
  spec.name = r.get_string("name", spec.quality);
  spec.quality_params = r.get_object("params", json::object());
  spec.features =
      FeaturizerConfig::from_json(r.get_object("features", json::object()), context + ".features");
  spec.embeddings_path = r.get_string("embeddings", "");
  r.finish();
  // Validates the parameters now, before any training.
  make_quality_model(spec.quality, spec.quality_params, context + ".params");
  return spec;
}

std::vector<RouterSpec> specs_from_flags(const LlmEvalFlags& flags) {
  std::vector<RouterSpec> specs;
  if (!flags.config.empty()) {
    const json j = parse_json_strict(read_file_text(flags.config), flags.config);
    if (!j.is_object() || !j.contains("routers") || !j["routers"].is_array())
      fail("{}: expected {{\"routers\": [...]}}", flags.config);
    ParamReader r(j, flags.config);
    const json list = r.get_json("routers", json::array());
    r.finish();
    for (size_t i = 0; i < list.size(); ++i)
      specs.push_back(spec_from_json(list[i], fmt::format("{}: routers[{}]", flags.config, i)));
  } else {
    for (const auto& kind : flags.routers) {
      if (std::find(quality_model_kinds().begin(), quality_model_kinds().end(), kind) ==
          quality_model_kinds().end())
        fail("--routers: unknown router \"{}\" (known: {})", kind,
             fmt::join(quality_model_kinds(), ", "));
      RouterSpec spec;
      spec.name = kind;
      spec.quality = kind;
      specs.push_back(spec);
    }
  }
  for (auto& spec : specs) {
    if (spec.embeddings_path.empty()) spec.embeddings_path = flags.embeddings;
    spec.output_tokens = flags.output_tokens;
    spec.seed = flags.seed;
  }
  return specs;
}

}  // namespace

int run_llm_eval(const LlmDataFlags& data, const LlmEvalFlags& flags) {
  const RoutingTable table = load_data(data);
  EvalConfig config;
  config.routers = specs_from_flags(flags);
  config.train_fraction = flags.train_fraction;
  config.seed = flags.seed;
  config.strong = flags.strong;
  config.weak = flags.weak;
  config.output_tokens = flags.output_tokens;
  const std::string name =
      flags.name.empty() ? std::filesystem::path(data.paths.front()).stem().string() : flags.name;
  const EvalResult result = evaluate_routers(table, config, name);
  fmt::print("{}", eval_text_table(result));
  if (!flags.out.empty()) {
    std::filesystem::create_directories(flags.out);
    const auto dir = std::filesystem::path(flags.out);
    write_file_atomic((dir / "eval.json").string(), eval_to_json(result).dump(1) + "\n");
    write_file_atomic((dir / "summary.txt").string(), eval_text_table(result));
    write_file_atomic((dir / "report.html").string(), eval_html(result));
    // The exact split, so that baselines outside switchyard train and test on the same rows.
    auto rows_json = [&](const std::vector<size_t>& rows) {
      json a = json::array();
      for (size_t r : rows) {
        std::vector<double> scores(table.models.size());
        for (size_t m = 0; m < scores.size(); ++m) scores[m] = table.score(r, m);
        a.push_back({{"prompt", table.prompts[r]}, {"scores", scores}});
      }
      return a;
    };
    write_file_atomic((dir / "split.json").string(),
                      json({{"models", table.models},
                            {"strong", result.models[size_t(result.strong)]},
                            {"weak", result.models[size_t(result.weak)]},
                            {"train", rows_json(result.train)},
                            {"test", rows_json(result.test)}})
                          .dump());
    fmt::print("wrote {}/eval.json, summary.txt, report.html and split.json\n", flags.out);
  }
  return 0;
}

int run_llm_train(const LlmDataFlags& data, const LlmTrainFlags& flags) {
  const RoutingTable table = load_data(data);
  RouterSpec spec;
  spec.quality = flags.quality;
  spec.name = flags.name.empty() ? flags.quality : flags.name;
  if (!flags.params.empty()) spec.quality_params = parse_json_strict(flags.params, "--params");
  if (!flags.features.empty())
    spec.features =
        FeaturizerConfig::from_json(parse_json_strict(flags.features, "--features"), "--features");
  spec.embeddings_path = flags.embeddings;
  spec.output_tokens = flags.output_tokens;
  spec.seed = flags.seed;
  std::vector<size_t> rows(table.rows());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i;
  PromptRouter router = train_router(spec, table, rows);
  if (!flags.strong.empty() || !flags.weak.empty()) {
    auto index = [&](const std::string& m, int fallback) {
      if (m.empty()) return fallback;
      const auto it = std::find(router.models.begin(), router.models.end(), m);
      if (it == router.models.end())
        fail("--strong/--weak: model \"{}\" is not in the data (models: {})", m,
             fmt::join(router.models, ", "));
      return int(it - router.models.begin());
    };
    router.strong = index(flags.strong, router.strong);
    router.weak = index(flags.weak, router.weak);
    if (router.strong == router.weak) fail("--strong and --weak name the same model");
  }
  router.save(flags.out);
  fmt::print(
      "trained {} ({}) on {} prompts, {} models; strong {}, weak {}; costs from {}\n"
      "wrote {}/router.json and router.safetensors\n",
      router.name, spec.quality, rows.size(), router.models.size(),
      router.models[size_t(router.strong)], router.models[size_t(router.weak)],
      router.cost.source(), flags.out);
  return 0;
}

// One prompt per non-empty line.
static std::vector<std::string> read_prompts(const std::string& path) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the prompts file", path);
  std::vector<std::string> prompts;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) prompts.push_back(line);
  return prompts;
}

int run_llm_calibrate(const std::string& router_dir, const std::string& prompts_file,
                      double strong_share) {
  const PromptRouter router = PromptRouter::load(router_dir);
  const std::vector<std::string> prompts = read_prompts(prompts_file);
  if (prompts.empty()) fail("{}: no prompts (one per line)", prompts_file);
  const size_t M = router.models.size();
  std::vector<double> q(M), c(M), gains;
  for (const auto& p : prompts) {
    router.predict(p, q.data(), c.data());
    gains.push_back(q[size_t(router.strong)] - q[size_t(router.weak)]);
  }
  const double threshold = calibrate_threshold(gains, strong_share);
  size_t strong = 0;
  for (double g : gains) strong += g >= threshold;
  fmt::print("{}\n", json({{"router", router.name},
                           {"strong", router.models[size_t(router.strong)]},
                           {"weak", router.models[size_t(router.weak)]},
                           {"target_share", strong_share},
                           {"threshold", threshold},
                           {"share_on_these_prompts", double(strong) / double(gains.size())},
                           {"prompts", gains.size()},
                           {"gateway_model", fmt::format("router-{}-{}", router.name, threshold)}})
                         .dump());
  return 0;
}

int run_llm_route(const LlmRouteFlags& flags) {
  const PromptRouter router = PromptRouter::load(flags.router);
  std::vector<std::string> prompts = flags.prompts;
  if (!flags.prompts_file.empty()) {
    const std::vector<std::string> more = read_prompts(flags.prompts_file);
    prompts.insert(prompts.end(), more.begin(), more.end());
  }
  if (prompts.empty()) fail("llm route: give --prompt or --prompts-file");
  const size_t M = router.models.size(), n = prompts.size();
  std::vector<double> q(n * M), c(n * M);
  for (size_t i = 0; i < n; ++i) router.predict(prompts[i], &q[i * M], &c[i * M]);
  std::vector<int32_t> choice(n);
  if (!flags.capacity.empty()) {
    std::vector<int64_t> capacity(M, -1);
    for (const auto& entry : flags.capacity) {
      const size_t eq = entry.rfind('=');
      if (eq == std::string::npos) fail("--capacity: \"{}\" is not model=count", entry);
      const std::string model = entry.substr(0, eq);
      const auto it = std::find(router.models.begin(), router.models.end(), model);
      if (it == router.models.end()) fail("--capacity: unknown model \"{}\"", model);
      try {
        size_t used = 0;
        const long long v = std::stoll(entry.substr(eq + 1), &used);
        if (used != entry.size() - eq - 1 || v < 0) throw std::invalid_argument("count");
        capacity[size_t(it - router.models.begin())] = v;
      } catch (const std::logic_error&) {
        fail("--capacity: \"{}\" needs a non-negative integer count", entry);
      }
    }
    for (size_t m = 0; m < M; ++m)
      if (capacity[m] < 0) capacity[m] = int64_t(n);  // unlisted models are unlimited
    choice = route_batch_with_capacity(q, c, n, M, capacity, flags.lambda, router.cost_scale);
  } else {
    for (size_t i = 0; i < n; ++i) {
      if (flags.rule == "threshold")
        choice[i] = choose_threshold(&q[i * M], router.strong, router.weak, flags.threshold);
      else if (flags.rule == "cascade")
        choice[i] = choose_cascade(&q[i * M], &c[i * M], M, flags.tau);
      else
        choice[i] = choose_cost_aware(&q[i * M], &c[i * M], M, flags.lambda, router.cost_scale);
    }
  }
  for (size_t i = 0; i < n; ++i) {
    json predicted = json::object(), cost = json::object();
    for (size_t m = 0; m < M; ++m) {
      predicted[router.models[m]] = q[i * M + m];
      cost[router.models[m]] = c[i * M + m];
    }
    fmt::print("{}\n", json({{"prompt", prompts[i].substr(0, 200)},
                             {"model", router.models[size_t(choice[i])]},
                             {"estimated_cost", c[i * M + size_t(choice[i])]},
                             {"predicted_quality", predicted},
                             {"estimated_costs", cost}})
                           .dump());
  }
  return 0;
}

}  // namespace switchyard::cli
