// DatagramProxy: an in-process man in the middle for UDP, the datagram counterpart of FaultProxy.
// It binds a UDP socket on loopback, opens one upstream socket connected to the target for every
// client address it hears from, and forwards opaque datagrams both ways, applying per-direction
// faults (drop, duplicate, reorder, delay, blackhole) that a test changes at run time. It knows
// nothing of courier's UDP protocol, so raw sockets can test it. Test support, Asio only.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>

#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "tests/testing/fault_proxy.h"  // Direction, kBothDirections, DirectionName
#include "transport/endpoint.h"

namespace courier::testing {

// What happens to the datagrams going one way. The default forwards each one as it arrives.
// Probabilities are in [0, 1] and drawn from the direction's generator (seeded by Start's
// seed), so a run with the same datagrams in the same order repeats exactly. Blackhole, drop
// and duplicate are decided when a datagram arrives; then it waits out `delay`, then may be
// held back by `reorder`.
struct DatagramFault {
  double drop = 0;       // discarded (DatagramStats::dropped)
  double duplicate = 0;  // sent twice, back to back
  // Held back and sent right after the next datagram of the same client mapping, or after
  // `reorder_delay` if none comes first. One datagram per mapping and direction is held at a time.
  double reorder = 0;
  std::chrono::steady_clock::duration reorder_delay = std::chrono::milliseconds(50);
  // Each datagram is sent this long after it arrived (under the delay set at the time it is
  // due); order is kept.
  std::chrono::steady_clock::duration delay{0};
  bool blackhole = false;  // every datagram discarded (counted as dropped)

  static DatagramFault Drop(double p) { return DatagramFault{.drop = p}; }
  static DatagramFault Duplicate(double p) { return DatagramFault{.duplicate = p}; }
  static DatagramFault Reorder(double p, std::chrono::steady_clock::duration at_most) {
    return DatagramFault{.reorder = p, .reorder_delay = at_most};
  }
  static DatagramFault Delay(std::chrono::steady_clock::duration d) {
    return DatagramFault{.delay = d};
  }
  static DatagramFault Blackhole() { return DatagramFault{.blackhole = true}; }
  friend bool operator==(const DatagramFault&, const DatagramFault&) = default;
};

// Totals for one direction over every client mapping.
struct DatagramStats {
  uint64_t received = 0;     // read from the source
  uint64_t forwarded = 0;    // sent to the destination (a duplicate counts twice)
  uint64_t dropped = 0;      // by `drop` or `blackhole`
  uint64_t duplicated = 0;   // datagrams sent twice
  uint64_t reordered = 0;    // datagrams held back by `reorder`
  uint64_t delayed = 0;      // datagrams that waited out a `delay`
  uint64_t overflowed = 0;   // discarded because a bound was hit (mappings, held datagrams)
  uint64_t send_errors = 0;  // sends that failed or would have blocked (the datagram is lost)
  friend bool operator==(const DatagramStats&, const DatagramStats&) = default;
  // For test failure messages.
  friend void PrintTo(const DatagramStats& s, std::ostream* os) {
    *os << "{received " << s.received << ", forwarded " << s.forwarded << ", dropped " << s.dropped
        << ", duplicated " << s.duplicated << ", reordered " << s.reordered << ", delayed "
        << s.delayed << ", overflowed " << s.overflowed << ", send_errors " << s.send_errors << "}";
  }
};

// Single-threaded: use it only on its executor (the test's io_context). Bounds, each a
// DatagramProxy::Options field: at most `max_mappings` client addresses get an upstream socket
// (datagrams from more are overflowed; mappings last until Close()); datagrams up to
// kMaxDatagram bytes (one receive buffer per socket); at most `max_held` datagrams per direction
// waiting out a delay or held for reordering (more are overflowed). Sends never block: a full
// socket buffer loses the datagram (send_errors), as a congested network would. Receive errors
// (e.g. ICMP port unreachable when the target is gone) are ignored; the socket keeps reading.
class DatagramProxy {
 public:
  static constexpr size_t kMaxDatagram = 65535;
  struct Options {
    size_t max_mappings = 1024;
    size_t max_held = 4096;
  };

  // Binds 127.0.0.1:0 (or [::1]:0 for an IPv6 target) and forwards to `target`, a
  // udp://host:port resolved once, here. kInvalidArgument for another scheme or an address that
  // does not resolve; a failed bind is returned as is. `seed` seeds the fault generators.
  static absl::StatusOr<std::unique_ptr<DatagramProxy>> Start(asio::any_io_executor executor,
                                                              const Endpoint& target,
                                                              uint64_t seed);
  static absl::StatusOr<std::unique_ptr<DatagramProxy>> Start(asio::any_io_executor executor,
                                                              const Endpoint& target, uint64_t seed,
                                                              Options options);
  // Close(); pending handlers unwind the next time the executor runs.
  ~DatagramProxy();
  DatagramProxy(const DatagramProxy&) = delete;
  DatagramProxy& operator=(const DatagramProxy&) = delete;

  // Where clients send: udp://127.0.0.1:<port> or udp://[::1]:<port>.
  const Endpoint& endpoint() const;
  const Endpoint& target() const;

  // Replaces the fault for `direction`; datagrams already waiting keep their fate but wait out
  // the new delay.
  void Set(Direction direction, DatagramFault fault);
  const DatagramFault& fault(Direction direction) const;
  // Set(d, DatagramFault{}) for both directions. Datagrams already waiting still go out.
  void ClearFaults();
  // Closes every socket and drops whatever is waiting. Idempotent; the destructor calls it.
  void Close();

  // Client addresses with an upstream socket.
  size_t mappings() const;
  const DatagramStats& stats(Direction direction) const;

  struct State;  // shared with the pending handlers; defined in datagram_proxy.cc

 private:
  explicit DatagramProxy(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

}  // namespace courier::testing
