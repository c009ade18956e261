// ResourceLedger: snapshots what a test could leak (open descriptors, threads, a Server's
// connections and calls, any count of your own) and later checks that it all came back. Test
// support.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "asio/io_context.hpp"
#include "gtest/gtest.h"
#include "rpc/server.h"

namespace courier::testing {

// Take the snapshot once the io_context's reactor exists (after the first socket or timer on it):
// Asio opens its epoll, eventfd and timerfd descriptors lazily and keeps them. Likewise Asio
// starts one resolver thread per io_context on the first asynchronous resolve (a TCP connect) and
// keeps it until the io_context is destroyed, so make one connection before the snapshot.
class ResourceLedger {
 public:
  // Snapshots the open descriptors (/proc/self/fd) and threads (/proc/self/status) now, and with
  // `server` (which must outlive the ledger) its connections() and active_calls().
  explicit ResourceLedger(const Server* server = nullptr);

  // Also checks `count` (e.g. a proxy's connections()), snapshot now under `name`. `count` must
  // stay callable while the ledger is used.
  void Track(std::string name, std::function<size_t()> count);

  // Runs `io` (a handler at a time) until every count is at or below its snapshot, or `bound`
  // passes. Fails naming what did not come back, e.g. "fds: 12 -> 14 (new: 13 socket:[4711], 14
  // socket:[4712]), server connections: 0 -> 1 after 2000 ms". Call it on the io_context's thread
  // and not from inside one of its handlers.
  ::testing::AssertionResult ExpectBackToBaseline(asio::io_context& io,
                                                  std::chrono::milliseconds bound);

  // Open descriptors of this process, fd number → what /proc/self/fd says it is (not counting
  // the one used to list them).
  static std::map<int, std::string> OpenFds();
  // Threads: in /proc/self/status; 0 if it cannot be read.
  static size_t Threads();

 private:
  struct Counter {
    std::string name;
    std::function<size_t()> count;
    size_t baseline;
  };
  // What is over its baseline, or empty.
  std::string Excess() const;

  std::map<int, std::string> fds_;
  std::vector<Counter> counters_;  // threads, then the server's, then Track()'s
};

}  // namespace courier::testing
