// Endpoints: the URI that names where a service lives ("tcp://127.0.0.1:7000", "unix:@svc").
// Part of the transport layer's public surface; the address after the scheme is interpreted
// by the transport registered for that scheme.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace courier {

struct Endpoint {
  std::string scheme;   // "tcp", "unix", ...; lowercase
  std::string address;  // everything after "scheme://" (or "unix:" for the short forms)
  // The canonical URI; ParseEndpoint(e.ToString()) == e.
  std::string ToString() const;
  friend bool operator==(const Endpoint&, const Endpoint&) = default;
};

// Parses "scheme://address[?options]". Accepted schemes: tcp, tls, unix, udp, pipe, fifo, shm
// (whether a transport is built for a scheme is the registry's business). Also accepts gRPC's UNIX
// forms "unix:path" and "unix:@abstract". kInvalidArgument names the problem: empty input, missing
// "://", unknown scheme, empty address, a tcp/tls/udp address without a port or with a bad one.
// The options after a '?' stay in `address`; each transport checks its own.
absl::StatusOr<Endpoint> ParseEndpoint(std::string_view uri);

// Splits a "host:port" or "[v6]:port" address. kInvalidArgument on a missing or bad port.
struct HostPort {
  std::string host;  // without brackets
  std::string port;  // decimal, 0..65535
};
absl::StatusOr<HostPort> SplitHostPort(std::string_view address);

}  // namespace courier
