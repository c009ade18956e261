// Frames over a Connection: reads reassemble frames from whatever the transport returns, writes
// gather many frames into one system call. Framing layer; the only doorway from rpc/ to the
// transports.
//
// Two ways to use it. The session loops drive it step by step without coroutines: PrepareRead,
// the connection's AsyncRead into that buffer, CommitRead, then NextFrame until it has none;
// GatherWrite lays out a batch of frames for one TryWrite/AsyncWrite. ReadFrame and WriteFrames
// are the same steps as coroutines, for tests and tools.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/awaitable.hpp"
#include "asio/buffer.hpp"
#include "transport/frame.h"
#include "transport/transport.h"

namespace courier::transport {

class FramedConnection {
 public:
  explicit FramedConnection(std::unique_ptr<Connection> connection, FrameLimits limits = {});

  // Where the next read goes: straight into a large payload in progress (no copy), or into the
  // decoder's input buffer. Valid until CommitRead.
  asio::mutable_buffer PrepareRead();
  // `n` > 0 bytes arrived in the buffer PrepareRead gave.
  void CommitRead(size_t n);
  // The next complete frame already received, or nullopt. A corrupt frame is kDataLoss, a
  // length over the limit kResourceExhausted (the connection is then useless: close it).
  absl::StatusOr<std::optional<Frame>> NextFrame() { return decoder_.Next(); }

  // Lays out `frames` for one gather write: frames with small payloads are copied, headers and
  // all, into one contiguous buffer (one iovec for a whole batch of small frames), large
  // payloads go as their own buffers without a copy. The result and `frames` must stay valid
  // until written; the next call reuses the result's storage. A message transport gets one
  // frame per call: pass one frame at a time.
  std::span<const asio::const_buffer> GatherWrite(std::span<const Frame> frames);

  // The next frame. nullopt: the peer closed cleanly between frames. A close mid-frame is
  // kDataLoss; otherwise as NextFrame. At most one ReadFrame in flight.
  asio::awaitable<absl::StatusOr<std::optional<Frame>>> ReadFrame();
  // Writes all `frames` with as few system calls as the transport allows. `frames` must stay
  // valid until done. At most one write in flight.
  asio::awaitable<absl::Status> WriteFrames(std::span<const Frame> frames);
  asio::awaitable<absl::Status> WriteFrame(const Frame& frame) {
    return WriteFrames(std::span<const Frame>(&frame, 1));
  }

  // Idempotent; pending reads and writes complete with kCancelled.
  void Close();
  // True while bytes of an incomplete frame are buffered (the peer is in the middle of a frame).
  bool mid_frame() const { return decoder_.mid_frame(); }
  // When the last read returned bytes (construction time before the first).
  std::chrono::steady_clock::time_point last_receive() const { return last_receive_; }
  // Bytes the read side holds now in its input buffer.
  size_t read_buffer_size() const { return decoder_.buffer_capacity(); }
  Connection& connection() { return *connection_; }
  const Traits& traits() const { return traits_; }
  const FrameLimits& limits() const { return limits_; }

 private:
  std::unique_ptr<Connection> connection_;
  Traits traits_;
  FrameLimits limits_;
  FrameDecoder decoder_;
  size_t read_size_;          // how much the next buffered read asks for
  bool read_direct_ = false;  // the prepared read goes straight into a payload
  size_t read_asked_ = 0;     // the size of the prepared buffer
  std::chrono::steady_clock::time_point last_receive_ = std::chrono::steady_clock::now();
  std::string gather_;  // small frames, contiguous
  std::vector<asio::const_buffer> buffers_;
};

}  // namespace courier::transport
