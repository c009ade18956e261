// Streaming calls, typed: what a streaming handler reads from and writes to on the server, and
// the handles a client stub returns for its three kinds of streaming method (server, client and
// bidirectional streaming), in coroutine, completion-token and blocking styles. One pattern for
// all: Read() until it returns std::nullopt, Write() each message, WritesDone() after the last,
// Finish() for the status. Flow control is per stream: a Write waits while the peer is a window
// (ChannelOptions / ServerOptions::stream_window) behind. RPC layer, public.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/any_io_executor.hpp"
#include "asio/async_result.hpp"
#include "asio/awaitable.hpp"
#include "asio/co_spawn.hpp"
#include "asio/post.hpp"
#include "asio/use_future.hpp"
#include "rpc/call.h"
#include "rpc/internal/stream.h"
#include "transport/frame.h"

namespace courier {
namespace internal {

template <typename Message>
std::string SerializeToBuffer(const Message& message) {
  const size_t size = message.ByteSizeLong();
  std::string bytes = transport::TakeBuffer(size);
  message.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(bytes.data()));
  return bytes;
}

// What a completion handler receives when the operation threw (courier's do not).
template <typename T>
T FailureValue() {
  if constexpr (std::is_same_v<T, absl::Status>) {
    return absl::InternalError("courier: unexpected exception");
  } else if constexpr (std::is_constructible_v<T, absl::Status>) {
    return T(absl::InternalError("courier: unexpected exception"));
  } else {
    return T();
  }
}

// A courier coroutine for any Asio completion token; the handler receives T.
template <typename T, typename Token>
auto SpawnOp(asio::any_io_executor ex, asio::awaitable<T> op, Token&& token) {
  return asio::async_initiate<Token, void(T)>(
      [ex](auto handler, asio::awaitable<T> op) mutable {
        asio::co_spawn(ex, std::move(op),
                       [h = std::move(handler)](std::exception_ptr e, T result) mutable {
                         if (e) result = FailureValue<T>();
                         std::move(h)(std::move(result));
                       });
      },
      token, std::move(op));
}

// Runs `op` on `ex` and blocks the calling thread (which must not be the one running `ex`).
template <typename T>
T RunBlocking(asio::any_io_executor ex, asio::awaitable<T> op) {
  return asio::co_spawn(ex, std::move(op), asio::use_future).get();
}

// The next message of a client-side stream, parsed; a message that does not parse ends the call
// with kInternal (as gRPC).
template <typename Response>
asio::awaitable<std::optional<Response>> ReadMessage(std::shared_ptr<ClientStream> stream) {
  std::optional<std::string> bytes = co_await stream->Read();
  if (!bytes) co_return std::nullopt;
  std::optional<Response> response(std::in_place);
  const bool parsed = response->ParseFromArray(bytes->data(), static_cast<int>(bytes->size()));
  transport::ReturnBuffer(std::move(*bytes));
  if (!parsed) {
    stream->Abort(absl::InternalError(
        absl::StrCat("stream message does not parse as ", response->GetTypeName())));
    co_return std::nullopt;
  }
  co_return response;
}

template <typename Request>
asio::awaitable<absl::Status> WriteMessage(std::shared_ptr<ClientStream> stream,
                                           std::string bytes) {
  co_return co_await stream->Write(std::move(bytes));
}

inline asio::awaitable<absl::Status> FinishStream(std::shared_ptr<ClientStream> stream) {
  co_return co_await stream->Finish();
}

// A client-streaming call's end: its one response message, then the status.
template <typename Response>
asio::awaitable<absl::StatusOr<Response>> FinishWithResponse(std::shared_ptr<ClientStream> stream) {
  (void)stream->WritesDone();
  std::optional<Response> response = co_await ReadMessage<Response>(stream);
  absl::Status status = co_await stream->Finish();
  if (!status.ok()) co_return status;
  if (!response) co_return absl::InternalError("the server sent no response message");
  co_return *std::move(response);
}

// The request type of a handle that writes none (server streaming).
struct NoRequest {};

// The operations every client handle has; the public handles below choose which they expose.
template <typename Request, typename Response>
class ClientCallHandle {
 public:
  explicit ClientCallHandle(std::shared_ptr<ClientStream> stream) : stream_(std::move(stream)) {}
  ClientCallHandle(ClientCallHandle&&) noexcept = default;
  ClientCallHandle& operator=(ClientCallHandle&& other) noexcept {
    if (this != &other) {
      CancelIfOpen();
      stream_ = std::move(other.stream_);
    }
    return *this;
  }
  // Dropping a handle whose call is still open cancels the call.
  ~ClientCallHandle() { CancelIfOpen(); }

  // Ends the call with kCancelled; the server's handler is cancelled.
  void Cancel() {
    if (stream_) stream_->Cancel();
  }
  // The server's trailing metadata, once Finish returned.
  const Metadata& trailing_metadata() const { return stream_->trailing_metadata(); }

 protected:
  void CancelIfOpen() {
    if (stream_ && !stream_->ended()) stream_->Cancel();
  }
  asio::awaitable<std::optional<Response>> DoRead() {
    return WithoutCancellationThrow(ReadMessage<Response>(stream_));
  }
  asio::awaitable<absl::Status> DoWrite(const Request& request) {
    if (!request.IsInitialized()) {
      return WithoutCancellationThrow(FailedStatus(absl::InvalidArgumentError(absl::StrCat(
          "stream message ", request.GetTypeName(),
          " is missing required fields: ", request.InitializationErrorString()))));
    }
    return WithoutCancellationThrow(WriteMessage<Request>(stream_, SerializeToBuffer(request)));
  }
  asio::awaitable<absl::Status> DoFinish() {
    return WithoutCancellationThrow(FinishStream(stream_));
  }
  static asio::awaitable<absl::Status> FailedStatus(absl::Status status) { co_return status; }

  std::shared_ptr<ClientStream> stream_;
};

}  // namespace internal

// --- Client handles (generated stubs return them) ---

// A server-streaming call: read every message, then Finish. Coroutine style on the channel's
// executor; Async* take any Asio completion token.
template <typename Response>
class ClientReader : private internal::ClientCallHandle<internal::NoRequest, Response> {
  using Base = internal::ClientCallHandle<internal::NoRequest, Response>;

 public:
  using Base::Base;
  using Base::Cancel;
  using Base::trailing_metadata;
  // The next message; std::nullopt after the last one or when the call failed (Finish says).
  asio::awaitable<std::optional<Response>> Read() { return this->DoRead(); }
  // The call's status: OK, the server's error, kDeadlineExceeded, kCancelled, kUnavailable...
  asio::awaitable<absl::Status> Finish() { return this->DoFinish(); }
  template <typename Token>
  auto AsyncRead(Token&& token) {
    return internal::SpawnOp(this->stream_->executor(), internal::ReadMessage<Response>(this->stream_),
                             std::forward<Token>(token));
  }
  template <typename Token>
  auto AsyncFinish(Token&& token) {
    return internal::SpawnOp(this->stream_->executor(), internal::FinishStream(this->stream_),
                             std::forward<Token>(token));
  }
};

// A client-streaming call: Write each request, then Finish for the one response.
template <typename Request, typename Response>
class ClientWriter : private internal::ClientCallHandle<Request, Response> {
  using Base = internal::ClientCallHandle<Request, Response>;

 public:
  using Base::Base;
  using Base::Cancel;
  using Base::trailing_metadata;
  // Waits while the server is a window behind; the call's status if it ended.
  asio::awaitable<absl::Status> Write(const Request& request) { return this->DoWrite(request); }
  // Tells the server the last request was sent.
  absl::Status WritesDone() { return this->stream_->WritesDone(); }
  // Half-closes (if not yet), then returns the response or the call's status.
  asio::awaitable<absl::StatusOr<Response>> Finish() {
    return internal::WithoutCancellationThrow(
        internal::FinishWithResponse<Response>(this->stream_));
  }
  template <typename Token>
  auto AsyncWrite(const Request& request, Token&& token) {
    return internal::SpawnOp(
        this->stream_->executor(),
        internal::WriteMessage<Request>(this->stream_, internal::SerializeToBuffer(request)),
        std::forward<Token>(token));
  }
  template <typename Token>
  auto AsyncFinish(Token&& token) {
    return internal::SpawnOp(this->stream_->executor(),
                             internal::FinishWithResponse<Response>(this->stream_),
                             std::forward<Token>(token));
  }
};

// A bidirectional-streaming call: reads and writes in any order (one Read and one Write may
// wait at once), WritesDone after the last write, Finish for the status.
template <typename Request, typename Response>
class ClientReaderWriter : private internal::ClientCallHandle<Request, Response> {
  using Base = internal::ClientCallHandle<Request, Response>;

 public:
  using Base::Base;
  using Base::Cancel;
  using Base::trailing_metadata;
  asio::awaitable<std::optional<Response>> Read() { return this->DoRead(); }
  asio::awaitable<absl::Status> Write(const Request& request) { return this->DoWrite(request); }
  absl::Status WritesDone() { return this->stream_->WritesDone(); }
  asio::awaitable<absl::Status> Finish() { return this->DoFinish(); }
  template <typename Token>
  auto AsyncRead(Token&& token) {
    return internal::SpawnOp(this->stream_->executor(), internal::ReadMessage<Response>(this->stream_),
                             std::forward<Token>(token));
  }
  template <typename Token>
  auto AsyncWrite(const Request& request, Token&& token) {
    return internal::SpawnOp(
        this->stream_->executor(),
        internal::WriteMessage<Request>(this->stream_, internal::SerializeToBuffer(request)),
        std::forward<Token>(token));
  }
  template <typename Token>
  auto AsyncFinish(Token&& token) {
    return internal::SpawnOp(this->stream_->executor(), internal::FinishStream(this->stream_),
                             std::forward<Token>(token));
  }
};

namespace internal {

// The blocking handles' common part: each operation runs on the channel's executor while the
// calling thread waits. A call that failed to open (say, on the channel's own reactor thread)
// answers at once, without the executor. (Not any call that has ended: one that ended already,
// with its messages still unread, is read on the executor like any other.)
class BlockingHandleBase {
 public:
  explicit BlockingHandleBase(std::shared_ptr<ClientStream> stream) : stream_(std::move(stream)) {}
  BlockingHandleBase(BlockingHandleBase&&) noexcept = default;
  BlockingHandleBase& operator=(BlockingHandleBase&&) noexcept = delete;
  // The stream is released on the channel's executor, never on the caller's thread.
  ~BlockingHandleBase() {
    if (stream_ && !settled()) {
      asio::any_io_executor executor = stream_->executor();
      asio::post(executor, [stream = std::move(stream_)] {
        if (!stream->ended()) stream->Cancel();
      });
    }
  }
  void Cancel() {
    if (!settled()) RunBlocking(stream_->executor(), CancelOp(stream_));
  }
  const Metadata& trailing_metadata() const { return stream_->trailing_metadata(); }

 protected:
  static asio::awaitable<bool> CancelOp(std::shared_ptr<ClientStream> stream) {
    stream->Cancel();
    co_return true;
  }
  static asio::awaitable<absl::Status> WritesDoneOp(std::shared_ptr<ClientStream> stream) {
    co_return stream->WritesDone();
  }
  template <typename T>
  T Run(asio::awaitable<T> op) {
    return RunBlocking(stream_->executor(), std::move(op));
  }
  absl::Status FailedStatus() const { return stream_->end_status(); }

  // Failed before it started: nothing runs on the executor. (Not "ended": a stream opened on the
  // reactor thread may have ended, its messages still unread, before this handle exists.)
  bool settled() const { return stream_->failed(); }

  std::shared_ptr<ClientStream> stream_;
};

}  // namespace internal

// Blocking handles, for a channel whose executor runs on another thread (Channel::Create(uri)).
template <typename Response>
class BlockingClientReader : private internal::BlockingHandleBase {
 public:
  using BlockingHandleBase::BlockingHandleBase;
  using BlockingHandleBase::Cancel;
  using BlockingHandleBase::trailing_metadata;
  std::optional<Response> Read() {
    if (settled()) return std::nullopt;
    return Run(internal::ReadMessage<Response>(stream_));
  }
  absl::Status Finish() {
    if (settled()) return FailedStatus();
    return Run(internal::FinishStream(stream_));
  }
};

template <typename Request, typename Response>
class BlockingClientWriter : private internal::BlockingHandleBase {
 public:
  using BlockingHandleBase::BlockingHandleBase;
  using BlockingHandleBase::Cancel;
  using BlockingHandleBase::trailing_metadata;
  absl::Status Write(const Request& request) {
    if (settled()) return FailedStatus();
    return Run(internal::WriteMessage<Request>(stream_, internal::SerializeToBuffer(request)));
  }
  absl::Status WritesDone() {
    if (settled()) return FailedStatus();
    return Run(WritesDoneOp(stream_));
  }
  absl::StatusOr<Response> Finish() {
    if (settled()) return FailedStatus();
    return Run(internal::FinishWithResponse<Response>(stream_));
  }
};

template <typename Request, typename Response>
class BlockingClientReaderWriter : private internal::BlockingHandleBase {
 public:
  using BlockingHandleBase::BlockingHandleBase;
  using BlockingHandleBase::Cancel;
  using BlockingHandleBase::trailing_metadata;
  std::optional<Response> Read() {
    if (settled()) return std::nullopt;
    return Run(internal::ReadMessage<Response>(stream_));
  }
  absl::Status Write(const Request& request) {
    if (settled()) return FailedStatus();
    return Run(internal::WriteMessage<Request>(stream_, internal::SerializeToBuffer(request)));
  }
  absl::Status WritesDone() {
    if (settled()) return FailedStatus();
    return Run(WritesDoneOp(stream_));
  }
  absl::Status Finish() {
    if (settled()) return FailedStatus();
    return Run(internal::FinishStream(stream_));
  }
};

// --- Server side (what streaming handlers get) ---

// The client's messages. Use on the handler's executor, one Read at a time.
template <typename Request>
class ServerReader {
 public:
  explicit ServerReader(internal::StreamCore& stream) : stream_(&stream) {}
  // The next request; std::nullopt after the client's last one (it half-closed) or when the call
  // ended (ServerContext::cancelled()). One that does not parse ends the call kInvalidArgument.
  asio::awaitable<std::optional<Request>> Read() { return ReadFrom(*stream_); }

 private:
  static asio::awaitable<std::optional<Request>> ReadFrom(internal::StreamCore& stream) {
    std::optional<std::string> bytes = co_await stream.Read();
    if (!bytes) co_return std::nullopt;
    std::optional<Request> request(std::in_place);
    const bool parsed = request->ParseFromArray(bytes->data(), static_cast<int>(bytes->size()));
    transport::ReturnBuffer(std::move(*bytes));
    if (!parsed) {
      stream.End(absl::InvalidArgumentError(
                     absl::StrCat("stream message does not parse as ", request->GetTypeName())),
                 true);
      co_return std::nullopt;
    }
    co_return request;
  }
  internal::StreamCore* stream_;
};

// Messages to the client. One Write at a time.
template <typename Response>
class ServerWriter {
 public:
  explicit ServerWriter(internal::StreamCore& stream) : stream_(&stream) {}
  // Sends `response`, waiting while the client is a window behind (or the connection's queue is
  // over its bound). OK once handed to the connection; the call's status once it ended (the
  // client cancelled or went away, the deadline passed: stop writing then).
  asio::awaitable<absl::Status> Write(const Response& response) {
    if (!response.IsInitialized()) {
      return Failed(absl::InternalError(absl::StrCat(
          "the handler's ", response.GetTypeName(),
          " is missing required fields: ", response.InitializationErrorString())));
    }
    return stream_->Write(internal::SerializeToBuffer(response));
  }

 private:
  static asio::awaitable<absl::Status> Failed(absl::Status status) { co_return status; }
  internal::StreamCore* stream_;
};

template <typename Request, typename Response>
class ServerReaderWriter : public ServerReader<Request>, public ServerWriter<Response> {
 public:
  explicit ServerReaderWriter(internal::StreamCore& stream)
      : ServerReader<Request>(stream), ServerWriter<Response>(stream) {}
};

}  // namespace courier
