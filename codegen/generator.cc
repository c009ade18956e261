#include "codegen/generator.h"

#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "codegen/names.h"
#include "google/protobuf/compiler/code_generator.h"
#include "google/protobuf/io/zero_copy_stream.h"

namespace courier::codegen {
namespace {

using google::protobuf::FileDescriptor;

bool ParseOptions(const std::string& parameter, Options& options, std::string* error) {
  std::vector<std::pair<std::string, std::string>> pairs;
  google::protobuf::compiler::ParseGeneratorParameter(parameter, &pairs);
  for (const auto& [key, value] : pairs) {
    *error = absl::StrCat("protoc-gen-courier: unknown option '", key,
                          "' (this version takes no options)");
    return false;
  }
  return true;
}

// The classes we generate must not take a name the package already uses (a message named
// EchoService beside service Echo): refuse clearly instead of emitting code that cannot compile.
bool CheckNames(const FileDescriptor& file, std::string* error) {
  const google::protobuf::DescriptorPool& pool = *file.pool();
  const std::string prefix = file.package().empty() ? "" : file.package() + ".";
  for (int s = 0; s < file.service_count(); ++s) {
    const std::string& service = file.service(s)->name();
    for (const std::string& generated : {service + "Service", service + "Stub"}) {
      const std::string full = prefix + generated;
      if (pool.FindMessageTypeByName(full) || pool.FindEnumTypeByName(full) ||
          pool.FindServiceByName(full) || pool.FindEnumValueByName(full)) {
        *error = absl::StrCat("service ", service, ": protoc-gen-courier generates a class ",
                              generated, ", but ", full,
                              " already names something in the package; rename one of them");
        return false;
      }
    }
  }
  return true;
}

}  // namespace

bool Generator::Generate(const FileDescriptor* file, const std::string& parameter,
                         google::protobuf::compiler::GeneratorContext* context,
                         std::string* error) const {
  Options options;
  if (!ParseOptions(parameter, options, error) || !CheckNames(*file, error)) {
    return false;
  }
  const std::string base = StripProto(file->name());
  {
    std::unique_ptr<google::protobuf::io::ZeroCopyOutputStream> out(
        context->Open(base + ".courier.h"));
    google::protobuf::io::Printer printer(out.get(), '$');
    PrintHeader(printer, *file);
  }
  {
    std::unique_ptr<google::protobuf::io::ZeroCopyOutputStream> out(
        context->Open(base + ".courier.cc"));
    google::protobuf::io::Printer printer(out.get(), '$');
    PrintSource(printer, *file);
  }
  return true;
}

}  // namespace courier::codegen
