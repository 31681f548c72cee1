// gateway.json: parsing and validation (schema in docs/gateway.md).
#include <switchyard/config.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/gateway.h>
#include <switchyard/llm_router.h>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>

#include "serve/serve_internal.h"

namespace switchyard::serve {

std::string UpstreamUrl::origin() const {
  return fmt::format("{}://{}:{}", scheme, host, port);
}

UpstreamUrl parse_upstream_url(const std::string& url, const std::string& context) {
  UpstreamUrl u;
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    u.scheme = "http";
    u.port = 80;
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    u.scheme = "https";
    u.port = 443;
    rest = url.substr(8);
  } else {
    fail("{}: field 'upstream' = \"{}\" must start with http:// or https://", context, url);
  }
  const size_t slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) u.prefix = rest.substr(slash);
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  if (u.prefix.find_first_of("?# ") != std::string::npos)
    fail("{}: field 'upstream' = \"{}\" must be a base address without query or fragment", context,
         url);
  const size_t colon = authority.rfind(':');
  if (colon != std::string::npos && authority.find(']') == std::string::npos) {
    const std::string port = authority.substr(colon + 1);
    authority.resize(colon);
    char* end = nullptr;
    errno = 0;
    const long value = port.empty() ? 0 : std::strtol(port.c_str(), &end, 10);
    if (port.empty() || errno != 0 || *end != '\0' || value < 1 || value > 65535)
      fail("{}: field 'upstream' = \"{}\" has a bad port \"{}\"", context, url, port);
    u.port = int(value);
  }
  if (authority.empty() || authority.find_first_of("@ ") != std::string::npos)
    fail("{}: field 'upstream' = \"{}\" has no valid host", context, url);
  u.host = authority;
  return u;
}

namespace {

using nlohmann::json;

UpstreamConfig parse_model(const std::string& name, const json& j, const std::string& source) {
  const std::string context = fmt::format("{}: models.{}", source, name);
  if (name.empty()) fail("{}: models: a model name must not be empty", source);
  if (name.rfind("router-", 0) == 0)
    fail("{}: model name \"{}\" must not start with \"router-\" (reserved for router aliases)",
         context, name);
  ParamReader r(j, context);
  UpstreamConfig m;
  m.name = name;
  if (!r.has("upstream")) fail("{}: missing field 'upstream'", context);
  m.upstream = r.get_string("upstream", "");
  serve::parse_upstream_url(m.upstream, context);
  m.upstream_model = r.get_string("upstream_model", name);
  if (m.upstream_model.empty()) fail("{}: field 'upstream_model' must not be empty", context);
  m.api_key_env = r.get_string("api_key_env", "");
  m.ca_file = r.get_string("ca_file", "");
  if (r.has("ca_file")) {
    if (serve::parse_upstream_url(m.upstream, context).scheme != "https")
      fail("{}: field 'ca_file' = \"{}\" needs an https:// upstream, not \"{}\"", context,
           m.ca_file, m.upstream);
    // Read now, so that a missing or unreadable file fails at start, not on the first request.
    std::string pem;
    try {
      pem = read_file_text(m.ca_file);
    } catch (const Error& e) {
      fail("{}: field 'ca_file' = \"{}\": {}", context, m.ca_file, e.what());
    }
    if (pem.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
      fail("{}: field 'ca_file' = \"{}\" holds no PEM certificate", context, m.ca_file);
  }
  m.timeout_ms = r.get_int("timeout_ms", m.timeout_ms, 1, 3'600'000);
  m.connect_timeout_ms = r.get_int("connect_timeout_ms", m.connect_timeout_ms, 1, 600'000);
  m.retries = r.get_int("retries", m.retries, 0, 10);
  m.backoff_ms = r.get_int("backoff_ms", m.backoff_ms, 0, 60'000);
  m.max_concurrency = r.get_int("max_concurrency", m.max_concurrency, 1, 1'000'000);
  const double inf = std::numeric_limits<double>::max();
  m.input_price_per_mtok = r.get_double("input_price_per_mtok", NAN, 0.0, inf);
  m.output_price_per_mtok = r.get_double("output_price_per_mtok", NAN, 0.0, inf);
  if (std::isnan(m.input_price_per_mtok) != std::isnan(m.output_price_per_mtok))
    fail("{}: give both 'input_price_per_mtok' and 'output_price_per_mtok', or neither", context);
  r.finish();
  return m;
}

PromptRouterConfig parse_router(const std::string& name, const json& j, const std::string& source) {
  const std::string context = fmt::format("{}: routers.{}", source, name);
  if (name.empty() || name.find_first_of(" /\"") != std::string::npos)
    fail("{}: routers: bad router name \"{}\"", source, name);
  ParamReader r(j, context);
  PromptRouterConfig c;
  c.name = name;
  if (!r.has("path")) fail("{}: missing field 'path'", context);
  c.path = r.get_string("path", "");
  if (c.path.empty()) fail("{}: field 'path' must not be empty", context);
  if (!r.has("default")) fail("{}: missing field 'default'", context);
  c.default_value = r.get_double("default", 0.0, -1e9, 1e9);
  c.rule = r.get_choice("rule", "auto", {"auto", "threshold", "cost_aware"});
  if (c.rule == "cost_aware" && (c.default_value < 0.0 || c.default_value > 1.0))
    fail("{}: field 'default' = {} must be a λ in [0, 1] for rule cost_aware", context,
         c.default_value);
  r.finish();
  return c;
}

}  // namespace

GatewayConfig parse_gateway_config_text(const std::string& text, const std::string& source) {
  const json j = parse_json_strict(text, source);
  if (!j.is_object()) fail("{}: the gateway config must be a JSON object", source);
  GatewayConfig config;
  config.source = source;
  ParamReader r(j, source);

  const json listen = r.get_object("listen", json::object());
  {
    ParamReader l(listen, source + ": listen");
    config.host = l.get_string("host", config.host);
    if (config.host.empty()) fail("{}: listen: field 'host' must not be empty", source);
    config.port = int(l.get_int("port", config.port, 0, 65535));
    l.finish();
  }
  config.threads = int(r.get_int("threads", config.threads, 1, 4096));
  config.max_body_bytes = r.get_int("max_body_bytes", config.max_body_bytes, 1, int64_t(1) << 32);
  config.client_api_keys_env = r.get_string("client_api_keys_env", "");
  config.drain_timeout_ms = r.get_int("drain_timeout_ms", config.drain_timeout_ms, 0, 3'600'000);
  config.keep_alive_timeout_s = int(r.get_int("keep_alive_timeout_s", 5, 1, 3600));
  config.keep_alive_max_requests =
      r.get_int("keep_alive_max_requests", config.keep_alive_max_requests, 1, 100'000'000);

  const json routers = r.get_object("routers", json::object());
  for (auto it = routers.begin(); it != routers.end(); ++it)
    config.routers[it.key()] = parse_router(it.key(), it.value(), source);

  if (!r.has("models")) fail("{}: missing field 'models'", source);
  const json models = r.get_object("models", json::object());
  if (models.empty()) fail("{}: field 'models' must name at least one model", source);
  // The fallback order of a directly named model is the file's order, which nlohmann::json's
  // sorted objects lose: read the key order again with ordered_json.
  const auto ordered = nlohmann::ordered_json::parse(text);
  for (const auto& item : ordered.at("models").items())
    config.models.push_back(parse_model(item.key(), models.at(item.key()), source));

  config.default_model = r.get_string("default_model", "");
  r.finish();
  if (!config.default_model.empty() &&
      resolve_model_alias(config, config.default_model).kind == ModelAlias::Unknown)
    fail(
        "{}: field 'default_model' = \"{}\" is neither a model of 'models' nor a router alias "
        "router-<name>[-<number>] of 'routers'",
        source, config.default_model);
  return config;
}

GatewayConfig parse_gateway_config(const std::string& path) {
  return parse_gateway_config_text(read_file_text(path), path);
}

ModelAlias resolve_model_alias(const GatewayConfig& config, const std::string& name) {
  ModelAlias alias;
  for (size_t i = 0; i < config.models.size(); ++i)
    if (config.models[i].name == name) {
      alias.kind = ModelAlias::Model;
      alias.model = int(i);
      return alias;
    }
  if (name.rfind("router-", 0) != 0) return alias;
  const std::string rest = name.substr(7);
  // Router names may hold '-' ("knn-emb"): the longest configured name that fits wins.
  size_t best_length = 0;
  for (const auto& [router, unused] : config.routers) {
    if (router.size() < best_length) continue;
    if (rest == router) {
      alias = {ModelAlias::Router, -1, router, NAN};
      best_length = router.size();
    } else if (rest.size() > router.size() + 1 && rest.compare(0, router.size(), router) == 0 &&
               rest[router.size()] == '-') {
      const std::string number = rest.substr(router.size() + 1);
      char* end = nullptr;
      const double value = std::strtod(number.c_str(), &end);
      if (*end != '\0' || !std::isfinite(value) || std::isspace(uint8_t(number[0]))) continue;
      alias = {ModelAlias::Router, -1, router, value};
      best_length = router.size();
    }
  }
  return alias;
}

double estimate_call_cost(const UpstreamConfig& model, size_t prompt_bytes, double output_tokens) {
  if (std::isnan(model.input_price_per_mtok)) return NAN;
  return priced_call_cost(prompt_bytes, output_tokens, model.input_price_per_mtok,
                          model.output_price_per_mtok);
}

}  // namespace switchyard::serve
