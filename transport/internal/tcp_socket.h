// Opening TCP sockets, for the transports that run over TCP (tcp/, tls/): resolving a
// "host:port", connecting to the first address that answers, binding a listener.
// Transport-layer internals.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/ip/tcp.hpp"

namespace courier::transport::internal {

// Connects to every address `host_port` resolves to, in the resolver's order (e.g. ::1, then
// 127.0.0.1 for "localhost"), until one answers; the error is the last address's, kUnavailable
// when nobody answers. `what` starts error messages ("tcp connect h:7000").
asio::awaitable<absl::StatusOr<asio::ip::tcp::socket>> ConnectTcp(asio::any_io_executor executor,
                                                                  std::string_view host_port,
                                                                  std::string what);

// A listening socket on the first resolved address that binds, close-on-exec, SO_REUSEADDR (a
// restarted server takes its port back from connections in TIME_WAIT; on Linux it never lets
// two listeners share one). kInvalidArgument for a name that does not resolve or an address
// that is not this host's; kAlreadyExists when the port is in use.
absl::StatusOr<asio::ip::tcp::acceptor> ListenTcp(asio::any_io_executor executor,
                                                  std::string_view host_port,
                                                  const std::string& what);

}  // namespace courier::transport::internal
