// The courier code generator: for every service in a .proto, a service base class and a client
// stub, in NAME.courier.h and NAME.courier.cc beside protobuf's NAME.pb.h. Uses only libprotoc.
#pragma once

#include <string>

#include "google/protobuf/compiler/code_generator.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/printer.h"

namespace courier::codegen {

// Plugin parameters (protoc --courier_opt=key=value,...). None are defined yet; unknown keys
// are an error, so a typo is never silently ignored.
struct Options {};

class Generator final : public google::protobuf::compiler::CodeGenerator {
 public:
  bool Generate(const google::protobuf::FileDescriptor* file, const std::string& parameter,
                google::protobuf::compiler::GeneratorContext* context,
                std::string* error) const override;
  uint64_t GetSupportedFeatures() const override { return FEATURE_PROTO3_OPTIONAL; }
};

// Sections of the output, one function each (print_header.cc, print_source.cc).
void PrintHeader(google::protobuf::io::Printer& printer,
                 const google::protobuf::FileDescriptor& file);
void PrintSource(google::protobuf::io::Printer& printer,
                 const google::protobuf::FileDescriptor& file);

}  // namespace courier::codegen
