// What the transports over one-way descriptors (pipe/, fifo/) share: a Connection that reads the
// peer's bytes from one descriptor (a pipe's or FIFO's read end) and writes its own to another.
// Transport-layer internals.
#pragma once

#include <memory>
#include <string>

#include "absl/functional/any_invocable.h"
#include "asio/any_io_executor.hpp"
#include "transport/internal/fd.h"
#include "transport/transport.h"

namespace courier::transport::internal {

struct FdStreamParts {
  UniqueFd read_fd;    // the peer's bytes arrive here; made non-blocking
  UniqueFd write_fd;   // ours leave here; made non-blocking
  std::string scheme;  // "pipe", "fifo": starts error messages
  PeerInfo peer;
  Traits traits;
  // Runs once, after both descriptors are closed, when the connection is closed or destroyed
  // (reap a child, remove FIFOs). May be empty.
  absl::AnyInvocable<void()> on_close;
};

// A reliable byte stream over the two descriptors, bound to `executor`, keeping the Connection
// contract of transport/transport.h: end of stream when the peer closes its write end (read
// returns 0), kUnavailable for a write after the peer closed its read end (EPIPE; see
// IgnoreSigpipe), kCancelled for everything pending after Close().
std::unique_ptr<Connection> NewFdStreamConnection(asio::any_io_executor executor,
                                                  FdStreamParts parts);

// If `connection` came from NewFdStreamConnection: closes its write descriptor only (the peer
// reads end of stream; reading goes on) and returns true. Otherwise false. For tests (the fault
// proxy's clean cut), as Connection has no half-close.
bool CloseWriteHalf(Connection& connection);

// Sets SIGPIPE to SIG_IGN if it still has its default action, so that a write to a pipe whose
// reader is gone fails with EPIPE (kUnavailable) instead of killing the process. A handler the
// application installed is left alone. Thread-safe, idempotent; the pipe and fifo transports
// call it when they are made.
void IgnoreSigpipe();

}  // namespace courier::transport::internal
