// NAME.courier.h: per service, the base class servers derive from and the client stub.
#include <string>

#include "codegen/generator.h"
#include "codegen/names.h"

// The templates below are the generated code, laid out as it should come out: clang-format
// would re-indent them as if they were code of this file.
// clang-format off

namespace courier::codegen {
namespace {

using google::protobuf::FileDescriptor;
using google::protobuf::ServiceDescriptor;
using google::protobuf::io::Printer;

void PrintServiceBase(Printer& printer, const ServiceDescriptor& service) {
  auto vars = ServiceVars(service);
  printer.Print(LeadingComment(service, "").c_str());
  printer.Print(vars, R"cc(// Servers derive from $ServiceClass$, override its methods and pass it to
// courier::Server::AddService. Each call runs as its own coroutine.
class $ServiceClass$ : public ::courier::ServiceBase {
 public:
)cc");
  printer.Indent();
  for (int i = 0; i < service.method_count(); ++i) {
    printer.Print(MethodVars(*service.method(i)),
                  "static constexpr char $Constant$[] = \"$FullName$\";\n");
  }
  printer.Print(vars, "\n$ServiceClass$();\n");
  for (int i = 0; i < service.method_count(); ++i) {
    const google::protobuf::MethodDescriptor& method = *service.method(i);
    printer.Print("\n");
    printer.Print(LeadingComment(method, "").c_str());
    printer.Print("// Default: completes with UNIMPLEMENTED.\n");
    switch (KindOf(method)) {
      case MethodKind::kUnary:
        printer.Print(MethodVars(method), R"cc(virtual ::asio::awaitable<::absl::StatusOr<$Response$>> $Method$(
    ::courier::ServerContext& ctx, $Request$ request);
)cc");
        break;
      case MethodKind::kServerStreaming:
        printer.Print(MethodVars(method), R"cc(// Write each response, then return the status the call ends with.
virtual ::asio::awaitable<::absl::Status> $Method$(
    ::courier::ServerContext& ctx, $Request$ request,
    ::courier::ServerWriter<$Response$>& writer);
)cc");
        break;
      case MethodKind::kClientStreaming:
        printer.Print(MethodVars(method), R"cc(// Read the requests until std::nullopt, then return the response.
virtual ::asio::awaitable<::absl::StatusOr<$Response$>> $Method$(
    ::courier::ServerContext& ctx, ::courier::ServerReader<$Request$>& reader);
)cc");
        break;
      case MethodKind::kBidiStreaming:
        printer.Print(MethodVars(method), R"cc(// Read and write in any order, then return the status the call ends with.
virtual ::asio::awaitable<::absl::Status> $Method$(
    ::courier::ServerContext& ctx,
    ::courier::ServerReaderWriter<$Request$, $Response$>& stream);
)cc");
        break;
    }
  }
  printer.Outdent();
  printer.Print("};\n\n");
}

// Stub methods take the request by reference: it is serialized before they return.
void PrintStreamingStubMethod(Printer& printer, const google::protobuf::MethodDescriptor& method) {
  switch (KindOf(method)) {
    case MethodKind::kServerStreaming:
      printer.Print(MethodVars(method), R"cc(// Sends `request` and returns the call: Read() until std::nullopt, then Finish().
// Use on the channel's executor.
::courier::ClientReader<$Response$> $Method$(
    const $Request$& request, ::courier::CallOptions options = {}) {
  return ::courier::internal::OpenServerStream<$Response$>(
      channel_, $ServiceClass$::$Constant$, request, std::move(options));
}
// $Method$() with blocking Read() and Finish(); the channel's executor must run on another.
::courier::BlockingClientReader<$Response$> Blocking$Method$(
    const $Request$& request, ::courier::CallOptions options = {}) {
  return ::courier::internal::BlockingOpenServerStream<$Response$>(
      channel_, $ServiceClass$::$Constant$, request, std::move(options));
}
)cc");
      break;
    case MethodKind::kClientStreaming:
      printer.Print(MethodVars(method), R"cc(// Opens the call: Write() each request, then Finish() for the response.
// Use on the channel's executor.
::courier::ClientWriter<$Request$, $Response$> $Method$(::courier::CallOptions options = {}) {
  return ::courier::internal::OpenStreamCall<::courier::ClientWriter<$Request$, $Response$>>(
      channel_, $ServiceClass$::$Constant$, std::move(options));
}
// $Method$() with blocking calls; the channel's executor must run on another thread.
::courier::BlockingClientWriter<$Request$, $Response$> Blocking$Method$(
    ::courier::CallOptions options = {}) {
  return ::courier::internal::BlockingOpenStreamCall<
      ::courier::BlockingClientWriter<$Request$, $Response$>>(
      channel_, $ServiceClass$::$Constant$, std::move(options));
}
)cc");
      break;
    case MethodKind::kBidiStreaming:
      printer.Print(MethodVars(method), R"cc(// Opens the call: Write() and Read() in any order, WritesDone(), then Finish().
// Use on the channel's executor.
::courier::ClientReaderWriter<$Request$, $Response$> $Method$(
    ::courier::CallOptions options = {}) {
  return ::courier::internal::OpenStreamCall<
      ::courier::ClientReaderWriter<$Request$, $Response$>>(
      channel_, $ServiceClass$::$Constant$, std::move(options));
}
// $Method$() with blocking calls; the channel's executor must run on another thread.
::courier::BlockingClientReaderWriter<$Request$, $Response$> Blocking$Method$(
    ::courier::CallOptions options = {}) {
  return ::courier::internal::BlockingOpenStreamCall<
      ::courier::BlockingClientReaderWriter<$Request$, $Response$>>(
      channel_, $ServiceClass$::$Constant$, std::move(options));
}
)cc");
      break;
    case MethodKind::kUnary:
      break;
  }
}

void PrintStubMethod(Printer& printer, const google::protobuf::MethodDescriptor& method) {
  printer.Print("\n");
  printer.Print(LeadingComment(method, "").c_str());
  if (KindOf(method) != MethodKind::kUnary) {
    PrintStreamingStubMethod(printer, method);
    return;
  }
  printer.Print(MethodVars(method), R"cc(::asio::awaitable<::absl::StatusOr<$Response$>> $Method$(
    const $Request$& request, ::courier::CallOptions options = {}) {
  return ::courier::internal::UnaryCall<$Response$>(
      channel_, $ServiceClass$::$Constant$, request, std::move(options));
}
// $Method$() with any Asio completion token (callback, asio::use_future, ...), which
// receives absl::StatusOr<$Response$>.
template <typename Token>
auto Async$Method$(const $Request$& request, ::courier::CallOptions options, Token&& token) {
  return ::courier::internal::AsyncUnaryCall<$Response$>(
      channel_, $ServiceClass$::$Constant$, request, std::move(options),
      std::forward<Token>(token));
}
// $Method$() blocking the calling thread; the channel's executor must run on another.
::absl::StatusOr<$Response$> Blocking$Method$(
    const $Request$& request, ::courier::CallOptions options = {}) {
  return ::courier::internal::BlockingUnaryCall<$Response$>(
      channel_, $ServiceClass$::$Constant$, request, std::move(options));
}
)cc");
}

void PrintStub(Printer& printer, const ServiceDescriptor& service) {
  auto vars = ServiceVars(service);
  printer.Print(LeadingComment(service, "").c_str());
  printer.Print(vars, R"cc(// Client stub: cheap to copy; many stubs and calls may share one channel.
class $StubClass$ {
 public:
  explicit $StubClass$(std::shared_ptr<::courier::Channel> channel)
      : channel_(std::move(channel)) {}
  const std::shared_ptr<::courier::Channel>& channel() const { return channel_; }
)cc");
  printer.Indent();
  for (int i = 0; i < service.method_count(); ++i) PrintStubMethod(printer, *service.method(i));
  printer.Outdent();
  printer.Print(R"cc(
 private:
  std::shared_ptr<::courier::Channel> channel_;
};

)cc");
}

}  // namespace

void PrintHeader(Printer& printer, const FileDescriptor& file) {
  std::map<std::string, std::string> vars = {{"ProtoFile", file.name()},
                                             {"PbHeader", StripProto(file.name()) + ".pb.h"}};
  printer.Print(vars, R"cc(// Generated by protoc-gen-courier from $ProtoFile$. DO NOT EDIT.
#pragma once

#include <memory>
#include <utility>

#include "$PbHeader$"
#include "rpc/call.h"
#include "rpc/channel.h"
#include "rpc/service.h"
#include "rpc/stream.h"
#include "rpc/stub_support.h"

)cc");
  const std::string ns = CppNamespace(file);
  if (!ns.empty()) printer.Print("namespace $ns$ {\n\n", "ns", ns.substr(2));
  for (int i = 0; i < file.service_count(); ++i) {
    PrintServiceBase(printer, *file.service(i));
    PrintStub(printer, *file.service(i));
  }
  if (!ns.empty()) printer.Print("}  // namespace $ns$\n", "ns", ns.substr(2));
}

}  // namespace courier::codegen
// clang-format on
