#include "transport/shm/shm_transport.h"

#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "asio/associated_cancellation_slot.hpp"
#include "asio/async_result.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/error.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/read.hpp"
#include "asio/steady_timer.hpp"
#include "transport/internal/socket_connection.h"
#include "transport/internal/unix_socket.h"
#include "transport/shm/ring.h"
#include "transport/shm/segment.h"
#include "transport/status.h"

namespace courier::transport::shm {
namespace {

using asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;
using internal::use_nothrow;

// The byte a side sends on the rendezvous socket when it closes the connection on purpose; end
// of stream without it means the peer died.
constexpr std::byte kBye{0xB7};
// How long one poll of the rings runs before it lets the reactor serve everything else (timers,
// sockets, other connections) once; then it polls again until the spin budget is spent.
constexpr std::chrono::microseconds kSpinSlice{25};
// A client that connects and says nothing is dropped after this; at most this many handshakes
// are in progress per listener (more connections are closed at once, the client sees
// kUnavailable).
constexpr std::chrono::seconds kHandshakeTimeout{2};
constexpr size_t kMaxHandshakes = 64;
// accept() failing (out of descriptors) is retried after these waits, doubling.
constexpr std::chrono::milliseconds kFirstAcceptRetry{10};
constexpr std::chrono::milliseconds kMaxAcceptRetry{1000};

// The parsed form of an Endpoint::address.
struct ShmAddress {
  std::string name;         // NAME or /abs/path.sock, without the options
  std::string socket_path;  // where the rendezvous socket lives
  std::optional<size_t> ring_capacity;
  std::optional<std::chrono::microseconds> spin;
};

absl::Status BadAddress(std::string_view address, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("shm address '", AsAbsl(address), "': ", AsAbsl(problem)));
}

std::optional<size_t> ParseSize(absl::string_view text) {
  uint64_t unit = 1;
  if (!text.empty() && (text.back() == 'k' || text.back() == 'K')) unit = 1024;
  if (!text.empty() && (text.back() == 'm' || text.back() == 'M')) unit = 1024 * 1024;
  if (unit != 1) text.remove_suffix(1);
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value > (uint64_t{1} << 40) / unit) return std::nullopt;
  return static_cast<size_t>(value * unit);
}

absl::StatusOr<ShmAddress> ParseAddress(std::string_view address, bool create_directory) {
  std::string_view name = address;
  std::string_view query;
  if (size_t q = address.find('?'); q != std::string_view::npos) {
    name = address.substr(0, q);
    query = address.substr(q + 1);
  }
  if (name.empty()) return BadAddress(address, "empty name");
  ShmAddress out;
  out.name = std::string(name);
  if (name[0] == '/') {
    out.socket_path = out.name;
  } else {
    absl::StatusOr<std::string> path = RendezvousPath(name, create_directory);
    if (!path.ok()) return path.status();
    out.socket_path = *std::move(path);
  }
  for (absl::string_view option : absl::StrSplit(AsAbsl(query), '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(option, '=');
    if (kv.first == "ring") {
      std::optional<size_t> size = ParseSize(kv.second);
      if (!size || !IsValidRingCapacity(*size)) {
        return BadAddress(
            address, absl::StrCat("ring '", kv.second, "' is not a power of two from 4k to 256m"));
      }
      out.ring_capacity = *size;
    } else if (kv.first == "spin_us") {
      uint32_t us = 0;
      if (!absl::SimpleAtoi(kv.second, &us) || us > 1'000'000) {
        return BadAddress(address, absl::StrCat("spin_us '", kv.second, "' is not 0 to 1000000"));
      }
      out.spin = std::chrono::microseconds(us);
    } else {
      return BadAddress(address,
                        absl::StrCat("unknown option '", kv.first, "' (known: ring, spin_us)"));
    }
  }
  return out;
}

// Everything a connection is, shared with the handlers it has in flight (a spin slice, the
// doorbell wait, the watch on the rendezvous socket), so that they can run after the
// ShmConnection that owns it is gone (they then find it closed and stop).
class Core : public std::enable_shared_from_this<Core> {
 public:
  using ReadHandler = Connection::ReadHandler;
  using WriteHandler = Connection::WriteHandler;

  Core(asio::any_io_executor executor, Segment segment, bool is_server,
       stream_protocol::socket socket, std::chrono::microseconds spin, PeerInfo peer)
      : executor_(std::move(executor)),
        segment_(std::move(segment)),
        writer_(segment_.WriterFor(is_server)),
        reader_(segment_.ReaderFor(is_server)),
        peer_bell_(is_server ? segment_.client_bell() : segment_.server_bell()),
        bell_(executor_),
        socket_(std::move(socket)),
        spin_(spin),
        peer_(std::move(peer)) {
    segment_.CloseMemfd();
    UniqueFd my_bell = is_server ? segment_.TakeServerBell() : segment_.TakeClientBell();
    asio::error_code ec;
    bell_.assign(my_bell.get(), ec);
    if (!ec) my_bell.release();
    internal::SetCloseOnExec(socket_.native_handle());
  }

  // Starts watching the rendezvous socket (after construction: it needs shared_from_this).
  void Start() { WatchSocket(); }

  void AsyncRead(asio::mutable_buffer into, ReadHandler done) {
    if (closed_ || read_end_) {
      Post(std::move(done), closed_ ? Cancelled("read") : *read_end_);
      return;
    }
    if (into.size() == 0) {
      Post(std::move(done), size_t{0});
      return;
    }
    read_into_ = into;
    read_handler_ = std::move(done);
    read_pending_ = true;
    // A polling connection lets its spin slice complete the read, data there or not: from inside
    // a slice (the usual case: a handler the slice ran reads again) that costs nothing, and a
    // new slice goes on polling for the next read after this one.
    if (spin_.count() > 0) {
      Wait();
      return;
    }
    // Without polling, data already there is copied now and the read completes in the next turn.
    if (std::optional<absl::StatusOr<size_t>> result = TryRead()) {
      read_pending_ = false;
      Post(std::move(read_handler_), *std::move(result));
      return;
    }
    Wait();
  }

  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) {
    if (closed_) return Cancelled("write");
    if (!write_failure_.ok()) return write_failure_;
    if (peer_ended_) return PeerGone();
    absl::StatusOr<size_t> n = writer_.Write(data);
    if (!n.ok()) {
      write_failure_ = Annotate(n.status());
      return write_failure_;
    }
    if (*n > 0 && writer_.TakeConsumerSleeping()) Ring(peer_bell_);
    return n;
  }

  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) {
    absl::StatusOr<size_t> n = TryWrite(data);
    if (!n.ok()) return Post(std::move(done), n.status());
    write_rest_.assign(data.begin(), data.end());
    SkipWritten(write_rest_, *n);
    if (write_rest_.empty()) return Post(std::move(done), absl::OkStatus());
    write_handler_ = std::move(done);
    write_pending_ = true;
    Wait();
  }

  // Cancels a pending read or write only (for Read and Write's cancellation slots).
  void CancelRead() {
    if (!read_pending_) return;
    read_pending_ = false;
    Post(std::move(read_handler_), Cancelled("read"));
  }
  void CancelWrite() {
    if (!write_pending_) return;
    write_pending_ = false;
    write_rest_.clear();
    Post(std::move(write_handler_), Cancelled("write"));
  }

  void Close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ignored;
    if (socket_.is_open()) {
      // Say that this is a close, not a crash: the peer reads what we published, then sees a
      // clean end of stream.
      (void)::send(socket_.native_handle(), &kBye, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
      socket_.shutdown(stream_protocol::socket::shutdown_both, ignored);
      socket_.close(ignored);
    }
    bell_.close(ignored);
    CancelRead();
    CancelWrite();
  }

  const PeerInfo& peer() const { return peer_; }
  const asio::any_io_executor& executor() const { return executor_; }

 private:
  template <typename Handler, typename Result>
  void Post(Handler handler, Result result) {
    asio::post(executor_, [self = shared_from_this(), handler = std::move(handler),
                           result = std::move(result)]() mutable {
      // After Close() every handler says kCancelled, whatever it had found.
      if (self->closed_) {
        if constexpr (std::is_same_v<Result, absl::StatusOr<size_t>> ||
                      std::is_same_v<Result, size_t>) {
          return handler(Cancelled("read"));
        } else {
          return handler(Cancelled("write"));
        }
      }
      handler(std::move(result));
    });
  }

  static absl::Status Cancelled(const char* op) {
    return absl::CancelledError(absl::StrCat("shm ", op, ": cancelled"));
  }
  absl::Status PeerGone() const {
    return absl::UnavailableError(
        absl::StrCat("shm write to ", peer_.address, ": ",
                     peer_clean_ ? "the peer closed the connection" : "the peer is gone"));
  }
  absl::Status Annotate(const absl::Status& status) const {
    return absl::Status(
        status.code(), absl::StrCat("shm connection with ", peer_.address, ": ", status.message()));
  }

  // What the pending read completes with now, or nullopt if it must wait.
  std::optional<absl::StatusOr<size_t>> TryRead() {
    absl::StatusOr<size_t> n = reader_.Read(
        std::span<std::byte>(static_cast<std::byte*>(read_into_.data()), read_into_.size()));
    if (!n.ok()) {
      read_end_ = Annotate(n.status());
      return *read_end_;
    }
    if (*n > 0) {
      if (reader_.TakeProducerSleeping()) Ring(peer_bell_);
      return n;
    }
    if (!failure_.ok()) {
      read_end_ = failure_;
      return *read_end_;
    }
    if (peer_ended_) {
      // Everything the peer published before it went has been read.
      if (peer_clean_) {
        read_end_ = size_t{0};
      } else {
        read_end_ = absl::UnavailableError(
            absl::StrCat("shm read from ", peer_.address, ": the peer is gone"));
      }
      return *read_end_;
    }
    return std::nullopt;
  }

  // Completes what can complete. Handlers run directly (we are in a handler of our own, never
  // inside AsyncRead or AsyncWrite); one may close the connection, so check after each.
  void Pump() {
    if (read_pending_) {
      if (std::optional<absl::StatusOr<size_t>> result = TryRead()) {
        read_pending_ = false;
        ReadHandler done = std::move(read_handler_);
        done(*std::move(result));
        if (closed_) return;
      }
    }
    if (write_pending_) {
      absl::Status status;
      bool finished = false;
      absl::StatusOr<size_t> n = TryWrite(write_rest_);
      if (!n.ok()) {
        status = n.status();
        finished = true;
      } else {
        SkipWritten(write_rest_, *n);
        finished = write_rest_.empty();
      }
      if (finished) {
        write_pending_ = false;
        write_rest_.clear();
        WriteHandler done = std::move(write_handler_);
        done(std::move(status));
      }
    }
  }

  bool Waiting() const { return !closed_ && (read_pending_ || write_pending_); }
  bool Polling() const { return spin_posted_ || in_slice_; }

  // A read or write has to wait: poll for the spin budget, then sleep on the doorbell.
  void Wait() {
    if (spin_.count() > 0) {
      spin_until_ = Clock::now() + spin_;
      // Inside a slice (a handler it ran started this wait) the slice goes on polling.
      if (!spin_posted_ && !in_slice_) {
        spin_posted_ = true;
        asio::post(executor_, [self = shared_from_this()] { self->SpinSlice(); });
      }
      return;
    }
    Sleep();
  }

  bool Ready() {
    return peer_ended_ || (read_pending_ && reader_.HasData()) ||
           (write_pending_ && writer_.HasSpace());
  }

  // Polls the rings for up to kSpinSlice, completing what becomes ready, and keeps polling when
  // the handlers it ran start new waits: a conversation with a busy peer runs here without a
  // trip through the reactor (no system call) until the slice ends. Then the reactor serves
  // everything else once, and the next slice follows, until the spin budget of the last wait
  // runs out and the connection sleeps on its doorbell.
  void SpinSlice() {
    spin_posted_ = false;
    if (!Waiting()) return;
    const Clock::time_point slice_end = std::min(Clock::now() + kSpinSlice, spin_until_);
    in_slice_ = true;
    bool slice_over = false;
    while (Waiting() && !slice_over) {
      for (unsigned i = 1; !Ready(); ++i) {
        CpuRelax();
        if (i % 16 == 0 && Clock::now() >= slice_end) {
          slice_over = true;
          break;
        }
      }
      if (!slice_over) Pump();
    }
    in_slice_ = false;
    if (!Waiting()) return;
    if (Clock::now() < spin_until_) {
      spin_posted_ = true;
      asio::post(executor_, [self = shared_from_this()] { self->SpinSlice(); });
      return;
    }
    Sleep();
  }

  // Announces that we sleep, re-checks, and waits for the doorbell; completes instead what the
  // re-check finds ready.
  //
  // A connection waits in one way at a time: a handler this runs may start a new wait that polls
  // (a slice is then posted), and a side that announced sleep while it polls would have its
  // peer ring the doorbell, a system call, on every message.
  void Sleep() {
    while (Waiting()) {
      if (Polling()) return;
      bool ready = false;
      if (read_pending_ && !reader_.PrepareToSleep()) ready = true;
      if (write_pending_ && !writer_.PrepareToSleep()) ready = true;
      if (!ready && !peer_ended_) break;
      reader_.StopSleeping();
      writer_.StopSleeping();
      Pump();
    }
    if (!Waiting() || bell_pending_) return;
    if (!bell_.is_open()) {
      failure_ = absl::ResourceExhaustedError("shm: no descriptor left for the doorbell");
      peer_ended_ = true;
      Pump();
      return;
    }
    bell_pending_ = true;
    bell_.async_read_some(asio::buffer(&bell_value_, sizeof(bell_value_)),
                          [self = shared_from_this()](asio::error_code ec, size_t) {
                            self->bell_pending_ = false;
                            if (ec == asio::error::operation_aborted || self->closed_) return;
                            self->reader_.StopSleeping();
                            self->writer_.StopSleeping();
                            self->Pump();
                            if (self->Waiting() && !self->Polling()) self->Sleep();
                          });
  }

  // The rendezvous socket says when the peer goes: kBye then end of stream when it closes, end
  // of stream (or a reset) alone when it dies.
  void WatchSocket() {
    socket_.async_receive(
        asio::buffer(&socket_byte_, 1), [self = shared_from_this()](asio::error_code ec, size_t n) {
          if (ec == asio::error::operation_aborted || self->closed_) return;
          if (!ec && n == 1 && self->socket_byte_ == kBye) {
            self->peer_clean_ = true;
          } else if (!ec && n == 1) {
            self->failure_ =
                absl::DataLossError(absl::StrCat("shm connection with ", self->peer_.address,
                                                 ": unexpected byte on the rendezvous socket"));
            self->write_failure_ = self->failure_;
          }
          self->peer_ended_ = true;
          self->Pump();
        });
  }

  asio::any_io_executor executor_;
  Segment segment_;
  RingWriter writer_;
  RingReader reader_;
  int peer_bell_;
  asio::posix::stream_descriptor bell_;
  uint64_t bell_value_ = 0;
  stream_protocol::socket socket_;
  std::byte socket_byte_{};
  std::chrono::microseconds spin_;
  Clock::time_point spin_until_;
  PeerInfo peer_;

  asio::mutable_buffer read_into_;
  ReadHandler read_handler_;
  std::vector<asio::const_buffer> write_rest_;
  WriteHandler write_handler_;
  std::optional<absl::StatusOr<size_t>> read_end_;
  absl::Status write_failure_;
  absl::Status failure_;  // a broken peer: every read and write says so
  bool read_pending_ = false;
  bool write_pending_ = false;
  bool spin_posted_ = false;
  bool in_slice_ = false;
  bool bell_pending_ = false;
  bool peer_ended_ = false;  // the rendezvous socket ended (or said kBye)
  bool peer_clean_ = false;  // ... with kBye first
  bool closed_ = false;
};

class ShmConnection final : public Connection {
 public:
  explicit ShmConnection(std::shared_ptr<Core> core) : core_(std::move(core)) { core_->Start(); }
  ~ShmConnection() override { core_->Close(); }

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
  Traits traits() const override {
    return Traits{.message_boundaries = false,
                  .reliable = true,
                  .max_message = 0,
                  .duplex = true,
                  .reach = Reach::kSameHost};
  }
  PeerInfo peer() const override { return core_->peer(); }
  asio::any_io_executor executor() const override { return core_->executor(); }

  // The initiations are named locals holding a raw pointer: GCC 12 can destroy a temporary with
  // a destructor inside a co_await expression twice. The connection outlives its pending
  // operation; the cancellation slot, which can fire later, holds a weak pointer.
  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) override {
    Core* core = core_.get();
    auto initiation = [core, into](auto handler) {
      auto slot = asio::get_associated_cancellation_slot(handler);
      if (slot.is_connected()) {
        slot.assign([weak = core->weak_from_this()](asio::cancellation_type) {
          if (std::shared_ptr<Core> alive = weak.lock()) alive->CancelRead();
        });
      }
      core->AsyncRead(into, [handler = std::move(handler)](absl::StatusOr<size_t> r) mutable {
        asio::get_associated_cancellation_slot(handler).clear();
        std::move(handler)(std::move(r));
      });
    };
    absl::StatusOr<size_t> result =
        co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(absl::StatusOr<size_t>)>(
            initiation, asio::use_awaitable);
    co_return result;
  }

  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) override {
    Core* core = core_.get();
    auto initiation = [core, data](auto handler) {
      auto slot = asio::get_associated_cancellation_slot(handler);
      if (slot.is_connected()) {
        slot.assign([weak = core->weak_from_this()](asio::cancellation_type) {
          if (std::shared_ptr<Core> alive = weak.lock()) alive->CancelWrite();
        });
      }
      core->AsyncWrite(data, [handler = std::move(handler)](absl::Status s) mutable {
        asio::get_associated_cancellation_slot(handler).clear();
        std::move(handler)(std::move(s));
      });
    };
    absl::Status result =
        co_await asio::async_initiate<const asio::use_awaitable_t<>&, void(absl::Status)>(
            initiation, asio::use_awaitable);
    co_return result;
  }

 private:
  std::shared_ptr<Core> core_;
};

std::string PeerAddress(const std::optional<PeerCredentials>& credentials) {
  if (!credentials) return "shm:unknown";
  return absl::StrCat("shm:pid=", credentials->pid, ",uid=", credentials->uid,
                      ",gid=", credentials->gid);
}

// `spin`: what the URI said, if it said anything. By default a connection polls before it sleeps
// (kDefaultSpin) only when its peer is another process: a peer in this process may be served
// by this very thread, which a poll would only keep waiting (a slice at a time).
std::unique_ptr<Connection> MakeConnection(asio::any_io_executor executor, Segment segment,
                                           bool is_server, stream_protocol::socket socket,
                                           std::optional<std::chrono::microseconds> spin) {
  PeerInfo peer;
  peer.credentials = internal::ReadPeerCredentials(socket.native_handle());
  peer.address = PeerAddress(peer.credentials);
  const bool same_process = peer.credentials && peer.credentials->pid == ::getpid();
  const std::chrono::microseconds chosen =
      spin.value_or(same_process ? std::chrono::microseconds(0) : kDefaultSpin);
  auto core = std::make_shared<Core>(std::move(executor), std::move(segment), is_server,
                                     std::move(socket), chosen, std::move(peer));
  return std::make_unique<ShmConnection>(std::move(core));
}

// Waits until `socket` is readable or `deadline` passes. False on timeout or error.
asio::awaitable<bool> WaitReadable(stream_protocol::socket& socket, Clock::time_point deadline) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(socket.get_executor(), deadline);
  auto result = co_await (socket.async_wait(stream_protocol::socket::wait_read, use_nothrow) ||
                          timer.async_wait(use_nothrow));
  if (result.index() != 0) co_return false;
  auto [ec] = std::get<0>(result);
  co_return !ec;
}

// A connection whose handshake finished, waiting for Accept to hand it out.
struct Handshaken {
  int socket_fd;  // owned
  Segment segment;
};

// What a listener shares with its accept loop and its handshakes.
struct ListenerState {
  explicit ListenerState(asio::any_io_executor ex) : signal(ex, Clock::time_point::max()) {}
  std::deque<absl::StatusOr<Handshaken>> ready;  // errors too (kResourceExhausted)
  asio::steady_timer signal;                     // cancelled when `ready` grows or on Close
  bool closed = false;
  bool loop_running = false;
  size_t handshakes = 0;
  // Hands Accept an error, unless one is already waiting there: a long episode of running out
  // of descriptors queues one error, not one per retry.
  void Report(absl::Status error) {
    if (!ready.empty() && !ready.back().ok()) return;
    ready.push_back(std::move(error));
    signal.cancel();
  }
  ~ListenerState() {
    for (absl::StatusOr<Handshaken>& entry : ready) {
      if (entry.ok()) ::close(entry->socket_fd);
    }
  }
};

class ShmListener final : public Listener {
 public:
  ShmListener(stream_protocol::acceptor acceptor, Endpoint local, std::string socket_path,
              internal::FileId file, size_t ring_capacity,
              std::optional<std::chrono::microseconds> spin)
      : executor_(acceptor.get_executor()),
        acceptor_(std::make_shared<stream_protocol::acceptor>(std::move(acceptor))),
        local_(std::move(local)),
        socket_path_(std::move(socket_path)),
        file_(file),
        ring_capacity_(ring_capacity),
        spin_(spin),
        state_(std::make_shared<ListenerState>(executor_)) {}
  ~ShmListener() override { Close(); }

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    std::shared_ptr<ListenerState> state = state_;
    const absl::Status cancelled =
        absl::CancelledError(absl::StrCat("shm accept on ", local_.address, ": cancelled"));
    if (!state->loop_running && !state->closed) {
      state->loop_running = true;
      asio::co_spawn(executor_, AcceptLoop(acceptor_, state, ring_capacity_), asio::detached);
    }
    for (;;) {
      if (state->closed) co_return cancelled;
      if (!state->ready.empty()) {
        absl::StatusOr<Handshaken> next = std::move(state->ready.front());
        state->ready.pop_front();
        if (!next.ok()) co_return next.status();
        stream_protocol::socket socket(connection_executor);
        asio::error_code ec;
        socket.assign(stream_protocol(), next->socket_fd, ec);
        if (ec) {
          ::close(next->socket_fd);
          continue;
        }
        co_return MakeConnection(connection_executor, std::move(next->segment),
                                 /*is_server=*/true, std::move(socket), spin_);
      }
      state->signal.expires_at(Clock::time_point::max());
      co_await state->signal.async_wait(use_nothrow);
    }
  }

  Endpoint local_endpoint() const override { return local_; }

  void Close() override {
    if (state_->closed) return;
    state_->closed = true;
    internal::UnlinkIfSame(socket_path_, file_);
    asio::error_code ignored;
    acceptor_->close(ignored);
    state_->signal.cancel();
  }

 private:
  // Accepts for as long as the listener is open, each client's handshake in its own coroutine.
  static asio::awaitable<void> AcceptLoop(std::shared_ptr<stream_protocol::acceptor> acceptor,
                                          std::shared_ptr<ListenerState> state,
                                          size_t ring_capacity) {
    const asio::any_io_executor ex = acceptor->get_executor();
    asio::steady_timer backoff(ex);
    std::chrono::milliseconds delay = kFirstAcceptRetry;
    while (!state->closed) {
      auto [ec, socket] = co_await acceptor->async_accept(use_nothrow);
      if (state->closed) break;
      if (ec == asio::error::connection_aborted) continue;
      if (ec) {
        // Out of descriptors or memory: tell Accept (the server logs it), wait, try again.
        state->Report(absl::ResourceExhaustedError(absl::StrCat("shm accept: ", ec.message())));
        backoff.expires_after(delay);
        co_await backoff.async_wait(use_nothrow);
        delay = std::min(delay * 2, kMaxAcceptRetry);
        continue;
      }
      delay = kFirstAcceptRetry;
      // Handshakes in progress and finished ones nobody accepted yet are bounded together;
      // past that the socket is closed here and the client is refused.
      if (state->handshakes + state->ready.size() >= kMaxHandshakes) continue;
      ++state->handshakes;
      asio::co_spawn(ex, Handshake(std::move(socket), state, ring_capacity), asio::detached);
    }
    state->loop_running = false;
  }

  // The server's half of the handshake: check who it is, read its hello, create its segment,
  // send the descriptors.
  static asio::awaitable<void> Handshake(stream_protocol::socket socket,
                                         std::shared_ptr<ListenerState> state,
                                         size_t ring_capacity) {
    absl::StatusOr<Segment> segment = co_await ServeHandshake(socket, ring_capacity);
    --state->handshakes;
    if (state->closed) co_return;
    if (!segment.ok()) {
      // Closing the socket refuses the client. Running out of descriptors or memory for its
      // segment is the server's problem too: Accept reports it (the server logs and backs off).
      if (segment.status().code() == absl::StatusCode::kResourceExhausted) {
        state->Report(segment.status());
      }
      co_return;
    }
    state->ready.push_back(Handshaken{socket.release(), *std::move(segment)});
    state->signal.cancel();
  }

  static asio::awaitable<absl::StatusOr<Segment>> ServeHandshake(stream_protocol::socket& socket,
                                                                 size_t ring_capacity) {
    internal::SetCloseOnExec(socket.native_handle());
    std::optional<PeerCredentials> peer = internal::ReadPeerCredentials(socket.native_handle());
    if (!peer || (peer->uid != ::geteuid() && peer->uid != 0)) {
      co_return absl::PermissionDeniedError("shm: a client of another user");
    }
    asio::error_code ec;
    socket.non_blocking(true, ec);
    std::array<std::byte, 16> hello_bytes{};
    const Clock::time_point deadline = Clock::now() + kHandshakeTimeout;
    size_t got = 0;
    while (got < hello_bytes.size()) {
      ssize_t n = ::recv(socket.native_handle(), hello_bytes.data() + got, hello_bytes.size() - got,
                         MSG_DONTWAIT);
      if (n > 0) {
        got += static_cast<size_t>(n);
        continue;
      }
      if (n == 0) co_return absl::UnavailableError("shm: client left during the handshake");
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        co_return ErrnoStatus(errno, "shm handshake");
      }
      if (!co_await WaitReadable(socket, deadline)) {
        co_return absl::DeadlineExceededError("shm: client sent no hello");
      }
    }
    absl::StatusOr<ClientHello> hello = DecodeClientHello(hello_bytes);
    if (!hello.ok()) co_return hello.status();
    size_t capacity = ring_capacity;
    if (hello->requested_ring_capacity != 0) {
      if (!IsValidRingCapacity(hello->requested_ring_capacity)) {
        co_return absl::InvalidArgumentError("shm: client asked for an invalid ring size");
      }
      capacity = std::min<size_t>(capacity, hello->requested_ring_capacity);
    }
    absl::StatusOr<Segment> segment = Segment::Create(capacity);
    if (!segment.ok()) co_return segment.status();
    std::array<std::byte, 16> reply =
        Encode(ServerHello{.ring_capacity = static_cast<uint32_t>(capacity)});
    const int fds[] = {segment->memfd(), segment->server_bell(), segment->client_bell()};
    absl::StatusOr<size_t> sent = SendWithFds(socket.native_handle(), reply, fds);
    if (!sent.ok()) co_return sent.status();
    if (*sent != reply.size()) co_return absl::UnavailableError("shm: client is not reading");
    co_return segment;
  }

  asio::any_io_executor executor_;
  std::shared_ptr<stream_protocol::acceptor> acceptor_;
  Endpoint local_;
  std::string socket_path_;
  internal::FileId file_;
  size_t ring_capacity_;
  std::optional<std::chrono::microseconds> spin_;
  std::shared_ptr<ListenerState> state_;
};

class ShmTransport final : public Transport {
 public:
  explicit ShmTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    const std::string what = absl::StrCat("shm connect ", to.address);
    absl::StatusOr<ShmAddress> address = ParseAddress(to.address, /*create_directory=*/false);
    if (!address.ok()) {
      // A missing rendezvous directory means nobody listens.
      if (address.status().code() == absl::StatusCode::kUnavailable) {
        co_return absl::UnavailableError(absl::StrCat(what, ": ", address.status().message()));
      }
      co_return address.status();
    }
    if (absl::Status checked = CheckRendezvousSocket(address->socket_path); !checked.ok()) {
      co_return absl::Status(checked.code(), absl::StrCat(what, ": ", checked.message()));
    }
    absl::StatusOr<stream_protocol::socket> connected = co_await internal::ConnectUnix(
        executor_, stream_protocol::endpoint(address->socket_path), what);
    if (!connected.ok()) co_return connected.status();
    stream_protocol::socket socket = *std::move(connected);
    std::optional<PeerCredentials> server = internal::ReadPeerCredentials(socket.native_handle());
    if (!server || (server->uid != ::geteuid() && server->uid != 0)) {
      co_return absl::PermissionDeniedError(
          absl::StrCat(what, ": the server runs as another user"));
    }
    std::array<std::byte, 16> hello = Encode(ClientHello{
        .requested_ring_capacity = static_cast<uint32_t>(address->ring_capacity.value_or(0))});
    absl::StatusOr<size_t> sent = SendWithFds(socket.native_handle(), hello, {});
    if (!sent.ok())
      co_return absl::UnavailableError(absl::StrCat(what, ": ", sent.status().message()));
    if (*sent != hello.size())
      co_return absl::UnavailableError(absl::StrCat(what, ": server not reading"));

    const Clock::time_point deadline = Clock::now() + kHandshakeTimeout * 2;
    std::array<std::byte, 16> reply{};
    for (;;) {
      absl::StatusOr<Received> got = ReceiveWithFds(socket.native_handle(), reply, 3);
      if (!got.ok())
        co_return absl::UnavailableError(absl::StrCat(what, ": ", got.status().message()));
      if (got->would_block) {
        if (!co_await WaitReadable(socket, deadline)) {
          co_return absl::UnavailableError(absl::StrCat(what, ": the server did not answer"));
        }
        continue;
      }
      if (got->eof) {
        co_return absl::UnavailableError(
            absl::StrCat(what, ": the server refused the connection (busy or not ours)"));
      }
      if (got->fds_truncated || got->fds.size() != 3 || got->bytes != reply.size()) {
        co_return absl::PermissionDeniedError(
            absl::StrCat(what, ": the server's handshake is not what shm:// sends"));
      }
      absl::StatusOr<ServerHello> server_hello = DecodeServerHello(reply);
      if (!server_hello.ok()) {
        co_return absl::Status(server_hello.status().code(),
                               absl::StrCat(what, ": ", server_hello.status().message()));
      }
      const size_t capacity = server_hello->ring_capacity;
      if (!IsValidRingCapacity(capacity) ||
          (address->ring_capacity && capacity > *address->ring_capacity)) {
        co_return absl::PermissionDeniedError(
            absl::StrCat(what, ": the server chose a ring size of ", capacity));
      }
      absl::StatusOr<Segment> segment = Segment::Adopt(
          std::move(got->fds[0]), std::move(got->fds[1]), std::move(got->fds[2]), capacity);
      if (!segment.ok()) {
        co_return absl::Status(segment.status().code(),
                               absl::StrCat(what, ": ", segment.status().message()));
      }
      co_return MakeConnection(executor_, *std::move(segment), /*is_server=*/false,
                               std::move(socket), address->spin);
    }
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    const std::string what = absl::StrCat("shm listen ", at.address);
    absl::StatusOr<ShmAddress> address = ParseAddress(at.address, /*create_directory=*/true);
    if (!address.ok()) return address.status();
    stream_protocol::acceptor acceptor(executor_);
    absl::StatusOr<std::optional<internal::FileId>> file =
        internal::ListenUnix(acceptor, stream_protocol::endpoint(address->socket_path),
                             &address->socket_path, /*mode=*/0600, what);
    if (!file.ok()) return file.status();
    if (!*file) return absl::InternalError(absl::StrCat(what, ": no socket file"));
    std::string name = address->name;
    return std::make_unique<ShmListener>(
        std::move(acceptor), Endpoint{"shm", std::move(name)}, address->socket_path, **file,
        address->ring_capacity.value_or(kDefaultRingCapacity), address->spin);
  }

 private:
  asio::any_io_executor executor_;
};

uint32_t ProcessSalt() {
  uint32_t salt = 0;
  if (::getrandom(&salt, sizeof(salt), GRND_NONBLOCK) != sizeof(salt)) {
    salt = static_cast<uint32_t>(Clock::now().time_since_epoch().count());
  }
  return salt;
}

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  return std::make_unique<ShmTransport>(std::move(executor));
}

Endpoint LoopbackEndpoint() {
  static std::atomic<uint64_t> counter{0};
  static const uint32_t salt = ProcessSalt();
  return Endpoint{"shm", absl::StrFormat("courier-%d-%d-%08x", ::getpid(),
                                         counter.fetch_add(1, std::memory_order_relaxed), salt)};
}

}  // namespace courier::transport::shm
