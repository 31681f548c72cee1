#include "serve/upstream.h"

#include <httplib.h>

#include <chrono>

namespace switchyard::serve {
namespace {

constexpr size_t kMaxErrorBody = size_t(1) << 20;

template <typename Setter>
void set_ms(Setter setter, int64_t ms) {
  setter(time_t(ms / 1000), time_t((ms % 1000) * 1000));
}

// httplib's names for its errors, with the TLS ones explained.
std::string describe(httplib::Error error) {
  switch (error) {
    case httplib::Error::SSLServerVerification:
      return "TLS certificate verification failed (a private CA goes in the model's ca_file)";
    case httplib::Error::SSLLoadingCerts:
      return "TLS: could not load the CA certificates";
    case httplib::Error::SSLConnection:
      return "TLS handshake failed";
    default:
      return httplib::to_string(error);
  }
}

}  // namespace

ErrorKind Outcome::error_kind() const {
  switch (kind) {
    case Response:
      if (status == 429) return ErrorKind::Status429;
      if (status >= 500) return ErrorKind::Status5xx;
      return ErrorKind::Count;
    case Connect:
      return ErrorKind::Connect;
    case Timeout:
      return ErrorKind::Timeout;
    case Closed:
      return ErrorKind::Closed;
    case Aborted:
      break;
  }
  return ErrorKind::Count;
}

Upstream::Upstream(const UpstreamConfig& config, std::string api_key)
    : config_(config),
      url_(parse_upstream_url(config.upstream, "models." + config.name)),
      path_(url_.prefix + "/v1/chat/completions"),
      authorization_(api_key.empty() ? "" : "Bearer " + api_key) {}

Upstream::~Upstream() = default;

bool Upstream::try_acquire() {
  if (in_use_.fetch_add(1, std::memory_order_acq_rel) >= config_.max_concurrency) {
    in_use_.fetch_sub(1, std::memory_order_acq_rel);
    return false;
  }
  return true;
}

void Upstream::release() {
  in_use_.fetch_sub(1, std::memory_order_acq_rel);
}

std::string Upstream::last_error() const {
  const int kind = last_error_.load(std::memory_order_relaxed);
  return kind < 0 ? "" : error_kind_name(ErrorKind(kind));
}

std::unique_ptr<httplib::Client> Upstream::take() {
  std::unique_ptr<httplib::Client> client;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!idle_.empty()) {
      client = std::move(idle_.back());
      idle_.pop_back();
      busy_.insert(client.get());
      return client;
    }
  }
  client = std::make_unique<httplib::Client>(url_.origin());
  client->set_keep_alive(true);
  client->set_tcp_nodelay(true);
  // The gateway passes bodies through as they are: no compression negotiated upstream.
  client->set_decompress(false);
  client->set_follow_location(false);
  if (!config_.ca_file.empty()) client->set_ca_cert_path(config_.ca_file);
  set_ms([&](time_t s, time_t us) { client->set_connection_timeout(s, us); },
         config_.connect_timeout_ms);
  set_ms([&](time_t s, time_t us) { client->set_read_timeout(s, us); }, config_.timeout_ms);
  set_ms([&](time_t s, time_t us) { client->set_write_timeout(s, us); }, config_.timeout_ms);
  std::lock_guard<std::mutex> lock(mutex_);
  busy_.insert(client.get());
  return client;
}

void Upstream::give_back(std::unique_ptr<httplib::Client> client, bool reusable) {
  // After a failure the connection may hold half an answer: close it (the next call reconnects).
  if (!reusable) client->stop();
  std::lock_guard<std::mutex> lock(mutex_);
  busy_.erase(client.get());
  idle_.push_back(std::move(client));
}

void Upstream::abort_calls() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (httplib::Client* client : busy_) client->stop();
}

Outcome Upstream::call(const std::string& body, StreamSink* sink) {
  using Clock = std::chrono::steady_clock;
  std::unique_ptr<httplib::Client> client = take();
  if (sink) sink->attach(client.get());

  httplib::Request req;
  req.method = "POST";
  req.path = path_;
  req.headers.emplace("Content-Type", "application/json");
  req.headers.emplace("Accept-Encoding", "identity");
  if (!authorization_.empty()) req.headers.emplace("Authorization", authorization_);
  req.body = body;

  Outcome out;
  auto last_byte = Clock::now();
  bool cancelled = false;
  if (sink) {
    req.response_handler = [&](const httplib::Response& response) {
      last_byte = Clock::now();
      out.status = response.status;
      out.content_type = response.get_header_value("Content-Type");
      return true;
    };
    req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
      last_byte = Clock::now();
      if (out.status >= 200 && out.status < 300) {
        if (sink->on_body(data, size, out.status, out.content_type)) return true;
        cancelled = true;
        return false;
      }
      if (out.body.size() < kMaxErrorBody) out.body.append(data, size);
      return true;
    };
  }
  httplib::Response res;
  httplib::Error error = httplib::Error::Success;
  const bool sent = client->send(req, res, error);
  if (sink) sink->attach(nullptr);

  if (sent) {
    out.kind = Outcome::Response;
    out.status = res.status;
    if (!sink) {
      out.body = std::move(res.body);
      out.content_type = res.get_header_value("Content-Type");
    }
  } else {
    out.detail = describe(error);
    const auto idle_ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - last_byte).count();
    switch (error) {
      case httplib::Error::Connection:
      case httplib::Error::ConnectionTimeout:
      case httplib::Error::BindIPAddress:
      case httplib::Error::SSLConnection:
      case httplib::Error::SSLLoadingCerts:
      case httplib::Error::SSLServerVerification:
        out.kind = Outcome::Connect;
        break;
      case httplib::Error::Canceled:
        out.kind = cancelled ? Outcome::Aborted : Outcome::Closed;
        break;
      default:
        // A read or write that failed after a whole timeout without a byte timed out; sooner,
        // the upstream closed the connection.
        out.kind = idle_ms >= config_.timeout_ms * 95 / 100 ? Outcome::Timeout : Outcome::Closed;
        if (out.kind == Outcome::Timeout) out.detail = "no answer within timeout_ms";
    }
  }
  give_back(std::move(client), sent);

  const ErrorKind kind = out.error_kind();
  if (out.kind != Outcome::Aborted && kind == ErrorKind::Count) {
    failures_.store(0, std::memory_order_relaxed);
  } else if (out.kind != Outcome::Aborted) {
    failures_.fetch_add(1, std::memory_order_relaxed);
    last_error_.store(int(kind), std::memory_order_relaxed);
  }
  return out;
}

}  // namespace switchyard::serve
