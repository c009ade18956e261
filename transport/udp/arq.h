// The selective-repeat ARQ under udp://, pure: no sockets, no clocks of its own (the caller passes
// `now`), so loss, duplication and reordering are tested without a network.
//
// Sequence numbers are per direction and count datagrams from 1; the wire carries their low 32
// bits and both sides widen them against their own 64-bit position. A receiver accepts seq in
// [next, next + kMaxInFlight) and at most its capacity in bytes; a sender keeps at most
// kMaxInFlight datagrams and the peer's advertised window of bytes beyond the peer's ack.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "asio/buffer.hpp"

namespace courier::transport::udp {

using Clock = std::chrono::steady_clock;
inline constexpr uint64_t kMaxInFlight = 4096;  // datagrams beyond the ack, both sides
inline constexpr int kSackBits = 64;
inline constexpr int kFastRetransmitAfter = 3;  // later datagrams SACKed before a hole is resent

// Widens a 32-bit wire seq to the 64-bit one nearest `reference`.
inline uint64_t Widen(uint32_t wire, uint64_t reference) {
  int64_t delta = static_cast<int32_t>(wire - static_cast<uint32_t>(reference));
  return static_cast<uint64_t>(static_cast<int64_t>(reference) + delta);
}

struct SenderOptions {
  size_t max_payload = 65507 - 48;  // bytes per DATA datagram
  size_t buffer_limit = 1 << 20;    // bytes kept for retransmission (plus one Write over it)
  size_t initial_peer_window = 1 << 20;
  Clock::duration initial_rto = std::chrono::milliseconds(20);
  Clock::duration min_rto = std::chrono::milliseconds(2);
  Clock::duration max_rto = std::chrono::seconds(1);
};

class Sender {
 public:
  struct Segment {
    uint64_t seq = 0;
    std::string payload;
    bool fin = false;
    Clock::time_point sent{};
    int transmissions = 0;
    bool sacked = false;
    bool fast_retransmitted = false;  // since its last timeout
    bool fast_due = false;            // SACK evidence says it was lost: resend now
  };

  explicit Sender(SenderOptions options = {});

  // Whether a Write of `bytes` may be buffered now (all or nothing): it fits the buffer limit,
  // or nothing is buffered. Never after PushFin.
  bool CanAccept(size_t bytes) const;
  // Splits the Write into datagrams of at most max_payload; its first datagram starts the Write.
  void Push(std::span<const asio::const_buffer> data);
  void PushFin();

  // The peer's cumulative ack (next seq it expects), its SACK bitmap and window. Stale acks (below
  // one already seen) are ignored. Returns the number of datagrams newly acknowledged.
  size_t OnAck(uint32_t ack, uint64_t sack, uint32_t window, Clock::time_point now);

  // The datagrams to transmit now, marked sent: new ones the window allows, those whose timer
  // expired (backing the RTO off), and holes that SACK evidence says were lost.
  std::vector<const Segment*> Collect(Clock::time_point now);
  // When the earliest retransmission falls due; nullopt when nothing is in flight.
  std::optional<Clock::time_point> NextTimeout() const;

  bool idle() const { return segments_.empty(); }
  bool fin_acked() const { return fin_pushed_ && segments_.empty(); }
  bool fin_pushed() const { return fin_pushed_; }
  size_t buffered_bytes() const { return buffered_bytes_; }
  uint64_t acked() const { return acked_; }  // next seq the peer expects
  uint64_t next_seq() const { return next_seq_; }
  uint32_t peer_window() const { return peer_window_; }
  Clock::duration rto() const { return rto_; }
  uint64_t transmissions() const { return transmissions_; }
  uint64_t retransmits() const { return retransmits_; }

 private:
  void Sample(Clock::duration rtt);

  SenderOptions options_;
  std::deque<Segment> segments_;  // unacknowledged, in seq order; front's seq == acked_
  uint64_t next_seq_ = 1;
  uint64_t acked_ = 1;
  size_t buffered_bytes_ = 0;
  uint32_t peer_window_;
  bool fin_pushed_ = false;
  bool look_for_holes_ = false;
  Clock::duration rto_;
  std::optional<Clock::duration> srtt_, rttvar_;
  uint64_t transmissions_ = 0, retransmits_ = 0;
};

class Receiver {
 public:
  enum class Result { kAccepted, kDuplicate, kOutOfWindow, kNoRoom };

  explicit Receiver(size_t capacity = 1 << 20) : capacity_(capacity) {}

  // One DATA (payload) or FIN. Duplicates and datagrams beyond the window are dropped (the
  // caller counts them and re-ACKs); so is data past a FIN.
  Result OnData(uint32_t seq, std::span<const std::byte> payload, bool fin);
  // Copies in-order bytes into `into`; returns how many.
  size_t Read(std::span<std::byte> into);

  size_t readable() const { return in_order_bytes_; }
  bool fin_received() const { return fin_in_order_; }  // the FIN is next after readable()
  uint64_t next() const { return next_; }
  uint32_t ack() const { return static_cast<uint32_t>(next_); }
  uint64_t sack() const;
  // What the sender may have in flight beyond our ack: capacity less what the reader has not taken.
  uint32_t window() const;
  size_t out_of_order_bytes() const { return out_of_order_bytes_; }

 private:
  struct Held {
    std::string payload;
    bool fin = false;
  };
  void Absorb(Held held);

  size_t capacity_;
  uint64_t next_ = 1;
  std::deque<std::string> in_order_;
  size_t front_offset_ = 0;
  size_t in_order_bytes_ = 0;
  std::map<uint64_t, Held> out_of_order_;
  size_t out_of_order_bytes_ = 0;
  bool fin_in_order_ = false;
  std::optional<uint64_t> fin_seq_;
};

}  // namespace courier::transport::udp
