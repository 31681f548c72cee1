// The OpenAI-compatible gateway (include/switchyard/gateway.h, docs/gateway.md): real HTTP on
// loopback against fake upstreams run in-process that answer like OpenAI's API and can be told to
// fail; gateway.json parsing; the bridge from trained routers; `switchyard llm serve`.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <pthread.h>
#include <switchyard/error.h>
#include <switchyard/file_util.h>
#include <switchyard/gateway.h>
#include <switchyard/llm_data.h>
#include <switchyard/llm_router.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "cli/commands.h"
#include "scratch_dir.h"

namespace fs = std::filesystem;
using nlohmann::json;
using switchyard::Error;
using switchyard::serve::Gateway;
using switchyard::serve::GatewayConfig;
using switchyard::serve::ModelAlias;
using switchyard::serve::RouteChoice;
using switchyard::serve::UpstreamConfig;
using switchyard::testing_support::ScratchDir;
using testing::HasSubstr;
using Clock = std::chrono::steady_clock;

namespace {

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

void sleep_ms(int ms) {
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
}

// Waits until `done()` holds (at most `ms`).
bool eventually(const std::function<bool()>& done, int ms = 5000) {
  const auto t0 = Clock::now();
  while (!done()) {
    if (ms_since(t0) > ms) return false;
    sleep_ms(2);
  }
  return true;
}

// A port nothing listens on: bound once, then closed.
int closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// An OpenAI-like upstream on loopback. Answers echo the last message's content prefixed by the
// upstream's name, with usage {prompt_tokens: 10, completion_tokens: 20}; streamed answers send
// `events` content chunks, a usage chunk and [DONE].
class FakeUpstream {
 public:
  enum class Failure { None, Status500, Status400, Status429, CloseMidBody, Slow };

  // With `tls` (certificate and key PEM files) it serves https.
  struct Tls {
    std::string cert_file, key_file;
  };
  explicit FakeUpstream(std::string name, const Tls* tls = nullptr) : name_(std::move(name)) {
    if (tls) {
      server_ = std::make_unique<httplib::SSLServer>(tls->cert_file.c_str(), tls->key_file.c_str());
      scheme_ = "https";
    } else {
      server_ = std::make_unique<httplib::Server>();
    }
    if (!server_->is_valid()) throw std::runtime_error("FakeUpstream: bad TLS certificate or key");
    server_->new_task_queue = [] { return new httplib::ThreadPool(64); };
    server_->set_keep_alive_timeout(1);
    server_->set_keep_alive_max_count(100000);
    server_->set_tcp_nodelay(true);
    server_->Post("/v1/chat/completions", [this](const httplib::Request& req,
                                                 httplib::Response& res) { handle(req, res); });
    int fd = -1;
    server_->set_socket_options([&fd](int sock) { fd = sock; });
    port_ = server_->bind_to_any_port("127.0.0.1");
    ::listen(fd, SOMAXCONN);  // the packaged cpp-httplib's backlog of 5 drops bursts
    thread_ = std::thread([this] { server_->listen_after_bind(); });
    while (!server_->is_running()) sleep_ms(1);
  }
  ~FakeUpstream() {
    server_->stop();
    thread_.join();
  }
  std::string url() const { return fmt::format("{}://127.0.0.1:{}", scheme_, port_); }

  // The next `count` requests fail this way (count < 0: all of them).
  void fail(Failure failure, int count = -1) {
    failure_ = failure;
    failures_left_ = count;
  }
  std::atomic<int> slow_ms{0};             // Failure::Slow: delay before the answer
  std::atomic<int> event_delay_ms{0};      // streamed: delay between events
  std::atomic<int> events{3};              // streamed: content chunks
  std::atomic<int> stream_fail_after{-1};  // streamed: close the connection after this many
  std::atomic<int> requests{0};
  std::atomic<int> active{0};

  json last_request() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_request_;
  }
  std::string last_authorization() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return last_authorization_;
  }

 private:
  void handle(const httplib::Request& req, httplib::Response& res) {
    ++requests;
    ++active;
    const json body = json::parse(req.body);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      last_request_ = body;
      last_authorization_ = req.get_header_value("Authorization");
    }
    Failure failure = Failure::None;
    const int left = failures_left_.load();
    if (left != 0) {
      failure = failure_.load();
      if (left > 0) --failures_left_;
    }
    const std::string content = name_ + ":" + body["messages"].back()["content"].get<std::string>();
    const std::string model = body["model"];
    switch (failure) {
      case Failure::Status500:
        res.status = 500;
        res.set_content(R"({"error":{"message":"boom","type":"server_error"}})",
                        "application/json");
        break;
      case Failure::Status429:
        res.status = 429;
        res.set_content(R"({"error":{"message":"slow down","type":"rate_limit"}})",
                        "application/json");
        break;
      case Failure::Status400:
        res.status = 400;
        res.set_content(R"({"error":{"message":"bad","type":"invalid_request_error"}})",
                        "application/json");
        break;
      case Failure::CloseMidBody:
        // Promises 1000 bytes, sends 10, then drops the connection.
        res.set_content_provider(1000, "application/json",
                                 [](size_t, size_t, httplib::DataSink& sink) {
                                   sink.write("{\"id\":\"cha", 10);
                                   return false;
                                 });
        break;
      case Failure::Slow:
        sleep_ms(slow_ms);
        [[fallthrough]];
      case Failure::None:
        if (body.value("stream", false))
          stream(res, model, content);
        else
          res.set_content(answer(model, content), "application/json");
    }
    --active;
  }

  static std::string answer(const std::string& model, const std::string& content) {
    return json{{"id", "chatcmpl-1"},
                {"object", "chat.completion"},
                {"model", model},
                {"choices",
                 {{{"index", 0},
                   {"message", {{"role", "assistant"}, {"content", content}}},
                   {"finish_reason", "stop"}}}},
                {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 20}, {"total_tokens", 30}}}}
        .dump();
  }

  void stream(httplib::Response& res, const std::string& model, const std::string& content) {
    std::vector<std::string> list;
    for (int i = 0; i < events; ++i)
      list.push_back(json{{"id", "chatcmpl-1"},
                          {"object", "chat.completion.chunk"},
                          {"model", model},
                          {"choices",
                           {{{"index", 0},
                             {"delta", {{"content", fmt::format("{}#{}", content, i)}}},
                             {"finish_reason", nullptr}}}}}
                         .dump());
    list.push_back(json{{"id", "chatcmpl-1"},
                        {"object", "chat.completion.chunk"},
                        {"choices", json::array()},
                        {"usage", {{"prompt_tokens", 10}, {"completion_tokens", 20}}}}
                       .dump());
    list.push_back("[DONE]");
    const int delay = event_delay_ms, fail_after = stream_fail_after;
    res.set_chunked_content_provider("text/event-stream",
                                     [list, delay, fail_after](size_t, httplib::DataSink& sink) {
                                       for (size_t i = 0; i < list.size(); ++i) {
                                         if (int(i) == fail_after) return false;
                                         if (i > 0 && delay > 0) sleep_ms(delay);
                                         const std::string event = "data: " + list[i] + "\n\n";
                                         if (!sink.write(event.data(), event.size())) return false;
                                       }
                                       sink.done();
                                       return true;
                                     });
  }

  std::string name_;
  std::unique_ptr<httplib::Server> server_;  // an SSLServer when given a certificate
  std::string scheme_ = "http";
  std::thread thread_;
  int port_ = 0;
  std::atomic<Failure> failure_{Failure::None};
  std::atomic<int> failures_left_{0};
  mutable std::mutex mutex_;
  json last_request_;
  std::string last_authorization_;
};

// Prompts with "hard" go to the first model, others to the second; "router-fake" routes, a model
// name is direct (fallback: the others in config order), "router-broken" is a router error.
class FakeRouter : public switchyard::serve::RequestRouter {
 public:
  explicit FakeRouter(std::vector<std::string> models) : models_(std::move(models)) {}
  RouteChoice choose(const std::string& prompt, const std::string& requested) const override {
    RouteChoice choice;
    if (requested == "router-broken") switchyard::fail("router-broken: λ = 7 is outside [0, 1]");
    if (requested == "router-fake") {
      const bool hard = prompt.find("hard") != std::string::npos;
      choice.ranked_models = models_;
      if (!hard) std::swap(choice.ranked_models[0], choice.ranked_models[1]);
      choice.router = "fake";
      choice.estimated_cost = hard ? 0.02 : 0.001;
      choice.threshold = 0.5;
      return choice;
    }
    const auto it = std::find(models_.begin(), models_.end(), requested);
    if (it == models_.end())
      throw switchyard::serve::UnknownModelError("The model '" + requested + "' does not exist");
    choice.ranked_models.push_back(requested);
    for (const auto& m : models_)
      if (m != requested) choice.ranked_models.push_back(m);
    return choice;
  }

 private:
  std::vector<std::string> models_;
};

json chat(const std::string& content, const std::string& model = "router-fake",
          bool stream = false) {
  json body = {{"model", model}, {"messages", {{{"role", "user"}, {"content", content}}}}};
  if (stream) body["stream"] = true;
  return body;
}

struct Reply {
  int status = -1;
  std::string body;
  httplib::Headers headers;
  json j;
  std::string header(const std::string& key) const {
    const auto it = headers.find(key);
    return it == headers.end() ? "" : it->second;
  }
};

Reply to_reply(const httplib::Result& result) {
  Reply reply;
  if (!result) return reply;
  reply.status = result->status;
  reply.body = result->body;
  reply.headers = result->headers;
  reply.j = json::parse(reply.body, nullptr, false);
  return reply;
}

Reply post_raw(int port, const std::string& body, const std::string& key = "") {
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(20);
  httplib::Headers headers;
  if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
  return to_reply(client.Post("/v1/chat/completions", headers, body, "application/json"));
}

Reply post(int port, const json& body, const std::string& key = "") {
  return post_raw(port, body.dump(), key);
}

Reply get(int port, const std::string& path, const std::string& key = "") {
  httplib::Client client("127.0.0.1", port);
  httplib::Headers headers;
  if (!key.empty()) headers.emplace("Authorization", "Bearer " + key);
  return to_reply(client.Get(path, headers));
}

struct StreamReply {
  int status = -1;
  httplib::Headers headers;
  std::vector<double> chunk_ms;  // arrival times
  std::string text;
  std::vector<std::string> data;  // the events' data fields, in order
};

StreamReply post_stream(int port, const json& body) {
  StreamReply reply;
  httplib::Client client("127.0.0.1", port);
  client.set_read_timeout(20);
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/chat/completions";
  req.headers.emplace("Content-Type", "application/json");
  req.body = body.dump();
  const auto t0 = Clock::now();
  req.response_handler = [&](const httplib::Response& res) {
    reply.status = res.status;
    reply.headers = res.headers;
    return true;
  };
  req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
    reply.chunk_ms.push_back(ms_since(t0));
    reply.text.append(data, size);
    return true;
  };
  client.send(req);
  for (size_t pos = 0; pos < reply.text.size();) {
    const size_t end = reply.text.find("\n\n", pos);
    const std::string event = reply.text.substr(pos, end - pos);
    if (event.rfind("data: ", 0) == 0) reply.data.push_back(event.substr(6));
    if (end == std::string::npos) break;
    pos = end + 2;
  }
  return reply;
}

// Metrics by series ("name{labels}").
std::map<std::string, double> parse_metrics(const std::string& text) {
  std::map<std::string, double> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    EXPECT_NE(space, std::string::npos) << line;
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

double sum_of(const std::map<std::string, double>& metrics, const std::string& prefix) {
  double total = 0;
  for (const auto& [key, value] : metrics)
    if (key.rfind(prefix, 0) == 0) total += value;
  return total;
}

class GatewayTest : public testing::Test {
 protected:
  void SetUp() override {
    strong = std::make_unique<FakeUpstream>("strong");
    weak = std::make_unique<FakeUpstream>("weak");
  }
  void TearDown() override {
    gateway.reset();
    strong.reset();
    weak.reset();
  }

  GatewayConfig config() const {
    GatewayConfig c;
    c.host = "127.0.0.1";
    c.port = 0;
    c.threads = 16;
    c.keep_alive_timeout_s = 1;
    c.drain_timeout_ms = 5000;
    c.source = "test-gateway.json";
    c.routers["fake"] = {"fake", "unused", 0.5, "auto"};
    UpstreamConfig s;
    s.name = "strong";
    s.upstream = strong->url();
    s.upstream_model = "up-strong";
    s.timeout_ms = 3000;
    s.retries = 2;
    s.backoff_ms = 5;
    s.input_price_per_mtok = 10;
    s.output_price_per_mtok = 30;
    UpstreamConfig w = s;
    w.name = "weak";
    w.upstream = weak->url();
    w.upstream_model = "up-weak";
    w.input_price_per_mtok = 1;
    w.output_price_per_mtok = 2;
    c.models = {s, w};
    return c;
  }

  int start(const GatewayConfig& c) {
    std::vector<std::string> names;
    for (const auto& m : c.models) names.push_back(m.name);
    gateway = std::make_unique<Gateway>(c, std::make_shared<FakeRouter>(names));
    return gateway->start();
  }

  std::map<std::string, double> metrics() const { return parse_metrics(gateway->metrics_text()); }

  std::unique_ptr<FakeUpstream> strong, weak;
  std::unique_ptr<Gateway> gateway;
};

// ---- gateway.json ----

TEST(GatewayConfigTest, ParsesTheExampleFile) {
  const GatewayConfig c = switchyard::serve::parse_gateway_config(SWITCHYARD_SOURCE_DIR
                                                                  "/configs/gateway.example.json");
  EXPECT_EQ(c.host, "127.0.0.1");
  EXPECT_EQ(c.port, 8080);
  EXPECT_EQ(c.client_api_keys_env, "SWITCHYARD_API_KEYS");
  ASSERT_EQ(c.models.size(), 2u);
  // The file's order, not alphabetical: it is the fallback order of a directly named model.
  EXPECT_EQ(c.models[0].name, "gpt-4-1106-preview");
  EXPECT_EQ(c.models[1].name, "mixtral-8x7b-instruct-v0.1");
  EXPECT_EQ(c.models[1].upstream_model, "mistralai/Mixtral-8x7B-Instruct-v0.1");
  EXPECT_EQ(c.models[0].retries, 2);
  EXPECT_DOUBLE_EQ(c.models[0].output_price_per_mtok, 30.0);
  ASSERT_EQ(c.routers.count("knn"), 1u);
  EXPECT_DOUBLE_EQ(c.routers.at("knn").default_value, 0.1);
  EXPECT_EQ(c.default_model, "router-knn");
}

TEST(GatewayConfigTest, ErrorsNameTheFileTheFieldAndTheValue) {
  ScratchDir dir;
  const json valid = {
      {"listen", {{"host", "127.0.0.1"}, {"port", 0}}},
      {"routers", {{"knn", {{"path", "r/knn"}, {"default", 0.2}}}}},
      {"default_model", "router-knn"},
      {"models",
       {{"a", {{"upstream", "http://127.0.0.1:9001"}}}, {"b", {{"upstream", "http://h"}}}}}};
  EXPECT_NO_THROW(switchyard::serve::parse_gateway_config(dir.write("valid.json", valid.dump())));

  struct Case {
    std::string name;
    std::function<void(json&)> corrupt;
    std::vector<std::string> expect;  // substrings of the error besides the file name
  };
  const std::vector<Case> cases = {
      {"unknown top-level key", [](json& j) { j["thread"] = 4; }, {"thread", "unknown"}},
      {"unknown model key",
       [](json& j) { j["models"]["a"]["timeout"] = 5; },
       {"models.a", "timeout"}},
      {"port is a string",
       [](json& j) { j["listen"]["port"] = "80"; },
       {"listen", "port", "\"80\""}},
      {"port out of range", [](json& j) { j["listen"]["port"] = 70000; }, {"port", "70000"}},
      {"threads zero", [](json& j) { j["threads"] = 0; }, {"threads", "0"}},
      {"no models", [](json& j) { j.erase("models"); }, {"models", "missing"}},
      {"empty models", [](json& j) { j["models"] = json::object(); }, {"models"}},
      {"model without upstream",
       [](json& j) { j["models"]["a"].erase("upstream"); },
       {"models.a", "upstream", "missing"}},
      {"upstream not a URL",
       [](json& j) { j["models"]["a"]["upstream"] = "ftp://x"; },
       {"models.a", "upstream", "ftp://x"}},
      {"upstream bad port",
       [](json& j) { j["models"]["a"]["upstream"] = "http://h:99999"; },
       {"models.a", "upstream", "99999"}},
      {"negative retries",
       [](json& j) { j["models"]["b"]["retries"] = -1; },
       {"models.b", "retries", "-1"}},
      {"price is a string",
       [](json& j) { j["models"]["a"]["input_price_per_mtok"] = "1"; },
       {"models.a", "input_price_per_mtok"}},
      {"one price only",
       [](json& j) { j["models"]["a"]["input_price_per_mtok"] = 1; },
       {"models.a", "output_price_per_mtok"}},
      {"model named like a router",
       [](json& j) { j["models"]["router-x"] = j["models"]["a"]; },
       {"router-x"}},
      {"router without path",
       [](json& j) { j["routers"]["knn"].erase("path"); },
       {"routers.knn", "path", "missing"}},
      {"router without default",
       [](json& j) { j["routers"]["knn"].erase("default"); },
       {"routers.knn", "default", "missing"}},
      {"router bad rule",
       [](json& j) { j["routers"]["knn"]["rule"] = "best"; },
       {"routers.knn", "rule", "best"}},
      {"cost-aware default outside [0, 1]",
       [](json& j) {
         j["routers"]["knn"]["rule"] = "cost_aware";
         j["routers"]["knn"]["default"] = 2;
       },
       {"routers.knn", "default", "2"}},
      {"unknown default model",
       [](json& j) { j["default_model"] = "gpt-5"; },
       {"default_model", "gpt-5"}},
      {"default model of an unknown router",
       [](json& j) { j["default_model"] = "router-mf-0.3"; },
       {"default_model", "router-mf-0.3"}},
      {"models is a list", [](json& j) { j["models"] = json::array(); }, {"models"}},
      {"keys env is a number",
       [](json& j) { j["client_api_keys_env"] = 3; },
       {"client_api_keys_env", "3"}},
  };
  for (const auto& c : cases) {
    json j = valid;
    c.corrupt(j);
    const std::string path = dir.write("bad.json", j.dump());
    try {
      switchyard::serve::parse_gateway_config(path);
      ADD_FAILURE() << c.name << ": no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(path)) << c.name;
      for (const auto& s : c.expect) EXPECT_THAT(e.what(), HasSubstr(s)) << c.name;
    }
  }
  // Malformed JSON, duplicate keys and a missing file name the file too.
  for (const std::string text : {"{\"models\": ", "{\"threads\": 2, \"threads\": 3}", "[1, 2]"}) {
    const std::string path = dir.write("bad.json", text);
    try {
      switchyard::serve::parse_gateway_config(path);
      ADD_FAILURE() << text << ": no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr(path)) << text;
    }
  }
  EXPECT_THROW(switchyard::serve::parse_gateway_config(dir.path("missing.json")), Error);
}

TEST(GatewayConfigTest, ModelAliases) {
  GatewayConfig c;
  c.models.resize(2);
  c.models[0].name = "gpt-4";
  c.models[1].name = "mixtral";
  c.routers["knn"] = {"knn", "p", 0.1, "auto"};
  c.routers["knn-emb"] = {"knn-emb", "p", 0.1, "auto"};
  auto check = [&](const std::string& name, ModelAlias::Kind kind, const std::string& router,
                   double value) {
    const ModelAlias a = switchyard::serve::resolve_model_alias(c, name);
    EXPECT_EQ(a.kind, kind) << name;
    EXPECT_EQ(a.router, router) << name;
    if (std::isnan(value))
      EXPECT_TRUE(std::isnan(a.value)) << name;
    else
      EXPECT_DOUBLE_EQ(a.value, value) << name;
  };
  EXPECT_EQ(switchyard::serve::resolve_model_alias(c, "mixtral").model, 1);
  check("router-knn", ModelAlias::Router, "knn", NAN);
  check("router-knn-0.35", ModelAlias::Router, "knn", 0.35);
  check("router-knn--0.1", ModelAlias::Router, "knn", -0.1);
  check("router-knn-emb", ModelAlias::Router, "knn-emb", NAN);
  check("router-knn-emb-0.5", ModelAlias::Router, "knn-emb", 0.5);
  check("router-knn-abc", ModelAlias::Unknown, "", NAN);
  check("router-knn-inf", ModelAlias::Unknown, "", NAN);
  check("router-mf", ModelAlias::Unknown, "", NAN);
  check("gpt-5", ModelAlias::Unknown, "", NAN);
}

TEST(GatewayPromptTest, ConcatenatesMessageTextAndRejectsBadMessages) {
  const json messages = json::parse(R"([
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": [{"type": "text", "text": "what is"},
                                 {"type": "image_url", "image_url": {"url": "http://x"}},
                                 {"type": "text", "text": "this?"}]},
    {"role": "assistant", "content": null, "tool_calls": []}])");
  EXPECT_EQ(switchyard::serve::extract_prompt(messages), "be brief\nwhat is\nthis?");
  for (const char* bad :
       {R"("hi")", "[]", "[1]", R"([{"content": "x"}])", R"([{"role": "user", "content": 3}])",
        R"([{"role": "user", "content": [{"type": "text"}]}])",
        R"([{"role": "user", "content": [{"text": "x"}]}])"})
    EXPECT_THROW(switchyard::serve::extract_prompt(json::parse(bad)), Error) << bad;
}

// ---- routing, forwarding, reliability ----

TEST_F(GatewayTest, RoutesByPromptAndReportsModelCostAndAttempts) {
  ::setenv("SWITCHYARD_TEST_UPSTREAM_KEY", "sk-upstream-123", 1);
  GatewayConfig c = config();
  c.models[0].api_key_env = "SWITCHYARD_TEST_UPSTREAM_KEY";
  const int port = start(c);

  const Reply hard = post(port, chat("a hard question"));
  ASSERT_EQ(hard.status, 200) << hard.body;
  EXPECT_EQ(hard.header("x-switchyard-model"), "strong");
  EXPECT_EQ(hard.header("x-switchyard-router"), "fake");
  EXPECT_EQ(hard.header("x-switchyard-attempts"), "1");
  EXPECT_EQ(hard.header("x-switchyard-estimated-cost"), "0.02");
  // usage 10 prompt + 20 completion tokens at $10 / $30 per million.
  EXPECT_DOUBLE_EQ(std::stod(hard.header("x-switchyard-cost")), (10 * 10.0 + 20 * 30.0) / 1e6);
  EXPECT_EQ(hard.j["choices"][0]["message"]["content"], "strong:a hard question");
  EXPECT_EQ(hard.j["model"], "up-strong");  // the upstream's own fields pass through
  const json& sy = hard.j["switchyard"];
  EXPECT_EQ(sy["model"], "strong");
  EXPECT_EQ(sy["router"], "fake");
  EXPECT_EQ(sy["attempts"], 1);
  EXPECT_DOUBLE_EQ(sy["cost"].get<double>(), 700e-6);
  EXPECT_DOUBLE_EQ(sy["estimated_cost"].get<double>(), 0.02);
  EXPECT_DOUBLE_EQ(sy["threshold"].get<double>(), 0.5);
  // The upstream got its own model name and its own key, not the client's.
  EXPECT_EQ(strong->last_request()["model"], "up-strong");
  EXPECT_EQ(strong->last_authorization(), "Bearer sk-upstream-123");

  const Reply easy = post(port, chat("an easy one"));
  ASSERT_EQ(easy.status, 200) << easy.body;
  EXPECT_EQ(easy.header("x-switchyard-model"), "weak");
  EXPECT_EQ(easy.j["choices"][0]["message"]["content"], "weak:an easy one");
  EXPECT_DOUBLE_EQ(easy.j["switchyard"]["cost"].get<double>(), (10 * 1.0 + 20 * 2.0) / 1e6);
  EXPECT_EQ(weak->last_request()["model"], "up-weak");
  EXPECT_EQ(weak->last_authorization(), "");

  // A model named directly: no router.
  const Reply direct = post(port, chat("a hard question", "weak"));
  ASSERT_EQ(direct.status, 200);
  EXPECT_EQ(direct.header("x-switchyard-model"), "weak");
  EXPECT_EQ(direct.header("x-switchyard-router"), "");
  EXPECT_TRUE(direct.j["switchyard"]["router"].is_null());

  // No model: the config's default_model.
  gateway.reset();
  c.default_model = "strong";
  const int port2 = start(c);
  json no_model = chat("easy");
  no_model.erase("model");
  EXPECT_EQ(post(port2, no_model).header("x-switchyard-model"), "strong");

  const auto m = metrics();
  EXPECT_EQ(m.at("switchyard_route_choices_total{model=\"strong\"}"), 1);
  EXPECT_NEAR(m.at("switchyard_cost_dollars_total{model=\"strong\"}"), 700e-6, 1e-12);

  // An upstream key variable that is not set is an error naming the model and the variable.
  c.models[1].api_key_env = "SWITCHYARD_TEST_UNSET_KEY_VARIABLE";
  ::unsetenv("SWITCHYARD_TEST_UNSET_KEY_VARIABLE");
  try {
    Gateway g(c, std::make_shared<FakeRouter>(std::vector<std::string>{"strong", "weak"}));
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("models.weak"));
    EXPECT_THAT(e.what(), HasSubstr("SWITCHYARD_TEST_UNSET_KEY_VARIABLE"));
  }
}

TEST_F(GatewayTest, StreamsEventsInOrderAsTheyArrive) {
  strong->events = 5;
  strong->event_delay_ms = 120;
  const int port = start(config());
  const StreamReply r = post_stream(port, chat("hard stream", "router-fake", true));
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.headers.find("x-switchyard-model")->second, "strong");
  EXPECT_EQ(r.headers.find("x-switchyard-router")->second, "fake");
  EXPECT_THAT(r.headers.find("Content-Type")->second, HasSubstr("text/event-stream"));
  ASSERT_EQ(r.data.size(), 7u) << r.text;  // 5 content chunks, usage, [DONE]
  for (int i = 0; i < 5; ++i)
    EXPECT_EQ(json::parse(r.data[size_t(i)])["choices"][0]["delta"]["content"],
              fmt::format("strong:hard stream#{}", i));
  EXPECT_EQ(r.data[5].find("usage") != std::string::npos, true);
  EXPECT_EQ(r.data[6], "[DONE]");
  // The upstream spends 6 x 120 ms between events; the first one arrives long before the end.
  ASSERT_FALSE(r.chunk_ms.empty());
  EXPECT_LT(r.chunk_ms.front(), r.chunk_ms.back() - 400) << "the stream was buffered";
  EXPECT_GE(r.chunk_ms.size(), 5u);
  EXPECT_TRUE(eventually([&] {
    return metrics()["switchyard_cost_dollars_total{model=\"strong\"}"] > 0 &&
           metrics()["switchyard_requests_in_flight"] == 0;
  }));
}

TEST_F(GatewayTest, RetriesThenFallsBackWhenTheUpstreamDiesMidRequest) {
  strong->fail(FakeUpstream::Failure::CloseMidBody);
  const int port = start(config());
  const Reply r = post(port, chat("hard"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchyard-model"), "weak");
  EXPECT_EQ(r.j["switchyard"]["attempts"], 4);  // 1 + 2 retries on strong, then weak
  EXPECT_EQ(r.j["choices"][0]["message"]["content"], "weak:hard");
  EXPECT_EQ(strong->requests.load(), 3);
  EXPECT_EQ(weak->requests.load(), 1);
  const auto m = metrics();
  EXPECT_EQ(m.at("switchyard_upstream_errors_total{model=\"strong\",kind=\"closed\"}"), 3);
  EXPECT_EQ(m.at("switchyard_upstream_retries_total{model=\"strong\"}"), 2);
  EXPECT_EQ(m.at("switchyard_fallbacks_total{model=\"strong\"}"), 1);
  EXPECT_EQ(m.at("switchyard_upstream_attempts_total{model=\"weak\"}"), 1);
  EXPECT_EQ(m.at("switchyard_route_choices_total{model=\"strong\"}"), 1);
}

TEST_F(GatewayTest, RetriesA500Or429OnTheSameModelButNotA400) {
  const int port = start(config());
  strong->fail(FakeUpstream::Failure::Status500, 1);
  Reply r = post(port, chat("hard"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchyard-model"), "strong");
  EXPECT_EQ(r.header("x-switchyard-attempts"), "2");

  strong->fail(FakeUpstream::Failure::Status429, 2);
  r = post(port, chat("hard"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchyard-attempts"), "3");

  strong->fail(FakeUpstream::Failure::Status400, 1);
  r = post(port, chat("hard"));
  EXPECT_EQ(r.status, 400);  // the upstream's answer, not retried, not a fallback
  EXPECT_EQ(r.j["error"]["message"], "bad");
  EXPECT_EQ(r.j["switchyard"]["attempts"], 1);
  EXPECT_EQ(weak->requests.load(), 0);

  // Every model answering 500: the last answer is passed on.
  strong->fail(FakeUpstream::Failure::Status500);
  weak->fail(FakeUpstream::Failure::Status500);
  r = post(port, chat("hard"));
  EXPECT_EQ(r.status, 500);
  EXPECT_EQ(r.header("x-switchyard-model"), "weak");
  EXPECT_EQ(r.j["switchyard"]["attempts"], 6);
  const auto m = metrics();
  EXPECT_EQ(m.at("switchyard_upstream_errors_total{model=\"strong\",kind=\"5xx\"}"), 4);
  EXPECT_EQ(m.at("switchyard_upstream_errors_total{model=\"strong\",kind=\"429\"}"), 2);
  EXPECT_EQ(m.at("switchyard_upstream_errors_total{model=\"weak\",kind=\"5xx\"}"), 3);
}

TEST_F(GatewayTest, MidStreamFailureEndsWithAnErrorEventAndNoRetry) {
  strong->events = 4;
  strong->stream_fail_after = 2;
  const int port = start(config());
  const StreamReply r = post_stream(port, chat("hard", "router-fake", true));
  ASSERT_EQ(r.status, 200);
  ASSERT_EQ(r.data.size(), 3u) << r.text;
  EXPECT_EQ(json::parse(r.data[0])["choices"][0]["delta"]["content"], "strong:hard#0");
  EXPECT_EQ(json::parse(r.data[1])["choices"][0]["delta"]["content"], "strong:hard#1");
  const json error = json::parse(r.data[2]);
  EXPECT_EQ(error["error"]["type"], "server_error");
  EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr("strong"));
  EXPECT_EQ(strong->requests.load(), 1);
  EXPECT_EQ(weak->requests.load(), 0);
  EXPECT_EQ(metrics()["switchyard_upstream_errors_total{model=\"strong\",kind=\"closed\"}"], 1);

  // A stream that fails before its first byte is retried and falls back like any request.
  strong->stream_fail_after = 0;
  const StreamReply fallback = post_stream(port, chat("hard", "router-fake", true));
  ASSERT_EQ(fallback.status, 200);
  EXPECT_EQ(fallback.headers.find("x-switchyard-model")->second, "weak");
  EXPECT_EQ(fallback.headers.find("x-switchyard-attempts")->second, "4");
  ASSERT_EQ(fallback.data.size(), 5u) << fallback.text;
  EXPECT_EQ(fallback.data.back(), "[DONE]");
}

TEST_F(GatewayTest, TimeoutsAndRefusedConnectionsFallBack) {
  GatewayConfig c = config();
  c.models[0].timeout_ms = 200;
  c.models[0].retries = 1;
  strong->fail(FakeUpstream::Failure::Slow);
  strong->slow_ms = 700;
  const int port = start(c);
  auto t0 = Clock::now();
  Reply r = post(port, chat("hard"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("x-switchyard-model"), "weak");
  EXPECT_LT(ms_since(t0), 1400);
  EXPECT_EQ(metrics()["switchyard_upstream_errors_total{model=\"strong\",kind=\"timeout\"}"], 2);

  // Nothing listening: connect errors, then 502 when no model is left.
  gateway.reset();
  c = config();
  c.models[0].upstream = fmt::format("http://127.0.0.1:{}", closed_port());
  c.models[1].upstream = fmt::format("http://127.0.0.1:{}", closed_port());
  const int port2 = start(c);
  r = post(port2, chat("hard"));
  EXPECT_EQ(r.status, 502) << r.body;
  EXPECT_EQ(r.j["error"]["code"], "upstream_unavailable");
  EXPECT_EQ(r.header("x-switchyard-attempts"), "6");
  EXPECT_EQ(metrics()["switchyard_upstream_errors_total{model=\"strong\",kind=\"connect\"}"], 3);

  // Only timeouts: 504.
  gateway.reset();
  c = config();
  for (auto& m : c.models) {
    m.timeout_ms = 150;
    m.retries = 0;
  }
  weak->fail(FakeUpstream::Failure::Slow);
  weak->slow_ms = 500;
  const int port3 = start(c);
  r = post(port3, chat("hard"));
  EXPECT_EQ(r.status, 504) << r.body;
  EXPECT_EQ(r.j["error"]["code"], "upstream_timeout");
}

TEST_F(GatewayTest, ClientAuthentication) {
  ::setenv("SWITCHYARD_TEST_CLIENT_KEYS", "key-one, key-two", 1);
  GatewayConfig c = config();
  c.client_api_keys_env = "SWITCHYARD_TEST_CLIENT_KEYS";
  const int port = start(c);
  EXPECT_TRUE(gateway->client_auth_enabled());
  for (const std::string key : {"", "key-three", "key-on", "key-one2", "Bearer key-one"}) {
    const Reply r = post(port, chat("hi"), key);
    EXPECT_EQ(r.status, 401) << key;
    EXPECT_EQ(r.j["error"]["code"], "invalid_api_key") << key;
    EXPECT_EQ(r.j["error"]["type"], "invalid_request_error") << key;
  }
  // A key without the Bearer scheme is refused too.
  httplib::Client raw("127.0.0.1", port);
  EXPECT_EQ(raw.Post("/v1/chat/completions", {{"Authorization", "key-one"}}, chat("hi").dump(),
                     "application/json")
                ->status,
            401);
  EXPECT_EQ(post(port, chat("hi"), "key-one").status, 200);
  EXPECT_EQ(post(port, chat("hi"), "key-two").status, 200);
  EXPECT_EQ(get(port, "/v1/models").status, 401);
  EXPECT_EQ(get(port, "/v1/models", "key-two").status, 200);
  EXPECT_EQ(get(port, "/health").status, 200);
  EXPECT_EQ(weak->requests.load(), 2);

  gateway.reset();
  ::setenv("SWITCHYARD_TEST_CLIENT_KEYS", "", 1);
  start(c);
  EXPECT_FALSE(gateway->client_auth_enabled());
}

TEST_F(GatewayTest, BadRequestsGetOpenAiErrors) {
  GatewayConfig c = config();
  c.max_body_bytes = 2000;
  const int port = start(c);

  // Over max_body_bytes: 413, and the keep-alive connection still serves the next request.
  httplib::Client client("127.0.0.1", port);
  client.set_keep_alive(true);
  const Reply big = to_reply(
      client.Post("/v1/chat/completions", chat(std::string(3000, 'x')).dump(), "application/json"));
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(big.j["error"]["type"], "invalid_request_error");
  EXPECT_EQ(big.j["error"]["code"], "request_too_large");
  EXPECT_EQ(to_reply(client.Post("/v1/chat/completions", chat("small").dump(), "application/json"))
                .status,
            200);

  struct Case {
    std::string body;
    int status;
    const char* param;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, nullptr},
      {"[1, 2]", 400, nullptr},
      {R"({"model": "weak"})", 400, "messages"},
      {R"({"model": "weak", "messages": "hi"})", 400, "messages"},
      {R"({"model": "weak", "messages": []})", 400, "messages"},
      {R"({"model": "weak", "messages": [{"role": "user", "content": 5}]})", 400, "messages"},
      {R"({"model": 5, "messages": [{"role": "user", "content": "x"}]})", 400, "model"},
      {R"({"messages": [{"role": "user", "content": "x"}]})", 400, "model"},
      {R"({"model": "weak", "stream": "yes", "messages": [{"role": "user", "content": "x"}]})", 400,
       "stream"},
      {R"({"model": "gpt-5", "messages": [{"role": "user", "content": "x"}]})", 404, "model"},
      {R"({"model": "router-broken", "messages": [{"role": "user", "content": "x"}]})", 400,
       "model"},
      {std::string(500, '[') + std::string(500, ']'), 400, nullptr},
  };
  for (const auto& k : cases) {
    const Reply r = post_raw(port, k.body);
    EXPECT_EQ(r.status, k.status) << k.body;
    ASSERT_TRUE(r.j.is_object()) << k.body << " -> " << r.body;
    const json& e = r.j["error"];
    EXPECT_TRUE(e["message"].is_string()) << k.body;
    EXPECT_EQ(e["type"], "invalid_request_error") << k.body;
    EXPECT_EQ(e["param"], k.param ? json(k.param) : json(nullptr)) << k.body;
    EXPECT_TRUE(e.contains("code")) << k.body;
  }
  EXPECT_EQ(post_raw(port, cases[9].body).j["error"]["code"], "model_not_found");
  EXPECT_EQ(weak->requests.load() + strong->requests.load(), 1);

  const Reply unknown_path = get(port, "/v1/nothing");
  EXPECT_EQ(unknown_path.status, 404);
  EXPECT_EQ(unknown_path.j["error"]["type"], "invalid_request_error");
  EXPECT_THAT(unknown_path.j["error"]["message"].get<std::string>(), HasSubstr("/v1/nothing"));
  EXPECT_EQ(metrics()["switchyard_requests_total{code=\"404\"}"], 3);  // two gpt-5, one path
}

TEST_F(GatewayTest, ConcurrencyLimitMovesOnAndAnswers503WhenAllAreFull) {
  GatewayConfig c = config();
  for (auto& m : c.models) {
    m.max_concurrency = 1;
    m.retries = 0;
  }
  strong->fail(FakeUpstream::Failure::Slow);
  weak->fail(FakeUpstream::Failure::Slow);
  strong->slow_ms = 800;
  weak->slow_ms = 800;
  const int port = start(c);
  Reply a, b;
  std::thread ta([&] { a = post(port, chat("hard a")); });
  ASSERT_TRUE(eventually([&] { return strong->active.load() == 1; }));
  std::thread tb([&] { b = post(port, chat("hard b")); });
  ASSERT_TRUE(eventually([&] { return weak->active.load() == 1; }));
  const Reply busy = post(port, chat("hard c"));
  EXPECT_EQ(busy.status, 503);
  EXPECT_EQ(busy.j["error"]["code"], "upstreams_busy");
  EXPECT_EQ(busy.j["error"]["type"], "server_error");
  const auto health = json::parse(get(port, "/health").body);
  EXPECT_EQ(health["upstreams"][0]["in_use"], 1);
  ta.join();
  tb.join();
  EXPECT_EQ(a.status, 200);
  EXPECT_EQ(a.header("x-switchyard-model"), "strong");
  EXPECT_EQ(b.status, 200);
  EXPECT_EQ(b.header("x-switchyard-model"), "weak");
  const auto m = metrics();
  EXPECT_EQ(m.at("switchyard_concurrency_rejections_total{model=\"strong\"}"), 2);
  EXPECT_EQ(m.at("switchyard_concurrency_rejections_total{model=\"weak\"}"), 1);
  EXPECT_EQ(m.at("switchyard_fallbacks_total{model=\"strong\"}"), 2);
  EXPECT_EQ(m.at("switchyard_upstream_in_use{model=\"strong\"}"), 0);
}

TEST_F(GatewayTest, HealthModelsAndMetricsAddUp) {
  const int port = start(config());
  strong->fail(FakeUpstream::Failure::Status500, 1);
  int answered = 0;
  for (int i = 0; i < 5; ++i, ++answered) ASSERT_EQ(post(port, chat("hard")).status, 200);
  for (int i = 0; i < 3; ++i, ++answered) ASSERT_EQ(post(port, chat("easy")).status, 200);
  ASSERT_EQ(post_raw(port, "{").status, 400);
  ASSERT_EQ(post(port, chat("x", "gpt-5")).status, 404);
  answered += 2;

  const Reply health = get(port, "/health");
  ++answered;
  ASSERT_EQ(health.status, 200);
  EXPECT_EQ(health.j["status"], "ok");
  ASSERT_EQ(health.j["upstreams"].size(), 2u);
  EXPECT_EQ(health.j["upstreams"][0]["model"], "strong");
  EXPECT_EQ(health.j["upstreams"][0]["healthy"], true);
  EXPECT_EQ(health.j["upstreams"][0]["consecutive_failures"], 0);

  const Reply models = get(port, "/v1/models");
  ++answered;
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.j["object"], "list");
  std::vector<std::string> ids;
  for (const auto& m : models.j["data"]) ids.push_back(m["id"]);
  EXPECT_THAT(ids, testing::ElementsAre("strong", "weak", "router-fake"));

  // The latency histogram is updated after the last byte is written: wait for the last one.
  std::map<std::string, double> m;
  ASSERT_TRUE(eventually([&] {
    const Reply r = get(port, "/metrics");
    m = parse_metrics(r.body);
    ++answered;
    return m["switchyard_request_duration_seconds_count"] == answered - 1;
  }));
  EXPECT_EQ(m["switchyard_requests_total{code=\"200\"}"], 8 + 2 + (answered - 13));
  EXPECT_EQ(m["switchyard_requests_total{code=\"400\"}"], 1);
  EXPECT_EQ(m["switchyard_requests_total{code=\"404\"}"], 1);
  EXPECT_EQ(sum_of(m, "switchyard_requests_total{"), answered - 1);
  EXPECT_EQ(m["switchyard_route_choices_total{model=\"strong\"}"], 5);
  EXPECT_EQ(m["switchyard_route_choices_total{model=\"weak\"}"], 3);
  EXPECT_EQ(m["switchyard_upstream_attempts_total{model=\"strong\"}"], strong->requests.load());
  EXPECT_EQ(m["switchyard_upstream_attempts_total{model=\"weak\"}"], weak->requests.load());
  EXPECT_EQ(m["switchyard_upstream_retries_total{model=\"strong\"}"], 1);
  EXPECT_EQ(m["switchyard_upstream_errors_total{model=\"strong\",kind=\"5xx\"}"], 1);
  EXPECT_EQ(m["switchyard_requests_in_flight"], 0);
  EXPECT_EQ(m["switchyard_routing_duration_seconds_count"], 8);
  EXPECT_EQ(m["switchyard_request_duration_seconds_bucket{le=\"+Inf\"}"], answered - 1);
  EXPECT_NEAR(m["switchyard_cost_dollars_total{model=\"strong\"}"], 5 * 700e-6, 1e-12);
  EXPECT_NEAR(m["switchyard_cost_dollars_total{model=\"weak\"}"], 3 * 50e-6, 1e-12);
  // Buckets are cumulative.
  double previous = 0;
  for (const auto& [key, value] : m)
    if (key.rfind("switchyard_routing_duration_seconds_bucket", 0) == 0) {
      EXPECT_GE(value, 0);
      previous = std::max(previous, value);
    }
  EXPECT_EQ(previous, 8);
}

TEST_F(GatewayTest, GracefulStopFinishesTheRequestInFlight) {
  strong->fail(FakeUpstream::Failure::Slow);
  strong->slow_ms = 600;
  const int port = start(config());
  Reply r;
  std::thread client([&] { r = post(port, chat("hard")); });
  ASSERT_TRUE(eventually([&] { return strong->active.load() == 1; }));
  const auto t0 = Clock::now();
  gateway->stop();
  EXPECT_GE(ms_since(t0), 300);
  client.join();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.j["choices"][0]["message"]["content"], "strong:hard");
  EXPECT_EQ(post(port, chat("hard")).status, -1);  // no longer accepting
}

TEST_F(GatewayTest, GracefulStopFinishesAStreamInFlight) {
  strong->events = 4;
  strong->event_delay_ms = 150;
  const int port = start(config());
  StreamReply r;
  std::thread client([&] { r = post_stream(port, chat("hard", "router-fake", true)); });
  EXPECT_TRUE(eventually([&] { return strong->requests.load() == 1; }));
  sleep_ms(100);
  gateway->stop();
  client.join();
  ASSERT_EQ(r.data.size(), 6u) << r.text;
  EXPECT_EQ(r.data.back(), "[DONE]");
}

TEST_F(GatewayTest, DrainTimeoutAbortsStuckRequests) {
  GatewayConfig c = config();
  c.drain_timeout_ms = 200;
  c.models[0].retries = 0;
  strong->fail(FakeUpstream::Failure::Slow);
  strong->slow_ms = 1500;
  const int port = start(c);
  Reply r;
  std::thread client([&] { r = post(port, chat("hard")); });
  ASSERT_TRUE(eventually([&] { return strong->active.load() == 1; }));
  const auto t0 = Clock::now();
  gateway->stop();
  EXPECT_LT(ms_since(t0), 1200);
  client.join();
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(weak->requests.load(), 0);  // no fallback while shutting down
}

TEST_F(GatewayTest, LoadEveryRequestGetsExactlyItsOwnAnswer) {
  GatewayConfig c = config();
  c.threads = 40;  // one per keep-alive connection
  const int port = start(c);
  constexpr int kThreads = 32, kRequests = 40;
  std::atomic<int> ok{0}, wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      httplib::Client client("127.0.0.1", port);
      client.set_keep_alive(true);
      client.set_tcp_nodelay(true);
      client.set_read_timeout(20);
      for (int i = 0; i < kRequests; ++i) {
        const std::string id = fmt::format("{} request {}-{}", i % 3 == 0 ? "hard" : "easy", t, i);
        const std::string expect = (i % 3 == 0 ? "strong:" : "weak:") + id;
        if (i % 5 == 4) {  // streamed, on the same connection
          httplib::Request req;
          req.method = "POST";
          req.path = "/v1/chat/completions";
          req.headers.emplace("Content-Type", "application/json");
          req.body = chat(id, "router-fake", true).dump();
          std::string text;
          req.content_receiver = [&](const char* data, size_t size, uint64_t, uint64_t) {
            text.append(data, size);
            return true;
          };
          const auto result = client.send(req);
          if (!result || result->status != 200)
            ++failed;
          else if (text.find(expect + "#2") == std::string::npos ||
                   text.find("[DONE]") == std::string::npos)
            ++wrong;
          else
            ++ok;
          continue;
        }
        const Reply r =
            to_reply(client.Post("/v1/chat/completions", chat(id).dump(), "application/json"));
        if (r.status != 200)
          ++failed;
        else if (r.j["choices"][0]["message"]["content"] != expect)
          ++wrong;
        else
          ++ok;
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads * kRequests);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(failed.load(), 0);
  const int hard = kThreads * ((kRequests + 2) / 3);
  EXPECT_EQ(strong->requests.load(), hard);
  EXPECT_EQ(weak->requests.load(), kThreads * kRequests - hard);
  const auto m = metrics();
  EXPECT_EQ(m.at("switchyard_requests_total{code=\"200\"}"), kThreads * kRequests);
  EXPECT_EQ(m.at("switchyard_route_choices_total{model=\"strong\"}"), hard);
  EXPECT_EQ(m.at("switchyard_upstream_attempts_total{model=\"weak\"}"),
            kThreads * kRequests - hard);
  EXPECT_EQ(sum_of(m, "switchyard_upstream_errors_total{"), 0) << gateway->metrics_text();
  // A stream leaves the gauge when the server thread has released it, just after its last byte.
  EXPECT_TRUE(eventually([&] { return metrics()["switchyard_requests_in_flight"] == 0; }));
}

// ---- the bridge from trained routers ----

// Three models; "math" prompts are solved only by "big", the others by everyone. Costs: big 1.0,
// mid 0.1, small 0.01 per call.
switchyard::PromptRouter train_test_router(const std::string& kind,
                                           const std::vector<std::string>& models) {
  switchyard::RoutingTable table;
  table.models = models;
  const size_t M = models.size();
  for (int i = 0; i < 60; ++i) {
    const bool math = i % 2 == 0;
    table.prompts.push_back(math ? fmt::format("solve the math equation number {}", i)
                                 : fmt::format("write a friendly greeting card {}", i));
    table.eval_names.push_back("");
    for (size_t m = 0; m < M; ++m) {
      table.scores.push_back(m == 0 ? 1.0 : math ? 0.0 : 1.0);
      table.costs.push_back(m == 0 ? 1.0 : m == 1 ? 0.1 : 0.01);
    }
  }
  table.input_price_per_mtok.assign(M, NAN);
  table.output_price_per_mtok.assign(M, NAN);
  std::vector<size_t> rows(table.prompts.size());
  for (size_t i = 0; i < rows.size(); ++i) rows[i] = i;
  switchyard::RouterSpec spec;
  spec.name = kind;
  spec.quality = kind;
  if (kind == "knn") spec.quality_params = {{"k", 5}};
  return switchyard::train_router(spec, table, rows);
}

// ---- https upstreams ----

// A throwaway certificate authority and a server certificate for 127.0.0.1 signed by it, made
// with the openssl command (Debian package openssl).
struct TestPki {
  std::string ca_file, cert_file, key_file;
};

TestPki make_test_pki(const ScratchDir& dir, const std::string& tag) {
  const std::string p = dir.path(tag);
  std::filesystem::create_directories(p);
  dir.write(tag + "/san.cnf", "subjectAltName=IP:127.0.0.1\n");
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script = fmt::format(
      "cd '{0}' && "
      "openssl req -x509 {1} -keyout ca.key -out ca.pem -days 2 -subj /CN=switchyard-test-ca-{2} "
      "&& "
      "openssl req {1} -keyout server.key -out server.csr -subj /CN=127.0.0.1 && "
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 "
      "-extfile san.cnf -out server.pem",
      p, ec, tag);
  const int rc = std::system(("(" + script + ") > '" + p + "/openssl.log' 2>&1").c_str());
  if (rc != 0)
    throw std::runtime_error(fmt::format("openssl failed (rc {}), see {}/openssl.log: {}", rc, p,
                                         switchyard::read_file_text(p + "/openssl.log")));
  return {p + "/ca.pem", p + "/server.pem", p + "/server.key"};
}

TEST(GatewayTlsTest, HttpsUpstreamsAreVerifiedAgainstTheirCaFile) {
  ScratchDir dir;
  const TestPki pki = make_test_pki(dir, "good");
  const TestPki other = make_test_pki(dir, "other");
  const FakeUpstream::Tls tls{pki.cert_file, pki.key_file};
  FakeUpstream upstream("tls", &tls);
  ASSERT_EQ(upstream.url().rfind("https://127.0.0.1:", 0), 0u);

  // One model per gateway, so that a failure cannot fall back to a working model.
  auto serve_one = [&](const std::string& ca_file) {
    GatewayConfig c;
    c.port = 0;
    c.threads = 4;
    c.source = "test-gateway.json";
    UpstreamConfig m;
    m.name = "secure";
    m.upstream = upstream.url();
    m.ca_file = ca_file;
    m.retries = 0;
    m.timeout_ms = 5000;
    c.models = {m};
    return std::make_unique<Gateway>(
        c, std::make_shared<FakeRouter>(std::vector<std::string>{"secure"}));
  };

  {  // Trusted through ca_file: the request goes over TLS and is answered.
    auto gateway = serve_one(pki.ca_file);
    const Reply reply = post(gateway->start(), chat("over tls", "secure"));
    ASSERT_EQ(reply.status, 200) << reply.body;
    EXPECT_EQ(reply.j["choices"][0]["message"]["content"], "tls:over tls");
    EXPECT_EQ(upstream.requests, 1);
  }
  {  // Without ca_file the system's store is used; OpenSSL lets SSL_CERT_FILE stand in for it.
    ::setenv("SSL_CERT_FILE", pki.ca_file.c_str(), 1);
    auto gateway = serve_one("");
    const Reply reply = post(gateway->start(), chat("system store", "secure"));
    ::unsetenv("SSL_CERT_FILE");
    ASSERT_EQ(reply.status, 200) << reply.body;
    EXPECT_EQ(upstream.requests, 2);
  }
  // The system's CAs and another CA do not vouch for the certificate: the handshake fails, no
  // request reaches the upstream, and the client gets a 502 naming the verification failure.
  for (const std::string& ca_file : {std::string(), other.ca_file}) {
    SCOPED_TRACE("ca_file '" + ca_file + "'");
    auto gateway = serve_one(ca_file);
    const Reply reply = post(gateway->start(), chat("over tls", "secure"));
    EXPECT_EQ(reply.status, 502) << reply.body;
    EXPECT_THAT(reply.body, HasSubstr("secure"));
    EXPECT_THAT(reply.body, HasSubstr("TLS certificate verification failed"));
    EXPECT_EQ(upstream.requests, 2);
  }
}

TEST(GatewayTlsTest, CaFileErrorsNameTheModelTheFieldAndTheFile) {
  ScratchDir dir;
  const std::string not_pem = dir.write("not.pem", "hello\n");
  const TestPki pki = make_test_pki(dir, "good");
  auto config_with = [&](const std::string& upstream, const std::string& ca_file) {
    const json j = {{"models", {{"m", {{"upstream", upstream}, {"ca_file", ca_file}}}}}};
    return dir.write("gateway.json", j.dump());
  };
  EXPECT_NO_THROW(
      switchyard::serve::parse_gateway_config(config_with("https://127.0.0.1:1", pki.ca_file)));
  const struct {
    std::string upstream, ca_file, expected;
  } cases[] = {
      {"http://127.0.0.1:1", pki.ca_file, "needs an https:// upstream"},
      {"https://127.0.0.1:1", dir.path("missing.pem"), "missing.pem"},
      {"https://127.0.0.1:1", not_pem, "holds no PEM certificate"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.expected);
    try {
      switchyard::serve::parse_gateway_config(config_with(c.upstream, c.ca_file));
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_THAT(e.what(), HasSubstr("gateway.json: models.m"));
      EXPECT_THAT(e.what(), HasSubstr("'ca_file'"));
      EXPECT_THAT(e.what(), HasSubstr(c.ca_file));
      EXPECT_THAT(e.what(), HasSubstr(c.expected));
    }
  }
}

TEST(PromptRequestRouterTest, RoutesWithTrainedRouters) {
  ScratchDir dir;
  train_test_router("knn", {"big", "mid", "small"}).save(dir.path("knn3"));
  train_test_router("knn", {"big", "small"}).save(dir.path("knn2"));
  const nlohmann::ordered_json config = {
      {"routers",
       {{"three", {{"path", dir.path("knn3")}, {"default", 0.0}}},
        {"pair", {{"path", dir.path("knn2")}, {"default", 0.0}}}}},
      {"models",
       {{"small", {{"upstream", "http://127.0.0.1:1"}}},
        {"mid", {{"upstream", "http://127.0.0.1:1"}}},
        {"big",
         {{"upstream", "http://127.0.0.1:1"},
          {"input_price_per_mtok", 4.0},
          {"output_price_per_mtok", 8.0}}}}}};
  const GatewayConfig c =
      switchyard::serve::parse_gateway_config(dir.write("g.json", config.dump()));
  const auto router = switchyard::serve::make_prompt_request_router(c);
  const std::string math = "solve the math equation number 7";
  const std::string chat_prompt = "write a friendly greeting card 9";

  // Two models: threshold on q_big - q_small. Math prompts gain 1, greetings 0.
  RouteChoice r = router->choose(math, "router-pair");
  EXPECT_EQ(r.ranked_models, (std::vector<std::string>{"big", "small", "mid"}));
  EXPECT_EQ(r.router, "pair");
  EXPECT_DOUBLE_EQ(r.threshold, 0.0);
  // Estimated from the gateway's prices: ceil(32 / 4) = 8 input and 256 output tokens.
  EXPECT_DOUBLE_EQ(r.estimated_cost, (8 * 4.0 + 256 * 8.0) / 1e6);
  EXPECT_EQ(router->choose(chat_prompt, "router-pair-0.5").ranked_models[0], "small");
  EXPECT_EQ(router->choose(math, "router-pair-0.5").ranked_models[0], "big");
  EXPECT_EQ(router->choose(math, "router-pair-1.5").ranked_models[0], "small");
  EXPECT_EQ(router->choose(chat_prompt, "router-pair--1").ranked_models[0], "big");

  // Three models: CARROT's λ. λ = 0 takes the best predicted quality (ties: the lower index),
  // λ = 1 the cheapest; the rest follow by decreasing predicted quality.
  r = router->choose(math, "router-three");
  EXPECT_EQ(r.ranked_models[0], "big");
  EXPECT_EQ(r.ranked_models.size(), 3u);
  EXPECT_EQ(router->choose(math, "router-three-1").ranked_models[0], "small");
  EXPECT_EQ(router->choose(chat_prompt, "router-three-0.5").ranked_models[0], "small");
  r = router->choose(chat_prompt, "router-three-1");
  EXPECT_DOUBLE_EQ(r.estimated_cost, 0.01);  // the router's mean cost; "small" has no prices
  EXPECT_THROW(router->choose(math, "router-three-1.5"), Error);

  // Directly named: the others in the config's order.
  r = router->choose(math, "mid");
  EXPECT_EQ(r.ranked_models, (std::vector<std::string>{"mid", "small", "big"}));
  EXPECT_EQ(r.router, "");
  EXPECT_TRUE(std::isnan(r.estimated_cost));
  EXPECT_THROW(router->choose(math, "router-nope"), switchyard::serve::UnknownModelError);
  EXPECT_THROW(router->choose(math, "gpt-5"), switchyard::serve::UnknownModelError);
}

// Data sets name models as their providers do ("org/Model-7B"); a gateway model serves a router's
// model by name or by its upstream_model.
TEST(PromptRequestRouterTest, RouterModelsMatchByUpstreamModel) {
  ScratchDir dir;
  train_test_router("knn", {"org/Big-70B", "org/Small-7B"}).save(dir.path("pair"));
  const nlohmann::ordered_json config = {
      {"routers", {{"pair", {{"path", dir.path("pair")}, {"default", 0.0}}}}},
      {"models",
       {{"small", {{"upstream", "http://127.0.0.1:1"}, {"upstream_model", "org/Small-7B"}}},
        {"org/Big-70B", {{"upstream", "http://127.0.0.1:1"}}}}}};
  const auto router = switchyard::serve::make_prompt_request_router(
      switchyard::serve::parse_gateway_config(dir.write("g.json", config.dump())));
  EXPECT_EQ(router->choose("solve the math equation number 7", "router-pair-0.5").ranked_models,
            (std::vector<std::string>{"org/Big-70B", "small"}));
  EXPECT_EQ(router->choose("write a friendly greeting card 9", "router-pair-0.5").ranked_models,
            (std::vector<std::string>{"small", "org/Big-70B"}));
}

TEST(PromptRequestRouterTest, LoadErrorsNameTheConfigField) {
  ScratchDir dir;
  train_test_router("knn", {"big", "small"}).save(dir.path("pair"));
  auto error_of = [&](const json& j) -> std::string {
    try {
      switchyard::serve::make_prompt_request_router(
          switchyard::serve::parse_gateway_config(dir.write("g.json", j.dump())));
    } catch (const Error& e) {
      return e.what();
    }
    return "<no error>";
  };
  const json models = {{"big", {{"upstream", "http://h"}}}, {"small", {{"upstream", "http://h"}}}};
  std::string e = error_of({{"routers", {{"r", {{"path", dir.path("missing")}, {"default", 0.1}}}}},
                            {"models", models}});
  EXPECT_THAT(e, HasSubstr("routers.r"));
  EXPECT_THAT(e, HasSubstr("missing"));
  e = error_of({{"routers", {{"r", {{"path", dir.path("pair")}, {"default", 0.1}}}}},
                {"models", {{"other", {{"upstream", "http://h"}}}}}});
  EXPECT_THAT(e, HasSubstr("routers.r"));
  EXPECT_THAT(e, HasSubstr("big"));
  e = error_of({{"routers", {{"r", {{"path", dir.path("pair")}, {"default", 0.1}}}}},
                {"models", {{"big", {{"upstream", "http://h"}}}}}});
  EXPECT_THAT(e, HasSubstr("small"));  // the pair's weak model is not served
}

// ---- `switchyard llm serve` ----

TEST(LlmServeTest, ServesUntilSigtermAndFailsCleanlyOnBadConfig) {
  ScratchDir dir;
  FakeUpstream upstream("only");
  const int port = closed_port();
  const json config = {{"listen", {{"host", "127.0.0.1"}, {"port", port}}},
                       {"default_model", "only"},
                       {"keep_alive_timeout_s", 1},
                       {"models", {{"only", {{"upstream", upstream.url()}}}}}};
  const std::string path = dir.write("gateway.json", config.dump());
  std::atomic<int> rc{-1};
  std::thread serve([&] { rc = switchyard::cli::run_llm_serve(path); });
  ASSERT_TRUE(eventually([&] { return get(port, "/health").status == 200; }));
  json body = chat("hello");
  body.erase("model");
  const Reply r = post(port, body);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.j["choices"][0]["message"]["content"], "only:hello");
  pthread_kill(serve.native_handle(), SIGTERM);
  serve.join();
  EXPECT_EQ(rc.load(), 0);

  testing::internal::CaptureStderr();
  const int bad = switchyard::cli::run_llm_serve(dir.write("bad.json", R"({"models": {"m": {}}})"));
  const std::string err = testing::internal::GetCapturedStderr();
  EXPECT_EQ(bad, 1);
  EXPECT_THAT(err, HasSubstr("bad.json"));
  EXPECT_THAT(err, HasSubstr("upstream"));
}

}  // namespace
