#include "transport/udp/udp_transport.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "asio/associated_cancellation_slot.hpp"
#include "asio/async_result.hpp"
#include "asio/error.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/ip/udp.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "transport/internal/fd.h"
#include "transport/internal/socket_connection.h"
#include "transport/status.h"
#include "transport/udp/arq.h"
#include "transport/udp/udp_wire.h"

namespace courier::transport::udp {
namespace {

using asio::ip::udp;
using std::chrono::milliseconds;

constexpr size_t kMaxPending = 64;        // connections waiting for Accept
constexpr milliseconds kProbeAfter{250};  // silence before the first PROBE
constexpr milliseconds kMaxProbeInterval{1000};
constexpr int kSocketBuffer = 4 << 20;  // SO_RCVBUF/SO_SNDBUF asked for
constexpr size_t kReceiveBuffer = 65536;

struct Config {
  size_t dgram = 0;  // whole datagram; 0: the family's maximum
  size_t window = 1 << 20;
  milliseconds dead_after{3000};
  size_t max_connections = 1024;
  // The largest RPC message (Traits::max_message): the rpc layer refuses larger ones before
  // sending, and the receiver's frame decoder never reassembles more.
  size_t max_message = size_t{1} << 20;
};

struct Address {
  std::string host, port, query;
  Config config;
};

absl::Status BadAddress(std::string_view address, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("udp address '", AsAbsl(address), "': ", AsAbsl(problem)));
}

std::optional<size_t> ParseSize(absl::string_view text) {
  uint64_t unit = 1;
  if (!text.empty() && (text.back() == 'k' || text.back() == 'K')) unit = 1024;
  if (!text.empty() && (text.back() == 'm' || text.back() == 'M')) unit = 1024 * 1024;
  if (unit != 1) text.remove_suffix(1);
  uint64_t value = 0;
  if (!absl::SimpleAtoi(text, &value) || value > (uint64_t{1} << 32) / unit) return std::nullopt;
  return static_cast<size_t>(value * unit);
}

absl::StatusOr<Address> ParseAddress(std::string_view address) {
  std::string_view host_port = address, query;
  if (size_t q = address.find('?'); q != std::string_view::npos) {
    host_port = address.substr(0, q);
    query = address.substr(q + 1);
  }
  absl::StatusOr<HostPort> split = SplitHostPort(host_port);
  if (!split.ok()) return split.status();
  Address out{split->host, split->port, std::string(query), {}};
  for (absl::string_view option : absl::StrSplit(AsAbsl(query), '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(option, '=');
    std::optional<size_t> n = ParseSize(kv.second);
    if (kv.first == "dgram" && n && *n >= 576 && *n <= kMaxUdpPayloadV6) {
      out.config.dgram = *n;
    } else if (kv.first == "window" && n && *n >= 64 * 1024 && *n <= (1u << 30)) {
      out.config.window = *n;
    } else if (kv.first == "dead_after_ms" && n && *n >= 10 && *n <= 3'600'000) {
      out.config.dead_after = milliseconds(*n);
    } else if (kv.first == "max_connections" && n && *n >= 1 && *n <= 1'000'000) {
      out.config.max_connections = *n;
    } else if (kv.first == "max_message" && n && *n >= 1024 && *n <= (1u << 30)) {
      out.config.max_message = *n;
    } else {
      return BadAddress(address, absl::StrCat("bad option '", option,
                                              "' (known: dgram=576..65527, window=64k..1g, "
                                              "dead_after_ms, max_connections, max_message)"));
    }
  }
  return out;
}

size_t PayloadFor(const Config& config, bool v6) {
  size_t limit = v6 ? kMaxUdpPayloadV6 : kMaxUdpPayloadV4;
  return std::min(config.dgram == 0 ? limit : config.dgram, limit) - kHeaderSize;
}

std::string HostPortOf(const udp::endpoint& endpoint) {
  asio::ip::address address = endpoint.address();
  if (address.is_v6() && address.to_v6().is_v4_mapped()) {
    address = asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  }
  return address.is_v6() ? absl::StrCat("[", address.to_string(), "]:", endpoint.port())
                         : absl::StrCat(address.to_string(), ":", endpoint.port());
}

uint64_t Random64() {
  uint64_t value = 0;
  arc4random_buf(&value, sizeof(value));
  return value;
}

void SetBuffers(int fd) {
  for (int option : {SO_RCVBUFFORCE, SO_SNDBUFFORCE}) {
    if (::setsockopt(fd, SOL_SOCKET, option, &kSocketBuffer, sizeof(kSocketBuffer)) != 0) {
      int fallback = option == SO_RCVBUFFORCE ? SO_RCVBUF : SO_SNDBUF;
      ::setsockopt(fd, SOL_SOCKET, fallback, &kSocketBuffer, sizeof(kSocketBuffer));
    }
  }
}

// One datagram: header, then `payload`. 0 or the errno (EAGAIN: dropped, the timer recovers).
int SendDatagram(int fd, const Header& header, std::string_view payload,
                 const udp::endpoint* to = nullptr) {
  std::array<std::byte, kHeaderSize> bytes;
  EncodeHeader(header, bytes);
  iovec iov[2] = {{bytes.data(), kHeaderSize}, {const_cast<char*>(payload.data()), payload.size()}};
  msghdr msg{};
  if (to != nullptr) {
    msg.msg_name = const_cast<sockaddr*>(to->data());
    msg.msg_namelen = static_cast<socklen_t>(to->size());
  }
  msg.msg_iov = iov;
  msg.msg_iovlen = payload.empty() ? 1 : 2;
  for (;;) {
    if (::sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) return 0;
    if (errno != EINTR) return errno;
  }
}

// What the listener shares with its connections (which may run on other threads).
struct ListenerShared {
  uint64_t key[2] = {Random64(), Random64()};
  uint64_t incarnation = Random64();
  std::atomic<uint64_t> open{0};

  uint64_t Cookie(const udp::endpoint& peer, uint64_t session) const {
    std::array<std::byte, 26> data{};
    asio::ip::address_v6 v6 =
        peer.address().is_v6()
            ? peer.address().to_v6()
            : asio::ip::make_address_v6(asio::ip::v4_mapped, peer.address().to_v4());
    std::memcpy(data.data(), v6.to_bytes().data(), 16);
    uint16_t port = peer.port();
    std::memcpy(data.data() + 16, &port, 2);
    std::memcpy(data.data() + 18, &session, 8);
    return SipHash24(key, data);
  }
};

// One connection's protocol state, shared with its in-flight handlers (receive, timer, posted
// completions) so that they can run after the UdpConnection that owns it is gone. Everything
// runs on the socket's executor.
// FinishedConnectionTotals(): what every destroyed connection of this process counted.
struct Totals {
  std::atomic<uint64_t> datagrams_sent{0}, datagrams_received{0}, retransmits{0}, duplicates{0},
      out_of_window{0};
};
Totals& ProcessTotals() {
  static Totals totals;
  return totals;
}

class Core : public std::enable_shared_from_this<Core> {
 public:
  using ReadHandler = Connection::ReadHandler;
  using WriteHandler = Connection::WriteHandler;

  ~Core() {
    const ConnectionStats s = stats();
    Totals& totals = ProcessTotals();
    totals.datagrams_sent += s.datagrams_sent;
    totals.datagrams_received += s.datagrams_received;
    totals.retransmits += s.retransmits;
    totals.duplicates += s.duplicates;
    totals.out_of_window += s.out_of_window;
  }

  Core(udp::socket socket, const Config& config, uint64_t session, uint64_t incarnation,
       std::string peer, std::shared_ptr<ListenerShared> listener)
      : socket_(std::move(socket)),
        executor_(socket_.get_executor()),
        timer_(executor_),
        config_(config),
        session_(session),
        incarnation_(incarnation),
        peer_(std::move(peer)),
        listener_(std::move(listener)),
        payload_(PayloadFor(config, IsV6())),
        sender_(SenderOptions{.max_payload = payload_,
                              .buffer_limit = config.window,
                              .initial_peer_window = config.window}),
        receiver_(config.window),
        buffer_(kReceiveBuffer) {}

  void Start() {
    last_heard_ = Clock::now();
    next_probe_ = last_heard_ + kProbeAfter;
    if (listener_) listener_->open.fetch_add(1);
    Receive();
    ArmTimer();
  }

  void AsyncRead(asio::mutable_buffer into, ReadHandler done) {
    if (closed_) return PostRead(std::move(done), Cancelled("read"));
    if (into.size() == 0) return PostRead(std::move(done), size_t{0});
    read_into_ = into;
    read_done_ = std::move(done);
    DeliverRead();
  }

  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) {
    if (closed_) return PostWrite(std::move(done), Cancelled("write"));
    if (failed_) return PostWrite(std::move(done), *failed_);
    write_data_.assign(data.begin(), data.end());
    write_bytes_ = asio::buffer_size(data);
    write_done_ = std::move(done);
    AcceptWrite();
  }

  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) {
    if (closed_) return Cancelled("write");
    if (failed_) return *failed_;
    size_t bytes = asio::buffer_size(data);
    if (write_done_ || !sender_.CanAccept(bytes)) return size_t{0};
    sender_.Push(data);
    Pump(Clock::now());
    return bytes;
  }

  void CancelRead() {
    if (read_done_) PostRead(std::exchange(read_done_, nullptr), Cancelled("read"));
  }
  void CancelWrite() {
    if (write_done_) PostWrite(std::exchange(write_done_, nullptr), Cancelled("write"));
  }

  // Cancels what is pending; then FIN after the buffered data, lingering until it is acked.
  void Close() {
    if (closed_) return;
    closed_ = true;
    CancelRead();
    CancelWrite();
    if (finished_) return;
    sender_.PushFin();
    linger_until_ = Clock::now() + config_.dead_after;
    Pump(Clock::now());
  }

  Traits traits() const {
    return Traits{.message_boundaries = false,
                  .reliable = true,
                  .max_message = config_.max_message,
                  .duplex = true,
                  .reach = Reach::kNetwork};
  }
  PeerInfo peer() const { return PeerInfo{.address = absl::StrCat("udp://", peer_)}; }
  asio::any_io_executor executor() const { return executor_; }
  ConnectionStats stats() const {
    ConnectionStats s = stats_;
    s.retransmits = sender_.retransmits();
    return s;
  }

 private:
  // Whether datagrams to the peer travel as IPv6: an IPv4 client of a dual-stack listener (an
  // IPv4-mapped peer) gets IPv4's smaller datagram limit.
  bool IsV6() const {
    asio::error_code ec;
    const asio::ip::address peer = socket_.remote_endpoint(ec).address();
    if (!ec) return peer.is_v6() && !peer.to_v6().is_v4_mapped();
    return socket_.local_endpoint(ec).address().is_v6();
  }
  static absl::Status Cancelled(const char* op) {
    return absl::CancelledError(absl::StrCat("udp ", op, ": cancelled"));
  }
  void PostRead(ReadHandler done, absl::StatusOr<size_t> result) {
    asio::post(executor_, [self = shared_from_this(), done = std::move(done),
                           result = std::move(result)]() mutable {
      if (self->closed_ && result.ok()) result = Cancelled("read");
      done(std::move(result));
    });
  }
  void PostWrite(WriteHandler done, absl::Status result) {
    asio::post(executor_, [self = shared_from_this(), done = std::move(done),
                           result = std::move(result)]() mutable {
      if (self->closed_ && result.ok()) result = Cancelled("write");
      done(std::move(result));
    });
  }

  void DeliverRead() {
    if (!read_done_) return;
    if (receiver_.readable() > 0) {
      size_t n = receiver_.Read(
          std::span<std::byte>(static_cast<std::byte*>(read_into_.data()), read_into_.size()));
      PostRead(std::exchange(read_done_, nullptr), n);
      // Tell a sender that waits for window that it has some again.
      if (!finished_ && last_window_sent_ < config_.window / 2 &&
          receiver_.window() >= config_.window / 2) {
        SendControl(Type::kAck);
      }
    } else if (receiver_.fin_received()) {
      PostRead(std::exchange(read_done_, nullptr), size_t{0});
    } else if (failed_) {
      PostRead(std::exchange(read_done_, nullptr), *failed_);
    }
  }

  // Takes the pending Write a datagram at a time while the send buffer has room (so a Write
  // larger than the window waits for acks), and completes it once all of it is buffered.
  void AcceptWrite() {
    if (!write_done_ || failed_) return;
    bool pushed = false;
    while (write_bytes_ > 0) {
      const size_t chunk = std::min(write_bytes_, payload_);
      if (!sender_.CanAccept(chunk)) break;
      std::vector<asio::const_buffer> parts;
      for (size_t need = chunk, i = 0; need > 0; ++i) {
        size_t take = std::min(need, write_data_[i].size());
        parts.emplace_back(write_data_[i].data(), take);
        need -= take;
      }
      sender_.Push(parts);
      SkipWritten(write_data_, chunk);
      write_bytes_ -= chunk;
      pushed = true;
    }
    if (write_bytes_ == 0) PostWrite(std::exchange(write_done_, nullptr), absl::OkStatus());
    if (pushed) Pump(Clock::now());
  }

  Header MakeHeader(Type type) {
    Header h{.type = type,
             .session = session_,
             .incarnation = incarnation_,
             .ack = receiver_.ack(),
             .window = receiver_.window(),
             .aux = receiver_.sack()};
    last_window_sent_ = h.window;
    need_ack_ = false;
    return h;
  }

  void Send(const Header& h, std::string_view payload) {
    if (finished_) return;
    ++stats_.datagrams_sent;
    int error = SendDatagram(socket_.native_handle(), h, payload);
    if (error == ECONNREFUSED) {
      Fail(absl::UnavailableError(absl::StrCat("udp peer ", peer_, ": connection refused")));
    }
  }
  void SendControl(Type type) { Send(MakeHeader(type), {}); }

  void Pump(Clock::time_point now) {
    if (finished_) return;
    for (const Sender::Segment* s : sender_.Collect(now)) {
      Header h = MakeHeader(s->fin ? Type::kFin : Type::kData);
      h.seq = static_cast<uint32_t>(s->seq);
      Send(h, s->payload);
      if (finished_) return;
    }
    ArmTimer();
  }

  void Receive() {
    socket_.async_receive(
        asio::buffer(buffer_),
        [self = shared_from_this()](asio::error_code ec, size_t n) { self->OnReceived(ec, n); });
  }

  void OnReceived(asio::error_code ec, size_t n) {
    if (finished_) return;
    const Clock::time_point now = Clock::now();
    // One datagram from the wait, then what else is queued (the wait speculates, so nothing
    // that arrives in between is missed).
    for (;;) {
      if (ec == asio::error::operation_aborted) return;
      if (ec) {
        return Fail(
            ec == asio::error::connection_refused
                ? absl::UnavailableError(absl::StrCat("udp peer ", peer_, ": connection refused"))
                : ToStatus(ec, absl::StrCat("udp read from ", peer_)));
      }
      ++stats_.datagrams_received;
      absl::StatusOr<Datagram> d = DecodeDatagram(std::span<const std::byte>(buffer_.data(), n));
      if (d.ok()) Handle(*d, now);
      if (finished_) return;
      ssize_t got = ::recv(socket_.native_handle(), buffer_.data(), buffer_.size(), MSG_DONTWAIT);
      if (got < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        if (errno == EINTR) continue;
        ec = asio::error_code(errno, asio::system_category());
        continue;
      }
      n = static_cast<size_t>(got);
    }
    DeliverRead();
    AcceptWrite();
    Pump(now);
    if (need_ack_) SendControl(Type::kAck);
    if (closed_ && sender_.fin_acked()) return Finish();
    if (!finished_) Receive();
  }

  void Handle(const Datagram& d, Clock::time_point now) {
    const Header& h = d.header;
    if (h.session != session_) return;  // another client's, or stray: drop
    if (h.incarnation != incarnation_) {
      if (h.type == Type::kReset && !listener_) {
        Fail(absl::UnavailableError(absl::StrCat(
            "udp peer ", peer_, ": server restarted (incarnation ", absl::Hex(h.incarnation),
            ", connected to ", absl::Hex(incarnation_), ")")));
      }
      return;
    }
    last_heard_ = now;
    probes_ = 0;
    next_probe_ = now + kProbeAfter;
    switch (h.type) {
      case Type::kData:
      case Type::kFin: {
        sender_.OnAck(h.ack, h.aux, h.window, now);
        Receiver::Result r = receiver_.OnData(h.seq, d.payload, h.type == Type::kFin);
        if (closed_ && r == Receiver::Result::kAccepted && h.type == Type::kData) {
          // Data for a connection we closed: tell the peer, as TCP's RST would.
          SendControl(Type::kReset);
          return Finish();
        }
        if (r == Receiver::Result::kDuplicate) ++stats_.duplicates;
        if (r == Receiver::Result::kOutOfWindow || r == Receiver::Result::kNoRoom) {
          ++stats_.out_of_window;
        }
        need_ack_ = true;
        break;
      }
      case Type::kAck:
        sender_.OnAck(h.ack, h.aux, h.window, now);
        break;
      case Type::kProbe:
        sender_.OnAck(h.ack, h.aux, h.window, now);
        need_ack_ = true;
        break;
      case Type::kReset:
        if (closed_) return Finish();
        return Fail(absl::UnavailableError(
            absl::StrCat("udp peer ", peer_, " reset the connection (it no longer knows it)")));
      case Type::kOpen:  // our OPEN_ACK was lost
        if (listener_)
          Send(Header{.type = Type::kOpenAck, .session = session_, .incarnation = incarnation_},
               {});
        break;
      default:
        break;
    }
  }

  bool WantProbe() const { return !listener_ || !sender_.idle(); }

  void ArmTimer() {
    if (finished_) return;
    Clock::time_point at = last_heard_ + config_.dead_after;
    if (std::optional<Clock::time_point> rto = sender_.NextTimeout()) at = std::min(at, *rto);
    if (WantProbe()) at = std::min(at, next_probe_);
    if (closed_) at = std::min(at, linger_until_);
    if (timer_armed_ && timer_at_ <= at) return;
    timer_armed_ = true;
    timer_at_ = at;
    timer_.expires_at(at);
    timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (ec == asio::error::operation_aborted) return;
      self->timer_armed_ = false;
      self->Tick();
    });
  }

  void Tick() {
    if (finished_) return;
    const Clock::time_point now = Clock::now();
    if (now - last_heard_ >= config_.dead_after) {
      if (closed_) return Finish();
      return Fail(absl::UnavailableError(
          absl::StrCat("udp peer ", peer_, " silent for ",
                       std::chrono::duration<double>(config_.dead_after).count(), " s")));
    }
    if (closed_ && now >= linger_until_) return Finish();
    if (WantProbe() && now >= next_probe_) {
      SendControl(Type::kProbe);
      if (finished_) return;
      next_probe_ = now + std::min<Clock::duration>(kProbeAfter * (1 << std::min(probes_, 4)),
                                                    kMaxProbeInterval);
      ++probes_;
    }
    Pump(now);
  }

  // The connection has failed: pending writes get `status`; reads first drain what arrived.
  void Fail(absl::Status status) {
    if (finished_) return;
    failed_ = std::move(status);
    if (write_done_) PostWrite(std::exchange(write_done_, nullptr), *failed_);
    Finish();
    DeliverRead();
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    if (!failed_) failed_ = absl::UnavailableError(absl::StrCat("udp peer ", peer_, ": closed"));
    asio::error_code ignored;
    socket_.close(ignored);
    timer_.cancel();
    if (listener_) listener_->open.fetch_sub(1);
  }

  udp::socket socket_;
  asio::any_io_executor executor_;
  asio::steady_timer timer_;
  Config config_;
  uint64_t session_, incarnation_;
  std::string peer_;
  std::shared_ptr<ListenerShared> listener_;  // null on the client
  size_t payload_;                            // bytes per DATA datagram
  Sender sender_;
  Receiver receiver_;
  std::vector<std::byte> buffer_;

  asio::mutable_buffer read_into_;
  ReadHandler read_done_;
  std::vector<asio::const_buffer> write_data_;
  size_t write_bytes_ = 0;
  WriteHandler write_done_;

  Clock::time_point last_heard_{}, next_probe_{}, linger_until_{}, timer_at_{};
  int probes_ = 0;
  bool timer_armed_ = false;
  bool need_ack_ = false;
  uint32_t last_window_sent_ = 0;
  bool closed_ = false;
  bool finished_ = false;
  std::optional<absl::Status> failed_;
  ConnectionStats stats_;
};

class UdpConnection final : public Connection {
 public:
  explicit UdpConnection(std::shared_ptr<Core> core) : core_(std::move(core)) {}
  ~UdpConnection() override { core_->Close(); }

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
  Traits traits() const override { return core_->traits(); }
  PeerInfo peer() const override { return core_->peer(); }
  asio::any_io_executor executor() const override { return core_->executor(); }
  ConnectionStats stats() const { return core_->stats(); }

  // Named initiation locals (GCC 12 co_await temporaries, see shm_transport.cc).
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

// A connection the listener created on a valid OPEN, waiting for Accept.
struct Pending {
  internal::UniqueFd fd;  // bound to the listener's address, connected to the client
  udp::endpoint peer;
  uint64_t session = 0;
};

// What the listener shares with its receive loop.
struct ListenerState {
  ListenerState(udp::socket s, Config c, udp::endpoint b)
      : socket(std::move(s)),
        signal(socket.get_executor(), Clock::time_point::max()),
        config(c),
        bound(b),
        buffer(kReceiveBuffer) {}
  udp::socket socket;
  asio::steady_timer signal;  // cancelled when a connection is ready or the listener closes
  Config config;
  udp::endpoint bound;
  std::shared_ptr<ListenerShared> shared = std::make_shared<ListenerShared>();
  std::deque<Pending> pending;
  std::vector<std::byte> buffer;
  udp::endpoint from;
  ListenerStats stats;
  bool receiving = false;
  bool closed = false;
};

// A socket bound to the listener's address (SO_REUSEPORT) and connected to `peer`: the kernel
// prefers it over the listener's for that peer's datagrams.
absl::StatusOr<internal::UniqueFd> ConnectedSocket(const udp::endpoint& bound,
                                                   const udp::endpoint& peer) {
  internal::UniqueFd fd(
      ::socket(bound.protocol().family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) return ErrnoStatus(errno, "udp accept: socket");
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  SetBuffers(fd.get());
  if (::bind(fd.get(), bound.data(), static_cast<socklen_t>(bound.size())) != 0) {
    return ErrnoStatus(errno, "udp accept: bind");
  }
  if (::connect(fd.get(), peer.data(), static_cast<socklen_t>(peer.size())) != 0) {
    return ErrnoStatus(errno, "udp accept: connect");
  }
  return fd;
}

void HandleAtListener(ListenerState& state, const udp::endpoint& from, const Datagram& d) {
  const Header& h = d.header;
  ListenerShared& shared = *state.shared;
  auto reply = [&](Type type, uint64_t aux, int fd) {
    Header out{.type = type, .session = h.session, .incarnation = shared.incarnation, .aux = aux};
    SendDatagram(fd, out, {}, fd == state.socket.native_handle() ? &from : nullptr);
  };
  switch (h.type) {
    case Type::kHello:
      ++state.stats.cookies_sent;
      return reply(Type::kCookie, shared.Cookie(from, h.session), state.socket.native_handle());
    case Type::kOpen: {
      if (h.incarnation != shared.incarnation) return void(++state.stats.dropped_stale);
      if (h.aux != shared.Cookie(from, h.session)) return void(++state.stats.dropped_bad_cookie);
      for (const Pending& p : state.pending) {
        if (p.peer == from && p.session == h.session) {
          return reply(Type::kOpenAck, 0, state.socket.native_handle());
        }
      }
      if (state.closed || state.pending.size() >= kMaxPending ||
          state.pending.size() + shared.open.load() >= state.config.max_connections) {
        return void(++state.stats.dropped_over_limit);
      }
      absl::StatusOr<internal::UniqueFd> fd = ConnectedSocket(state.bound, from);
      if (!fd.ok()) return void(++state.stats.dropped_over_limit);
      reply(Type::kOpenAck, 0, fd->get());
      ++state.stats.opened;
      state.pending.push_back(Pending{*std::move(fd), from, h.session});
      state.signal.cancel();
      return;
    }
    case Type::kData:
    case Type::kProbe:
    case Type::kFin:
      ++state.stats.dropped_unknown;
      ++state.stats.resets_sent;
      return reply(Type::kReset, 0, state.socket.native_handle());
    default:
      ++state.stats.dropped_unknown;
      return;
  }
}

void ListenerReceive(std::shared_ptr<ListenerState> state) {
  ListenerState& s = *state;
  s.socket.async_receive_from(
      asio::buffer(s.buffer), s.from,
      [state = std::move(state)](asio::error_code ec, size_t n) mutable {
        ListenerState& s = *state;
        for (;;) {
          if (s.closed || ec == asio::error::operation_aborted) return;
          if (!ec) {
            ++s.stats.datagrams;
            absl::StatusOr<Datagram> d =
                DecodeDatagram(std::span<const std::byte>(s.buffer.data(), n));
            if (d.ok()) {
              HandleAtListener(s, s.from, *d);
            } else {
              ++s.stats.dropped_malformed;
            }
          }
          sockaddr_storage from{};
          socklen_t length = sizeof(from);
          ssize_t got = ::recvfrom(s.socket.native_handle(), s.buffer.data(), s.buffer.size(),
                                   MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &length);
          if (got < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            ec = asio::error_code(errno, asio::system_category());  // e.g. a stale ICMP error
            continue;
          }
          ec = {};
          n = static_cast<size_t>(got);
          std::memcpy(s.from.data(), &from, std::min<size_t>(length, sizeof(sockaddr_storage)));
          s.from.resize(length);
        }
        ListenerReceive(std::move(state));
      });
}

class UdpListener final : public Listener {
 public:
  UdpListener(std::shared_ptr<ListenerState> state, Endpoint local)
      : state_(std::move(state)), local_(std::move(local)) {}
  ~UdpListener() override { Close(); }

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    std::shared_ptr<ListenerState> state = state_;
    const absl::Status cancelled =
        absl::CancelledError(absl::StrCat("udp accept on ", local_.address, ": cancelled"));
    // Handshakes are answered from the first Accept on (as shm's accept loop starts): a listener
    // nobody accepts from leaves no work on its executor.
    if (!state->receiving && !state->closed) {
      state->receiving = true;
      ListenerReceive(state);
    }
    for (;;) {
      if (state->closed) co_return cancelled;
      if (!state->pending.empty()) {
        Pending next = std::move(state->pending.front());
        state->pending.pop_front();
        udp::socket socket(connection_executor);
        asio::error_code ec;
        socket.assign(state->bound.protocol(), next.fd.get(), ec);
        if (ec) continue;
        next.fd.release();
        auto core = std::make_shared<Core>(std::move(socket), state->config, next.session,
                                           state->shared->incarnation, HostPortOf(next.peer),
                                           state->shared);
        core->Start();
        co_return std::unique_ptr<Connection>(std::make_unique<UdpConnection>(std::move(core)));
      }
      state->signal.expires_at(Clock::time_point::max());
      co_await state->signal.async_wait(use_nothrow);
    }
  }

  Endpoint local_endpoint() const override { return local_; }

  void Close() override {
    if (state_->closed) return;
    state_->closed = true;
    asio::error_code ignored;
    state_->socket.close(ignored);
    state_->pending.clear();
    state_->signal.cancel();
  }

  ListenerStats stats() const {
    ListenerStats s = state_->stats;
    s.pending = state_->pending.size();
    s.open = state_->shared->open.load();
    return s;
  }

 private:
  std::shared_ptr<ListenerState> state_;
  Endpoint local_;
};

absl::Status ListenError(int error, const std::string& what) {
  if (error == EADDRINUSE)
    return absl::AlreadyExistsError(absl::StrCat(what, ": ", strerror(error)));
  if (error == EADDRNOTAVAIL)
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", strerror(error)));
  return ErrnoStatus(error, what);
}

class UdpTransport final : public Transport {
 public:
  explicit UdpTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    std::string what = absl::StrCat("udp connect ", to.address);
    absl::StatusOr<Address> address = ParseAddress(to.address);
    if (!address.ok()) co_return Annotate(address.status(), "udp connect");
    udp::resolver resolver(executor_);
    auto [resolve_ec, results] = co_await resolver.async_resolve(
        address->host, address->port, udp::resolver::numeric_service, use_nothrow);
    if (resolve_ec) co_return ToStatus(resolve_ec, what);
    absl::Status last = absl::UnavailableError(absl::StrCat(what, ": no address"));
    for (const auto& entry : results) {
      absl::StatusOr<std::unique_ptr<Connection>> connection =
          co_await Dial(entry.endpoint(), address->config, what);
      if (connection.ok()) co_return connection;
      last = connection.status();
      if (last.code() == absl::StatusCode::kCancelled) break;
    }
    co_return last;
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    std::string what = absl::StrCat("udp listen ", at.address);
    absl::StatusOr<Address> address = ParseAddress(at.address);
    if (!address.ok()) return Annotate(address.status(), "udp listen");
    udp::resolver resolver(executor_);
    asio::error_code ec;
    udp::resolver::results_type results = resolver.resolve(
        address->host, address->port, udp::resolver::passive | udp::resolver::numeric_service, ec);
    if (ec) {
      if (ec == asio::error::host_not_found) {
        return absl::InvalidArgumentError(absl::StrCat(what, ": ", ec.message()));
      }
      return ToStatus(ec, what);
    }
    std::optional<absl::Status> first_error;
    for (const auto& entry : results) {
      absl::StatusOr<std::unique_ptr<Listener>> listener = Bind(entry.endpoint(), *address, what);
      if (listener.ok()) return listener;
      if (!first_error) first_error = listener.status();
    }
    if (!first_error) return absl::UnavailableError(absl::StrCat(what, ": no address"));
    return *first_error;
  }

 private:
  // Binds without SO_REUSEPORT first, so that a port in use (by anyone) is kAlreadyExists and
  // port 0 picks a free one; then the listening socket, with SO_REUSEPORT for the per-connection
  // sockets, on that port.
  absl::StatusOr<std::unique_ptr<Listener>> Bind(udp::endpoint at, const Address& address,
                                                 const std::string& what) {
    int last_error = 0;
    for (int attempt = 0; attempt < 8; ++attempt) {
      udp::endpoint chosen = at;
      {
        internal::UniqueFd probe(::socket(at.protocol().family(), SOCK_DGRAM | SOCK_CLOEXEC, 0));
        if (probe.get() < 0) return ErrnoStatus(errno, what);
        if (::bind(probe.get(), at.data(), static_cast<socklen_t>(at.size())) != 0) {
          return ListenError(errno, what);
        }
        socklen_t length = static_cast<socklen_t>(chosen.capacity());
        ::getsockname(probe.get(), chosen.data(), &length);
      }
      udp::socket socket(executor_);
      asio::error_code ec;
      if (socket.open(at.protocol(), ec); ec) return ToStatus(ec, what);
      internal::SetCloseOnExec(socket.native_handle());
      int one = 1;
      ::setsockopt(socket.native_handle(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
      SetBuffers(socket.native_handle());
      socket.non_blocking(true, ec);
      if (socket.bind(chosen, ec); ec) {
        last_error = ec.value();
        if (at.port() == 0 && ec == asio::error::address_in_use) continue;  // lost a race
        return ListenError(ec.value(), what);
      }
      udp::endpoint bound = socket.local_endpoint(ec);
      Endpoint local{"udp", HostPortOf(bound)};
      if (!address.query.empty()) absl::StrAppend(&local.address, "?", address.query);
      auto state = std::make_shared<ListenerState>(std::move(socket), address.config, bound);
      return std::unique_ptr<Listener>(std::make_unique<UdpListener>(std::move(state), local));
    }
    return ListenError(last_error, what);
  }

  // The handshake: HELLO until a COOKIE, then OPEN until an OPEN_ACK, each resent with a
  // doubling timeout; `dead_after` in all.
  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Dial(udp::endpoint to, Config config,
                                                                    std::string what) {
    using namespace asio::experimental::awaitable_operators;
    udp::socket socket(executor_);
    asio::error_code ec;
    if (socket.open(to.protocol(), ec); ec) co_return ToStatus(ec, what);
    internal::SetCloseOnExec(socket.native_handle());
    SetBuffers(socket.native_handle());
    socket.non_blocking(true, ec);
    if (socket.connect(to, ec); ec) co_return ToStatus(ec, what);
    const uint64_t session = Random64();
    uint64_t incarnation = 0, cookie = 0;
    const Clock::time_point deadline = Clock::now() + config.dead_after;
    std::vector<std::byte> buffer(kReceiveBuffer);
    asio::steady_timer timer(executor_);
    for (Type ask : {Type::kHello, Type::kOpen}) {
      const Type want = ask == Type::kHello ? Type::kCookie : Type::kOpenAck;
      Clock::duration rto = milliseconds(20);
      bool done = false;
      while (!done) {
        if (Clock::now() >= deadline) {
          co_return absl::UnavailableError(
              absl::StrCat(what, ": no answer in ",
                           std::chrono::duration<double>(config.dead_after).count(), " s"));
        }
        Header h{.type = ask, .session = session, .incarnation = incarnation, .aux = cookie};
        int error = SendDatagram(socket.native_handle(), h, {});
        if (error == ECONNREFUSED) {
          co_return absl::UnavailableError(absl::StrCat(what, ": connection refused"));
        }
        timer.expires_at(std::min(Clock::now() + rto, deadline));
        rto = std::min<Clock::duration>(rto * 2, milliseconds(1000));
        for (;;) {
          auto result = co_await (socket.async_receive(asio::buffer(buffer), use_nothrow) ||
                                  timer.async_wait(use_nothrow));
          if (result.index() != 0) break;  // resend
          auto [receive_ec, n] = std::get<0>(result);
          if (receive_ec == asio::error::connection_refused) {
            co_return absl::UnavailableError(absl::StrCat(what, ": connection refused"));
          }
          if (receive_ec == asio::error::operation_aborted) {
            co_return absl::CancelledError(absl::StrCat(what, ": cancelled"));
          }
          if (receive_ec) co_return ToStatus(receive_ec, what);
          absl::StatusOr<Datagram> d = DecodeDatagram(std::span<const std::byte>(buffer.data(), n));
          if (!d.ok() || d->header.session != session || d->header.type != want) continue;
          if (want == Type::kCookie) {
            incarnation = d->header.incarnation;
            cookie = d->header.aux;
          } else if (d->header.incarnation != incarnation) {
            continue;
          }
          done = true;
          break;
        }
      }
    }
    auto core = std::make_shared<Core>(std::move(socket), config, session, incarnation,
                                       HostPortOf(to), nullptr);
    core->Start();
    co_return std::unique_ptr<Connection>(std::make_unique<UdpConnection>(std::move(core)));
  }

  asio::any_io_executor executor_;
};

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  return std::make_unique<UdpTransport>(std::move(executor));
}

Endpoint LoopbackEndpoint() { return Endpoint{"udp", "127.0.0.1:0"}; }

std::optional<ListenerStats> GetListenerStats(const Listener& listener) {
  const auto* udp_listener = dynamic_cast<const UdpListener*>(&listener);
  if (udp_listener == nullptr) return std::nullopt;
  return udp_listener->stats();
}

std::optional<ConnectionStats> GetConnectionStats(const Connection& connection) {
  const auto* udp_connection = dynamic_cast<const UdpConnection*>(&connection);
  if (udp_connection == nullptr) return std::nullopt;
  return udp_connection->stats();
}

ConnectionStats FinishedConnectionTotals() {
  const Totals& totals = ProcessTotals();
  return ConnectionStats{.datagrams_sent = totals.datagrams_sent.load(),
                         .datagrams_received = totals.datagrams_received.load(),
                         .retransmits = totals.retransmits.load(),
                         .duplicates = totals.duplicates.load(),
                         .out_of_window = totals.out_of_window.load()};
}

}  // namespace courier::transport::udp
