// FaultProxy: an in-process man in the middle for byte-stream transports. It listens on a fresh
// loopback endpoint, dials a target for every connection it accepts and forwards both ways,
// applying per-direction faults (delay, slice, stall, cut, blackhole, reset) that a test changes
// at run time. Test support, built on transport/{transport,registry}.h only.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string_view>

#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace courier::testing {

// Which way bytes flow through the proxy: from the peer that dialled it to the target, or back.
enum class Direction { kClientToServer = 0, kServerToClient = 1 };
inline constexpr std::array<Direction, 2> kBothDirections = {Direction::kClientToServer,
                                                             Direction::kServerToClient};
std::string_view DirectionName(Direction direction);  // "client->server", "server->client"

// What happens to the bytes going one way. The default forwards each chunk as it was read. Set
// fields combine; the order of precedence is stall, blackhole, cut, then delay and slice.
struct Fault {
  // Each chunk is written this long after it was read; order is kept. The next chunk is read only
  // once this one is written, so a delay also throttles the direction to a chunk per delay.
  std::chrono::steady_clock::duration delay{0};
  // Writes at most this many bytes at a time (1: byte by byte); 0: a chunk in one write.
  size_t slice = 0;
  // Stops reading from the source (a chunk already read is held, not written) until cleared, so
  // the sender's kernel buffers fill and its writes stop completing.
  bool stall = false;
  // Reads and discards (counted in DirectionStats::bytes_discarded, not as forwarded).
  bool blackhole = false;
  // Forwards exactly this many more bytes, counted from the Set() call (for connections open
  // then) or from accept (for later ones), then closes both sides cleanly: each peer sees end of
  // stream after what was forwarded to it. 0 cuts open connections at once.
  std::optional<uint64_t> cut_after = std::nullopt;

  static Fault Delay(std::chrono::steady_clock::duration d) { return Fault{.delay = d}; }
  static Fault Slice(size_t max_write) { return Fault{.slice = max_write}; }
  static Fault Stall() { return Fault{.stall = true}; }
  static Fault Blackhole() { return Fault{.blackhole = true}; }
  static Fault CutAfter(uint64_t bytes) { return Fault{.cut_after = bytes}; }
  friend bool operator==(const Fault&, const Fault&) = default;
};

// Totals for one direction over every connection the proxy has served.
struct DirectionStats {
  uint64_t bytes_forwarded = 0;  // written to the destination
  uint64_t bytes_discarded = 0;  // read while blackholed
  uint64_t writes = 0;           // Write calls on the destination (slicing shows here)
  friend bool operator==(const DirectionStats&, const DirectionStats&) = default;
  // For test failure messages.
  friend void PrintTo(const DirectionStats& s, std::ostream* os) {
    *os << "{forwarded " << s.bytes_forwarded << ", discarded " << s.bytes_discarded << ", writes "
        << s.writes << "}";
  }
};

// Single-threaded: use it only on its executor, the one its connections run on (the test's
// io_context). Each accepted connection gets its own connection to the target; if that dial
// fails, the accepted one is closed. Forwarding holds at most one chunk (64 KiB) per direction
// per connection. When either side ends its stream, the proxy ends both (a chunk still held in
// the other direction is dropped); when a side fails (e.g. is reset), the other is reset, as a
// real network would. A clean end is a half-close, after which the proxy reads and discards
// until each peer closes (at most 2 s): closing a TCP socket with unread bytes would send a
// reset instead of end of stream.
class FaultProxy {
 public:
  static constexpr size_t kChunkSize = 64 * 1024;

  // Listens on transport.loopback_endpoint() and forwards to `target`, which must have the same
  // scheme (kInvalidArgument otherwise). Errors from the transport's Listen are returned as is.
  static absl::StatusOr<std::unique_ptr<FaultProxy>> Start(
      asio::any_io_executor executor, const transport::TransportInfo& transport, Endpoint target);
  // Close(); forwarding coroutines unwind the next time the executor runs.
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  // Where clients dial the proxy (port 0 and temporary names resolved).
  const Endpoint& endpoint() const;
  const Endpoint& target() const;

  // Replaces the fault for `direction`, on open connections at once and on later ones.
  void Set(Direction direction, Fault fault);
  const Fault& fault(Direction direction) const;
  // Set(d, Fault{}) for both directions: plain forwarding again (a stall is resumed).
  void ClearFaults();
  // Closes both sides of every open connection abruptly, now. TCP: SO_LINGER 0 then close without
  // shutdown, so each peer gets a reset (ECONNRESET, kUnavailable), not end of stream. Other
  // socket transports: close without shutdown (a UNIX peer sees end of stream, or ECONNRESET if
  // the proxy had unread bytes). Anything else: Connection::Close(). Faults stay as they are.
  void ResetAll();
  // Stops listening and closes every connection cleanly. Idempotent; the destructor calls it.
  void Close();

  // Connections still forwarding (including one still dialling the target). One being closed
  // cleanly stops counting at once, though its descriptors stay open until its peers close.
  size_t connections() const;
  // Connections accepted since Start.
  size_t accepted() const;
  const DirectionStats& stats(Direction direction) const;
  uint64_t bytes_forwarded(Direction direction) const { return stats(direction).bytes_forwarded; }

  struct State;  // shared with the forwarding coroutines; defined in fault_proxy.cc

 private:
  explicit FaultProxy(std::shared_ptr<State> state) : state_(std::move(state)) {}
  std::shared_ptr<State> state_;
};

// The traits of a connection `transport` makes: listens on a fresh loopback endpoint, connects,
// and asks. Runs its own io_context (so use it before snapshotting resources). Tests use it to
// skip transports with message boundaries, which FaultProxy does not serve.
absl::StatusOr<transport::Traits> ProbeTraits(const transport::TransportInfo& transport);

}  // namespace courier::testing
