#include "rpc/channel.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <utility>
#include <variant>

#include "absl/strings/str_cat.h"
#include "asio/async_result.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/dispatch.hpp"
#include "asio/error.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/this_coro.hpp"
#include "rpc/internal/metrics.h"
#include "rpc/internal/session.h"
#include "rpc/internal/wire.h"
#include "rpc/wire.pb.h"
#include "transport/registry.h"
#include "transport/status.h"

namespace courier {
namespace internal {

using transport::Frame;
using transport::FrameType;

// A call waiting for its response. Lives in Channel::CallEncoded's coroutine frame; pending_
// points at it until that coroutine resumes. No timer of its own: the channel's one deadline
// timer and the response resume the caller directly.
struct PendingCall {
  // The caller's coroutine while it waits for the result.
  using Waiter = asio::async_result<asio::use_awaitable_t<>, void()>::handler_type;
  std::optional<Waiter> waiter;
  asio::cancellation_slot cancel_slot;  // the caller's, while it waits
  std::optional<absl::StatusOr<Reply>> result;
  Frame request;  // until handed to a session
  // Where the request went; reset when that session closes, so non-null means alive.
  ClientSession* session = nullptr;
  uint64_t sequence = 0;  // the request's Session::Send number, for Unsend
  Metadata* response_metadata = nullptr;
  Clock::time_point deadline = Clock::time_point::max();
  bool wait_for_ready = false;
  bool gave_up = false;  // the deadline passed or the caller was cancelled
  ClientStream* stream = nullptr;  // a streaming call's (which owns this PendingCall)
};

// The owned reactor threads still running, which the process waits for (at most 2 s) when it
// exits. The last reference to a channel may go on its own reactor thread (a handle's posted
// release, say), which then closes the connection on its own: without the wait, main could
// return meanwhile and the exit's static destructors pull, say, Asio's error categories from
// under that thread.
class ReactorThreads {
 public:
  static ReactorThreads& Get() {
    static ReactorThreads* const threads = new ReactorThreads;  // never destroyed
    return *threads;
  }
  void Enter() {
    std::lock_guard lock(mu_);
    ++running_;
  }
  void Leave() {
    std::lock_guard lock(mu_);
    --running_;
    done_.notify_all();
  }
  static inline thread_local bool on_reactor_thread = false;

 private:
  ReactorThreads() {
    // Made before the exit hook is registered, so destroyed after it has run.
    (void)asio::error::get_misc_category();
    (void)asio::error::get_netdb_category();
    (void)asio::error::get_addrinfo_category();
    (void)asio::system_category();
    // And the transports' libraries register their clean-up at exit first (OpenSSL's would
    // otherwise run before the wait, under threads still using it).
    transport::PrepareProcess();
    std::atexit([] { Get().WaitForAll(); });
  }
  void WaitForAll() {
    // An exit from a reactor thread itself waits for the others only.
    const int self = on_reactor_thread ? 1 : 0;
    std::unique_lock lock(mu_);
    done_.wait_for(lock, std::chrono::seconds(2), [&] { return running_ <= self; });
  }
  std::mutex mu_;
  std::condition_variable done_;
  int running_ = 0;
};

// A reactor thread a channel owns (Channel::Create(uri)). The thread holds a reference, so the
// io_context outlives its run() even if the channel goes away on that very thread.
struct OwnedReactor : std::enable_shared_from_this<OwnedReactor> {
  OwnedReactor() : guard(asio::make_work_guard(io)) {}
  ~OwnedReactor() {
    if (thread.joinable()) thread.detach();  // only on the reactor thread itself, at its end
  }
  void Start() {
    ReactorThreads::Get().Enter();
    thread = std::thread([self = shared_from_this()]() mutable {
      ReactorThreads::on_reactor_thread = true;
      self->io.run();
      self.reset();  // where the channel went on this thread, this detaches it
      transport::EndThread();
      ReactorThreads::Get().Leave();
    });
  }
  asio::io_context io{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
};

class ClientSession final : public Session {
 public:
  ClientSession(std::unique_ptr<transport::Connection> connection, SessionOptions options,
                Channel* channel)
      : Session(std::move(connection), std::move(options)),
        channel_(channel),
        handshake_wait_(executor(), Clock::time_point::max()) {}

  // Resumes when the peer's hello arrives or the session closes.
  asio::awaitable<void> WaitForHandshake() { co_await handshake_wait_.async_wait(use_nothrow); }
  void DetachChannel() { channel_ = nullptr; }
  const absl::Status& close_status() const { return close_status_; }

  size_t calls = 0;       // requests sent here whose Call() has not returned
  bool draining = false;  // the server sent goaway: no new calls here

 private:
  void OnHandshake() override { handshake_wait_.cancel(); }
  void OnQueueDrained() override {
    if (channel_ != nullptr) channel_->OnQueueDrained(*this);
  }
  void OnFrame(Frame frame) override {
    switch (frame.type) {
      case FrameType::kResponse:
        if (frame.call_id == 0) {
          Close(absl::DataLossError("protocol error: response with call id 0"));
          return;
        }
        if ((frame.flags & transport::kFlagEndOfStream) == 0) {
          Close(absl::DataLossError(absl::StrCat("protocol error: response to call ", frame.call_id,
                                                 " without end of stream")));
          return;
        }
        if (channel_ != nullptr) channel_->OnResponse(*this, std::move(frame));
        break;
      case FrameType::kGoAway:
        draining = true;
        if (channel_ != nullptr) channel_->OnGoAway(*this);
        break;
      case FrameType::kMessage:
      case FrameType::kWindow:
        if (frame.call_id == 0) {
          Close(absl::DataLossError(absl::StrCat(
              "protocol error: frame type ", static_cast<int>(frame.type), " with call id 0")));
          return;
        }
        if (channel_ != nullptr) channel_->OnStreamFrame(*this, frame);
        break;
      default:
        break;  // requests and cancels are not for clients; unknown types are ignored
    }
  }
  void OnClose(const absl::Status& why) override {
    close_status_ = why;
    handshake_wait_.cancel();
    if (channel_ != nullptr) channel_->OnSessionClosed(*this, why);
  }

  Channel* channel_;
  asio::steady_timer handshake_wait_;
  absl::Status close_status_;
};

}  // namespace internal

using internal::ClientSession;
using internal::PendingCall;
using internal::use_nothrow;
using transport::Frame;
using transport::FrameType;

namespace {

// A wait of `base` randomised by ±jitter, as gRPC's connection backoff.
Clock::duration Jittered(Clock::duration base, double jitter) {
  thread_local std::mt19937_64 random{std::random_device{}()};
  std::uniform_real_distribution<double> factor(1 - jitter, 1 + jitter);
  return std::chrono::duration_cast<Clock::duration>(base * factor(random));
}

}  // namespace

absl::StatusOr<std::shared_ptr<Channel>> Channel::Create(asio::any_io_executor executor,
                                                         std::string_view uri,
                                                         ChannelOptions options) {
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(uri);
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<std::unique_ptr<transport::Transport>> transport = transport::NewTransport(
      endpoint->scheme, executor, options.transports,
      transport::TransportOptions{.tls = options.tls,
                                  .handshake_timeout = options.connect_timeout});
  if (!transport.ok()) return transport::Annotate(transport.status(), uri);
  return std::make_shared<Channel>(ConstructionKey(), std::move(executor), *std::move(endpoint),
                                   *std::move(transport), std::move(options));
}

Channel::Channel(ConstructionKey, asio::any_io_executor executor, Endpoint endpoint,
                 std::unique_ptr<transport::Transport> transport, ChannelOptions options)
    : executor_(std::move(executor)),
      endpoint_(std::move(endpoint)),
      uri_(endpoint_.ToString()),
      transport_(std::move(transport)),
      options_(std::move(options)),
      next_backoff_(options_.backoff.initial),
      retry_timer_(executor_),
      abandon_dial_(executor_, Clock::time_point::max()),
      deadline_timer_(executor_) {
  // A sentinel that never expires (call id 0 is never used) keeps the set's root node alive.
  deadlines_.insert({Clock::time_point::max(), 0});
  // A peer refuses a hello announcing more (PROTOCOL.md §13.1).
  options_.stream_window =
      std::min(options_.stream_window, static_cast<uint32_t>(internal::kMaxStreamCredit));
  if (absl::StatusOr<const transport::TransportInfo*> info =
          transport::FindTransport(endpoint_.scheme, options_.transports);
      info.ok()) {
    confidential_ = (*info)->confidential;
  }
  if (options_.metrics_registry != nullptr) {
    metrics_ = std::make_unique<internal::ClientMetrics>(options_.metrics_registry);
  }
}

absl::StatusOr<std::shared_ptr<Channel>> Channel::Create(std::string_view uri,
                                                         ChannelOptions options) {
  auto reactor = std::make_shared<internal::OwnedReactor>();
  absl::StatusOr<std::shared_ptr<Channel>> channel =
      Create(reactor->io.get_executor(), uri, std::move(options));
  if (!channel.ok()) return channel.status();
  (*channel)->reactor_ = reactor;
  reactor->Start();
  return channel;
}

bool Channel::on_own_reactor_thread() const {
  return reactor_ != nullptr && std::this_thread::get_id() == reactor_->thread.get_id();
}

Channel::~Channel() {
  // No call is in flight and no dial runs (each holds a reference), so only the idle
  // connection is left.
  // The timers are cancelled too: a pending wait would keep an owned reactor running (its
  // handler holds only a weak reference) until the timer expires.
  auto close = [this, session = std::move(session_)] {
    deadline_timer_.cancel();
    retry_timer_.cancel();
    abandon_dial_.cancel();
    if (session == nullptr) return;
    session->DetachChannel();
    session->Close(absl::CancelledError("channel destroyed"));
  };
  if (reactor_ == nullptr || on_own_reactor_thread()) {
    close();
    if (reactor_ != nullptr) reactor_->guard.reset();  // the thread ends when its work does
    return;
  }
  // The session lives on our reactor thread: close it there, then let the thread finish.
  asio::post(reactor_->io, std::move(close));
  reactor_->guard.reset();
  reactor_->thread.join();
}

uint32_t Channel::NextCallId() {
  do {
    ++next_call_id_;
  } while (next_call_id_ == 0 || pending_.contains(next_call_id_));
  return next_call_id_;
}

bool Channel::connected() const {
  return session_ != nullptr && !session_->closed() && !session_->draining;
}

size_t Channel::queued_bytes() const { return session_ == nullptr ? 0 : session_->queued_bytes(); }

PendingCall* Channel::Unsent(uint32_t call_id) const {
  auto it = pending_.find(call_id);
  if (it == pending_.end() || it->second->result || it->second->gave_up ||
      it->second->session != nullptr) {
    return nullptr;
  }
  return it->second;
}

size_t Channel::calls_waiting() const {
  return std::count_if(waiting_.begin(), waiting_.end(),
                       [this](uint32_t id) { return Unsent(id) != nullptr; });
}

absl::Status Channel::RunCallCredentials(std::string_view method, Metadata& metadata) const {
  if (!confidential_ && !options_.allow_insecure_call_credentials) {
    return absl::UnauthenticatedError(
        absl::StrCat("call credentials are not sent over ", endpoint_.scheme,
                     ":// (anyone on the path could read them): use tls://, or set "
                     "ChannelOptions::allow_insecure_call_credentials"));
  }
  return options_.call_credentials(CallCredentialsContext{method, endpoint_}, metadata);
}

asio::awaitable<absl::StatusOr<std::string>> Channel::CallBytes(std::string method,
                                                                std::string request,
                                                                CallOptions options) {
  if (absl::Status s = AddCallCredentials(method, options.metadata); !s.ok()) {
    co_return transport::Annotate(s, method);
  }
  if (absl::Status s = internal::ValidateMetadata(options.metadata); !s.ok()) {
    co_return transport::Annotate(s, method);
  }
  const size_t size = request.size();
  std::string payload = internal::EncodeRequest(
      method, options, size, [&](char* at) { std::memcpy(at, request.data(), size); });
  request = std::string();
  absl::StatusOr<internal::Reply> reply =
      co_await CallEncoded(method, std::move(payload), size, options.timeout,
                           options.response_metadata, options.wait_for_ready);
  if (!reply.ok()) co_return reply.status();
  reply->payload.erase(0, reply->offset);
  co_return std::move(reply->payload);
}

asio::awaitable<absl::StatusOr<internal::Reply>> Channel::CallEncoded(
    std::string_view method, std::string payload, size_t message_size, Clock::duration timeout,
    Metadata* response_metadata, bool wait_for_ready) {
  std::shared_ptr<Channel> self = shared_from_this();
  if (closed_) co_return absl::CancelledError(absl::StrCat("channel to ", uri_, " is closed"));
  if (message_size > options_.max_message_size) {
    co_return absl::ResourceExhaustedError(
        absl::StrCat(transport::AsAbsl(method), ": request of ", message_size,
                     " bytes exceeds the limit of ", options_.max_message_size, " bytes"));
  }
  const Clock::time_point deadline =
      timeout == Clock::duration::max() ? Clock::time_point::max()
                                        : Clock::now() + std::max(timeout, Clock::duration::zero());
  internal::MethodMetrics* metrics = metrics_ != nullptr ? metrics_->ForMethod(method) : nullptr;
  Clock::time_point started;
  if (metrics != nullptr) {
    started = metrics->Started();
    metrics->Sent(message_size);
  }

  PendingCall call;
  call.deadline = deadline;
  call.response_metadata = response_metadata;
  call.wait_for_ready = wait_for_ready;
  const uint32_t call_id = NextCallId();
  call.request =
      Frame{FrameType::kRequest, transport::kFlagEndOfStream, call_id, std::move(payload)};
  pending_.emplace(call_id, &call);
  if (deadline != Clock::time_point::max()) {
    deadlines_.insert({deadline, call_id});
    WatchDeadline(deadline);
  }
  Dispatch(call_id, call);

  if (!call.result && !call.gave_up) co_await AwaitResult(call);
  pending_.erase(call_id);
  if (deadline != Clock::time_point::max()) deadlines_.erase({deadline, call_id});
  ClientSession* session = call.session;
  if (session != nullptr) --session->calls;
  absl::StatusOr<internal::Reply> result = internal::Reply();
  if (call.result) {
    result = std::move(*call.result);
  } else {
    // We gave up. A request still queued is taken back (the server never sees it); one already
    // written is cancelled.
    if (session != nullptr && !session->closed() && !session->Unsend(call.sequence)) {
      session->Send(Frame{FrameType::kCancel, 0, call_id, {}});
    }
    const bool expired = Clock::now() >= deadline;
    result =
        expired ? absl::DeadlineExceededError(
                      absl::StrCat(transport::AsAbsl(method), ": deadline exceeded"))
                : absl::CancelledError(absl::StrCat(transport::AsAbsl(method), ": call cancelled"));
  }
  AfterCall(session);
  if (metrics != nullptr) {
    if (result.ok()) metrics->Received(result->payload.size() - result->offset);
    metrics->Finished(result.status().code(), started);
  }
  co_return result;
}

void Channel::AfterCall(ClientSession* session) {
  if (session != nullptr && session->draining && session->calls == 0 && !session->closed()) {
    session->Close(absl::CancelledError("drained after goaway"));
  }
  if (session == nullptr && !AnyoneWaiting()) {
    // Nobody waits for the connection any more.
    abandon_dial_.cancel();
    retry_timer_.cancel();
  }
  if (waiting_.size() > 2 * pending_.size() + 64) {
    std::erase_if(waiting_, [this](uint32_t id) { return !pending_.contains(id); });
  }
  PumpWaiting();  // a slot may have come free
}

std::shared_ptr<internal::ClientStream> Channel::OpenStream(std::string_view method,
                                                            CallOptions options) {
  using internal::ClientStream;
  if (closed_) {
    return ClientStream::Failed(executor_,
                                absl::CancelledError(absl::StrCat("channel to ", uri_, " is closed")));
  }
  if (absl::Status s = AddCallCredentials(method, options.metadata); !s.ok()) {
    return ClientStream::Failed(executor_, transport::Annotate(s, method));
  }
  if (absl::Status s = internal::ValidateMetadata(options.metadata); !s.ok()) {
    return ClientStream::Failed(executor_, transport::Annotate(s, method));
  }
  const uint32_t call_id = NextCallId();
  auto stream = std::make_shared<ClientStream>(shared_from_this(), call_id, options_.stream_window,
                                               options_.max_message_size);
  stream->method_ = std::string(method);
  stream->response_metadata_ = options.response_metadata;
  if (metrics_ != nullptr) {
    stream->set_metrics(metrics_->ForMethod(method));
    stream->started_ = stream->metrics()->Started();
  }
  PendingCall& call = *stream->call_;
  call.stream = stream.get();
  call.wait_for_ready = options.wait_for_ready;
  call.deadline = options.timeout == Clock::duration::max()
                      ? Clock::time_point::max()
                      : Clock::now() + std::max(options.timeout, Clock::duration::zero());
  // No end-of-stream flag: the request opens a stream; its messages follow in kMessage frames.
  call.request = Frame{FrameType::kRequest, 0, call_id,
                       internal::EncodeRequest(method, options, 0, [](char*) {})};
  stream->registered_ = true;
  pending_.emplace(call_id, &call);
  streams_.emplace(call_id, stream.get());
  if (call.deadline != Clock::time_point::max()) {
    deadlines_.insert({call.deadline, call_id});
    WatchDeadline(call.deadline);
  }
  Dispatch(call_id, call);
  return stream;
}

void Channel::StreamEnded(PendingCall& call, absl::Status status, bool cancel_on_wire) {
  internal::ClientStream& stream = *call.stream;
  stream.End(std::move(status), true);
  ClientSession* session = call.session;
  if (cancel_on_wire && session != nullptr && !session->closed() &&
      !session->Unsend(call.sequence)) {
    session->Send(Frame{FrameType::kCancel, 0, stream.call_id(), {}});
  }
  stream.Detach();
  PostRelease(stream);
}

void Channel::PostRelease(internal::ClientStream& stream) {
  if (!stream.registered_) return;
  asio::post(executor_, [self = shared_from_this(), weak = stream.weak_from_this()] {
    if (std::shared_ptr<internal::ClientStream> s = weak.lock()) self->ReleaseStream(*s);
  });
}

void Channel::ReleaseStream(internal::ClientStream& stream) {
  if (!stream.registered_) return;
  stream.registered_ = false;
  PendingCall& call = *stream.call_;
  const uint32_t call_id = stream.call_id();
  pending_.erase(call_id);
  if (call.deadline != Clock::time_point::max()) deadlines_.erase({call.deadline, call_id});
  ClientSession* session = call.session;
  if (session != nullptr) --session->calls;
  stream.Detach();
  streams_.erase(call_id);
  if (stream.metrics() != nullptr) {
    stream.metrics()->Finished(stream.end_status().code(), stream.started_);
  }
  AfterCall(session);
}

void Channel::OnStreamFrame(ClientSession& session, Frame& frame) {
  auto it = pending_.find(frame.call_id);
  // A call that ended or that we gave up on: what crossed our cancel is ignored.
  if (it == pending_.end() || it->second->session != &session) return;
  PendingCall& call = *it->second;
  if (call.stream == nullptr) {
    session.Close(absl::DataLossError(absl::StrCat("protocol error: frame type ",
                                                   static_cast<int>(frame.type),
                                                   " for unary call ", frame.call_id)));
    return;
  }
  if (call.result || call.gave_up) return;
  if (frame.type == FrameType::kWindow) {
    if (absl::Status s = call.stream->Credit(frame); !s.ok()) session.Close(s);
    return;
  }
  bool fatal = false;
  absl::Status s = call.stream->Receive(frame, fatal);
  if (s.ok()) return;
  if (fatal) {
    session.Close(s);
    return;
  }
  call.gave_up = true;
  StreamEnded(call, std::move(s), true);
}

void Channel::OnQueueDrained(ClientSession& session) {
  PumpWaiting();
  // A pump may resume a writer inline, which may open or drop streams: not while iterating.
  std::vector<std::weak_ptr<internal::ClientStream>> ready;
  for (auto& [id, stream] : streams_) {
    if (stream->call_->session == &session && !stream->queue_empty()) {
      ready.push_back(stream->weak_from_this());
    }
  }
  for (std::weak_ptr<internal::ClientStream>& weak : ready) {
    if (std::shared_ptr<internal::ClientStream> stream = weak.lock()) stream->Pump();
  }
}

bool Channel::CanSendNow() const {
  if (session_ == nullptr || session_->closed() || session_->draining) return false;
  if (session_->over_queue_bound()) return false;
  uint32_t limit = session_->peer_max_concurrent_calls();
  if (options_.max_concurrent_calls != 0 && (limit == 0 || options_.max_concurrent_calls < limit)) {
    limit = options_.max_concurrent_calls;
  }
  return limit == 0 || session_->calls < limit;
}

void Channel::Dispatch(uint32_t call_id, PendingCall& call) {
  if (session_ != nullptr && (session_->closed() || session_->draining)) session_.reset();
  if (session_ != nullptr) {
    if (waiting_.empty() && CanSendNow()) {
      SendOn(*session_, call_id, call);
    } else {
      waiting_.push_back(call_id);  // behind earlier calls, in order
      PumpWaiting();
    }
    return;
  }
  if (!dialing_ && Clock::now() < retry_at_ && !call.wait_for_ready) {
    // Backing off after a failed attempt: fail fast, as gRPC does, rather than dial again.
    // A refusal keeps its code (kPermissionDenied, say); anything else is kUnavailable.
    const absl::StatusCode code = last_failure_.code() == absl::StatusCode::kPermissionDenied ||
                                          last_failure_.code() == absl::StatusCode::kUnauthenticated
                                      ? last_failure_.code()
                                      : absl::StatusCode::kUnavailable;
    Complete(call,
             absl::Status(code, absl::StrCat(last_failure_.message(), " (waiting ",
                                             std::chrono::duration_cast<std::chrono::milliseconds>(
                                                 retry_at_ - Clock::now())
                                                 .count(),
                                             " ms before the next attempt)")));
    return;
  }
  waiting_.push_back(call_id);
  DialWhenAllowed();
}

void Channel::SendOn(ClientSession& session, uint32_t call_id, PendingCall& call) {
  const size_t limit = std::min(session.peer_max_frame_payload(),
                                size_t(internal::FrameLimitFor(options_.max_message_size)));
  if (call.stream != nullptr && (session.peer_stream_window() == 0 || options_.stream_window == 0)) {
    Complete(call, absl::UnimplementedError(absl::StrCat(
                       call.stream->method_, ": ", uri_,
                       options_.stream_window == 0
                           ? " is a channel with streaming calls turned off (stream_window 0)"
                           : " does not take streaming calls (its hello announced no stream "
                             "window)")));
    return;
  }
  if (call.request.payload.size() > limit) {
    Complete(call, absl::ResourceExhaustedError(
                       absl::StrCat("request frame of ", call.request.payload.size(),
                                    " bytes exceeds the limit of ", limit, " bytes of ", uri_)));
    return;
  }
  call.session = &session;
  ++session.calls;
  call.sequence = session.Send(std::move(call.request));
  if (call.stream != nullptr) {
    // The largest message the server takes: its frame limit less the room it keeps for a header.
    const size_t frame = session.peer_max_frame_payload();
    const size_t peer = frame > internal::kMaxHeaderOverhead ? frame - internal::kMaxHeaderOverhead
                                                            : frame;
    call.stream->Attach(&session, session.peer_stream_window(),
                        std::min(peer, options_.max_message_size));
  }
}

void Channel::PumpWaiting() {
  while (!waiting_.empty()) {
    const uint32_t id = waiting_.front();
    PendingCall* call = Unsent(id);
    if (call == nullptr) {
      waiting_.pop_front();  // gave up, or already sent
      continue;
    }
    if (!CanSendNow()) break;
    waiting_.pop_front();
    SendOn(*session_, id, *call);
  }
  if (session_ == nullptr && AnyoneWaiting()) DialWhenAllowed();
}

bool Channel::AnyoneWaiting() const {
  return std::any_of(waiting_.begin(), waiting_.end(),
                     [this](uint32_t id) { return Unsent(id) != nullptr; });
}

void Channel::DialWhenAllowed() {
  if (Clock::now() < retry_at_) {
    ScheduleRetry();
  } else {
    StartDial();
  }
}

// The caller's coroutine suspends here until Resume; cancelling it (its cancellation slot)
// gives the call up.
asio::awaitable<void> Channel::AwaitResult(PendingCall& call) {
  return asio::async_initiate<const asio::use_awaitable_t<>&, void()>(
      [this, &call](PendingCall::Waiter waiter) {
        call.cancel_slot = asio::get_associated_cancellation_slot(waiter);
        if (call.cancel_slot.is_connected()) {
          call.cancel_slot.assign([this, &call](asio::cancellation_type type) {
            if (type != asio::cancellation_type::none) GiveUp(call);
          });
        }
        call.waiter.emplace(std::move(waiter));
      },
      asio::use_awaitable);
}

void Channel::Resume(PendingCall& call, bool inline_resume) {
  if (!call.waiter) return;
  PendingCall::Waiter waiter = std::move(*call.waiter);
  call.waiter.reset();
  if (call.cancel_slot.is_connected()) call.cancel_slot.clear();
  if (inline_resume) {
    // Through the caller's executor: at once when that is the one running here (the usual
    // case: the channel's), queued otherwise (a strand held elsewhere, say).
    asio::dispatch(std::move(waiter));
  } else {
    asio::post(executor_, std::move(waiter));
  }
}

void Channel::GiveUp(PendingCall& call) {
  if (call.result || call.gave_up) return;
  call.gave_up = true;
  if (call.stream != nullptr) {
    const std::string_view method = call.stream->method_;
    StreamEnded(call,
                Clock::now() >= call.deadline
                    ? absl::DeadlineExceededError(
                          absl::StrCat(transport::AsAbsl(method), ": deadline exceeded"))
                    : absl::CancelledError(absl::StrCat(transport::AsAbsl(method), ": call cancelled")),
                true);
    return;
  }
  Resume(call, false);
}

void Channel::Complete(PendingCall& call, absl::StatusOr<internal::Reply> result) {
  if (call.result) return;
  call.result = std::move(result);
  if (call.stream != nullptr) {
    StreamEnded(call, call.result->status(), false);
    return;
  }
  Resume(call, false);
}

// One timer serves every call's deadline, armed for the earliest: a call costs an ordered-set
// insert and erase, and a timer operation only when its deadline is the earliest.
void Channel::WatchDeadline(Clock::time_point deadline) {
  if (deadline >= armed_deadline_) return;
  armed_deadline_ = deadline;
  deadline_timer_.expires_at(deadline);
  deadline_timer_.async_wait([weak = weak_from_this()](std::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock(); self != nullptr) self->ExpireDeadlines();
  });
}

void Channel::ExpireDeadlines() {
  armed_deadline_ = Clock::time_point::max();
  const Clock::time_point now = Clock::now();
  // Entries leave the set when their call returns, so each expired one is a call still open.
  for (auto it = deadlines_.begin(); it != deadlines_.end() && it->first <= now; ++it) {
    if (auto call = pending_.find(it->second); call != pending_.end()) GiveUp(*call->second);
  }
  auto next = deadlines_.upper_bound({now, UINT32_MAX});
  if (next != deadlines_.end()) WatchDeadline(next->first);
}

void Channel::StartDial() {
  if (dialing_ || closed_) return;
  dialing_ = true;
  ++connect_attempts_;
  abandon_dial_.expires_at(Clock::time_point::max());
  asio::co_spawn(executor_, Dial(shared_from_this()), asio::detached);
}

// For wait_for_ready calls that arrive while backing off: dial when the wait is over.
void Channel::ScheduleRetry() {
  if (dialing_ || closed_) return;
  retry_timer_.expires_at(retry_at_);
  retry_timer_.async_wait([weak = weak_from_this()](std::error_code ec) {
    if (ec) return;
    if (auto self = weak.lock(); self != nullptr && self->AnyoneWaiting()) self->StartDial();
  });
}

asio::awaitable<void> Channel::Dial(std::shared_ptr<Channel> self) {
  using namespace asio::experimental::awaitable_operators;
  co_await asio::this_coro::throw_if_cancelled(false);
  // gRPC's rule: an attempt may take the minimum connect timeout, or the backoff if longer.
  asio::steady_timer timeout(executor_, std::max(options_.connect_timeout, next_backoff_));
  absl::StatusOr<std::shared_ptr<ClientSession>> session =
      absl::UnavailableError(absl::StrCat("connect to ", uri_, ": failed"));
  try {
    auto winner = co_await (DialOnce() || timeout.async_wait(use_nothrow) ||
                            abandon_dial_.async_wait(use_nothrow));
    if (winner.index() == 0) {
      session = std::move(std::get<0>(winner));
    } else if (winner.index() == 1) {
      session = absl::UnavailableError(absl::StrCat("connect to ", uri_, ": timed out"));
    } else {
      session = absl::UnavailableError(absl::StrCat(
          "connect to ", uri_, ": abandoned when every call waiting for it had given up"));
    }
  } catch (const std::exception& e) {
    session = absl::UnavailableError(absl::StrCat("connect to ", uri_, ": ", e.what()));
  }
  dialing_ = false;
  if (closed_) {
    if (session.ok()) (*session)->Close(absl::CancelledError("channel closed"));
    co_return;
  }
  if (!session.ok()) {
    OnDialFailed(session.status());
    co_return;
  }
  next_backoff_ = options_.backoff.initial;
  retry_at_ = Clock::time_point::min();
  last_failure_ = absl::OkStatus();
  session_ = *std::move(session);
  PumpWaiting();
}

void Channel::OnDialFailed(const absl::Status& why) {
  last_failure_ = why;
  retry_at_ = Clock::now() + Jittered(next_backoff_, options_.backoff.jitter);
  next_backoff_ = std::min(
      std::chrono::duration_cast<Clock::duration>(next_backoff_ * options_.backoff.multiplier),
      options_.backoff.max);
  // The calls that waited for this attempt fail with its error, except wait_for_ready ones,
  // which wait for the next attempt.
  std::deque<uint32_t> waiting;
  waiting.swap(waiting_);
  for (uint32_t id : waiting) {
    PendingCall* call = Unsent(id);
    if (call == nullptr) continue;
    if (call->wait_for_ready) {
      waiting_.push_back(id);
    } else {
      Complete(*call, why);
    }
  }
  if (!waiting_.empty()) ScheduleRetry();
}

asio::awaitable<absl::StatusOr<std::shared_ptr<ClientSession>>> Channel::DialOnce() {
  co_await asio::this_coro::throw_if_cancelled(false);
  absl::StatusOr<std::unique_ptr<transport::Connection>> connection =
      co_await transport_->Connect(endpoint_);
  if (!connection.ok()) {
    // A bad address stays kInvalidArgument; otherwise the server cannot be reached:
    // UNAVAILABLE, as in gRPC.
    const absl::StatusCode code = connection.status().code() == absl::StatusCode::kInvalidArgument
                                      ? absl::StatusCode::kInvalidArgument
                                      : absl::StatusCode::kUnavailable;
    co_return absl::Status(code,
                           absl::StrCat("connect to ", uri_, ": ", connection.status().message()));
  }
  internal::SessionOptions session_options;
  session_options.max_message_size = options_.max_message_size;
  session_options.keepalive_interval = options_.keepalive_interval;
  session_options.keepalive_timeout = options_.keepalive_timeout;
  session_options.stall_timeout = options_.frame_stall_timeout;
  session_options.max_queued_bytes = options_.max_queued_bytes;
  session_options.pause_reading_when_over_bound = false;
  session_options.stream_window = options_.stream_window;  // new calls wait in the channel instead
  session_options.peer_name = uri_;
  session_options.accept_refusal = true;
  auto session =
      std::make_shared<ClientSession>(*std::move(connection), std::move(session_options), this);
  session->Start();
  // Start() may already have closed it (a write that failed at once): then nothing would wake us.
  if (!session->closed() && !session->handshaken()) co_await session->WaitForHandshake();
  if (session->handshaken() && !session->closed()) co_return session;
  absl::Status why =
      session->closed() ? session->close_status() : absl::CancelledError("handshake abandoned");
  session->DetachChannel();
  session->Close(why);
  // The server said no in its hello (PROTOCOL.md §6.1a): its code (kPermissionDenied, say)
  // and reason reach the calls.
  if (session->refused()) co_return why;
  co_return absl::UnavailableError(
      absl::StrCat("connect to ", uri_, ": no protocol hello: ", why.message()));
}

void Channel::OnResponse(ClientSession& session, Frame frame) {
  auto it = pending_.find(frame.call_id);
  if (it == pending_.end() || it->second->session != &session) return;  // late or cancelled
  PendingCall& call = *it->second;
  if (call.result || call.gave_up) return;
  wire::ResponseHeader header;
  absl::StatusOr<size_t> offset = internal::DecodePayloadHeader(frame.payload, header);
  if (!offset.ok()) {
    Complete(call, absl::InternalError(absl::StrCat("malformed response from ", uri_, ": ",
                                                    offset.status().message())));
    return;
  }
  if (call.response_metadata != nullptr)
    *call.response_metadata = internal::FromWire(header.metadata());
  absl::Status status = internal::StatusFromWire(header);
  if (call.stream != nullptr) {
    // The trailer: the call is over; the messages that came before it can still be read.
    internal::ClientStream& stream = *call.stream;
    stream.trailing_metadata_ = internal::FromWire(header.metadata());
    if (stream.response_metadata_ != nullptr) *stream.response_metadata_ = stream.trailing_metadata_;
    call.result = status.ok() ? absl::StatusOr<internal::Reply>(internal::Reply())
                              : absl::StatusOr<internal::Reply>(status);
    stream.End(std::move(status), false);
    stream.Detach();
    PostRelease(stream);
    return;
  }
  if (!status.ok()) {
    Complete(call, std::move(status));
    return;
  }
  if (frame.payload.size() - *offset > options_.max_message_size) {
    Complete(call, absl::ResourceExhaustedError(absl::StrCat(
                       "response message of ", frame.payload.size() - *offset,
                       " bytes exceeds the limit of ", options_.max_message_size, " bytes")));
    return;
  }
  // The caller resumes here and now, inside the session's batch of frames: the call it makes
  // next is written with the batch's other frames. Nothing touches `this` after it: the caller
  // may drop the last reference to the channel (the session keeps itself alive).
  call.result = internal::Reply{std::move(frame.payload), *offset};
  Resume(call, true);
}

void Channel::OnGoAway(ClientSession& session) {
  if (session_.get() == &session) session_.reset();  // new calls go to a new connection
  if (session.calls == 0) session.Close(absl::CancelledError("goaway with no calls in flight"));
  PumpWaiting();  // calls waiting for room go to a new connection
}

void Channel::OnSessionClosed(ClientSession& session, const absl::Status& why) {
  if (session_.get() == &session) session_.reset();
  absl::Status status =
      why.code() == absl::StatusCode::kCancelled
          ? absl::CancelledError(absl::StrCat("connection to ", uri_, " closed: ", why.message()))
          : absl::UnavailableError(absl::StrCat("connection to ", uri_, " lost: ", why.message()));
  for (auto& [id, call] : pending_) {
    if (call->session != &session) continue;
    Complete(*call, status);
    call->session = nullptr;  // the session is gone before the call's coroutine resumes
  }
  // Calls still waiting for room on that connection go to a new one.
  asio::post(executor_, [weak = weak_from_this()] {
    if (auto self = weak.lock(); self != nullptr && !self->closed_) self->PumpWaiting();
  });
}

void Channel::Close() {
  if (closed_) return;
  closed_ = true;
  for (auto& [id, call] : pending_) {
    Complete(*call, absl::CancelledError(absl::StrCat("channel to ", uri_, " closed")));
  }
  abandon_dial_.cancel();
  retry_timer_.cancel();
  deadline_timer_.cancel();
  if (session_ != nullptr) {
    std::shared_ptr<ClientSession> session = std::move(session_);
    session->Close(absl::CancelledError("channel closed"));
  }
}

namespace internal {

ClientStream::ClientStream(std::shared_ptr<Channel> channel, uint32_t call_id,
                           uint32_t receive_window, size_t max_receive)
    : StreamCore(channel->executor(), call_id, receive_window, max_receive),
      channel_(std::move(channel)),
      call_(std::make_unique<PendingCall>()) {}

ClientStream::ClientStream(FailedTag, asio::any_io_executor executor, absl::Status status)
    : StreamCore(std::move(executor), 0, 0, 0), call_(std::make_unique<PendingCall>()) {
  End(std::move(status), true);
}

std::shared_ptr<ClientStream> ClientStream::Failed(asio::any_io_executor executor,
                                                   absl::Status status) {
  return std::shared_ptr<ClientStream>(new ClientStream(FailedTag{}, std::move(executor), std::move(status)));
}

ClientStream::~ClientStream() {
  if (!registered_) return;
  // The last handle went without the call's end being released yet: cancel it if it is still
  // open, and leave the channel's tables now.
  if (!ended()) channel_->GiveUp(*call_);
  channel_->ReleaseStream(*this);
}

asio::awaitable<absl::Status> ClientStream::Finish() {
  (void)WritesDone();
  DiscardIncoming();
  co_await WaitForEnd();
  co_return end_status();
}

void ClientStream::Cancel() {
  if (ended()) return;
  if (!registered_) {
    End(absl::CancelledError(absl::StrCat(method_, ": call cancelled")), true);
    return;
  }
  channel_->GiveUp(*call_);
}

void ClientStream::Abort(absl::Status status) {
  if (ended()) return;
  if (!registered_) {
    End(std::move(status), true);
    return;
  }
  if (call_->result || call_->gave_up) return;
  call_->gave_up = true;
  channel_->StreamEnded(*call_, std::move(status), true);
}

}  // namespace internal
}  // namespace courier
