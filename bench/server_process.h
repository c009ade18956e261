// The benchmark's server process: the driver starts `courier-bench --serve SYSTEM TRANSPORT`,
// reads its endpoint, asks it for its CPU time and heap allocations around each measurement, and
// stops it.
//
// Control protocol, one line each way, over the server's stdin and stdout:
//   server → driver  "endpoint URI"        once, when listening (other lines are ignored)
//                    "error MESSAGE"       instead, when it cannot serve; then it exits 1
//   driver → server  "cpu"                 answered "cpu USER_SECONDS SYSTEM_SECONDS" (getrusage)
//                    "allocs"              answered "allocs N" (operator new calls so far, see
//                                          alloc_counter.h), or "allocs n/a" if not counted
//                    "quit" or EOF         the server exits at once, status 0
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "bench/cpu.h"
#include "bench/system.h"

namespace courier::bench {

class ServerProcess {
 public:
  // Spawns `exe --serve SYSTEM TRANSPORT [--pin-cpu N]` (pin_cpu < 0: unpinned) and waits up to
  // 20 s for its endpoint. kUnavailable with the server's error line if it fails to start.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(const std::string& exe,
                                                              std::string_view system,
                                                              std::string_view transport,
                                                              int pin_cpu);
  ~ServerProcess();  // Stop()
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  const std::string& endpoint() const { return endpoint_; }
  pid_t pid() const { return pid_; }
  // The server's CPU time so far (all its threads).
  absl::StatusOr<CpuTimes> Cpu();
  // The server's heap allocations so far (all its threads); kUnimplemented if it counts none.
  absl::StatusOr<uint64_t> Allocs();
  // Asks it to quit, waits up to 5 s, then kills it. Idempotent.
  void Stop();

 private:
  ServerProcess(pid_t pid, int to_child, int from_child)
      : pid_(pid), to_child_(to_child), from_child_(from_child) {}
  // The next line starting with `keyword` (without the keyword), or kDeadlineExceeded.
  absl::StatusOr<std::string> ReadLine(std::string_view keyword, int timeout_ms);

  pid_t pid_;
  int to_child_;
  int from_child_;
  std::string buffered_;
  std::string endpoint_;
};

// The server side: pins to `pin_cpu` (if >= 0), answers the control protocol on a thread of its
// own (which allocates nothing once running, so that the server's allocation counts are its
// calls'), and serves `transport` until told to quit. Returns the process exit status on failure.
int ServeMain(System& system, std::string_view transport, int pin_cpu);

// Server side: `cleanup` runs when the driver says quit (or closes the pipe), just before the
// process ends with _exit (no destructors run), e.g. to remove the listener's socket file.
void SetServerCleanup(void (*cleanup)());

// Server side, tls: removes this process's loopback certificate directory
// (transport/tls/dev_cert.h's GetLoopbackFiles, which removes it only at a normal exit) when the
// driver says quit, through SetServerCleanup.
void RemoveTlsLoopbackFilesOnQuit();

}  // namespace courier::bench
