// Where the `courier` tool's descriptors come from: the server's reflection service
// (courier.reflection.v1, asked lazily, one symbol at a time) or .proto files compiled at run
// time (--proto, -I). Either way a Schema answers in protobuf descriptors. Command-line tool.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "rpc/call.h"
#include "rpc/channel.h"

namespace courier::cli {

class Schema {
 public:
  virtual ~Schema() = default;

  // Fully qualified service names, sorted. With reflection: what the server serves (including
  // reflection and health themselves); from files: the services the --proto files define.
  virtual absl::StatusOr<std::vector<std::string>> ListServices() = 0;

  // NOT_FOUND naming `name` if no such service; with reflection, the call's error when the
  // server could not be asked (UNAVAILABLE, no reflection: UNIMPLEMENTED, ...).
  absl::StatusOr<const google::protobuf::ServiceDescriptor*> FindService(const std::string& name);
  // `name` is "package.Service/Method", "/package.Service/Method" or "package.Service.Method".
  // NOT_FOUND naming the service or the method that does not exist.
  absl::StatusOr<const google::protobuf::MethodDescriptor*> FindMethod(const std::string& name);
  // The .proto-style definition (protobuf's DebugString) of a service, method, message, enum
  // or field; NOT_FOUND if `symbol` is none of them.
  absl::StatusOr<std::string> Describe(const std::string& symbol);

 protected:
  virtual const google::protobuf::DescriptorPool& pool() const = 0;
  // Why the last lookup in pool() found nothing, when that was not simply an unknown name
  // (reflection failed); OK otherwise.
  virtual absl::Status LookupFailure() const { return absl::OkStatus(); }
  // Where names are looked up, for NOT_FOUND messages: "on the server".
  virtual std::string where() const = 0;
};

// Asks the server behind `channel` with its reflection service. Each question is one request on
// one ServerReflectionInfo stream kept open for the Schema's life, which carries `options`
// (deadline, metadata). Never fails here: an unreachable server or one without reflection is
// reported by the first lookup. Use from one thread that is not the channel's.
std::unique_ptr<Schema> NewReflectionSchema(std::shared_ptr<Channel> channel, CallOptions options);

// Compiles `files` (each a path under one of `import_paths`, or a disk path inside one of them)
// with protobuf's compiler. NOT_FOUND for a file that does not exist; INVALID_ARGUMENT with
// "file:line:column: message" for one that does not compile.
absl::StatusOr<std::unique_ptr<Schema>> NewProtoFileSchema(
    const std::vector<std::string>& files, const std::vector<std::string>& import_paths);

}  // namespace courier::cli
