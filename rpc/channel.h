// Channel: the client's handle on one endpoint. Many concurrent calls share its one connection;
// it dials on first use and redials after a failure. RPC layer, public.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/steady_timer.hpp"
#include "rpc/call.h"
#include "transport/endpoint.h"
#include "transport/frame.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace courier {

namespace internal {
class ClientSession;
struct OwnedReactor;
struct PendingCall;
}  // namespace internal

struct ChannelOptions {
  // Largest message sent or received; a bigger request fails with kResourceExhausted before it
  // is sent, a bigger response makes the server answer kResourceExhausted.
  size_t max_message_size = kDefaultMaxMessageSize;
  // Connecting (including the protocol hello) gives up after this; calls also give up at their
  // own deadline.
  Clock::duration connect_timeout = std::chrono::seconds(20);
  // Ping after this much silence on the connection; close it (calls in flight fail
  // kUnavailable) if the peer does not answer within keepalive_timeout. 0 disables.
  Clock::duration keepalive_interval = std::chrono::seconds(30);
  Clock::duration keepalive_timeout = std::chrono::seconds(10);
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
  // use the stubs' blocking calls, or AsyncCall with a callback or asio::use_future.
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
  // in-place parsing. `method` must stay valid until done, and the awaiting coroutine must have
  // Asio's throw_if_cancelled turned off (internal::WithoutCancellationThrow).
  asio::awaitable<absl::StatusOr<internal::Reply>> CallEncoded(std::string_view method,
                                                               std::string payload,
                                                               size_t message_size,
                                                               Clock::duration timeout,
                                                               Metadata* response_metadata);

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
  // Calls waiting for a response (for tests and introspection).
  size_t calls_in_flight() const { return pending_.size(); }

 private:
  friend class internal::ClientSession;

  asio::awaitable<absl::StatusOr<std::string>> CallBytes(std::string method, std::string request,
                                                         CallOptions options);
  uint32_t NextCallId();
  void SendOrQueue(uint32_t call_id, internal::PendingCall& call);
  void StartDial();
  asio::awaitable<void> Dial(std::shared_ptr<Channel> self);
  asio::awaitable<absl::StatusOr<std::shared_ptr<internal::ClientSession>>> DialOnce();
  void Complete(internal::PendingCall& call, absl::StatusOr<internal::Reply> result);
  // From ClientSession, on its executor.
  void OnResponse(internal::ClientSession& session, transport::Frame frame);
  void OnGoAway(internal::ClientSession& session);
  void OnSessionClosed(internal::ClientSession& session, const absl::Status& why);

  // First, so it is destroyed last: everything below may hold objects bound to it.
  std::shared_ptr<internal::OwnedReactor> reactor_;
  asio::any_io_executor executor_;
  Endpoint endpoint_;
  std::string uri_;
  std::unique_ptr<transport::Transport> transport_;
  ChannelOptions options_;
  std::shared_ptr<internal::ClientSession> session_;  // ready for new calls, or null
  bool dialing_ = false;
  bool closed_ = false;
  uint32_t next_call_id_ = 0;
  absl::flat_hash_map<uint32_t, internal::PendingCall*> pending_;
  std::deque<uint32_t> waiting_for_connection_;
};

}  // namespace courier
