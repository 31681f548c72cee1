// `switchyard llm serve`: an OpenAI-compatible HTTP gateway that routes each chat completion to
// one of several LLM upstreams (docs/gateway.md). The routing decision comes through the narrow
// RequestRouter interface; make_prompt_request_router bridges trained PromptRouters to it.
#pragma once

#include <switchyard/error.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace switchyard::serve {

// ---- The routing decision ----

struct RouteChoice {
  std::vector<std::string> ranked_models;  // first = chosen; the rest = fallback order
  std::string router;                      // e.g. "knn" ("" when the client named a model directly)
  double estimated_cost = NAN;             // dollars, for the chosen model
  double threshold = NAN;                  // the threshold/λ used, when a router chose
};

// The client asked for a model (or router alias) that does not exist: the gateway answers 404
// with code "model_not_found". Any other switchyard::Error from choose() is a 400.
class UnknownModelError : public Error {
 public:
  explicit UnknownModelError(const std::string& message) : Error(message) {}
};

class RequestRouter {  // thread-safe; called once per request
 public:
  virtual ~RequestRouter() = default;
  // prompt: the concatenated text of the request's messages (content strings; for content arrays,
  // their "text" parts); requested_model: the request's "model" field (the config's
  // default_model when the request has none). Throws switchyard::Error (UnknownModelError for an
  // unknown name).
  virtual RouteChoice choose(const std::string& prompt,
                             const std::string& requested_model) const = 0;
};

// ---- Configuration (gateway.json, schema in docs/gateway.md) ----

struct UpstreamConfig {
  std::string name;            // what clients send as "model"
  std::string upstream;        // "http://host:port" or "https://host[:port]", optional path prefix
  std::string upstream_model;  // the "model" sent upstream (default: name)
  std::string api_key_env;     // environment variable holding the upstream's key ("" = none)
  std::string ca_file;  // https: PEM certificates trusted instead of the system's ("" = system)
  int64_t timeout_ms = 60000;  // read timeout (no byte from the upstream for this long)
  int64_t connect_timeout_ms = 2000;
  int64_t retries = 2;       // extra attempts on the same model
  int64_t backoff_ms = 100;  // before retry k (1-based): backoff_ms * 2^(k-1)
  int64_t max_concurrency = 64;
  double input_price_per_mtok = NAN;  // dollars per million tokens; NaN = unknown
  double output_price_per_mtok = NAN;
};

struct PromptRouterConfig {
  std::string name;
  std::string path;            // folder written by `switchyard llm train`
  double default_value = NAN;  // threshold (two-model rule) or λ (cost-aware rule)
  std::string rule = "auto";   // "auto", "threshold" or "cost_aware"
};

struct GatewayConfig {
  std::string host = "127.0.0.1";
  int port = 8080;  // 0 = any free port
  int threads = 64;
  int64_t max_body_bytes = 1 << 20;
  std::string client_api_keys_env;  // "" = no client authentication
  int64_t drain_timeout_ms = 10000;
  int keep_alive_timeout_s = 5;
  int64_t keep_alive_max_requests = 1000;
  std::map<std::string, PromptRouterConfig> routers;
  std::string default_model;            // used when a request names no model ("" = required)
  std::vector<UpstreamConfig> models;   // in the file's order
  std::string source = "gateway.json";  // for error messages
};

// Reads and validates gateway.json. Unknown keys, wrong types, out-of-range values, duplicate keys
// and missing required fields are switchyard::Error naming the file, the field and the value.
GatewayConfig parse_gateway_config(const std::string& path);
GatewayConfig parse_gateway_config_text(const std::string& text, const std::string& source);

// What a client's "model" names: a configured model, or a router alias "router-<name>" /
// "router-<name>-<number>" (RouteLLM's convention).
struct ModelAlias {
  enum Kind { Unknown, Model, Router } kind = Unknown;
  int model = -1;      // index into GatewayConfig::models (kind Model)
  std::string router;  // router name (kind Router)
  double value = NAN;  // the number after the router name; NaN = the router's default
};
ModelAlias resolve_model_alias(const GatewayConfig& config, const std::string& name);

// The prompt a router sees: the text of every message's content (strings, or the "text" parts
// of content arrays), joined by newlines. `messages` is the request's "messages" value; throws
// switchyard::Error naming the bad field (the gateway answers 400).
std::string extract_prompt(const nlohmann::json& messages);

// ---- The gateway ----

class Gateway {
 public:
  // Reads the client keys and the upstreams' keys from the environment now; a missing upstream
  // key variable is an error naming the model and the variable.
  Gateway(GatewayConfig config, std::shared_ptr<const RequestRouter> router);
  ~Gateway();  // stop()s
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds host:port (port 0 = any free port), starts serving on a background thread and returns
  // the bound port. Throws switchyard::Error when the address cannot be bound.
  int start();
  int port() const;
  // Graceful: stops accepting, lets requests in flight finish (at most drain_timeout_ms, then
  // aborts their upstream calls), then waits for the server threads. Idempotent.
  void stop();
  bool client_auth_enabled() const;
  // The /metrics text (Prometheus exposition format).
  std::string metrics_text() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The bridge from trained routers (include/switchyard/llm_router.h) to RequestRouter: loads every
// router of config.routers (src/serve/prompt_request_router.cpp; rules in docs/gateway.md).
std::shared_ptr<const RequestRouter> make_prompt_request_router(const GatewayConfig& config);

// Estimated dollars of one call: prompt bytes / 4 input tokens plus `output_tokens`, at the
// model's configured prices; NaN when the model has no prices.
double estimate_call_cost(const UpstreamConfig& model, size_t prompt_bytes, double output_tokens);

}  // namespace switchyard::serve
