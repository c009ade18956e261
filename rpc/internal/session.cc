#include "rpc/internal/session.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "rpc/internal/wire.h"
#include "transport/status.h"

namespace courier::internal {

using transport::Frame;
using transport::FrameType;

namespace {
constexpr size_t kMaxPingPayload = 64;
}  // namespace

Session::Session(std::unique_ptr<transport::Connection> connection, SessionOptions options)
    : executor_(connection->executor()),
      options_(std::move(options)),
      peer_(connection->peer()),
      framed_(std::move(connection),
              transport::FrameLimits{FrameLimitFor(options_.max_message_size)}),
      outbox_ready_(executor_, Clock::time_point::max()),
      keepalive_timer_(executor_),
      handshake_timer_(executor_),
      last_read_(Clock::now()) {
  if (options_.peer_name.empty()) options_.peer_name = peer_.address;
}

void Session::Start() {
  Send(HelloFrame(framed_.limits().max_payload));
  auto self = shared_from_this();
  asio::co_spawn(
      executor_, [self]() { return self->ReadLoop(); }, asio::detached);
  asio::co_spawn(
      executor_, [self]() { return self->WriteLoop(); }, asio::detached);
  if (options_.keepalive_interval.count() > 0) {
    asio::co_spawn(
        executor_, [self]() { return self->KeepaliveLoop(); }, asio::detached);
  }
  if (options_.handshake_timeout.count() > 0) {
    handshake_timer_.expires_after(options_.handshake_timeout);
    handshake_timer_.async_wait([self](std::error_code ec) {
      if (ec || self->closed() || self->handshaken()) return;
      self->Close(absl::DeadlineExceededError(
          absl::StrCat("no protocol hello from ", self->options_.peer_name, " in time")));
    });
  }
}

size_t Session::peer_max_frame_payload() const {
  if (peer_hello_ && peer_hello_->max_frame_payload() != 0) {
    return peer_hello_->max_frame_payload();
  }
  return peer_hello_ ? transport::kDefaultMaxPayload : framed_.limits().max_payload;
}

void Session::Send(Frame frame) {
  if (closed_ || close_after_flush_) return;
  outbox_.push_back(std::move(frame));
  if (writer_idle_) {
    writer_idle_ = false;
    outbox_ready_.cancel();
  }
}

void Session::Close(absl::Status why) {
  if (closed_) return;
  closed_ = true;
  framed_.Close();
  outbox_ready_.cancel();
  keepalive_timer_.cancel();
  handshake_timer_.cancel();
  outbox_.clear();
  OnClose(why);
}

void Session::CloseAfterFlush(absl::Status why) {
  if (closed_ || close_after_flush_) return;
  close_after_flush_ = true;
  flush_status_ = std::move(why);
  if (writer_idle_) {
    writer_idle_ = false;
    outbox_ready_.cancel();
  }
}

absl::Status Session::HandleHello(const Frame& frame) {
  wire::Hello hello;
  if (!hello.ParseFromString(frame.payload)) {
    return absl::DataLossError("protocol error: malformed hello");
  }
  if (hello.version() < 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("protocol error: peer speaks version ", hello.version()));
  }
  peer_hello_ = std::move(hello);
  return absl::OkStatus();
}

asio::awaitable<void> Session::ReadLoop() {
  for (;;) {
    absl::StatusOr<std::optional<Frame>> frame = co_await framed_.ReadFrame();
    if (closed_) co_return;
    if (!frame.ok()) {
      Close(frame.status());
      co_return;
    }
    if (!frame->has_value()) {
      Close(absl::UnavailableError(absl::StrCat(options_.peer_name, " closed the connection")));
      co_return;
    }
    last_read_ = Clock::now();
    Frame& f = **frame;
    if (!peer_hello_) {
      absl::Status s = f.type == FrameType::kHello
                           ? HandleHello(f)
                           : absl::DataLossError("protocol error: first frame is not a hello");
      if (!s.ok()) {
        Close(s);
        co_return;
      }
      handshake_timer_.cancel();
      OnHandshake();
      continue;
    }
    switch (f.type) {
      case FrameType::kHello:
        break;  // a repeated hello changes nothing
      case FrameType::kPing:
        if (f.payload.size() <= kMaxPingPayload && f.call_id == 0) {
          Send(Frame{FrameType::kPong, 0, 0, std::move(f.payload)});
        }
        break;
      case FrameType::kPong:
        break;  // last_read_ is all keepalive needs
      default:
        OnFrame(std::move(f));
        break;
    }
    if (closed_) co_return;
  }
}

asio::awaitable<void> Session::WriteLoop() {
  for (;;) {
    if (closed_) co_return;
    if (outbox_.empty()) {
      if (close_after_flush_) {
        Close(flush_status_);
        co_return;
      }
      writer_idle_ = true;
      outbox_ready_.expires_at(Clock::time_point::max());
      co_await outbox_ready_.async_wait(use_nothrow);
      writer_idle_ = false;
      continue;
    }
    writing_.swap(outbox_);
    absl::Status status = co_await framed_.WriteFrames(writing_);
    for (Frame& frame : writing_) transport::ReturnBuffer(std::move(frame.payload));
    writing_.clear();
    if (!status.ok()) {
      Close(transport::Annotate(status, absl::StrCat("write to ", options_.peer_name)));
      co_return;
    }
  }
}

asio::awaitable<void> Session::KeepaliveLoop() {
  const Clock::duration interval = options_.keepalive_interval;
  for (;;) {
    keepalive_timer_.expires_after(interval);
    co_await keepalive_timer_.async_wait(use_nothrow);
    if (closed_) co_return;
    if (Clock::now() - last_read_ < interval) continue;
    const Clock::time_point sent = Clock::now();
    Send(Frame{FrameType::kPing, 0, 0, "keepalive"});
    keepalive_timer_.expires_after(options_.keepalive_timeout);
    co_await keepalive_timer_.async_wait(use_nothrow);
    if (closed_) co_return;
    if (last_read_ < sent) {
      Close(absl::UnavailableError(absl::StrCat("keepalive: no answer from ", options_.peer_name,
                                                " within the keepalive timeout")));
      co_return;
    }
  }
}

}  // namespace courier::internal
