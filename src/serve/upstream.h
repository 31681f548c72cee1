// One model's upstream: a pool of keep-alive HTTP clients, the concurrency limit, and one call
// (plain or streamed) classified into an Outcome.
#pragma once

#include <switchyard/gateway.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "serve/metrics.h"
#include "serve/serve_internal.h"

namespace httplib {
class Client;
}

namespace switchyard::serve {

// What one call to an upstream came to.
struct Outcome {
  enum Kind { Response, Connect, Timeout, Closed, Aborted } kind = Aborted;
  int status = 0;  // kind Response: the upstream's HTTP status
  std::string body;
  std::string content_type;
  bool committed = false;  // streamed: bytes reached the client, so no retry and no fallback
  std::string detail;      // the transport error, for messages
  bool ok() const { return kind == Response && status >= 200 && status < 300; }
  // Connection errors, timeouts, 5xx and 429 are retried (unless bytes went to the client).
  bool retryable() const {
    return !committed && kind != Aborted && (kind != Response || status >= 500 || status == 429);
  }
  // The metric kind of a failed attempt (Count when it did not fail).
  ErrorKind error_kind() const;
};

// Receives a streamed answer. Calls come from the thread running Upstream::call.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // The client used for the call (nullptr when it ends), so that another thread can abort it.
  virtual void attach(httplib::Client* client) = 0;
  // Body bytes of a 2xx answer as they arrive; false cancels the call.
  virtual bool on_body(const char* data, size_t size, int status,
                       const std::string& content_type) = 0;
};

class Upstream {
 public:
  Upstream(const UpstreamConfig& config, std::string api_key);
  ~Upstream();
  const UpstreamConfig& config() const { return config_; }

  // The concurrency limit: try_acquire fails when max_concurrency calls are running.
  bool try_acquire();
  void release();
  int64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }

  // POSTs `body` to <upstream>/v1/chat/completions on a pooled keep-alive connection. Without a
  // sink the answer's body is in the Outcome; with one, a 2xx body goes to the sink as it
  // arrives (other bodies are still collected, up to 1 MiB).
  Outcome call(const std::string& body, StreamSink* sink = nullptr);
  // Shuts the sockets of every call running now (they fail with kind Aborted or Closed).
  void abort_calls();

  // Health: attempts that failed in a row (0 after a success) and the last failure's kind.
  int64_t consecutive_failures() const { return failures_.load(std::memory_order_relaxed); }
  std::string last_error() const;

 private:
  std::unique_ptr<httplib::Client> take();
  void give_back(std::unique_ptr<httplib::Client> client, bool reusable);

  UpstreamConfig config_;
  UpstreamUrl url_;
  std::string path_;  // prefix + "/v1/chat/completions"
  std::string authorization_;
  std::atomic<int64_t> in_use_{0};
  std::atomic<int64_t> failures_{0};
  std::atomic<int> last_error_{-1};
  std::mutex mutex_;
  std::vector<std::unique_ptr<httplib::Client>> idle_;
  std::unordered_set<httplib::Client*> busy_;
};

}  // namespace switchyard::serve
