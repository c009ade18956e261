// The scheme → transport table. Transport layer; transport/registry.cc is the only file that
// lists every transport. Channel and Server look schemes up here (or in a table of your own).
#pragma once

#include <memory>
#include <span>
#include <string_view>

#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport {

struct TransportInfo {
  std::string_view scheme;
  std::unique_ptr<Transport> (*factory)(asio::any_io_executor executor,
                                        const TransportOptions& options);
  // A fresh endpoint on this host that nobody uses yet (examples, tests, benchmarks).
  Endpoint (*loopback_endpoint)();
  // Every accepted connection's PeerInfo::credentials come from the kernel (SO_PEERCRED or a
  // file's owner), so a server can admit peers by uid and gid.
  bool kernel_credentials = false;
  // Nobody between the two ends can read or change the bytes: same-host mechanisms, and TLS.
  // Plain tcp:// and udp:// are not; a channel refuses to send call credentials over them.
  bool confidential = false;
  // Process-wide set-up of the library the transport uses (OpenSSL's), or null.
  void (*prepare_process)() = nullptr;
  // Frees what that library keeps for the calling thread (OpenSSL's random generators), or null.
  void (*end_thread)() = nullptr;
};

// Every transport this build has.
std::span<const TransportInfo> BuiltInTransports();

// The row for `scheme`, or kInvalidArgument naming the schemes this build knows.
absl::StatusOr<const TransportInfo*> FindTransport(
    std::string_view scheme, std::span<const TransportInfo> table = BuiltInTransports());

// A transport for `scheme` bound to `executor`.
absl::StatusOr<std::unique_ptr<Transport>> NewTransport(
    std::string_view scheme, asio::any_io_executor executor,
    std::span<const TransportInfo> table = BuiltInTransports(),
    const TransportOptions& options = {});

// Every transport's prepare_process. Code that keeps threads running into the process's exit
// calls it before it registers its own exit hook (std::atexit): the libraries register theirs
// first, so their clean-up runs after that hook has waited for those threads.
void PrepareProcess(std::span<const TransportInfo> table = BuiltInTransports());

// Every transport's end_thread: a thread that may outlive main's return calls it as it ends,
// before it tells the exit hook it is done (a library's clean-up at exit cannot free what its
// per-thread state of a still running thread holds).
void EndThread(std::span<const TransportInfo> table = BuiltInTransports());

}  // namespace courier::transport
