#include "transport/shm/ring.h"

#include <algorithm>
#include <cassert>
#include <cstring>

#include "absl/strings/str_format.h"

namespace courier::transport::shm {
namespace {

// The smallest record worth writing: a header and one payload byte, padded.
constexpr size_t kMinRecord = kRecordHeader + 8;

struct RecordHeader {
  uint32_t length;
  uint32_t kind;
};
static_assert(sizeof(RecordHeader) == kRecordHeader);

constexpr uint64_t Pad8(uint64_t n) { return (n + 7) & ~uint64_t{7}; }

void PutHeader(std::byte* at, uint32_t length, uint32_t kind) {
  const RecordHeader header{length, kind};
  std::memcpy(at, &header, sizeof header);
}

// Room for a data record at `offset` with `room` bytes free (both multiples of 8): its payload
// capacity, counting the pad that would come first; 0 if not even one payload byte fits.
size_t RecordRoom(size_t capacity, size_t offset, uint64_t room) {
  const size_t to_end = capacity - offset;
  if (to_end < kMinRecord) {
    // Only a pad fits before the end; the record goes at offset 0, after it.
    room = room >= to_end ? room - to_end : 0;
    return room >= kMinRecord ? std::min<uint64_t>(room, capacity) - kRecordHeader : 0;
  }
  const uint64_t fits = std::min<uint64_t>(to_end, room);
  return fits >= kMinRecord ? fits - kRecordHeader : 0;
}

// The sleep handshake's fence, between a side's store and its load (Dekker). GCC refuses fences
// under -fsanitize=thread (-Werror=tsan: TSan does not model them). Nothing TSan checks depends
// on this one: it orders only atomics, while the payload is published by tail's release/acquire,
// which TSan does see. So the warning is silenced here rather than the fence replaced.
inline void FullFence() {
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wtsan"
#endif
  std::atomic_thread_fence(std::memory_order_seq_cst);
#if defined(__SANITIZE_THREAD__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
}

}  // namespace

bool IsValidRingCapacity(size_t capacity) {
  return capacity >= kMinRingCapacity && capacity <= kMaxRingCapacity &&
         (capacity & (capacity - 1)) == 0;
}

void InitRing(RingControl* control) {
  control->tail.store(0, std::memory_order_relaxed);
  control->head.store(0, std::memory_order_relaxed);
  control->consumer_sleeping.store(0, std::memory_order_relaxed);
  control->producer_sleeping.store(0, std::memory_order_relaxed);
}

RingWriter::RingWriter(RingControl* control, std::byte* data, size_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  assert(IsValidRingCapacity(capacity));
}

absl::StatusOr<size_t> RingWriter::Write(std::span<const asio::const_buffer> data) {
  if (!failure_.ok()) return failure_;
  size_t left = 0;
  for (const asio::const_buffer& buffer : data) left += buffer.size();
  if (left == 0) return 0;

  // Acquire: the consumer's copies out of the bytes it released happen before we overwrite them.
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  if (absl::Status s = CheckHead(head); !s.ok()) {
    failure_ = std::move(s);
    return failure_;
  }
  last_head_ = head;

  const uint64_t limit = head + capacity_;  // we may write up to here
  uint64_t pos = tail_;
  size_t taken = 0;
  size_t buffer = 0;         // the gather list's current buffer
  size_t buffer_offset = 0;  // and how much of it is written
  while (left > 0) {
    const size_t offset = pos & (capacity_ - 1);
    const size_t room = RecordRoom(capacity_, offset, limit - pos);
    if (room == 0) break;
    if (capacity_ - offset < kMinRecord) {
      PutHeader(data_ + offset, uint32_t(capacity_ - offset - kRecordHeader), kRecordPad);
      pos += capacity_ - offset;
      continue;
    }
    const size_t n = std::min({left, room, max_record_payload()});
    PutHeader(data_ + offset, uint32_t(n), kRecordData);
    // The payload comes from consecutive bytes of the gather list, across buffer boundaries.
    std::byte* out = data_ + offset + kRecordHeader;
    for (size_t copied = 0; copied < n;) {
      const asio::const_buffer& from = data[buffer];
      const size_t chunk = std::min(from.size() - buffer_offset, n - copied);
      // An empty buffer may have a null data(), which memcpy must not see.
      if (chunk > 0) {
        std::memcpy(out + copied, static_cast<const std::byte*>(from.data()) + buffer_offset,
                    chunk);
      }
      copied += chunk;
      buffer_offset += chunk;
      if (buffer_offset == from.size()) {
        ++buffer;
        buffer_offset = 0;
      }
    }
    pos += kRecordHeader + Pad8(n);
    left -= n;
    taken += n;
  }
  if (pos != tail_) {
    tail_ = pos;
    control_->tail.store(tail_, std::memory_order_release);
  }
  return taken;
}

absl::Status RingWriter::CheckHead(uint64_t head) const {
  if (head < last_head_) {
    return absl::DataLossError(
        absl::StrFormat("shm ring: consumer head %u went back (it was %u)", head, last_head_));
  }
  if (head > tail_) {
    return absl::DataLossError(
        absl::StrFormat("shm ring: consumer head %u is ahead of our tail %u", head, tail_));
  }
  if (head % 8 != 0) {
    return absl::DataLossError(
        absl::StrFormat("shm ring: consumer head %u is not a multiple of 8", head));
  }
  return absl::OkStatus();
}

bool RingWriter::TakeConsumerSleeping() {
  // Dekker with PrepareToSleep: our tail store, this fence, the flag load; its flag store, its
  // fence, its tail load. One of us sees the other's store. The relaxed load first keeps the
  // flag's cache line shared while the consumer is awake.
  FullFence();
  if (control_->consumer_sleeping.load(std::memory_order_relaxed) == 0) return false;
  return control_->consumer_sleeping.exchange(0) != 0;
}

bool RingWriter::HasSpace() {
  // A failed writer, or an impossible head, says yes: the Write that follows reports it.
  if (!failure_.ok()) return true;
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  if (!CheckHead(head).ok()) return true;
  return RecordRoom(capacity_, tail_ & (capacity_ - 1), head + capacity_ - tail_) > 0;
}

bool RingWriter::PrepareToSleep() {
  control_->producer_sleeping.store(1, std::memory_order_relaxed);
  FullFence();
  if (!HasSpace()) return true;
  StopSleeping();
  return false;
}

void RingWriter::StopSleeping() { control_->producer_sleeping.store(0, std::memory_order_relaxed); }

RingReader::RingReader(RingControl* control, const std::byte* data, size_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  assert(IsValidRingCapacity(capacity));
}

bool RingReader::HasData() const {
  // A failed reader says yes: the Read that follows reports it.
  if (failed()) return true;
  return control_->tail.load(std::memory_order_acquire) != head_;
}

absl::Status RingReader::Fail(absl::Status status) {
  failure_ = std::move(status);
  in_record_ = false;
  return failure_;
}

absl::Status RingReader::CheckTail(uint64_t tail) const {
  if (tail < last_tail_) {
    return absl::DataLossError(
        absl::StrFormat("shm ring: producer tail %u went back (it was %u)", tail, last_tail_));
  }
  if (tail - head_ > capacity_) {
    return absl::DataLossError(absl::StrFormat(
        "shm ring: producer tail %u is more than the capacity %u ahead of our head %u", tail,
        capacity_, head_));
  }
  if (tail % 8 != 0) {
    return absl::DataLossError(
        absl::StrFormat("shm ring: producer tail %u is not a multiple of 8", tail));
  }
  return absl::OkStatus();
}

absl::Status RingReader::CheckRecord(uint32_t length, uint32_t kind, uint64_t at,
                                     uint64_t available) const {
  const size_t offset = at & (capacity_ - 1);
  const size_t to_end = capacity_ - offset;
  if (kind == kRecordPad) {
    if (offset == 0) {
      return absl::DataLossError(
          absl::StrFormat("shm ring: pad record at %u starts at offset 0, not before the end", at));
    }
    if (length != to_end - kRecordHeader) {
      return absl::DataLossError(absl::StrFormat(
          "shm ring: pad record of length %u at %u does not reach exactly the end (%u bytes "
          "after its header)",
          length, at, to_end - kRecordHeader));
    }
    if (to_end > available) {
      return absl::DataLossError(absl::StrFormat(
          "shm ring: pad record at %u runs past the tail (%u bytes published)", at, available));
    }
    return absl::OkStatus();
  }
  if (kind != kRecordData) {
    return absl::DataLossError(
        absl::StrFormat("shm ring: record of unknown kind %u at %u", kind, at));
  }
  if (length == 0) {
    return absl::DataLossError(absl::StrFormat("shm ring: empty data record at %u", at));
  }
  const uint64_t size = kRecordHeader + Pad8(length);
  if (size > to_end) {
    return absl::DataLossError(absl::StrFormat(
        "shm ring: data record of length %u at %u crosses the end of the ring (%u bytes left)",
        length, at, to_end));
  }
  if (size > available) {
    return absl::DataLossError(absl::StrFormat(
        "shm ring: data record of length %u at %u runs past the tail (%u bytes published)", length,
        at, available));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> RingReader::Read(std::span<std::byte> into) {
  if (!failure_.ok()) return failure_;
  size_t copied = 0;
  uint64_t head = head_;
  // Loaded (once) only when a record header must be parsed; a partly copied record was checked
  // against an earlier tail already.
  bool have_tail = false;
  uint64_t tail = 0;
  while (copied < into.size()) {
    if (!in_record_) {
      if (!have_tail) {
        tail = control_->tail.load(std::memory_order_acquire);
        have_tail = true;
        if (absl::Status s = CheckTail(tail); !s.ok()) return Fail(std::move(s));
        last_tail_ = tail;
      }
      if (head == tail) break;
      const size_t offset = head & (capacity_ - 1);
      // The header is copied once into private memory; only the copy is looked at.
      RecordHeader header;
      std::memcpy(&header, data_ + offset, sizeof header);
      if (absl::Status s = CheckRecord(header.length, header.kind, head, tail - head); !s.ok()) {
        return Fail(std::move(s));
      }
      if (header.kind == kRecordPad) {
        head += capacity_ - offset;
        continue;
      }
      record_payload_ = head + kRecordHeader;
      record_length_ = header.length;
      record_copied_ = 0;
      in_record_ = true;
    }
    const size_t n = std::min<size_t>(record_length_ - record_copied_, into.size() - copied);
    std::memcpy(into.data() + copied, data_ + (record_payload_ & (capacity_ - 1)) + record_copied_,
                n);
    copied += n;
    record_copied_ += uint32_t(n);
    if (record_copied_ == record_length_) {
      head = record_payload_ + Pad8(record_length_);
      in_record_ = false;
    }
  }
  if (head != head_) {
    head_ = head;
    control_->head.store(head_, std::memory_order_release);
  }
  return copied;
}

bool RingReader::TakeProducerSleeping() {
  // Dekker with RingWriter::PrepareToSleep, as in TakeConsumerSleeping.
  FullFence();
  if (control_->producer_sleeping.load(std::memory_order_relaxed) == 0) return false;
  return control_->producer_sleeping.exchange(0) != 0;
}

bool RingReader::PrepareToSleep() {
  control_->consumer_sleeping.store(1, std::memory_order_relaxed);
  FullFence();
  if (!HasData()) return true;
  StopSleeping();
  return false;
}

void RingReader::StopSleeping() { control_->consumer_sleeping.store(0, std::memory_order_relaxed); }

}  // namespace courier::transport::shm
