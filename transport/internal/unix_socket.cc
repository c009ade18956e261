#include "transport/internal/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "asio/error.hpp"
#include "asio/steady_timer.hpp"
#include "transport/internal/socket_connection.h"
#include "transport/status.h"

namespace courier::transport::internal {
namespace {

using asio::local::stream_protocol;

constexpr std::chrono::milliseconds kFirstBacklogRetry{1};
constexpr std::chrono::milliseconds kMaxBacklogRetry{50};
constexpr std::chrono::seconds kBacklogGiveUp{2};

// Connects `socket` (opened here) to `endpoint` now. A UNIX stream connect never returns
// EINPROGRESS: it completes at once, or fails (EAGAIN when the listener's backlog is full, on
// a non-blocking socket). Asio's async_connect would instead wait for writability and then
// report nonsense (ENOBUFS, or success on a socket that is not connected), so we call connect().
asio::error_code ConnectNow(stream_protocol::socket& socket,
                            const stream_protocol::endpoint& endpoint) {
  asio::error_code ec;
  if (socket.open(stream_protocol(), ec); ec) return ec;
  SetCloseOnExec(socket.native_handle());
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

// Binds `acceptor`. When the path is taken: a file that is not a socket, or a socket that a
// server answers on, is kAlreadyExists and left alone; a socket nobody answers on (a crashed
// server's) is removed and the bind retried once.
absl::Status Bind(stream_protocol::acceptor& acceptor, const stream_protocol::endpoint& endpoint,
                  const std::string* path, const std::string& what) {
  asio::error_code ec;
  acceptor.bind(endpoint, ec);
  if (ec == asio::error::address_in_use && path != nullptr) {
    struct stat st;
    if (::lstat(path->c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) {
        return absl::AlreadyExistsError(
            absl::StrCat(what, ": ", *path, " exists and is not a socket"));
      }
      if (int probe = ProbeConnect(endpoint); probe != ECONNREFUSED) {
        return absl::AlreadyExistsError(
            probe == 0 || probe == EAGAIN
                ? absl::StrCat(what, ": a server is already listening on ", *path)
                : absl::StrCat(what, ": ", *path, " is in use (",
                               asio::error_code(probe, asio::system_category()).message(), ")"));
      }
      UnlinkIfSame(*path, FileId{st.st_dev, st.st_ino});
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

}  // namespace

std::optional<FileId> FileIdOf(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

std::optional<FileId> SocketFileId(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return std::nullopt;
  return FileId{st.st_dev, st.st_ino};
}

void UnlinkIfSame(const std::string& path, const FileId& id) {
  if (FileIdOf(path) == id) ::unlink(path.c_str());
}

asio::awaitable<absl::StatusOr<stream_protocol::socket>> ConnectUnix(
    asio::any_io_executor executor, stream_protocol::endpoint endpoint, std::string what) {
  asio::steady_timer timer(executor);
  std::chrono::milliseconds delay = kFirstBacklogRetry;
  auto give_up = std::chrono::steady_clock::now() + kBacklogGiveUp;
  for (;;) {
    stream_protocol::socket socket(executor);
    asio::error_code ec = ConnectNow(socket, endpoint);
    if (!ec) co_return std::move(socket);
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

absl::StatusOr<std::optional<FileId>> ListenUnix(stream_protocol::acceptor& acceptor,
                                                 const stream_protocol::endpoint& endpoint,
                                                 const std::string* path, mode_t mode,
                                                 const std::string& what) {
  asio::error_code ec;
  if (acceptor.open(stream_protocol(), ec); ec) return ToStatus(ec, what);
  SetCloseOnExec(acceptor.native_handle());
  if (absl::Status bound = Bind(acceptor, endpoint, path, what); !bound.ok()) return bound;
  std::optional<FileId> id;
  if (path != nullptr) {
    id = SocketFileId(*path);
    if (!id) return absl::InternalError(absl::StrCat(what, ": socket file gone after bind"));
    // Before listen(): until then every connect is refused, so nobody gets in while the file
    // has the umask's (possibly wider) mode.
    if (::chmod(path->c_str(), mode) != 0) {
      absl::Status status = ErrnoStatus(errno, absl::StrCat(what, ": chmod"));
      UnlinkIfSame(*path, *id);
      return status;
    }
  }
  if (acceptor.listen(stream_protocol::acceptor::max_listen_connections, ec); ec) {
    if (id) UnlinkIfSame(*path, *id);
    return ToStatus(ec, what);
  }
  return id;
}

}  // namespace courier::transport::internal
