// Pure tests of the frame encoder and FrameDecoder: no sockets, every split of the input, every
// corrupted header byte, limits, and the decoder's memory use against hostile length prefixes.
#include "transport/frame.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

// The allocation probe: every operator new in this binary goes through here, so a test can ask
// for the largest single allocation made while it fed the decoder. The default operator new[],
// nothrow new and delete[] forward to these two, so malloc/free stay paired.
namespace {
std::atomic<bool> g_probing{false};
std::atomic<std::size_t> g_largest_allocation{0};
}  // namespace

[[gnu::noinline]] void* operator new(std::size_t size) {
  if (g_probing.load(std::memory_order_relaxed)) {
    size_t seen = g_largest_allocation.load(std::memory_order_relaxed);
    while (size > seen && !g_largest_allocation.compare_exchange_weak(seen, size)) {
    }
  }
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace courier::transport {

// Frames print as their fields and the start of the payload (some payloads here are MiBs).
void PrintTo(const Frame& frame, std::ostream* os) {
  *os << "Frame{type " << int(frame.type) << ", flags " << int(frame.flags) << ", call_id "
      << frame.call_id << ", " << frame.payload.size() << " payload bytes:";
  for (size_t i = 0; i < std::min<size_t>(frame.payload.size(), 16); ++i) {
    *os << ' ' << absl::StrCat(absl::Hex(uint8_t(frame.payload[i]), absl::kZeroPad2));
  }
  *os << (frame.payload.size() > 16 ? " ...}" : "}");
}

namespace {

using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;
using ::testing::Optional;

constexpr size_t kMiB = 1024 * 1024;

// Records the largest single allocation between construction and largest().
class AllocationProbe {
 public:
  AllocationProbe() {
    g_largest_allocation = 0;
    g_probing = true;
  }
  ~AllocationProbe() { g_probing = false; }
  size_t largest() const { return g_largest_allocation; }
};

Frame MakeFrame(FrameType type, uint8_t flags, uint32_t call_id, std::string payload) {
  Frame frame;
  frame.type = type;
  frame.flags = flags;
  frame.call_id = call_id;
  frame.payload = std::move(payload);
  return frame;
}

// A payload whose bytes depend on their position, so a misplaced byte shows.
std::string Pattern(size_t size, uint8_t seed = 0) {
  std::string s(size, '\0');
  for (size_t i = 0; i < size; ++i) s[i] = char((i * 131 + i / 251 + seed) & 0xFF);
  return s;
}

// A header with arbitrary field values, including ones EncodeFrameHeader cannot produce.
std::string RawHeader(uint32_t magic, uint8_t type, uint8_t flags, uint16_t reserved,
                      uint32_t call_id, uint32_t length) {
  std::string h(kFrameHeaderSize, '\0');
  auto put32 = [&](size_t at, uint32_t v) {
    for (int i = 0; i < 4; ++i) h[at + i] = char((v >> (8 * i)) & 0xFF);
  };
  put32(0, magic);
  h[4] = char(type);
  h[5] = char(flags);
  h[6] = char(reserved & 0xFF);
  h[7] = char(reserved >> 8);
  put32(8, call_id);
  put32(12, length);
  return h;
}

// Calls Next() until it needs more bytes, appending the frames to `out`. Returns the error, if any.
absl::Status Drain(FrameDecoder& decoder, std::vector<Frame>& out) {
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder.Next();
    if (!next.ok()) return next.status();
    if (!next->has_value()) return absl::OkStatus();
    out.push_back(std::move(**next));
  }
}

absl::StatusOr<std::vector<Frame>> DecodeAll(std::string_view input, FrameLimits limits = {}) {
  FrameDecoder decoder(limits);
  decoder.Append(input);
  std::vector<Frame> frames;
  if (absl::Status s = Drain(decoder, frames); !s.ok()) return s;
  return frames;
}

// A kWindow payload (PROTOCOL.md §13.5): the increment as a little-endian u32.
std::string WindowPayload(uint32_t bytes) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(char((bytes >> (8 * i)) & 0xFF));
  return out;
}

// A streaming call's frames (PROTOCOL.md §13): a request opening it (no end of stream), a message
// each way (one empty), a window, the half-close (end of stream, empty) and the trailer.
std::vector<Frame> StreamFrames() {
  return {
      MakeFrame(FrameType::kRequest, 0, 7, Pattern(35, 5)),
      MakeFrame(FrameType::kMessage, 0, 7, Pattern(4, 6)),
      MakeFrame(FrameType::kWindow, 0, 7, WindowPayload(4)),
      MakeFrame(FrameType::kMessage, 0, 7, ""),
      MakeFrame(FrameType::kMessage, 0, 7, Pattern(300, 7)),
      MakeFrame(FrameType::kWindow, 0, 7, WindowPayload(0x7FFFFFFF)),
      MakeFrame(FrameType::kMessage, kFlagEndOfStream, 7, ""),
      MakeFrame(FrameType::kResponse, kFlagEndOfStream, 7, Pattern(13, 8)),
  };
}

// Frames of different shapes: empty payloads, a header-sized one, a whole streaming call.
std::vector<Frame> SampleFrames() {
  std::vector<Frame> frames = {
      MakeFrame(FrameType::kHello, 0, 0, Pattern(20, 1)),
      MakeFrame(FrameType::kRequest, kFlagEndOfStream, 1, Pattern(100, 2)),
      MakeFrame(FrameType::kCancel, 0, 1, ""),
      MakeFrame(FrameType::kResponse, kFlagEndOfStream, 0xFFFFFFFF, Pattern(16, 3)),
      MakeFrame(FrameType::kPing, 0, 0, Pattern(1, 4)),
  };
  for (Frame& frame : StreamFrames()) frames.push_back(std::move(frame));
  return frames;
}

std::string EncodeAll(const std::vector<Frame>& frames) {
  std::string out;
  for (const Frame& f : frames) out += EncodeFrame(f);
  return out;
}

TEST(FrameDecoder, EncodesTheDocumentedLittleEndianHeader) {
  Frame frame = MakeFrame(FrameType::kRequest, kFlagEndOfStream, 0x12345678, "hello");
  FrameHeaderBytes header = EncodeFrameHeader(frame);
  const uint8_t expected[kFrameHeaderSize] = {0x52, 0x50, 0x43, 0x31,   // magic "RPC1"
                                              0x02, 0x01, 0x00, 0x00,   // type, flags, reserved
                                              0x78, 0x56, 0x34, 0x12,   // call_id
                                              0x05, 0x00, 0x00, 0x00};  // length
  for (size_t i = 0; i < kFrameHeaderSize; ++i) {
    EXPECT_EQ(uint8_t(header[i]), expected[i]) << "byte " << i;
  }
  std::string encoded = EncodeFrame(frame);
  EXPECT_EQ(encoded.substr(0, 4), "RPC1");
  EXPECT_EQ(encoded,
            std::string(reinterpret_cast<const char*>(header.data()), header.size()) + "hello");
}

TEST(FrameDecoder, RoundTripsEveryFrameType) {
  const FrameType types[] = {FrameType::kHello,  FrameType::kRequest, FrameType::kResponse,
                             FrameType::kCancel, FrameType::kPing,    FrameType::kPong,
                             FrameType::kGoAway, FrameType::kMessage, FrameType::kWindow};
  for (FrameType type : types) {
    for (uint8_t flags : {uint8_t{0}, kFlagEndOfStream}) {
      for (uint32_t call_id : {0u, 1u, 0x80000000u, 0xFFFFFFFFu}) {
        for (size_t size : {0, 1, 15, 16, 17, 1000}) {
          SCOPED_TRACE(absl::StrCat("type ", int(type), " flags ", flags, " call_id ", call_id,
                                    " size ", size));
          Frame frame = MakeFrame(type, flags, call_id, Pattern(size, uint8_t(type)));
          std::string bytes = EncodeFrame(frame);
          ASSERT_EQ(bytes.size(), kFrameHeaderSize + size);
          FrameDecoder decoder;
          decoder.Append(bytes);
          absl::StatusOr<std::optional<Frame>> next = decoder.Next();
          ASSERT_THAT(next, IsOk());
          EXPECT_THAT(*next, Optional(frame));
          EXPECT_FALSE(decoder.mid_frame());
          absl::StatusOr<std::optional<Frame>> after = decoder.Next();
          ASSERT_THAT(after, IsOk());
          EXPECT_EQ(*after, std::nullopt);
        }
      }
    }
  }
}

TEST(FrameDecoder, DecodesBackToBackFramesInOrder) {
  std::vector<Frame> frames = SampleFrames();
  absl::StatusOr<std::vector<Frame>> decoded = DecodeAll(EncodeAll(frames));
  ASSERT_THAT(decoded, IsOk());
  EXPECT_THAT(*decoded, ElementsAreArray(frames));
}

TEST(FrameDecoder, NeedsMoreBytesWhenEmpty) {
  FrameDecoder decoder;
  absl::StatusOr<std::optional<Frame>> next = decoder.Next();
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(*next, std::nullopt);
  EXPECT_FALSE(decoder.mid_frame());
  decoder.Append(std::string_view());
  EXPECT_FALSE(decoder.mid_frame());
  EXPECT_THAT(decoder.Next(), IsOk());
}

TEST(FrameDecoder, DecodesIdenticallyAtEverySplitPoint) {
  const std::vector<Frame> frames = SampleFrames();
  const std::string input = EncodeAll(frames);
  for (size_t split = 0; split <= input.size(); ++split) {
    SCOPED_TRACE(absl::StrCat("split at ", split, " of ", input.size()));
    // Draining between the two chunks (how a reader works) and not draining both must agree.
    for (bool drain_between : {true, false}) {
      FrameDecoder decoder;
      std::vector<Frame> decoded;
      decoder.Append(std::string_view(input).substr(0, split));
      if (drain_between) {
        ASSERT_THAT(Drain(decoder, decoded), IsOk());
      }
      decoder.Append(std::string_view(input).substr(split));
      ASSERT_THAT(Drain(decoder, decoded), IsOk());
      EXPECT_THAT(decoded, ElementsAreArray(frames));
      EXPECT_FALSE(decoder.mid_frame());
    }
  }
}

TEST(FrameDecoder, DecodesIdenticallyByteByByte) {
  const std::vector<Frame> frames = SampleFrames();
  const std::string input = EncodeAll(frames);
  FrameDecoder decoder;
  std::vector<Frame> decoded;
  for (char c : input) {
    decoder.Append(std::string_view(&c, 1));
    ASSERT_THAT(Drain(decoder, decoded), IsOk());
  }
  EXPECT_THAT(decoded, ElementsAreArray(frames));
  EXPECT_FALSE(decoder.mid_frame());
}

TEST(FrameDecoder, DecodesIdenticallyInEveryChunkSize) {
  const std::vector<Frame> frames = SampleFrames();
  const std::string input = EncodeAll(frames);
  for (size_t chunk = 1; chunk <= input.size(); ++chunk) {
    SCOPED_TRACE(absl::StrCat("chunk size ", chunk));
    FrameDecoder decoder;
    std::vector<Frame> decoded;
    for (size_t at = 0; at < input.size(); at += chunk) {
      decoder.Append(std::string_view(input).substr(at, chunk));
      ASSERT_THAT(Drain(decoder, decoded), IsOk());
    }
    EXPECT_THAT(decoded, ElementsAreArray(frames));
  }
}

// Flips bits of each header byte of `original` and checks what each field's corruption does.
// The limit is 1000, so length corruptions land on every side of a short payload.
void CheckEveryCorruptedHeaderByte(const Frame& original) {
  const std::string good = EncodeFrame(original);
  const FrameLimits limits{.max_payload = 1000};
  for (size_t at = 0; at < kFrameHeaderSize; ++at) {
    for (int mask = 1; mask <= 0xFF; ++mask) {
      std::string bad = good;
      bad[at] = char(uint8_t(bad[at]) ^ mask);
      SCOPED_TRACE(absl::StrCat("byte ", at, " xor 0x", absl::Hex(mask)));
      FrameDecoder decoder(limits);
      decoder.Append(bad);
      absl::StatusOr<std::optional<Frame>> next = decoder.Next();
      const uint8_t value = uint8_t(bad[at]);
      if (at < 4) {
        EXPECT_THAT(next, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
      } else if (at == 4) {
        if (value == 0) {
          EXPECT_THAT(next, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("type 0")));
        } else {
          Frame expected = original;
          expected.type = FrameType(value);
          ASSERT_THAT(next, IsOk());
          EXPECT_THAT(*next, Optional(expected));
        }
      } else if (at == 5) {
        if ((value & kReservedFlagsMask) != 0) {
          EXPECT_THAT(next, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("reserved")));
        } else {
          Frame expected = original;
          expected.flags = value;
          ASSERT_THAT(next, IsOk());
          EXPECT_THAT(*next, Optional(expected));
        }
      } else if (at < 8) {
        EXPECT_THAT(next, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("reserved")));
      } else if (at < 12) {
        Frame expected = original;
        expected.call_id = original.call_id ^ (uint32_t(mask) << (8 * (at - 8)));
        ASSERT_THAT(next, IsOk());
        EXPECT_THAT(*next, Optional(expected));
      } else {
        const uint32_t length =
            uint32_t(original.payload.size()) ^ (uint32_t(mask) << (8 * (at - 12)));
        if (length > limits.max_payload) {
          EXPECT_THAT(next, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit")));
        } else if (length <= original.payload.size()) {
          // A shorter frame; the payload's tail is then the start of a (bad) next frame.
          Frame expected = original;
          expected.payload.resize(length);
          ASSERT_THAT(next, IsOk());
          EXPECT_THAT(*next, Optional(expected));
          const size_t rest = original.payload.size() - length;
          absl::StatusOr<std::optional<Frame>> after = decoder.Next();
          if (rest >= 4) {
            EXPECT_THAT(after, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
          } else {
            ASSERT_THAT(after, IsOk());
            EXPECT_EQ(*after, std::nullopt);
            EXPECT_EQ(decoder.mid_frame(), rest > 0);
          }
        } else {
          ASSERT_THAT(next, IsOk());
          EXPECT_EQ(*next, std::nullopt);
          EXPECT_TRUE(decoder.mid_frame());
          EXPECT_EQ(decoder.payload_remaining(), length - original.payload.size());
        }
      }
    }
  }
}

TEST(FrameDecoder, ReportsEveryCorruptedHeaderByte) {
  CheckEveryCorruptedHeaderByte(
      MakeFrame(FrameType::kRequest, kFlagEndOfStream, 0x04030201, "0123456789"));
}

// The same for a streaming call's frames: a message, an empty one, a window, the half-close, and
// the request that opens a stream.
TEST(FrameDecoder, ReportsEveryCorruptedHeaderByteOfStreamFrames) {
  const Frame frames[] = {
      MakeFrame(FrameType::kMessage, 0, 0x04030201, "0123456789"),
      MakeFrame(FrameType::kMessage, 0, 0x04030201, ""),
      MakeFrame(FrameType::kWindow, 0, 0x04030201, WindowPayload(0x00010002)),
      MakeFrame(FrameType::kMessage, kFlagEndOfStream, 0x04030201, ""),
      MakeFrame(FrameType::kRequest, 0, 0x04030201, Pattern(35, 5)),
  };
  for (const Frame& frame : frames) {
    SCOPED_TRACE(::testing::PrintToString(frame));
    CheckEveryCorruptedHeaderByte(frame);
  }
}

TEST(FrameDecoder, DeliversFramesBeforeACorruptOne) {
  std::vector<Frame> frames = SampleFrames();
  std::string input = EncodeAll(frames);
  const size_t second = EncodeFrame(frames[0]).size();
  input[second + 6] = 1;  // reserved u16 of the second frame
  FrameDecoder decoder;
  decoder.Append(input);
  absl::StatusOr<std::optional<Frame>> first = decoder.Next();
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(*first, Optional(frames[0]));
  EXPECT_THAT(decoder.Next(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameDecoder, RejectsNonZeroReservedFieldInEitherByte) {
  for (uint16_t reserved : {0x0001, 0x0100, 0x8000, 0xFFFF}) {
    SCOPED_TRACE(reserved);
    std::string input = RawHeader(kFrameMagic, 2, 1, reserved, 1, 0);
    EXPECT_THAT(DecodeAll(input), StatusIs(absl::StatusCode::kDataLoss));
  }
}

TEST(FrameDecoder, RejectsGarbageAsSoonAsFourBytesArrive) {
  const std::string garbage = "GET / HTTP/1.1\r\n";
  FrameDecoder decoder;
  for (size_t i = 0; i < 3; ++i) {
    decoder.Append(garbage.substr(i, 1));
    absl::StatusOr<std::optional<Frame>> next = decoder.Next();
    ASSERT_THAT(next, IsOk()) << "after " << i + 1 << " bytes";
    EXPECT_EQ(*next, std::nullopt);
  }
  decoder.Append(garbage.substr(3, 1));
  EXPECT_THAT(decoder.Next(), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
  // All at once, the same.
  EXPECT_THAT(DecodeAll(garbage), StatusIs(absl::StatusCode::kDataLoss, HasSubstr("bad magic")));
}

TEST(FrameDecoder, BadMagicNamesTheProtocolAPeerSeemsToSpeak) {
  const std::string client_hello("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 11);
  EXPECT_THAT(DecodeAll(client_hello),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("sent a TLS handshake record")));
  EXPECT_THAT(DecodeAll("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("HTTP/2 preface")));
  EXPECT_THAT(DecodeAll("POST /x HTTP/1.1\r\n"),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("an HTTP/1 request")));
  absl::StatusOr<std::vector<Frame>> other = DecodeAll("abcdefghijklmnopq");
  EXPECT_THAT(other, StatusIs(absl::StatusCode::kDataLoss, HasSubstr("not a courier peer")));
  EXPECT_THAT(std::string(other.status().message()), ::testing::EndsWith("not a courier peer"));
}

TEST(FrameDecoder, RejectsGarbageAfterAValidFrame) {
  Frame ping = MakeFrame(FrameType::kPing, 0, 0, "abc");
  FrameDecoder decoder;
  decoder.Append(EncodeFrame(ping) + "HTTP");
  absl::StatusOr<std::optional<Frame>> first = decoder.Next();
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(*first, Optional(ping));
  EXPECT_THAT(decoder.Next(), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(FrameDecoder, ErrorIsStickyAfterDataLoss) {
  FrameDecoder decoder;
  decoder.Append(RawHeader(kFrameMagic, 0, 0, 0, 1, 0));
  absl::StatusOr<std::optional<Frame>> first = decoder.Next();
  ASSERT_THAT(first, StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_FALSE(decoder.mid_frame());
  decoder.Append(EncodeFrame(MakeFrame(FrameType::kPing, 0, 0, "x")));  // a valid frame after
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::optional<Frame>> again = decoder.Next();
    EXPECT_EQ(again.status(), first.status());
  }
  EXPECT_EQ(decoder.payload_remaining(), 0u);
  EXPECT_TRUE(decoder.PayloadBuffer(100).empty());
}

TEST(FrameDecoder, ErrorIsStickyAfterResourceExhausted) {
  FrameDecoder decoder(FrameLimits{.max_payload = 10});
  decoder.Append(RawHeader(kFrameMagic, 2, 1, 0, 1, 11));
  absl::StatusOr<std::optional<Frame>> first = decoder.Next();
  ASSERT_THAT(first, StatusIs(absl::StatusCode::kResourceExhausted));
  decoder.Append(EncodeFrame(MakeFrame(FrameType::kPing, 0, 0, "")));
  for (int i = 0; i < 3; ++i) EXPECT_EQ(decoder.Next().status(), first.status());
}

TEST(FrameDecoder, AcceptsAFrameExactlyAtTheLimit) {
  for (uint32_t limit : {0u, 1u, 1000u, 100000u}) {
    SCOPED_TRACE(limit);
    Frame frame = MakeFrame(FrameType::kResponse, kFlagEndOfStream, 9, Pattern(limit));
    absl::StatusOr<std::vector<Frame>> decoded =
        DecodeAll(EncodeFrame(frame), FrameLimits{.max_payload = limit});
    ASSERT_THAT(decoded, IsOk());
    EXPECT_THAT(*decoded, ElementsAreArray({frame}));
  }
}

TEST(FrameDecoder, RejectsAFrameOneByteOverTheLimit) {
  for (uint32_t limit : {0u, 1u, 1000u, 100000u}) {
    SCOPED_TRACE(limit);
    Frame frame = MakeFrame(FrameType::kResponse, kFlagEndOfStream, 9, Pattern(limit + 1));
    // Rejected from the header alone: the payload never needs to arrive.
    std::string header = EncodeFrame(frame).substr(0, kFrameHeaderSize);
    EXPECT_THAT(DecodeAll(header, FrameLimits{.max_payload = limit}),
                StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("exceeds the limit")));
  }
}

TEST(FrameDecoder, DefaultLimitIs64MiBPlus64KiB) {
  EXPECT_EQ(FrameLimits().max_payload, 67174400u);
  FrameDecoder at_limit;
  at_limit.Append(RawHeader(kFrameMagic, 3, 1, 0, 1, kDefaultMaxPayload));
  absl::StatusOr<std::optional<Frame>> next = at_limit.Next();
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(*next, std::nullopt);
  EXPECT_EQ(at_limit.payload_remaining(), kDefaultMaxPayload);
  EXPECT_THAT(DecodeAll(RawHeader(kFrameMagic, 3, 1, 0, 1, kDefaultMaxPayload + 1)),
              StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST(FrameDecoder, RejectsAllOnesLengthFromTheHeaderAloneWithoutAllocating) {
  FrameDecoder decoder;
  AllocationProbe probe;
  decoder.Append(RawHeader(kFrameMagic, 2, 1, 0, 1, 0xFFFFFFFF));
  absl::StatusOr<std::optional<Frame>> next = decoder.Next();
  EXPECT_THAT(next, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("4294967295")));
  EXPECT_LT(probe.largest(), 64 * 1024u);
}

// A header that declares 60 MiB (allowed under a 64 MiB limit) followed by a trickle of bytes
// must not make the decoder allocate 60 MiB: memory follows the bytes received.
TEST(FrameDecoder, DoesNotAllocateADeclaredLengthUpFront) {
  const uint32_t declared = 60 * kMiB;
  FrameDecoder decoder(FrameLimits{.max_payload = 64 * kMiB});
  AllocationProbe probe;
  decoder.Append(RawHeader(kFrameMagic, 2, 1, 0, 7, declared) + Pattern(100));
  absl::StatusOr<std::optional<Frame>> next = decoder.Next();
  ASSERT_THAT(next, IsOk());
  EXPECT_EQ(*next, std::nullopt);
  EXPECT_TRUE(decoder.mid_frame());
  EXPECT_EQ(decoder.payload_remaining(), declared - 100);
  EXPECT_LE(probe.largest(), 4 * 1024u) << "a 116-byte input";
  // 10 MiB more, 64 KiB at a time: growth stays proportional to what arrived.
  const std::string chunk = Pattern(64 * 1024);
  for (int i = 0; i < 160; ++i) {
    decoder.Append(chunk);
    ASSERT_THAT(decoder.Next(), IsOk());
  }
  EXPECT_EQ(decoder.payload_remaining(), declared - 100 - 10 * kMiB);
  EXPECT_LE(probe.largest(), 2 * (10 * kMiB + 100));
}

// The same through the zero-copy path, asking for a 4 MiB window each time while the transport
// returns one byte per read: the window never runs ahead of the bytes received (a 16 KiB floor),
// so a header declaring 60 MiB with no payload commits almost nothing.
TEST(FrameDecoder, ZeroCopyTrickleDoesNotAllocateADeclaredLength) {
  const uint32_t declared = 60 * kMiB;
  const size_t window_size = 4 * kMiB;
  FrameDecoder decoder(FrameLimits{.max_payload = 64 * kMiB});
  AllocationProbe probe;
  decoder.Append(RawHeader(kFrameMagic, 2, 1, 0, 7, declared));
  ASSERT_THAT(decoder.Next(), IsOk());
  const int reads = 100;
  for (int read = 0; read < reads; ++read) {
    std::span<std::byte> window = decoder.PayloadBuffer(window_size);
    ASSERT_EQ(window.size(), 16 * 1024u) << "read " << read;
    window[0] = std::byte{0x5A};
    decoder.CommitPayload(1);
  }
  EXPECT_EQ(decoder.payload_remaining(), declared - reads);
  EXPECT_EQ(decoder.payload_received(), size_t(reads));
  EXPECT_LE(probe.largest(), 64 * 1024u)
      << reads << " payload bytes received, " << declared << " declared";
}

// Past the floor, each window is at most what has arrived: the buffer at most doubles per read.
TEST(FrameDecoder, ZeroCopyWindowGrowsWithReceivedBytes) {
  FrameDecoder decoder(FrameLimits{.max_payload = 64 * kMiB});
  decoder.Append(RawHeader(kFrameMagic, 2, 1, 0, 7, 60 * kMiB));
  ASSERT_THAT(decoder.Next(), IsOk());
  AllocationProbe probe;
  size_t received = 0;
  for (int read = 0; read < 12; ++read) {
    std::span<std::byte> window = decoder.PayloadBuffer(4 * kMiB);
    ASSERT_EQ(window.size(), std::min<size_t>(4 * kMiB, std::max<size_t>(received, 16 * 1024)));
    decoder.CommitPayload(window.size());
    received += window.size();
  }
  EXPECT_LE(probe.largest(), 2 * received + 64 * 1024);
}

TEST(FrameDecoder, ZeroCopyAssemblesALargePayloadMixedWithAppend) {
  const Frame big = MakeFrame(FrameType::kResponse, kFlagEndOfStream, 42, Pattern(5 * kMiB + 3));
  const Frame after = MakeFrame(FrameType::kPong, 0, 0, "tail");
  const std::string input = EncodeFrame(big) + EncodeFrame(after);
  const size_t big_end = kFrameHeaderSize + big.payload.size();

  FrameDecoder decoder;
  std::vector<Frame> decoded;
  // Header and a little payload through Append; Next() moves it into the frame.
  size_t at = kFrameHeaderSize + 1000;
  decoder.Append(std::string_view(input).substr(0, at));
  EXPECT_EQ(decoder.payload_remaining(), 0u) << "the header is not parsed before Next()";
  ASSERT_THAT(Drain(decoder, decoded), IsOk());
  EXPECT_TRUE(decoded.empty());
  EXPECT_EQ(decoder.payload_remaining(), big_end - at);

  // Alternate zero-copy writes and Appends of odd sizes.
  const size_t sizes[] = {1, 7, 4096, 65536, 333333, 1 << 20, 12345};
  for (int round = 0; decoder.payload_remaining() > 0; ++round) {
    size_t want = std::min(sizes[round % std::size(sizes)], big_end - at);
    if (round % 2 == 0) {
      std::span<std::byte> window = decoder.PayloadBuffer(want);
      ASSERT_FALSE(window.empty());
      ASSERT_LE(window.size(), want);
      std::memcpy(window.data(), input.data() + at, window.size());
      decoder.CommitPayload(window.size());
      at += window.size();
    } else {
      decoder.Append(std::string_view(input).substr(at, want));
      at += want;
    }
    ASSERT_EQ(decoder.payload_remaining(), big_end - at);
    ASSERT_TRUE(decoder.mid_frame());
    ASSERT_THAT(Drain(decoder, decoded), IsOk());
  }
  ASSERT_EQ(at, big_end);
  ASSERT_EQ(decoded.size(), 1u);
  EXPECT_TRUE(decoded[0] == big) << "the assembled payload differs";
  EXPECT_FALSE(decoder.mid_frame());
  EXPECT_TRUE(decoder.PayloadBuffer(10).empty()) << "no frame in progress";

  decoder.Append(std::string_view(input).substr(at));
  ASSERT_THAT(Drain(decoder, decoded), IsOk());
  ASSERT_EQ(decoded.size(), 2u);
  EXPECT_EQ(decoded[1], after);
}

TEST(FrameDecoder, ZeroCopyCompletesAFrameThatIsFollowedByMoreInput) {
  const Frame first = MakeFrame(FrameType::kRequest, kFlagEndOfStream, 1, Pattern(50000));
  const Frame second = MakeFrame(FrameType::kRequest, kFlagEndOfStream, 2, Pattern(30, 9));
  const std::string input = EncodeFrame(first) + EncodeFrame(second);
  FrameDecoder decoder;
  std::vector<Frame> decoded;
  decoder.Append(std::string_view(input).substr(0, kFrameHeaderSize));
  ASSERT_THAT(Drain(decoder, decoded), IsOk());
  ASSERT_EQ(decoder.payload_remaining(), first.payload.size());
  // The window grows with the bytes received and never reaches past the frame, even when
  // asked for more.
  size_t at = 0;
  while (decoder.payload_remaining() > 0) {
    std::span<std::byte> window = decoder.PayloadBuffer(1 << 20);
    ASSERT_FALSE(window.empty());
    ASSERT_LE(window.size(), first.payload.size() - at);
    std::memcpy(window.data(), first.payload.data() + at, window.size());
    decoder.CommitPayload(window.size());
    at += window.size();
  }
  EXPECT_EQ(at, first.payload.size());
  EXPECT_TRUE(decoder.PayloadBuffer(10).empty());
  decoder.Append(std::string_view(input).substr(kFrameHeaderSize + first.payload.size()));
  ASSERT_THAT(Drain(decoder, decoded), IsOk());
  EXPECT_THAT(decoded, ElementsAreArray({first, second}));
}

TEST(FrameDecoder, PayloadBufferIsUnavailableWhileOtherBytesAreBuffered) {
  const Frame frame = MakeFrame(FrameType::kRequest, kFlagEndOfStream, 1, Pattern(1000));
  const std::string input = EncodeFrame(frame);
  FrameDecoder decoder;
  EXPECT_TRUE(decoder.PayloadBuffer(10).empty()) << "nothing started";
  decoder.Append(std::string_view(input).substr(0, 100));
  EXPECT_EQ(decoder.payload_remaining(), 0u);
  EXPECT_TRUE(decoder.PayloadBuffer(10).empty()) << "bytes not yet consumed by Next()";
  ASSERT_THAT(decoder.Next(), IsOk());
  EXPECT_EQ(decoder.payload_remaining(), input.size() - 100);
  EXPECT_FALSE(decoder.PayloadBuffer(10).empty());
}

TEST(FrameDecoder, DecodesAnUnknownFrameTypeForTheReceiverToIgnore) {
  const Frame unknown = MakeFrame(FrameType(200), 0, 5, "future");
  const Frame ping = MakeFrame(FrameType::kPing, 0, 0, "p");
  absl::StatusOr<std::vector<Frame>> decoded = DecodeAll(EncodeFrame(unknown) + EncodeFrame(ping));
  ASSERT_THAT(decoded, IsOk());
  ASSERT_EQ(decoded->size(), 2u);
  EXPECT_EQ(uint8_t((*decoded)[0].type), 200);
  EXPECT_EQ((*decoded)[0], unknown);
  EXPECT_EQ((*decoded)[1], ping);
  EXPECT_GT(200, kMaxKnownFrameType);
}

TEST(FrameDecoder, MidFrameIsTrueOnPartialInputAndFalseAtFrameBoundaries) {
  const std::vector<Frame> frames = {MakeFrame(FrameType::kPing, 0, 0, "12345678"),
                                     MakeFrame(FrameType::kCancel, 0, 3, "")};
  const std::string input = EncodeAll(frames);
  FrameDecoder decoder;
  EXPECT_FALSE(decoder.mid_frame());
  std::vector<Frame> decoded;
  size_t boundary = EncodeFrame(frames[0]).size();
  for (size_t i = 0; i < input.size(); ++i) {
    decoder.Append(std::string_view(input).substr(i, 1));
    ASSERT_THAT(Drain(decoder, decoded), IsOk());
    const bool at_boundary = i + 1 == boundary || i + 1 == input.size();
    EXPECT_EQ(decoder.mid_frame(), !at_boundary) << "after " << i + 1 << " bytes";
  }
  EXPECT_THAT(decoded, ElementsAreArray(frames));
}

}  // namespace
}  // namespace courier::transport

namespace courier::transport {
namespace {

// A pooled buffer shows in its capacity: a small request served from the pool gets the big
// buffer returned earlier.
TEST(BufferPool, ReusesABigReturnedBuffer) {
  // Take out what earlier tests on this thread left in the pool (it keeps at most four), so that
  // only the buffer returned below is there to reuse.
  std::vector<std::string> earlier;
  for (int i = 0; i < 4; ++i) earlier.push_back(TakeBuffer(64 * 1024));
  std::string first = TakeBuffer(1 << 20);
  ASSERT_EQ(first.size(), size_t{1} << 20);
  ReturnBuffer(std::move(first));
  std::string second = TakeBuffer(100 * 1024);
  EXPECT_EQ(second.size(), size_t{100 * 1024});
  EXPECT_GE(second.capacity(), size_t{1} << 20);
  std::string third = TakeBuffer(100 * 1024);  // the pool is empty again
  EXPECT_LT(third.capacity(), size_t{1} << 20);
}

TEST(BufferPool, SmallBuffersAreNotKeptAndThePoolIsBounded) {
  std::string small = TakeBuffer(100);
  EXPECT_EQ(small.size(), 100u);
  ReturnBuffer(std::move(small));
  std::vector<std::string> big;
  for (int i = 0; i < 10; ++i) big.push_back(TakeBuffer(512 * 1024));
  for (std::string& b : big) ReturnBuffer(std::move(b));
  int pooled = 0;
  std::vector<std::string> again;
  for (int i = 0; i < 10; ++i) {
    again.push_back(TakeBuffer(64 * 1024));
    pooled += again.back().capacity() >= 512 * 1024;
  }
  EXPECT_EQ(pooled, 4);  // the pool keeps at most four
}

}  // namespace
}  // namespace courier::transport
