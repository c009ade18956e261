// Channel: the client's handle on one endpoint. Many concurrent calls share its one connection;
// it dials on first use and redials after a failure. RPC layer, public.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/btree_set.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/steady_timer.hpp"
#include "rpc/call.h"
#include "rpc/internal/stream.h"
#include "transport/endpoint.h"
#include "transport/frame.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace courier {

namespace internal {
class ClientMetrics;
class ClientSession;
struct OwnedReactor;
struct PendingCall;
}  // namespace internal

// Connection backoff, as gRPC specifies it: after the n-th failed attempt in a row the channel
// waits initial * multiplier^(n-1) (at most `max`), each wait randomised by ±jitter.
struct BackoffOptions {
  Clock::duration initial = std::chrono::seconds(1);
  double multiplier = 1.6;
  double jitter = 0.2;
  Clock::duration max = std::chrono::seconds(120);
};

// What ChannelOptions::call_credentials is told about the call it adds credentials to.
struct CallCredentialsContext {
  std::string_view method;   // "/package.Service/Method"
  const Endpoint& endpoint;  // the channel's
};
// Adds credentials (a bearer token, say) to a call's metadata. A non-OK status fails the call
// with it, before anything is sent.
using CallCredentials =
    std::function<absl::Status(const CallCredentialsContext& context, Metadata& metadata)>;

struct ChannelOptions {
  // Largest message sent or received; a bigger request fails with kResourceExhausted before it
  // is sent, a bigger response makes the server answer kResourceExhausted.
  size_t max_message_size = kDefaultMaxMessageSize;
  // A connection attempt (including the protocol hello) gives up after this, or after the
  // current backoff if that is longer (gRPC's minimum connect timeout). An attempt no call waits
  // for any more (they all gave up) is abandoned at once.
  Clock::duration connect_timeout = std::chrono::seconds(20);
  // Waits between failed connection attempts; calls made while waiting fail fast kUnavailable
  // unless CallOptions::wait_for_ready. A connection that worked and was lost is redialled at
  // once.
  BackoffOptions backoff;
  // Calls in flight at once on the connection: at most this (0: no limit of ours) and at most
  // what the server announced; further calls wait in the channel, in order, until their turn or
  // their deadline.
  uint32_t max_concurrent_calls = 0;
  // Above this many bytes queued for writing, new calls wait in the channel until the queue
  // drains. (The channel keeps reading: responses make it queue nothing, and a server's pings
  // are rate-limited.)
  size_t max_queued_bytes = 4 * 1024 * 1024;
  // A server that stops in the middle of a frame for this long is dropped (calls fail
  // kUnavailable). 0: never.
  Clock::duration frame_stall_timeout = std::chrono::seconds(20);
  // Ping after this much silence on the connection; close it (calls in flight fail
  // kUnavailable) if the peer does not answer within keepalive_timeout. 0 disables.
  Clock::duration keepalive_interval = std::chrono::seconds(30);
  Clock::duration keepalive_timeout = std::chrono::seconds(10);
  // Streaming calls: the message bytes a server may send on one stream ahead of what the
  // application has read (announced in the hello; at most 2^31-1, a larger value is taken as
  // that). 0: this channel makes no streaming calls (they fail kUnimplemented).
  uint32_t stream_window = internal::kDefaultStreamWindow;
  // Records client-side Prometheus metrics there (calls started and finished by status code,
  // latency and message bytes, per method; rpc/internal/metrics.h). Calls refused before they
  // start (a closed channel, an oversized request, invalid metadata) are not counted. Null:
  // nothing is recorded (the cost per call is one null-pointer check).
  std::shared_ptr<prometheus::Registry> metrics_registry;
  // tls:// only: the CAs that vouch for the server, the name to check, and the certificate to
  // present under mutual TLS (transport/tls/tls_transport.h; the URI's query overrides these).
  // The TLS handshake counts against connect_timeout.
  transport::TlsOptions tls;
  // Per-call credentials, as gRPC's call credentials: run as each call starts, on the thread
  // that starts it (a blocking call's own thread: it must be thread-safe), before the call's
  // metadata is checked. Sent only over transports nobody between the two ends can read
  // (TransportInfo::confidential: unix, shm, pipe, fifo, tls): over tcp:// and udp:// every
  // call fails kUnauthenticated, unsent, unless allow_insecure_call_credentials is set.
  CallCredentials call_credentials;
  bool allow_insecure_call_credentials = false;
  // Where schemes are looked up; the built-in table by default.
  std::span<const transport::TransportInfo> transports = transport::BuiltInTransports();
};

// Use a Channel only from its executor (post to it from other threads).
class Channel : public std::enable_shared_from_this<Channel> {
 public:
  // kInvalidArgument for a malformed URI or a scheme this build has no transport for. Does not
  // connect: the first call does.
  static absl::StatusOr<std::shared_ptr<Channel>> Create(asio::any_io_executor executor,
                                                         std::string_view uri,
                                                         ChannelOptions options = {});
  // The same, for programs without an event loop of their own: the channel runs its own reactor
  // thread (stopped and joined when the channel is destroyed). Calls still run on that thread;
  // use the stubs' blocking calls, or AsyncCall with a callback or asio::use_future. Where the
  // last reference goes on that thread (a handle's release runs there), the thread finishes on
  // its own, and a process that exits meanwhile waits for it, at most 2 s.
  static absl::StatusOr<std::shared_ptr<Channel>> Create(std::string_view uri,
                                                         ChannelOptions options = {});

  // Use Create(); the key keeps construction there.
  class ConstructionKey {
    friend class Channel;
    ConstructionKey() = default;
  };
  Channel(ConstructionKey, asio::any_io_executor executor, Endpoint endpoint,
          std::unique_ptr<transport::Transport> transport, ChannelOptions options);
  ~Channel();
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // One unary call with serialized bytes: `method` is "/package.Service/Method". Returns the
  // response bytes or the status: the handler's own, kDeadlineExceeded at the deadline,
  // kCancelled when the awaiting coroutine is cancelled (a cancel frame tells the server) or the
  // channel is closed, kUnavailable when the server cannot be reached or the connection is lost,
  // kResourceExhausted when the request is over the limit. Must run on executor().
  asio::awaitable<absl::StatusOr<std::string>> Call(std::string method, std::string request,
                                                    CallOptions options = {}) {
    return internal::WithoutCancellationThrow(
        CallBytes(std::move(method), std::move(request), std::move(options)));
  }

  // Internal, for rpc/stub_support.h: one call whose request payload is already encoded
  // (internal::EncodeRequest with the same `timeout`), returning the response payload for
  // in-place parsing; the metadata was checked with internal::ValidateMetadata. `method` must
  // stay valid until done, and the awaiting coroutine must have
  // Asio's throw_if_cancelled turned off (internal::WithoutCancellationThrow).
  asio::awaitable<absl::StatusOr<internal::Reply>> CallEncoded(
      std::string_view method, std::string payload, size_t message_size, Clock::duration timeout,
      Metadata* response_metadata, bool wait_for_ready = false);

  // Internal, for rpc/stub_support.h: runs ChannelOptions::call_credentials on `metadata`.
  // Any thread.
  absl::Status AddCallCredentials(std::string_view method, Metadata& metadata) const {
    if (!options_.call_credentials) return absl::OkStatus();
    return RunCallCredentials(method, metadata);
  }

  // Internal, for rpc/stream.h and the stubs: opens a streaming call (its request goes out as
  // soon as the connection allows; writes wait until then). Never fails here: a call that cannot
  // start is returned already ended with its status. Must run on executor().
  std::shared_ptr<internal::ClientStream> OpenStream(std::string_view method, CallOptions options);

  // Call() for any completion token: a callback taking absl::StatusOr<std::string>,
  // asio::use_future, asio::use_awaitable...
  template <typename Token>
  auto AsyncCall(std::string method, std::string request, CallOptions options, Token&& token) {
    return internal::SpawnWithToken(executor_,
                                    Call(std::move(method), std::move(request), std::move(options)),
                                    std::forward<Token>(token));
  }

  // Ends every call in flight with kCancelled and refuses new ones. Idempotent.
  void Close();

  const Endpoint& endpoint() const { return endpoint_; }
  asio::any_io_executor executor() const { return executor_; }
  // True on the thread of a reactor the channel owns (see Create(uri)), where blocking on a
  // call would wait forever. Always false for a channel on the caller's executor.
  bool on_own_reactor_thread() const;
  // Calls not yet completed, sent or waiting in the channel (for tests and introspection).
  size_t calls_in_flight() const { return pending_.size(); }
  // Calls waiting in the channel for a connection or for their turn.
  size_t calls_waiting() const;
  // True while a connection is up and takes new calls (for tests and introspection).
  bool connected() const;
  // Bytes queued for writing on the current connection (for tests and introspection).
  size_t queued_bytes() const;
  // Connection attempts made so far (for tests and introspection).
  uint64_t connect_attempts() const { return connect_attempts_; }

 private:
  friend class internal::ClientSession;
  friend class internal::ClientStream;

  asio::awaitable<absl::StatusOr<std::string>> CallBytes(std::string method, std::string request,
                                                         CallOptions options);
  uint32_t NextCallId();
  absl::Status RunCallCredentials(std::string_view method, Metadata& metadata) const;
  // Sends `call` on the ready connection if it may go now, else queues it in waiting_ (and
  // dials), or fails it (kUnavailable while backing off, unless wait_for_ready).
  void Dispatch(uint32_t call_id, internal::PendingCall& call);
  // Sends waiting calls while the connection has room for them.
  void PumpWaiting();
  bool CanSendNow() const;
  void SendOn(internal::ClientSession& session, uint32_t call_id, internal::PendingCall& call);
  // The call `call_id` if it is still waiting in the channel (not completed, not sent).
  internal::PendingCall* Unsent(uint32_t call_id) const;
  // True if some call still waits for a connection.
  bool AnyoneWaiting() const;
  // Dials now, or when the backoff allows (for wait_for_ready calls).
  void DialWhenAllowed();
  void StartDial();
  void ScheduleRetry();
  asio::awaitable<void> Dial(std::shared_ptr<Channel> self);
  asio::awaitable<absl::StatusOr<std::shared_ptr<internal::ClientSession>>> DialOnce();
  void OnDialFailed(const absl::Status& why);
  // Sets the result; the caller resumes through the scheduler.
  void Complete(internal::PendingCall& call, absl::StatusOr<internal::Reply> result);
  asio::awaitable<void> AwaitResult(internal::PendingCall& call);
  // Resumes the caller: at once (inline_resume, only where nothing touches the channel after)
  // or posted.
  void Resume(internal::PendingCall& call, bool inline_resume);
  // The deadline passed or the caller was cancelled: it resumes with no result.
  void GiveUp(internal::PendingCall& call);
  void WatchDeadline(Clock::time_point deadline);
  void ExpireDeadlines();
  // From ClientSession, on its executor.
  void OnResponse(internal::ClientSession& session, transport::Frame frame);
  void OnGoAway(internal::ClientSession& session);
  void OnStreamFrame(internal::ClientSession& session, transport::Frame& frame);
  void OnQueueDrained(internal::ClientSession& session);
  // A streaming call ended: a call we gave up on is cancelled on the wire, and it leaves the
  // channel's tables soon (posted: never inside a loop over them) or when its handle goes.
  void ReleaseStream(internal::ClientStream& stream);
  // ReleaseStream soon, if the stream is still in the tables and still alive then.
  void PostRelease(internal::ClientStream& stream);
  void StreamEnded(internal::PendingCall& call, absl::Status status, bool cancel_on_wire);
  // After a call left pending_: closes a drained connection, stops dialling for nobody, lets
  // waiting calls go.
  void AfterCall(internal::ClientSession* session);
  void OnSessionClosed(internal::ClientSession& session, const absl::Status& why);

  // First, so it is destroyed last: everything below may hold objects bound to it.
  std::shared_ptr<internal::OwnedReactor> reactor_;
  asio::any_io_executor executor_;
  Endpoint endpoint_;
  std::string uri_;
  std::unique_ptr<transport::Transport> transport_;
  ChannelOptions options_;
  bool confidential_ = false;                         // the transport's TransportInfo::confidential
  std::unique_ptr<internal::ClientMetrics> metrics_;  // null without metrics
  std::shared_ptr<internal::ClientSession> session_;  // ready for new calls, or null
  bool dialing_ = false;
  bool closed_ = false;
  uint32_t next_call_id_ = 0;
  uint64_t connect_attempts_ = 0;
  absl::flat_hash_map<uint32_t, internal::PendingCall*> pending_;
  // Streaming calls in flight (their PendingCall is in pending_ too). Not owned: the handle owns
  // its stream, whose destructor releases it here (so no cycle keeps a channel alive).
  absl::flat_hash_map<uint32_t, internal::ClientStream*> streams_;
  // Calls not yet sent, in order: waiting for a connection or for room on it. Ids of calls that
  // gave up are skipped when met (and compacted away when they pile up).
  std::deque<uint32_t> waiting_;
  // Backoff: no new attempt before retry_at_ (after a failure); the next wait; why it failed.
  Clock::time_point retry_at_ = Clock::time_point::min();
  Clock::duration next_backoff_;
  absl::Status last_failure_;
  asio::steady_timer retry_timer_;   // redials at retry_at_ for wait_for_ready calls
  asio::steady_timer abandon_dial_;  // cancelled to abandon the attempt in progress
  // Every call's deadline, (when, call id); the timer is armed for the earliest.
  absl::btree_set<std::pair<Clock::time_point, uint32_t>> deadlines_;
  asio::steady_timer deadline_timer_;
  Clock::time_point armed_deadline_ = Clock::time_point::max();
};

}  // namespace courier
