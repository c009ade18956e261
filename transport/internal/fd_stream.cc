#include "transport/internal/fd_stream.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/error.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/write.hpp"
#include "transport/status.h"

namespace courier::transport::internal {
namespace {

// At most this many iovecs per writev in TryWrite (what Asio's own writes use, far below
// IOV_MAX); the rest goes in a later call.
constexpr size_t kMaxIovecs = 64;

void SetNonBlocking(int fd) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Everything a connection is, shared with the handlers it has in flight, so that they can run
// after the FdStreamConnection that owns it is gone (they then find it closed).
//
// Reads use async_read_some on the descriptor: Asio tries a descriptor read speculatively
// every time (a short read does not end the speculation, unlike a socket's), so a read after
// the last bytes sees the peer's close even when both came in one readiness edge.
class Core : public std::enable_shared_from_this<Core> {
 public:
  using ReadHandler = Connection::ReadHandler;
  using WriteHandler = Connection::WriteHandler;

  Core(asio::any_io_executor executor, FdStreamParts parts)
      : executor_(std::move(executor)),
        reader_(executor_),
        writer_(executor_),
        scheme_(std::move(parts.scheme)),
        peer_(std::move(parts.peer)),
        traits_(parts.traits),
        on_close_(std::move(parts.on_close)) {
    Adopt(reader_, std::move(parts.read_fd), "read");
    Adopt(writer_, std::move(parts.write_fd), "write");
    // A descriptor missing or refused by the reactor: every read and write says so.
    if (!adopt_failure_.ok()) {
      read_end_ = adopt_failure_;
      write_failure_ = adopt_failure_;
    }
  }

  void AsyncRead(asio::mutable_buffer into, ReadHandler done) {
    if (closed_ || read_end_) {
      asio::post(executor_, [result = closed_ ? Cancelled("read") : *read_end_,
                             done = std::move(done)]() mutable { done(std::move(result)); });
      return;
    }
    if (into.size() == 0) {
      asio::post(executor_, [done = std::move(done)]() mutable { done(size_t{0}); });
      return;
    }
    reader_.async_read_some(
        into, [self = shared_from_this(), done = std::move(done)](
                  asio::error_code ec, size_t n) mutable { done(self->ReadResult(ec, n)); });
  }

  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) {
    if (closed_) return Cancelled("write");
    if (!write_failure_.ok()) return write_failure_;
    iovec iov[kMaxIovecs];
    size_t count = 0;
    for (const asio::const_buffer& buffer : data) {
      if (count == kMaxIovecs) break;
      if (buffer.size() == 0) continue;
      iov[count++] = iovec{const_cast<void*>(buffer.data()), buffer.size()};
    }
    if (count == 0) return size_t{0};
    for (;;) {
      const ssize_t n = ::writev(writer_.native_handle(), iov, static_cast<int>(count));
      if (n >= 0) return static_cast<size_t>(n);
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
      return WriteFailed(asio::error_code(errno, asio::system_category()));
    }
  }

  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) {
    if (closed_ || !write_failure_.ok()) {
      asio::post(executor_, [result = closed_ ? Cancelled("write") : write_failure_,
                             done = std::move(done)]() mutable { done(std::move(result)); });
      return;
    }
    asio::async_write(writer_, data,
                      [self = shared_from_this(), done = std::move(done)](
                          asio::error_code ec, size_t) mutable { done(self->WriteResult(ec)); });
  }

  // The coroutine forms use Asio's own operations, which honour the awaiting coroutine's
  // cancellation slot (a cancelled read takes nothing more into the buffer).
  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) {
    if (closed_) co_return Cancelled("read");
    if (read_end_) co_return *read_end_;
    if (into.size() == 0) co_return size_t{0};
    std::shared_ptr<Core> self = shared_from_this();
    auto [ec, n] = co_await reader_.async_read_some(into, use_nothrow);
    co_return self->ReadResult(ec, n);
  }

  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) {
    if (closed_) co_return Cancelled("write");
    if (!write_failure_.ok()) co_return write_failure_;
    std::shared_ptr<Core> self = shared_from_this();
    auto [ec, n] = co_await asio::async_write(writer_, data, use_nothrow);
    co_return self->WriteResult(ec);
  }

  // Closes both descriptors (the peer's read sees end of stream, its write EPIPE); pending
  // operations complete with kCancelled. Then on_close runs, once.
  void Close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ignored;
    reader_.close(ignored);
    writer_.close(ignored);
    if (on_close_) std::exchange(on_close_, nullptr)();
  }

  // Closes only our write descriptor: the peer reads end of stream, we keep reading. Later
  // writes are kCancelled.
  void CloseWrite() {
    if (closed_ || !writer_.is_open()) return;
    asio::error_code ignored;
    writer_.close(ignored);
    write_failure_ = Cancelled("write (our direction was closed)");
  }

  const PeerInfo& peer() const { return peer_; }
  const Traits& traits() const { return traits_; }
  const asio::any_io_executor& executor() const { return executor_; }

 private:
  void Adopt(asio::posix::stream_descriptor& descriptor, UniqueFd fd, const char* direction) {
    if (!fd) {
      adopt_failure_ = absl::InvalidArgumentError(
          absl::StrCat(scheme_, " connection with ", peer_.address, ": no ", direction, " fd"));
      return;
    }
    SetNonBlocking(fd.get());
    asio::error_code ec;
    descriptor.assign(fd.get(), ec);
    if (ec) {
      adopt_failure_ = ToStatus(ec, absl::StrCat(scheme_, " connection with ", peer_.address));
      return;  // `fd` closes it
    }
    fd.release();
    descriptor.non_blocking(true, ec);
  }

  absl::Status Cancelled(const char* op) const {
    return absl::CancelledError(absl::StrCat(scheme_, " ", op, ": cancelled"));
  }

  absl::StatusOr<size_t> ReadResult(const asio::error_code& ec, size_t n) {
    // After Close() the result is kCancelled whatever the OS said.
    if (closed_) return Cancelled("read");
    if (ec == asio::error::operation_aborted) return Cancelled("read");  // a cancelled Read
    if (!ec) return n;
    if (ec == asio::error::eof) {
      read_end_ = size_t{0};
    } else {
      read_end_ = ToStatus(ec, absl::StrCat(scheme_, " read from ", peer_.address));
    }
    return *read_end_;
  }

  absl::Status WriteFailed(const asio::error_code& ec) {
    // EPIPE (the reader is gone) is kUnavailable; remembered so that every later write says so.
    write_failure_ = ToStatus(ec, absl::StrCat(scheme_, " write to ", peer_.address));
    return write_failure_;
  }

  absl::Status WriteResult(const asio::error_code& ec) {
    if (closed_) return Cancelled("write");
    if (ec == asio::error::operation_aborted) return Cancelled("write");
    if (ec) return WriteFailed(ec);
    return absl::OkStatus();
  }

  asio::any_io_executor executor_;
  asio::posix::stream_descriptor reader_;
  asio::posix::stream_descriptor writer_;
  std::string scheme_;
  PeerInfo peer_;
  Traits traits_;
  absl::AnyInvocable<void()> on_close_;
  absl::Status adopt_failure_;
  std::optional<absl::StatusOr<size_t>> read_end_;  // 0 after EOF, or the read error
  absl::Status write_failure_;
  bool closed_ = false;
};

class FdStreamConnection final : public Connection {
 public:
  explicit FdStreamConnection(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~FdStreamConnection() override { core_->Close(); }

  void AsyncRead(asio::mutable_buffer into, ReadHandler done) override {
    core_->AsyncRead(into, std::move(done));
  }
  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) override {
    core_->AsyncWrite(data, std::move(done));
  }
  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) override {
    return core_->TryWrite(data);
  }
  void Close() override { core_->Close(); }
  void CloseWrite() { core_->CloseWrite(); }
  Traits traits() const override { return core_->traits(); }
  PeerInfo peer() const override { return core_->peer(); }
  asio::any_io_executor executor() const override { return core_->executor(); }
  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) override {
    return core_->Read(into);
  }
  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) override {
    return core_->Write(data);
  }

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace

bool CloseWriteHalf(Connection& connection) {
  auto* stream = dynamic_cast<FdStreamConnection*>(&connection);
  if (stream == nullptr) return false;
  stream->CloseWrite();
  return true;
}

std::unique_ptr<Connection> NewFdStreamConnection(asio::any_io_executor executor,
                                                  FdStreamParts parts) {
  return std::make_unique<FdStreamConnection>(
      std::make_shared<Core>(std::move(executor), std::move(parts)));
}

void IgnoreSigpipe() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current {};
    if (::sigaction(SIGPIPE, nullptr, &current) != 0) return;
    if ((current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL) return;
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    sigemptyset(&ignore.sa_mask);
    ::sigaction(SIGPIPE, &ignore, nullptr);
  });
}

}  // namespace courier::transport::internal
