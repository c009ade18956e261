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
#include "transport/internal/tcp_socket.h"
#include "transport/status.h"

namespace courier::transport::tcp {
namespace {

using asio::ip::tcp;
using internal::use_nothrow;

// tcp:// has no options: a query is most likely a tls:// URI with the wrong scheme.
absl::Status CheckNoQuery(const Endpoint& at) {
  if (at.address.find('?') == std::string::npos) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat("tcp address '", at.address, "': tcp:// takes no options (TLS is tls://)"));
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

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    if (absl::Status no_query = CheckNoQuery(to); !no_query.ok()) co_return no_query;
    absl::StatusOr<tcp::socket> socket = co_await internal::ConnectTcp(
        executor_, to.address, absl::StrCat("tcp connect ", to.address));
    if (!socket.ok()) co_return socket.status();
    co_return std::unique_ptr<Connection>(
        std::make_unique<internal::SocketConnection<tcp>>(*std::move(socket)));
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    if (absl::Status no_query = CheckNoQuery(at); !no_query.ok()) return no_query;
    absl::StatusOr<tcp::acceptor> acceptor =
        internal::ListenTcp(executor_, at.address, absl::StrCat("tcp listen ", at.address));
    if (!acceptor.ok()) return acceptor.status();
    return std::make_unique<TcpListener>(*std::move(acceptor));
  }

 private:
  asio::any_io_executor executor_;
};

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  return std::make_unique<TcpTransport>(std::move(executor));
}

Endpoint LoopbackEndpoint() { return Endpoint{"tcp", "127.0.0.1:0"}; }

}  // namespace courier::transport::tcp
