// Frames over a Connection: reads reassemble frames from whatever the transport returns, writes
// gather many frames into one system call. Framing layer; the only doorway from rpc/ to the
// transports.
#pragma once

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
  Connection& connection() { return *connection_; }
  const FrameLimits& limits() const { return limits_; }

 private:
  std::unique_ptr<Connection> connection_;
  FrameLimits limits_;
  FrameDecoder decoder_;
  std::vector<std::byte> read_buffer_;
  std::vector<FrameHeaderBytes> headers_;  // scratch for WriteFrames
  std::vector<asio::const_buffer> buffers_;
};

}  // namespace courier::transport
