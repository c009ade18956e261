#include "tools/cli/schema.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "courier/reflection/v1/reflection.courier.h"
#include "google/protobuf/compiler/importer.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/descriptor_database.h"
#include "google/protobuf/io/zero_copy_stream.h"

namespace courier::cli {
namespace {

namespace pb = google::protobuf;
namespace v1 = courier::reflection::v1;

// The reflection service's method, for error messages.
constexpr char kReflectionMethod[] = "courier.reflection.v1.ServerReflection/ServerReflectionInfo";

// A descriptor database that asks the server: the pool below falls back to it for every name it
// does not know yet, so only the files that define what the command needs are fetched. Every
// file a response carries is kept, so dependencies are seldom asked for twice.
class ReflectionDatabase final : public pb::DescriptorDatabase {
 public:
  ReflectionDatabase(std::shared_ptr<Channel> channel, CallOptions options)
      : stub_(std::move(channel)), options_(std::move(options)) {}

  bool FindFileByName(const std::string& filename, pb::FileDescriptorProto* output) override {
    if (auto it = files_.find(filename); it != files_.end()) {
      *output = it->second;
      return true;
    }
    v1::ServerReflectionRequest request;
    request.set_file_by_filename(filename);
    return AskForFile(request, output);
  }

  bool FindFileContainingSymbol(const std::string& symbol,
                                pb::FileDescriptorProto* output) override {
    if (auto it = file_of_symbol_.find(symbol); it != file_of_symbol_.end()) {
      return FindFileByName(it->second, output);
    }
    v1::ServerReflectionRequest request;
    request.set_file_containing_symbol(symbol);
    if (!AskForFile(request, output)) return false;
    file_of_symbol_[symbol] = output->name();
    return true;
  }

  bool FindFileContainingExtension(const std::string& containing_type, int field_number,
                                   pb::FileDescriptorProto* output) override {
    return false;  // the protocol has no such question
  }

  absl::StatusOr<std::vector<std::string>> ListServices() {
    v1::ServerReflectionRequest request;
    request.set_list_services("*");
    absl::StatusOr<v1::ServerReflectionResponse> response = Ask(request);
    if (!response.ok()) return response.status();
    if (response->has_error_response()) return ErrorStatus(*response);
    std::vector<std::string> names;
    for (const v1::ServiceResponse& service : response->list_services_response().service()) {
      names.push_back(service.name());
    }
    std::sort(names.begin(), names.end());
    return names;
  }

  const absl::Status& failure() const { return failure_; }

 private:
  // The file the response names first; false with failure_ set if the server could not be
  // asked, false with failure_ OK if it does not know the name.
  bool AskForFile(const v1::ServerReflectionRequest& request, pb::FileDescriptorProto* output) {
    absl::StatusOr<v1::ServerReflectionResponse> response = Ask(request);
    if (!response.ok()) return false;
    if (response->has_error_response()) {
      absl::Status error = ErrorStatus(*response);
      if (error.code() != absl::StatusCode::kNotFound) failure_ = error;
      return false;
    }
    const auto& files = response->file_descriptor_response().file_descriptor_proto();
    std::optional<pb::FileDescriptorProto> first;
    for (const std::string& bytes : files) {
      pb::FileDescriptorProto file;
      if (!file.ParseFromString(bytes)) {
        failure_ = absl::InternalError(absl::StrCat(
            kReflectionMethod, ": the server sent a FileDescriptorProto that does not parse"));
        return false;
      }
      if (!first) first = file;
      files_.try_emplace(file.name(), std::move(file));
    }
    if (!first) {
      failure_ = absl::InternalError(
          absl::StrCat(kReflectionMethod, ": the server answered with no file"));
      return false;
    }
    *output = *std::move(first);
    return true;
  }

  static absl::Status ErrorStatus(const v1::ServerReflectionResponse& response) {
    const v1::ErrorResponse& error = response.error_response();
    return absl::Status(static_cast<absl::StatusCode>(error.error_code()), error.error_message());
  }

  // One question and its answer on the stream, opened by the first question. Once the stream
  // failed every question fails with that status (in failure_).
  absl::StatusOr<v1::ServerReflectionResponse> Ask(const v1::ServerReflectionRequest& request) {
    if (!failure_.ok()) return failure_;
    if (!stream_) stream_.emplace(stub_.BlockingServerReflectionInfo(options_));
    std::optional<v1::ServerReflectionResponse> response;
    if (stream_->Write(request).ok()) response = stream_->Read();
    if (!response) {
      failure_ = Explain(stream_->Finish());
      if (failure_.ok()) {
        failure_ = absl::InternalError(
            absl::StrCat(kReflectionMethod, ": the server ended the stream without an answer"));
      }
      return failure_;
    }
    return *std::move(response);
  }

  // An unknown method is a server that does not serve reflection: say so, and what to do.
  static absl::Status Explain(absl::Status status) {
    if (status.code() != absl::StatusCode::kUnimplemented) return status;
    return absl::UnimplementedError(absl::StrCat("reflection is not available on the server (",
                                                 status.message(),
                                                 "); give the schema with --proto FILE [-I DIR]"));
  }

  v1::ServerReflectionStub stub_;
  CallOptions options_;
  using Stream =
      BlockingClientReaderWriter<v1::ServerReflectionRequest, v1::ServerReflectionResponse>;
  std::optional<Stream> stream_;
  absl::Status failure_;
  std::map<std::string, pb::FileDescriptorProto> files_;
  std::map<std::string, std::string> file_of_symbol_;
};

class ReflectionSchema final : public Schema {
 public:
  ReflectionSchema(std::shared_ptr<Channel> channel, CallOptions options)
      : database_(std::move(channel), std::move(options)), pool_(&database_) {}

  absl::StatusOr<std::vector<std::string>> ListServices() override {
    return database_.ListServices();
  }

 protected:
  const pb::DescriptorPool& pool() const override { return pool_; }
  absl::Status LookupFailure() const override { return database_.failure(); }
  std::string where() const override { return "on the server"; }

 private:
  ReflectionDatabase database_;  // before pool_, which uses it
  pb::DescriptorPool pool_;
};

// Collects what protobuf's compiler reports; the first error is the one the user sees.
class ErrorCollector final : public pb::compiler::MultiFileErrorCollector {
 public:
  void AddError(const std::string& filename, int line, int column,
                const std::string& message) override {
    if (!first_.empty()) return;
    // protobuf counts lines and columns from 0, editors from 1; -1 means no position.
    first_ = line < 0 ? absl::StrCat(filename, ": ", message)
                      : absl::StrCat(filename, ":", line + 1, ":", column + 1, ": ", message);
  }
  const std::string& first() const { return first_; }

 private:
  std::string first_;
};

class ProtoFileSchema final : public Schema {
 public:
  explicit ProtoFileSchema(const std::vector<std::string>& import_paths)
      : importer_(&source_tree_, &errors_), import_paths_(import_paths) {
    if (import_paths_.empty()) import_paths_.push_back(".");
    for (const std::string& path : import_paths_) source_tree_.MapPath("", path);
  }

  absl::Status Load(const std::string& file) {
    absl::StatusOr<std::string> name = VirtualName(file);
    if (!name.ok()) return name.status();
    const pb::FileDescriptor* descriptor = importer_.Import(*name);
    if (descriptor == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("--proto ", file, " does not compile: ", errors_.first()));
    }
    files_.push_back(descriptor);
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListServices() override {
    std::set<std::string> names;
    for (const pb::FileDescriptor* file : files_) {
      for (int i = 0; i < file->service_count(); ++i) names.insert(file->service(i)->full_name());
    }
    return std::vector<std::string>(names.begin(), names.end());
  }

 protected:
  const pb::DescriptorPool& pool() const override { return *importer_.pool(); }
  std::string where() const override { return "in the --proto files"; }

 private:
  // `file` as the compiler names it: as given if it is found under an import path, else the
  // disk path made relative to the import path that holds it.
  absl::StatusOr<std::string> VirtualName(const std::string& file) {
    if (std::unique_ptr<pb::io::ZeroCopyInputStream>(source_tree_.Open(file))) return file;
    std::string virtual_name, shadowing;
    switch (source_tree_.DiskFileToVirtualFile(file, &virtual_name, &shadowing)) {
      case pb::compiler::DiskSourceTree::SUCCESS:
        return virtual_name;
      case pb::compiler::DiskSourceTree::SHADOWED:
        return absl::InvalidArgumentError(absl::StrCat("--proto ", file, " is shadowed by ",
                                                       shadowing, " (both are named ", virtual_name,
                                                       " under the -I import paths)"));
      case pb::compiler::DiskSourceTree::CANNOT_OPEN:
        return absl::NotFoundError(
            absl::StrCat("--proto ", file, ": ", source_tree_.GetLastErrorMessage()));
      case pb::compiler::DiskSourceTree::NO_MAPPING:
        break;
    }
    std::error_code ignored;
    if (std::filesystem::is_regular_file(file, ignored)) {
      return absl::InvalidArgumentError(absl::StrCat("--proto ", file,
                                                     " is not under any -I import path (",
                                                     absl::StrJoin(import_paths_, ", "), ")"));
    }
    return absl::NotFoundError(absl::StrCat("--proto ", file, ": no such file (import paths: ",
                                            absl::StrJoin(import_paths_, ", "), ")"));
  }

  pb::compiler::DiskSourceTree source_tree_;
  ErrorCollector errors_;
  pb::compiler::Importer importer_;
  std::vector<std::string> import_paths_;
  std::vector<const pb::FileDescriptor*> files_;
};

}  // namespace

absl::StatusOr<const pb::ServiceDescriptor*> Schema::FindService(const std::string& name) {
  if (const pb::ServiceDescriptor* service = pool().FindServiceByName(name)) return service;
  if (absl::Status failure = LookupFailure(); !failure.ok()) return failure;
  return absl::NotFoundError(absl::StrCat("service '", name, "' not found ", where()));
}

absl::StatusOr<const pb::MethodDescriptor*> Schema::FindMethod(const std::string& name) {
  std::string full = name;
  if (!full.empty() && full.front() == '/') full.erase(0, 1);
  size_t split = full.rfind('/');
  if (split == std::string::npos) split = full.rfind('.');
  if (split == std::string::npos || split == 0 || split + 1 == full.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "method '", name, "' is not of the form package.Service/Method or package.Service.Method"));
  }
  absl::StatusOr<const pb::ServiceDescriptor*> service = FindService(full.substr(0, split));
  if (!service.ok()) return service.status();
  const std::string method_name = full.substr(split + 1);
  if (const pb::MethodDescriptor* method = (*service)->FindMethodByName(method_name)) {
    return method;
  }
  return absl::NotFoundError(absl::StrCat("method '", method_name, "' not found in service '",
                                          (*service)->full_name(), "'"));
}

absl::StatusOr<std::string> Schema::Describe(const std::string& symbol) {
  std::string name = symbol;
  if (!name.empty() && name.front() == '.') name.erase(0, 1);
  std::replace(name.begin(), name.end(), '/', '.');
  const pb::DescriptorPool& p = pool();
  if (const auto* service = p.FindServiceByName(name)) return service->DebugString();
  if (const auto* method = p.FindMethodByName(name)) return method->DebugString();
  if (const auto* message = p.FindMessageTypeByName(name)) return message->DebugString();
  if (const auto* enum_type = p.FindEnumTypeByName(name)) return enum_type->DebugString();
  if (const auto* field = p.FindFieldByName(name)) return field->DebugString();
  if (absl::Status failure = LookupFailure(); !failure.ok()) return failure;
  return absl::NotFoundError(absl::StrCat("symbol '", symbol, "' not found ", where()));
}

std::unique_ptr<Schema> NewReflectionSchema(std::shared_ptr<Channel> channel, CallOptions options) {
  return std::make_unique<ReflectionSchema>(std::move(channel), std::move(options));
}

absl::StatusOr<std::unique_ptr<Schema>> NewProtoFileSchema(
    const std::vector<std::string>& files, const std::vector<std::string>& import_paths) {
  auto schema = std::make_unique<ProtoFileSchema>(import_paths);
  for (const std::string& file : files) {
    if (absl::Status s = schema->Load(file); !s.ok()) return s;
  }
  return schema;
}

}  // namespace courier::cli
