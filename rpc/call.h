// What a call carries besides its message: options on the client, the context a handler sees on
// the server, metadata, and the adapter from coroutines to any Asio completion token. RPC layer.
#pragma once

#include <algorithm>
#include <chrono>
#include <exception>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/async_result.hpp"
#include "asio/awaitable.hpp"
#include "asio/co_spawn.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"
#include "transport/transport.h"

namespace courier {

// Key/value pairs sent with a request or a response. Keys are lowercase ASCII.
using Metadata = std::vector<std::pair<std::string, std::string>>;

using Clock = std::chrono::steady_clock;

// The default deadline of a call, when CallOptions::timeout is not set.
inline constexpr std::chrono::seconds kDefaultCallTimeout{30};

// Largest message (request or response) a channel or server accepts by default.
inline constexpr size_t kDefaultMaxMessageSize = 64 * 1024 * 1024;

struct CallOptions {
  // The call's deadline, measured from when it starts; it travels to the server, which cancels
  // the handler when it passes. The call ends with kDeadlineExceeded.
  // Clock::duration::max() means no deadline.
  Clock::duration timeout = kDefaultCallTimeout;
  // Keys lowercase ASCII (a-z 0-9 - _ .), at most 64 entries and about 15 KiB in all; a call
  // over that fails locally (kInvalidArgument, kResourceExhausted).
  Metadata metadata;
  // If set, receives the metadata the server sent with its response; must stay valid until the
  // call completes.
  Metadata* response_metadata = nullptr;
  // While the channel cannot connect (backing off after a failed attempt), a call fails at once
  // with kUnavailable; with wait_for_ready it waits for a connection until its deadline.
  bool wait_for_ready = false;
};

// What a handler knows about its call. Valid until the handler's coroutine completes; use it
// only on the handler's executor.
class ServerContext {
 public:
  // `method` and `peer` are not copied: they must outlive the context (the server passes the
  // method's registered name and its connection's peer).
  ServerContext(const std::string& method, Clock::time_point deadline,
                const transport::PeerInfo& peer, Metadata metadata)
      : method_(&method), deadline_(deadline), peer_(&peer), metadata_(std::move(metadata)) {}

  // "/package.Service/Method".
  const std::string& method() const { return *method_; }
  // When the caller stops waiting; Clock::time_point::max() if it set no deadline.
  Clock::time_point deadline() const { return deadline_; }
  // Who called: address and, on UNIX sockets, the kernel-verified pid/uid/gid.
  const transport::PeerInfo& peer() const { return *peer_; }
  const Metadata& metadata() const { return metadata_; }
  // Sent back with the response.
  void AddResponseMetadata(std::string key, std::string value) {
    response_metadata_.emplace_back(std::move(key), std::move(value));
  }
  const Metadata& response_metadata() const { return response_metadata_; }

  // True once the caller gave up (cancel, deadline, lost connection) or the server is shutting
  // down. The handler's pending Asio operations are then cancelled too (it runs with a bound
  // cancellation slot), so a handler waiting on a timer or socket wakes with operation_aborted.
  bool cancelled() const { return cancelled_; }
  void MarkCancelled() { cancelled_ = true; }

 private:
  const std::string* method_;
  Clock::time_point deadline_;
  const transport::PeerInfo* peer_;
  Metadata metadata_;
  Metadata response_metadata_;
  bool cancelled_ = false;
};

namespace internal {

using transport::use_nothrow;

// The single adapter from a courier coroutine to callbacks, futures or any other Asio token.
// The operation runs on `ex`; the handler receives absl::StatusOr<T>.
template <typename T, typename Token>
auto SpawnWithToken(asio::any_io_executor ex, asio::awaitable<absl::StatusOr<T>> op,
                    Token&& token) {
  return asio::async_initiate<Token, void(absl::StatusOr<T>)>(
      [ex](auto handler, asio::awaitable<absl::StatusOr<T>> op) mutable {
        asio::co_spawn(ex, std::move(op),
                       [h = std::move(handler)](std::exception_ptr e, absl::StatusOr<T> r) mutable {
                         if (e) r = absl::InternalError("courier: unexpected exception");
                         std::move(h)(std::move(r));
                       });
      },
      token, std::move(op));
}

// A response frame's payload and where the message starts in it: the message is parsed in
// place, with no copy.
struct Reply {
  std::string payload;
  size_t offset = 0;
  std::string_view message() const {
    return std::string_view(payload).substr(std::min(offset, payload.size()));
  }
};

// Runs `op` with Asio's throw-if-cancelled turned off (so our awaits report cancellation as a
// Status instead of throwing), then restores the caller's setting: it belongs to the caller's
// whole coroutine chain, not to us.
template <typename T>
asio::awaitable<T> WithoutCancellationThrow(asio::awaitable<T> op) {
  const bool previous = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  T result = co_await std::move(op);
  co_await asio::this_coro::throw_if_cancelled(previous);
  co_return result;
}
inline asio::awaitable<void> WithoutCancellationThrow(asio::awaitable<void> op) {
  const bool previous = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await std::move(op);
  co_await asio::this_coro::throw_if_cancelled(previous);
}

}  // namespace internal
}  // namespace courier
