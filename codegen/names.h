// How proto names become C++ names in generated code: namespaces and message types exactly as
// protobuf's C++ generator spells them, and method names kept clear of C++ keywords and of the
// names the generated classes use themselves.
#pragma once

#include <map>
#include <string>

#include "google/protobuf/descriptor.h"

namespace courier::codegen {

// "examples/echo.proto" → "examples/echo".
std::string StripProto(const std::string& filename);
// "::courier::examples" for package courier.examples; "" for no package.
std::string CppNamespace(const google::protobuf::FileDescriptor& file);
// "::courier::examples::EchoRequest" (nested messages joined with '_', as protobuf does).
std::string CppMessageType(const google::protobuf::Descriptor& message);
bool IsCppKeyword(const std::string& name);

// Variables for a service's templates: Service (proto name), ServiceClass, StubClass.
std::map<std::string, std::string> ServiceVars(const google::protobuf::ServiceDescriptor& service);
// Variables for a method's templates: Method (C++ name), FullName ("/pkg.Svc/M"), Constant
// (kMMethodName), Request, Response (qualified C++ types), plus the service's variables.
std::map<std::string, std::string> MethodVars(const google::protobuf::MethodDescriptor& method);

enum class MethodKind { kUnary, kServerStreaming, kClientStreaming, kBidiStreaming };
MethodKind KindOf(const google::protobuf::MethodDescriptor& method);

// The .proto's leading comment on `descriptor` as "// " lines (empty if none).
template <typename Descriptor>
std::string LeadingComment(const Descriptor& descriptor, const std::string& indent);

}  // namespace courier::codegen
