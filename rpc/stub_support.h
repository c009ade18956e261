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
#include "asio/post.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_future.hpp"
#include "rpc/call.h"
#include "rpc/channel.h"
#include "rpc/internal/wire.h"
#include "rpc/service.h"
#include "rpc/stream.h"
#include "transport/frame.h"

namespace courier::internal {

// The asynchronous half of UnaryCall: send the encoded request, parse the response in place. A
// response that does not parse is kInternal, as in gRPC.
template <typename Response>
asio::awaitable<absl::StatusOr<Response>> FinishUnaryCall(std::shared_ptr<Channel> channel,
                                                          const char* method, std::string payload,
                                                          size_t message_size,
                                                          CallOptions options) {
  // Our awaits report cancellation as a Status; the caller's setting is restored after.
  const bool throw_if_cancelled = co_await asio::this_coro::throw_if_cancelled();
  co_await asio::this_coro::throw_if_cancelled(false);
  absl::StatusOr<Reply> reply =
      co_await channel->CallEncoded(method, std::move(payload), message_size, options.timeout,
                                    options.response_metadata, options.wait_for_ready);
  co_await asio::this_coro::throw_if_cancelled(throw_if_cancelled);
  if (!reply.ok()) co_return reply.status();
  Response response;
  const std::string_view bytes = reply->message();
  const bool parsed = response.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  transport::ReturnBuffer(std::move(reply->payload));
  if (!parsed) {
    co_return absl::InternalError(
        absl::StrCat(method, ": response does not parse as ", response.GetTypeName()));
  }
  co_return response;
}

template <typename Response>
asio::awaitable<absl::StatusOr<Response>> FailedCall(absl::Status status) {
  co_return status;
}

// One unary call with protobuf messages. Not a coroutine: `request` is serialized, straight
// into the request frame, before this returns, so a reference is safe and nothing is copied.
// `method` must outlive the call (generated code passes its constants).
template <typename Response, typename Request>
asio::awaitable<absl::StatusOr<Response>> UnaryCall(std::shared_ptr<Channel> channel,
                                                    const char* method, const Request& request,
                                                    CallOptions options) {
  // proto2 required fields: Debian's protobuf throws on serializing a message that lacks them.
  if (!request.IsInitialized()) {
    return FailedCall<Response>(absl::InvalidArgumentError(
        absl::StrCat(method, ": request ", request.GetTypeName(),
                     " is missing required fields: ", request.InitializationErrorString())));
  }
  if (absl::Status s = channel->AddCallCredentials(method, options.metadata); !s.ok()) {
    return FailedCall<Response>(absl::Status(s.code(), absl::StrCat(method, ": ", s.message())));
  }
  if (absl::Status s = ValidateMetadata(options.metadata); !s.ok()) {
    return FailedCall<Response>(absl::Status(s.code(), absl::StrCat(method, ": ", s.message())));
  }
  const size_t size = request.ByteSizeLong();
  std::string payload = EncodeRequest(method, options, size, [&](char* at) {
    request.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(at));
  });
  return FinishUnaryCall<Response>(std::move(channel), method, std::move(payload), size,
                                   std::move(options));
}

// UnaryCall for any completion token (callback, asio::use_future, use_awaitable...).
template <typename Response, typename Request, typename Token>
auto AsyncUnaryCall(std::shared_ptr<Channel> channel, const char* method, const Request& request,
                    CallOptions options, Token&& token) {
  asio::any_io_executor executor = channel->executor();
  return SpawnWithToken(
      executor, UnaryCall<Response>(std::move(channel), method, request, std::move(options)),
      std::forward<Token>(token));
}

// UnaryCall that blocks the calling thread until the call completes. The channel's executor
// must be run by another thread (Channel::Create without an executor starts one); called on
// the channel's own reactor thread it would wait forever, so that is kFailedPrecondition.
template <typename Response, typename Request>
absl::StatusOr<Response> BlockingUnaryCall(std::shared_ptr<Channel> channel, const char* method,
                                           const Request& request, CallOptions options) {
  if (channel->on_own_reactor_thread()) {
    return absl::FailedPreconditionError(absl::StrCat(
        method, ": a blocking call on the channel's own reactor thread would never complete"));
  }
  std::future<absl::StatusOr<Response>> result = AsyncUnaryCall<Response>(
      std::move(channel), method, request, std::move(options), asio::use_future);
  return result.get();
}

// What a generated handler answers until it is overridden.
template <typename Response>
asio::awaitable<absl::StatusOr<Response>> Unimplemented(const char* method) {
  co_return absl::UnimplementedError(absl::StrCat(method, " is not implemented by this server"));
}

template <typename Response>
asio::awaitable<absl::Status> UnimplementedStreamImpl(const char* method) {
  co_return absl::UnimplementedError(absl::StrCat(method, " is not implemented by this server"));
}
// What a generated streaming handler answers until it is overridden.
inline asio::awaitable<absl::Status> UnimplementedStream(const char* method) {
  return UnimplementedStreamImpl<void>(method);
}

// A client-streaming or bidirectional call's handle. Use on the channel's executor.
template <typename Handle>
Handle OpenStreamCall(const std::shared_ptr<Channel>& channel, const char* method,
                      CallOptions options) {
  return Handle(channel->OpenStream(method, std::move(options)));
}

// A server-streaming call: its one request is queued (serialized now) and the client's side
// half-closed at once.
template <typename Request>
std::shared_ptr<ClientStream> OpenWithRequest(const std::shared_ptr<Channel>& channel,
                                              const char* method, const Request& request,
                                              CallOptions options) {
  if (!request.IsInitialized()) {
    return ClientStream::Failed(
        channel->executor(),
        absl::InvalidArgumentError(absl::StrCat(method, ": request ", request.GetTypeName(),
                                                " is missing required fields: ",
                                                request.InitializationErrorString())));
  }
  std::shared_ptr<ClientStream> stream = channel->OpenStream(method, std::move(options));
  (void)stream->Enqueue(SerializeToBuffer(request));  // on failure the stream has the status
  (void)stream->WritesDone();
  return stream;
}

template <typename Response, typename Request>
ClientReader<Response> OpenServerStream(const std::shared_ptr<Channel>& channel,
                                        const char* method, const Request& request,
                                        CallOptions options) {
  return ClientReader<Response>(OpenWithRequest(channel, method, request, std::move(options)));
}

// Runs `open` on the channel's executor and waits for the stream it returns; on the channel's
// own reactor thread that would wait forever, so the call fails kFailedPrecondition instead.
template <typename Open>
std::shared_ptr<ClientStream> OpenBlocking(const std::shared_ptr<Channel>& channel,
                                           const char* method, Open open) {
  if (channel->on_own_reactor_thread()) {
    return ClientStream::Failed(
        channel->executor(),
        absl::FailedPreconditionError(absl::StrCat(
            method, ": a blocking call on the channel's own reactor thread would never complete")));
  }
  std::promise<std::shared_ptr<ClientStream>> opened;
  std::future<std::shared_ptr<ClientStream>> result = opened.get_future();
  asio::post(channel->executor(), [&] { opened.set_value(open()); });
  return result.get();
}

template <typename Handle>
Handle BlockingOpenStreamCall(const std::shared_ptr<Channel>& channel, const char* method,
                              CallOptions options) {
  return Handle(OpenBlocking(channel, method, [&] {
    return channel->OpenStream(method, std::move(options));
  }));
}

template <typename Response, typename Request>
BlockingClientReader<Response> BlockingOpenServerStream(const std::shared_ptr<Channel>& channel,
                                                        const char* method,
                                                        const Request& request,
                                                        CallOptions options) {
  return BlockingClientReader<Response>(OpenBlocking(channel, method, [&] {
    return OpenWithRequest(channel, method, request, std::move(options));
  }));
}

}  // namespace courier::internal
