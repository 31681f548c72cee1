// Routing-decision latency: featurise + kNN (or another quality model) + decision rule, one prompt
// at a time as the gateway does, on the training prompts of a split.json written by
// `switchyard llm eval --out`. Prints JSON: p50, p99 and mean microseconds per decision.
//   bench_routing SPLIT_JSON [KIND=knn] [REPEATS=3]
#include <fmt/format.h>
#include <switchyard/file_util.h>
#include <switchyard/llm_router.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

int main(int argc, char** argv) {
  if (argc < 2) {
    fmt::print(stderr, "usage: bench_routing SPLIT_JSON [KIND=knn] [REPEATS=3]\n");
    return 2;
  }
  const std::string kind = argc > 2 ? argv[2] : "knn";
  const int repeats = argc > 3 ? std::max(1, std::atoi(argv[3])) : 3;
  try {
    const auto split = nlohmann::json::parse(switchyard::read_file_text(argv[1]));
    switchyard::RoutingTable table;
    table.models = split.at("models").get<std::vector<std::string>>();
    const size_t M = table.models.size();
    auto add_rows = [&](const nlohmann::json& rows) {
      for (const auto& r : rows) {
        table.prompts.push_back(r.at("prompt").get<std::string>());
        table.eval_names.emplace_back();
        for (double s : r.at("scores").get<std::vector<double>>()) table.scores.push_back(s);
        for (size_t m = 0; m < M; ++m) table.costs.push_back(NAN);
      }
    };
    add_rows(split.at("train"));
    const size_t n_train = table.rows();
    add_rows(split.at("test"));
    std::vector<size_t> train(n_train);
    for (size_t i = 0; i < n_train; ++i) train[i] = i;
    switchyard::RouterSpec spec;
    spec.name = kind;
    spec.quality = kind;
    const auto t0 = std::chrono::steady_clock::now();
    const switchyard::PromptRouter router = switchyard::train_router(spec, table, train);
    const double fit_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

    std::vector<double> q(M), c(M), us;
    int sink = 0;
    for (int rep = 0; rep < repeats; ++rep)
      for (size_t i = n_train; i < table.rows(); ++i) {
        const auto a = std::chrono::steady_clock::now();
        router.predict(table.prompts[i], q.data(), c.data());
        sink += switchyard::choose_threshold(q.data(), router.strong, router.weak, 0.1);
        us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - a)
                         .count());
      }
    std::sort(us.begin(), us.end());
    double mean = 0;
    for (double v : us) mean += v / double(us.size());
    fmt::print("{}\n", nlohmann::json({{"router", kind},
                                       {"params", router.quality->params()},
                                       {"train_rows", n_train},
                                       {"queries", us.size()},
                                       {"fit_seconds", fit_s},
                                       {"p50_us", us[us.size() / 2]},
                                       {"p99_us", us[size_t(double(us.size()) * 0.99)]},
                                       {"mean_us", mean},
                                       {"strong_choices", sink}})
                           .dump());
  } catch (const std::exception& e) {
    fmt::print(stderr, "bench_routing: {}\n", e.what());
    return 1;
  }
  return 0;
}
