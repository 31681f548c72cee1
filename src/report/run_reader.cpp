// load_run (include/switchyard/report.h): run.json and metrics.jsonl of a run folder into RunData.
#include <fmt/format.h>
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/report.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <limits>
#include <string_view>

namespace switchyard {
namespace {

using nlohmann::json;
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::string describe_value(const json& v) {
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (text.size() > 40) text = text.substr(0, 37) + "...";
  return fmt::format("{} {}", v.type_name(), text);
}

// Absent reads as nullopt; null as NaN, because nlohmann writes NaN and infinities as null.
std::optional<double> opt_number(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  if (it->is_null()) return kNaN;
  if (!it->is_number())
    fail("{}: field '{}' must be a number, got {}", where, key, describe_value(*it));
  return it->get<double>();
}

double number_or_nan(const json& obj, const char* key, const std::string& where) {
  return opt_number(obj, key, where).value_or(kNaN);
}

double required_number(const json& obj, const char* key, const std::string& where) {
  const std::optional<double> v = opt_number(obj, key, where);
  if (!v) fail("{}: missing field '{}'", where, key);
  return *v;
}

int64_t integer(const json& obj, const char* key, const std::string& where,
                std::optional<int64_t> fallback) {
  const auto it = obj.find(key);
  if (it == obj.end()) {
    if (fallback) return *fallback;
    fail("{}: missing field '{}'", where, key);
  }
  if (it->is_number_integer()) return it->get<int64_t>();
  if (it->is_number_float()) {
    // Some writers print integral counts as 12.0.
    const double d = it->get<double>();
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15) return int64_t(d);
  }
  fail("{}: field '{}' must be an integer, got {}", where, key, describe_value(*it));
}

std::vector<double> number_array(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end()) return {};
  if (!it->is_array())
    fail("{}: field '{}' must be an array of numbers, got {}", where, key, describe_value(*it));
  std::vector<double> out;
  out.reserve(it->size());
  for (size_t i = 0; i < it->size(); ++i) {
    const json& v = (*it)[i];
    if (v.is_null()) {
      out.push_back(kNaN);
    } else if (v.is_number()) {
      out.push_back(v.get<double>());
    } else {
      fail("{}: {}[{}] must be a number, got {}", where, key, i, describe_value(v));
    }
  }
  return out;
}

json object_field(const json& obj, const char* key, const std::string& where) {
  const auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) return json::object();
  if (!it->is_object())
    fail("{}: field '{}' must be an object, got {}", where, key, describe_value(*it));
  return *it;
}

LayerMetrics parse_layer(const json& j, size_t index, const std::string& row_where) {
  const std::string where = fmt::format("{}: layers[{}]", row_where, index);
  if (!j.is_object()) fail("{}: must be an object, got {}", where, describe_value(j));
  LayerMetrics m;
  m.layer = int(integer(j, "layer", where, int64_t(index)));
  m.load = number_array(j, "load", where);
  m.max_vio = number_or_nan(j, "max_vio", where);
  m.cv = number_or_nan(j, "cv", where);
  m.dropped_frac = number_or_nan(j, "dropped_frac", where);
  m.entropy = number_or_nan(j, "entropy", where);
  m.experts_per_token = number_or_nan(j, "experts_per_token", where);
  m.fluctuation = opt_number(j, "fluctuation", where);
  m.domain_mi = opt_number(j, "domain_mi", where);
  m.val_load = number_array(j, "val_load", where);
  return m;
}

// "step" is required, and "train_loss" unless the row is an evaluation only (say, at step 0);
// other absent numbers read as NaN so that a trainer that logs less still gets a report. Wrong
// types are always errors.
MetricsRow parse_row(const json& j, const std::string& where) {
  if (!j.is_object()) fail("{}: expected a JSON object, got {}", where, describe_value(j));
  MetricsRow row;
  row.step = integer(j, "step", where, std::nullopt);
  row.tokens = integer(j, "tokens", where, int64_t(0));
  row.val_loss = opt_number(j, "val_loss", where);
  row.train_loss = row.val_loss ? number_or_nan(j, "train_loss", where)
                                : required_number(j, "train_loss", where);
  row.lr = number_or_nan(j, "lr", where);
  row.aux_loss = number_or_nan(j, "aux_loss", where);
  row.grad_norm = number_or_nan(j, "grad_norm", where);
  row.tokens_per_s = number_or_nan(j, "tokens_per_s", where);
  if (const auto it = j.find("layers"); it != j.end()) {
    if (!it->is_array())
      fail("{}: field 'layers' must be an array, got {}", where, describe_value(*it));
    for (size_t i = 0; i < it->size(); ++i) row.layers.push_back(parse_layer((*it)[i], i, where));
  }
  if (const auto it = j.find("parallel"); it != j.end()) {
    const std::string in = where + " [parallel]";
    if (!it->is_object() || !it->contains("ranks") || !(*it)["ranks"].is_array())
      fail("{}: field 'parallel' must be an object with a 'ranks' array, got {}", where,
           describe_value(*it));
    ParallelMetrics pm;
    for (const json& rank : (*it)["ranks"]) {
      if (!rank.is_object())
        fail("{}: each of 'ranks' must be an object, got {}", in, describe_value(rank));
      pm.dispatch_bytes += required_number(rank, "dispatch_bytes_sent", in);
      pm.combine_bytes += required_number(rank, "combine_bytes_sent", in);
      pm.backward_bytes += required_number(rank, "backward_bytes_sent", in);
      ++pm.ranks;
    }
    pm.all_to_all_share = required_number(*it, "all_to_all_share", in);
    if (const auto phase = it->find("all_to_all_share_by_phase"); phase != it->end()) {
      if (!phase->is_object())
        fail("{}: field 'all_to_all_share_by_phase' must be an object, got {}", in,
             describe_value(*phase));
      pm.share_by_phase = std::array<double, 3>{required_number(*phase, "dispatch", in),
                                                required_number(*phase, "combine", in),
                                                required_number(*phase, "backward", in)};
    }
    pm.expert_rows_imbalance = required_number(*it, "expert_rows_imbalance", in);
    pm.step_time_imbalance = required_number(*it, "step_time_imbalance", in);
    row.parallel = pm;
  }
  return row;
}

bool is_blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

}  // namespace

RunData load_run(const std::string& dir) {
  namespace fs = std::filesystem;
  RunData run;
  run.dir = dir;
  const std::string meta_path = (fs::path(dir) / "run.json").string();
  const json meta = parse_json_strict(read_file_text(meta_path), meta_path);
  if (!meta.is_object())
    fail("{}: expected a JSON object, got {}", meta_path, describe_value(meta));
  const auto name = meta.find("name");
  if (name == meta.end()) fail("{}: missing field 'name'", meta_path);
  if (!name->is_string())
    fail("{}: field 'name' must be a string, got {}", meta_path, describe_value(*name));
  run.name = name->get<std::string>();
  run.group = run.name;
  if (const auto g = meta.find("group"); g != meta.end()) {
    if (!g->is_string())
      fail("{}: field 'group' must be a string, got {}", meta_path, describe_value(*g));
    run.group = g->get<std::string>();
  }
  run.router = object_field(meta, "router", meta_path);
  run.model = object_field(meta, "model", meta_path);
  run.train = object_field(meta, "train", meta_path);
  run.params = integer(meta, "params", meta_path, int64_t(0));
  run.active_params = integer(meta, "active_params", meta_path, int64_t(0));
  run.tokens_per_step = integer(meta, "tokens_per_step", meta_path, int64_t(0));
  run.seed = uint64_t(integer(run.train, "seed", meta_path + " [train]", int64_t(0)));
  if (const auto w = opt_number(meta, "wall_seconds", meta_path); w && std::isfinite(*w))
    run.wall_seconds = *w;
  if (const auto it = meta.find("domains"); it != meta.end() && !it->is_null()) {
    if (!it->is_array())
      fail("{}: field 'domains' must be an array of strings, got {}", meta_path,
           describe_value(*it));
    for (size_t i = 0; i < it->size(); ++i) {
      if (!(*it)[i].is_string())
        fail("{}: domains[{}] must be a string, got {}", meta_path, i, describe_value((*it)[i]));
      run.domains.push_back((*it)[i].get<std::string>());
    }
  }

  const std::string metrics_path = (fs::path(dir) / "metrics.jsonl").string();
  const std::string text = read_file_text(metrics_path);
  size_t pos = 0, line_no = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    const bool complete = end != std::string::npos;
    if (!complete) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = fmt::format("{}:{}", metrics_path, line_no);
    json j;
    try {
      j = parse_json_strict(line, where);
    } catch (const Error&) {
      if (!complete) break;  // the trainer is still writing this line
      throw;
    }
    MetricsRow row = parse_row(j, where);
    // A resumed run logs again from its checkpoint: the later lines win.
    while (!run.rows.empty() && run.rows.back().step >= row.step) run.rows.pop_back();
    run.rows.push_back(std::move(row));
  }
  return run;
}

}  // namespace switchyard
