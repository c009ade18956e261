// CPU time and CPU placement for the benchmark's processes: getrusage snapshots and pinning.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"

namespace courier::bench {

// Process CPU time (all threads), in seconds.
struct CpuTimes {
  double user = 0;
  double system = 0;
  double total() const { return user + system; }
  friend CpuTimes operator-(const CpuTimes& a, const CpuTimes& b) {
    return {a.user - b.user, a.system - b.system};
  }
  // Per call, in microseconds (zero for no calls).
  CpuTimes PerCallMicros(int64_t calls) const {
    if (calls <= 0) return {};
    const double scale = 1e6 / static_cast<double>(calls);
    return {user * scale, system * scale};
  }
};

// getrusage(RUSAGE_SELF): this process's threads, not its children.
CpuTimes ProcessCpu();

// The CPUs this process may run on, ascending.
std::vector<int> AllowedCpus();

// Pins the calling thread (and threads it starts later) to `cpu`. kInternal if the kernel
// refuses.
absl::Status PinToCpu(int cpu);

}  // namespace courier::bench
