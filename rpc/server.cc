#include "rpc/server.h"

#include <atomic>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/executor_work_guard.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "rpc/internal/session.h"
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

// What the server shares with its sessions and accept loops; outlives the Server object while
// any of them runs.
struct ServerState {
  ServerOptions options;
  asio::any_io_executor main_executor;
  absl::flat_hash_map<std::string, const MethodEntry*> methods;
  std::vector<std::shared_ptr<transport::Transport>> transports;  // one per scheme used
  std::vector<std::shared_ptr<transport::Listener>> listeners;
  std::vector<std::shared_ptr<Reactor>> reactors;
  // Reactor threads (threads > 0): their io_contexts, kept running by the guards.
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  std::vector<asio::executor_work_guard<asio::io_context::executor_type>> guards;
  std::vector<std::thread> threads;
  size_t next_reactor = 0;
  bool listening = false;
  bool shut_down = false;
  std::atomic<size_t> active_calls{0};
  std::atomic<size_t> live_sessions{0};
  std::optional<asio::steady_timer> all_closed;  // on main_executor: Shutdown waits here
};

// A session ended (on any reactor): wake Shutdown when it was the last.
void SessionGone(const std::shared_ptr<ServerState>& state) {
  if (state->live_sessions.fetch_sub(1) == 1) {
    asio::post(state->main_executor, [state] {
      if (state->all_closed) state->all_closed->cancel();
    });
  }
}

enum class CancelReason { kNone, kClient, kDeadline, kConnectionLost, kShutdown };

struct ServerCall {
  ServerCall(uint32_t id, ServerContext ctx) : id(id), ctx(std::move(ctx)) {}
  uint32_t id;
  ServerContext ctx;
  asio::cancellation_signal signal;
  CancelReason reason = CancelReason::kNone;
};

class ServerSession final : public Session {
 public:
  ServerSession(std::unique_ptr<transport::Connection> connection, SessionOptions options,
                std::shared_ptr<ServerState> state, std::shared_ptr<Reactor> reactor)
      : Session(std::move(connection), std::move(options)),
        state_(std::move(state)),
        reactor_(std::move(reactor)),
        drain_timer_(executor()),
        deadline_timer_(executor()) {}

  // Sends goaway; calls in flight may finish until `deadline`, then are cancelled.
  void BeginDrain(Clock::time_point deadline) {
    if (draining_ || closed()) return;
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
    drain_timer_.async_wait(
        [self = std::static_pointer_cast<ServerSession>(shared_from_this())](std::error_code ec) {
          if (ec || self->closed()) return;
          self->CancelAll(CancelReason::kShutdown);
        });
  }

 private:
  void OnFrame(Frame frame) override {
    switch (frame.type) {
      case FrameType::kRequest:
        StartCall(std::move(frame));
        break;
      case FrameType::kCancel:
        if (auto it = calls_.find(frame.call_id); it != calls_.end()) {
          Cancel(*it->second, CancelReason::kClient);
        }
        break;
      default:
        break;  // responses and goaway are not for servers; unknown types are ignored
    }
  }

  void OnClose(const absl::Status& why) override {
    const auto code = why.code();
    if (code != absl::StatusCode::kUnavailable && code != absl::StatusCode::kCancelled &&
        code != absl::StatusCode::kOk) {
      Log(LogSeverity::kWarning, absl::StrCat("courier server: closing connection from ",
                                              peer().address, ": ", why.ToString()));
    }
    drain_timer_.cancel();
    deadline_timer_.cancel();
    CancelAll(CancelReason::kConnectionLost);
    reactor_->sessions.erase(this);
    SessionGone(state_);
  }

  void StartCall(Frame frame) {
    if (frame.call_id == 0) {
      Close(absl::DataLossError("protocol error: request with call id 0"));
      return;
    }
    if (calls_.contains(frame.call_id)) {
      Close(absl::DataLossError(
          absl::StrCat("protocol error: call id ", frame.call_id, " reused while in flight")));
      return;
    }
    max_call_id_ = std::max(max_call_id_, frame.call_id);
    absl::StatusOr<RequestHeaderView> header = DecodeRequestHeader(frame.payload);
    if (!header.ok()) {
      Respond(frame.call_id, header.status(), {});
      return;
    }
    if (draining_) {
      Respond(frame.call_id,
              absl::UnavailableError("server is shutting down; the call was not processed"), {});
      return;
    }
    auto method = state_->methods.find(transport::AsAbsl(header->method));
    if (method == state_->methods.end()) {
      Respond(frame.call_id,
              absl::UnimplementedError(
                  absl::StrCat("unknown method ", transport::AsAbsl(header->method))),
              {});
      return;
    }
    const Clock::time_point deadline =
        header->timeout_us == 0
            ? Clock::time_point::max()
            : Clock::now() +
                  std::chrono::microseconds(std::min<uint64_t>(header->timeout_us, 1ull << 50));
    const size_t offset = header->message_offset;
    auto call = std::make_shared<ServerCall>(
        frame.call_id,
        ServerContext(method->second->full_name, deadline, peer(), std::move(header->metadata)));
    calls_.emplace(call->id, call);
    state_->active_calls.fetch_add(1, std::memory_order_relaxed);
    WatchDeadline(deadline);
    auto self = std::static_pointer_cast<ServerSession>(shared_from_this());
    asio::co_spawn(executor(),
                   RunCall(self, call, method->second, std::move(frame.payload), offset),
                   asio::bind_cancellation_slot(call->signal.slot(), asio::detached));
  }

  // One timer per session serves every call's deadline: armed for the earliest, and re-armed
  // only when a call comes with an earlier one (rare: deadlines mostly grow), so a call costs
  // no timer operation of its own.
  void WatchDeadline(Clock::time_point deadline) {
    if (deadline == Clock::time_point::max() || deadline >= armed_deadline_) return;
    armed_deadline_ = deadline;
    deadline_timer_.expires_at(deadline);
    deadline_timer_.async_wait(
        [self = std::static_pointer_cast<ServerSession>(shared_from_this())](std::error_code ec) {
          if (!ec && !self->closed()) self->ExpireDeadlines();
        });
  }

  void ExpireDeadlines() {
    armed_deadline_ = Clock::time_point::max();
    const Clock::time_point now = Clock::now();
    Clock::time_point next = Clock::time_point::max();
    std::vector<std::shared_ptr<ServerCall>> expired;
    for (auto& [id, call] : calls_) {
      if (call->reason != CancelReason::kNone) continue;
      if (call->ctx.deadline() <= now) {
        expired.push_back(call);
      } else {
        next = std::min(next, call->ctx.deadline());
      }
    }
    for (auto& call : expired) Cancel(*call, CancelReason::kDeadline);
    WatchDeadline(next);
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
        Log(LogSeverity::kError,
            absl::StrCat("courier server: handler for ", call->ctx.method(), " threw: ", failure));
        result = absl::InternalError(absl::StrCat(call->ctx.method(), ": handler failed"));
      }
    }
    transport::ReturnBuffer(std::move(payload));
    self->FinishCall(*call, std::move(result), method->returns_payload);
  }

  void CancelAll(CancelReason reason) {
    std::vector<std::shared_ptr<ServerCall>> calls;  // a snapshot: cancelling may end calls
    for (auto& [id, call] : calls_) calls.push_back(call);
    for (auto& call : calls) Cancel(*call, reason);
  }

  void Cancel(ServerCall& call, CancelReason reason) {
    if (call.reason != CancelReason::kNone) return;
    call.reason = reason;
    call.ctx.MarkCancelled();
    call.signal.emit(asio::cancellation_type::terminal);
  }

  // `is_payload`: an OK `result` is the whole response payload already (MethodEntry).
  void FinishCall(ServerCall& call, absl::StatusOr<std::string> result, bool is_payload) {
    state_->active_calls.fetch_sub(1, std::memory_order_relaxed);
    const uint32_t id = call.id;
    switch (call.reason) {
      case CancelReason::kNone:
        break;
      case CancelReason::kClient:
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
    }
    const bool answer =
        call.reason != CancelReason::kClient && call.reason != CancelReason::kConnectionLost;
    Metadata metadata = call.ctx.response_metadata();
    calls_.erase(id);  // may destroy `call`
    if (!answer || closed()) {
      // nothing to send
    } else if (result.ok() && is_payload) {
      SendResponsePayload(id, *std::move(result));
    } else {
      Respond(id, std::move(result), std::move(metadata));
    }
    if (draining_ && calls_.empty()) Linger();
  }

  // Sends an encoded response payload, or RESOURCE_EXHAUSTED if it is over the client's limit.
  void SendResponsePayload(uint32_t call_id, std::string payload) {
    if (payload.size() > peer_max_frame_payload()) {
      Respond(call_id,
              absl::ResourceExhaustedError(absl::StrCat(
                  "response of ", payload.size(), " bytes exceeds the client's limit of ",
                  peer_max_frame_payload(), " bytes per frame")),
              {});
      return;
    }
    Send(Frame{FrameType::kResponse, transport::kFlagEndOfStream, call_id, std::move(payload)});
  }

  void Respond(uint32_t call_id, absl::StatusOr<std::string> result, Metadata metadata) {
    wire::ResponseHeader header;
    ToWire(metadata, *header.mutable_metadata());
    std::string_view message;
    if (result.ok()) {
      message = *result;
    } else {
      header.set_code(static_cast<int>(result.status().code()));
      header.set_message(std::string(result.status().message()));
    }
    std::string payload = EncodePayload(header, message);
    if (payload.size() > peer_max_frame_payload()) {
      header.Clear();
      header.set_code(static_cast<int>(absl::StatusCode::kResourceExhausted));
      header.set_message(absl::StrCat("response of ", message.size(),
                                      " bytes exceeds the client's limit of ",
                                      peer_max_frame_payload(), " bytes per frame"));
      payload = EncodePayload(header, {});
    }
    Send(Frame{FrameType::kResponse, transport::kFlagEndOfStream, call_id, std::move(payload)});
  }

  // Drained: give the client a moment to close first (it does once its calls are answered), so
  // our close cannot reset a connection with responses still unread.
  void Linger() {
    drain_timer_.expires_after(std::chrono::seconds(1));
    drain_timer_.async_wait(
        [self = std::static_pointer_cast<ServerSession>(shared_from_this())](std::error_code ec) {
          if (!ec) self->CloseAfterFlush(absl::UnavailableError("server shut down"));
        });
  }

  std::shared_ptr<ServerState> state_;
  std::shared_ptr<Reactor> reactor_;
  absl::flat_hash_map<uint32_t, std::shared_ptr<ServerCall>> calls_;
  asio::steady_timer drain_timer_;
  asio::steady_timer deadline_timer_;
  Clock::time_point armed_deadline_ = Clock::time_point::max();
  uint32_t max_call_id_ = 0;
  bool draining_ = false;
};

namespace {

void StartSession(const std::shared_ptr<ServerState>& state,
                  const std::shared_ptr<Reactor>& reactor,
                  std::unique_ptr<transport::Connection> connection) {
  SessionOptions options;
  options.max_message_size = state->options.max_message_size;
  options.keepalive_interval = state->options.keepalive_interval;
  options.keepalive_timeout = state->options.keepalive_timeout;
  options.handshake_timeout = state->options.handshake_timeout;
  auto session =
      std::make_shared<ServerSession>(std::move(connection), std::move(options), state, reactor);
  reactor->sessions.insert(session.get());
  session->Start();
  if (state->shut_down) session->BeginDrain(Clock::now());
}

asio::awaitable<void> AcceptLoop(std::shared_ptr<ServerState> state,
                                 std::shared_ptr<transport::Listener> listener) {
  co_await asio::this_coro::throw_if_cancelled(false);
  for (;;) {
    std::shared_ptr<Reactor> reactor =
        state->reactors[state->next_reactor++ % state->reactors.size()];
    absl::StatusOr<std::unique_ptr<transport::Connection>> connection =
        co_await listener->Accept(reactor->executor);
    if (state->shut_down) co_return;
    if (!connection.ok()) {
      if (connection.status().code() == absl::StatusCode::kCancelled) co_return;
      Log(LogSeverity::kWarning,
          absl::StrCat("courier server: accept on ", listener->local_endpoint().ToString(), ": ",
                       connection.status().ToString()));
      asio::steady_timer pause(state->main_executor, std::chrono::milliseconds(10));
      co_await pause.async_wait(use_nothrow);
      continue;
    }
    state->live_sessions.fetch_add(1);
    asio::post(reactor->executor, [state, reactor, c = *std::move(connection)]() mutable {
      StartSession(state, reactor, std::move(c));
    });
  }
}

void CloseAllSessions(const std::shared_ptr<Reactor>& reactor) {
  std::vector<ServerSession*> sessions(reactor->sessions.begin(), reactor->sessions.end());
  for (ServerSession* s : sessions) s->Close(absl::CancelledError("server destroyed"));
}

}  // namespace
}  // namespace internal

using internal::Reactor;
using internal::ServerState;

Server::Server(asio::any_io_executor executor, ServerOptions options)
    : executor_(executor), state_(std::make_shared<ServerState>()) {
  state_->options = std::move(options);
  state_->main_executor = executor;
  if (state_->options.threads <= 0) {
    state_->reactors.push_back(std::make_shared<Reactor>(Reactor{executor, {}}));
    return;
  }
  for (int i = 0; i < state_->options.threads; ++i) {
    auto& io = state_->contexts.emplace_back(std::make_unique<asio::io_context>(1));
    state_->guards.push_back(asio::make_work_guard(*io));
    state_->reactors.push_back(std::make_shared<Reactor>(Reactor{io->get_executor(), {}}));
  }
  for (auto& io : state_->contexts) {
    state_->threads.emplace_back([ctx = io.get()] { ctx->run(); });
  }
}

Server::~Server() {
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
  // Handlers still pending on the reactors are destroyed with their io_contexts, here, while
  // the services they refer to are still alive.
  state_->guards.clear();
  state_->contexts.clear();
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
    state_->methods.emplace(method.full_name, &method);
  }
  return absl::OkStatus();
}

absl::StatusOr<Endpoint> Server::Listen(std::string_view uri) {
  if (state_->shut_down) return absl::FailedPreconditionError("Listen after Shutdown");
  absl::StatusOr<Endpoint> endpoint = ParseEndpoint(uri);
  if (!endpoint.ok()) return endpoint.status();
  absl::StatusOr<std::unique_ptr<transport::Transport>> transport =
      transport::NewTransport(endpoint->scheme, executor_, state_->options.transports);
  if (!transport.ok()) return transport::Annotate(transport.status(), uri);
  absl::StatusOr<std::unique_ptr<transport::Listener>> listener = (*transport)->Listen(*endpoint);
  if (!listener.ok())
    return transport::Annotate(listener.status(), absl::StrCat("listen ", transport::AsAbsl(uri)));
  state_->listening = true;
  std::shared_ptr<transport::Listener> shared = *std::move(listener);
  state_->transports.push_back(*std::move(transport));
  state_->listeners.push_back(shared);
  endpoints_.push_back(shared->local_endpoint());
  asio::co_spawn(executor_, internal::AcceptLoop(state_, shared), asio::detached);
  return endpoints_.back();
}

asio::awaitable<void> Server::ShutdownImpl(std::shared_ptr<ServerState> state,
                                           Clock::duration drain) {
  if (!state->shut_down) {
    state->shut_down = true;
    for (auto& listener : state->listeners) listener->Close();
    const Clock::time_point deadline = Clock::now() + drain;
    for (auto& reactor : state->reactors) {
      asio::post(reactor->executor, [reactor, deadline] {
        std::vector<internal::ServerSession*> sessions(reactor->sessions.begin(),
                                                       reactor->sessions.end());
        for (internal::ServerSession* s : sessions) s->BeginDrain(deadline);
      });
    }
  }
  if (!state->all_closed) state->all_closed.emplace(state->main_executor);
  while (state->live_sessions.load() > 0) {
    // Woken by the last session to close; the period only bounds a wake-up lost to a race.
    state->all_closed->expires_after(std::chrono::milliseconds(100));
    co_await state->all_closed->async_wait(internal::use_nothrow);
  }
}

size_t Server::active_calls() const { return state_->active_calls.load(); }
size_t Server::connections() const { return state_->live_sessions.load(); }

}  // namespace courier
