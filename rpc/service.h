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

namespace courier {

// A method's body on the wire level: request bytes in, response bytes (or a status) out. Runs as
// its own coroutine on the connection's executor; `ctx` and the bytes `request` views stay valid
// until it completes.
using RawHandler = std::function<asio::awaitable<absl::StatusOr<std::string>>(
    ServerContext& ctx, std::string_view request)>;

struct MethodEntry {
  std::string full_name;  // "/package.Service/Method"
  RawHandler handler;
  // Internal: the handler's OK result is already the whole response payload (header included),
  // serialized in place by typed methods to save a copy of the message.
  bool returns_payload = false;
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
    methods_.push_back({std::move(full_name), std::move(handler), false});
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
    methods_.push_back({std::move(full_name), std::move(raw), true});
  }

 private:
  std::vector<MethodEntry> methods_;
};

// Methods registered one by one, without generated code.
class GenericService final : public ServiceBase {
 public:
  GenericService() = default;
  using ServiceBase::AddMethod;
  using ServiceBase::AddRawMethod;
};

}  // namespace courier
