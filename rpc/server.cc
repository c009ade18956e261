#include "rpc/server.h"

#include <algorithm>
#include <atomic>
#include <optional>
#include <thread>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/bind_executor.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/execution.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/recycling_allocator.hpp"
#include "asio/steady_timer.hpp"
#include "rpc/internal/metrics.h"
#include "rpc/internal/session.h"
#include "rpc/internal/stream.h"
#include "rpc/internal/wire.h"
#include "rpc/log.h"
#include "rpc/wire.pb.h"
#include "transport/status.h"

namespace courier {
namespace internal {

using transport::Frame;
using transport::FrameType;

class ServerSession;

// One reactor: an executor and the sessions on it (touched only on that executor).
struct Reactor {
  asio::any_io_executor executor;
  absl::flat_hash_set<ServerSession*> sessions;
};

// A method the server serves.
struct ServedMethod {
  const MethodEntry* entry;
  MethodMetrics* metrics;  // null without metrics
};

// A reactor thread's io_context, whose pending handlers ~Server can destroy (shutdown) while
// the context itself, and the socket services objects bound to it use, live on.
class ReactorContext : public asio::io_context {
 public:
  using asio::execution_context::shutdown;
  using asio::io_context::io_context;
};

// What the server shares with its sessions and accept loops; outlives the Server object while
// any of them runs.
struct ServerState {
  ServerOptions options;
  asio::any_io_executor main_executor;
  absl::flat_hash_map<std::string, ServedMethod> methods;
  std::unique_ptr<ServerMetrics> metrics;                         // null without metrics
  std::vector<std::shared_ptr<ServiceBase>> owned_services;       // AddService(shared_ptr)
  std::vector<std::function<void()>> shutdown_hooks;              // OnShutdown, on main_executor
  std::vector<std::shared_ptr<transport::Transport>> transports;  // one per scheme used
  std::vector<std::shared_ptr<transport::Listener>> listeners;
  std::vector<std::shared_ptr<Reactor>> reactors;
  // Reactor threads (threads > 0): their io_contexts, kept running by the guards.
  std::vector<std::unique_ptr<ReactorContext>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  size_t next_reactor = 0;
  bool listening = false;
  std::atomic<bool> shut_down{false};  // written on the main executor, read on reactors
  std::atomic<size_t> active_calls{0};
  std::atomic<size_t> live_sessions{0};
  std::atomic<uint64_t> connections_refused{0};
  std::atomic<uint64_t> calls_refused{0};
  std::atomic<uint64_t> closed_for_abuse{0};
  std::atomic<uint64_t> deadline_checks{0};
  std::atomic<uint64_t> not_allowed{0};
  std::atomic<uint64_t> not_authorized{0};
  std::optional<asio::steady_timer> all_closed;  // on main_executor: Shutdown waits here
  Clock::time_point drain_deadline;
};

// A session ended (on any reactor): wake Shutdown when it was the last.
void SessionGone(const std::shared_ptr<ServerState>& state) {
  if (state->live_sessions.fetch_sub(1) == 1) {
    asio::post(state->main_executor, [state] {
      if (state->all_closed) state->all_closed->cancel();
    });
  }
}

// The executor of a spawned call's completion handler. co_spawn posts the completion of a
// coroutine that finished without ever suspending (most handlers), which for a detached call
// is a no-op through the scheduler: a queue operation and a reactor poll per call. The handler
// does nothing, so it runs at once instead.
struct EndInline {
  asio::execution_context* context;
  template <typename F>
  void execute(F&& f) const {
    std::forward<F>(f)();
  }
  // co_spawn asks for a never-blocking executor to post with; running a no-op inline is the
  // same thing.
  EndInline require(asio::execution::blocking_t::never_t) const { return *this; }
  asio::execution_context& query(asio::execution::context_t) const noexcept { return *context; }
  static constexpr asio::execution::blocking_t query(asio::execution::blocking_t) noexcept {
    return asio::execution::blocking.possibly;
  }
  friend bool operator==(const EndInline& a, const EndInline& b) noexcept {
    return a.context == b.context;
  }
  friend bool operator!=(const EndInline& a, const EndInline& b) noexcept { return !(a == b); }
};

// kFailed: a streaming call broke a limit (its stream's end status says which).
enum class CancelReason { kNone, kClient, kDeadline, kConnectionLost, kShutdown, kFailed };

// A connection may cancel (or be refused) this many calls at once, and this many per second
// after that; beyond it, it gets GOAWAY and is closed (the rapid-reset defence of HTTP/2 servers).
constexpr double kAbuseBurst = 2000;
constexpr double kAbusePerSecond = 1000;
// After the drain deadline, cancelled handlers have this long to answer before connections are
// closed hard.
constexpr Clock::duration kShutdownGrace = std::chrono::seconds(1);
// After the last call of a draining connection is answered, the client has this long to close
// first (so our close cannot reset a connection with responses still unread).
constexpr Clock::duration kLinger = std::chrono::seconds(1);
// Shutdown closes whatever is still open this long after the drain deadline (sessions close on
// their own well before: kShutdownGrace, or kLinger plus kFlushTimeout).
constexpr Clock::duration kShutdownBackstop = std::chrono::seconds(3);

struct ServerCall {
  ServerCall(uint32_t id, ServerContext ctx) : id(id), ctx(std::move(ctx)) {}
  uint32_t id;
  ServerContext ctx;
  asio::cancellation_signal signal;
  CancelReason reason = CancelReason::kNone;
  bool finished = false;  // the handler returned; its response is queued
  std::unique_ptr<StreamCore> stream;  // streaming calls
  MethodMetrics* metrics = nullptr;    // null without metrics
  Clock::time_point started;           // with metrics
};

class ServerSession final : public Session {
 public:
  ServerSession(std::unique_ptr<transport::Connection> connection, SessionOptions options,
                std::shared_ptr<ServerState> state, std::shared_ptr<Reactor> reactor,
                TransportMetrics* metrics)
      : Session(std::move(connection), std::move(options)),
        state_(std::move(state)),
        reactor_(std::move(reactor)),
        metrics_(metrics),
        drain_timer_(executor()),
        deadline_timer_(executor()),
        end_context_(&asio::query(executor(), asio::execution::context)) {
    // A sentinel that never expires keeps the set's root node alive (no allocation for the
    // first deadline after the set ran empty).
    deadlines_.insert({Clock::time_point::max(), 0});
  }

  // Sends goaway; calls in flight may finish until `deadline`, then are cancelled, and the
  // connection is closed at most kShutdownGrace later whatever the peer does.
  void BeginDrain(Clock::time_point deadline) {
    if (draining_ || closed()) return;
    if (refused()) {  // it was told everything already (PROTOCOL.md §6.1a): nothing more
      Close(absl::CancelledError("server shutting down"));
      return;
    }
    draining_ = true;
    wire::GoAway goaway;
    goaway.set_last_call_id(max_call_id_);
    goaway.set_reason("server shutting down");
    Send(Frame{FrameType::kGoAway, 0, 0, goaway.SerializeAsString()});
    if (calls_.empty()) {
      Linger();
      return;
    }
    drain_timer_.expires_at(deadline);
    drain_timer_.async_wait([self = shared_self()](std::error_code ec) {
      if (ec || self->closed()) return;
      self->CancelAll(CancelReason::kShutdown);
      self->drain_timer_.expires_after(kShutdownGrace);
      self->drain_timer_.async_wait([self](std::error_code ec) {
        if (!ec) self->Close(absl::UnavailableError("server shut down"));
      });
    });
  }

  size_t open_calls() const { return calls_.size(); }

 private:
  std::shared_ptr<ServerSession> shared_self() {
    return std::static_pointer_cast<ServerSession>(shared_from_this());
  }

  void OnFrame(Frame frame) override {
    switch (frame.type) {
      case FrameType::kRequest:
        StartCall(std::move(frame));
        break;
      case FrameType::kCancel:
        OnCancel(frame.call_id);
        break;
      case FrameType::kMessage:
      case FrameType::kWindow:
        OnStreamFrame(frame);
        break;
      case FrameType::kResponse:
      case FrameType::kGoAway:
        Close(absl::DataLossError(absl::StrCat("protocol error: frame type ",
                                               static_cast<int>(frame.type),
                                               " is not sent to servers")));
        break;
      default:
        break;  // unknown types are ignored
    }
  }

  void OnCancel(uint32_t call_id) {
    if (call_id == 0) {
      Close(absl::DataLossError("protocol error: cancel with call id 0"));
      return;
    }
    if (!TakeAbuseBudget("cancels")) return;
    auto it = calls_.find(call_id);
    if (it == calls_.end() || it->second == nullptr) return;
    std::shared_ptr<ServerCall> call = it->second;
    if (call->finished && call->stream != nullptr) {
      // Answered, but the trailer waits behind messages the client will not take any more.
      call->stream->End(absl::CancelledError("cancelled by the client"), true);
      calls_.erase(call_id);
      MaybeLinger();
      return;
    }
    Cancel(*call, CancelReason::kClient);
  }

  // kMessage and kWindow frames: for a streaming call in flight. Frames for calls we no longer
  // know crossed our trailer (or the client's cancel) on the wire and are ignored.
  void OnStreamFrame(Frame& frame) {
    if (frame.call_id == 0) {
      Close(absl::DataLossError(absl::StrCat("protocol error: frame type ",
                                             static_cast<int>(frame.type), " with call id 0")));
      return;
    }
    auto it = calls_.find(frame.call_id);
    if (it == calls_.end()) return;
    std::shared_ptr<ServerCall> call = it->second;  // Pump may end the call
    if (call->stream == nullptr) {
      Close(absl::DataLossError(absl::StrCat("protocol error: frame type ",
                                             static_cast<int>(frame.type), " for unary call ",
                                             frame.call_id)));
      return;
    }
    if (frame.type == FrameType::kWindow) {
      if (absl::Status s = call->stream->Credit(frame); !s.ok()) Close(s);
      return;
    }
    bool fatal = false;
    absl::Status s = call->stream->Receive(frame, fatal);
    if (s.ok()) return;
    if (fatal) {
      Close(s);
      return;
    }
    call->stream->End(std::move(s), true);
    Cancel(*call, CancelReason::kFailed);
  }

  // Writes blocked on the queue bound may go on.
  void OnQueueDrained() override {
    std::vector<std::shared_ptr<ServerCall>> streams;
    for (auto& [id, call] : calls_) {
      if (call->stream != nullptr && !call->stream->queue_empty()) streams.push_back(call);
    }
    for (auto& call : streams) {
      if (!closed()) call->stream->Pump();
    }
  }

  // False (and the connection is told to go away) when the peer cancels or overruns far more
  // than any real client does.
  bool TakeAbuseBudget(const char* what) {
    if (abuse_budget_.Take(Clock::now())) return true;
    OnPeerAbuse(absl::ResourceExhaustedError(absl::StrCat("too many ", what, " (more than ",
                                                          kAbuseBurst, " at once or ",
                                                          kAbusePerSecond, " per second)")));
    return false;
  }

  void OnPeerAbuse(absl::Status why) override {
    state_->closed_for_abuse.fetch_add(1, std::memory_order_relaxed);
    LogRateLimited(LogSeverity::kWarning, absl::StrCat("courier server: goaway to ", peer().address,
                                                       ": ", why.ToString()));
    abusive_ = true;
    GoAwayAndClose(max_call_id_, std::move(why));
  }

  void OnClose(const absl::Status& why) override {
    const auto code = why.code();
    if (code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kCancelled &&
        code != absl::StatusCode::kOk && !abusive_ && !refused()) {
      LogRateLimited(LogSeverity::kWarning, absl::StrCat("courier server: closing connection from ",
                                                         peer().address, ": ", why.ToString()));
    }
    if (metrics_ != nullptr) {
      metrics_->open->Decrement();
      if (IsProtocolError(why)) metrics_->protocol_errors->Increment();
    }
    drain_timer_.cancel();
    deadline_timer_.cancel();
    CancelAll(CancelReason::kConnectionLost);
    reactor_->sessions.erase(this);
    SessionGone(state_);
  }

  bool Idle() const override { return calls_.empty(); }

  // A call stays in calls_ until its response has been written (PROTOCOL.md §6.2): that is what
  // the concurrency limit counts, and what duplicate call ids are checked against.
  void OnWritten(std::span<const Frame> frames) override {
    for (const Frame& frame : frames) {
      if (frame.type != FrameType::kResponse) continue;
      if (auto it = calls_.find(frame.call_id); it != calls_.end() && it->second->finished) {
        calls_.erase(it);
      }
    }
    MaybeLinger();
  }

  void StartCall(Frame frame) {
    const uint32_t id = frame.call_id;
    if (id == 0) {
      Close(absl::DataLossError("protocol error: request with call id 0"));
      return;
    }
    if (calls_.contains(id)) {
      Close(absl::DataLossError(
          absl::StrCat("protocol error: call id ", id, " reused while in flight")));
      return;
    }
    // Without the end-of-stream flag, a request opens a streaming call (PROTOCOL.md §13), which
    // only a client that announced a stream window may do.
    const bool streaming = (frame.flags & transport::kFlagEndOfStream) == 0;
    if (streaming && (peer_stream_window() == 0 || options().stream_window == 0)) {
      Close(absl::DataLossError(absl::StrCat(
          "protocol error: request ", id,
          " without the end-of-stream flag, but streams were not negotiated in the hellos")));
      return;
    }
    max_call_id_ = std::max(max_call_id_, id);
    absl::StatusOr<RequestHeaderView> header = DecodeRequestHeader(frame.payload);
    if (!header.ok()) {
      Respond(id, header.status(), {});
      return;
    }
    if (draining_) {
      Respond(id, absl::UnavailableError("server is shutting down; the call was not processed"),
              {});
      return;
    }
    const uint32_t limit = state_->options.max_concurrent_calls;
    if (limit != 0 && (calls_.size() - client_cancelled_ >= limit || calls_.size() >= 2 * limit)) {
      if (!TakeAbuseBudget("calls over the concurrency limit")) return;
      state_->calls_refused.fetch_add(1, std::memory_order_relaxed);
      Respond(id,
              absl::ResourceExhaustedError(absl::StrCat(
                  "too many concurrent calls on this connection (the limit is ", limit, ")")),
              {});
      return;
    }
    const size_t message_size = frame.payload.size() - header->message_offset;
    if (message_size > state_->options.max_message_size) {
      Respond(id,
              absl::ResourceExhaustedError(absl::StrCat(
                  "request message of ", message_size, " bytes exceeds the server's limit of ",
                  state_->options.max_message_size, " bytes")),
              {});
      return;
    }
    if (state_->options.authorize && !Authorized(id, *header)) return;
    auto method = state_->methods.find(transport::AsAbsl(header->method));
    if (method == state_->methods.end()) {
      if (state_->metrics != nullptr) RecordRefused(state_->metrics->unknown_method());
      Respond(id,
              absl::UnimplementedError(absl::StrCat("unknown method ", Printable(header->method))),
              {});
      return;
    }
    const MethodEntry* entry = method->second.entry;
    if (streaming != (entry->stream_handler != nullptr)) {
      RecordRefused(method->second.metrics);
      Respond(id,
              absl::UnimplementedError(
                  absl::StrCat("method ", entry->full_name, " is ",
                               streaming ? "a unary method; it was called as a streaming one"
                                         : "a streaming method; it was called as a unary one")),
              {});
      return;
    }
    if (streaming && message_size != 0) {
      Respond(id,
              absl::InvalidArgumentError(absl::StrCat(
                  "a request opening a streaming call carries no message bytes (it had ",
                  message_size, ")")),
              {});
      return;
    }
    const Clock::time_point deadline =
        header->timeout_us == 0
            ? Clock::time_point::max()
            : Clock::now() +
                  std::chrono::microseconds(std::min<uint64_t>(header->timeout_us, 1ull << 50));
    const size_t offset = header->message_offset;
    // Allocated through Asio's per-thread recycling cache: no malloc per call in steady state.
    auto call = std::allocate_shared<ServerCall>(
        asio::recycling_allocator<ServerCall>(), id,
        ServerContext(entry->full_name, deadline, peer(), std::move(header->metadata)));
    calls_.emplace(id, call);
    if (MethodMetrics* metrics = method->second.metrics; metrics != nullptr) {
      call->metrics = metrics;
      call->started = metrics->Started();
      metrics->Received(message_size);
    }
    state_->active_calls.fetch_add(1, std::memory_order_relaxed);
    if (deadline != Clock::time_point::max()) {
      deadlines_.insert({deadline, id});
      WatchDeadline(deadline);
    }
    if (streaming) {
      call->stream = std::make_unique<StreamCore>(executor(), id, options().stream_window,
                                                  state_->options.max_message_size);
      call->stream->set_metrics(call->metrics);
      call->stream->Attach(this, peer_stream_window(), PeerMessageLimit());
      transport::ReturnBuffer(std::move(frame.payload));
      asio::co_spawn(
          executor(), RunStreamCall(shared_self(), call, entry),
          asio::bind_cancellation_slot(
              call->signal.slot(), asio::bind_executor(EndInline{end_context_}, asio::detached)));
      return;
    }
    asio::co_spawn(
        executor(), RunCall(shared_self(), call, entry, std::move(frame.payload), offset),
        asio::bind_cancellation_slot(call->signal.slot(),
                                     asio::bind_executor(EndInline{end_context_}, asio::detached)));
  }

  // ServerOptions::authorize; false when it refused the call (which is answered).
  bool Authorized(uint32_t id, const RequestHeaderView& header) {
    absl::Status allowed;
    try {
      allowed =
          state_->options.authorize(AuthorizationContext{peer(), header.method, header.metadata});
    } catch (const std::exception& e) {
      allowed = absl::InternalError(absl::StrCat("the server's authorize hook failed: ", e.what()));
    } catch (...) {
      allowed = absl::InternalError("the server's authorize hook failed");
    }
    if (allowed.ok()) return true;
    state_->not_authorized.fetch_add(1, std::memory_order_relaxed);
    if (state_->metrics != nullptr) {
      auto method = state_->methods.find(transport::AsAbsl(header.method));
      RecordRefused(method != state_->methods.end() ? method->second.metrics
                                                    : state_->metrics->unknown_method(),
                    allowed.code());
    }
    Respond(id, std::move(allowed), {});
    return false;
  }

  // One timer per session serves every call's deadline, armed for the earliest: a call costs an
  // ordered-set insert and erase, and a timer operation only when it has the earliest deadline.
  void WatchDeadline(Clock::time_point deadline) {
    if (deadline >= armed_deadline_) return;
    armed_deadline_ = deadline;
    deadline_timer_.expires_at(deadline);
    deadline_timer_.async_wait([self = shared_self()](std::error_code ec) {
      if (!ec && !self->closed()) self->ExpireDeadlines();
    });
  }

  void ExpireDeadlines() {
    armed_deadline_ = Clock::time_point::max();
    const Clock::time_point now = Clock::now();
    while (!deadlines_.empty() && deadlines_.begin()->first <= now) {
      state_->deadline_checks.fetch_add(1, std::memory_order_relaxed);
      const uint32_t id = deadlines_.begin()->second;
      deadlines_.erase(deadlines_.begin());
      if (auto it = calls_.find(id); it != calls_.end() && !it->second->finished) {
        // Held: a streaming handler waiting on its stream resumes inside Cancel and may finish,
        // and its trailer may be written and the call erased, before Cancel is done with it.
        std::shared_ptr<ServerCall> call = it->second;
        Cancel(*call, CancelReason::kDeadline);
      }
    }
    if (!deadlines_.empty()) WatchDeadline(deadlines_.begin()->first);
  }

  // `payload` is the request frame's; the request message starts at `offset` and is handed to
  // the handler in place.
  static asio::awaitable<void> RunCall(std::shared_ptr<ServerSession> self,
                                       std::shared_ptr<ServerCall> call, const MethodEntry* method,
                                       std::string payload, size_t offset) {
    absl::StatusOr<std::string> result = std::string();
    std::string failure;
    try {
      result = co_await method->handler(call->ctx, std::string_view(payload).substr(offset));
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "unknown exception";
    }
    if (!failure.empty()) {
      if (call->reason != CancelReason::kNone) {
        result = absl::CancelledError("handler cancelled");
      } else {
        LogRateLimited(LogSeverity::kError, absl::StrCat("courier server: handler for ",
                                                         call->ctx.method(), " threw: ", failure));
        result = absl::InternalError(absl::StrCat(call->ctx.method(), ": handler failed"));
      }
    }
    transport::ReturnBuffer(std::move(payload));
    self->FinishCall(*call, std::move(result), method->returns_payload);
  }

  // The largest message the client takes: its frame limit less the room it keeps for a header
  // (PROTOCOL.md §13.3, Size).
  size_t PeerMessageLimit() const {
    const size_t frame = peer_max_frame_payload();
    return frame > kMaxHeaderOverhead ? frame - kMaxHeaderOverhead : frame;
  }

  static asio::awaitable<void> RunStreamCall(std::shared_ptr<ServerSession> self,
                                             std::shared_ptr<ServerCall> call,
                                             const MethodEntry* method) {
    absl::Status result;
    std::string failure;
    try {
      result = co_await method->stream_handler(call->ctx, *call->stream);
    } catch (const std::exception& e) {
      failure = e.what();
    } catch (...) {
      failure = "unknown exception";
    }
    if (!failure.empty()) {
      if (call->reason != CancelReason::kNone) {
        result = absl::CancelledError("handler cancelled");
      } else {
        LogRateLimited(LogSeverity::kError, absl::StrCat("courier server: handler for ",
                                                         call->ctx.method(), " threw: ", failure));
        result = absl::InternalError(absl::StrCat(call->ctx.method(), ": handler failed"));
      }
    }
    // A stream that ended with an error of its own (a request that did not parse, a limit)
    // ends the call with it, whatever the handler returned.
    if (call->reason == CancelReason::kNone && call->stream->ended() &&
        !call->stream->end_status().ok()) {
      result = call->stream->end_status();
    }
    self->FinishCall(*call, result.ok() ? absl::StatusOr<std::string>(std::string())
                                        : absl::StatusOr<std::string>(result),
                     false);
  }

  void CancelAll(CancelReason reason) {
    std::vector<std::shared_ptr<ServerCall>> calls;  // a snapshot: cancelling may end calls
    for (auto& [id, call] : calls_) {
      if (!call->finished) calls.push_back(call);
    }
    for (auto& call : calls) Cancel(*call, reason);
  }

  void Cancel(ServerCall& call, CancelReason reason) {
    if (call.reason != CancelReason::kNone || call.finished) return;
    call.reason = reason;
    if (reason == CancelReason::kClient) ++client_cancelled_;
    call.ctx.MarkCancelled();
    if (call.stream != nullptr) {
      // Waiting reads and writes wake (writes fail with this).
      call.stream->End(reason == CancelReason::kClient ? absl::CancelledError("the client cancelled the call")
                       : reason == CancelReason::kDeadline
                           ? absl::DeadlineExceededError(
                                 absl::StrCat(call.ctx.method(), ": deadline exceeded"))
                       : reason == CancelReason::kConnectionLost
                           ? absl::CancelledError("the client's connection was lost")
                       : reason == CancelReason::kShutdown
                           ? absl::UnavailableError("cancelled by server shutdown")
                           : absl::CancelledError("call failed"),
                       true);
    }
    call.signal.emit(asio::cancellation_type::terminal);
  }

  // `is_payload`: an OK `result` is the whole response payload already (MethodEntry).
  void FinishCall(ServerCall& call, absl::StatusOr<std::string> result, bool is_payload) {
    state_->active_calls.fetch_sub(1, std::memory_order_relaxed);
    call.finished = true;
    const uint32_t id = call.id;
    const Clock::time_point deadline = call.ctx.deadline();
    if (deadline != Clock::time_point::max()) deadlines_.erase({deadline, id});
    switch (call.reason) {
      case CancelReason::kNone:
        // An answer after the deadline is no answer: the caller has given up (as gRPC).
        if (deadline != Clock::time_point::max() && Clock::now() >= deadline) {
          result =
              absl::DeadlineExceededError(absl::StrCat(call.ctx.method(), ": deadline exceeded"));
        }
        break;
      case CancelReason::kClient:
        --client_cancelled_;
        [[fallthrough]];
      case CancelReason::kConnectionLost:
        result = absl::CancelledError("");  // nobody is waiting for an answer
        break;
      case CancelReason::kDeadline:
        result =
            absl::DeadlineExceededError(absl::StrCat(call.ctx.method(), ": deadline exceeded"));
        break;
      case CancelReason::kShutdown:
        result = absl::UnavailableError(
            absl::StrCat(call.ctx.method(), ": cancelled by server shutdown"));
        break;
      case CancelReason::kFailed:
        result = call.stream != nullptr && !call.stream->end_status().ok()
                     ? call.stream->end_status()
                     : absl::InternalError("call failed");
        break;
    }
    if (call.metrics != nullptr) RecordFinished(call, result, is_payload);
    const bool answer =
        call.reason != CancelReason::kClient && call.reason != CancelReason::kConnectionLost;
    if (!answer || closed()) {
      calls_.erase(id);  // may destroy `call`
      MaybeLinger();
      return;
    }
    Metadata metadata = call.ctx.response_metadata();
    if (call.stream != nullptr) {
      // The handler is done: what it still had queued (writes it gave up waiting for) is
      // dropped, messages from the client are discarded from now on, and the trailer goes
      // (PROTOCOL.md §13). The call stays until the trailer is written.
      std::shared_ptr<ServerCall> keep = calls_.at(id);
      call.stream->End(absl::FailedPreconditionError("the handler has returned"), true);
      call.stream->QueueFrame(Frame{FrameType::kResponse, transport::kFlagEndOfStream, id,
                                    ResponsePayload(std::move(result), std::move(metadata))});
      return;
    }
    if (result.ok() && is_payload) {
      SendResponsePayload(id, *std::move(result));
    } else {
      Respond(id, std::move(result), std::move(metadata));
    }
  }

  // A call answered at once with kUnimplemented (an unknown method, or the wrong kind of call)
  // counts as started and finished.
  static void RecordRefused(MethodMetrics* metrics,
                            absl::StatusCode code = absl::StatusCode::kUnimplemented) {
    if (metrics != nullptr) metrics->Finished(code, metrics->Started());
  }

  static void RecordFinished(const ServerCall& call, const absl::StatusOr<std::string>& result,
                             bool is_payload) {
    if (call.stream == nullptr && result.ok()) {
      call.metrics->Sent(is_payload ? MessageSizeOfPayload(*result) : result->size());
    }
    call.metrics->Finished(result.status().code(), call.started);
  }

  std::string TooLarge(size_t size) const {
    return absl::StrCat("response of ", size, " bytes exceeds the client's limit of ",
                        peer_max_frame_payload(), " bytes per frame");
  }

  // Sends an encoded response payload, or RESOURCE_EXHAUSTED if it is over the client's limit.
  void SendResponsePayload(uint32_t call_id, std::string payload) {
    if (payload.size() > peer_max_frame_payload()) {
      Respond(call_id, absl::ResourceExhaustedError(TooLarge(payload.size())), {});
      return;
    }
    Send(Frame{FrameType::kResponse, transport::kFlagEndOfStream, call_id, std::move(payload)});
  }

  // Error messages are cut to kMaxStatusMessage; a response that would still not fit the
  // client's limit becomes a short RESOURCE_EXHAUSTED without metadata, which always fits (a
  // peer's limit is at least kMinFramePayload).
  void Respond(uint32_t call_id, absl::StatusOr<std::string> result, Metadata metadata) {
    Send(Frame{FrameType::kResponse, transport::kFlagEndOfStream, call_id,
               ResponsePayload(std::move(result), std::move(metadata))});
  }

  std::string ResponsePayload(absl::StatusOr<std::string> result, Metadata metadata) {
    wire::ResponseHeader header;
    ToWire(metadata, *header.mutable_metadata());
    std::string_view message;
    if (result.ok()) {
      message = *result;
    } else {
      header.set_code(static_cast<int>(result.status().code()));
      absl::string_view text = result.status().message();
      header.set_message(WireStatusMessage(std::string_view(text.data(), text.size())));
    }
    std::string payload = EncodePayload(header, message);
    if (payload.size() > peer_max_frame_payload()) {
      header.Clear();
      header.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
      header.set_message(TooLarge(payload.size()));
      payload = EncodePayload(header, {});
    }
    return payload;
  }

  void MaybeLinger() {
    if (draining_ && calls_.empty() && !lingering_ && !closed()) Linger();
  }

  // Drained: give the client a moment to close first, then close after flushing (bounded).
  void Linger() {
    lingering_ = true;
    drain_timer_.cancel();
    drain_timer_.expires_after(kLinger);
    drain_timer_.async_wait([self = shared_self()](std::error_code ec) {
      if (!ec) self->CloseAfterFlush(absl::UnavailableError("server shut down"));
    });
  }

  std::shared_ptr<ServerState> state_;
  std::shared_ptr<Reactor> reactor_;
  TransportMetrics* metrics_;  // null without metrics
  absl::flat_hash_map<uint32_t, std::shared_ptr<ServerCall>> calls_;
  absl::btree_set<std::pair<Clock::time_point, uint32_t>> deadlines_;
  size_t client_cancelled_ = 0;  // calls in calls_ cancelled by the client, handler unwinding
  RateBudget abuse_budget_{kAbuseBurst, kAbusePerSecond};
  asio::steady_timer drain_timer_;
  asio::steady_timer deadline_timer_;
  asio::execution_context* end_context_;  // for EndInline
  Clock::time_point armed_deadline_ = Clock::time_point::max();
  uint32_t max_call_id_ = 0;
  bool draining_ = false;
  bool lingering_ = false;
  bool abusive_ = false;  // closed by OnPeerAbuse, which logged already
};

namespace {

void StartSession(const std::shared_ptr<ServerState>& state,
                  const std::shared_ptr<Reactor>& reactor,
                  std::unique_ptr<transport::Connection> connection, TransportMetrics* metrics,
                  absl::Status refusal) {
  SessionOptions options;
  options.refusal = std::move(refusal);
  options.max_message_size = state->options.max_message_size;
  options.keepalive_interval = state->options.keepalive_interval;
  options.keepalive_timeout = state->options.keepalive_timeout;
  options.handshake_timeout = state->options.handshake_timeout;
  options.stall_timeout = state->options.frame_stall_timeout;
  options.idle_timeout = state->options.idle_timeout;
  options.max_queued_bytes = state->options.max_queued_bytes;
  options.max_concurrent_calls = state->options.max_concurrent_calls;
  options.stream_window = state->options.stream_window;
  if (metrics != nullptr) {
    metrics->accepted->Increment();
    metrics->open->Increment();
  }
  auto session = std::make_shared<ServerSession>(std::move(connection), std::move(options), state,
                                                 reactor, metrics);
  reactor->sessions.insert(session.get());
  session->Start();
  if (state->shut_down) session->BeginDrain(Clock::now());
}

// Why the allow-list refuses `peer` (OK: it admits it), for the refused client to report.
absl::Status CheckAllowList(const PeerAllowList& allow, const transport::PeerInfo& peer) {
  if (!peer.credentials) {
    return absl::PermissionDeniedError(
        "the server admits peers by uid and gid, and this connection carries none");
  }
  if (allow.Admits(*peer.credentials)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat("uid ", peer.credentials->uid, " (gid ",
                                                  peer.credentials->gid,
                                                  ") may not connect to this server"));
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<ServerState> state,
                                 std::shared_ptr<transport::Listener> listener,
                                 TransportMetrics* metrics, std::optional<PeerAllowList> allow) {
  co_await asio::this_coro::throw_if_cancelled(false);
  // While accept fails (out of descriptors, say), wait before retrying, doubling up to 1 s, and
  // log once per episode: when it starts, and when accepting works again.
  constexpr Clock::duration kFirstPause = std::chrono::milliseconds(10);
  constexpr Clock::duration kMaxPause = std::chrono::seconds(1);
  Clock::duration pause = kFirstPause;
  std::optional<Clock::time_point> failing_since;
  asio::steady_timer pause_timer(state->main_executor);
  for (;;) {
    std::shared_ptr<Reactor> reactor =
        state->reactors[state->next_reactor++ % state->reactors.size()];
    absl::StatusOr<std::unique_ptr<transport::Connection>> connection =
        co_await listener->Accept(reactor->executor);
    if (state->shut_down) co_return;
    if (!connection.ok()) {
      if (connection.status().code() == absl::StatusCode::kCancelled) co_return;
      // A peer the transport refused (a malformed handshake): the listener is fine.
      if (connection.status().code() == absl::StatusCode::kAborted) {
        LogRateLimited(LogSeverity::kWarning, absl::StrCat("courier server: accept on ",
                                                           listener->local_endpoint().ToString(),
                                                           ": ", connection.status().message()));
        continue;
      }
      if (!failing_since) {
        failing_since = Clock::now();
        Log(LogSeverity::kWarning,
            absl::StrCat("courier server: accept on ", listener->local_endpoint().ToString(), ": ",
                         connection.status().ToString(),
                         "; retrying with backoff, logged again when accepting recovers"));
      }
      pause_timer.expires_after(pause);
      co_await pause_timer.async_wait(use_nothrow);
      pause = std::min(pause * 2, kMaxPause);
      continue;
    }
    if (failing_since) {
      Log(LogSeverity::kInfo,
          absl::StrCat(
              "courier server: accept on ", listener->local_endpoint().ToString(),
              " works again after ",
              std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *failing_since)
                  .count(),
              " ms"));
      failing_since.reset();
      pause = kFirstPause;
    }
    if (state->live_sessions.load() >= state->options.max_connections) {
      state->connections_refused.fetch_add(1, std::memory_order_relaxed);
      (*connection)->Close();
      LogRateLimited(
          LogSeverity::kWarning,
          absl::StrCat("courier server: refused a connection from ", (*connection)->peer().address,
                       ": ", state->options.max_connections,
                       " connections open (ServerOptions::max_connections)"));
      continue;
    }
    // The allow-list: a refused peer still gets a hello, carrying the refusal (PROTOCOL.md
    // §6.1a), from a session that lives at most kRefusalLinger and counts as a connection.
    absl::Status refusal;
    if (allow) {
      refusal = CheckAllowList(*allow, (*connection)->peer());
      if (!refusal.ok()) {
        state->not_allowed.fetch_add(1, std::memory_order_relaxed);
        if (metrics != nullptr) metrics->not_allowed->Increment();
        const transport::PeerInfo& peer = (*connection)->peer();
        LogRateLimited(
            LogSeverity::kWarning,
            absl::StrCat("courier server: refused a connection from ", peer.address,
                         // (unix:// addresses name the pid already; fifo:// knows none)
                         peer.credentials && peer.credentials->pid != 0 &&
                                 !absl::StrContains(peer.address, "pid=")
                             ? absl::StrCat(" (pid ", peer.credentials->pid, ")")
                             : "",
                         " on ", listener->local_endpoint().ToString(), ": ", refusal.message()));
      }
    }
    state->live_sessions.fetch_add(1);
    asio::post(reactor->executor, [state, reactor, metrics, c = *std::move(connection),
                                   refusal = std::move(refusal)]() mutable {
      StartSession(state, reactor, std::move(c), metrics, std::move(refusal));
    });
  }
}

// Takes allow_uid=N,N... and allow_gid=N,N... out of `endpoint`'s query (they are the server's,
// not the transport's). nullopt when there were none.
absl::StatusOr<std::optional<PeerAllowList>> TakeAllowList(Endpoint& endpoint) {
  const size_t q = endpoint.address.find('?');
  if (q == std::string::npos) return std::nullopt;
  std::optional<PeerAllowList> allow;
  std::vector<std::string> kept;
  for (absl::string_view option :
       absl::StrSplit(absl::string_view(endpoint.address).substr(q + 1), '&', absl::SkipEmpty())) {
    const bool uid = absl::StartsWith(option, "allow_uid=");
    if (!uid && !absl::StartsWith(option, "allow_gid=")) {
      kept.emplace_back(option);
      continue;
    }
    if (!allow) allow.emplace();
    const absl::string_view list = option.substr(option.find('=') + 1);
    for (absl::string_view item : absl::StrSplit(list, ',')) {
      uint32_t id = 0;
      const bool digits = !item.empty() && std::all_of(item.begin(), item.end(),
                                                       [](char c) { return c >= '0' && c <= '9'; });
      if (!digits || !absl::SimpleAtoi(item, &id)) {
        return absl::InvalidArgumentError(
            absl::StrCat(option.substr(0, option.find('=')), ": '",
                         Printable(std::string_view(item.data(), item.size())),
                         "' is not a number (a comma-separated list of numeric ids)"));
      }
      if (uid) {
        allow->uids.push_back(id);
      } else {
        allow->gids.push_back(id);
      }
    }
  }
  endpoint.address.resize(q);
  if (!kept.empty()) absl::StrAppend(&endpoint.address, "?", absl::StrJoin(kept, "&"));
  return allow;
}

}  // namespace

void CloseAllSessions(const std::shared_ptr<Reactor>& reactor) {
  std::vector<ServerSession*> sessions(reactor->sessions.begin(), reactor->sessions.end());
  for (ServerSession* s : sessions) s->Close(absl::CancelledError("server closed the connection"));
}
}  // namespace internal

bool PeerAllowList::Admits(const transport::PeerCredentials& peer) const {
  return std::find(uids.begin(), uids.end(), peer.uid) != uids.end() ||
         std::find(gids.begin(), gids.end(), peer.gid) != gids.end();
}

using internal::Reactor;
using internal::ServerState;

Server::Server(asio::any_io_executor executor, ServerOptions options)
    : executor_(executor), state_(std::make_shared<ServerState>()) {
  state_->options = std::move(options);
  // A peer refuses a hello announcing more (PROTOCOL.md §13.1).
  state_->options.stream_window =
      std::min(state_->options.stream_window, static_cast<uint32_t>(internal::kMaxStreamCredit));
  state_->main_executor = executor;
  if (!state_->options.metrics_listen.empty() || state_->options.metrics_registry != nullptr) {
    state_->metrics = std::make_unique<internal::ServerMetrics>(state_->options.metrics_registry);
  }
  if (state_->options.threads <= 0) {
    state_->reactors.push_back(std::make_shared<Reactor>(Reactor{executor, {}}));
    return;
  }
  for (int i = 0; i < state_->options.threads; ++i) {
    auto& io = state_->contexts.emplace_back(std::make_unique<internal::ReactorContext>(1));
    state_->guards.push_back(asio::make_work_guard(*io));
    state_->reactors.push_back(std::make_shared<Reactor>(Reactor{io->get_executor(), {}}));
  }
  for (auto& io : state_->contexts) {
    state_->threads.emplace_back([ctx = io.get()] { ctx->run(); });
  }
}

Server::~Server() {
  // The HTTP threads stop here; the metrics themselves live as long as the sessions using them.
  if (state_->metrics != nullptr) state_->metrics->StopExposing();
  state_->shut_down = true;
  for (auto& listener : state_->listeners) listener->Close();
  if (state_->threads.empty()) {
    internal::CloseAllSessions(state_->reactors[0]);
    return;
  }
  for (size_t i = 0; i < state_->threads.size(); ++i) {
    asio::io_context* io = state_->contexts[i].get();
    asio::post(*io, [reactor = state_->reactors[i], io] {
      internal::CloseAllSessions(reactor);
      io->stop();
    });
  }
  for (auto& thread : state_->threads) thread.join();
  // Handlers still pending on the reactors are destroyed here, while the services they refer
  // to are still alive. The io_contexts themselves stay with the state until the accept loops
  // are gone: an accept cancelled by the listener's Close completes on the main executor later,
  // and the socket it made for its reactor belongs to that reactor's context.
  state_->guards.clear();
  for (auto& io : state_->contexts) io->shutdown();
}

absl::Status Server::AddService(ServiceBase& service) {
  if (state_->listening) {
    return absl::FailedPreconditionError("AddService after Listen: add services first");
  }
  for (const MethodEntry& method : service.methods()) {
    if (state_->methods.contains(method.full_name)) {
      return absl::AlreadyExistsError(absl::StrCat("method ", method.full_name, " already served"));
    }
  }
  for (const MethodEntry& method : service.methods()) {
    internal::MethodMetrics* metrics =
        state_->metrics != nullptr ? state_->metrics->AddMethod(method.full_name) : nullptr;
    state_->methods.emplace(method.full_name, internal::ServedMethod{&method, metrics});
  }
  return absl::OkStatus();
}

absl::Status Server::AddService(std::shared_ptr<ServiceBase> service) {
  if (service == nullptr) return absl::InvalidArgumentError("AddService: null service");
  if (absl::Status s = AddService(*service); !s.ok()) return s;
  state_->owned_services.push_back(std::move(service));
  return absl::OkStatus();
}

std::vector<std::string> Server::service_names() const {
  absl::btree_set<std::string> names;
  for (const auto& [full_name, entry] : state_->methods) {
    // "/package.Service/Method" → "package.Service".
    std::string_view name = full_name;
    if (!name.empty() && name.front() == '/') name.remove_prefix(1);
    if (const size_t slash = name.rfind('/'); slash != std::string_view::npos) {
      name = name.substr(0, slash);
    }
    names.emplace(name);
  }
  return std::vector<std::string>(names.begin(), names.end());
}

void Server::OnShutdown(std::function<void()> hook) {
  state_->shutdown_hooks.push_back(std::move(hook));
}

absl::StatusOr<Endpoint> Server::Listen(std::string_view uri) {
  if (state_->shut_down) return absl::FailedPreconditionError("Listen after Shutdown");
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(uri);
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<const transport::TransportInfo*> info =
      transport::FindTransport(endpoint->scheme, state_->options.transports);
  if (!info.ok()) return transport::Annotate(info.status(), uri);
  absl::StatusOr<std::optional<PeerAllowList>> allow = internal::TakeAllowList(*endpoint);
  if (!allow.ok()) return transport::Annotate(allow.status(), uri);
  if (!*allow && !state_->options.allowed_peers.empty()) *allow = state_->options.allowed_peers;
  // (Never an empty list: the URI's has an id at least.)
  if (*allow && !(*info)->kernel_credentials) {
    return absl::InvalidArgumentError(absl::StrCat(
        transport::AsAbsl(uri), ": an allow-list by uid and gid needs kernel credentials, which ",
        endpoint->scheme,
        ":// connections do not carry (unix://, shm:// and fifo:// do; elsewhere use the "
        "authorize hook, or tls:// with client certificates)"));
  }
  std::shared_ptr<transport::Transport> transport = (*info)->factory(
      executor_, transport::TransportOptions{.tls = state_->options.tls,
                                             .handshake_timeout = state_->options.handshake_timeout});
  absl::StatusOr<std::unique_ptr<transport::Listener>> listener = transport->Listen(*endpoint);
  if (!listener.ok())
    return transport::Annotate(listener.status(), absl::StrCat("listen ", transport::AsAbsl(uri)));
  internal::TransportMetrics* metrics = nullptr;
  if (state_->metrics != nullptr) {
    if (!state_->options.metrics_listen.empty() && metrics_endpoint_.empty()) {
      absl::StatusOr<std::string> at = state_->metrics->Expose(state_->options.metrics_listen);
      if (!at.ok()) return at.status();
      metrics_endpoint_ = *std::move(at);
    }
    metrics = state_->metrics->ForTransport(endpoint->scheme);
  }
  state_->listening = true;
  std::shared_ptr<transport::Listener> shared = *std::move(listener);
  state_->transports.push_back(std::move(transport));
  state_->listeners.push_back(shared);
  endpoints_.push_back(shared->local_endpoint());
  asio::co_spawn(executor_, internal::AcceptLoop(state_, shared, metrics, *std::move(allow)),
                 asio::detached);
  return endpoints_.back();
}

asio::awaitable<void> Server::ShutdownImpl(std::shared_ptr<ServerState> state,
                                           Clock::duration drain) {
  if (!state->shut_down) {
    state->shut_down = true;
    for (auto& hook : state->shutdown_hooks) hook();
    for (auto& listener : state->listeners) listener->Close();
    state->drain_deadline = Clock::now() + drain;
    for (auto& reactor : state->reactors) {
      asio::post(reactor->executor, [reactor, deadline = state->drain_deadline] {
        std::vector<internal::ServerSession*> sessions(reactor->sessions.begin(),
                                                       reactor->sessions.end());
        for (internal::ServerSession* s : sessions) s->BeginDrain(deadline);
      });
    }
  }
  if (!state->all_closed) state->all_closed.emplace(state->main_executor);
  // Sessions close themselves within the drain deadline plus their grace periods; this is the
  // backstop, whatever peers and handlers do.
  const Clock::time_point hard_stop = state->drain_deadline + internal::kShutdownBackstop;
  bool forced = false;
  while (state->live_sessions.load() > 0) {
    if (!forced && Clock::now() >= hard_stop) {
      forced = true;
      for (auto& reactor : state->reactors) {
        asio::post(reactor->executor, [reactor] { internal::CloseAllSessions(reactor); });
      }
    }
    // Woken by the last session to close; the period only bounds a wake-up lost to a race.
    state->all_closed->expires_after(std::chrono::milliseconds(100));
    co_await state->all_closed->async_wait(internal::use_nothrow);
  }
}

size_t Server::active_calls() const { return state_->active_calls.load(); }
size_t Server::connections() const { return state_->live_sessions.load(); }

ServerStats Server::stats() const {
  return ServerStats{.connections_refused = state_->connections_refused.load(),
                     .calls_refused = state_->calls_refused.load(),
                     .connections_closed_for_abuse = state_->closed_for_abuse.load(),
                     .connections_not_allowed = state_->not_allowed.load(),
                     .calls_not_authorized = state_->not_authorized.load(),
                     .deadline_checks = state_->deadline_checks.load()};
}

}  // namespace courier
