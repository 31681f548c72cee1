// The gateway's counters, gauges and histograms, rendered in Prometheus' text format. Every
// update is one relaxed atomic operation; nothing here takes a lock.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace switchyard::serve {

class Histogram {
 public:
  explicit Histogram(std::vector<double> upper_bounds);
  void observe(double value);
  // Appends # HELP, # TYPE, the cumulative _bucket lines, _sum and _count.
  void render(std::string& out, const char* name, const char* help) const;
  uint64_t count() const { return count_.load(std::memory_order_relaxed); }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1, not cumulative
  std::atomic<uint64_t> count_{0};
  std::atomic<double> sum_{0.0};
};

// Why one upstream attempt failed.
enum class ErrorKind { Connect, Timeout, Closed, Status5xx, Status429, Count };
const char* error_kind_name(ErrorKind kind);

struct ModelMetrics {
  std::atomic<uint64_t> choices{0};     // the router's first choice
  std::atomic<uint64_t> attempts{0};    // upstream calls
  std::atomic<uint64_t> retries{0};     // attempts after the first on this model
  std::atomic<uint64_t> fallbacks{0};   // moves from this model to the next ranked one
  std::atomic<uint64_t> rejections{0};  // skipped because max_concurrency calls were running
  std::array<std::atomic<uint64_t>, size_t(ErrorKind::Count)> errors{};
  std::atomic<double> cost{0.0};  // dollars, from the answers' usage
};

class Metrics {
 public:
  explicit Metrics(std::vector<std::string> models);
  void count_status(int status);
  ModelMetrics& model(size_t index) { return *models_[index]; }
  std::atomic<int64_t> in_flight{0};
  Histogram request_seconds;  // whole request, read to last byte written
  Histogram routing_seconds;  // RequestRouter::choose
  // `in_use`: the calls running per model now (gauge).
  std::string render(const std::vector<int64_t>& in_use) const;

 private:
  std::vector<std::string> names_;
  std::vector<std::unique_ptr<ModelMetrics>> models_;
  std::array<std::atomic<uint64_t>, 600> status_{};
};

}  // namespace switchyard::serve
