// Frames over a Connection: reads reassemble frames from whatever the transport returns, writes
// gather many frames into one system call. Framing layer; the only doorway from rpc/ to the
// transports.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <span>
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

  // The next frame. nullopt: the peer closed cleanly between frames. A close mid-frame is
  // kDataLoss; a corrupt frame kDataLoss; a length over the limit kResourceExhausted (the
  // connection is then useless: close it). At most one ReadFrame in flight.
  asio::awaitable<absl::StatusOr<std::optional<Frame>>> ReadFrame();

  // Writes all `frames` with as few system calls as the transport allows (one gather write on a
  // byte stream). `frames` must stay valid until done. At most one write in flight.
  asio::awaitable<absl::Status> WriteFrames(std::span<const Frame> frames);
  asio::awaitable<absl::Status> WriteFrame(const Frame& frame) {
    return WriteFrames(std::span<const Frame>(&frame, 1));
  }

  // Idempotent; pending reads and writes complete with kCancelled.
  void Close();
  // True while bytes of an incomplete frame are buffered (the peer is in the middle of a frame).
  bool mid_frame() const { return decoder_.mid_frame(); }
  // When the last Read returned bytes (construction time before the first).
  std::chrono::steady_clock::time_point last_receive() const { return last_receive_; }
  // Bytes the read side holds now: the read buffer and a partial frame's payload.
  size_t read_buffer_size() const { return read_buffer_.size(); }
  Connection& connection() { return *connection_; }
  const FrameLimits& limits() const { return limits_; }

 private:
  std::unique_ptr<Connection> connection_;
  FrameLimits limits_;
  FrameDecoder decoder_;
  std::vector<std::byte> read_buffer_;
  bool grow_read_buffer_ = false;
  std::chrono::steady_clock::time_point last_receive_ = std::chrono::steady_clock::now();
  std::vector<FrameHeaderBytes> headers_;  // scratch for WriteFrames
  std::vector<asio::const_buffer> buffers_;
};

}  // namespace courier::transport
