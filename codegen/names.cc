#include "codegen/names.h"

#include <set>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace courier::codegen {
namespace {

using google::protobuf::Descriptor;
using google::protobuf::FileDescriptor;
using google::protobuf::MethodDescriptor;
using google::protobuf::ServiceDescriptor;

// C++20 keywords and alternative tokens, plus macros every translation unit sees.
const std::set<std::string>& Keywords() {
  static const std::set<std::string> keywords = {
      "alignas",       "alignof",     "and",
      "and_eq",        "asm",         "auto",
      "bitand",        "bitor",       "bool",
      "break",         "case",        "catch",
      "char",          "char8_t",     "char16_t",
      "char32_t",      "class",       "compl",
      "concept",       "const",       "consteval",
      "constexpr",     "constinit",   "const_cast",
      "continue",      "co_await",    "co_return",
      "co_yield",      "decltype",    "default",
      "delete",        "do",          "double",
      "dynamic_cast",  "else",        "enum",
      "explicit",      "export",      "extern",
      "false",         "float",       "for",
      "friend",        "goto",        "if",
      "inline",        "int",         "long",
      "mutable",       "namespace",   "new",
      "noexcept",      "not",         "not_eq",
      "nullptr",       "operator",    "or",
      "or_eq",         "private",     "protected",
      "public",        "register",    "reinterpret_cast",
      "requires",      "return",      "short",
      "signed",        "sizeof",      "static",
      "static_assert", "static_cast", "struct",
      "switch",        "template",    "this",
      "thread_local",  "throw",       "true",
      "try",           "typedef",     "typeid",
      "typename",      "union",       "unsigned",
      "using",         "virtual",     "void",
      "volatile",      "wchar_t",     "while",
      "xor",           "xor_eq",      "NULL",
      "assert",        "errno",       "unix",
      "linux",         "stdin",       "stdout",
      "stderr",
  };
  return keywords;
}

std::string Capitalize(std::string name) {
  if (!name.empty() && name[0] >= 'a' && name[0] <= 'z') name[0] = static_cast<char>(name[0] - 32);
  return name;
}

std::string Unique(std::string name, std::set<std::string>& taken) {
  while (taken.contains(name)) name += "_";
  taken.insert(name);
  return name;
}

struct MethodNames {
  std::string cpp;       // the handler / stub method
  std::string constant;  // kXMethodName
};

// C++ names for every method of `service`, clear of keywords, of each other, and of the names
// the generated classes (and ServiceBase) use.
std::vector<MethodNames> ServiceMethodNames(const ServiceDescriptor& service) {
  std::set<std::string> taken = {
      service.name() + "Service",
      service.name() + "Stub",
      "ServiceBase",
      "AddMethod",
      "AddRawMethod",
      "methods",
      "channel",
      "channel_",
  };
  for (int i = 0; i < service.method_count(); ++i) {
    taken.insert("Async" + service.method(i)->name());
    taken.insert("Blocking" + service.method(i)->name());
  }
  std::set<std::string> constants;
  std::vector<MethodNames> names;
  for (int i = 0; i < service.method_count(); ++i) {
    std::string name = service.method(i)->name();
    // A method may legitimately be named like another's Async/Blocking form; only its own
    // forms must not collide, which the underscore settles.
    if (IsCppKeyword(name) || taken.contains(name)) name += "_";
    names.push_back({Unique(name, taken),
                     Unique(absl::StrCat("k", Capitalize(service.method(i)->name()), "MethodName"),
                            constants)});
  }
  return names;
}

}  // namespace

bool IsCppKeyword(const std::string& name) { return Keywords().contains(name); }

std::string StripProto(const std::string& filename) {
  for (const std::string suffix : {".protodevel", ".proto"}) {
    if (filename.size() > suffix.size() &&
        filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) == 0) {
      return filename.substr(0, filename.size() - suffix.size());
    }
  }
  return filename;
}

std::string CppNamespace(const FileDescriptor& file) {
  std::string out;
  if (file.package().empty()) return out;
  for (absl::string_view part : absl::StrSplit(file.package(), '.')) {
    std::string name(part);
    if (IsCppKeyword(name)) name += "_";
    absl::StrAppend(&out, "::", name);
  }
  return out;
}

std::string CppMessageType(const Descriptor& message) {
  std::string name = message.name();
  for (const Descriptor* outer = message.containing_type(); outer != nullptr;
       outer = outer->containing_type()) {
    name = absl::StrCat(outer->name(), "_", name);
  }
  if (IsCppKeyword(name)) name += "_";
  return absl::StrCat(CppNamespace(*message.file()), "::", name);
}

std::map<std::string, std::string> ServiceVars(const ServiceDescriptor& service) {
  return {
      {"Service", service.name()},
      {"ServiceClass", service.name() + "Service"},
      {"StubClass", service.name() + "Stub"},
      {"ProtoFile", service.file()->name()},
  };
}

std::map<std::string, std::string> MethodVars(const MethodDescriptor& method) {
  std::map<std::string, std::string> vars = ServiceVars(*method.service());
  const MethodNames names = ServiceMethodNames(*method.service())[method.index()];
  vars["Method"] = names.cpp;
  vars["Constant"] = names.constant;
  vars["FullName"] = absl::StrCat("/", method.service()->full_name(), "/", method.name());
  vars["Request"] = CppMessageType(*method.input_type());
  vars["Response"] = CppMessageType(*method.output_type());
  return vars;
}

MethodKind KindOf(const MethodDescriptor& method) {
  if (method.client_streaming() && method.server_streaming()) return MethodKind::kBidiStreaming;
  if (method.client_streaming()) return MethodKind::kClientStreaming;
  if (method.server_streaming()) return MethodKind::kServerStreaming;
  return MethodKind::kUnary;
}

template <typename Descriptor>
std::string LeadingComment(const Descriptor& descriptor, const std::string& indent) {
  google::protobuf::SourceLocation location;
  if (!descriptor.GetSourceLocation(&location)) return "";
  std::string out;
  std::vector<absl::string_view> lines = absl::StrSplit(location.leading_comments, '\n');
  while (!lines.empty() && lines.back().empty()) lines.pop_back();
  for (absl::string_view line : lines) {
    if (!line.empty() && line[0] == ' ') line.remove_prefix(1);
    absl::StrAppend(&out, indent, line.empty() ? "//" : "// ", line, "\n");
  }
  return out;
}

template std::string LeadingComment(const ServiceDescriptor&, const std::string&);
template std::string LeadingComment(const MethodDescriptor&, const std::string&);

}  // namespace courier::codegen
