#include "tests/testing/fault_proxy.h"

#include <algorithm>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/socket_base.hpp"
#include "asio/steady_timer.hpp"
#include "transport/internal/fd_stream.h"
#include "transport/internal/socket_connection.h"
#include "transport/status.h"

namespace courier::testing {
namespace {

using Clock = std::chrono::steady_clock;
using transport::Connection;
using transport::use_nothrow;

int Index(Direction direction) { return static_cast<int>(direction); }

// One direction of one proxied connection.
struct Pump {
  explicit Pump(asio::any_io_executor executor) : wake(std::move(executor)) {}
  // Woken (cancelled) by Set() and by closing the link; waits for a stall to end or a delay.
  asio::steady_timer wake;
  std::vector<std::byte> buffer = std::vector<std::byte>(FaultProxy::kChunkSize);
  uint64_t forwarded = 0;    // on this connection
  uint64_t cut_base = 0;     // `forwarded` when the direction's fault was last set
  bool source_done = false;  // draining: its source reached end of stream or failed
};

// A connection accepted by the proxy and its own connection to the target.
struct Link {
  enum class Phase {
    kOpen,      // forwarding
    kDraining,  // closing cleanly: our side half-closed, reading and discarding until the peers
                // close (closing with unread bytes would make the kernel send a reset instead)
    kClosed,
  };
  // A peer that does not close within this after our end of stream is closed on anyway.
  static constexpr std::chrono::seconds kDrainTimeout{2};

  explicit Link(std::unique_ptr<Connection> accepted)
      : client(std::move(accepted)),
        pumps{Pump(client->executor()), Pump(client->executor())},
        drain_timer(client->executor()) {}
  Pump& pump(Direction direction) { return pumps[Index(direction)]; }
  Connection& from(Direction direction) {
    return direction == Direction::kClientToServer ? *client : *server;
  }
  Connection& to(Direction direction) {
    return direction == Direction::kClientToServer ? *server : *client;
  }
  bool open() const { return phase == Phase::kOpen; }

  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;  // null while dialling
  Pump pumps[2];
  asio::steady_timer drain_timer;
  Phase phase = Phase::kOpen;
};

using TcpConnection = transport::internal::SocketConnection<asio::ip::tcp>;
using UnixConnection = transport::internal::SocketConnection<asio::local::stream_protocol>;

// The stream-socket transports share one Connection class; its socket() accessor exists for
// tests and socket options, and is the only way to reach what Connection does not offer:
// half-close and abortive close.
template <typename F>
bool WithSocket(Connection& connection, F f) {
  if (auto* tcp = dynamic_cast<TcpConnection*>(&connection)) {
    f(tcp->socket());
    return true;
  }
  if (auto* uds = dynamic_cast<UnixConnection*>(&connection)) {
    f(uds->socket());
    return true;
  }
  return false;
}

// Sends end of stream but keeps reading; true if the transport can (otherwise it is Closed).
bool HalfClose(Connection& connection) {
  asio::error_code ignored;
  if (WithSocket(connection, [&](auto& socket) { socket.shutdown(socket.shutdown_send, ignored); }))
    return true;
  if (transport::internal::CloseWriteHalf(connection)) return true;
  connection.Close();
  return false;
}

// Closes without the orderly shutdown, so the peer sees what it would if this process died, and
// on TCP (SO_LINGER 0) a reset. Other transports get a plain Close().
void Abort(Connection& connection) {
  asio::error_code ignored;
  if (auto* tcp = dynamic_cast<TcpConnection*>(&connection)) {
    tcp->socket().set_option(asio::socket_base::linger(true, 0), ignored);
  }
  WithSocket(connection, [&](auto& socket) { socket.close(ignored); });
  connection.Close();  // marks it closed; pending operations end with kCancelled
}

}  // namespace

struct FaultProxy::State {
  asio::any_io_executor executor;
  std::unique_ptr<transport::Transport> transport;
  std::unique_ptr<transport::Listener> listener;
  Endpoint endpoint;
  Endpoint target;
  Fault faults[2];
  DirectionStats stats[2];
  std::vector<std::shared_ptr<Link>> links;  // open ones
  size_t accepted = 0;
  bool closed = false;

  const Fault& fault(Direction direction) const { return faults[Index(direction)]; }

  // Stops forwarding on `link`; idempotent. `abort`: reset both sides now. Otherwise each side
  // gets end of stream; the pumps then read and discard until the peers close (or
  // Link::kDrainTimeout passes), so no unread bytes turn our close into a reset.
  void CloseLink(const std::shared_ptr<Link>& link, bool abort) {
    if (link->phase == Link::Phase::kClosed) return;
    if (link->phase == Link::Phase::kOpen) std::erase(links, link);
    for (Pump& pump : link->pumps) pump.wake.cancel();
    if (abort || link->server == nullptr) {  // no pumps to drain while dialling
      CloseNow(*link, abort);
      return;
    }
    if (link->phase == Link::Phase::kDraining) return;
    link->phase = Link::Phase::kDraining;
    for (Direction direction : kBothDirections) {
      if (!HalfClose(link->from(direction))) link->pump(direction).source_done = true;
    }
    link->drain_timer.expires_after(Link::kDrainTimeout);
    link->drain_timer.async_wait([link](std::error_code ec) {
      if (!ec) CloseNow(*link, /*abort=*/false);
    });
  }

  // A failed Read or Write: the other peer is reset, unless we caused it (kCancelled).
  void CloseAfterError(const std::shared_ptr<Link>& link, const absl::Status& status) {
    CloseLink(link, /*abort=*/status.code() != absl::StatusCode::kCancelled);
  }

  // Draining: `direction`'s source is done; the link is closed once both are.
  static void SourceDone(Link& link, Direction direction) {
    link.pump(direction).source_done = true;
    link.from(direction).Close();
    if (link.pumps[0].source_done && link.pumps[1].source_done) CloseNow(link, /*abort=*/false);
  }

  static void CloseNow(Link& link, bool abort) {
    link.phase = Link::Phase::kClosed;
    link.drain_timer.cancel();
    for (Pump& pump : link.pumps) pump.wake.cancel();
    for (Connection* connection : {link.client.get(), link.server.get()}) {
      if (connection == nullptr) continue;
      if (abort) {
        Abort(*connection);
      } else {
        connection->Close();
      }
    }
  }
};

namespace {

using State = FaultProxy::State;

// Returns when `direction` is not stalled or the link no longer forwards.
asio::awaitable<void> WaitWhileStalled(State& state, Link& link, Direction direction) {
  Pump& pump = link.pump(direction);
  while (link.open() && state.fault(direction).stall) {
    pump.wake.expires_at(Clock::time_point::max());
    co_await pump.wake.async_wait(use_nothrow);
  }
}

// Writes `chunk` (read at `read_at`) under the direction's current fault, which may change while
// we wait. False when the link stopped forwarding (by us or by anyone else).
asio::awaitable<bool> Forward(std::shared_ptr<State> state, std::shared_ptr<Link> link,
                              Direction direction, std::span<const std::byte> chunk,
                              Clock::time_point read_at) {
  Pump& pump = link->pump(direction);
  DirectionStats& stats = state->stats[Index(direction)];
  size_t done = 0;
  while (done < chunk.size()) {
    co_await WaitWhileStalled(*state, *link, direction);
    if (!link->open()) co_return false;
    const Fault fault = state->fault(direction);
    if (fault.blackhole) {
      stats.bytes_discarded += chunk.size() - done;
      co_return true;
    }
    if (Clock::now() < read_at + fault.delay) {
      pump.wake.expires_at(read_at + fault.delay);
      co_await pump.wake.async_wait(use_nothrow);
      continue;  // the fault or the link may have changed meanwhile
    }
    size_t piece = chunk.size() - done;
    if (fault.slice > 0) piece = std::min(piece, fault.slice);
    if (fault.cut_after) {
      const uint64_t limit = pump.cut_base + *fault.cut_after;
      if (pump.forwarded >= limit) {
        state->CloseLink(link, /*abort=*/false);
        co_return false;
      }
      piece = static_cast<size_t>(std::min<uint64_t>(piece, limit - pump.forwarded));
    }
    const asio::const_buffer buffer(chunk.data() + done, piece);
    absl::Status written = co_await link->to(direction).Write(std::span(&buffer, 1));
    if (!link->open()) co_return false;
    if (!written.ok()) {
      state->CloseAfterError(link, written);
      co_return false;
    }
    done += piece;
    pump.forwarded += piece;
    stats.bytes_forwarded += piece;
    ++stats.writes;
    // Cut as soon as the last allowed byte is out, not when the next one arrives.
    const Fault& now = state->fault(direction);
    if (now.cut_after && pump.forwarded >= pump.cut_base + *now.cut_after) {
      state->CloseLink(link, /*abort=*/false);
      co_return false;
    }
  }
  co_return true;
}

asio::awaitable<void> PumpLoop(std::shared_ptr<State> state, std::shared_ptr<Link> link,
                               Direction direction) {
  Pump& pump = link->pump(direction);
  for (;;) {
    co_await WaitWhileStalled(*state, *link, direction);
    if (link->phase == Link::Phase::kClosed || pump.source_done) co_return;
    absl::StatusOr<size_t> n =
        co_await link->from(direction).Read(asio::buffer(pump.buffer.data(), pump.buffer.size()));
    if (link->phase == Link::Phase::kClosed || pump.source_done) co_return;
    if (link->phase == Link::Phase::kDraining) {
      if (n.ok() && *n > 0) continue;  // discarded
      State::SourceDone(*link, direction);
      co_return;
    }
    if (!n.ok()) {
      state->CloseAfterError(link, n.status());
      co_return;
    }
    if (*n == 0) {  // end of stream: everything read has been forwarded
      state->CloseLink(link, /*abort=*/false);
      State::SourceDone(*link, direction);
      co_return;
    }
    const std::span<const std::byte> chunk(pump.buffer.data(), *n);
    // Not forwarding any more: go round again to drain the source (or return, if closed).
    co_await Forward(state, link, direction, chunk, Clock::now());
  }
}

// Dials the target for `link`, then forwards both ways.
asio::awaitable<void> Serve(std::shared_ptr<State> state, std::shared_ptr<Link> link) {
  absl::StatusOr<std::unique_ptr<Connection>> server =
      co_await state->transport->Connect(state->target);
  if (!link->open()) {  // reset or closed while dialling
    if (server.ok()) (*server)->Close();
    co_return;
  }
  if (!server.ok()) {
    state->CloseLink(link, /*abort=*/false);
    co_return;
  }
  link->server = *std::move(server);
  for (Direction direction : kBothDirections) {
    asio::co_spawn(state->executor, PumpLoop(state, link, direction), asio::detached);
  }
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<State> state) {
  for (;;) {
    absl::StatusOr<std::unique_ptr<Connection>> accepted =
        co_await state->listener->Accept(state->executor);
    if (state->closed) co_return;
    if (!accepted.ok()) {
      if (accepted.status().code() == absl::StatusCode::kCancelled) co_return;
      // Transient (e.g. out of descriptors): try again shortly rather than spin.
      asio::steady_timer pause(state->executor, std::chrono::milliseconds(10));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    ++state->accepted;
    auto link = std::make_shared<Link>(*std::move(accepted));
    state->links.push_back(link);
    for (Direction direction : kBothDirections) {
      const Fault& fault = state->fault(direction);
      if (fault.cut_after && *fault.cut_after == 0) state->CloseLink(link, /*abort=*/false);
    }
    if (link->open()) asio::co_spawn(state->executor, Serve(state, link), asio::detached);
  }
}

}  // namespace

std::string_view DirectionName(Direction direction) {
  return direction == Direction::kClientToServer ? "client->server" : "server->client";
}

absl::StatusOr<std::unique_ptr<FaultProxy>> FaultProxy::Start(
    asio::any_io_executor executor, const transport::TransportInfo& transport, Endpoint target) {
  if (target.scheme != transport.scheme) {
    return absl::InvalidArgumentError(
        absl::StrCat("fault proxy: target ", target.ToString(), " is not on the ",
                     transport::AsAbsl(transport.scheme), " transport"));
  }
  auto state = std::make_shared<State>();
  state->executor = executor;
  absl::StatusOr<std::unique_ptr<transport::Transport>> made =
      transport::NewTransport(transport.scheme, executor, std::span(&transport, 1));
  if (!made.ok()) return made.status();
  state->transport = *std::move(made);
  absl::StatusOr<std::unique_ptr<transport::Listener>> listener =
      state->transport->Listen(transport.loopback_endpoint());
  if (!listener.ok()) return transport::Annotate(listener.status(), "fault proxy");
  state->listener = *std::move(listener);
  state->endpoint = state->listener->local_endpoint();
  state->target = std::move(target);
  asio::co_spawn(executor, AcceptLoop(state), asio::detached);
  return std::unique_ptr<FaultProxy>(new FaultProxy(std::move(state)));
}

FaultProxy::~FaultProxy() { Close(); }

const Endpoint& FaultProxy::endpoint() const { return state_->endpoint; }
const Endpoint& FaultProxy::target() const { return state_->target; }

void FaultProxy::Set(Direction direction, Fault fault) {
  state_->faults[Index(direction)] = fault;
  std::vector<std::shared_ptr<Link>> links = state_->links;  // a cut closes links
  for (const std::shared_ptr<Link>& link : links) {
    Pump& pump = link->pump(direction);
    pump.cut_base = pump.forwarded;
    pump.wake.cancel();
    if (fault.cut_after && *fault.cut_after == 0) state_->CloseLink(link, /*abort=*/false);
  }
}

const Fault& FaultProxy::fault(Direction direction) const { return state_->fault(direction); }

void FaultProxy::ClearFaults() {
  for (Direction direction : kBothDirections) Set(direction, Fault{});
}

void FaultProxy::ResetAll() {
  std::vector<std::shared_ptr<Link>> links = state_->links;
  for (const std::shared_ptr<Link>& link : links) state_->CloseLink(link, /*abort=*/true);
}

void FaultProxy::Close() {
  if (state_->closed) return;
  state_->closed = true;
  state_->listener->Close();
  std::vector<std::shared_ptr<Link>> links = state_->links;
  for (const std::shared_ptr<Link>& link : links) state_->CloseLink(link, /*abort=*/false);
}

size_t FaultProxy::connections() const { return state_->links.size(); }
size_t FaultProxy::accepted() const { return state_->accepted; }
const DirectionStats& FaultProxy::stats(Direction direction) const {
  return state_->stats[Index(direction)];
}

absl::StatusOr<transport::Traits> ProbeTraits(const transport::TransportInfo& info) {
  asio::io_context io;
  std::unique_ptr<transport::Transport> transport = info.factory(io.get_executor(), {});
  absl::StatusOr<std::unique_ptr<transport::Listener>> listener =
      transport->Listen(info.loopback_endpoint());
  if (!listener.ok()) return listener.status();
  // Both ends at once: a transport may need the accepting side to finish a handshake.
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> client, server;
  asio::co_spawn(io, transport->Connect((*listener)->local_endpoint()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> c) {
                   client = std::move(c);
                 });
  asio::co_spawn(io, (*listener)->Accept(io.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> c) {
                   server = std::move(c);
                 });
  const Clock::time_point until = Clock::now() + std::chrono::seconds(5);
  while ((!client || !server) && Clock::now() < until) {
    io.restart();
    io.run_one_until(until);
  }
  if (!client || !server) {
    return absl::DeadlineExceededError(
        absl::StrCat("probe ", transport::AsAbsl(info.scheme), ": no connection within 5 s"));
  }
  if (!client->ok()) return client->status();
  transport::Traits traits = (**client)->traits();
  (**client)->Close();
  if (server->ok()) (**server)->Close();
  (*listener)->Close();
  return traits;
}

}  // namespace courier::testing
