// The wire unit of courier: a 16-byte header and a payload. Framing layer: the pure encoder and
// decoder (no I/O, so tests and fuzzers need no sockets). PROTOCOL.md is the long form.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace courier::transport {

// Every frame is a 16-byte header, then `length` payload bytes; integers little-endian:
//   0 u32 magic 0x31435052 ("RPC1" in memory order: 'R' 'P' 'C' '1')
//   4 u8  type (FrameType; 0 is invalid)
//   5 u8  flags (bit 0: end of stream; bits 1-7 reserved, must be 0)
//   6 u16 reserved, must be 0
//   8 u32 call_id (0 = connection-level frame)
//  12 u32 length of the payload (<= the receiver's FrameLimits::max_payload)
// A byte stream carries frames back to back; a datagram carries exactly one frame.
// A receiver that sees a bad magic, a type of 0, or a reserved bit set closes the connection
// (kDataLoss); a length over its limit closes it too (kResourceExhausted).
inline constexpr uint32_t kFrameMagic = 0x31435052;
inline constexpr size_t kFrameHeaderSize = 16;
inline constexpr uint8_t kFlagEndOfStream = 0x01;
inline constexpr uint8_t kReservedFlagsMask = 0xFE;

enum class FrameType : uint8_t {
  kHello = 1,     // first frame each side sends: wire.proto Hello
  kRequest = 2,   // call_id != 0: varint-delimited RequestHeader, then the request message
  kResponse = 3,  // call_id != 0: varint-delimited ResponseHeader, then the response message
  kCancel = 4,    // call_id != 0, empty payload: the caller gave up
  kPing = 5,      // call_id 0: opaque payload (<= 64 bytes) echoed back in a kPong
  kPong = 6,      // call_id 0: the payload of the kPing it answers
  kGoAway = 7,    // call_id 0: wire.proto GoAway; no new calls on this connection
  // Streaming calls (PROTOCOL.md §13), only between peers that announced a stream window:
  kMessage = 8,  // call_id != 0: one message of a streaming call; with kFlagEndOfStream and an
                 // empty payload instead: the sender's half-close
  kWindow = 9,   // call_id != 0: 4-byte little-endian count of message bytes the peer may add
};
// Receivers ignore frame types above kWindow (room to grow); 0 is a protocol error.
inline constexpr uint8_t kMaxKnownFrameType = 9;

inline constexpr uint32_t kDefaultMaxPayload = 64 * 1024 * 1024 + 64 * 1024;

struct FrameLimits {
  uint32_t max_payload = kDefaultMaxPayload;
  friend bool operator==(const FrameLimits&, const FrameLimits&) = default;
};

struct Frame {
  FrameType type = FrameType::kPing;
  uint8_t flags = 0;
  uint32_t call_id = 0;
  std::string payload;
  friend bool operator==(const Frame&, const Frame&) = default;
};

using FrameHeaderBytes = std::array<std::byte, kFrameHeaderSize>;

// The header of `frame` (its length is payload.size(), which must fit in a u32).
FrameHeaderBytes EncodeFrameHeader(const Frame& frame);
// Header and payload, contiguous: for tests, fuzzers and small frames.
std::string EncodeFrame(const Frame& frame);

// Payload buffers, kept per thread for reuse: a fresh megabyte costs hundreds of page faults, a
// reused one none, and a reused small one saves a malloc/free per frame. TakeBuffer() returns a
// string of exactly `size` bytes (contents unspecified beyond that they are initialised);
// ReturnBuffer() keeps a few big ones (at most 4 and 32 MiB in all) and up to 32 small ones
// (at most 16 KiB each) per thread.
std::string TakeBuffer(size_t size);
// The same, but a pooled buffer comes back with as much of its own size as it has, up to `most`
// bytes (so a payload that grows into it needs no further zero-fill or copy).
std::string TakeBufferAtLeast(size_t size, size_t most);
void ReturnBuffer(std::string&& buffer);

// Reassembles frames from a byte stream in any split. Memory is proportional to the bytes
// appended (never to a length prefix): a large payload grows as its bytes arrive.
class FrameDecoder {
 public:
  explicit FrameDecoder(FrameLimits limits = {});

  void Append(std::span<const std::byte> bytes);
  void Append(std::string_view bytes) {
    Append(std::as_bytes(std::span<const char>(bytes.data(), bytes.size())));
  }
  // Next complete frame, or nullopt if more bytes are needed. After kDataLoss (bad magic, type
  // 0, reserved bits) or kResourceExhausted (length over limit), every call returns that error.
  absl::StatusOr<std::optional<Frame>> Next();

  // Reading straight into the decoder's buffer (no copy on the way in): room for at least
  // `size` bytes after those buffered (compacting first, growing only if they do not fit);
  // after reading n bytes into its front, call CommitRead(n).
  std::span<std::byte> ReadRoom(size_t size);
  void CommitRead(size_t n);
  // The size of the input buffer (what ReadRoom has grown it to).
  size_t buffer_capacity() const { return buffer_.size(); }

  // True when bytes of an incomplete frame are buffered (a close now would cut a frame).
  bool mid_frame() const;
  // Zero-copy path for large payloads: while a frame's payload is incomplete and nothing else
  // is buffered, where its next bytes go: at most `max` bytes, and at most as many as have
  // arrived so far (or 16 KiB), so memory stays within about twice the received bytes; empty
  // otherwise. After writing n bytes there, call CommitPayload(n).
  std::span<std::byte> PayloadBuffer(size_t max);
  // Bytes PayloadBuffer() could still take for the current frame (0 when it is unavailable).
  size_t payload_remaining() const;
  // Payload bytes of the current frame received so far (0 between frames).
  size_t payload_received() const { return partial_ ? filled_ : 0; }
  void CommitPayload(size_t n);

 private:
  absl::Status Fail(absl::Status status);
  // Room for up to `max` more payload bytes of the partial frame (growing its buffer).
  std::span<std::byte> PayloadRoom(size_t max);
  // Copies the front of `bytes` into the partial frame's payload; returns how many it took.
  size_t FillPayload(std::span<const std::byte> bytes);
  absl::Status CheckHeader(std::span<const std::byte> header, uint32_t& length);

  // Drops consumed input: the unconsumed bytes move to the front.
  void Compact();

  FrameLimits limits_;
  // Input: unconsumed bytes are [offset_, end_); the vector's size is its capacity (never
  // shrunk by use, so reading into it never zero-fills).
  std::vector<std::byte> buffer_;
  size_t offset_ = 0;
  size_t end_ = 0;
  std::optional<Frame> partial_;  // header decoded, payload [0, filled_) received
  uint32_t partial_length_ = 0;
  size_t filled_ = 0;
  absl::Status error_;
};

}  // namespace courier::transport
