// What generated code calls: typed unary calls in the three client styles (coroutine, any Asio
// completion token, blocking) and typed method registration for service bases. Only generated
// *.courier.{h,cc} include this; the logic lives here, tested once. RPC layer.
#pragma once

#include <future>
#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/awaitable.hpp"
#include "asio/use_future.hpp"
#include "rpc/call.h"
#include "rpc/channel.h"
#include "rpc/service.h"

namespace courier::internal {

// One unary call with protobuf messages: serialize, Channel::Call, parse. A response that does
// not parse is kInternal, as in gRPC.
template <typename Response, typename Request>
asio::awaitable<absl::StatusOr<Response>> UnaryCall(std::shared_ptr<Channel> channel,
                                                    const char* method, Request request,
                                                    CallOptions options) {
  // proto2 required fields: Debian's protobuf throws on serializing a message that lacks them.
  if (!request.IsInitialized()) {
    co_return absl::InvalidArgumentError(absl::StrCat(method, ": request ", request.GetTypeName(),
                                                      " is missing required fields: ",
                                                      request.InitializationErrorString()));
  }
  std::string bytes;
  if (!request.SerializeToString(&bytes)) {
    co_return absl::InternalError(
        absl::StrCat(method, ": request ", request.GetTypeName(), " does not serialize"));
  }
  absl::StatusOr<std::string> reply =
      co_await channel->Call(method, std::move(bytes), std::move(options));
  if (!reply.ok()) co_return reply.status();
  Response response;
  if (!response.ParseFromString(*reply)) {
    co_return absl::InternalError(
        absl::StrCat(method, ": response does not parse as ", response.GetTypeName()));
  }
  co_return response;
}

// UnaryCall for any completion token (callback, asio::use_future, use_awaitable...).
template <typename Response, typename Request, typename Token>
auto AsyncUnaryCall(std::shared_ptr<Channel> channel, const char* method, Request request,
                    CallOptions options, Token&& token) {
  asio::any_io_executor executor = channel->executor();
  return SpawnWithToken(
      executor,
      UnaryCall<Response>(std::move(channel), method, std::move(request), std::move(options)),
      std::forward<Token>(token));
}

// UnaryCall that blocks the calling thread until the call completes. The channel's executor
// must be run by another thread (Channel::Create without an executor starts one); called on
// the channel's own reactor thread it would wait forever, so that is kFailedPrecondition.
template <typename Response, typename Request>
absl::StatusOr<Response> BlockingUnaryCall(std::shared_ptr<Channel> channel, const char* method,
                                           Request request, CallOptions options) {
  if (channel->on_own_reactor_thread()) {
    return absl::FailedPreconditionError(absl::StrCat(
        method, ": a blocking call on the channel's own reactor thread would never complete"));
  }
  std::future<absl::StatusOr<Response>> result = AsyncUnaryCall<Response>(
      std::move(channel), method, std::move(request), std::move(options), asio::use_future);
  return result.get();
}

// What a generated handler answers until it is overridden.
template <typename Response>
asio::awaitable<absl::StatusOr<Response>> Unimplemented(const char* method) {
  co_return absl::UnimplementedError(absl::StrCat(method, " is not implemented by this server"));
}

}  // namespace courier::internal
