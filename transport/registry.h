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

}  // namespace courier::transport
