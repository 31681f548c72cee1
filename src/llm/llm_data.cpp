#include <switchyard/csv.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/llm_data.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <utility>

namespace switchyard {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr std::string_view kCostSuffix = "|total_cost";

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The whole field must be one finite number: "0.5x", "nan" and "inf" are not scores or costs.
std::optional<double> parse_number(std::string_view text) {
  text = trim(text);
  if (text.empty()) return std::nullopt;
  if (text.front() == '+') text.remove_prefix(1);
  double value = 0.0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(value)) {
    return std::nullopt;
  }
  return value;
}

bool is_ignored(const std::string& column, const ReadOptions& options) {
  return std::any_of(options.ignore_columns.begin(), options.ignore_columns.end(),
                     [&](const std::string& pattern) {
                       if (!pattern.empty() && pattern.front() == '*') {
                         const std::string_view suffix = std::string_view(pattern).substr(1);
                         return column.size() >= suffix.size() &&
                                std::string_view(column).substr(column.size() - suffix.size()) ==
                                    suffix;
                       }
                       return column == pattern;
                     });
}

// Thrown inside a row's parsing to abandon it; the builder turns it into an issue.
struct RowProblem {
  std::string column;
  std::string reason;
};

// Collects good rows, rejects duplicate prompts and applies the bad-row policy.
class TableBuilder {
 public:
  TableBuilder(std::string file, const ReadOptions& options, std::vector<std::string> models)
      : file_(std::move(file)), options_(options) {
    table_.models = std::move(models);
  }

  std::size_t model_count() const { return table_.models.size(); }

  void bad(std::size_t line, std::size_t record, std::string column, std::string reason) {
    if (options_.strict) {
      const std::string where = line > 0 ? fmt::format("{}:{}", file_, line)
                                         : fmt::format("{}: record {}", file_, record);
      if (column.empty()) fail("{}: {}", where, reason);
      fail("{}: column '{}': {}", where, column, reason);
    }
    table_.issues.push_back(ReadIssue{file_, line, record, std::move(column), std::move(reason)});
  }

  void add(std::size_t line, std::size_t record, std::string prompt, std::string eval_name,
           const std::vector<double>& scores, const std::vector<double>& costs) {
    const std::size_t here = line > 0 ? line : record;
    const auto [it, inserted] = first_seen_.emplace(prompt, here);
    if (!inserted) {
      bad(line, record, "prompt",
          fmt::format("duplicate prompt (first at {} {})", line > 0 ? "line" : "record",
                      it->second));
      return;
    }
    table_.prompts.push_back(std::move(prompt));
    table_.eval_names.push_back(std::move(eval_name));
    table_.lines.push_back(line);
    table_.records.push_back(record);
    table_.scores.insert(table_.scores.end(), scores.begin(), scores.end());
    table_.costs.insert(table_.costs.end(), costs.begin(), costs.end());
  }

  RoutingTable finish() {
    table_.input_price_per_mtok.assign(table_.models.size(), kNaN);
    table_.output_price_per_mtok.assign(table_.models.size(), kNaN);
    return std::move(table_);
  }

 private:
  std::string file_;
  const ReadOptions& options_;
  RoutingTable table_;
  std::unordered_map<std::string, std::size_t> first_seen_;
};

// What each column of a RouterBench table holds.
struct Layout {
  enum class Kind { kIgnored, kPrompt, kEvalName, kScore, kCost };
  struct Column {
    std::string name;
    Kind kind = Kind::kIgnored;
    std::size_t model = 0;
  };
  std::vector<Column> columns;
  std::vector<std::string> models;
};

Layout classify_columns(const std::vector<std::string>& names, const std::string& file,
                        const ReadOptions& options) {
  Layout layout;
  std::unordered_map<std::string, std::size_t> seen;
  for (const std::string& name : names) {
    if (!seen.emplace(name, 0).second) fail("{}: column '{}' appears twice", file, name);
  }
  bool has_prompt = false;
  for (const std::string& name : names) {
    Layout::Column column{name, Layout::Kind::kIgnored, 0};
    if (name == "prompt") {
      column.kind = Layout::Kind::kPrompt;
      has_prompt = true;
    } else if (name == "eval_name") {
      column.kind = Layout::Kind::kEvalName;
    } else if (is_ignored(name, options)) {
      column.kind = Layout::Kind::kIgnored;
    } else if (name.find('|') == std::string::npos && !name.empty()) {
      column.kind = Layout::Kind::kScore;
      column.model = layout.models.size();
      layout.models.push_back(name);
    } else if (!(name.size() > kCostSuffix.size() && name.ends_with(kCostSuffix))) {
      fail("{}: unknown column '{}' (list it in ignore_columns to skip it)", file, name);
    } else {
      column.kind = Layout::Kind::kCost;
    }
    layout.columns.push_back(std::move(column));
  }
  if (!has_prompt) fail("{}: no 'prompt' column", file);
  if (layout.models.empty()) fail("{}: no model score columns", file);
  // Costs refer to models by name, so resolve them once all score columns are known.
  for (Layout::Column& column : layout.columns) {
    if (column.kind != Layout::Kind::kCost) continue;
    const std::string model = column.name.substr(0, column.name.size() - kCostSuffix.size());
    const auto it = std::find(layout.models.begin(), layout.models.end(), model);
    if (it == layout.models.end()) {
      fail("{}: cost column '{}' names no model score column", file, column.name);
    }
    column.model = static_cast<std::size_t>(it - layout.models.begin());
  }
  return layout;
}

double score_from_text(const std::string& column, const std::string& text) {
  if (trim(text).empty()) throw RowProblem{column, "missing score"};
  const std::optional<double> value = parse_number(text);
  if (!value) throw RowProblem{column, fmt::format("non-numeric score '{}'", text)};
  return *value;
}

double cost_from_text(const std::string& column, const std::string& text) {
  if (trim(text).empty()) return kNaN;  // unknown cost, as pandas writes NaN
  const std::optional<double> value = parse_number(text);
  if (!value) throw RowProblem{column, fmt::format("non-numeric cost '{}'", text)};
  if (*value < 0.0) throw RowProblem{column, fmt::format("negative cost '{}'", text)};
  return *value;
}

bool is_blank_record(const CsvRecord& record) {
  return record.fields.size() == 1 && record.fields[0].empty();
}

RoutingTable read_routerbench_csv(const std::string& path, const ReadOptions& options) {
  const std::string text = read_file_text(path);
  CsvReader reader(text, path);
  CsvRecord header;
  if (!reader.next(header)) fail("{}: empty file, expected a header", path);
  const Layout layout = classify_columns(header.fields, path, options);
  TableBuilder builder(path, options, layout.models);
  const std::size_t m = layout.models.size();

  CsvRecord record;
  std::size_t index = 0;
  std::vector<double> scores(m);
  std::vector<double> costs(m);
  while (reader.next(record)) {
    if (is_blank_record(record)) continue;
    const std::size_t row = index++;
    if (record.fields.size() != layout.columns.size()) {
      builder.bad(
          record.line, row, "",
          fmt::format("expected {} fields, got {}", layout.columns.size(), record.fields.size()));
      continue;
    }
    try {
      std::string prompt;
      std::string eval_name;
      std::fill(costs.begin(), costs.end(), kNaN);
      for (std::size_t c = 0; c < layout.columns.size(); ++c) {
        const Layout::Column& column = layout.columns[c];
        const std::string& field = record.fields[c];
        switch (column.kind) {
          case Layout::Kind::kIgnored:
            break;
          case Layout::Kind::kPrompt:
            prompt = field;
            break;
          case Layout::Kind::kEvalName:
            eval_name = field;
            break;
          case Layout::Kind::kScore:
            scores[column.model] = score_from_text(column.name, field);
            break;
          case Layout::Kind::kCost:
            costs[column.model] = cost_from_text(column.name, field);
            break;
        }
      }
      builder.add(record.line, row, std::move(prompt), std::move(eval_name), scores, costs);
    } catch (const RowProblem& problem) {
      builder.bad(record.line, row, problem.column, problem.reason);
    }
  }
  return builder.finish();
}

double score_from_json(const std::string& column, const nlohmann::ordered_json& value) {
  if (value.is_null()) throw RowProblem{column, "missing score"};
  if (value.is_boolean()) return value.get<bool>() ? 1.0 : 0.0;
  if (value.is_number()) {
    const double v = value.get<double>();
    if (!std::isfinite(v)) throw RowProblem{column, "non-finite score"};
    return v;
  }
  if (value.is_string()) return score_from_text(column, value.get<std::string>());
  throw RowProblem{column, fmt::format("non-numeric score {}", value.dump())};
}

double cost_from_json(const std::string& column, const nlohmann::ordered_json& value) {
  if (value.is_null()) return kNaN;
  if (value.is_number()) {
    const double v = value.get<double>();
    if (!std::isfinite(v)) throw RowProblem{column, "non-finite cost"};
    if (v < 0.0) throw RowProblem{column, fmt::format("negative cost {}", value.dump())};
    return v;
  }
  if (value.is_string()) return cost_from_text(column, value.get<std::string>());
  throw RowProblem{column, fmt::format("non-numeric cost {}", value.dump())};
}

RoutingTable read_routerbench_jsonl(const std::string& path, const ReadOptions& options) {
  const std::string text = read_file_text(path);
  std::optional<Layout> layout;
  std::unordered_map<std::string, std::size_t> column_index;
  std::optional<TableBuilder> builder;
  std::vector<double> scores;
  std::vector<double> costs;
  std::size_t line_number = 0;
  std::size_t index = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string_view line = trim(std::string_view(text).substr(pos, end - pos));
    pos = end + 1;
    ++line_number;
    if (line.empty() || line == "\r") continue;

    nlohmann::ordered_json object;
    try {
      object = nlohmann::ordered_json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      if (!layout) fail("{}:{}: invalid JSON in the first row: {}", path, line_number, e.what());
      builder->bad(line_number, index++, "", fmt::format("invalid JSON: {}", e.what()));
      continue;
    }
    if (!object.is_object()) {
      if (!layout) fail("{}:{}: the first row is not a JSON object", path, line_number);
      builder->bad(line_number, index++, "", "not a JSON object");
      continue;
    }
    // The first row's keys define the columns, in their order in the file.
    if (!layout) {
      std::vector<std::string> names;
      for (const auto& item : object.items()) names.push_back(item.key());
      layout = classify_columns(names, path, options);
      for (std::size_t c = 0; c < layout->columns.size(); ++c) {
        column_index.emplace(layout->columns[c].name, c);
      }
      builder.emplace(path, options, layout->models);
      scores.assign(layout->models.size(), 0.0);
      costs.assign(layout->models.size(), kNaN);
    }
    const std::size_t row = index++;
    for (const auto& item : object.items()) {
      if (!column_index.contains(item.key()) && !is_ignored(item.key(), options)) {
        fail("{}:{}: unknown key '{}' (not in the first row; list it in ignore_columns to skip it)",
             path, line_number, item.key());
      }
    }
    try {
      std::string prompt;
      std::string eval_name;
      std::fill(costs.begin(), costs.end(), kNaN);
      for (const Layout::Column& column : layout->columns) {
        const auto it = object.find(column.name);
        const nlohmann::ordered_json value = it == object.end() ? nlohmann::ordered_json() : *it;
        switch (column.kind) {
          case Layout::Kind::kIgnored:
            break;
          case Layout::Kind::kPrompt:
            if (!value.is_string()) throw RowProblem{column.name, "prompt is not a string"};
            prompt = value.get<std::string>();
            break;
          case Layout::Kind::kEvalName:
            if (!value.is_null() && !value.is_string()) {
              throw RowProblem{column.name, "eval_name is not a string"};
            }
            if (value.is_string()) eval_name = value.get<std::string>();
            break;
          case Layout::Kind::kScore:
            scores[column.model] = score_from_json(column.name, value);
            break;
          case Layout::Kind::kCost:
            costs[column.model] = cost_from_json(column.name, value);
            break;
        }
      }
      builder->add(line_number, row, std::move(prompt), std::move(eval_name), scores, costs);
    } catch (const RowProblem& problem) {
      builder->bad(line_number, row, problem.column, problem.reason);
    }
  }
  if (!builder) fail("{}: no rows", path);
  return builder->finish();
}

std::string lower_extension(const std::string& path) {
  std::string ext = std::filesystem::path(path).extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext;
}

nlohmann::json parse_json_file(const std::string& path) {
  const std::string text = read_file_text(path);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
}

}  // namespace

RoutingTable read_routerbench(const std::string& path, const ReadOptions& options) {
  const std::string ext = lower_extension(path);
  if (ext == ".csv") return read_routerbench_csv(path, options);
  if (ext == ".jsonl" || ext == ".ndjson") return read_routerbench_jsonl(path, options);
  fail("{}: unknown extension '{}', expected .csv or .jsonl", path, ext);
}

RoutingTable read_routellm_pairwise(const std::string& path, const ReadOptions& options) {
  const std::string text = read_file_text(path);
  CsvReader reader(text, path);
  CsvRecord header;
  if (!reader.next(header)) fail("{}: empty file, expected a header", path);
  const std::vector<std::string>& names = header.fields;
  if (names.empty() || names[0] != "prompt") fail("{}: the first column must be 'prompt'", path);

  // Model columns are the ones that are neither the prompt nor a model's `_response` text.
  std::vector<std::string> models;
  std::vector<std::size_t> model_columns;
  for (std::size_t c = 1; c < names.size(); ++c) {
    const std::string& name = names[c];
    if (std::count(names.begin(), names.end(), name) > 1) {
      fail("{}: column '{}' appears twice", path, name);
    }
    if (is_ignored(name, options)) continue;
    constexpr std::string_view kResponse = "_response";
    if (name.ends_with(kResponse)) {
      const std::string model = name.substr(0, name.size() - kResponse.size());
      if (std::find(names.begin(), names.end(), model) != names.end()) continue;
      fail("{}: column '{}' is the response of no model column", path, name);
    }
    if (name.empty()) fail("{}: column {} has no name", path, c + 1);
    models.push_back(name);
    model_columns.push_back(c);
  }
  if (models.size() < 2)
    fail("{}: expected at least two model columns, got {}", path, models.size());

  std::string eval_name = std::filesystem::path(path).stem().string();
  if (eval_name.ends_with("_responses")) eval_name.resize(eval_name.size() - 10);

  TableBuilder builder(path, options, models);
  const std::vector<double> costs(models.size(), kNaN);
  std::vector<double> scores(models.size());
  CsvRecord record;
  std::size_t index = 0;
  while (reader.next(record)) {
    if (is_blank_record(record)) continue;
    const std::size_t row = index++;
    if (record.fields.size() != names.size()) {
      builder.bad(record.line, row, "",
                  fmt::format("expected {} fields, got {}", names.size(), record.fields.size()));
      continue;
    }
    try {
      for (std::size_t k = 0; k < models.size(); ++k) {
        const std::string& field = record.fields[model_columns[k]];
        if (field == "True") {
          scores[k] = 1.0;
        } else if (field == "False") {
          scores[k] = 0.0;
        } else if (trim(field).empty()) {
          throw RowProblem{models[k], "missing score"};
        } else {
          throw RowProblem{models[k], fmt::format("expected True or False, got '{}'", field)};
        }
      }
      builder.add(record.line, row, record.fields[0], eval_name, scores, costs);
    } catch (const RowProblem& problem) {
      builder.bad(record.line, row, problem.column, problem.reason);
    }
  }
  return builder.finish();
}

RoutingTable read_llmrouter(const std::string& path, const std::string& price_list_path,
                            const ReadOptions& options) {
  const std::string text = read_file_text(path);
  nlohmann::ordered_json data;
  try {
    data = nlohmann::ordered_json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
  if (!data.is_array()) fail("{}: expected a JSON array of records", path);
  if (data.empty()) fail("{}: no records", path);
  const auto& first = data.front();
  if (!first.is_object() || !first.contains("scores") || !first["scores"].is_object()) {
    fail("{}: record 0 has no 'scores' object", path);
  }
  std::vector<std::string> models;
  for (const auto& item : first["scores"].items()) models.push_back(item.key());
  if (models.empty()) fail("{}: record 0 has no model scores", path);

  TableBuilder builder(path, options, models);
  const std::vector<double> costs(models.size(), kNaN);
  std::vector<double> scores(models.size());
  for (std::size_t row = 0; row < data.size(); ++row) {
    const auto& entry = data[row];
    try {
      if (!entry.is_object()) throw RowProblem{"", "not a JSON object"};
      for (const auto& item : entry.items()) {
        const std::string& key = item.key();
        if (key != "question" && key != "scores" && key != "cluster_id" &&
            !is_ignored(key, options)) {
          fail("{}: record {}: unknown key '{}' (list it in ignore_columns to skip it)", path, row,
               key);
        }
      }
      const auto question = entry.find("question");
      if (question == entry.end() || !question->is_string()) {
        throw RowProblem{"question", "missing or not a string"};
      }
      const auto table = entry.find("scores");
      if (table == entry.end() || !table->is_object()) throw RowProblem{"scores", "missing scores"};
      for (const auto& item : table->items()) {
        if (std::find(models.begin(), models.end(), item.key()) == models.end()) {
          fail("{}: record {}: score for model '{}' that record 0 lacks", path, row, item.key());
        }
      }
      for (std::size_t k = 0; k < models.size(); ++k) {
        const auto it = table->find(models[k]);
        scores[k] = score_from_json(models[k], it == table->end() ? nlohmann::ordered_json() : *it);
      }
      std::string eval_name;
      if (const auto cluster = entry.find("cluster_id"); cluster != entry.end()) {
        if (!cluster->is_number_integer()) throw RowProblem{"cluster_id", "not an integer"};
        eval_name = fmt::format("cluster_{}", cluster->get<long long>());
      }
      builder.add(0, row, question->get<std::string>(), std::move(eval_name), scores, costs);
    } catch (const RowProblem& problem) {
      builder.bad(0, row, problem.column, problem.reason);
    }
  }
  RoutingTable result = builder.finish();

  const nlohmann::json prices = parse_json_file(price_list_path);
  if (!prices.is_object()) fail("{}: expected an object of models", price_list_path);
  for (std::size_t k = 0; k < result.models.size(); ++k) {
    const std::string& model = result.models[k];
    const auto it = prices.find(model);
    if (it == prices.end()) fail("{}: no price for model '{}'", price_list_path, model);
    for (const char* field : {"input_price", "output_price"}) {
      if (!it->contains(field) || !(*it)[field].is_number() || (*it)[field].get<double>() < 0.0) {
        fail("{}: model '{}': '{}' missing or not a non-negative number", price_list_path, model,
             field);
      }
    }
    result.input_price_per_mtok[k] = (*it)["input_price"].get<double>();
    result.output_price_per_mtok[k] = (*it)["output_price"].get<double>();
  }
  return result;
}

void append_table(RoutingTable& into, RoutingTable&& more, const std::string& source, bool strict) {
  if (into.models.empty() && into.prompts.empty()) {
    into = std::move(more);
    return;
  }
  if (more.models != into.models) {
    // The same models in another order: permute `more`'s columns into `into`'s order.
    std::vector<std::string> a = more.models, b = into.models;
    std::sort(a.begin(), a.end());
    std::sort(b.begin(), b.end());
    if (a == b) {
      const size_t M = into.models.size();
      std::vector<size_t> from(M);
      for (size_t m = 0; m < M; ++m)
        from[m] = size_t(std::find(more.models.begin(), more.models.end(), into.models[m]) -
                         more.models.begin());
      auto permute = [&](std::vector<double>& v, size_t rows) {
        std::vector<double> out(v.size());
        for (size_t r = 0; r < rows; ++r)
          for (size_t m = 0; m < M; ++m) out[r * M + m] = v[r * M + from[m]];
        v.swap(out);
      };
      permute(more.scores, more.rows());
      permute(more.costs, more.rows());
      more.models = into.models;
    }
  }
  if (more.models != into.models)
    fail("{}: models [{}] differ from the earlier files' [{}]", source,
         fmt::join(more.models, ", "), fmt::join(into.models, ", "));
  std::unordered_set<std::string> seen(into.prompts.begin(), into.prompts.end());
  const size_t M = into.models.size();
  std::vector<std::string> kept;
  for (size_t r = 0; r < more.rows(); ++r) {
    if (seen.count(more.prompts[r])) {
      const size_t line = r < more.lines.size() ? more.lines[r] : 0;
      const size_t record = r < more.records.size() ? more.records[r] : r;
      ReadIssue issue{source, line, record, "prompt",
                      "prompt repeats a prompt of an earlier file; the first is kept"};
      if (strict)
        fail("{}: {} {}: column prompt: {}", source, line > 0 ? "line" : "record",
             line > 0 ? line : record, issue.reason);
      into.issues.push_back(issue);
      continue;
    }
    into.prompts.push_back(std::move(more.prompts[r]));
    into.eval_names.push_back(std::move(more.eval_names[r]));
    if (r < more.lines.size()) into.lines.push_back(more.lines[r]);
    if (r < more.records.size()) into.records.push_back(more.records[r]);
    into.scores.insert(into.scores.end(), more.scores.begin() + long(r * M),
                       more.scores.begin() + long((r + 1) * M));
    into.costs.insert(into.costs.end(), more.costs.begin() + long(r * M),
                      more.costs.begin() + long((r + 1) * M));
    seen.insert(into.prompts.back());
  }
  into.issues.insert(into.issues.end(), more.issues.begin(), more.issues.end());
}

RoutingTable read_routing_data(const std::vector<std::string>& paths, const std::string& format,
                               const std::string& prices, const ReadOptions& options) {
  namespace fs = std::filesystem;
  if (paths.empty()) fail("llm data: no --data files given");
  std::vector<std::string> files;
  for (const auto& p : paths) {
    if (fs::is_directory(p)) {
      std::vector<std::string> csvs;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() && e.path().extension() == ".csv")
          csvs.push_back(e.path().string());
      std::sort(csvs.begin(), csvs.end());
      if (csvs.empty()) fail("{}: the folder has no .csv files", p);
      files.insert(files.end(), csvs.begin(), csvs.end());
    } else {
      if (!fs::exists(p)) fail("{}: no such file", p);
      files.push_back(p);
    }
  }
  RoutingTable table;
  for (const auto& file : files) {
    std::string kind = format;
    const std::string ext = fs::path(file).extension().string();
    if (kind == "auto") {
      if (ext == ".jsonl" || ext == ".ndjson") {
        kind = "routerbench";
      } else if (ext == ".json") {
        kind = "llmrouter";
      } else {
        // RouteLLM's files answer True/False (and may carry `<model>_response` columns).
        const auto records = parse_csv(read_file_text(file), file);
        kind = "routerbench";
        if (records.size() >= 2)
          for (size_t f = 1; f < records[1].fields.size(); ++f)
            if (records[1].fields[f] == "True" || records[1].fields[f] == "False")
              kind = "routellm";
      }
    }
    if (kind == "routerbench") {
      append_table(table, read_routerbench(file, options), file, options.strict);
    } else if (kind == "routellm") {
      append_table(table, read_routellm_pairwise(file, options), file, options.strict);
    } else if (kind == "llmrouter") {
      if (prices.empty()) fail("{}: the LLMRouter format needs --prices (default_llm.json)", file);
      append_table(table, read_llmrouter(file, prices, options), file, options.strict);
    } else {
      fail("llm data: format \"{}\" is not one of auto, routerbench, routellm, llmrouter", kind);
    }
  }
  if (table.rows() == 0) {
    if (table.issues.empty()) fail("llm data: no rows in {}", fmt::join(paths, ", "));
    const ReadIssue& first = table.issues.front();
    fail("llm data: no usable rows in {}: all {} rows are bad; the first: {}:{} column {}: {}",
         fmt::join(paths, ", "), table.issues.size(), first.file, first.line, first.column,
         first.reason);
  }
  return table;
}

}  // namespace switchyard
