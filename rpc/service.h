// Services: named methods a Server dispatches to. Generated service bases derive from
// ServiceBase; GenericService serves byte-level (or hand-typed) methods without generated code.
// RPC layer.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/awaitable.hpp"
#include "google/protobuf/message_lite.h"
#include "rpc/call.h"
#include "rpc/stream.h"

namespace courier {

// A method's body on the wire level: request bytes in, response bytes (or a status) out. Runs as
// its own coroutine on the connection's executor; `ctx` and the bytes `request` views stay valid
// until it completes.
using RawHandler = std::function<asio::awaitable<absl::StatusOr<std::string>>(
    ServerContext& ctx, std::string_view request)>;

// A streaming method's body on the wire level: reads and writes message bytes on `stream`, and
// returns the status the call ends with (its trailer; the metadata is ctx's response metadata).
using StreamHandler =
    std::function<asio::awaitable<absl::Status>(ServerContext& ctx, internal::StreamCore& stream)>;

struct MethodEntry {
  std::string full_name;  // "/package.Service/Method"
  RawHandler handler;     // unary methods
  // Internal: the handler's OK result is already the whole response payload (header included),
  // serialized in place by typed methods to save a copy of the message.
  bool returns_payload = false;
  StreamHandler stream_handler;  // streaming methods (then `handler` is empty)
};

namespace internal {
// A response payload: the OK ResponseHeader carrying `metadata`, then `message` serialized in
// place (rpc/internal/wire.cc).
std::string EncodeOkResponse(const Metadata& metadata,
                             const google::protobuf::MessageLite& message);
}  // namespace internal

class ServiceBase {
 public:
  virtual ~ServiceBase() = default;
  ServiceBase(const ServiceBase&) = delete;
  ServiceBase& operator=(const ServiceBase&) = delete;

  const std::vector<MethodEntry>& methods() const { return methods_; }

 protected:
  ServiceBase() = default;

  void AddRawMethod(std::string full_name, RawHandler handler) {
    methods_.push_back({std::move(full_name), std::move(handler), false, nullptr});
  }

  // A protobuf-typed method: the request is parsed (kInvalidArgument if it does not parse) and
  // the response serialized around `handler`.
  template <typename Request, typename Response>
  void AddMethod(
      std::string full_name,
      std::function<asio::awaitable<absl::StatusOr<Response>>(ServerContext&, Request)> handler) {
    RawHandler raw = [handler = std::move(handler)](
                         ServerContext& ctx,
                         std::string_view bytes) -> asio::awaitable<absl::StatusOr<std::string>> {
      Request request;
      if (!request.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()))) {
        co_return absl::InvalidArgumentError(
            absl::StrCat(ctx.method(), ": request does not parse as ", request.GetTypeName()));
      }
      absl::StatusOr<Response> response = co_await handler(ctx, std::move(request));
      if (!response.ok()) co_return response.status();
      if (!response->IsInitialized()) {  // proto2: serializing would throw
        co_return absl::InternalError(
            absl::StrCat(ctx.method(), ": the handler's ", response->GetTypeName(),
                         " is missing required fields: ", response->InitializationErrorString()));
      }
      co_return internal::EncodeOkResponse(ctx.response_metadata(), *response);
    };
    methods_.push_back({std::move(full_name), std::move(raw), true, nullptr});
  }

  // A streaming method on the wire level (any of the three kinds: the wire does not tell them
  // apart).
  void AddRawStreamingMethod(std::string full_name, StreamHandler handler) {
    methods_.push_back({std::move(full_name), nullptr, false, std::move(handler)});
  }

  // rpc Method(Request) returns (stream Response): the client sends exactly one request.
  template <typename Request, typename Response>
  void AddServerStreamingMethod(
      std::string full_name,
      std::function<asio::awaitable<absl::Status>(ServerContext&, Request, ServerWriter<Response>&)>
          handler) {
    AddRawStreamingMethod(
        std::move(full_name),
        [handler = std::move(handler)](
            ServerContext& ctx, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          ServerReader<Request> reader(stream);
          std::optional<Request> request = co_await reader.Read();
          if (!request) {
            if (stream.ended()) co_return stream.end_status();
            co_return absl::InvalidArgumentError(
                absl::StrCat(ctx.method(), ": the client sent no request message"));
          }
          ServerWriter<Response> writer(stream);
          co_return co_await handler(ctx, *std::move(request), writer);
        });
  }

  // rpc Method(stream Request) returns (Response).
  template <typename Request, typename Response>
  void AddClientStreamingMethod(
      std::string full_name,
      std::function<asio::awaitable<absl::StatusOr<Response>>(ServerContext&,
                                                              ServerReader<Request>&)>
          handler) {
    AddRawStreamingMethod(
        std::move(full_name),
        [handler = std::move(handler)](
            ServerContext& ctx, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          ServerReader<Request> reader(stream);
          absl::StatusOr<Response> response = co_await handler(ctx, reader);
          if (!response.ok()) co_return response.status();
          ServerWriter<Response> writer(stream);
          co_return co_await writer.Write(*response);
        });
  }

  // rpc Method(stream Request) returns (stream Response).
  template <typename Request, typename Response>
  void AddBidiStreamingMethod(
      std::string full_name,
      std::function<asio::awaitable<absl::Status>(ServerContext&,
                                                  ServerReaderWriter<Request, Response>&)>
          handler) {
    AddRawStreamingMethod(
        std::move(full_name),
        [handler = std::move(handler)](
            ServerContext& ctx, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          ServerReaderWriter<Request, Response> both(stream);
          co_return co_await handler(ctx, both);
        });
  }

 private:
  std::vector<MethodEntry> methods_;
};

// Methods registered one by one, without generated code.
class GenericService final : public ServiceBase {
 public:
  GenericService() = default;
  using ServiceBase::AddBidiStreamingMethod;
  using ServiceBase::AddClientStreamingMethod;
  using ServiceBase::AddMethod;
  using ServiceBase::AddRawMethod;
  using ServiceBase::AddRawStreamingMethod;
  using ServiceBase::AddServerStreamingMethod;
};

}  // namespace courier
