#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <utility>

namespace switchyard::serve {
namespace {

constexpr auto kRelaxed = std::memory_order_relaxed;

// Label values escape backslash, double quote and newline.
std::string label(const std::string& value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void header(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : bounds_(std::move(upper_bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::observe(double value) {
  const size_t bucket =
      size_t(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  buckets_[bucket].fetch_add(1, kRelaxed);
  sum_.fetch_add(value, kRelaxed);
  count_.fetch_add(1, kRelaxed);
}

void Histogram::render(std::string& out, const char* name, const char* help) const {
  header(out, name, "histogram", help);
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cumulative += buckets_[i].load(kRelaxed);
    const std::string le = i < bounds_.size() ? fmt::format("{}", bounds_[i]) : "+Inf";
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, le, cumulative);
  }
  out += fmt::format("{}_sum {}\n{}_count {}\n", name, sum_.load(kRelaxed), name, cumulative);
}

const char* error_kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Connect:
      return "connect";
    case ErrorKind::Timeout:
      return "timeout";
    case ErrorKind::Closed:
      return "closed";
    case ErrorKind::Status5xx:
      return "5xx";
    case ErrorKind::Status429:
      return "429";
    case ErrorKind::Count:
      break;
  }
  return "?";
}

Metrics::Metrics(std::vector<std::string> models)
    : request_seconds({0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                       10, 30, 60, 120}),
      routing_seconds({0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                       0.01, 0.025, 0.1}),
      names_(std::move(models)) {
  for (size_t i = 0; i < names_.size(); ++i) models_.push_back(std::make_unique<ModelMetrics>());
}

void Metrics::count_status(int status) {
  if (status >= 0 && status < int(status_.size())) status_[size_t(status)].fetch_add(1, kRelaxed);
}

std::string Metrics::render(const std::vector<int64_t>& in_use) const {
  std::string out;
  out.reserve(8192);
  header(out, "switchyard_requests_total", "counter",
         "HTTP requests answered by the gateway, by status code.");
  for (size_t code = 0; code < status_.size(); ++code)
    if (const uint64_t n = status_[code].load(kRelaxed))
      out += fmt::format("switchyard_requests_total{{code=\"{}\"}} {}\n", code, n);

  auto per_model = [&](const char* name, const char* type, const char* help, auto value) {
    header(out, name, type, help);
    for (size_t m = 0; m < names_.size(); ++m)
      out += fmt::format("{}{{model=\"{}\"}} {}\n", name, label(names_[m]), value(m));
  };
  per_model("switchyard_route_choices_total", "counter",
            "Requests whose first choice (router's or client's) was this model.",
            [&](size_t m) { return models_[m]->choices.load(kRelaxed); });
  per_model("switchyard_upstream_attempts_total", "counter", "Calls made to this model's upstream.",
            [&](size_t m) { return models_[m]->attempts.load(kRelaxed); });
  per_model("switchyard_upstream_retries_total", "counter",
            "Attempts after the first on the same model (after a connection error, timeout, 5xx "
            "or 429).",
            [&](size_t m) { return models_[m]->retries.load(kRelaxed); });
  per_model("switchyard_fallbacks_total", "counter",
            "Times the gateway gave up on this model (retries spent, or at max_concurrency) and "
            "moved to the next ranked model.",
            [&](size_t m) { return models_[m]->fallbacks.load(kRelaxed); });
  per_model("switchyard_concurrency_rejections_total", "counter",
            "Times this model was skipped because max_concurrency calls were running.",
            [&](size_t m) { return models_[m]->rejections.load(kRelaxed); });
  per_model("switchyard_cost_dollars_total", "counter",
            "Dollars spent on this model, from the answers' usage and the configured prices.",
            [&](size_t m) { return models_[m]->cost.load(kRelaxed); });
  per_model("switchyard_upstream_in_use", "gauge", "Calls to this model's upstream running now.",
            [&](size_t m) { return m < in_use.size() ? in_use[m] : 0; });

  header(out, "switchyard_upstream_errors_total", "counter",
         "Failed upstream attempts by model and kind (connect, timeout, closed, 5xx, 429).");
  for (size_t m = 0; m < names_.size(); ++m)
    for (size_t k = 0; k < size_t(ErrorKind::Count); ++k)
      out += fmt::format("switchyard_upstream_errors_total{{model=\"{}\",kind=\"{}\"}} {}\n",
                         label(names_[m]), error_kind_name(ErrorKind(k)),
                         models_[m]->errors[k].load(kRelaxed));

  header(out, "switchyard_requests_in_flight", "gauge",
         "Chat completion requests being handled now.");
  out += fmt::format("switchyard_requests_in_flight {}\n", in_flight.load(kRelaxed));
  request_seconds.render(out, "switchyard_request_duration_seconds",
                         "Gateway time per request, from its first byte read to its last byte "
                         "written (streams included).");
  routing_seconds.render(out, "switchyard_routing_duration_seconds",
                         "Time of the routing decision (RequestRouter::choose).");
  return out;
}

}  // namespace switchyard::serve
