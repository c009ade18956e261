// libFuzzer target for the shm ring (ring.h): RingReader and RingWriter over arbitrary segment
// contents and operation sequences, the peer's hostile writes among them. Input (integers
// little-endian; bytes past the end read as 0):
//   u8 capacity: 4 KiB << (value % 5)
//   u8 setup:    bit 0: the control block starts from the fill bytes too (a hostile start)
//   u8 L, L bytes: the fill, repeated over the data area (zeros if L is 0)
// then operations, each a byte (value % 16) and its arguments:
//   0 Write       u16 size, u8 split, u8 L, L bytes: `size` bytes, the L bytes repeated (or a
//                 position pattern if L is 0), in 1..3 buffers cut where `split` says
//   1 Read        u16 size            2 Read     u8 size
//   3 poke tail   u8 mode, then (mode bit 0) i32 added to the tail, else u64 stored
//   4 poke head   the same
//   5 poke flag   u8 which (bit 0: producer_sleeping, else consumer_sleeping), u32 value
//   6 poke bytes  u16 offset, u8 L, L bytes (cut at the end of the data area)
//   7 poke header u16 offset (rounded down to 8), u32 length, u8 kind
//   8/9 reader PrepareToSleep/StopSleeping     10/11 writer PrepareToSleep/StopSleeping
//   12 HasData    13 HasSpace    14 TakeConsumerSleeping    15 TakeProducerSleeping
// Checks: nothing outside the data area is touched (ASan: the data area is its own allocation,
// and each Read gets a buffer of exactly its size); a Read or Write never returns more than
// asked; a failure is kDataLoss and stays so. While no poke happened since the start, nothing
// fails, the bytes read are exactly the bytes written, HasData/HasSpace agree with what Read and
// Write then do, and (no flag pokes either) each announced sleep is taken exactly once.
#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/buffer.hpp"
#include "tests/fuzz/fuzz_check.h"
#include "transport/shm/ring.h"

namespace courier::transport::shm {
namespace {

// The input, consumed from the front.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return size_ == 0; }
  uint8_t U8() {
    if (size_ == 0) return 0;
    --size_;
    return *data_++;
  }
  uint64_t Uint(int bytes) {
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v |= uint64_t(U8()) << (8 * i);
    return v;
  }
  // Up to `size` bytes (fewer at the end of the input).
  std::span<const uint8_t> Bytes(size_t size) {
    size = std::min(size, size_);
    std::span<const uint8_t> out(data_, size);
    data_ += size;
    size_ -= size;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
};

// Fills `out` with `fill` repeated, or (`fill` empty) with a pattern of the stream position.
void Tile(std::span<const uint8_t> fill, uint64_t position, std::span<std::byte> out) {
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = fill.empty() ? std::byte(((position + i) * 131 + (position + i) / 251) & 0xFF)
                          : std::byte(fill[i % fill.size()]);
  }
}

// memcmp, for which null (an empty vector's data()) is undefined even with no bytes.
bool SameBytes(const std::byte* a, const std::byte* b, size_t size) {
  return size == 0 || std::memcmp(a, b, size) == 0;
}

void CheckFailure(const absl::Status& status) {
  FUZZ_CHECK(status.code() == absl::StatusCode::kDataLoss);
  FUZZ_CHECK(!status.message().empty());
}

constexpr size_t kMaxOps = 4096;

void Run(const uint8_t* data, size_t size) {
  Input in(data, size);
  const size_t capacity = kMinRingCapacity << (in.U8() % 5);
  const uint8_t setup = in.U8();
  const std::span<const uint8_t> fill = in.Bytes(in.U8());

  RingControl control{};
  InitRing(&control);
  std::vector<std::byte> area(capacity);
  Tile(fill, 0, area);
  if ((setup & 1) != 0 && !fill.empty()) {
    std::vector<std::byte> bytes(4 * 8);
    Tile(fill, 0, bytes);
    uint64_t v[4];
    std::memcpy(v, bytes.data(), sizeof v);
    control.tail.store(v[0]);
    control.head.store(v[1]);
    control.consumer_sleeping.store(uint32_t(v[2]));
    control.producer_sleeping.store(uint32_t(v[3]));
  }
  RingWriter writer(&control, area.data(), capacity);
  RingReader reader(&control, area.data(), capacity);

  // honest: no hostile start and no poke of a counter or the data area so far; honest_flags: no
  // poke of a sleeping flag either.
  bool honest = (setup & 1) == 0 || fill.empty();
  bool honest_flags = honest;
  // Honest: the bytes written and not yet read, in order, from `pending_start`.
  std::vector<std::byte> pending;
  size_t pending_start = 0;
  uint64_t written = 0;  // payload bytes taken by the writer
  bool consumer_announced = false, producer_announced = false;
  absl::Status reader_failure, writer_failure;

  auto pending_size = [&] { return pending.size() - pending_start; };
  auto check_honest_counters = [&] {
    if (!honest) return;
    FUZZ_CHECK(reader.head() <= writer.tail());
    FUZZ_CHECK(writer.tail() - reader.head() <= capacity);
    FUZZ_CHECK(control.tail.load() == writer.tail());
    FUZZ_CHECK(control.head.load() == reader.head());
  };

  for (size_t ops = 0; ops < kMaxOps && !in.empty(); ++ops) {
    const uint8_t op = in.U8() % 16;
    switch (op) {
      case 0: {
        const size_t want = in.Uint(2);
        const uint8_t split = in.U8();
        const std::span<const uint8_t> bytes = in.Bytes(in.U8());
        std::vector<std::byte> payload(want);
        Tile(bytes, written, payload);
        // Up to three buffers (the middle one may be empty).
        const size_t cut1 = want == 0 ? 0 : (split & 0x0F) * want / 15;
        const size_t cut2 = cut1 + (want == 0 ? 0 : (split >> 4) * (want - cut1) / 15);
        const asio::const_buffer buffers[] = {asio::buffer(payload.data(), cut1),
                                              asio::buffer(payload.data() + cut1, cut2 - cut1),
                                              asio::buffer(payload.data() + cut2, want - cut2)};
        const bool space = honest ? writer.HasSpace() : true;
        absl::StatusOr<size_t> n = writer.Write(buffers);
        if (!writer_failure.ok()) {
          FUZZ_CHECK(!n.ok() && n.status() == writer_failure);
          FUZZ_CHECK(writer.failed());
          break;
        }
        if (!n.ok()) {
          FUZZ_CHECK(!honest);
          CheckFailure(n.status());
          FUZZ_CHECK(writer.failed());
          writer_failure = n.status();
          break;
        }
        FUZZ_CHECK(!writer.failed());
        FUZZ_CHECK(*n <= want);
        if (honest) {
          if (want > 0) FUZZ_CHECK((*n > 0) == space);
          if (*n < want) FUZZ_CHECK(!writer.HasSpace());
          if (pending_start > 4 * capacity) {
            pending.erase(pending.begin(),
                          pending.begin() + static_cast<std::ptrdiff_t>(pending_start));
            pending_start = 0;
          }
          pending.insert(pending.end(), payload.begin(),
                         payload.begin() + static_cast<std::ptrdiff_t>(*n));
          FUZZ_CHECK(pending_size() <= capacity);
        }
        written += *n;
        check_honest_counters();
        break;
      }
      case 1:
      case 2: {
        const size_t want = in.Uint(op == 1 ? 2 : 1);
        std::vector<std::byte> into(want);
        const bool data_there = honest ? reader.HasData() : true;
        absl::StatusOr<size_t> n = reader.Read(into);
        if (!reader_failure.ok()) {
          FUZZ_CHECK(!n.ok() && n.status() == reader_failure);
          FUZZ_CHECK(reader.failed() && reader.HasData());
          break;
        }
        if (!n.ok()) {
          FUZZ_CHECK(!honest);
          CheckFailure(n.status());
          FUZZ_CHECK(reader.failed() && reader.HasData());
          reader_failure = n.status();
          break;
        }
        FUZZ_CHECK(!reader.failed());
        FUZZ_CHECK(*n <= want);
        if (honest) {
          FUZZ_CHECK(data_there == (pending_size() > 0));
          FUZZ_CHECK(*n == std::min(want, pending_size()));
          FUZZ_CHECK(SameBytes(into.data(), pending.data() + pending_start, *n));
          pending_start += *n;
          FUZZ_CHECK(reader.HasData() == (pending_size() > 0));
        }
        check_honest_counters();
        break;
      }
      case 3:
      case 4: {
        std::atomic<uint64_t>& counter = op == 3 ? control.tail : control.head;
        const uint8_t mode = in.U8();
        if ((mode & 1) != 0) {
          counter.store(counter.load() + uint64_t(int64_t(int32_t(in.Uint(4)))));
        } else {
          counter.store(in.Uint(8));
        }
        honest = honest_flags = false;
        break;
      }
      case 5: {
        std::atomic<uint32_t>& flag =
            (in.U8() & 1) != 0 ? control.producer_sleeping : control.consumer_sleeping;
        flag.store(uint32_t(in.Uint(4)));
        honest_flags = false;
        break;
      }
      case 6: {
        const size_t offset = in.Uint(2) & (capacity - 1);
        const std::span<const uint8_t> bytes = in.Bytes(in.U8());
        const size_t n = std::min(bytes.size(), capacity - offset);
        std::memcpy(area.data() + offset, bytes.data(), n);
        honest = honest_flags = false;
        break;
      }
      case 7: {
        const size_t offset = in.Uint(2) & (capacity - 1) & ~size_t{7};
        const uint32_t header[2] = {uint32_t(in.Uint(4)), in.U8()};
        std::memcpy(area.data() + offset, header, sizeof header);
        honest = honest_flags = false;
        break;
      }
      case 8: {
        const bool sleeps = reader.PrepareToSleep();
        if (reader.failed()) FUZZ_CHECK(!sleeps);
        if (honest) FUZZ_CHECK(sleeps == (pending_size() == 0));
        // A refused sleep withdraws the announcement.
        if (honest_flags) FUZZ_CHECK(control.consumer_sleeping.load() == (sleeps ? 1u : 0u));
        consumer_announced = sleeps;
        break;
      }
      case 9:
        reader.StopSleeping();
        if (honest_flags) FUZZ_CHECK(control.consumer_sleeping.load() == 0);
        consumer_announced = false;
        break;
      case 10: {
        const bool sleeps = writer.PrepareToSleep();
        if (writer.failed()) FUZZ_CHECK(!sleeps);
        if (honest) FUZZ_CHECK(sleeps == !writer.HasSpace());
        if (honest_flags) FUZZ_CHECK(control.producer_sleeping.load() == (sleeps ? 1u : 0u));
        producer_announced = sleeps;
        break;
      }
      case 11:
        writer.StopSleeping();
        if (honest_flags) FUZZ_CHECK(control.producer_sleeping.load() == 0);
        producer_announced = false;
        break;
      case 12: {
        const bool has = reader.HasData();
        if (reader.failed()) FUZZ_CHECK(has);
        if (honest) FUZZ_CHECK(has == (pending_size() > 0));
        break;
      }
      case 13: {
        const bool has = writer.HasSpace();
        if (writer.failed()) FUZZ_CHECK(has);
        break;
      }
      case 14: {
        const bool taken = writer.TakeConsumerSleeping();
        if (honest_flags) FUZZ_CHECK(taken == consumer_announced);
        FUZZ_CHECK(control.consumer_sleeping.load() == 0 || !taken);
        consumer_announced = false;
        break;
      }
      case 15: {
        const bool taken = reader.TakeProducerSleeping();
        if (honest_flags) FUZZ_CHECK(taken == producer_announced);
        producer_announced = false;
        break;
      }
    }
  }

  // Failures stay: once more, the same status.
  if (!reader_failure.ok()) {
    std::byte one[1];
    FUZZ_CHECK(reader.Read(one).status() == reader_failure);
  }
  if (!writer_failure.ok()) {
    const asio::const_buffer buffer("x", 1);
    FUZZ_CHECK(writer.Write({&buffer, 1}).status() == writer_failure);
  }
  // Honest to the end: the reader drains exactly what is pending.
  if (honest) {
    std::vector<std::byte> rest(pending_size() + 1);
    absl::StatusOr<size_t> n = reader.Read(rest);
    FUZZ_CHECK(n.ok() && *n == pending_size());
    FUZZ_CHECK(SameBytes(rest.data(), pending.data() + pending_start, *n));
    FUZZ_CHECK(!reader.HasData());
    FUZZ_CHECK(reader.head() == writer.tail());
  }
}

}  // namespace
}  // namespace courier::transport::shm

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  courier::transport::shm::Run(data, size);
  return 0;
}
