// A fast stand-in for an OpenAI-compatible upstream, for bench/gateway/run_gateway_bench.sh:
// answers every POST /v1/chat/completions with the same small chat.completion JSON (with usage),
// keep-alive, without parsing the request.
//
//   bench_fake_upstream [--port N] [--threads N]
//
// Prints "listening on PORT" once bound (port 0 = any free port); serves until SIGINT or SIGTERM.
#include <fmt/format.h>
#include <httplib.h>
#include <pthread.h>
#include <sys/socket.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>

int main(int argc, char** argv) {
  int port = 0, threads = 64;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--port") {
      port = std::atoi(argv[i + 1]);
    } else if (flag == "--threads") {
      threads = std::atoi(argv[i + 1]);
    } else {
      fmt::print(stderr, "usage: {} [--port N] [--threads N]\n", argv[0]);
      return 2;
    }
  }
  if (threads < 1) threads = 1;
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);  // the server threads inherit it

  static const std::string answer =
      R"({"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,)"
      R"("model":"fake","choices":[{"index":0,"message":{"role":"assistant",)"
      R"("content":"The answer is 18."},"finish_reason":"stop"}],)"
      R"("usage":{"prompt_tokens":60,"completion_tokens":8,"total_tokens":68}})";
  httplib::Server server;
  server.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  server.set_tcp_nodelay(true);
  server.set_keep_alive_max_count(1000000);
  server.set_keep_alive_timeout(10);
  server.Post("/v1/chat/completions", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(answer, "application/json");
  });
  int fd = -1;
  server.set_socket_options([&fd](socket_t sock) {
    fd = int(sock);
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  const int bound = port == 0 ? server.bind_to_any_port("127.0.0.1")
                              : (server.bind_to_port("127.0.0.1", port) ? port : -1);
  if (bound <= 0) {
    fmt::print(stderr, "bench_fake_upstream: cannot listen on 127.0.0.1:{}\n", port);
    return 1;
  }
  ::listen(fd, SOMAXCONN);  // the packaged cpp-httplib's backlog of 5 drops connection bursts
  std::thread listener([&] { server.listen_after_bind(); });
  fmt::print("listening on {}\n", bound);
  std::fflush(stdout);
  int signal = 0;
  sigwait(&signals, &signal);
  server.stop();
  listener.join();
  return 0;
}
