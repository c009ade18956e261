#include "transport/internal/tcp_socket.h"

#include <cerrno>
#include <optional>
#include <tuple>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "asio/error.hpp"
#include "transport/endpoint.h"
#include "transport/internal/socket_connection.h"
#include "transport/status.h"

namespace courier::transport::internal {
namespace {

using asio::ip::tcp;

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

absl::StatusOr<tcp::acceptor> BindAndListen(const asio::any_io_executor& executor,
                                            const tcp::endpoint& address, const std::string& what) {
  tcp::acceptor acceptor(executor);
  asio::error_code ec;
  if (acceptor.open(address.protocol(), ec); ec) return ToStatus(ec, what);
  SetCloseOnExec(acceptor.native_handle());
  if (acceptor.set_option(tcp::acceptor::reuse_address(true), ec); ec) {
    return ToStatus(ec, what);
  }
  if (acceptor.bind(address, ec); ec) return ListenError(ec, what);
  if (acceptor.listen(tcp::acceptor::max_listen_connections, ec); ec) {
    return ToStatus(ec, what);
  }
  return acceptor;
}

}  // namespace

asio::awaitable<absl::StatusOr<tcp::socket>> ConnectTcp(asio::any_io_executor executor,
                                                        std::string_view host_port,
                                                        std::string what) {
  absl::StatusOr<HostPort> split = SplitHostPort(host_port);
  if (!split.ok()) co_return Annotate(split.status(), what);
  tcp::resolver resolver(executor);
  // No AI_ADDRCONFIG: on a host with only loopback interfaces it would hide "localhost".
  auto [resolve_ec, results] = co_await resolver.async_resolve(
      split->host, split->port, tcp::resolver::numeric_service, use_nothrow);
  if (resolve_ec) co_return ToStatus(resolve_ec, what);
  asio::error_code ec = asio::error::host_not_found;
  for (const auto& entry : results) {
    tcp::socket socket(executor);
    std::tie(ec) = co_await socket.async_connect(entry.endpoint(), use_nothrow);
    if (!ec) co_return socket;
    if (ec == asio::error::operation_aborted) break;
  }
  co_return ToStatus(ec, what);
}

absl::StatusOr<tcp::acceptor> ListenTcp(asio::any_io_executor executor, std::string_view host_port,
                                        const std::string& what) {
  absl::StatusOr<HostPort> split = SplitHostPort(host_port);
  if (!split.ok()) return Annotate(split.status(), what);
  tcp::resolver resolver(executor);
  asio::error_code ec;
  tcp::resolver::results_type results = resolver.resolve(
      split->host, split->port, tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec) return ListenError(ec, what);
  std::optional<absl::Status> first_error;
  for (const auto& entry : results) {
    absl::StatusOr<tcp::acceptor> acceptor = BindAndListen(executor, entry.endpoint(), what);
    if (acceptor.ok()) return acceptor;
    if (!first_error) first_error = acceptor.status();
  }
  if (!first_error) return absl::UnavailableError(absl::StrCat(what, ": no address"));
  return *first_error;
}

}  // namespace courier::transport::internal
