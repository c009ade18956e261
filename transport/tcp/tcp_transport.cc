#include "transport/tcp/tcp_transport.h"

#include <cerrno>
#include <memory>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/error.hpp"
#include "asio/ip/tcp.hpp"
#include "transport/endpoint.h"
#include "transport/internal/socket_connection.h"
#include "transport/status.h"

namespace courier::transport::tcp {
namespace {

using asio::ip::tcp;
using internal::use_nothrow;

// ToStatus, except for what only resolving and binding a listener's address report: a name that
// does not resolve or an address that is not this host's is kInvalidArgument; a port in use is
// kAlreadyExists (ErrnoToStatus would say kFailedPrecondition).
absl::Status ListenError(const asio::error_code& ec, const std::string& what) {
  if (ec == asio::error::address_in_use) {
    return absl::AlreadyExistsError(absl::StrCat(what, ": ", ec.message()));
  }
  bool not_ours = ec.category() == asio::system_category() && ec.value() == EADDRNOTAVAIL;
  if (not_ours || ec == asio::error::host_not_found) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", ec.message()));
  }
  return ToStatus(ec, what);
}

class TcpListener final : public Listener {
 public:
  explicit TcpListener(tcp::acceptor acceptor)
      : local_endpoint_(LocalEndpointOf(acceptor)),
        acceptor_(std::move(acceptor), absl::StrCat("tcp accept on ", local_endpoint_.address)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    return acceptor_.Accept(std::move(connection_executor));
  }
  Endpoint local_endpoint() const override { return local_endpoint_; }
  void Close() override { acceptor_.Close(); }

 private:
  static Endpoint LocalEndpointOf(tcp::acceptor& acceptor) {
    asio::error_code ec;
    tcp::endpoint bound = acceptor.local_endpoint(ec);
    return internal::ToEndpoint(bound);
  }

  Endpoint local_endpoint_;
  internal::SocketAcceptor<tcp> acceptor_;
};

class TcpTransport final : public Transport {
 public:
  explicit TcpTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // Tries every address the host resolves to, in the resolver's order (e.g. ::1, then
  // 127.0.0.1 for "localhost"); the error is the last address's.
  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    std::string what = absl::StrCat("tcp connect ", to.address);
    absl::StatusOr<HostPort> host_port = SplitHostPort(to.address);
    if (!host_port.ok()) co_return Annotate(host_port.status(), "tcp connect");
    tcp::resolver resolver(executor_);
    // No AI_ADDRCONFIG: on a host with only loopback interfaces it would hide "localhost".
    auto [resolve_ec, results] = co_await resolver.async_resolve(
        host_port->host, host_port->port, tcp::resolver::numeric_service, use_nothrow);
    if (resolve_ec) co_return ToStatus(resolve_ec, what);
    asio::error_code ec = asio::error::host_not_found;
    for (const auto& entry : results) {
      tcp::socket socket(executor_);
      std::tie(ec) = co_await socket.async_connect(entry.endpoint(), use_nothrow);
      if (!ec) {
        co_return std::unique_ptr<Connection>(
            std::make_unique<internal::SocketConnection<tcp>>(std::move(socket)));
      }
      if (ec == asio::error::operation_aborted) break;
    }
    co_return ToStatus(ec, what);
  }

  // Binds the first resolved address that binds; SO_REUSEADDR lets a restarted server take its
  // port back from connections in TIME_WAIT (on Linux it never lets two listeners share one).
  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    std::string what = absl::StrCat("tcp listen ", at.address);
    absl::StatusOr<HostPort> host_port = SplitHostPort(at.address);
    if (!host_port.ok()) return Annotate(host_port.status(), "tcp listen");
    tcp::resolver resolver(executor_);
    asio::error_code ec;
    tcp::resolver::results_type results =
        resolver.resolve(host_port->host, host_port->port,
                         tcp::resolver::passive | tcp::resolver::numeric_service, ec);
    if (ec) return ListenError(ec, what);
    std::optional<absl::Status> first_error;
    for (const auto& entry : results) {
      absl::StatusOr<tcp::acceptor> acceptor = BindAndListen(entry.endpoint(), what);
      if (acceptor.ok()) return std::make_unique<TcpListener>(*std::move(acceptor));
      if (!first_error) first_error = acceptor.status();
    }
    if (!first_error) return absl::UnavailableError(absl::StrCat(what, ": no address"));
    return *first_error;
  }

 private:
  absl::StatusOr<tcp::acceptor> BindAndListen(const tcp::endpoint& address,
                                              const std::string& what) {
    tcp::acceptor acceptor(executor_);
    asio::error_code ec;
    if (acceptor.open(address.protocol(), ec); ec) return ToStatus(ec, what);
    internal::SetCloseOnExec(acceptor.native_handle());
    if (acceptor.set_option(tcp::acceptor::reuse_address(true), ec); ec) {
      return ToStatus(ec, what);
    }
    if (acceptor.bind(address, ec); ec) return ListenError(ec, what);
    if (acceptor.listen(tcp::acceptor::max_listen_connections, ec); ec) {
      return ToStatus(ec, what);
    }
    return acceptor;
  }

  asio::any_io_executor executor_;
};

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  return std::make_unique<TcpTransport>(std::move(executor));
}

Endpoint LoopbackEndpoint() { return Endpoint{"tcp", "127.0.0.1:0"}; }

}  // namespace courier::transport::tcp
