// Pure tests of the shm ring (no memory mapped): round trips, gathering, fragmentation, the pad
// at the wrap, partial reads, the sleep protocol, one test per hostile-peer check, and two-thread
// stress runs, spinning and sleeping.
#include "transport/shm/ring.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <random>
#include <semaphore>
#include <span>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/buffer.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace courier::transport::shm {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t k4KiB = size_t{4} << 10;
constexpr size_t k64KiB = size_t{64} << 10;

// A ring in private memory, sized exactly, so that ASan sees any access outside the data area.
struct TestRing {
  explicit TestRing(size_t capacity = k4KiB)
      : data(capacity),
        writer(&control, data.data(), capacity),
        reader(&control, data.data(), capacity) {
    InitRing(&control);
  }

  RingControl control{};
  std::vector<std::byte> data;
  RingWriter writer;
  RingReader reader;
};

// Bytes that depend on their position in the stream, so a misplaced byte shows.
std::vector<std::byte> Pattern(size_t size, size_t from = 0) {
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) {
    const size_t at = from + i;
    out[i] = std::byte((at * 131 + at / 251) & 0xFF);
  }
  return out;
}

absl::StatusOr<size_t> WriteBytes(RingWriter& writer, std::span<const std::byte> bytes) {
  const asio::const_buffer buffer(bytes.data(), bytes.size());
  return writer.Write({&buffer, 1});
}

// Reads up to `size` bytes; the bytes read, or the error.
absl::StatusOr<std::vector<std::byte>> ReadBytes(RingReader& reader, size_t size) {
  std::vector<std::byte> out(size);
  absl::StatusOr<size_t> n = reader.Read(out);
  if (!n.ok()) return n.status();
  out.resize(*n);
  return out;
}

// Puts a record header straight into the data area, as a hostile producer would.
void PokeHeader(TestRing& ring, size_t offset, uint32_t length, uint32_t kind) {
  const uint32_t header[2] = {length, kind};
  std::memcpy(ring.data.data() + offset, header, sizeof header);
}

uint64_t Record(size_t payload) { return kRecordHeader + (payload + 7) / 8 * 8; }

TEST(Ring, ValidCapacitiesArePowersOfTwoInRange) {
  EXPECT_TRUE(IsValidRingCapacity(k4KiB));
  EXPECT_TRUE(IsValidRingCapacity(k64KiB));
  EXPECT_TRUE(IsValidRingCapacity(kMaxRingCapacity));
  EXPECT_FALSE(IsValidRingCapacity(0));
  EXPECT_FALSE(IsValidRingCapacity(k4KiB / 2));
  EXPECT_FALSE(IsValidRingCapacity(k4KiB + 8));
  EXPECT_FALSE(IsValidRingCapacity(kMaxRingCapacity * 2));
}

TEST(Ring, RoundTripsSmallWrites) {
  TestRing ring;
  for (size_t size : {1, 7, 8, 9, 100}) {
    SCOPED_TRACE(absl::StrCat("size ", size));
    const std::vector<std::byte> bytes = Pattern(size, size);
    absl::StatusOr<size_t> written = WriteBytes(ring.writer, bytes);
    ASSERT_THAT(written, IsOk());
    EXPECT_EQ(*written, size);
    absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 1000);
    ASSERT_THAT(read, IsOk());
    EXPECT_EQ(*read, bytes);
    EXPECT_EQ(ring.reader.head(), ring.writer.tail());
  }
  EXPECT_EQ(ring.writer.tail(), Record(1) + Record(7) + Record(8) + Record(9) + Record(100));
}

TEST(Ring, WritesOneRecordPerWriteAndPublishesOnce) {
  TestRing ring;
  const std::vector<std::byte> bytes = Pattern(13);
  ASSERT_THAT(WriteBytes(ring.writer, bytes), IsOk());
  uint32_t header[2];
  std::memcpy(header, ring.data.data(), sizeof header);
  EXPECT_EQ(header[0], 13u);
  EXPECT_EQ(header[1], kRecordData);
  EXPECT_EQ(ring.control.tail.load(), Record(13));
  EXPECT_EQ(0, std::memcmp(ring.data.data() + kRecordHeader, bytes.data(), bytes.size()));
}

TEST(Ring, RoundTripsAWriteLargerThanARecord) {
  TestRing ring(k64KiB);
  const size_t size = 3 * ring.writer.max_record_payload() + 5;
  const std::vector<std::byte> bytes = Pattern(size);
  absl::StatusOr<size_t> written = WriteBytes(ring.writer, bytes);
  ASSERT_THAT(written, IsOk());
  ASSERT_LT(*written, size);                                  // more than the ring holds
  EXPECT_EQ(*written, 2 * ring.writer.max_record_payload());  // two records fill the ring
  std::vector<std::byte> out;
  size_t offset = *written;
  while (out.size() < size) {
    absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 70000);
    ASSERT_THAT(read, IsOk());
    ASSERT_FALSE(read->empty());
    out.insert(out.end(), read->begin(), read->end());
    if (offset < size) {
      written = WriteBytes(ring.writer, std::span(bytes).subspan(offset));
      ASSERT_THAT(written, IsOk());
      offset += *written;
    }
  }
  EXPECT_EQ(out, bytes);
}

// Empty buffers, one with a null data(), are skipped.
TEST(Ring, GatherWritePacksBuffersIntoOneRecord) {
  TestRing ring;
  const std::vector<std::byte> bytes = Pattern(3 + 0 + 5 + 7);
  const asio::const_buffer buffers[] = {
      asio::buffer(bytes.data(), 3), asio::const_buffer(), asio::buffer(bytes.data() + 3, 0),
      asio::buffer(bytes.data() + 3, 5), asio::buffer(bytes.data() + 8, 7)};
  absl::StatusOr<size_t> written = ring.writer.Write(buffers);
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, bytes.size());
  EXPECT_EQ(ring.writer.tail(), Record(bytes.size()));  // one record
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, bytes);
}

TEST(Ring, GatherWriteSplitsAcrossRecordsMidBuffer) {
  TestRing ring;
  const size_t max = ring.writer.max_record_payload();
  const std::vector<std::byte> bytes = Pattern(max + 100);
  // The record boundary falls inside the second buffer.
  const asio::const_buffer buffers[] = {asio::buffer(bytes.data(), max - 10),
                                        asio::buffer(bytes.data() + max - 10, 60),
                                        asio::buffer(bytes.data() + max + 50, 50)};
  absl::StatusOr<size_t> written = ring.writer.Write(buffers);
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, bytes.size());
  EXPECT_EQ(ring.writer.tail(), Record(max) + Record(100));
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 2 * max);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, bytes);
}

TEST(Ring, EmptyWriteTakesNothingAndPublishesNothing) {
  TestRing ring;
  absl::StatusOr<size_t> written = ring.writer.Write({});
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, 0u);
  EXPECT_EQ(ring.control.tail.load(), 0u);
  EXPECT_FALSE(ring.reader.HasData());
}

// Moves both counters to `offset` through honest traffic.
void AdvanceTo(TestRing& ring, size_t offset) {
  while (ring.writer.tail() < offset) {
    const size_t left = offset - ring.writer.tail();
    const size_t payload = std::min<size_t>(left - kRecordHeader, ring.writer.max_record_payload());
    ASSERT_THAT(WriteBytes(ring.writer, Pattern(payload)), IsOk());
    ASSERT_THAT(ReadBytes(ring.reader, payload), IsOk());
  }
  ASSERT_EQ(ring.writer.tail(), offset);
  ASSERT_EQ(ring.reader.head(), offset);
}

TEST(Ring, PadsTheLastEightBytesBeforeTheEnd) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - kRecordHeader);
  const std::vector<std::byte> bytes = Pattern(10);
  absl::StatusOr<size_t> written = WriteBytes(ring.writer, bytes);
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, 10u);
  uint32_t pad[2];
  std::memcpy(pad, ring.data.data() + k4KiB - kRecordHeader, sizeof pad);
  EXPECT_EQ(pad[0], 0u);
  EXPECT_EQ(pad[1], kRecordPad);
  uint32_t data[2];
  std::memcpy(data, ring.data.data(), sizeof data);
  EXPECT_EQ(data[0], 10u);
  EXPECT_EQ(data[1], kRecordData);
  EXPECT_EQ(ring.writer.tail(), k4KiB + Record(10));
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, bytes);
  EXPECT_EQ(ring.reader.head(), ring.writer.tail());
}

TEST(Ring, FillsTheBytesBeforeTheEndRatherThanPadding) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - 64);
  const std::vector<std::byte> bytes = Pattern(100);
  absl::StatusOr<size_t> written = WriteBytes(ring.writer, bytes);
  ASSERT_THAT(written, IsOk());
  EXPECT_EQ(*written, 100u);
  // 56 bytes up to the end, then 44 from offset 0: no byte wasted on a pad.
  EXPECT_EQ(ring.writer.tail(), k4KiB + Record(44));
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, bytes);
}

TEST(Ring, ReadsAPadAtTheEndWrittenByAnotherProducer) {
  // Our writer pads only the last 8 bytes; the reader accepts any pad that reaches the end.
  TestRing ring;
  AdvanceTo(ring, k4KiB - 64);
  PokeHeader(ring, k4KiB - 64, 64 - kRecordHeader, kRecordPad);
  PokeHeader(ring, 0, 3, kRecordData);
  std::memcpy(ring.data.data() + kRecordHeader, "abc", 3);
  ring.control.tail.store(k4KiB + Record(3));
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  ASSERT_EQ(read->size(), 3u);
  EXPECT_EQ(std::memcmp(read->data(), "abc", 3), 0);
  EXPECT_EQ(ring.control.head.load(), k4KiB + Record(3));
}

// Many writes of odd sizes through a small ring, with reads of other odd sizes in between, so
// records wrap at every offset: the byte stream comes out intact.
TEST(Ring, WrapsAroundManyTimesWithPartialReads) {
  TestRing ring;
  const size_t total = 200 * k4KiB;
  const std::vector<std::byte> stream = Pattern(total);
  std::mt19937 random(7);
  size_t written = 0;
  std::vector<std::byte> out;
  out.reserve(total);
  std::vector<std::byte> chunk(3 * k4KiB);
  while (out.size() < total) {
    if (written < total) {
      const size_t size = std::min<size_t>(total - written, 1 + random() % 3000);
      // Two buffers, split at a random point.
      const size_t split = random() % (size + 1);
      const asio::const_buffer buffers[] = {
          asio::buffer(stream.data() + written, split),
          asio::buffer(stream.data() + written + split, size - split)};
      absl::StatusOr<size_t> n = ring.writer.Write(buffers);
      ASSERT_THAT(n, IsOk());
      written += *n;
    }
    const size_t want = 1 + random() % (random() % 2 ? 13 : 2500);
    absl::StatusOr<size_t> n = ring.reader.Read(std::span(chunk).first(want));
    ASSERT_THAT(n, IsOk());
    ASSERT_LE(*n, want);
    out.insert(out.end(), chunk.begin(), chunk.begin() + static_cast<std::ptrdiff_t>(*n));
  }
  EXPECT_EQ(out, stream);
  EXPECT_EQ(ring.reader.head(), ring.writer.tail());
  EXPECT_GT(ring.writer.tail(), 150 * k4KiB);
}

TEST(Ring, WriteBiggerThanTheRingIsTakenInParts) {
  TestRing ring;
  const std::vector<std::byte> bytes = Pattern(5 * k4KiB + 3);
  size_t offset = 0;
  std::vector<std::byte> out;
  while (out.size() < bytes.size()) {
    absl::StatusOr<size_t> n = WriteBytes(ring.writer, std::span(bytes).subspan(offset));
    ASSERT_THAT(n, IsOk());
    if (offset < bytes.size()) {
      EXPECT_GT(*n, 0u);
      EXPECT_LE(*n, k4KiB);
    }
    offset += *n;
    // A full ring takes nothing more.
    absl::StatusOr<size_t> again = WriteBytes(ring.writer, std::span(bytes).subspan(offset));
    ASSERT_THAT(again, IsOk());
    if (offset < bytes.size()) {
      EXPECT_EQ(*again, 0u);
    }
    absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, bytes.size());
    ASSERT_THAT(read, IsOk());
    out.insert(out.end(), read->begin(), read->end());
  }
  EXPECT_EQ(out, bytes);
}

TEST(Ring, PartlyCopiedRecordIsConsumedOnlyWhenFullyCopied) {
  TestRing ring;
  const std::vector<std::byte> bytes = Pattern(100);
  ASSERT_THAT(WriteBytes(ring.writer, bytes), IsOk());
  std::vector<std::byte> out;
  for (size_t want : {1, 2, 30, 60}) {
    absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, want);
    ASSERT_THAT(read, IsOk());
    EXPECT_EQ(read->size(), want);
    out.insert(out.end(), read->begin(), read->end());
    EXPECT_EQ(ring.control.head.load(), 0u);
    EXPECT_TRUE(ring.reader.HasData());
  }
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(read->size(), 7u);
  out.insert(out.end(), read->begin(), read->end());
  EXPECT_EQ(out, bytes);
  EXPECT_EQ(ring.control.head.load(), Record(100));
  EXPECT_FALSE(ring.reader.HasData());
}

TEST(Ring, ReadJoinsSeveralRecords) {
  TestRing ring;
  const std::vector<std::byte> bytes = Pattern(3 + 9 + 20);
  ASSERT_THAT(WriteBytes(ring.writer, std::span(bytes).first(3)), IsOk());
  ASSERT_THAT(WriteBytes(ring.writer, std::span(bytes).subspan(3, 9)), IsOk());
  ASSERT_THAT(WriteBytes(ring.writer, std::span(bytes).subspan(12)), IsOk());
  // Ends inside the third record: the first two are consumed, the third is not.
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 15);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, std::vector<std::byte>(bytes.begin(), bytes.begin() + 15));
  EXPECT_EQ(ring.control.head.load(), Record(3) + Record(9));
  read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  EXPECT_EQ(*read, std::vector<std::byte>(bytes.begin() + 15, bytes.end()));
}

TEST(Ring, ReadOfNothingPublishedReturnsZero) {
  TestRing ring;
  absl::StatusOr<std::vector<std::byte>> read = ReadBytes(ring.reader, 100);
  ASSERT_THAT(read, IsOk());
  EXPECT_TRUE(read->empty());
  read = ReadBytes(ring.reader, 0);
  ASSERT_THAT(read, IsOk());
  EXPECT_TRUE(read->empty());
}

TEST(Ring, FullRingTakesNothingAndHasNoSpace) {
  TestRing ring;
  EXPECT_TRUE(ring.writer.HasSpace());
  EXPECT_FALSE(ring.reader.HasData());
  const std::vector<std::byte> bytes = Pattern(2 * k4KiB);
  absl::StatusOr<size_t> n = WriteBytes(ring.writer, bytes);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 2 * ring.writer.max_record_payload());
  EXPECT_EQ(ring.writer.tail(), k4KiB);
  EXPECT_FALSE(ring.writer.HasSpace());
  EXPECT_TRUE(ring.reader.HasData());
  n = WriteBytes(ring.writer, bytes);
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(ring.control.tail.load(), k4KiB);
  // A partial read frees nothing; a whole record frees its bytes.
  ASSERT_THAT(ReadBytes(ring.reader, 10), IsOk());
  EXPECT_FALSE(ring.writer.HasSpace());
  ASSERT_THAT(ReadBytes(ring.reader, ring.writer.max_record_payload() - 10), IsOk());
  EXPECT_TRUE(ring.writer.HasSpace());
}

TEST(Ring, SpaceForOnlyAHeaderIsNoSpace) {
  TestRing ring;
  // Leave exactly 8 bytes free (a header, no payload byte).
  const size_t max = ring.writer.max_record_payload();
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(max)), IsOk());
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(max - 8)), IsOk());
  EXPECT_EQ(ring.writer.tail(), k4KiB - kRecordHeader);
  EXPECT_FALSE(ring.writer.HasSpace());
  absl::StatusOr<size_t> n = WriteBytes(ring.writer, Pattern(1));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(ring.writer.tail(), k4KiB - kRecordHeader);
}

TEST(Ring, PadIsWrittenOnlyWithARecordAfterIt) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - kRecordHeader);
  const size_t max = ring.writer.max_record_payload();
  // Pad + 8 bytes at offset 0, then records up to 8 bytes before the end again.
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(8)), IsOk());
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(max)), IsOk());
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(max - 24)), IsOk());
  ASSERT_EQ(ring.writer.tail(), 2 * k4KiB - kRecordHeader);
  // 16 bytes free (a consumer at offset 8; the writer cannot tell it is no record boundary): a
  // pad would leave only a header's worth after the wrap, so nothing is written, not even it.
  ring.control.head.store(ring.writer.tail() - k4KiB + 16);
  EXPECT_FALSE(ring.writer.HasSpace());
  absl::StatusOr<size_t> n = WriteBytes(ring.writer, Pattern(100));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 0u);
  EXPECT_EQ(ring.control.tail.load(), 2 * k4KiB - kRecordHeader);
  // 24 bytes free: the pad and an 8-byte record.
  ring.control.head.store(ring.writer.tail() - k4KiB + 24);
  EXPECT_TRUE(ring.writer.HasSpace());
  n = WriteBytes(ring.writer, Pattern(100));
  ASSERT_THAT(n, IsOk());
  EXPECT_EQ(*n, 8u);
  EXPECT_EQ(ring.control.tail.load(), 2 * k4KiB + Record(8));
  EXPECT_FALSE(ring.writer.HasSpace());
}

TEST(RingReader, SleepIsRefusedWhenDataIsThere) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  EXPECT_FALSE(ring.reader.PrepareToSleep());
  EXPECT_EQ(ring.control.consumer_sleeping.load(), 0u);
  EXPECT_FALSE(ring.writer.TakeConsumerSleeping());
}

TEST(RingReader, SleeperIsWokenExactlyOnce) {
  TestRing ring;
  EXPECT_FALSE(ring.writer.TakeConsumerSleeping());
  EXPECT_TRUE(ring.reader.PrepareToSleep());
  EXPECT_EQ(ring.control.consumer_sleeping.load(), 1u);
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  EXPECT_TRUE(ring.writer.TakeConsumerSleeping());
  EXPECT_FALSE(ring.writer.TakeConsumerSleeping());
  EXPECT_EQ(ring.control.consumer_sleeping.load(), 0u);
}

TEST(RingReader, StopSleepingWithdrawsTheAnnouncement) {
  TestRing ring;
  EXPECT_TRUE(ring.reader.PrepareToSleep());
  ring.reader.StopSleeping();
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  EXPECT_FALSE(ring.writer.TakeConsumerSleeping());
}

TEST(RingWriter, SleepIsRefusedWhenSpaceIsThere) {
  TestRing ring;
  EXPECT_FALSE(ring.writer.PrepareToSleep());
  EXPECT_EQ(ring.control.producer_sleeping.load(), 0u);
  EXPECT_FALSE(ring.reader.TakeProducerSleeping());
}

TEST(RingWriter, SleeperIsWokenExactlyOnce) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(2 * k4KiB)), IsOk());
  EXPECT_FALSE(ring.reader.TakeProducerSleeping());
  EXPECT_TRUE(ring.writer.PrepareToSleep());
  EXPECT_EQ(ring.control.producer_sleeping.load(), 1u);
  ASSERT_THAT(ReadBytes(ring.reader, k4KiB), IsOk());
  EXPECT_TRUE(ring.reader.TakeProducerSleeping());
  EXPECT_FALSE(ring.reader.TakeProducerSleeping());
  EXPECT_EQ(ring.control.producer_sleeping.load(), 0u);
  ring.writer.StopSleeping();
}

TEST(RingWriter, StopSleepingWithdrawsTheAnnouncement) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(2 * k4KiB)), IsOk());
  EXPECT_TRUE(ring.writer.PrepareToSleep());
  ring.writer.StopSleeping();
  ASSERT_THAT(ReadBytes(ring.reader, k4KiB), IsOk());
  EXPECT_FALSE(ring.reader.TakeProducerSleeping());
}

// Hostile producer: every check gives kDataLoss, and the reader stays failed even after the
// peer puts things right.
void ExpectReaderFailsAndStaysFailed(TestRing& ring, const char* what) {
  std::vector<std::byte> into(64);
  const uint64_t head = ring.control.head.load();
  absl::StatusOr<size_t> n = ring.reader.Read(into);
  EXPECT_THAT(n, StatusIs(absl::StatusCode::kDataLoss, HasSubstr(what)));
  EXPECT_TRUE(ring.reader.failed());
  EXPECT_TRUE(ring.reader.HasData());
  EXPECT_FALSE(ring.reader.PrepareToSleep());
  EXPECT_EQ(ring.control.head.load(), head);
  // Honest again: still failed.
  ring.control.tail.store(head);
  EXPECT_THAT(ring.reader.Read(into), StatusIs(absl::StatusCode::kDataLoss, HasSubstr(what)));
  EXPECT_THAT(ring.reader.Read(into), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(RingReader, RejectsTailBehindHead) {
  TestRing ring;
  AdvanceTo(ring, 256);
  ring.control.tail.store(248);
  ExpectReaderFailsAndStaysFailed(ring, "tail 248 went back");
}

TEST(RingReader, RejectsTailMovingBack) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(100)), IsOk());
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(100)), IsOk());
  ASSERT_THAT(ReadBytes(ring.reader, 50), IsOk());  // inside the first record
  ring.control.tail.store(Record(100));             // takes back the second one
  ExpectReaderFailsAndStaysFailed(ring, "tail 112 went back");
}

TEST(RingReader, RejectsTailMoreThanCapacityAhead) {
  TestRing ring;
  AdvanceTo(ring, 256);
  ring.control.tail.store(256 + k4KiB + 8);
  ExpectReaderFailsAndStaysFailed(ring, "more than the capacity");
}

TEST(RingReader, RejectsTailFarAheadWrappingAround) {
  TestRing ring;
  AdvanceTo(ring, 256);
  ring.control.tail.store(UINT64_MAX - 7);
  ExpectReaderFailsAndStaysFailed(ring, "more than the capacity");
}

TEST(RingReader, RejectsTailNotAMultipleOfEight) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  ring.control.tail.store(Record(5) + 4);
  ExpectReaderFailsAndStaysFailed(ring, "not a multiple of 8");
}

TEST(RingReader, RejectsUnknownKind) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  PokeHeader(ring, 0, 5, 3);
  ExpectReaderFailsAndStaysFailed(ring, "unknown kind 3");
}

TEST(RingReader, RejectsKindZero) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  PokeHeader(ring, 0, 5, 0);
  ExpectReaderFailsAndStaysFailed(ring, "unknown kind 0");
}

TEST(RingReader, RejectsEmptyDataRecord) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  PokeHeader(ring, 0, 0, kRecordData);
  ExpectReaderFailsAndStaysFailed(ring, "empty data record");
}

TEST(RingReader, RejectsLengthPastTheTail) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  PokeHeader(ring, 0, 9, kRecordData);  // 8 + 16 bytes > the 16 published
  ExpectReaderFailsAndStaysFailed(ring, "length 9 at 0 runs past the tail");
}

TEST(RingReader, RejectsHugeLength) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  PokeHeader(ring, 0, UINT32_MAX, kRecordData);
  ExpectReaderFailsAndStaysFailed(ring, "length 4294967295");
}

TEST(RingReader, RejectsRecordCrossingTheEnd) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - 64);
  // Published far enough to cover it, but the record would run past the end of the data area.
  ring.control.tail.store(k4KiB - 64 + 256);
  PokeHeader(ring, k4KiB - 64, 100, kRecordData);
  ExpectReaderFailsAndStaysFailed(ring, "crosses the end");
}

TEST(RingReader, RejectsPadNotReachingTheEnd) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - 64);
  ring.control.tail.store(k4KiB + 64);
  PokeHeader(ring, k4KiB - 64, 48, kRecordPad);
  ExpectReaderFailsAndStaysFailed(ring, "pad record of length 48");
}

TEST(RingReader, RejectsPadPastTheEnd) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - 64);
  ring.control.tail.store(k4KiB + 64);
  PokeHeader(ring, k4KiB - 64, 64, kRecordPad);
  ExpectReaderFailsAndStaysFailed(ring, "pad record of length 64");
}

TEST(RingReader, RejectsPadPastTheTail) {
  TestRing ring;
  AdvanceTo(ring, k4KiB - 64);
  ring.control.tail.store(k4KiB - 32);
  PokeHeader(ring, k4KiB - 64, 56, kRecordPad);
  ExpectReaderFailsAndStaysFailed(ring, "runs past the tail");
}

TEST(RingReader, RejectsPadAtOffsetZero) {
  TestRing ring;
  ring.control.tail.store(k4KiB);
  PokeHeader(ring, 0, k4KiB - kRecordHeader, kRecordPad);
  ExpectReaderFailsAndStaysFailed(ring, "offset 0");
}

// Hostile consumer: the writer's checks of the head.
void ExpectWriterFailsAndStaysFailed(TestRing& ring, const char* what) {
  const uint64_t tail = ring.control.tail.load();
  absl::StatusOr<size_t> n = WriteBytes(ring.writer, Pattern(5));
  EXPECT_THAT(n, StatusIs(absl::StatusCode::kDataLoss, HasSubstr(what)));
  EXPECT_TRUE(ring.writer.failed());
  EXPECT_TRUE(ring.writer.HasSpace());
  EXPECT_EQ(ring.control.tail.load(), tail);
  ring.control.head.store(tail);
  EXPECT_THAT(WriteBytes(ring.writer, Pattern(5)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr(what)));
  EXPECT_EQ(ring.control.tail.load(), tail);
}

TEST(RingWriter, RejectsHeadGoingBackwards) {
  TestRing ring;
  AdvanceTo(ring, 256);
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());  // sees head 256
  ring.control.head.store(128);
  ExpectWriterFailsAndStaysFailed(ring, "consumer head 128 went back");
}

TEST(RingWriter, RejectsHeadPastTail) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  ring.control.head.store(Record(5) + 8);
  ExpectWriterFailsAndStaysFailed(ring, "consumer head 24 is ahead of our tail 16");
}

TEST(RingWriter, RejectsHeadNotAMultipleOfEight) {
  TestRing ring;
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  ring.control.head.store(3);
  ExpectWriterFailsAndStaysFailed(ring, "consumer head 3 is not a multiple of 8");
}

TEST(RingWriter, HostileFlagsOnlyCauseSpuriousWakeUps) {
  TestRing ring;
  ring.control.consumer_sleeping.store(0xDEADBEEF);
  ring.control.producer_sleeping.store(7);
  ASSERT_THAT(WriteBytes(ring.writer, Pattern(5)), IsOk());
  EXPECT_TRUE(ring.writer.TakeConsumerSleeping());
  EXPECT_FALSE(ring.writer.TakeConsumerSleeping());
  ASSERT_THAT(ReadBytes(ring.reader, 5), IsOk());
  EXPECT_TRUE(ring.reader.TakeProducerSleeping());
  EXPECT_FALSE(ring.reader.TakeProducerSleeping());
}

// A producer thread and a consumer thread, both spinning, move a pseudo-random byte stream in
// pseudo-random pieces; the consumer checks every byte.
class RingStress : public ::testing::TestWithParam<size_t> {};

TEST_P(RingStress, TwoThreadsMoveTheStreamIntact) {
  const size_t capacity = GetParam();
  TestRing ring(capacity);
  const size_t total = size_t{3} << 20;
  std::vector<std::byte> stream(total);
  std::mt19937_64 random(capacity);
  for (std::byte& b : stream) b = std::byte(random() & 0xFF);

  std::atomic<bool> producer_failed{false};
  std::atomic<bool> consumer_done{false};
  std::thread producer([&] {
    std::mt19937 sizes(1);
    size_t written = 0;
    while (written < total && !consumer_done) {
      const size_t size = std::min<size_t>(total - written, 1 + sizes() % (capacity / 2));
      const size_t split = sizes() % (size + 1);
      const asio::const_buffer buffers[] = {
          asio::buffer(stream.data() + written, split),
          asio::buffer(stream.data() + written + split, size - split)};
      absl::StatusOr<size_t> n = ring.writer.Write(buffers);
      if (!n.ok()) {
        producer_failed = true;
        return;
      }
      written += *n;
      if (*n == 0) std::this_thread::yield();
    }
  });
  std::mt19937 sizes(2);
  std::vector<std::byte> chunk(capacity);
  size_t read = 0;
  absl::Status status;
  bool intact = true;
  while (read < total && intact && status.ok() && !producer_failed) {
    const size_t want = 1 + sizes() % capacity;
    absl::StatusOr<size_t> n = ring.reader.Read(std::span(chunk).first(want));
    if (!n.ok() || *n > want) {
      status = n.ok() ? absl::InternalError("read more than asked") : n.status();
      break;
    }
    intact = std::memcmp(chunk.data(), stream.data() + read, *n) == 0;
    read += *n;
    if (*n == 0) std::this_thread::yield();
  }
  consumer_done = true;
  producer.join();
  EXPECT_THAT(status, IsOk());
  EXPECT_FALSE(producer_failed);
  EXPECT_TRUE(intact) << "stream differs near byte " << read;
  EXPECT_EQ(read, total);
}

INSTANTIATE_TEST_SUITE_P(Capacities, RingStress, ::testing::Values(k4KiB, k64KiB));

// Both sides sleep whenever they cannot go on, on semaphores standing in for the eventfds: a lost
// wake-up leaves one side asleep, which the timeout reports instead of hanging.
TEST(RingStress, SleepersAreAlwaysWoken) {
  TestRing ring;
  const size_t total = size_t{1} << 20;
  const std::vector<std::byte> stream = Pattern(total);
  std::counting_semaphore<> consumer_bell(0), producer_bell(0);
  constexpr auto kLost = std::chrono::seconds(5);
  std::atomic<bool> producer_lost{false}, consumer_done{false};

  std::thread producer([&] {
    std::mt19937 sizes(3);
    size_t written = 0;
    while (written < total && !consumer_done) {
      const size_t size = std::min<size_t>(total - written, 1 + sizes() % 3000);
      absl::StatusOr<size_t> n = WriteBytes(ring.writer, std::span(stream).subspan(written, size));
      if (!n.ok()) return;
      written += *n;
      if (*n > 0) {
        if (ring.writer.TakeConsumerSleeping()) consumer_bell.release();
        continue;
      }
      if (ring.writer.PrepareToSleep()) {
        if (!producer_bell.try_acquire_for(kLost)) producer_lost = true;
      }
      ring.writer.StopSleeping();
      if (producer_lost) return;
    }
  });
  std::mt19937 sizes(4);
  std::vector<std::byte> chunk(k4KiB);
  size_t read = 0;
  bool intact = true, consumer_lost = false;
  absl::Status status;
  while (read < total && intact && !producer_lost) {
    absl::StatusOr<size_t> n = ring.reader.Read(std::span(chunk).first(1 + sizes() % k4KiB));
    if (!n.ok()) {
      status = n.status();
      break;
    }
    intact = std::memcmp(chunk.data(), stream.data() + read, *n) == 0;
    read += *n;
    if (*n > 0) {
      if (ring.reader.TakeProducerSleeping()) producer_bell.release();
      continue;
    }
    if (ring.reader.PrepareToSleep()) {
      consumer_lost = !consumer_bell.try_acquire_for(kLost);
    }
    ring.reader.StopSleeping();
    if (consumer_lost) break;
  }
  consumer_done = true;
  producer_bell.release();
  producer.join();
  EXPECT_THAT(status, IsOk());
  EXPECT_FALSE(consumer_lost);
  EXPECT_FALSE(producer_lost);
  EXPECT_TRUE(intact) << "stream differs near byte " << read;
  EXPECT_EQ(read, total);
}

}  // namespace
}  // namespace courier::transport::shm
