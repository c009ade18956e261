#include "transport/frame.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace courier::transport {
namespace {

// A partial payload's buffer grows geometrically with the bytes actually received (never to the
// declared length up front), so a hostile length prefix cannot make us allocate: the buffer is
// at most twice what arrived, and never past the declared length.
// The most room PayloadBuffer offers before that much of the payload has arrived.
constexpr size_t kMinDirectRoom = 16 * 1024;

void PutU32(std::byte* at, uint32_t v) {
  for (int i = 0; i < 4; ++i) at[i] = std::byte((v >> (8 * i)) & 0xFF);
}
uint32_t GetU32(const std::byte* at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(at[i]) << (8 * i);
  return v;
}

// Two pools per thread. Large buffers, where page faults dominate: a few, up to a byte budget.
// Small ones (every frame's payload): up to kSmallBuffers of at most kSmallMaximum bytes each,
// so a call in steady state allocates no payload memory at all.
constexpr size_t kPooledMinimum = 64 * 1024;
constexpr size_t kPoolBuffers = 4;
constexpr size_t kPoolBytes = 32 * 1024 * 1024;
constexpr size_t kSmallMaximum = 16 * 1024;
constexpr size_t kSmallBuffers = 32;
// std::string keeps this many bytes inline: nothing to pool.
constexpr size_t kInlineCapacity = 15;

struct BufferPool {
  std::vector<std::string> buffers;
  size_t bytes = 0;
  std::vector<std::string> small;
};
BufferPool& ThreadPool() {
  thread_local BufferPool pool;
  return pool;
}

}  // namespace

std::string TakeBufferAtLeast(size_t size, size_t most) {
  BufferPool& pool = ThreadPool();
  std::string buffer;
  if (size >= kPooledMinimum) {
    // One that holds `most` if there is one (then a payload growing into it is never copied
    // again), else any that holds `size`.
    size_t best = pool.buffers.size();
    for (size_t i = 0; i < pool.buffers.size(); ++i) {
      const size_t capacity = pool.buffers[i].capacity();
      if (capacity < size) continue;
      if (best == pool.buffers.size() ||
          (pool.buffers[best].capacity() < most && capacity >= most)) {
        best = i;
      }
    }
    if (best == pool.buffers.size()) {
      // Fresh, with its capacity rounded up, so that frames of about the same size (a request
      // and its echo, a header longer or shorter) fit each other's buffers when reused.
      buffer.reserve((size + kPooledMinimum - 1) / kPooledMinimum * kPooledMinimum);
      buffer.resize(size);
      return buffer;
    }
    buffer = std::move(pool.buffers[best]);
    pool.buffers.erase(pool.buffers.begin() + static_cast<std::ptrdiff_t>(best));
    pool.bytes -= buffer.capacity();
  } else if (size > kInlineCapacity && !pool.small.empty()) {
    buffer = std::move(pool.small.back());
    pool.small.pop_back();
  } else {
    return std::string(size, '\0');
  }
  // A pooled buffer keeps the size it was returned with: its bytes are initialised already, so
  // only what it lacks is zero-filled (a fresh string zero-fills all of it).
  buffer.resize(std::clamp(buffer.size(), size, std::max(size, most)));
  return buffer;
}

std::string TakeBuffer(size_t size) { return TakeBufferAtLeast(size, size); }

void ReturnBuffer(std::string&& buffer) {
  BufferPool& pool = ThreadPool();
  const size_t capacity = buffer.capacity();
  if (capacity < kPooledMinimum) {
    if (capacity > kInlineCapacity && capacity <= kSmallMaximum &&
        pool.small.size() < kSmallBuffers) {
      pool.small.push_back(std::move(buffer));
    }
    return;
  }
  if (capacity > kPoolBytes) return;
  while (!pool.buffers.empty() &&
         (pool.buffers.size() >= kPoolBuffers || pool.bytes + capacity > kPoolBytes)) {
    pool.bytes -= pool.buffers.front().capacity();
    pool.buffers.erase(pool.buffers.begin());
  }
  pool.bytes += capacity;
  pool.buffers.push_back(std::move(buffer));
}

FrameHeaderBytes EncodeFrameHeader(const Frame& frame) {
  assert(frame.payload.size() <= UINT32_MAX);
  FrameHeaderBytes h{};
  PutU32(&h[0], kFrameMagic);
  h[4] = std::byte(frame.type);
  h[5] = std::byte(frame.flags);
  h[6] = h[7] = std::byte{0};
  PutU32(&h[8], frame.call_id);
  PutU32(&h[12], static_cast<uint32_t>(frame.payload.size()));
  return h;
}

std::string EncodeFrame(const Frame& frame) {
  FrameHeaderBytes h = EncodeFrameHeader(frame);
  std::string out(reinterpret_cast<const char*>(h.data()), h.size());
  out += frame.payload;
  return out;
}

FrameDecoder::FrameDecoder(FrameLimits limits) : limits_(limits) {}

absl::Status FrameDecoder::Fail(absl::Status status) {
  error_ = std::move(status);
  buffer_.clear();
  buffer_.shrink_to_fit();
  offset_ = end_ = 0;
  partial_.reset();
  return error_;
}

// What a peer that does not speak courier most likely speaks, from its first bytes (for the
// bad-magic message): "" when nothing is recognised.
std::string_view ForeignProtocol(std::span<const std::byte> h) {
  auto at = [&](size_t i) { return static_cast<unsigned char>(h[i]); };
  if (at(0) == 0x16 && at(1) == 0x03 && at(2) <= 0x04) {
    return "; it sent a TLS handshake record: a tls:// client dialling a plain endpoint?";
  }
  const std::string_view start(reinterpret_cast<const char*>(h.data()), 4);
  if (start == "PRI ") return "; it sent the HTTP/2 preface: a gRPC or other HTTP/2 client?";
  for (std::string_view method : {"GET ", "POST", "PUT ", "HEAD"}) {
    if (start == method) return "; it sent an HTTP/1 request";
  }
  return "";
}

absl::Status FrameDecoder::CheckHeader(std::span<const std::byte> h, uint32_t& length) {
  if (GetU32(&h[0]) != kFrameMagic) {
    return absl::DataLossError(
        absl::StrFormat("frame: bad magic 0x%08x (expected 0x%08x): not a courier peer%s",
                        GetU32(&h[0]), kFrameMagic, ForeignProtocol(h)));
  }
  uint8_t type = uint8_t(h[4]), flags = uint8_t(h[5]);
  if (type == 0) return absl::DataLossError("frame: type 0 is invalid");
  if ((flags & kReservedFlagsMask) != 0 || h[6] != std::byte{0} || h[7] != std::byte{0}) {
    return absl::DataLossError(absl::StrFormat("frame: reserved bits set (flags 0x%02x)", flags));
  }
  length = GetU32(&h[12]);
  if (length > limits_.max_payload) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "frame: payload length %u exceeds the limit of %u bytes", length, limits_.max_payload));
  }
  return absl::OkStatus();
}

void FrameDecoder::Compact() {
  if (offset_ == 0) return;
  if (offset_ < end_) std::memmove(buffer_.data(), buffer_.data() + offset_, end_ - offset_);
  end_ -= offset_;
  offset_ = 0;
}

std::span<std::byte> FrameDecoder::ReadRoom(size_t size) {
  if (!error_.ok()) return {};
  if (buffer_.size() - end_ < size) {
    Compact();
    if (buffer_.size() - end_ < size) buffer_.resize(end_ + size);
  }
  return std::span<std::byte>(buffer_.data() + end_, buffer_.size() - end_);
}

void FrameDecoder::CommitRead(size_t n) {
  assert(end_ + n <= buffer_.size());
  end_ += n;
}

void FrameDecoder::Append(std::span<const std::byte> bytes) {
  if (!error_.ok() || bytes.empty()) return;
  if (partial_ && offset_ == end_) bytes = bytes.subspan(FillPayload(bytes));
  if (bytes.empty()) return;
  std::span<std::byte> room = ReadRoom(bytes.size());
  std::memcpy(room.data(), bytes.data(), bytes.size());
  CommitRead(bytes.size());
}

size_t FrameDecoder::payload_remaining() const {
  if (!partial_ || offset_ != end_) return 0;
  return partial_length_ - filled_;
}

bool FrameDecoder::mid_frame() const { return partial_.has_value() || offset_ < end_; }

std::span<std::byte> FrameDecoder::PayloadBuffer(size_t max) {
  if (!partial_ || offset_ != end_) return {};
  // At most as much again as has arrived (or a small floor): memory follows received bytes.
  return PayloadRoom(std::min(max, std::max(filled_, kMinDirectRoom)));
}

std::span<std::byte> FrameDecoder::PayloadRoom(size_t max) {
  std::string& payload = partial_->payload;
  size_t want = std::min(max, size_t(partial_length_) - filled_);
  if (payload.size() < filled_ + want) {
    // Grow geometrically but never past the declared length: memory follows received bytes.
    size_t grown = std::min(std::max(filled_ + want, filled_ * 2), size_t(partial_length_));
    if (payload.capacity() >= grown) {
      payload.resize(grown);
    } else {
      // A pooled buffer when large (no fresh pages to fault in, and often already as large as
      // the whole payload: then this is the only copy), the bytes so far copied over.
      std::string bigger = TakeBufferAtLeast(grown, partial_length_);
      std::memcpy(bigger.data(), payload.data(), filled_);
      ReturnBuffer(std::move(payload));
      payload = std::move(bigger);
    }
  }
  return std::as_writable_bytes(std::span<char>(payload.data() + filled_, want));
}

size_t FrameDecoder::FillPayload(std::span<const std::byte> bytes) {
  size_t copied = 0;
  while (copied < bytes.size() && filled_ < partial_length_) {
    std::span<std::byte> into = PayloadRoom(bytes.size() - copied);
    std::memcpy(into.data(), bytes.data() + copied, into.size());
    filled_ += into.size();
    copied += into.size();
  }
  return copied;
}

void FrameDecoder::CommitPayload(size_t n) {
  assert(partial_ && filled_ + n <= partial_->payload.size());
  filled_ += n;
}

absl::StatusOr<std::optional<Frame>> FrameDecoder::Next() {
  if (!error_.ok()) return error_;
  if (partial_) {
    if (filled_ < partial_length_) {
      // Bytes that arrived in the input buffer while the payload was not read into directly.
      offset_ += FillPayload(std::span<const std::byte>(buffer_.data() + offset_, end_ - offset_));
      if (offset_ == end_) offset_ = end_ = 0;
      if (filled_ < partial_length_) return std::nullopt;
    }
    Frame frame = std::move(*partial_);
    partial_.reset();
    assert(frame.payload.size() == partial_length_);  // PayloadRoom never grows past the length
    return std::optional<Frame>(std::move(frame));
  }
  const size_t available = end_ - offset_;
  const std::byte* base = buffer_.data() + offset_;
  if (available >= 4 && GetU32(base) != kFrameMagic) {
    uint32_t unused;
    std::byte padded[kFrameHeaderSize] = {};
    std::memcpy(padded, base, 4);
    return Fail(CheckHeader(padded, unused));
  }
  if (available < kFrameHeaderSize) {
    if (available == 0) offset_ = end_ = 0;
    return std::nullopt;
  }
  uint32_t length = 0;
  if (absl::Status s = CheckHeader({base, kFrameHeaderSize}, length); !s.ok()) return Fail(s);
  Frame frame;
  frame.type = FrameType(uint8_t(base[4]));
  frame.flags = uint8_t(base[5]);
  frame.call_id = GetU32(base + 8);
  if (available >= kFrameHeaderSize + length) {
    frame.payload = TakeBuffer(length);
    if (length > 0) std::memcpy(frame.payload.data(), base + kFrameHeaderSize, length);
    offset_ += kFrameHeaderSize + length;
    if (offset_ == end_) offset_ = end_ = 0;
    return std::optional<Frame>(std::move(frame));
  }
  // Incomplete payload: move what we have into the frame, the rest arrives later.
  partial_ = std::move(frame);
  partial_length_ = length;
  filled_ = 0;
  offset_ += kFrameHeaderSize;
  return Next();
}

}  // namespace courier::transport
