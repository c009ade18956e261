// What the stream-socket transports (tcp/, uds/) share: SocketConnection, the Connection over a
// connected Asio stream socket, and SocketAcceptor, the accept loop of their listeners.
// Transport-layer internals: only transport/ and its tests include this.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/basic_socket_acceptor.hpp"
#include "asio/basic_stream_socket.hpp"
#include "asio/buffer.hpp"
#include "asio/detail/reactor.hpp"
#include "asio/detail/reactor_op.hpp"
#include "asio/error.hpp"
#include "asio/execution/context.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/ip/address_v4.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/post.hpp"
#include "asio/query.hpp"
#include "asio/recycling_allocator.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "asio/write.hpp"
#include "transport/endpoint.h"
#include "transport/status.h"
#include "transport/transport.h"

namespace courier::transport::internal {

using transport::use_nothrow;

// "tcp://127.0.0.1:7000", "tcp://[::1]:7000". An IPv4-mapped IPv6 address (a dual-stack
// listener's IPv4 peer) is shown as IPv4.
inline Endpoint ToEndpoint(const asio::ip::tcp::endpoint& endpoint) {
  asio::ip::address address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  std::string host =
      address.is_v6() ? absl::StrCat("[", address.to_string(), "]") : address.to_string();
  return Endpoint{"tcp", absl::StrCat(host, ":", endpoint.port())};
}

// "unix:///run/a.sock", "unix:rel/a.sock", "unix:@name" (abstract: the leading NUL shown as
// '@'). An unnamed socket (a client that never called bind) has an empty address.
inline Endpoint ToEndpoint(const asio::local::stream_protocol::endpoint& endpoint) {
  std::string path = endpoint.path();
  if (!path.empty() && path[0] == '\0') path[0] = '@';
  return Endpoint{"unix", std::move(path)};
}

// What the kernel says about the process at the other end of a UNIX socket (for a client: the
// process that called listen(); for a server: the one that called connect()). nullopt if the
// kernel will not say.
inline std::optional<PeerCredentials> ReadPeerCredentials(int fd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0 || length != sizeof(cred)) {
    return std::nullopt;
  }
  return PeerCredentials{.pid = cred.pid, .uid = cred.uid, .gid = cred.gid};
}

// Keeps `fd` out of programs this process execs (the pipe transport spawns children): Asio opens
// sockets without SOCK_CLOEXEC. A child that inherited a socket would keep its port bound and
// its peer from seeing end of stream. TODO(someday): open with SOCK_CLOEXEC, closing the window
// between socket() and this call in which another thread could fork.
inline void SetCloseOnExec(int fd) {
  int flags = ::fcntl(fd, F_GETFD);
  if (flags >= 0) ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
}

// A stream socket that lets SocketConnection start its own reactor operation (ReadOp below).
template <typename Protocol>
class ReactorSocket : public asio::basic_stream_socket<Protocol, asio::any_io_executor> {
 public:
  using Base = asio::basic_stream_socket<Protocol, asio::any_io_executor>;
  explicit ReactorSocket(Base&& socket) : Base(std::move(socket)) {}
  auto& implementation() { return this->impl_.get_implementation(); }
};

// One read for AsyncRead, run by Asio's reactor like its own socket reads (speculatively at
// once, else when the socket is readable), but completing through a plain function instead of
// a wrapped handler: the read allocates nothing (the operation comes from Asio's recycling
// allocator) and costs no extra indirection. Built on asio::detail (Debian 12's Asio 1.22).
//
// A short read does not end the reactor's speculation (as Asio does for short writes): the
// peer's end of stream (or a reset) can arrive in the same readiness edge as its last bytes, and
// then no further edge comes; only another read sees it. So the read after a short one may find
// nothing (EAGAIN), which costs one system call but never misses a close.
template <typename Owner>
class ReadOp : public asio::detail::reactor_op {
 public:
  using Handler = typename Owner::ReadHandler;

  // Starts the read of `into` on `socket` (a connected, non-blocking stream socket); when it
  // completes, Owner::ReadDone(owner, ec, n, handler) runs.
  template <typename Socket>
  static void Start(Socket& socket, asio::detail::reactor& reactor, asio::mutable_buffer into,
                    Owner* owner, Handler handler) {
    auto& impl = socket.implementation();
    void* memory = asio::recycling_allocator<ReadOp>().allocate(1);
    auto* op = new (memory) ReadOp(impl.socket_, into, owner, std::move(handler));
    reactor.start_op(asio::detail::reactor::read_op, impl.socket_, impl.reactor_data_, op,
                     /*is_continuation=*/true, /*allow_speculative=*/true);
  }

 private:
  ReadOp(int fd, asio::mutable_buffer into, Owner* owner, Handler handler)
      : reactor_op(asio::error_code(), &ReadOp::Perform, &ReadOp::Complete),
        fd_(fd),
        into_(into),
        owner_(owner),
        handler_(std::move(handler)) {}

  static status Perform(reactor_op* base) {
    auto* op = static_cast<ReadOp*>(base);
    for (;;) {
      const ssize_t n = ::recv(op->fd_, op->into_.data(), op->into_.size(), 0);
      if (n > 0) {
        op->bytes_transferred_ = static_cast<size_t>(n);
        return done;
      }
      if (n == 0) {
        op->ec_ = asio::error::eof;
        return done_and_exhausted;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return not_done;
      op->ec_ = asio::error_code(errno, asio::system_category());
      return done;
    }
  }

  // `owner` is null when the reactor is destroyed with the operation pending: then the handler
  // is destroyed without being called, as Asio does. Otherwise the result is the reactor's
  // (operation_aborted after a close) if it set one, else what Perform found.
  static void Complete(void* owner, asio::detail::scheduler_operation* base,
                       const asio::error_code& /*result_ec*/, size_t /*bytes*/) {
    auto* op = static_cast<ReadOp*>(base);
    Handler handler = std::move(op->handler_);
    Owner* connection = op->owner_;
    const asio::error_code ec = op->ec_;
    const size_t n = op->bytes_transferred_;
    op->~ReadOp();
    asio::recycling_allocator<ReadOp>().deallocate(op, 1);
    if (owner != nullptr) Owner::ReadDone(connection, ec, n, handler);
  }

  int fd_;
  asio::mutable_buffer into_;
  Owner* owner_;
  Handler handler_;
};

// A Connection over a connected stream socket (asio::ip::tcp or asio::local::stream_protocol).
// Traits: a reliable byte stream with no message boundaries. Writes use send(MSG_NOSIGNAL)
// (Asio does so on Linux), so a peer that went away is kUnavailable (EPIPE), never SIGPIPE.
template <typename Protocol>
class SocketConnection final : public Connection {
 public:
  using Socket = ReactorSocket<Protocol>;

  // `socket` must be connected. Sets close-on-exec and (TCP) TCP_NODELAY, and records the
  // peer's address and (UNIX) its SO_PEERCRED credentials now, while the socket is open to ask.
  explicit SocketConnection(typename Socket::Base socket)
      : socket_(std::move(socket)),
        executor_(socket_.get_executor()),
        reactor_(asio::use_service<asio::detail::reactor>(
            asio::query(executor_, asio::execution::context))) {
    SetCloseOnExec(socket_.native_handle());
    asio::error_code ec;
    socket_.non_blocking(true, ec);  // for TryWrite
    if constexpr (std::is_same_v<Protocol, asio::ip::tcp>) {
      socket_.set_option(asio::ip::tcp::no_delay(true), ec);
    }
    typename Protocol::endpoint remote = socket_.remote_endpoint(ec);
    Endpoint endpoint = ToEndpoint(ec ? typename Protocol::endpoint() : remote);
    peer_.address = endpoint.ToString();
    if constexpr (std::is_same_v<Protocol, asio::local::stream_protocol>) {
      peer_.credentials = ReadPeerCredentials(socket_.native_handle());
      // A client socket is unnamed: say who it is from the kernel's credentials instead.
      if (endpoint.address.empty()) {
        peer_.address = peer_.credentials ? absl::StrCat("unix:pid=", peer_.credentials->pid,
                                                         ",uid=", peer_.credentials->uid,
                                                         ",gid=", peer_.credentials->gid)
                                          : "unix:unnamed";
      }
    }
  }

  // Holds at most `into.size()` bytes; `into` must be non-empty (an empty read returns 0, which
  // reads as end of stream). Once the stream has ended or failed, every later read says so again.
  void AsyncRead(asio::mutable_buffer into, ReadHandler done) override {
    if (closed_ || read_end_) {
      asio::post(executor_, [result = closed_ ? Closed("read") : *read_end_,
                             done = std::move(done)]() mutable { done(std::move(result)); });
      return;
    }
    if (into.size() == 0) {  // as Asio: an empty read of a stream completes at once
      asio::post(executor_, [done = std::move(done)]() mutable { done(size_t{0}); });
      return;
    }
    ReadOp<SocketConnection>::Start(socket_, reactor_, into, this, std::move(done));
  }

  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) override {
    if (closed_) co_return Closed("read");
    if (read_end_) co_return *read_end_;
    auto [ec, n] = co_await socket_.async_read_some(into, use_nothrow);
    if (ec == asio::error::operation_aborted) co_return Closed("read");
    co_return ReadResult(ec, n);
  }

  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) override {
    if (closed_) return Closed("write");
    asio::error_code ec;
    // Non-blocking mode (set in the constructor) applies to synchronous calls only.
    size_t n = socket_.write_some(data, ec);
    if (ec == asio::error::would_block || ec == asio::error::try_again) return size_t{0};
    if (ec) return ToStatus(ec, absl::StrCat(scheme(), " write to ", peer_.address));
    return n;
  }

  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) override {
    if (closed_) {
      asio::post(executor_, [done = std::move(done)]() mutable { done(Closed("write")); });
      return;
    }
    asio::async_write(socket_, data,
                      [this, done = std::move(done)](asio::error_code ec, size_t) mutable {
                        if (ec == asio::error::operation_aborted) return done(Closed("write"));
                        done(WriteResult(ec));
                      });
  }

  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) override {
    if (closed_) co_return Closed("write");
    auto [ec, n] = co_await asio::async_write(socket_, data, use_nothrow);
    if (ec == asio::error::operation_aborted) co_return Closed("write");
    co_return WriteResult(ec);
  }

  // Shuts down both directions (the peer sees end of stream even if another process shares the
  // descriptor) and closes; pending operations complete with operation_aborted.
  void Close() override {
    if (closed_) return;
    closed_ = true;
    asio::error_code ignored;
    socket_.shutdown(Socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

  Traits traits() const override {
    return Traits{
        .message_boundaries = false,
        .reliable = true,
        .max_message = 0,
        .duplex = true,
        .reach = std::is_same_v<Protocol, asio::ip::tcp> ? Reach::kNetwork : Reach::kSameHost};
  }
  PeerInfo peer() const override { return peer_; }
  asio::any_io_executor executor() const override { return executor_; }

  // For tests and socket options; do not read or write through it.
  Socket& socket() { return socket_; }

 private:
  static constexpr const char* scheme() {
    return std::is_same_v<Protocol, asio::ip::tcp> ? "tcp" : "unix";
  }
  friend class ReadOp<SocketConnection>;
  // AsyncRead's completion. Checks for an abort before touching `self`: Close() (or the
  // socket's destruction) aborts the read, and the connection may be gone.
  static void ReadDone(SocketConnection* self, const asio::error_code& ec, size_t n,
                       ReadHandler& done) {
    if (ec == asio::error::operation_aborted) return done(Closed("read"));
    done(self->ReadResult(ec, n));
  }
  // Static: it may run after the connection is gone.
  static absl::Status Closed(const char* op) {
    return absl::CancelledError(absl::StrCat(scheme(), " ", op, ": cancelled"));
  }
  // What a completed read means (the connection is still alive).
  absl::StatusOr<size_t> ReadResult(const asio::error_code& ec, size_t n) {
    // After Close() the result is kCancelled whatever the OS said (e.g. bad_descriptor).
    if (closed_) return Closed("read");
    if (!ec) return n;
    // Remembered, not asked again: Asio 1.22's edge-triggered reactor waits for a new edge
    // before retrying a read that came back short, and after EOF or a reset none comes.
    if (ec == asio::error::eof) {
      read_end_ = size_t{0};
    } else {
      read_end_ = ToStatus(ec, absl::StrCat(scheme(), " read from ", peer_.address));
    }
    return *read_end_;
  }
  absl::Status WriteResult(const asio::error_code& ec) {
    if (closed_) return Closed("write");
    if (ec) return ToStatus(ec, absl::StrCat(scheme(), " write to ", peer_.address));
    return absl::OkStatus();
  }

  Socket socket_;
  asio::any_io_executor executor_;  // socket_.get_executor() is not const
  asio::detail::reactor& reactor_;  // where ReadOp runs: the socket's own reactor
  PeerInfo peer_;
  std::optional<absl::StatusOr<size_t>> read_end_;  // 0 after EOF, or the read error
  bool closed_ = false;
};

// The accept loop of a stream-socket listener. ECONNABORTED (the client gave up before we
// accepted) is retried at once; running out of descriptors or memory (EMFILE, ENFILE, ENOBUFS,
// ENOMEM) is kResourceExhausted, and the listener stays usable: the caller waits (and logs)
// and accepts again, so it recovers when connections close.
template <typename Protocol>
class SocketAcceptor {
 public:
  using Acceptor = asio::basic_socket_acceptor<Protocol, asio::any_io_executor>;

  // `acceptor` must be listening. `what` starts error messages, e.g. "tcp accept on
  // 127.0.0.1:7000".
  SocketAcceptor(Acceptor acceptor, std::string what)
      : acceptor_(std::move(acceptor)), what_(std::move(what)) {}

  // The next connection, its socket bound to `connection_executor`. kCancelled after Close()
  // or when the awaiting coroutine is cancelled; kResourceExhausted when out of descriptors or
  // memory (call again later).
  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) {
    // A copy: after an aborted wait `this` may be gone (the listener destroyed under us).
    absl::Status cancelled = absl::CancelledError(absl::StrCat(what_, ": cancelled"));
    for (;;) {
      if (closed_) co_return cancelled;
      auto [ec, socket] = co_await acceptor_.async_accept(connection_executor, use_nothrow);
      if (ec == asio::error::operation_aborted) co_return cancelled;
      if (closed_) co_return cancelled;  // drops a connection accepted just before Close()
      if (!ec) {
        co_return std::unique_ptr<Connection>(
            std::make_unique<SocketConnection<Protocol>>(std::move(socket)));
      }
      if (ec == asio::error::connection_aborted) continue;
      if (IsResourceExhausted(ec)) {
        co_return absl::ResourceExhaustedError(absl::StrCat(what_, ": ", ec.message()));
      }
      co_return ToStatus(ec, what_);
    }
  }

  // Idempotent. A pending Accept completes with kCancelled.
  void Close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ignored;
    acceptor_.close(ignored);
  }

 private:
  static bool IsResourceExhausted(const asio::error_code& ec) {
    if (ec.category() != asio::system_category()) return false;
    switch (ec.value()) {
      case EMFILE:
      case ENFILE:
      case ENOBUFS:
      case ENOMEM:
        return true;
      default:
        return false;
    }
  }

  Acceptor acceptor_;
  std::string what_;
  bool closed_ = false;
};

}  // namespace courier::transport::internal
