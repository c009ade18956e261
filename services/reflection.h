// Server reflection: courier.reflection.v1.ServerReflection (proto/courier/reflection/v1/), which
// tells a client the services a server serves and the .proto files (FileDescriptorProtos, with
// their dependencies) that define a service, a method or a message. The `courier` command-line
// tool lists, describes and calls methods with it, without a copy of the .proto. Services layer.
#pragma once

#include "absl/status/status.h"
#include "google/protobuf/descriptor.h"
#include "rpc/server.h"

namespace courier {

// Serves reflection on `server` (call before Listen). Descriptors come from `pool`: by default
// the generated pool, which holds every .proto compiled into the program, so generated services
// describe themselves. Services registered without a descriptor (GenericService) are listed but
// cannot be described (NOT_FOUND). kAlreadyExists if reflection is already served.
absl::Status EnableReflection(Server& server,
                              const google::protobuf::DescriptorPool* pool =
                                  google::protobuf::DescriptorPool::generated_pool());

}  // namespace courier
