#include "transport/uds/uds_transport.h"

#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "asio/error.hpp"
#include "asio/local/stream_protocol.hpp"
#include "transport/internal/socket_connection.h"
#include "transport/internal/unix_socket.h"
#include "transport/status.h"

namespace courier::transport::uds {
namespace {

using asio::local::stream_protocol;

// sun_path holds 108 bytes; Asio keeps one for a terminating NUL, for paths and abstract names.
constexpr size_t kMaxSunPath = sizeof(sockaddr_un::sun_path) - 1;
constexpr mode_t kDefaultMode = 0600;

// An Endpoint::address: "/abs/path", "rel/path" or "@abstract", then an optional "?key=value&…"
// query. The query is for Listen ("mode", octal permissions of the socket file); Connect checks
// it and ignores it.
struct UdsAddress {
  std::string name;      // the path or "@abstract", without the query
  std::string sun_path;  // the bytes for sockaddr_un::sun_path: the path, or NUL + abstract name
  bool abstract = false;
  mode_t mode = kDefaultMode;
};

absl::Status BadAddress(std::string_view address, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("unix address '", AsAbsl(address), "': ", AsAbsl(problem)));
}

// Octal permission bits, 0 to 0777; nullopt otherwise.
std::optional<mode_t> ParseMode(absl::string_view value) {
  if (value.empty() || value.size() > 4) return std::nullopt;
  mode_t mode = 0;
  for (char c : value) {
    if (c < '0' || c > '7') return std::nullopt;
    mode = mode * 8 + static_cast<mode_t>(c - '0');
  }
  if (mode > 0777) return std::nullopt;
  return mode;
}

absl::StatusOr<UdsAddress> ParseAddress(std::string_view address) {
  std::string_view name = address;
  std::string_view query;
  if (size_t q = address.find('?'); q != std::string_view::npos) {
    name = address.substr(0, q);
    query = address.substr(q + 1);
  }
  if (name.empty()) return BadAddress(address, "empty path");
  if (name.find('\0') != std::string_view::npos) return BadAddress(address, "NUL in path");
  UdsAddress out;
  out.name = std::string(name);
  out.abstract = name[0] == '@';
  if (out.abstract) {
    if (name.size() == 1) return BadAddress(address, "empty abstract name");
    out.sun_path = std::string(1, '\0');
    out.sun_path.append(name.substr(1));
  } else {
    out.sun_path = std::string(name);
  }
  if (out.sun_path.size() > kMaxSunPath) {
    return BadAddress(address, absl::StrCat(out.sun_path.size(), " bytes is longer than the ",
                                            kMaxSunPath, " a UNIX socket address holds"));
  }
  for (absl::string_view option : absl::StrSplit(AsAbsl(query), '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(option, '=');
    if (kv.first != "mode") {
      return BadAddress(address, absl::StrCat("unknown option '", kv.first, "' (known: mode)"));
    }
    if (out.abstract) return BadAddress(address, "mode applies to socket files, not @names");
    std::optional<mode_t> mode = ParseMode(kv.second);
    if (!mode) {
      return BadAddress(address, absl::StrCat("mode '", kv.second, "' is not octal 0-0777"));
    }
    out.mode = *mode;
  }
  return out;
}

class UdsListener final : public Listener {
 public:
  // `socket_file`: the path and identity of the file to remove on Close() (if that path still
  // names it); nullopt for an abstract name.
  UdsListener(stream_protocol::acceptor acceptor, Endpoint local_endpoint,
              std::optional<std::pair<std::string, internal::FileId>> socket_file)
      : local_endpoint_(std::move(local_endpoint)),
        acceptor_(std::move(acceptor), absl::StrCat("unix accept on ", local_endpoint_.address)),
        socket_file_(std::move(socket_file)) {}
  ~UdsListener() override { Close(); }

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    return acceptor_.Accept(std::move(connection_executor));
  }
  Endpoint local_endpoint() const override { return local_endpoint_; }

  // Removes the socket file first, so that a new server can take the path at once.
  void Close() override {
    if (socket_file_) internal::UnlinkIfSame(socket_file_->first, socket_file_->second);
    socket_file_.reset();
    acceptor_.Close();
  }

 private:
  Endpoint local_endpoint_;
  internal::SocketAcceptor<stream_protocol> acceptor_;
  std::optional<std::pair<std::string, internal::FileId>> socket_file_;
};

class UdsTransport final : public Transport {
 public:
  explicit UdsTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // A full backlog is retried (internal::ConnectUnix); nobody listening is kUnavailable.
  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    std::string what = absl::StrCat("unix connect ", to.address);
    absl::StatusOr<UdsAddress> address = ParseAddress(to.address);
    if (!address.ok()) co_return address.status();
    absl::StatusOr<stream_protocol::socket> socket = co_await internal::ConnectUnix(
        executor_, stream_protocol::endpoint(address->sun_path), std::move(what));
    if (!socket.ok()) co_return socket.status();
    co_return std::unique_ptr<Connection>(
        std::make_unique<internal::SocketConnection<stream_protocol>>(*std::move(socket)));
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    std::string what = absl::StrCat("unix listen ", at.address);
    absl::StatusOr<UdsAddress> address = ParseAddress(at.address);
    if (!address.ok()) return address.status();
    stream_protocol::acceptor acceptor(executor_);
    absl::StatusOr<std::optional<internal::FileId>> file =
        internal::ListenUnix(acceptor, stream_protocol::endpoint(address->sun_path),
                             address->abstract ? nullptr : &address->name, address->mode, what);
    if (!file.ok()) return file.status();
    std::optional<std::pair<std::string, internal::FileId>> socket_file;
    if (*file) socket_file.emplace(address->name, **file);
    return std::make_unique<UdsListener>(std::move(acceptor), Endpoint{"unix", address->name},
                                         std::move(socket_file));
  }

 private:
  asio::any_io_executor executor_;
};

uint32_t ProcessSalt() {
  uint32_t salt = 0;
  if (::getrandom(&salt, sizeof(salt), GRND_NONBLOCK) != sizeof(salt)) {
    salt = static_cast<uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  }
  return salt;
}

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  return std::make_unique<UdsTransport>(std::move(executor));
}

// The salt keeps names apart across PID namespaces that share a network namespace (abstract
// names are per network namespace).
Endpoint LoopbackEndpoint() {
  static std::atomic<uint64_t> counter{0};
  static const uint32_t salt = ProcessSalt();
  return Endpoint{"unix", absl::StrFormat("@courier-%d-%d-%08x", ::getpid(),
                                          counter.fetch_add(1, std::memory_order_relaxed), salt)};
}

}  // namespace courier::transport::uds
