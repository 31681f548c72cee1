// Analyses runs for the comparison report (report_page.h): table, settings, seeds, styles.
#include "report/report_page.h"

#include <fmt/format.h>

#include <functional>
#include <optional>
#include <set>

#include "report/report_style.h"
#include "report/report_text.h"

namespace switchyard::report {

using nlohmann::json;

std::string json_text(const json& v) {
  return v.is_string() ? v.get<std::string>()
                       : v.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string router_text(const json& router) {
  std::string out = router.contains("router") ? json_text(router["router"]) : "";
  for (const auto& [key, value] : router.items()) {
    if (key == "router") continue;
    if (!out.empty()) out += " · ";
    out += key + "=" + json_text(value);
  }
  return out;
}

namespace {

Table summary_table(const std::vector<RunData>& runs, const std::vector<Summary>& sums) {
  struct Numeric {
    Column column;
    std::function<double(const Summary&)> get;
    std::function<std::string(double)> format;
  };
  auto fixed = [](int decimals) {
    return [decimals](double v) { return fmt::format("{:.{}f}", v, decimals); };
  };
  auto percent = [](int decimals) {
    return [decimals](double v) { return fmt::format("{:.{}f} %", 100 * v, decimals); };
  };
  const std::vector<Numeric> numeric = {
      {{"Final val loss", "validation loss at the last evaluation", -1},
       [](const Summary& s) { return s.final_val; },
       fixed(4)},
      {{"Best val loss", "lowest validation loss at any evaluation", -1},
       [](const Summary& s) { return s.best_val; },
       fixed(4)},
      {{"Final train loss", "training loss, EMA-smoothed, at the last step", -1},
       [](const Summary& s) { return s.final_train; },
       fixed(4)},
      {{"MaxVio mean", "max over experts of load / mean load − 1, mean over layers and steps", -1},
       [](const Summary& s) { return s.max_vio_mean; },
       fixed(3)},
      {{"MaxVio final", "MaxVio, mean over layers and the last 10 % of steps", -1},
       [](const Summary& s) { return s.max_vio_final; },
       fixed(3)},
      {{"Dropped", "share of token-expert assignments dropped, mean over layers and steps", -1},
       [](const Summary& s) { return s.dropped; },
       percent(2)},
      {{"Experts/token", "mean experts per token, mean over layers and the last 10 % of steps", 0},
       [](const Summary& s) { return s.experts_per_token; },
       fixed(2)},
      {{"Router entropy", "router entropy, mean over layers and the last 10 % of steps", 0},
       [](const Summary& s) { return s.entropy; },
       fixed(3)},
      {{"Fluctuation",
        "share of probe tokens whose top-1 expert changed since the previous evaluation (last "
        "evaluation, mean over layers)",
        -1},
       [](const Summary& s) { return s.fluctuation; },
       percent(1)},
      {{"Domain MI",
        "mutual information between domain and chosen expert in bits (last "
        "evaluation, mean over layers)",
        1},
       [](const Summary& s) { return s.domain_mi; },
       fixed(3)},
      {{"Tokens/s", "training throughput, median over steps", 1},
       [](const Summary& s) { return s.tokens_per_s; },
       [](double v) { return thousands(v); }},
  };

  Table t;
  t.columns.push_back({"Router", "run name", 0});
  for (const Numeric& n : numeric) t.columns.push_back(n.column);
  t.columns.push_back({"Params / active", "parameters in the model / active per token", 0});
  t.rows.resize(runs.size());
  for (size_t r = 0; r < runs.size(); ++r) t.rows[r].push_back({runs[r].name, false});
  for (const Numeric& n : numeric) {
    // The best value as displayed, so that runs equal at the shown precision share the mark.
    std::optional<double> best;
    int known = 0;
    for (const Summary& s : sums) {
      const double v = n.get(s);
      if (!finite(v)) continue;
      ++known;
      if (!best || (n.column.better < 0 ? v < *best : v > *best)) best = v;
    }
    const std::string best_text = best ? n.format(*best) : "";
    // When every known value ties, marking them all would say nothing.
    int ties = 0;
    for (const Summary& s : sums) ties += finite(n.get(s)) && n.format(n.get(s)) == best_text;
    const bool rank = n.column.better != 0 && known >= 2 && ties < known;
    for (size_t r = 0; r < runs.size(); ++r) {
      const double v = n.get(sums[r]);
      const std::string text = finite(v) ? n.format(v) : "—";
      t.rows[r].push_back({text, rank && text == best_text});
    }
  }
  for (size_t r = 0; r < runs.size(); ++r)
    t.rows[r].push_back({fmt::format("{} / {}", human_count(double(runs[r].params)),
                                     human_count(double(runs[r].active_params))),
                         false});
  return t;
}

// Keys of one run.json object (model or train) with their value when all runs agree.
std::vector<std::pair<std::string, std::string>> common_settings(
    const std::vector<RunData>& runs, const std::function<const json&(const RunData&)>& get,
    std::map<size_t, std::vector<std::string>>* differences, const std::string& prefix) {
  std::set<std::string> keys;
  for (const RunData& run : runs)
    for (const auto& [key, value] : get(run).items())
      // The router differs by design; a trainer may copy the model, the run's name, group and
      // output folder into the training settings, which say nothing shared.
      if (key != "router" && key != "model" && key != "name" && key != "group" && key != "out")
        keys.insert(key);
  std::vector<std::pair<std::string, std::string>> out;
  for (const std::string& key : keys) {
    std::set<std::string> values;
    for (const RunData& run : runs)
      values.insert(get(run).contains(key) ? json_text(get(run)[key]) : "—");
    if (values.size() == 1) {
      out.emplace_back(key, *values.begin());
    } else {
      out.emplace_back(key, "varies by run");
      for (size_t r = 0; r < runs.size(); ++r)
        (*differences)[r].push_back(
            fmt::format("{}{}={}", prefix, key,
                        get(runs[r]).contains(key) ? json_text(get(runs[r])[key]) : "—"));
    }
  }
  return out;
}

}  // namespace

Page analyse(const std::vector<RunData>& runs, const ReportOptions& options) {
  Page p;
  std::vector<SeededValue> finals;
  for (const RunData& run : runs) {
    p.derived.push_back(derive(run));
    p.sums.push_back(summarize(run, p.derived.back()));
    finals.push_back({run.group, run.seed, p.sums.back().final_val});
  }
  p.seeds = compare_seeds(finals, options.baseline);
  std::map<std::string, size_t> group_index, seen;
  for (size_t r = 0; r < runs.size(); ++r) {
    if (!p.seeds.any_repeated) {
      p.styles.push_back(r);
      continue;
    }
    const size_t g = group_index.emplace(runs[r].group, group_index.size()).first->second;
    p.styles.push_back(g % kPalette.size() + kPalette.size() * (seen[runs[r].group]++ % 3));
  }
  p.table = summary_table(runs, p.sums);
  p.model_settings = common_settings(
      runs, [](const RunData& r) -> const json& { return r.model; }, &p.differences, "model.");
  p.train_settings = common_settings(
      runs, [](const RunData& r) -> const json& { return r.train; }, &p.differences, "train.");
  std::set<std::string> domains, per_step;
  for (const RunData& run : runs) {
    std::string d;
    for (const std::string& name : run.domains) d += (d.empty() ? "" : ", ") + name;
    domains.insert(d.empty() ? "none" : d);
    per_step.insert(run.tokens_per_step > 0 ? thousands(double(run.tokens_per_step)) : "—");
  }
  p.data_settings.emplace_back("domains", domains.size() == 1 ? *domains.begin() : "varies by run");
  p.data_settings.emplace_back("tokens per step",
                               per_step.size() == 1 ? *per_step.begin() : "varies by run");
  return p;
}

std::vector<std::string> seed_headers(const SeedComparison& s) {
  return {"Group",
          "Seeds",
          "Final val loss (mean ± sd)",
          "Δ vs " + s.baseline + " (mean ± sd)",
          "95 % interval of Δ",
          "Verdict"};
}

std::vector<std::vector<std::string>> seed_rows(const SeedComparison& s) {
  auto pm = [](double mean, double sd) {
    if (!finite(mean)) return std::string("—");
    return finite(sd) ? fmt::format("{:.4f} ± {:.4f}", mean, sd) : fmt::format("{:.4f}", mean);
  };
  std::vector<std::vector<std::string>> rows;
  for (const GroupSummary& g : s.groups) {
    std::vector<std::string> row = {g.group, fmt::format("{}", g.n), pm(g.mean, g.sd)};
    if (g.group == s.baseline) {
      row.insert(row.end(), {"—", "—", "baseline"});
    } else {
      const PairedDifference* d = nullptr;
      for (const auto& x : s.paired)
        if (x.group == g.group) d = &x;
      row.push_back(fmt::format("{} ({} paired)", pm(d->mean, d->sd), d->n));
      row.push_back(d->n >= 2 ? fmt::format("[{:+.4f}, {:+.4f}]", d->lo, d->hi) : "—");
      row.push_back(d->n < 2            ? "too few seeds"
                    : !d->outside_noise ? "within seed noise"
                    : d->mean < 0       ? "lower loss, outside seed noise"
                                        : "higher loss, outside seed noise");
    }
    rows.push_back(row);
  }
  return rows;
}

const std::vector<std::string>& parallel_headers() {
  static const std::vector<std::string> headers = {"Run",
                                                   "Ranks",
                                                   "Dispatch MB/step",
                                                   "Combine MB/step",
                                                   "Backward MB/step",
                                                   "All-to-all share",
                                                   "Expert-rows imbalance",
                                                   "Step-time imbalance"};
  return headers;
}

std::vector<std::vector<std::string>> parallel_rows(const std::vector<RunData>& runs) {
  std::vector<std::vector<std::string>> rows;
  for (const RunData& run : runs)
    if (const auto m = parallel_means(run))
      rows.push_back(
          {run.name, fmt::format("{}", m->ranks), fmt::format("{:.2f}", m->dispatch_bytes / 1e6),
           fmt::format("{:.2f}", m->combine_bytes / 1e6),
           fmt::format("{:.2f}", m->backward_bytes / 1e6),
           fmt::format("{:.1f} %", 100 * m->all_to_all_share) +
               (m->share_by_phase
                    ? fmt::format(" (dispatch {:.1f}, combine {:.1f}, backward {:.1f})",
                                  100 * (*m->share_by_phase)[0], 100 * (*m->share_by_phase)[1],
                                  100 * (*m->share_by_phase)[2])
                    : std::string()),
           fmt::format("{:.3f}", m->expert_rows_imbalance),
           fmt::format("{:.3f}", m->step_time_imbalance)});
  return rows;
}

}  // namespace switchyard::report
