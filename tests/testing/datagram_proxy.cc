#include "tests/testing/datagram_proxy.h"

#include <deque>
#include <map>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "asio/ip/udp.hpp"
#include "asio/steady_timer.hpp"
#include "transport/status.h"

namespace courier::testing {
namespace {

using Clock = std::chrono::steady_clock;
using asio::ip::udp;
using Bytes = std::vector<std::byte>;

int Index(Direction direction) { return static_cast<int>(direction); }

// One client address and its own socket connected to the target.
struct Mapping {
  Mapping(asio::any_io_executor executor, udp::endpoint from)
      : upstream(executor),
        client(from),
        reorder_timers{asio::steady_timer(executor), asio::steady_timer(executor)} {}
  udp::socket upstream;
  udp::endpoint client;
  Bytes buffer = Bytes(DatagramProxy::kMaxDatagram);  // target -> client
  // Per direction: the datagram held back for reordering, if any, and its timer. The generation
  // tells a timer that fired for an earlier hold from the current one.
  std::optional<Bytes> held[2];
  asio::steady_timer reorder_timers[2];
  uint64_t hold_generation[2] = {0, 0};
};

// A datagram waiting out a delay.
struct Delayed {
  std::shared_ptr<Mapping> mapping;
  Bytes bytes;
  Clock::time_point arrived;
};

struct Way {
  explicit Way(asio::any_io_executor executor) : delay_timer(std::move(executor)) {}
  DatagramFault fault;
  DatagramStats stats;
  std::mt19937_64 random;
  std::deque<Delayed> delayed;  // in arrival order
  asio::steady_timer delay_timer;
  size_t held = 0;  // delayed.size() plus datagrams held for reordering

  bool Happens(double probability) {
    if (probability <= 0) return false;
    return std::uniform_real_distribution<double>(0.0, 1.0)(random) < probability;
  }
};

}  // namespace

struct DatagramProxy::State : std::enable_shared_from_this<State> {
  explicit State(asio::any_io_executor ex) : executor(ex), listener(ex), ways{Way(ex), Way(ex)} {}

  asio::any_io_executor executor;
  udp::socket listener;
  udp::endpoint target_address;
  Endpoint endpoint;
  Endpoint target;
  Options options;
  Bytes buffer = Bytes(kMaxDatagram);  // client -> target
  udp::endpoint from;
  std::map<udp::endpoint, std::shared_ptr<Mapping>> mappings;
  Way ways[2];
  bool closed = false;

  Way& way(Direction direction) { return ways[Index(direction)]; }

  void ReceiveFromClients() {
    listener.async_receive_from(asio::buffer(buffer), from,
                                [self = shared_from_this()](std::error_code ec, size_t n) {
                                  if (self->closed || ec == asio::error::operation_aborted) return;
                                  if (!ec) self->FromClient(std::span(self->buffer.data(), n));
                                  self->ReceiveFromClients();
                                });
  }

  void ReceiveFromTarget(std::shared_ptr<Mapping> mapping) {
    Mapping& m = *mapping;
    m.upstream.async_receive(
        asio::buffer(m.buffer),
        [self = shared_from_this(), mapping = std::move(mapping)](std::error_code ec, size_t n) {
          if (self->closed || ec == asio::error::operation_aborted) return;
          // Other errors: ICMP port unreachable from an earlier send while the target was away.
          if (!ec) {
            self->Arrive(Direction::kServerToClient, mapping, std::span(mapping->buffer.data(), n));
          }
          self->ReceiveFromTarget(mapping);
        });
  }

  void FromClient(std::span<const std::byte> datagram) {
    auto it = mappings.find(from);
    if (it == mappings.end()) {
      Way& up = way(Direction::kClientToServer);
      if (mappings.size() >= options.max_mappings) {
        ++up.stats.received;
        ++up.stats.overflowed;
        return;
      }
      auto mapping = std::make_shared<Mapping>(executor, from);
      std::error_code ec;
      mapping->upstream.open(target_address.protocol(), ec);
      if (!ec) mapping->upstream.connect(target_address, ec);
      if (!ec) mapping->upstream.non_blocking(true, ec);
      if (ec) {  // e.g. out of descriptors: this datagram is lost, a later one tries again
        ++up.stats.received;
        ++up.stats.send_errors;
        return;
      }
      it = mappings.emplace(from, mapping).first;
      ReceiveFromTarget(mapping);
    }
    Arrive(Direction::kClientToServer, it->second, datagram);
  }

  // Faults decided at arrival: blackhole, drop, duplicate; then the delay queue.
  void Arrive(Direction direction, const std::shared_ptr<Mapping>& mapping,
              std::span<const std::byte> datagram) {
    Way& w = way(direction);
    ++w.stats.received;
    const DatagramFault& fault = w.fault;
    if (fault.blackhole || w.Happens(fault.drop)) {
      ++w.stats.dropped;
      return;
    }
    const bool twice = w.Happens(fault.duplicate);
    if (twice) ++w.stats.duplicated;
    for (int copy = 0; copy < (twice ? 2 : 1); ++copy) {
      // Behind datagrams still waiting, even if the delay is now 0: order is kept.
      if (fault.delay <= Clock::duration::zero() && w.delayed.empty()) {
        Release(direction, mapping, Bytes(datagram.begin(), datagram.end()));
        continue;
      }
      if (w.held >= options.max_held) {
        ++w.stats.overflowed;
        continue;
      }
      if (fault.delay > Clock::duration::zero()) ++w.stats.delayed;
      w.delayed.push_back(Delayed{mapping, Bytes(datagram.begin(), datagram.end()), Clock::now()});
      ++w.held;
      if (w.delayed.size() == 1) ArmDelay(direction);
    }
  }

  // Releases what is due under the current delay and waits for the next one.
  void ArmDelay(Direction direction) {
    Way& w = way(direction);
    while (!w.delayed.empty() && w.delayed.front().arrived + w.fault.delay <= Clock::now()) {
      Delayed due = std::move(w.delayed.front());
      w.delayed.pop_front();
      --w.held;
      Release(direction, due.mapping, std::move(due.bytes));
    }
    if (w.delayed.empty()) return;
    // Replaces (cancels) any earlier wait; a wait that had already fired finds nothing due.
    w.delay_timer.expires_at(w.delayed.front().arrived + w.fault.delay);
    w.delay_timer.async_wait([self = shared_from_this(), direction](std::error_code ec) {
      if (!ec && !self->closed) self->ArmDelay(direction);
    });
  }

  // The reorder stage: a held datagram goes out right after the next one.
  void Release(Direction direction, const std::shared_ptr<Mapping>& mapping, Bytes datagram) {
    Way& w = way(direction);
    Mapping& m = *mapping;
    const int d = Index(direction);
    if (m.held[d]) {
      Send(direction, m, datagram);
      SendHeld(direction, m);
      return;
    }
    // With the bound reached the datagram goes out in order rather than being lost.
    if (w.held < options.max_held && w.Happens(w.fault.reorder)) {
      m.held[d] = std::move(datagram);
      ++w.stats.reordered;
      ++w.held;
      const uint64_t generation = ++m.hold_generation[d];
      m.reorder_timers[d].expires_after(w.fault.reorder_delay);
      m.reorder_timers[d].async_wait(
          [self = shared_from_this(), mapping, direction, generation](std::error_code ec) {
            const int d = Index(direction);
            if (ec || self->closed || mapping->hold_generation[d] != generation) return;
            self->SendHeld(direction, *mapping);
          });
      return;
    }
    Send(direction, m, datagram);
  }

  void SendHeld(Direction direction, Mapping& m) {
    const int d = Index(direction);
    if (!m.held[d]) return;
    Bytes held = *std::move(m.held[d]);
    m.held[d].reset();
    --way(direction).held;
    m.reorder_timers[d].cancel();
    Send(direction, m, held);
  }

  // Never blocks: the sockets are non-blocking, and a full buffer loses the datagram.
  void Send(Direction direction, Mapping& m, std::span<const std::byte> datagram) {
    Way& w = way(direction);
    std::error_code ec;
    if (direction == Direction::kClientToServer) {
      m.upstream.send(asio::buffer(datagram.data(), datagram.size()), 0, ec);
    } else {
      listener.send_to(asio::buffer(datagram.data(), datagram.size()), m.client, 0, ec);
    }
    if (ec) {
      ++w.stats.send_errors;
    } else {
      ++w.stats.forwarded;
    }
  }
};

absl::StatusOr<std::unique_ptr<DatagramProxy>> DatagramProxy::Start(asio::any_io_executor executor,
                                                                    const Endpoint& target,
                                                                    uint64_t seed) {
  return Start(std::move(executor), target, seed, Options{});
}

absl::StatusOr<std::unique_ptr<DatagramProxy>> DatagramProxy::Start(asio::any_io_executor executor,
                                                                    const Endpoint& target,
                                                                    uint64_t seed,
                                                                    Options options) {
  const std::string what = absl::StrCat("datagram proxy to ", target.ToString());
  if (target.scheme != "udp") {
    return absl::InvalidArgumentError(absl::StrCat(what, ": not a udp:// endpoint"));
  }
  absl::StatusOr<HostPort> host_port = SplitHostPort(target.address);
  if (!host_port.ok()) return transport::Annotate(host_port.status(), what);
  auto state = std::make_shared<State>(executor);
  state->options = options;
  state->target = target;
  std::error_code ec;
  udp::resolver resolver(executor);
  udp::resolver::results_type resolved =
      resolver.resolve(host_port->host, host_port->port, udp::resolver::numeric_service, ec);
  if (ec || resolved.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": does not resolve: ", ec ? ec.message() : "no addresses"));
  }
  state->target_address = resolved.begin()->endpoint();
  const bool v6 = state->target_address.address().is_v6();
  const udp::endpoint bind_to(v6 ? asio::ip::address(asio::ip::address_v6::loopback())
                                 : asio::ip::address(asio::ip::address_v4::loopback()),
                              0);
  state->listener.open(bind_to.protocol(), ec);
  if (!ec) state->listener.bind(bind_to, ec);
  if (!ec) state->listener.non_blocking(true, ec);
  if (ec) return transport::ToStatus(ec, absl::StrCat(what, ": bind"));
  const uint16_t port = state->listener.local_endpoint(ec).port();
  if (ec) return transport::ToStatus(ec, absl::StrCat(what, ": local address"));
  state->endpoint =
      Endpoint{"udp", v6 ? absl::StrCat("[::1]:", port) : absl::StrCat("127.0.0.1:", port)};
  for (Direction direction : kBothDirections) {
    std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                      static_cast<uint32_t>(Index(direction))};
    state->way(direction).random.seed(seq);
  }
  state->ReceiveFromClients();
  return std::unique_ptr<DatagramProxy>(new DatagramProxy(std::move(state)));
}

DatagramProxy::~DatagramProxy() { Close(); }

const Endpoint& DatagramProxy::endpoint() const { return state_->endpoint; }
const Endpoint& DatagramProxy::target() const { return state_->target; }

void DatagramProxy::Set(Direction direction, DatagramFault fault) {
  state_->way(direction).fault = fault;
  if (!state_->closed) state_->ArmDelay(direction);  // a shorter delay may make some due now
}

const DatagramFault& DatagramProxy::fault(Direction direction) const {
  return state_->way(direction).fault;
}

void DatagramProxy::ClearFaults() {
  for (Direction direction : kBothDirections) Set(direction, DatagramFault{});
}

void DatagramProxy::Close() {
  if (state_->closed) return;
  state_->closed = true;
  std::error_code ignored;
  state_->listener.close(ignored);
  for (auto& [from, mapping] : state_->mappings) {
    mapping->upstream.close(ignored);
    for (asio::steady_timer& timer : mapping->reorder_timers) timer.cancel();
    for (std::optional<Bytes>& held : mapping->held) held.reset();
  }
  state_->mappings.clear();
  for (Way& w : state_->ways) {
    w.delay_timer.cancel();
    w.delayed.clear();
    w.held = 0;
  }
}

size_t DatagramProxy::mappings() const { return state_->mappings.size(); }
const DatagramStats& DatagramProxy::stats(Direction direction) const {
  return state_->way(direction).stats;
}

}  // namespace courier::testing
