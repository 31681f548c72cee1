// The gateway: OpenAI-compatible endpoints on cpp-httplib's server, routing through a
// RequestRouter, forwarding to pooled upstream clients with retries, fallback and streaming.
#include <fmt/format.h>
#include <httplib.h>
#include <switchyard/gateway.h>
#include <sys/socket.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "serve/metrics.h"
#include "serve/upstream.h"

namespace switchyard::serve {
namespace {

using nlohmann::json;
using serve::ErrorKind;
using serve::Outcome;
using Clock = std::chrono::steady_clock;

constexpr size_t kMaxQueuedStreamBytes = size_t(4) << 20;
constexpr int kMaxJsonDepth = 128;

std::string openai_error(const std::string& message, const char* type, const char* param,
                         const char* code) {
  const json error = {{"message", message},
                      {"type", type},
                      {"param", param ? json(param) : json(nullptr)},
                      {"code", code ? json(code) : json(nullptr)}};
  return json{{"error", error}}.dump();
}

void set_error(httplib::Response& res, int status, const std::string& message, const char* type,
               const char* param, const char* code) {
  res.status = status;
  res.set_content(openai_error(message, type, param, code), "application/json");
}

void bad_request(httplib::Response& res, const std::string& message, const char* param) {
  set_error(res, 400, message, "invalid_request_error", param, nullptr);
}

// Compares without an early exit, so the time taken says nothing about where `given` differs.
bool constant_time_equal(const std::string& given, const std::string& expected) {
  unsigned diff = given.size() == expected.size() ? 0u : 1u;
  for (size_t i = 0; i < expected.size(); ++i)
    diff |= unsigned(uint8_t(i < given.size() ? given[i] : 0) ^ uint8_t(expected[i]));
  return diff == 0;
}

std::vector<std::string> split_keys(const char* text) {
  std::vector<std::string> keys;
  std::string key;
  for (const char* p = text;; ++p) {
    if (*p == ',' || *p == '\0') {
      const size_t begin = key.find_first_not_of(" \t\r\n");
      if (begin != std::string::npos)
        keys.push_back(key.substr(begin, key.find_last_not_of(" \t\r\n") - begin + 1));
      key.clear();
      if (*p == '\0') break;
    } else {
      key += *p;
    }
  }
  return keys;
}

// Deepest nesting of arrays and objects in JSON text (strings skipped). Bounding it keeps
// nlohmann::json's recursive dump() off the end of the stack.
int max_nesting_depth(const std::string& text) {
  int depth = 0, deepest = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      deepest = std::max(deepest, ++depth);
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return deepest;
}

std::string format_dollars(double dollars) {
  return fmt::format("{:.10g}", dollars);
}

json number_or_null(double value) {
  return std::isfinite(value) ? json(value) : json(nullptr);
}

// Dollars of an answer from its usage and the model's prices; NaN when either is missing.
double usage_cost(const json& usage, const UpstreamConfig& model) {
  if (!usage.is_object() || std::isnan(model.input_price_per_mtok)) return NAN;
  const auto prompt = usage.find("prompt_tokens");
  const auto completion = usage.find("completion_tokens");
  if (prompt == usage.end() || completion == usage.end() || !prompt->is_number() ||
      !completion->is_number())
    return NAN;
  return (prompt->get<double>() * model.input_price_per_mtok +
          completion->get<double>() * model.output_price_per_mtok) /
         1e6;
}

// The upstream's JSON object with "switchyard" added as its last field, keeping the upstream's
// own bytes (numbers, key order) as they were.
std::string with_field(const std::string& body, const json& parsed, const json& field) {
  if (parsed.contains("switchyard")) {
    json copy = parsed;
    copy["switchyard"] = field;
    return copy.dump();
  }
  const size_t close = body.find_last_not_of(" \t\r\n");
  std::string out;
  out.reserve(body.size() + 256);
  out.append(body, 0, close);
  if (!parsed.empty()) out += ',';
  out += "\"switchyard\":";
  out += field.dump();
  out.append(body, close, std::string::npos);
  return out;
}

// Finds "usage" in the server-sent events of a streamed answer (OpenAI sends it in the last
// chunk when stream_options.include_usage is set), for the cost counter.
class SseUsageScanner {
 public:
  void feed(const char* data, size_t size) {
    for (size_t i = 0; i < size; ++i) {
      if (data[i] != '\n') {
        if (line_.size() < (size_t(1) << 20)) line_ += data[i];
        continue;
      }
      if (line_.rfind("data: {", 0) == 0 && line_.find("\"usage\"") != std::string::npos) {
        const json event = json::parse(line_.substr(6), nullptr, false);
        if (event.is_object() && event.contains("usage") && event["usage"].is_object())
          usage_ = event["usage"];
      }
      line_.clear();
    }
  }
  const json& usage() const { return usage_; }

 private:
  std::string line_;
  json usage_;
};

// Timing of the request on this server thread: set before routing, read by the logger after
// the last byte was written.
thread_local Clock::time_point t_request_start;
thread_local bool t_request_timed = false;

}  // namespace

std::string extract_prompt(const json& messages) {
  if (!messages.is_array())
    fail("'messages' must be an array of message objects, got a {}", messages.type_name());
  if (messages.empty()) fail("'messages' must hold at least one message");
  std::string prompt;
  auto append = [&](const json& text) {
    if (!prompt.empty()) prompt += '\n';
    prompt += text.get_ref<const std::string&>();
  };
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& message = messages[i];
    if (!message.is_object()) fail("messages[{}] must be an object", i);
    const auto role = message.find("role");
    if (role == message.end() || !role->is_string()) fail("messages[{}].role must be a string", i);
    const auto content = message.find("content");
    if (content == message.end() || content->is_null()) continue;
    if (content->is_string()) {
      append(*content);
    } else if (content->is_array()) {
      for (size_t k = 0; k < content->size(); ++k) {
        const json& part = (*content)[k];
        const auto type = part.is_object() ? part.find("type") : part.end();
        if (!part.is_object() || type == part.end() || !type->is_string())
          fail("messages[{}].content[{}] must be an object with a string 'type'", i, k);
        if (type->get_ref<const std::string&>() != "text") continue;
        const auto text = part.find("text");
        if (text == part.end() || !text->is_string())
          fail("messages[{}].content[{}].text must be a string", i, k);
        append(*text);
      }
    } else {
      fail("messages[{}].content must be a string, an array of content parts or null", i);
    }
  }
  return prompt;
}

struct Gateway::Impl {
  // The answer of a request after all its attempts.
  struct Final {
    int model = -1;  // of the last attempt; -1 when no upstream was called
    Outcome outcome;
    int attempts = 0;
    bool any_full = false;  // some ranked model was at its concurrency limit
  };
  // One call to model `model`, attempt number `attempt` (1-based over the whole request).
  using Call = std::function<Outcome(int model, int attempt, const std::string& body)>;

  // Decrements the in-flight gauge when the request (stream included) is done.
  struct InFlight {
    explicit InFlight(Impl& g) : gateway(g) { gateway.metrics.in_flight.fetch_add(1); }
    ~InFlight() {
      if (gateway.metrics.in_flight.fetch_sub(1) == 1 && gateway.stopping.load()) {
        std::lock_guard<std::mutex> lock(gateway.mutex);
        gateway.cv.notify_all();
      }
    }
    InFlight(const InFlight&) = delete;
    InFlight& operator=(const InFlight&) = delete;
    Impl& gateway;
  };

  struct StreamState;

  Impl(GatewayConfig c, std::shared_ptr<const RequestRouter> r);
  void install_routes();
  bool authorized(const httplib::Request& req) const;
  void handle_chat(const httplib::Request& req, httplib::Response& res);
  Final run_attempts(const std::vector<int>& ranked, json& request, const Call& call);
  void respond(httplib::Response& res, const RouteChoice& choice, const Final& final);
  void add_route_headers(httplib::Response& res, const RouteChoice& choice, int model,
                         int attempts) const;
  void stream(httplib::Response& res, const RouteChoice& choice, std::vector<int> ranked,
              json request, std::shared_ptr<InFlight> in_flight);
  void produce(StreamState& st, const std::vector<int>& ranked, json& request);
  bool sleep_unless_aborting(int64_t ms);
  std::string health_json() const;
  std::string models_json() const;
  std::string metrics_text() const;

  GatewayConfig config;
  std::shared_ptr<const RequestRouter> router;
  std::vector<std::string> client_keys;
  std::vector<std::unique_ptr<serve::Upstream>> upstreams;
  std::unordered_map<std::string, int> index_of;
  serve::Metrics metrics;
  std::atomic<bool> started{false}, stopping{false}, stopped{false}, aborting{false};
  std::mutex mutex;  // with cv: drain waits and backoff sleeps
  std::condition_variable cv;
  int bound_port = -1;
  int listen_fd = -1;
  std::thread listener;
  httplib::Server server;  // last: destroyed first
};

// A streamed answer: a producer thread makes the upstream calls (retries and fallback happen
// before the first byte reaches the client) and queues the body; the server thread writes it.
struct Gateway::Impl::StreamState final : serve::StreamSink {
  enum Phase { Pending, Committed, Finished };

  StreamState(Impl& g, std::shared_ptr<InFlight> f) : gateway(g), in_flight(std::move(f)) {}
  ~StreamState() override {
    {
      std::lock_guard<std::mutex> lock(mutex);
      consumer_gone = true;
      if (active) active->stop();
      cv.notify_all();
    }
    if (producer.joinable()) producer.join();
  }

  void attach(httplib::Client* client) override {
    std::lock_guard<std::mutex> lock(mutex);
    active = client;
    if (client && consumer_gone) client->stop();
  }

  bool on_body(const char* data, size_t size, int status_code, const std::string& type) override {
    usage.feed(data, size);
    std::unique_lock<std::mutex> lock(mutex);
    if (phase == Pending) {
      phase = Committed;
      status = status_code;
      content_type = type;
      model = current_model;
      attempts = current_attempt;
      cv.notify_all();
    }
    cv.wait(lock, [&] { return queued < kMaxQueuedStreamBytes || consumer_gone; });
    if (consumer_gone) return false;
    chunks.emplace_back(data, size);
    queued += size;
    cv.notify_all();
    return true;
  }

  // The chunked content provider: writes everything the producer queues until it is done, then
  // an error event when the upstream failed after the stream began. One call for the whole
  // stream, so that a graceful stop lets the stream finish.
  bool pump(httplib::DataSink& sink) {
    std::unique_lock<std::mutex> lock(mutex);
    std::string batch;
    std::string tail = "\n\n";  // the last two bytes written
    for (;;) {
      cv.wait(lock, [&] { return !chunks.empty() || done; });
      if (!chunks.empty()) {
        batch.clear();
        for (const auto& chunk : chunks) batch += chunk;
        chunks.clear();
        queued = 0;
        cv.notify_all();
        lock.unlock();
        const bool written = sink.write(batch.data(), batch.size());
        tail = (tail + batch.substr(batch.size() - std::min<size_t>(batch.size(), 2)))
                   .substr(std::min<size_t>(batch.size(), 2));
        lock.lock();
        if (!written) {
          consumer_gone = true;
          if (active) active->stop();
          cv.notify_all();
          return false;
        }
        continue;
      }
      const Outcome& outcome = final.outcome;
      if (!outcome.ok()) {
        std::string message =
            gateway.aborting.load()
                ? std::string("the gateway is shutting down")
                : fmt::format("the upstream of model '{}' failed during the stream: {}",
                              gateway.config.models[size_t(model)].name,
                              outcome.detail.empty() ? "connection lost" : outcome.detail);
        // A partial event of the upstream's is ended first, so that ours parses on its own.
        std::string event = tail == "\n\n" ? "" : tail.back() == '\n' ? "\n" : "\n\n";
        event += "data: " + openai_error(message, "server_error", nullptr, "upstream_error");
        event += "\n\n";
        lock.unlock();
        sink.write(event.data(), event.size());
        lock.lock();
      }
      sink.done();
      return true;
    }
  }

  Impl& gateway;
  std::shared_ptr<InFlight> in_flight;
  std::mutex mutex;
  std::condition_variable cv;
  Phase phase = Pending;
  int status = 0, model = -1, attempts = 0;  // set at commit
  std::string content_type;
  std::deque<std::string> chunks;
  size_t queued = 0;
  bool done = false;           // the producer finished; `final` is set
  bool consumer_gone = false;  // the client went away (or the state is being destroyed)
  httplib::Client* active = nullptr;
  Final final;
  // Producer-only.
  int current_model = -1, current_attempt = 0;
  SseUsageScanner usage;
  std::thread producer;
};

Gateway::Impl::Impl(GatewayConfig c, std::shared_ptr<const RequestRouter> r)
    : config(std::move(c)), router(std::move(r)), metrics([&] {
        std::vector<std::string> names;
        for (const auto& m : config.models) names.push_back(m.name);
        return names;
      }()) {
  if (!router) fail("{}: the gateway needs a request router", config.source);
  if (config.models.empty()) fail("{}: no models configured", config.source);
  if (!config.client_api_keys_env.empty())
    if (const char* keys = std::getenv(config.client_api_keys_env.c_str()))
      client_keys = split_keys(keys);
  for (size_t i = 0; i < config.models.size(); ++i) {
    const UpstreamConfig& m = config.models[i];
    std::string key;
    if (!m.api_key_env.empty()) {
      const char* value = std::getenv(m.api_key_env.c_str());
      if (!value || !*value)
        fail(
            "{}: models.{}: field 'api_key_env' names the environment variable {}, which is "
            "not set",
            config.source, m.name, m.api_key_env);
      key = value;
    }
    upstreams.push_back(std::make_unique<serve::Upstream>(m, key));
    index_of.emplace(m.name, int(i));
  }
  install_routes();
}

bool Gateway::Impl::authorized(const httplib::Request& req) const {
  if (client_keys.empty()) return true;
  const std::string header = req.get_header_value("Authorization");
  constexpr std::string_view kBearer = "Bearer ";
  if (header.size() <= kBearer.size() || header.compare(0, kBearer.size(), kBearer) != 0)
    return false;
  const std::string given = header.substr(kBearer.size());
  bool match = false;
  for (const auto& key : client_keys) match |= constant_time_equal(given, key);
  return match;
}

void Gateway::Impl::install_routes() {
  using httplib::Server;
  server.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    t_request_start = Clock::now();
    t_request_timed = true;
    return Server::HandlerResponse::Unhandled;
  });
  server.set_post_routing_handler([this](const httplib::Request&, httplib::Response& res) {
    metrics.count_status(res.status);
  });
  server.set_logger([this](const httplib::Request&, const httplib::Response&) {
    if (!t_request_timed) return;
    t_request_timed = false;
    metrics.request_seconds.observe(
        std::chrono::duration<double>(Clock::now() - t_request_start).count());
  });
  server.set_error_handler(
      Server::HandlerWithResponse([this](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return Server::HandlerResponse::Unhandled;
        const int status = res.status;
        if (status == 404)
          set_error(res, 404, fmt::format("Invalid URL ({} {})", req.method, req.path),
                    "invalid_request_error", nullptr, "unknown_url");
        else if (status == 413)
          set_error(res, 413,
                    fmt::format("The request body is larger than max_body_bytes ({} bytes)",
                                config.max_body_bytes),
                    "invalid_request_error", nullptr, "request_too_large");
        else
          set_error(res, status, fmt::format("HTTP error {}", status),
                    status < 500 ? "invalid_request_error" : "server_error", nullptr, nullptr);
        return Server::HandlerResponse::Handled;
      }));
  server.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          what = e.what();
        } catch (...) {
        }
        set_error(res, 500, "internal error: " + what, "server_error", nullptr, nullptr);
      });

  server.Post("/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
    handle_chat(req, res);
  });
  server.Get("/v1/models", [this](const httplib::Request& req, httplib::Response& res) {
    if (!authorized(req))
      return set_error(res, 401, "Incorrect or missing API key (Authorization: Bearer <key>)",
                       "invalid_request_error", nullptr, "invalid_api_key");
    res.set_content(models_json(), "application/json");
  });
  server.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(health_json(), "application/json");
  });
  server.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics_text(), "text/plain; version=0.0.4");
  });
}

void Gateway::Impl::handle_chat(const httplib::Request& req, httplib::Response& res) {
  auto in_flight = std::make_shared<InFlight>(*this);
  if (!authorized(req))
    return set_error(res, 401, "Incorrect or missing API key (Authorization: Bearer <key>)",
                     "invalid_request_error", nullptr, "invalid_api_key");
  if (int64_t(req.body.size()) > config.max_body_bytes)
    return set_error(res, 413,
                     fmt::format("The request body is larger than max_body_bytes ({} bytes)",
                                 config.max_body_bytes),
                     "invalid_request_error", nullptr, "request_too_large");
  if (max_nesting_depth(req.body) > kMaxJsonDepth)
    return bad_request(res, fmt::format("The JSON body nests deeper than {}", kMaxJsonDepth),
                       nullptr);
  json request = json::parse(req.body, nullptr, false);
  if (request.is_discarded())
    return bad_request(res,
                       "We could not parse the JSON body of your request. (HINT: This likely "
                       "means you aren't using your HTTP library correctly.)",
                       nullptr);
  if (!request.is_object()) return bad_request(res, "The JSON body must be an object", nullptr);
  const auto messages = request.find("messages");
  if (messages == request.end())
    return bad_request(res, "Missing required parameter: 'messages'.", "messages");
  std::string prompt;
  try {
    prompt = extract_prompt(*messages);
  } catch (const Error& e) {
    return bad_request(res, e.what(), "messages");
  }
  std::string requested;
  if (const auto model = request.find("model"); model != request.end() && !model->is_null()) {
    if (!model->is_string()) return bad_request(res, "'model' must be a string", "model");
    requested = model->get<std::string>();
  }
  if (requested.empty()) requested = config.default_model;
  if (requested.empty()) return bad_request(res, "you must provide a model parameter", "model");
  bool streamed = false;
  if (const auto s = request.find("stream"); s != request.end() && !s->is_null()) {
    if (!s->is_boolean()) return bad_request(res, "'stream' must be true or false", "stream");
    streamed = s->get<bool>();
  }

  RouteChoice choice;
  const auto t0 = Clock::now();
  try {
    choice = router->choose(prompt, requested);
  } catch (const UnknownModelError& e) {
    return set_error(res, 404, e.what(), "invalid_request_error", "model", "model_not_found");
  } catch (const Error& e) {
    return bad_request(res, e.what(), "model");
  }
  metrics.routing_seconds.observe(std::chrono::duration<double>(Clock::now() - t0).count());
  std::vector<int> ranked;
  for (const auto& name : choice.ranked_models) {
    const auto it = index_of.find(name);
    if (it != index_of.end() && std::find(ranked.begin(), ranked.end(), it->second) == ranked.end())
      ranked.push_back(it->second);
  }
  if (ranked.empty())
    return set_error(res, 500,
                     fmt::format("the router chose no configured model for '{}'", requested),
                     "server_error", nullptr, nullptr);
  metrics.model(size_t(ranked[0])).choices.fetch_add(1, std::memory_order_relaxed);

  if (streamed) return stream(res, choice, std::move(ranked), std::move(request), in_flight);
  const Final final = run_attempts(ranked, request, [this](int m, int, const std::string& body) {
    return upstreams[size_t(m)]->call(body);
  });
  respond(res, choice, final);
}

bool Gateway::Impl::sleep_unless_aborting(int64_t ms) {
  std::unique_lock<std::mutex> lock(mutex);
  return !cv.wait_for(lock, std::chrono::milliseconds(ms), [&] { return aborting.load(); });
}

Gateway::Impl::Final Gateway::Impl::run_attempts(const std::vector<int>& ranked, json& request,
                                                 const Call& call) {
  Final final;
  std::string body;
  for (size_t r = 0; r < ranked.size() && !aborting.load(); ++r) {
    serve::Upstream& upstream = *upstreams[size_t(ranked[r])];
    serve::ModelMetrics& mm = metrics.model(size_t(ranked[r]));
    const bool last = r + 1 == ranked.size();
    if (!upstream.try_acquire()) {
      mm.rejections.fetch_add(1, std::memory_order_relaxed);
      if (!last) mm.fallbacks.fetch_add(1, std::memory_order_relaxed);
      final.any_full = true;
      continue;
    }
    struct Slot {
      serve::Upstream& u;
      ~Slot() { u.release(); }
    } slot{upstream};
    request["model"] = upstream.config().upstream_model;
    body = request.dump();
    for (int64_t k = 0; k <= upstream.config().retries; ++k) {
      if (k > 0) {
        mm.retries.fetch_add(1, std::memory_order_relaxed);
        const int64_t backoff = std::min<int64_t>(upstream.config().backoff_ms << (k - 1), 30000);
        if (!sleep_unless_aborting(backoff)) return final;
      }
      ++final.attempts;
      mm.attempts.fetch_add(1, std::memory_order_relaxed);
      final.model = ranked[r];
      final.outcome = call(ranked[r], final.attempts, body);
      const ErrorKind kind = final.outcome.error_kind();
      if (kind != ErrorKind::Count) mm.errors[size_t(kind)].fetch_add(1, std::memory_order_relaxed);
      if (!final.outcome.retryable() || aborting.load()) return final;
    }
    if (!last) mm.fallbacks.fetch_add(1, std::memory_order_relaxed);
  }
  return final;
}

void Gateway::Impl::add_route_headers(httplib::Response& res, const RouteChoice& choice, int model,
                                      int attempts) const {
  res.set_header("x-switchyard-model", config.models[size_t(model)].name);
  if (!choice.router.empty()) res.set_header("x-switchyard-router", choice.router);
  res.set_header("x-switchyard-attempts", std::to_string(attempts));
  if (std::isfinite(choice.estimated_cost))
    res.set_header("x-switchyard-estimated-cost", format_dollars(choice.estimated_cost));
}

void Gateway::Impl::respond(httplib::Response& res, const RouteChoice& choice, const Final& final) {
  if (final.model < 0) {
    if (aborting.load())
      return set_error(res, 503, "the gateway is shutting down", "server_error", nullptr,
                       "shutting_down");
    return set_error(res, 503,
                     "every upstream for this request is at its concurrency limit; retry later",
                     "server_error", nullptr, "upstreams_busy");
  }
  const UpstreamConfig& model = config.models[size_t(final.model)];
  const Outcome& o = final.outcome;
  add_route_headers(res, choice, final.model, final.attempts);
  if (o.kind != Outcome::Response) {
    const bool timeout = o.kind == Outcome::Timeout;
    const std::string message =
        aborting.load() ? std::string("the gateway is shutting down")
                        : fmt::format("the upstream of model '{}' failed after {} attempt(s): {}",
                                      model.name, final.attempts, o.detail);
    return set_error(res,
                     timeout           ? 504
                     : aborting.load() ? 503
                                       : 502,
                     message, "server_error", nullptr,
                     timeout ? "upstream_timeout" : "upstream_unavailable");
  }
  res.status = o.status;
  const std::string type = o.content_type.empty() ? "application/json" : o.content_type;
  const json parsed = json::parse(o.body, nullptr, false);
  if (!parsed.is_object()) return res.set_content(o.body, type);
  const double cost = usage_cost(parsed.value("usage", json()), model);
  if (std::isfinite(cost)) {
    metrics.model(size_t(final.model)).cost.fetch_add(cost, std::memory_order_relaxed);
    res.set_header("x-switchyard-cost", format_dollars(cost));
  }
  const json field = {{"model", model.name},
                      {"router", choice.router.empty() ? json(nullptr) : json(choice.router)},
                      {"threshold", number_or_null(choice.threshold)},
                      {"estimated_cost", number_or_null(choice.estimated_cost)},
                      {"cost", number_or_null(cost)},
                      {"attempts", final.attempts}};
  res.set_content(with_field(o.body, parsed, field), type);
}

// The producer thread of a stream: every attempt, then the end of the stream for pump().
void Gateway::Impl::produce(StreamState& st, const std::vector<int>& ranked, json& request) {
  Final final;
  try {
    final = run_attempts(ranked, request, [&](int m, int attempt, const std::string& body) {
      st.current_model = m;
      st.current_attempt = attempt;
      Outcome o = upstreams[size_t(m)]->call(body, &st);
      std::lock_guard<std::mutex> lock(st.mutex);
      o.committed = st.phase == StreamState::Committed;
      return o;
    });
  } catch (const std::exception& e) {  // this thread must end and wake the others
    final.model = st.current_model >= 0 ? st.current_model : ranked.front();
    final.outcome = Outcome{};
    final.outcome.kind = Outcome::Closed;
    final.outcome.detail = std::string("internal error: ") + e.what();
    std::lock_guard<std::mutex> lock(st.mutex);
    final.outcome.committed = st.phase == StreamState::Committed;
  }
  if (final.outcome.committed && final.outcome.ok()) {
    const double cost = usage_cost(st.usage.usage(), config.models[size_t(final.model)]);
    if (std::isfinite(cost))
      metrics.model(size_t(final.model)).cost.fetch_add(cost, std::memory_order_relaxed);
  }
  std::lock_guard<std::mutex> lock(st.mutex);
  st.final = std::move(final);
  st.done = true;
  if (st.phase == StreamState::Pending) st.phase = StreamState::Finished;
  st.cv.notify_all();
}

void Gateway::Impl::stream(httplib::Response& res, const RouteChoice& choice,
                           std::vector<int> ranked, json request,
                           std::shared_ptr<InFlight> in_flight) {
  auto state = std::make_shared<StreamState>(*this, std::move(in_flight));
  StreamState* st = state.get();
  st->producer =
      std::thread([this, st, ranked = std::move(ranked), request = std::move(request)]() mutable {
        produce(*st, ranked, request);
      });

  std::unique_lock<std::mutex> lock(st->mutex);
  st->cv.wait(lock, [&] { return st->phase != StreamState::Pending; });
  if (st->phase == StreamState::Finished) {
    lock.unlock();
    st->producer.join();
    return respond(res, choice, st->final);
  }
  res.status = st->status;
  add_route_headers(res, choice, st->model, st->attempts);
  res.set_header("Cache-Control", "no-cache");
  const std::string type = st->content_type.empty() ? "text/event-stream" : st->content_type;
  lock.unlock();
  res.set_chunked_content_provider(
      type, [state](size_t, httplib::DataSink& sink) { return state->pump(sink); });
}

std::string Gateway::Impl::health_json() const {
  json list = json::array();
  bool any_healthy = false;
  for (const auto& u : upstreams) {
    const bool healthy = u->consecutive_failures() < 3;
    any_healthy |= healthy;
    const std::string last = u->last_error();
    list.push_back({{"model", u->config().name},
                    {"upstream", u->config().upstream},
                    {"healthy", healthy},
                    {"in_use", u->in_use()},
                    {"max_concurrency", u->config().max_concurrency},
                    {"consecutive_failures", u->consecutive_failures()},
                    {"last_error", last.empty() ? json(nullptr) : json(last)}});
  }
  const char* status = stopping.load() ? "draining" : any_healthy ? "ok" : "degraded";
  return json{{"status", status}, {"upstreams", list}}.dump();
}

std::string Gateway::Impl::models_json() const {
  json data = json::array();
  for (const auto& m : config.models)
    data.push_back(
        {{"id", m.name}, {"object", "model"}, {"created", 0}, {"owned_by", "switchyard"}});
  for (const auto& [name, r] : config.routers)
    data.push_back({{"id", "router-" + name},
                    {"object", "model"},
                    {"created", 0},
                    {"owned_by", "switchyard-router"}});
  return json{{"object", "list"}, {"data", data}}.dump();
}

std::string Gateway::Impl::metrics_text() const {
  std::vector<int64_t> in_use;
  for (const auto& u : upstreams) in_use.push_back(u->in_use());
  return metrics.render(in_use);
}

Gateway::Gateway(GatewayConfig config, std::shared_ptr<const RequestRouter> router)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(router))) {}

Gateway::~Gateway() {
  stop();
}

int Gateway::start() {
  Impl& g = *impl_;
  if (g.started.load()) fail("{}: the gateway is already started", g.config.source);
  g.server.new_task_queue = [n = g.config.threads] { return new httplib::ThreadPool(size_t(n)); };
  g.server.set_tcp_nodelay(true);
  g.server.set_keep_alive_max_count(size_t(g.config.keep_alive_max_requests));
  g.server.set_keep_alive_timeout(g.config.keep_alive_timeout_s);
  g.server.set_payload_max_length(size_t(g.config.max_body_bytes));
  // Replaces httplib's default (SO_REUSEPORT), so that a port in use is an error.
  g.server.set_socket_options([&g](socket_t sock) {
    g.listen_fd = int(sock);
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  errno = 0;
  if (g.config.port == 0) {
    g.bound_port = g.server.bind_to_any_port(g.config.host);
  } else {
    g.bound_port = g.server.bind_to_port(g.config.host, g.config.port) ? g.config.port : -1;
  }
  if (g.bound_port <= 0)
    fail("{}: listen: cannot listen on {}:{} ({})", g.config.source, g.config.host, g.config.port,
         errno ? std::strerror(errno) : "address not available");
  // The packaged cpp-httplib listens with a backlog of 5, which drops connection bursts.
  ::listen(g.listen_fd, SOMAXCONN);
  if (g.client_keys.empty())
    fmt::print(stderr,
               "switchyard: WARNING: client authentication is OFF ({}): anyone who can reach "
               "{}:{} can spend the upstreams' keys. Set client_api_keys_env and that variable "
               "to comma-separated keys.\n",
               g.config.client_api_keys_env.empty()
                   ? std::string("client_api_keys_env is not set")
                   : fmt::format("the variable {} is unset or empty", g.config.client_api_keys_env),
               g.config.host, g.bound_port);
  g.started.store(true);
  g.listener = std::thread([&g] { g.server.listen_after_bind(); });
  while (!g.server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  return g.bound_port;
}

int Gateway::port() const {
  return impl_->bound_port;
}

void Gateway::stop() {
  Impl& g = *impl_;
  if (!g.started.load() || g.stopped.exchange(true)) return;
  g.stopping.store(true);
  g.server.stop();  // no new connections; requests in flight go on
  {
    std::unique_lock<std::mutex> lock(g.mutex);
    const bool drained = g.cv.wait_for(lock, std::chrono::milliseconds(g.config.drain_timeout_ms),
                                       [&] { return g.metrics.in_flight.load() == 0; });
    if (!drained) {
      g.aborting.store(true);
      g.cv.notify_all();
      // Calls that were connecting when aborted are caught by the next round.
      while (g.metrics.in_flight.load() > 0) {
        lock.unlock();
        for (auto& u : g.upstreams) u->abort_calls();
        lock.lock();
        g.cv.wait_for(lock, std::chrono::milliseconds(20),
                      [&] { return g.metrics.in_flight.load() == 0; });
      }
    }
  }
  // Waits for the server threads; idle keep-alive connections close within keep_alive_timeout_s.
  g.listener.join();
}

bool Gateway::client_auth_enabled() const {
  return !impl_->client_keys.empty();
}

std::string Gateway::metrics_text() const {
  return impl_->metrics_text();
}

}  // namespace switchyard::serve
