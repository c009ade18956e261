#include "transport/framed_connection.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"

namespace courier::transport {
namespace {

// The read buffer starts small, so an idle connection costs little, and doubles up to the
// maximum whenever a read fills it: then many small frames arrive per system call.
constexpr size_t kMinReadBuffer = 4 * 1024;
constexpr size_t kMaxReadBuffer = 64 * 1024;
// A large payload is read straight into its own buffer once this much of it has arrived through
// the read buffer and at least this much is still to come (below that, copying is cheaper).
constexpr size_t kDirectReadThreshold = 16 * 1024;
constexpr size_t kMaxDirectRead = 4 * 1024 * 1024;

}  // namespace

FramedConnection::FramedConnection(std::unique_ptr<Connection> connection, FrameLimits limits)
    : connection_(std::move(connection)), limits_(limits), decoder_(limits) {}

asio::awaitable<absl::StatusOr<std::optional<Frame>>> FramedConnection::ReadFrame() {
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder_.Next();
    if (!next.ok() || next->has_value()) co_return next;
    // A large payload in progress is read straight into its own buffer: no extra copy.
    const bool use_direct = !connection_->traits().message_boundaries &&
                            decoder_.payload_received() >= kDirectReadThreshold &&
                            decoder_.payload_remaining() >= kDirectReadThreshold;
    asio::mutable_buffer into;
    if (use_direct) {
      std::span<std::byte> direct = decoder_.PayloadBuffer(kMaxDirectRead);
      into = asio::buffer(direct.data(), direct.size());
    } else {
      // A datagram must fit in one read, or the kernel truncates it.
      size_t size = std::max(kMinReadBuffer, connection_->traits().max_message);
      if (read_buffer_.size() < size) read_buffer_.resize(size);
      into = asio::buffer(read_buffer_.data(), read_buffer_.size());
    }
    absl::StatusOr<size_t> n = co_await connection_->Read(into);
    if (!n.ok()) co_return n.status();
    last_receive_ = std::chrono::steady_clock::now();
    if (!use_direct && *n == read_buffer_.size() && read_buffer_.size() < kMaxReadBuffer) {
      grow_read_buffer_ = true;
    }
    if (*n == 0) {
      if (decoder_.mid_frame()) {
        co_return absl::DataLossError("frame: connection closed in the middle of a frame");
      }
      co_return std::nullopt;
    }
    if (use_direct) {
      decoder_.CommitPayload(*n);
    } else {
      decoder_.Append(std::span<const std::byte>(read_buffer_.data(), *n));
      if (grow_read_buffer_) {
        grow_read_buffer_ = false;
        read_buffer_.resize(std::min(kMaxReadBuffer, read_buffer_.size() * 2));
      }
    }
  }
}

asio::awaitable<absl::Status> FramedConnection::WriteFrames(std::span<const Frame> frames) {
  if (connection_->traits().message_boundaries) {
    // One frame per datagram: the receiver decodes each on its own.
    for (const Frame& frame : frames) {
      headers_.assign(1, EncodeFrameHeader(frame));
      asio::const_buffer parts[2] = {asio::buffer(headers_[0]), asio::buffer(frame.payload)};
      absl::Status s = co_await connection_->Write(std::span<const asio::const_buffer>(parts, 2));
      if (!s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
  headers_.clear();
  headers_.reserve(frames.size());
  buffers_.clear();
  buffers_.reserve(frames.size() * 2);
  size_t total = 0;
  for (const Frame& frame : frames) headers_.push_back(EncodeFrameHeader(frame));
  for (size_t i = 0; i < frames.size(); ++i) {
    buffers_.push_back(asio::buffer(headers_[i]));
    if (!frames[i].payload.empty()) buffers_.push_back(asio::buffer(frames[i].payload));
    total += kFrameHeaderSize + frames[i].payload.size();
  }
  // Usually the kernel takes it all at once: then no asynchronous write, and no scheduler round
  // trip before the caller goes on.
  absl::StatusOr<size_t> written = connection_->TryWrite(buffers_);
  if (!written.ok()) co_return written.status();
  if (*written == total) co_return absl::OkStatus();
  size_t skip = *written;
  size_t first = 0;
  while (skip > 0 && skip >= buffers_[first].size()) skip -= buffers_[first++].size();
  buffers_.erase(buffers_.begin(), buffers_.begin() + static_cast<std::ptrdiff_t>(first));
  if (skip > 0) buffers_[0] += skip;
  co_return co_await connection_->Write(buffers_);
}

void FramedConnection::Close() { connection_->Close(); }

}  // namespace courier::transport
