#include "transport/framed_connection.h"

#include <algorithm>
#include <cstring>
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
// Payloads up to this size are copied into the contiguous gather buffer; larger ones are
// written from where they are.
constexpr size_t kGatherCopyLimit = 8 * 1024;

}  // namespace

FramedConnection::FramedConnection(std::unique_ptr<Connection> connection, FrameLimits limits)
    : connection_(std::move(connection)),
      traits_(connection_->traits()),
      limits_(limits),
      decoder_(limits),
      // A datagram must fit in one read, or the kernel truncates it.
      read_size_(traits_.message_boundaries ? std::max(kMinReadBuffer, traits_.max_message)
                                            : kMinReadBuffer) {}

asio::mutable_buffer FramedConnection::PrepareRead() {
  read_direct_ = !traits_.message_boundaries &&
                 decoder_.payload_received() >= kDirectReadThreshold &&
                 decoder_.payload_remaining() >= kDirectReadThreshold;
  std::span<std::byte> room =
      read_direct_ ? decoder_.PayloadBuffer(kMaxDirectRead) : decoder_.ReadRoom(read_size_);
  read_asked_ = room.size();
  return asio::buffer(room.data(), room.size());
}

void FramedConnection::CommitRead(size_t n) {
  last_receive_ = std::chrono::steady_clock::now();
  if (read_direct_) {
    decoder_.CommitPayload(n);
    return;
  }
  decoder_.CommitRead(n);
  if (n == read_asked_ && read_size_ < kMaxReadBuffer && !traits_.message_boundaries) {
    read_size_ = std::min(kMaxReadBuffer, read_size_ * 2);
  }
}

asio::awaitable<absl::StatusOr<std::optional<Frame>>> FramedConnection::ReadFrame() {
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder_.Next();
    if (!next.ok() || next->has_value()) co_return next;
    absl::StatusOr<size_t> n = co_await connection_->Read(PrepareRead());
    if (!n.ok()) co_return n.status();
    if (*n == 0) {
      if (decoder_.mid_frame()) {
        co_return absl::DataLossError("frame: connection closed in the middle of a frame");
      }
      co_return std::nullopt;
    }
    CommitRead(*n);
  }
}

std::span<const asio::const_buffer> FramedConnection::GatherWrite(std::span<const Frame> frames) {
  // First the gather buffer, so nothing points into it while it may still grow.
  size_t gathered = 0;
  for (const Frame& frame : frames) {
    gathered += kFrameHeaderSize;
    if (frame.payload.size() <= kGatherCopyLimit) gathered += frame.payload.size();
  }
  if (gather_.size() < gathered) gather_.resize(gathered);
  buffers_.clear();
  char* at = gather_.data();
  const char* run = at;  // start of the contiguous run not yet in buffers_
  for (const Frame& frame : frames) {
    FrameHeaderBytes header = EncodeFrameHeader(frame);
    std::memcpy(at, header.data(), header.size());
    at += header.size();
    if (frame.payload.size() <= kGatherCopyLimit) {
      if (!frame.payload.empty()) std::memcpy(at, frame.payload.data(), frame.payload.size());
      at += frame.payload.size();
      continue;
    }
    buffers_.push_back(asio::buffer(run, static_cast<size_t>(at - run)));
    buffers_.push_back(asio::buffer(frame.payload));
    run = at;
  }
  if (at != run) buffers_.push_back(asio::buffer(run, static_cast<size_t>(at - run)));
  return buffers_;
}

asio::awaitable<absl::Status> FramedConnection::WriteFrames(std::span<const Frame> frames) {
  const size_t step = traits_.message_boundaries ? 1 : frames.size();
  for (size_t i = 0; i < frames.size(); i += step) {
    std::span<const asio::const_buffer> layout = GatherWrite(frames.subspan(i, step));
    std::vector<asio::const_buffer> buffers(layout.begin(), layout.end());
    size_t total = 0;
    for (const asio::const_buffer& b : buffers) total += b.size();
    // Usually the kernel takes it all at once: then no asynchronous write.
    absl::StatusOr<size_t> written = connection_->TryWrite(buffers);
    if (!written.ok()) co_return written.status();
    if (*written == total) continue;
    SkipWritten(buffers, *written);
    if (absl::Status s = co_await connection_->Write(buffers); !s.ok()) co_return s;
  }
  co_return absl::OkStatus();
}

void FramedConnection::Close() { connection_->Close(); }

}  // namespace courier::transport
