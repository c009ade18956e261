#include "rpc/internal/session.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/post.hpp"
#include "rpc/internal/stream.h"
#include "rpc/internal/wire.h"
#include "transport/status.h"

namespace courier::internal {

using transport::Frame;
using transport::FrameType;

namespace {

constexpr size_t kMaxPingPayload = 64;
// Frames taken back by Unsend stay in the outbox with this type, and are skipped.
constexpr FrameType kUnsent = FrameType(0);

size_t WireSize(const Frame& frame) { return transport::kFrameHeaderSize + frame.payload.size(); }

// The largest message a session accepts and sends: ours, or the transport's if that is smaller
// (udp:// carries at most its reassembly maximum).
size_t MessageLimit(size_t ours, const transport::Traits& traits) {
  return traits.max_message != 0 ? std::min(ours, traits.max_message) : ours;
}

std::string Seconds(Clock::duration d) {
  return absl::StrCat(std::chrono::duration<double>(d).count(), " s");
}

}  // namespace

Session::Session(std::unique_ptr<transport::Connection> connection, SessionOptions options)
    : executor_(connection->executor()),
      options_(std::move(options)),
      peer_(connection->peer()),
      traits_(connection->traits()),
      framed_(
          std::move(connection),
          transport::FrameLimits{FrameLimitFor(MessageLimit(options_.max_message_size, traits_))}),
      keepalive_timer_(executor_),
      watchdog_(executor_),
      flush_timer_(executor_),
      started_(Clock::now()),
      read_resumed_(started_),
      last_read_(started_) {
  if (options_.peer_name.empty()) options_.peer_name = peer_.address;
}

void Session::Start() {
  Send(HelloFrame(framed_.limits().max_payload, options_.max_concurrent_calls,
                  options_.stream_window, options_.refusal));
  if (closed_) return;
  if (!options_.refusal.ok()) {
    // PROTOCOL.md §6.1a: nothing after the refusal; its reader closes first, or we do shortly.
    refusing_ = true;
    StartRead();
    flush_timer_.expires_after(kRefusalLinger);
    flush_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
      if (!ec) self->Close(self->options_.refusal);
    });
    return;
  }
  StartRead();
  if (options_.keepalive_interval.count() > 0) {
    asio::co_spawn(
        executor_, [self = shared_from_this()]() { return self->KeepaliveLoop(); }, asio::detached);
  }
  ArmWatchdog();
}

size_t Session::peer_max_frame_payload() const {
  size_t peer = framed_.limits().max_payload;
  if (peer_hello_) {
    peer = peer_hello_->max_frame_payload() != 0 ? peer_hello_->max_frame_payload()
                                                 : transport::kDefaultMaxPayload;
  }
  // What the transport carries bounds what we send, whatever the peer accepts.
  const size_t transport_limit = framed_.traits().max_message;
  return transport_limit != 0 ? std::min<size_t>(peer, FrameLimitFor(transport_limit)) : peer;
}

uint64_t Session::Send(Frame frame) {
  const uint64_t sequence = outbox_first_sequence_ + outbox_.size();
  if (closed_ || close_after_flush_) return sequence;
  queued_bytes_ += WireSize(frame);
  outbox_.push_back(std::move(frame));
  // Written at once unless frames are being handled (then at the end of the batch) or a write
  // is in flight (then when it completes): Flush checks.
  Flush();
  return sequence;
}

uint64_t Session::SendSoon(Frame frame) {
  if (!corked_ && !write_pending_ && !flush_posted_ && !closed_ && !close_after_flush_) {
    // Flush (below, and for every frame queued meanwhile) waits for this.
    flush_posted_ = true;
    asio::post(executor_, [self = shared_from_this()] {
      self->flush_posted_ = false;
      if (!self->closed_) self->Flush();
    });
  }
  return Send(std::move(frame));
}

bool Session::Unsend(uint64_t sequence) {
  if (closed_ || sequence < outbox_first_sequence_) return false;
  const uint64_t index = sequence - outbox_first_sequence_;
  if (index >= outbox_.size() || outbox_[index].type == kUnsent) return false;
  Frame& frame = outbox_[index];
  queued_bytes_ -= WireSize(frame);
  transport::ReturnBuffer(std::move(frame.payload));
  frame.payload = std::string();
  frame.type = kUnsent;
  return true;
}

void Session::Close(absl::Status why) {
  if (closed_) return;
  closed_ = true;
  framed_.Close();
  keepalive_timer_.cancel();
  watchdog_.cancel();
  flush_timer_.cancel();
  outbox_.clear();
  queued_bytes_ = 0;
  OnClose(why);
}

void Session::CloseAfterFlush(absl::Status why) {
  if (closed_ || close_after_flush_) return;
  close_after_flush_ = true;
  flush_status_ = std::move(why);
  flush_timer_.expires_after(kFlushTimeout);
  flush_timer_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec) self->Close(self->flush_status_);
  });
  Flush();
}

void Session::GoAwayAndClose(uint32_t last_call_id, absl::Status why) {
  if (closed_ || close_after_flush_) return;
  wire::GoAway goaway;
  goaway.set_last_call_id(last_call_id);
  goaway.set_reason(std::string(why.message()));
  Send(Frame{FrameType::kGoAway, 0, 0, goaway.SerializeAsString()});
  CloseAfterFlush(std::move(why));
}

absl::Status Session::HandleHello(const Frame& frame) {
  wire::Hello hello;
  if (!hello.ParseFromString(frame.payload)) {
    return absl::DataLossError("protocol error: malformed hello");
  }
  if (hello.version() < 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("protocol error: peer speaks version ", hello.version(),
                     " (an empty hello is version 0); this side speaks ", kProtocolVersion));
  }
  if (hello.max_frame_payload() != 0 && hello.max_frame_payload() < kMinFramePayload) {
    return absl::FailedPreconditionError(
        absl::StrCat("protocol error: peer announced max_frame_payload ", hello.max_frame_payload(),
                     ", below the minimum of ", kMinFramePayload));
  }
  if (int64_t{hello.stream_window()} > kMaxStreamCredit) {  // a window is the first credit
    return absl::FailedPreconditionError(
        absl::StrCat("protocol error: peer announced stream_window ", hello.stream_window(),
                     ", above the maximum of ", kMaxStreamCredit));
  }
  if (hello.refusal_code() != 0) {
    if (!options_.accept_refusal) {
      return absl::DataLossError("protocol error: a client's hello carries a refusal");
    }
    peer_refused_ = true;
    return StatusFromWire(hello.refusal_code(),
                          absl::StrCat(options_.peer_name, " refused the connection: ",
                                       Printable(hello.refusal_message())));
  }
  peer_hello_ = std::move(hello);
  return absl::OkStatus();
}

absl::Status Session::HandleControl(Frame& f, bool& handled) {
  handled = true;
  switch (f.type) {
    case FrameType::kHello:
      return absl::DataLossError("protocol error: a second hello");
    case FrameType::kPing:
      if (f.call_id != 0 || f.payload.size() > kMaxPingPayload) {
        return absl::DataLossError(absl::StrCat("protocol error: ping with call id ", f.call_id,
                                                " and ", f.payload.size(), " payload bytes"));
      }
      if (!ping_budget_.Take(last_read_)) {
        return absl::ResourceExhaustedError(absl::StrCat("too many pings (more than ", kPingBurst,
                                                         " at once or ", kPingsPerSecond,
                                                         " per second)"));
      }
      Send(Frame{FrameType::kPong, 0, 0, std::move(f.payload)});
      return absl::OkStatus();
    case FrameType::kPong:
      if (f.call_id != 0 || f.payload.size() > kMaxPingPayload) {
        return absl::DataLossError(absl::StrCat("protocol error: pong with call id ", f.call_id,
                                                " and ", f.payload.size(), " payload bytes"));
      }
      return absl::OkStatus();  // last_read_ is all keepalive needs
    default:
      handled = false;
      return absl::OkStatus();
  }
}

void Session::StartRead() {
  if (closed_ || read_pending_) return;
  read_pending_ = true;
  framed_.connection().AsyncRead(
      framed_.PrepareRead(),
      [self = shared_from_this()](absl::StatusOr<size_t> n) { self->OnRead(std::move(n)); });
}

void Session::OnRead(absl::StatusOr<size_t> n) {
  read_pending_ = false;
  if (closed_) return;
  if (!n.ok()) {
    Close(n.status());
    return;
  }
  if (*n == 0) {
    Close(framed_.mid_frame()
              ? absl::DataLossError("frame: connection closed in the middle of a frame")
              : absl::UnavailableError(absl::StrCat(options_.peer_name, " closed the connection")));
    return;
  }
  framed_.CommitRead(*n);
  last_read_ = framed_.last_receive();
  ProcessFrames();
}

void Session::ProcessFrames() {
  // Keeps us alive through hooks that may drop the last other reference.
  std::shared_ptr<Session> self = shared_from_this();
  corked_ = true;
  bool more = false;  // frames may be left: this turn's share is used up
  for (int handled = 0; !closed_ && !close_after_flush_;) {
    if (handled == kFramesPerTurn) {
      more = true;
      break;
    }
    absl::StatusOr<std::optional<Frame>> frame = framed_.NextFrame();
    if (!frame.ok()) {
      Close(frame.status());
      return;
    }
    if (!frame->has_value()) break;
    ++handled;
    if (!HandleFrame(**frame)) break;
    if (handled % kFramesPerFlush == 0) {
      corked_ = false;
      Flush();
      corked_ = true;
    }
  }
  corked_ = false;
  if (closed_) return;
  Flush();
  if (closed_ || close_after_flush_) return;
  if (more) {
    // Fairness: let other connections on this reactor run before taking more of ours.
    PostProcessFrames();
    return;
  }
  if (options_.pause_reading_when_over_bound && over_queue_bound()) {
    // Backpressure: the peer is not reading what we send; stop reading what it sends.
    reading_paused_ = true;
    return;
  }
  StartRead();
}

void Session::ResumeReading() {
  if (!reading_paused_ || closed_) return;
  reading_paused_ = false;
  read_resumed_ = Clock::now();
  // Posted: called from the write side, which is in the middle of its own bookkeeping.
  PostProcessFrames();
}

void Session::PostProcessFrames() {
  if (resume_posted_) return;
  resume_posted_ = true;
  asio::post(executor_, [self = shared_from_this()] {
    self->resume_posted_ = false;
    if (!self->closed_) self->ProcessFrames();
  });
}

bool Session::HandleFrame(Frame& f) {
  if (refusing_) {
    transport::ReturnBuffer(std::move(f.payload));
    return true;
  }
  if (!peer_hello_) {
    absl::Status s = f.type == FrameType::kHello
                         ? HandleHello(f)
                         : absl::DataLossError("protocol error: first frame is not a hello");
    if (!s.ok()) {
      Close(s);
      return false;
    }
    OnHandshake();
    ArmWatchdog();
    return !closed_;
  }
  bool handled = false;
  if (absl::Status s = HandleControl(f, handled); !s.ok()) {
    if (s.code() == absl::StatusCode::kResourceExhausted) {
      OnPeerAbuse(s);
    } else {
      Close(s);
    }
    return false;
  }
  if (!handled) OnFrame(std::move(f));
  return !closed_ && !close_after_flush_;
}

void Session::Flush() {
  if (flushing_ || write_pending_ || corked_ || flush_posted_) return;
  std::shared_ptr<Session> self = shared_from_this();
  flushing_ = true;
  const size_t max_frames = framed_.traits().message_boundaries ? 1 : kMaxBatchFrames;
  while (!closed_) {
    if (outbox_.empty()) {
      flushing_ = false;
      if (close_after_flush_) Close(flush_status_);
      return;
    }
    batch_bytes_ = 0;
    while (!outbox_.empty() && writing_.size() < max_frames &&
           (writing_.empty() || batch_bytes_ + WireSize(outbox_.front()) <= kMaxBatchBytes)) {
      Frame& frame = outbox_.front();
      if (frame.type != kUnsent) {
        batch_bytes_ += WireSize(frame);
        writing_.push_back(std::move(frame));
      }
      outbox_.pop_front();
      ++outbox_first_sequence_;
    }
    if (writing_.empty()) continue;
    std::span<const asio::const_buffer> buffers = framed_.GatherWrite(writing_);
    // Usually the transport takes it all at once: then no asynchronous write at all.
    absl::StatusOr<size_t> written = framed_.connection().TryWrite(buffers);
    if (!written.ok()) {
      flushing_ = false;
      Close(transport::Annotate(written.status(), absl::StrCat("write to ", options_.peer_name)));
      return;
    }
    if (*written == batch_bytes_) {
      FinishBatch();
      continue;
    }
    // The rest when the transport has room.
    pending_buffers_.assign(buffers.begin(), buffers.end());
    transport::SkipWritten(pending_buffers_, *written);
    write_pending_ = true;
    flushing_ = false;
    framed_.connection().AsyncWrite(
        pending_buffers_, [self](absl::Status status) { self->OnWriteDone(std::move(status)); });
    return;
  }
  flushing_ = false;
}

void Session::OnWriteDone(absl::Status status) {
  write_pending_ = false;
  if (closed_) return;
  if (!status.ok()) {
    Close(transport::Annotate(status, absl::StrCat("write to ", options_.peer_name)));
    return;
  }
  FinishBatch();
  if (!closed_) Flush();
}

void Session::FinishBatch() {
  const bool was_over = over_queue_bound();
  queued_bytes_ -= batch_bytes_;
  batch_bytes_ = 0;
  OnWritten(writing_);
  for (Frame& frame : writing_) transport::ReturnBuffer(std::move(frame.payload));
  writing_.clear();
  if (closed_) return;
  if (was_over && !over_queue_bound()) {
    ResumeReading();
    OnQueueDrained();
  }
}

void Session::ArmWatchdog() {
  if (closed_) return;
  const Clock::time_point now = Clock::now();
  Clock::time_point next = Clock::time_point::max();
  if (!handshaken()) {
    if (options_.handshake_timeout.count() > 0) next = started_ + options_.handshake_timeout;
  } else {
    // Each limit's earliest possible expiry: a stall can only be timed from the last bytes of
    // a frame already begun; otherwise it would begin no earlier than now.
    if (options_.stall_timeout.count() > 0) {
      const Clock::time_point last = std::max(framed_.last_receive(), read_resumed_);
      const bool can_expire = framed_.mid_frame() && !reading_paused_;
      next = std::min(next, (can_expire ? last : now) + options_.stall_timeout);
    }
    if (options_.idle_timeout.count() > 0) {
      const Clock::time_point at = framed_.last_receive() + options_.idle_timeout;
      next = std::min(next, at > now ? at : now + options_.idle_timeout);
    }
  }
  if (next == Clock::time_point::max()) return;
  watchdog_.expires_at(next);
  watchdog_.async_wait([self = shared_from_this()](std::error_code ec) {
    if (!ec && !self->closed()) self->OnWatchdog();
  });
}

void Session::OnWatchdog() {
  const Clock::time_point now = Clock::now();
  if (!handshaken()) {
    if (options_.handshake_timeout.count() > 0 && now >= started_ + options_.handshake_timeout) {
      Close(absl::DeadlineExceededError(absl::StrCat("no protocol hello from ", options_.peer_name,
                                                     " within ",
                                                     Seconds(options_.handshake_timeout))));
      return;
    }
  } else {
    const Clock::time_point last = std::max(framed_.last_receive(), read_resumed_);
    if (options_.stall_timeout.count() > 0 && !reading_paused_ && framed_.mid_frame() &&
        now - last >= options_.stall_timeout) {
      Close(absl::DeadlineExceededError(absl::StrCat(options_.peer_name,
                                                     " stalled in the middle of a frame for ",
                                                     Seconds(options_.stall_timeout))));
      return;
    }
    if (options_.idle_timeout.count() > 0 &&
        now - framed_.last_receive() >= options_.idle_timeout && Idle()) {
      GoAwayAndClose(0, absl::UnavailableError(
                            absl::StrCat("connection idle for ", Seconds(options_.idle_timeout))));
      return;
    }
  }
  ArmWatchdog();
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
