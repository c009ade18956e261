#include "services/reflection.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "courier/reflection/v1/reflection.courier.h"
#include "google/protobuf/descriptor.pb.h"

namespace courier {
namespace {

namespace pb = google::protobuf;
namespace v1 = courier::reflection::v1;

class Reflection final : public v1::ServerReflectionService {
 public:
  Reflection(const Server* server, const pb::DescriptorPool* pool) : server_(server), pool_(pool) {}

  asio::awaitable<absl::Status> ServerReflectionInfo(
      ServerContext& ctx,
      ServerReaderWriter<v1::ServerReflectionRequest, v1::ServerReflectionResponse>& stream)
      override {
    while (std::optional<v1::ServerReflectionRequest> request = co_await stream.Read()) {
      v1::ServerReflectionResponse response = Answer(*request);
      *response.mutable_original_request() = *std::move(request);
      if (absl::Status s = co_await stream.Write(response); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }

 private:
  v1::ServerReflectionResponse Answer(const v1::ServerReflectionRequest& request) const {
    v1::ServerReflectionResponse response;
    switch (request.message_request_case()) {
      case v1::ServerReflectionRequest::kListServices:
        for (const std::string& name : server_->service_names()) {
          response.mutable_list_services_response()->add_service()->set_name(name);
        }
        break;
      case v1::ServerReflectionRequest::kFileByFilename:
        AnswerFile(pool_->FindFileByName(request.file_by_filename()), "file",
                   request.file_by_filename(), response);
        break;
      case v1::ServerReflectionRequest::kFileContainingSymbol:
        AnswerFile(pool_->FindFileContainingSymbol(request.file_containing_symbol()), "symbol",
                   request.file_containing_symbol(), response);
        break;
      case v1::ServerReflectionRequest::MESSAGE_REQUEST_NOT_SET:
        SetError(absl::InvalidArgumentError(
                     "the request asks nothing: set file_by_filename, file_containing_symbol or "
                     "list_services"),
                 response);
        break;
    }
    return response;
  }

  // `file` and its dependencies, or NOT_FOUND naming `what` was asked for.
  static void AnswerFile(const pb::FileDescriptor* file, const char* kind, const std::string& what,
                         v1::ServerReflectionResponse& response) {
    if (file == nullptr) {
      SetError(absl::NotFoundError(absl::StrCat(kind, " not found: ", what)), response);
    } else {
      AddFileAndDependencies(*file, response);
    }
  }

  // `file` first, then what it imports, directly or not, each once.
  static void AddFileAndDependencies(const pb::FileDescriptor& file,
                                     v1::ServerReflectionResponse& response) {
    std::vector<const pb::FileDescriptor*> order = {&file};
    absl::flat_hash_set<const pb::FileDescriptor*> seen = {&file};
    for (size_t i = 0; i < order.size(); ++i) {
      for (int d = 0; d < order[i]->dependency_count(); ++d) {
        const pb::FileDescriptor* dependency = order[i]->dependency(d);
        if (seen.insert(dependency).second) order.push_back(dependency);
      }
    }
    v1::FileDescriptorResponse* files = response.mutable_file_descriptor_response();
    for (const pb::FileDescriptor* f : order) {
      pb::FileDescriptorProto proto;
      f->CopyTo(&proto);
      proto.SerializeToString(files->add_file_descriptor_proto());
    }
  }

  static void SetError(const absl::Status& status, v1::ServerReflectionResponse& response) {
    response.mutable_error_response()->set_error_code(static_cast<int>(status.code()));
    response.mutable_error_response()->set_error_message(std::string(status.message()));
  }

  const Server* server_;
  const pb::DescriptorPool* pool_;
};

}  // namespace

absl::Status EnableReflection(Server& server, const pb::DescriptorPool* pool) {
  if (pool == nullptr) return absl::InvalidArgumentError("EnableReflection: null descriptor pool");
  return server.AddService(std::make_shared<Reflection>(&server, pool));
}

}  // namespace courier
