// kv_client --connect URI [--timeout-ms MS] put KEY VALUE | get KEY | delete KEY | list [PREFIX]
//           | add KEY DELTA
// The blocking style: no event loop here; the channel runs its own reactor thread and each
// call waits for its answer. Errors print the status code name (e.g. NOT_FOUND) and message to
// stderr and exit 1.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "kv/kv.courier.h"
#include "rpc/channel.h"

namespace {

namespace kv = courier::examples::kv;

int Usage() {
  std::fprintf(stderr,
               "usage: kv_client --connect URI [--timeout-ms MS] put KEY VALUE | get KEY | "
               "delete KEY | list [PREFIX] | add KEY DELTA\n");
  return 2;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

int Run(kv::KvStub& stub, const std::vector<std::string>& args, courier::CallOptions options) {
  const std::string& command = args[0];
  if (command == "put" && args.size() == 3) {
    kv::PutRequest request;
    request.set_key(args[1]);
    request.set_value(args[2]);
    absl::StatusOr<kv::PutReply> reply = stub.BlockingPut(request, options);
    if (!reply.ok()) return Fail(reply.status());
    std::printf("OK\n");
  } else if (command == "get" && args.size() == 2) {
    kv::GetRequest request;
    request.set_key(args[1]);
    absl::StatusOr<kv::GetReply> reply = stub.BlockingGet(request, options);
    if (!reply.ok()) return Fail(reply.status());
    std::printf("%s\n", reply->value().c_str());
  } else if (command == "delete" && args.size() == 2) {
    kv::DeleteRequest request;
    request.set_key(args[1]);
    absl::StatusOr<kv::DeleteReply> reply = stub.BlockingDelete(request, options);
    if (!reply.ok()) return Fail(reply.status());
    std::printf("OK\n");
  } else if (command == "list" && args.size() <= 2) {
    kv::ListRequest request;
    if (args.size() == 2) request.set_prefix(args[1]);
    absl::StatusOr<kv::ListReply> reply = stub.BlockingList(request, options);
    if (!reply.ok()) return Fail(reply.status());
    for (const auto& entry : reply->entries()) {
      std::printf("%s=%s\n", entry.key().c_str(), entry.value().c_str());
    }
  } else if (command == "add" && args.size() == 3) {
    kv::AddRequest request;
    request.set_key(args[1]);
    int64_t delta = 0;
    if (!absl::SimpleAtoi(args[2], &delta)) {
      return Fail(absl::InvalidArgumentError("DELTA '" + args[2] + "' is not an int64"));
    }
    request.set_delta(delta);
    absl::StatusOr<kv::AddReply> reply = stub.BlockingAdd(request, options);
    if (!reply.ok()) return Fail(reply.status());
    std::printf("%lld\n", static_cast<long long>(reply->value()));
  } else {
    return Usage();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string uri;
  courier::CallOptions options;
  options.timeout = std::chrono::seconds(10);
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (args.empty() && arg == "--connect" && i + 1 < argc) {
      uri = argv[++i];
    } else if (args.empty() && arg == "--timeout-ms" && i + 1 < argc) {
      options.timeout = std::chrono::milliseconds(std::atol(argv[++i]));
    } else {
      args.emplace_back(arg);
    }
  }
  if (uri.empty() || args.empty()) return Usage();
  absl::StatusOr<std::shared_ptr<courier::Channel>> channel = courier::Channel::Create(uri);
  if (!channel.ok()) return Fail(channel.status());
  kv::KvStub stub(*channel);
  return Run(stub, args, options);
}
