#include "transport/udp/arq.h"

#include <algorithm>
#include <cstring>

namespace courier::transport::udp {

Sender::Sender(SenderOptions options)
    : options_(options),
      peer_window_(static_cast<uint32_t>(options.initial_peer_window)),
      rto_(options.initial_rto) {}

bool Sender::CanAccept(size_t bytes) const {
  if (fin_pushed_) return false;
  return buffered_bytes_ == 0 || buffered_bytes_ + bytes <= options_.buffer_limit;
}

void Sender::Push(std::span<const asio::const_buffer> data) {
  Segment current;
  for (const asio::const_buffer& buffer : data) {
    const char* p = static_cast<const char*>(buffer.data());
    size_t left = buffer.size();
    while (left > 0) {
      size_t take = std::min(left, options_.max_payload - current.payload.size());
      current.payload.append(p, take);
      p += take;
      left -= take;
      if (current.payload.size() == options_.max_payload) {
        current.seq = next_seq_++;
        buffered_bytes_ += current.payload.size();
        segments_.push_back(std::move(current));
        current = Segment();
      }
    }
  }
  if (!current.payload.empty()) {
    current.seq = next_seq_++;
    buffered_bytes_ += current.payload.size();
    segments_.push_back(std::move(current));
  }
}

void Sender::PushFin() {
  if (fin_pushed_) return;
  fin_pushed_ = true;
  Segment fin;
  fin.seq = next_seq_++;
  fin.fin = true;
  segments_.push_back(std::move(fin));
}

void Sender::Sample(Clock::duration rtt) {
  // RFC 6298 with G = 0 (our clock is fine-grained): RTO = SRTT + 4 RTTVAR, clamped.
  if (!srtt_) {
    srtt_ = rtt;
    rttvar_ = rtt / 2;
  } else {
    Clock::duration err = *srtt_ > rtt ? *srtt_ - rtt : rtt - *srtt_;
    rttvar_ = (*rttvar_ * 3 + err) / 4;
    srtt_ = (*srtt_ * 7 + rtt) / 8;
  }
  rto_ = std::clamp(*srtt_ + 4 * *rttvar_, options_.min_rto, options_.max_rto);
}

size_t Sender::OnAck(uint32_t wire_ack, uint64_t sack, uint32_t window, Clock::time_point now) {
  const uint64_t ack = Widen(wire_ack, acked_);
  if (ack < acked_ || ack > next_seq_) return 0;  // stale, or acks what we never sent
  peer_window_ = window;
  size_t newly = 0;
  std::optional<Clock::time_point> sample_from;
  while (!segments_.empty() && segments_.front().seq < ack) {
    Segment& s = segments_.front();
    if (s.transmissions == 1 && !s.sacked)
      sample_from = std::max(sample_from.value_or(s.sent), s.sent);
    buffered_bytes_ -= s.payload.size();
    segments_.pop_front();
    ++newly;
  }
  acked_ = ack;
  if (sack != 0) {
    for (Segment& s : segments_) {
      uint64_t bit = s.seq - ack - 1;  // bit i: seq ack + 1 + i
      if (s.seq == ack || bit >= kSackBits) continue;
      if ((sack >> bit) & 1) {
        if (!s.sacked && s.transmissions > 0) {
          s.sacked = true;
          ++newly;
          look_for_holes_ = true;
          if (s.transmissions == 1) sample_from = std::max(sample_from.value_or(s.sent), s.sent);
        }
      }
    }
  }
  // Karn's rule: only datagrams sent once give a sample.
  if (sample_from && now >= *sample_from) Sample(now - *sample_from);
  return newly;
}

std::vector<const Sender::Segment*> Sender::Collect(Clock::time_point now) {
  std::vector<const Segment*> out;
  if (look_for_holes_) {
    look_for_holes_ = false;
    int later_sacked = 0;
    for (auto it = segments_.rbegin(); it != segments_.rend(); ++it) {
      if (it->sacked) {
        ++later_sacked;
      } else if (it->transmissions > 0 && later_sacked >= kFastRetransmitAfter &&
                 !it->fast_retransmitted) {
        it->fast_retransmitted = true;
        it->fast_due = true;
      }
    }
  }
  bool timed_out = false;
  uint64_t bytes = 0;
  for (Segment& s : segments_) {
    bytes += s.payload.size();
    if (s.seq - acked_ >= kMaxInFlight || bytes > peer_window_) break;
    if (s.sacked) continue;
    if (s.transmissions == 0) {
      s.sent = now;
      s.transmissions = 1;
      ++transmissions_;
      out.push_back(&s);
    } else if (s.fast_due || now >= s.sent + rto_) {
      if (!s.fast_due) {
        timed_out = true;
        s.fast_retransmitted = false;
      }
      s.fast_due = false;
      s.sent = now;
      ++s.transmissions;
      ++transmissions_;
      ++retransmits_;
      out.push_back(&s);
    }
  }
  // One backoff per timer event, however many datagrams it resent.
  if (timed_out) rto_ = std::min(rto_ * 2, options_.max_rto);
  return out;
}

std::optional<Clock::time_point> Sender::NextTimeout() const {
  // Only what Collect() would resend: a datagram that was sent but lies beyond a window the peer
  // has since shrunk waits for the peer's next ACK (or a probe's answer), not for a timer that
  // would fire again at once, and again.
  std::optional<Clock::time_point> at;
  uint64_t bytes = 0;
  for (const Segment& s : segments_) {
    bytes += s.payload.size();
    if (s.seq - acked_ >= kMaxInFlight || bytes > peer_window_) break;
    if (s.transmissions == 0 || s.sacked) continue;
    Clock::time_point due = s.sent + rto_;
    if (!at || due < *at) at = due;
  }
  return at;
}

Receiver::Result Receiver::OnData(uint32_t wire_seq, std::span<const std::byte> payload, bool fin) {
  const uint64_t seq = Widen(wire_seq, next_);
  if (seq < next_) return Result::kDuplicate;
  if (seq - next_ >= kMaxInFlight) return Result::kOutOfWindow;
  if (fin_seq_ && seq > *fin_seq_) return Result::kOutOfWindow;
  if (fin && fin_seq_ && seq != *fin_seq_) return Result::kOutOfWindow;
  if (out_of_order_.count(seq) != 0) return Result::kDuplicate;
  if (in_order_bytes_ + out_of_order_bytes_ + payload.size() > capacity_) return Result::kNoRoom;
  Held held{std::string(reinterpret_cast<const char*>(payload.data()), payload.size()), fin};
  if (fin) fin_seq_ = seq;
  if (seq != next_) {
    out_of_order_bytes_ += held.payload.size();
    out_of_order_.emplace(seq, std::move(held));
    return Result::kAccepted;
  }
  Absorb(std::move(held));
  while (!out_of_order_.empty() && out_of_order_.begin()->first == next_) {
    auto node = out_of_order_.extract(out_of_order_.begin());
    out_of_order_bytes_ -= node.mapped().payload.size();
    Absorb(std::move(node.mapped()));
  }
  return Result::kAccepted;
}

void Receiver::Absorb(Held held) {
  ++next_;
  if (held.fin) fin_in_order_ = true;
  if (held.payload.empty()) return;
  in_order_bytes_ += held.payload.size();
  in_order_.push_back(std::move(held.payload));
}

size_t Receiver::Read(std::span<std::byte> into) {
  size_t copied = 0;
  while (copied < into.size() && !in_order_.empty()) {
    std::string& front = in_order_.front();
    size_t take = std::min(into.size() - copied, front.size() - front_offset_);
    std::memcpy(into.data() + copied, front.data() + front_offset_, take);
    copied += take;
    front_offset_ += take;
    if (front_offset_ == front.size()) {
      in_order_.pop_front();
      front_offset_ = 0;
    }
  }
  in_order_bytes_ -= copied;
  return copied;
}

uint64_t Receiver::sack() const {
  uint64_t bits = 0;
  for (const auto& [seq, held] : out_of_order_) {
    uint64_t bit = seq - next_ - 1;
    if (bit >= kSackBits) break;
    bits |= uint64_t{1} << bit;
  }
  return bits;
}

uint32_t Receiver::window() const {
  size_t free = capacity_ > in_order_bytes_ ? capacity_ - in_order_bytes_ : 0;
  return static_cast<uint32_t>(std::min<size_t>(free, UINT32_MAX));
}

}  // namespace courier::transport::udp
