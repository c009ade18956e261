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
#include "asio/steady_timer.hpp"
#include "transport/internal/socket_connection.h"
#include "transport/status.h"

namespace courier::transport::uds {
namespace {

using asio::local::stream_protocol;
using internal::use_nothrow;

// sun_path holds 108 bytes; Asio keeps one for a terminating NUL, for paths and abstract names.
constexpr size_t kMaxSunPath = sizeof(sockaddr_un::sun_path) - 1;
constexpr mode_t kDefaultMode = 0600;
// A connect to a listener whose backlog is full fails with EAGAIN: retry with these waits.
constexpr std::chrono::milliseconds kFirstBacklogRetry{1};
constexpr std::chrono::milliseconds kMaxBacklogRetry{50};
constexpr std::chrono::seconds kBacklogGiveUp{2};

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

absl::Status ErrnoStatus(int error, std::string_view what) {
  return ToStatus(asio::error_code(error, asio::system_category()), what);
}

// Identifies the socket file a listener created, so that Close() removes that file and not one
// that replaced it.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
};

std::optional<FileId> SocketFileId(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

void UnlinkIfSame(const std::string& path, const FileId& id) {
  if (SocketFileId(path) == id) ::unlink(path.c_str());
}

// Connects `socket` (opened here) to `endpoint` now. A UNIX stream connect never returns
// EINPROGRESS: it completes at once, or fails (EAGAIN when the listener's backlog is full, on
// a non-blocking socket). Asio's async_connect would instead wait for writability and then
// report nonsense (ENOBUFS, or success on a socket that is not connected), so we call connect().
asio::error_code ConnectNow(stream_protocol::socket& socket,
                            const stream_protocol::endpoint& endpoint) {
  asio::error_code ec;
  if (socket.open(stream_protocol(), ec); ec) return ec;
  if (socket.non_blocking(true, ec); ec) return ec;
  int result;
  do {
    result = ::connect(socket.native_handle(), endpoint.data(), endpoint.size());
  } while (result != 0 && errno == EINTR);
  if (result != 0) return asio::error_code(errno, asio::system_category());
  socket.non_blocking(false, ec);
  return ec;
}

// 0 if a server accepts on `endpoint`, else the errno of a non-blocking connect to it
// (ECONNREFUSED: a stale socket file nobody listens on; EAGAIN: a live server, backlog full).
int ProbeConnect(const stream_protocol::endpoint& endpoint) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int result = ::connect(fd, endpoint.data(), endpoint.size()) == 0 ? 0 : errno;
  ::close(fd);
  return result;
}

class UdsListener final : public Listener {
 public:
  // `socket_file`: the path and identity of the file to remove on Close() (if that path still
  // names it); nullopt for an abstract name.
  UdsListener(stream_protocol::acceptor acceptor, Endpoint local_endpoint,
              std::optional<std::pair<std::string, FileId>> socket_file)
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
    if (socket_file_) UnlinkIfSame(socket_file_->first, socket_file_->second);
    socket_file_.reset();
    acceptor_.Close();
  }

 private:
  Endpoint local_endpoint_;
  internal::SocketAcceptor<stream_protocol> acceptor_;
  std::optional<std::pair<std::string, FileId>> socket_file_;
};

class UdsTransport final : public Transport {
 public:
  explicit UdsTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  // Retries while the listener's backlog is full (waits of 1 ms doubling to 50 ms, for up to
  // 2 s), then kUnavailable. ENOENT and ECONNREFUSED (nobody listens) are kUnavailable at once.
  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    std::string what = absl::StrCat("unix connect ", to.address);
    absl::StatusOr<UdsAddress> address = ParseAddress(to.address);
    if (!address.ok()) co_return address.status();
    stream_protocol::endpoint endpoint(address->sun_path);
    asio::steady_timer timer(executor_);
    std::chrono::milliseconds delay = kFirstBacklogRetry;
    auto give_up = std::chrono::steady_clock::now() + kBacklogGiveUp;
    for (;;) {
      stream_protocol::socket socket(executor_);
      asio::error_code ec = ConnectNow(socket, endpoint);
      if (!ec) {
        co_return std::unique_ptr<Connection>(
            std::make_unique<internal::SocketConnection<stream_protocol>>(std::move(socket)));
      }
      if (ec != asio::error::would_block) co_return ToStatus(ec, what);
      if (std::chrono::steady_clock::now() + delay > give_up) {
        co_return absl::UnavailableError(absl::StrCat(
            what, ": the listener's backlog stayed full for ", kBacklogGiveUp.count(), " s"));
      }
      timer.expires_after(delay);
      auto [wait_ec] = co_await timer.async_wait(use_nothrow);
      if (wait_ec) co_return ToStatus(wait_ec, what);
      delay = std::min(delay * 2, kMaxBacklogRetry);
    }
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    std::string what = absl::StrCat("unix listen ", at.address);
    absl::StatusOr<UdsAddress> address = ParseAddress(at.address);
    if (!address.ok()) return address.status();
    stream_protocol::endpoint endpoint(address->sun_path);
    stream_protocol::acceptor acceptor(executor_);
    asio::error_code ec;
    if (acceptor.open(stream_protocol(), ec); ec) return ToStatus(ec, what);
    internal::SetCloseOnExec(acceptor.native_handle());
    if (absl::Status bound = Bind(acceptor, endpoint, *address, what); !bound.ok()) return bound;

    std::optional<std::pair<std::string, FileId>> socket_file;
    if (!address->abstract) {
      const std::string& path = address->name;
      std::optional<FileId> id = SocketFileId(path);
      if (!id) return absl::InternalError(absl::StrCat(what, ": socket file gone after bind"));
      socket_file.emplace(path, *id);
      // Before listen(): until then every connect is refused, so nobody gets in while the file
      // has the umask's (possibly wider) mode.
      if (::chmod(path.c_str(), address->mode) != 0) {
        absl::Status status = ErrnoStatus(errno, absl::StrCat(what, ": chmod"));
        UnlinkIfSame(path, *id);
        return status;
      }
    }
    if (acceptor.listen(stream_protocol::acceptor::max_listen_connections, ec); ec) {
      if (socket_file) UnlinkIfSame(socket_file->first, socket_file->second);
      return ToStatus(ec, what);
    }
    return std::make_unique<UdsListener>(std::move(acceptor), Endpoint{"unix", address->name},
                                         std::move(socket_file));
  }

 private:
  // Binds `acceptor`. When the path is taken: a file that is not a socket, or a socket that a
  // server answers on, is kAlreadyExists and left alone; a socket nobody answers on (a crashed
  // server's) is removed and the bind retried once.
  static absl::Status Bind(stream_protocol::acceptor& acceptor,
                           const stream_protocol::endpoint& endpoint, const UdsAddress& address,
                           const std::string& what) {
    asio::error_code ec;
    acceptor.bind(endpoint, ec);
    if (ec == asio::error::address_in_use && !address.abstract) {
      const std::string& path = address.name;
      struct stat st;
      if (::lstat(path.c_str(), &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
          return absl::AlreadyExistsError(
              absl::StrCat(what, ": ", path, " exists and is not a socket"));
        }
        if (int probe = ProbeConnect(endpoint); probe != ECONNREFUSED) {
          return absl::AlreadyExistsError(
              probe == 0 || probe == EAGAIN
                  ? absl::StrCat(what, ": a server is already listening on ", path)
                  : absl::StrCat(what, ": ", path, " is in use (",
                                 asio::error_code(probe, asio::system_category()).message(), ")"));
        }
        UnlinkIfSame(path, FileId{st.st_dev, st.st_ino});
      }
      acceptor.bind(endpoint, ec);
    }
    if (!ec) return absl::OkStatus();
    if (ec == asio::error::address_in_use) {
      return absl::AlreadyExistsError(absl::StrCat(what, ": ", ec.message()));
    }
    // ToStatus reads ENOENT as "nobody listens there", a connect error; here it means the
    // directory is missing.
    if (ec.value() == ENOENT && ec.category() == asio::system_category()) {
      return absl::NotFoundError(absl::StrCat(what, ": ", ec.message()));
    }
    return ToStatus(ec, what);
  }

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

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor) {
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
