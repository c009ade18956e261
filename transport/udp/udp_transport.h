// udp:// — a reliable, ordered byte stream over UDP ("udp://127.0.0.1:7000", "udp://[::1]:0",
// "udp://localhost:7000?dgram=1200&window=256k&dead_after_ms=3000&max_connections=1024").
// The framing and rpc layers run over it unchanged: Traits say reliable byte stream, no message
// boundaries, max_message = the `max_message` option (default 1 MiB, 1 KiB to 1 GiB: the largest
// RPC message; larger ones are refused with kResourceExhausted before sending, and the peer's
// frame decoder never reassembles more), reach kNetwork.
//
// How (PROTOCOL.md §12 has the wire rules): a stateless cookie handshake (HELLO → COOKIE → OPEN
// → OPEN_ACK), then a selective-repeat ARQ (arq.h): per-direction datagram seqs from 1,
// cumulative ACK + 64-bit SACK + receive window in bytes, RTO from RTT samples (RFC 6298, Karn's
// rule) clamped to [2 ms, 1 s], starting at 20 ms and doubling per timeout, fast retransmit of a
// hole after 3 later datagrams are SACKed. No congestion control beyond the peer's window.
// The client uses a connected socket; each accepted connection gets its own socket bound to the
// listener's address with SO_REUSEPORT and connected to the client, so the kernel delivers the
// client's datagrams to the connection's own executor and an ICMP port-unreachable surfaces as
// ECONNREFUSED on either side (kUnavailable at once). The listener's socket handles handshakes
// and answers DATA/PROBE/FIN for sessions it does not know with RESET.
//
// What the issue asked for, and where it is: the client retransmits until acknowledged (or the
// peer is declared dead after `dead_after`); the server answers duplicates by re-ACKing and never
// delivers a seq twice, so a request frame is never run twice; its unacknowledged datagrams,
// kept for retransmission, are the bounded response cache; stale retransmits (seq below the ack)
// are dropped and counted; a server restart is detected through the incarnation (random per
// Listen) that a RESET carries: "server restarted".
//
// Liveness: nothing heard for 250 ms while we have unacked data (or, on the client, ever) → PROBE,
// backing off to 1 s; nothing heard for `dead_after` (default 3 s) → kUnavailable "udp peer <addr>
// silent for 3 s". Close() sends FIN after the buffered data and lingers (at most `dead_after`)
// until it is acknowledged; data arriving after Close() is answered with RESET.
//
// Bounds (what a peer can make us spend):
//   per connection: send buffer <= window, or one Write when it is empty (TryWrite takes a whole
//   Write then; AsyncWrite feeds a larger one in as acks free room); receive buffer (in order + out
//   of order)
//     <= window bytes and kMaxInFlight (4096) datagrams; one receive buffer of 64 KiB.
//   per listener: no state before a valid OPEN (cookie = SipHash(secret, address, port,
//     session)); at most 64 connections waiting for Accept and `max_connections` open; beyond
//     that OPENs are dropped and counted. Malformed, unknown, bad-cookie and stale-incarnation
//     datagrams are dropped and counted and allocate nothing; a RESET is at most one 48-byte
//     reply per datagram received (no amplification).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::udp {

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// udp://127.0.0.1:0
Endpoint LoopbackEndpoint();

// Counters of a udp listener, for tests and diagnostics.
struct ListenerStats {
  uint64_t datagrams = 0;           // received on the listener's socket
  uint64_t dropped_malformed = 0;   // too short, bad magic, type or reserved bits
  uint64_t dropped_unknown = 0;     // not a handshake and no such session
  uint64_t dropped_bad_cookie = 0;  // OPEN whose cookie does not check
  uint64_t dropped_stale = 0;       // OPEN for another incarnation
  uint64_t dropped_over_limit = 0;  // OPEN beyond the pending or open limits
  uint64_t resets_sent = 0;
  uint64_t cookies_sent = 0;
  uint64_t opened = 0;   // connections created
  uint64_t pending = 0;  // created, not yet accepted
  uint64_t open = 0;     // accepted and not yet finished (including lingering ones)
};
// nullopt if `listener` is not a udp listener.
std::optional<ListenerStats> GetListenerStats(const Listener& listener);

struct ConnectionStats {
  uint64_t datagrams_sent = 0;
  uint64_t datagrams_received = 0;
  uint64_t retransmits = 0;
  uint64_t duplicates =
      0;  // DATA or FIN already received (below the ack or held out of order): dropped, re-ACKed
  uint64_t out_of_window = 0;  // DATA beyond the window or with no room, dropped
};
// nullopt if `connection` is not a udp connection.
std::optional<ConnectionStats> GetConnectionStats(const Connection& connection);
// The sums over every udp connection of this process that has been destroyed (for tests and
// tools that only hold a Channel or a Server).
ConnectionStats FinishedConnectionTotals();

}  // namespace courier::transport::udp
