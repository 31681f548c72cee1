// `switchyard llm serve --config gateway.json`: the OpenAI-compatible gateway (docs/gateway.md).
#include <fmt/format.h>
#include <pthread.h>
#include <switchyard/error.h>
#include <switchyard/gateway.h>

#include <csignal>
#include <cstdio>

#include "cli/commands.h"

namespace switchyard::cli {

int run_llm_serve(const std::string& config_path) {
  sigset_t signals, previous;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  bool blocked = false;
  try {
    const serve::GatewayConfig config = serve::parse_gateway_config(config_path);
    const auto router = serve::make_prompt_request_router(config);
    // SIGINT and SIGTERM are blocked in this thread before the gateway starts its threads, which
    // inherit the mask: the signal then waits for sigwait below instead of ending the process.
    pthread_sigmask(SIG_BLOCK, &signals, &previous);
    blocked = true;
    serve::Gateway gateway(config, router);
    const int port = gateway.start();
    fmt::print("switchyard: gateway listening on http://{}:{} ({} models, {} routers{})\n",
               config.host, port, config.models.size(), config.routers.size(),
               config.default_model.empty() ? "" : ", default model " + config.default_model);
    std::fflush(stdout);
    int signal = 0;
    sigwait(&signals, &signal);
    fmt::print(
        "switchyard: {} received: no new connections; draining the requests in flight "
        "(at most {} ms)\n",
        signal == SIGINT ? "SIGINT" : "SIGTERM", config.drain_timeout_ms);
    std::fflush(stdout);
    gateway.stop();
    fmt::print("switchyard: gateway stopped\n");
    std::fflush(stdout);
    // The mask stays: a second signal during the drain must not kill the process after it.
    return 0;
  } catch (const Error& e) {
    if (blocked) pthread_sigmask(SIG_SETMASK, &previous, nullptr);
    fmt::print(stderr, "switchyard: error: {}\n", e.what());
    return 1;
  }
}

}  // namespace switchyard::cli
