// A rank that dies or hangs must end a parallel job with an error, not a silent hang. Watchdog
// watches this rank's progress: no beat within the timeout prints which rank stopped where and
// calls the given abort (MPI_Abort ends every rank). A SIGTERM (mpirun ends the others when a
// rank dies) prints the rank and step before exiting. Also test fault injection:
// SWITCHYARD_FAULT="rank:step:exit|hang" makes that rank exit or hang when the step begins.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace switchyard::training {

class Watchdog {
 public:
  Watchdog(int rank, double timeout_seconds, std::function<void()> abort);
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  // Progress: `step` is running (and fault injection, if asked for, strikes here).
  void beat(int64_t step);

 private:
  void watch();
  int rank_;
  double timeout_;
  std::function<void()> abort_;
  std::atomic<int64_t> step_{-1};
  std::atomic<int64_t> last_beat_ns_{0};
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stop_ = false;
  std::thread thread_;
  int fault_rank_ = -1;
  int64_t fault_step_ = -1;
  std::string fault_kind_;
};

}  // namespace switchyard::training
