// One direction of a shm:// connection: a single-producer single-consumer ring of
// variable-length records in shared memory. Transport-layer internals (transport/shm/ only, and
// its tests and fuzz target).
//
// Layout. A ring is a RingControl block plus a data area of `capacity` bytes (a power of two),
// both inside the memfd segment (segment.h). Head and tail are 64-bit byte counters that only
// grow; a position in the data area is counter % capacity. The producer owns tail and the
// consumer owns head, each on its own cache line.
//
// Records. A record is an 8-byte header {uint32 length, uint32 kind} and `length` payload bytes,
// padded to a multiple of 8. A record never straddles the end of the data area: when the bytes
// left before the end are too few (RingWriter: only a header's 8; it fills a longer gap with a
// fragment), the producer first writes a kPad record covering exactly those bytes (its length is
// what it covers after its header) and starts the data record at offset 0. A data record holds
// at most max_record_payload() = capacity/2 - 8 bytes, so a pad plus a record always fit into an
// empty ring. A write larger than that, or larger than the free space, is split into several
// records (fragments): the ring carries a byte stream, and the reader joins the fragments by
// copying them one after the other.
//
// Publication. The producer writes records, then stores tail with release ordering; the consumer
// loads tail with acquire ordering, copies what it needs, and stores head with release ordering.
// A record is delivered only once tail covers it, so a producer that dies mid-write never
// delivers a half-written record.
//
// Sleeping. A side that would wait announces it first (consumer_sleeping: "tell me when data
// comes"; producer_sleeping: "tell me when space frees"), then re-checks with a full fence
// between its store and its load; the other side, after publishing, fences and takes the flag
// (exchange to 0). Whoever took a set flag rings the sleeper's eventfd. So a message costs no
// system call while the other side is awake (spinning or busy), and a wake-up is never lost.
//
// The peer is not trusted. The reader and writer keep their own copy of the geometry (capacity,
// and their own counter); every value read from shared memory (the peer's counter, a record
// header) is loaded once into a local, checked against that private state, and only then used.
// An impossible value is kDataLoss, and the ring stays failed from then on. Payload bytes are
// copied into private memory before anyone parses them. Nothing the peer writes can make us
// read or write outside the data area.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/buffer.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace courier::transport::shm {

inline constexpr size_t kCacheLine = 64;
inline constexpr size_t kRecordHeader = 8;
inline constexpr uint32_t kRecordData = 1;
inline constexpr uint32_t kRecordPad = 2;
// Ring capacities allowed (each a power of two).
inline constexpr size_t kMinRingCapacity = size_t{4} << 10;    // 4 KiB
inline constexpr size_t kMaxRingCapacity = size_t{256} << 20;  // 256 MiB

// In shared memory; 4 cache lines. All fields are written by one side only, except the two
// sleeping flags, which the waiting side sets and the waking side clears.
struct RingControl {
  alignas(kCacheLine) std::atomic<uint64_t> tail;               // producer: bytes published
  alignas(kCacheLine) std::atomic<uint64_t> head;               // consumer: bytes consumed
  alignas(kCacheLine) std::atomic<uint32_t> consumer_sleeping;  // consumer waits for data
  alignas(kCacheLine) std::atomic<uint32_t> producer_sleeping;  // producer waits for space
};
static_assert(sizeof(RingControl) == 4 * kCacheLine);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

// One step of a loop that polls a ring: tells the CPU that this is a spin (less power, and the
// other hyperthread runs), as the transport and the bench's raw floor both poll.
inline void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// True if `capacity` is a power of two in [kMinRingCapacity, kMaxRingCapacity].
bool IsValidRingCapacity(size_t capacity);

// Zeroes a ring's control block (the creator does this once, before the peer maps it).
void InitRing(RingControl* control);

// The producing side. Not thread-safe; one per ring.
class RingWriter {
 public:
  // `data` points at `capacity` bytes; capacity must satisfy IsValidRingCapacity. The ring must be
  // fresh (InitRing): the writer starts at tail 0 and never reads back a counter the peer could
  // have set.
  RingWriter(RingControl* control, std::byte* data, size_t capacity);

  // Copies as much of `data` (the buffers in order) as fits now into records, then publishes
  // them all with one release store of tail. Returns the number of bytes taken (0: the ring is
  // full). kDataLoss if the consumer's head is impossible (behind what it had already consumed,
  // ahead of our tail, or not a multiple of 8); the writer is failed from then on.
  absl::StatusOr<size_t> Write(std::span<const asio::const_buffer> data);
  // After a Write that took bytes: true if the consumer had announced that it sleeps (the flag
  // is cleared here); the caller then rings the consumer's eventfd.
  bool TakeConsumerSleeping();

  // True if a record of at least one payload byte fits now (also when the writer is failed or
  // the head is impossible: the next Write reports it).
  bool HasSpace();
  // Announces that we wait for space and re-checks: true if the ring is still full (sleep now;
  // the consumer will ring our eventfd), false if space appeared meanwhile (the announcement is
  // withdrawn; write again).
  bool PrepareToSleep();
  // Withdraws an announcement (after waking for any reason).
  void StopSleeping();

  size_t capacity() const { return capacity_; }
  size_t max_record_payload() const { return capacity_ / 2 - kRecordHeader; }
  // Bytes published so far (our private tail).
  uint64_t tail() const { return tail_; }
  bool failed() const { return !failure_.ok(); }

 private:
  // OK if the consumer's `head` is possible given what we know privately.
  absl::Status CheckHead(uint64_t head) const;

  RingControl* control_;
  std::byte* data_;
  size_t capacity_;
  uint64_t tail_ = 0;       // private: what we published
  uint64_t last_head_ = 0;  // private: the consumer's head as last seen (it only grows)
  absl::Status failure_;    // sticky
};

// The consuming side. Not thread-safe; one per ring.
class RingReader {
 public:
  RingReader(RingControl* control, const std::byte* data, size_t capacity);

  // True if the producer has published bytes we have not read (one acquire load; for spinning).
  // May be true for a tail that Read then finds impossible, and is true once failed.
  bool HasData() const;

  // Copies up to `into.size()` published payload bytes into `into`, in order, joining records;
  // a record copied only in part is remembered and continued by the next Read. Records wholly
  // copied are consumed (head advances, release). Returns the count; 0 if nothing is published.
  // kDataLoss naming the problem if the tail or a record header is impossible (the tail behind
  // where it was, more than `capacity` ahead of our head, or not a multiple of 8; an unknown
  // kind, a length past the tail, a record crossing the end of the data area, a pad that does
  // not reach the end exactly or starts at offset 0, an empty data record); the reader is failed
  // from then on and every later Read says so again.
  absl::StatusOr<size_t> Read(std::span<std::byte> into);
  // After a Read that consumed records: true if the producer had announced that it waits for
  // space (the flag is cleared here); the caller then rings the producer's eventfd.
  bool TakeProducerSleeping();

  // Announces that we sleep and re-checks: true if still nothing is published (sleep now), false
  // if data came meanwhile (announcement withdrawn; read again).
  bool PrepareToSleep();
  void StopSleeping();

  size_t capacity() const { return capacity_; }
  uint64_t head() const { return head_; }
  bool failed() const { return !failure_.ok(); }

 private:
  // OK if the producer's `tail` is possible given what we know privately.
  absl::Status CheckTail(uint64_t tail) const;
  // OK if a record header (our private copy) read at counter `at`, with `available` bytes
  // published from there, is possible.
  absl::Status CheckRecord(uint32_t length, uint32_t kind, uint64_t at, uint64_t available) const;
  // Makes `status` the sticky failure and returns it.
  absl::Status Fail(absl::Status status);

  RingControl* control_;
  const std::byte* data_;
  size_t capacity_;
  uint64_t head_ = 0;       // private: start of the current (possibly partly copied) record
  uint64_t last_tail_ = 0;  // private: the producer's tail as last seen (it only grows)
  // The record being copied, validated once: its payload's position and length, and how much
  // of it the caller already has.
  uint64_t record_payload_ = 0;
  uint32_t record_length_ = 0;
  uint32_t record_copied_ = 0;
  bool in_record_ = false;
  absl::Status failure_;
};

}  // namespace courier::transport::shm
