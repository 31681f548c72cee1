#include "train/watchdog.h"

#include <fmt/format.h>
#include <switchyard/error.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>

namespace switchyard::training {
namespace {

// What the SIGTERM handler prints: formatted at each beat, written with write(2) only.
char g_where[160] = {0};

void on_sigterm(int) {
  const ssize_t n = ssize_t(std::strlen(g_where));
  if (n > 0 && ::write(STDERR_FILENO, g_where, size_t(n)) < 0) _exit(143);
  _exit(143);
}

int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Watchdog::Watchdog(int rank, double timeout_seconds, std::function<void()> abort)
    : rank_(rank), timeout_(timeout_seconds), abort_(std::move(abort)) {
  if (const char* fault = std::getenv("SWITCHYARD_FAULT")) {
    int r = -1;
    long long s = -1;
    char kind[16] = {0};
    if (std::sscanf(fault, "%d:%lld:%15s", &r, &s, kind) != 3 ||
        (std::strcmp(kind, "exit") != 0 && std::strcmp(kind, "hang") != 0))
      fail("SWITCHYARD_FAULT = '{}': expected rank:step:exit or rank:step:hang", fault);
    fault_rank_ = r;
    fault_step_ = s;
    fault_kind_ = kind;
  }
  std::signal(SIGTERM, on_sigterm);
  last_beat_ns_ = now_ns();
  if (timeout_ > 0) thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  stop_cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  std::signal(SIGTERM, SIG_DFL);
}

void Watchdog::beat(int64_t step) {
  step_ = step;
  last_beat_ns_ = now_ns();
  fmt::format_to_n(g_where, sizeof(g_where) - 1,
                   "train: rank {} was ended during step {} (another rank failed or the job was "
                   "stopped)\n{}",
                   rank_, step + 1, '\0');
  if (rank_ == fault_rank_ && step == fault_step_) {
    fmt::print(stderr, "train: rank {}: injected fault '{}' at step {} (SWITCHYARD_FAULT)\n", rank_,
               fault_kind_, step + 1);
    if (fault_kind_ == "exit") _exit(3);
    std::unique_lock<std::mutex> lock(mutex_);
    stop_cv_.wait(lock, [this] { return stop_; });  // hang (until the watchdog ends the job)
  }
}

void Watchdog::watch() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    stop_cv_.wait_for(lock, std::chrono::milliseconds(200));
    if (stop_) return;
    const double idle = double(now_ns() - last_beat_ns_) * 1e-9;
    if (idle > timeout_) {
      fmt::print(stderr,
                 "train: rank {}: step {} has made no progress for {:.0f} s (--timeout {:.0f}): a "
                 "rank died or hangs; ending the job (the last checkpoint is intact)\n",
                 rank_, step_.load() + 1, idle, timeout_);
      std::fflush(stderr);
      abort_();
    }
  }
}

}  // namespace switchyard::training
