// Processes seen from outside: memory and CPU from /proc, a sampler for peak memory, and
// spawning (the server under test, one-shot client processes) with their output on a pipe.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace courier::abuse {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start);

// /proc/PID/status VmRSS and RssAnon, in MiB; nullopt once the process is gone.
struct Memory {
  double rss_mib = 0;
  double anon_mib = 0;
};
std::optional<Memory> ReadMemory(pid_t pid);

// utime + stime of /proc/PID/stat (all threads), in seconds; nullopt once the process is gone.
std::optional<double> ReadCpuSeconds(pid_t pid);

// The state letter of /proc/PID/stat ('R', 'S', 'T', 'Z', ...); 0 when there is no such process.
char ReadState(pid_t pid);
// True once `pid` has exited (a zombie counts: only its parent can reap it).
bool Exited(pid_t pid);

// Entries in /proc/PID/fd; -1 if unreadable.
int CountOpenFds(pid_t pid);

// Samples a process's memory every 50 ms on a thread of its own, keeping the peak, from
// construction until Stop() (or destruction).
class PeakSampler {
 public:
  explicit PeakSampler(pid_t pid);
  ~PeakSampler();
  PeakSampler(const PeakSampler&) = delete;
  PeakSampler& operator=(const PeakSampler&) = delete;
  void Stop();
  // Peak so far (also valid while running).
  Memory peak() const;

 private:
  pid_t pid_;
  std::atomic<bool> stop_{false};
  std::atomic<double> peak_rss_{0};
  std::atomic<double> peak_anon_{0};
  std::thread thread_;
};

// A child process whose stdout (and, if asked, stderr) comes back on a pipe. It dies with us
// (PR_SET_PDEATHSIG) and leads its own process group.
struct Spawned {
  pid_t pid = -1;
  int output = -1;  // read end
};
// `stderr_path`: where the child's stderr goes; empty: into the output pipe as well.
absl::StatusOr<Spawned> Spawn(const std::vector<std::string>& argv, const std::string& stderr_path);

// Reads from `fd` into `buffer` until a line starting with `prefix` is complete or `deadline`
// passes. Returns the rest of that line; kDeadlineExceeded or kUnavailable (EOF) otherwise.
absl::StatusOr<std::string> ReadLineWithPrefix(int fd, std::string& buffer, std::string_view prefix,
                                               Clock::time_point deadline);

// waitpid with a bound: the exit status, or nullopt if it is still running at `deadline`.
std::optional<int> WaitWithDeadline(pid_t pid, Clock::time_point deadline);

// "exit 0", "killed by SIGKILL", ...
std::string DescribeWaitStatus(int status);

// /proc/self/exe.
std::string SelfExe();

// Raises RLIMIT_NOFILE's soft limit to the hard limit; returns the new soft limit.
long RaiseFileLimit();

}  // namespace courier::abuse
