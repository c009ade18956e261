// kv_server --listen URI [--listen URI ...] [--metrics-listen HOST:PORT]
// The key-value service of kv.proto, in memory. Prints "listening on URI" per endpoint and shuts
// down gracefully on SIGINT or SIGTERM.
#include "rpc/server.h"

#include <csignal>
#include <cstdio>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/io_context.hpp"
#include "examples/common/serve.h"
#include "kv/kv.courier.h"

namespace {

namespace kv = courier::examples::kv;
using courier::ServerContext;

// All handlers run on the server's one reactor thread, so the map needs no lock.
class KvServer final : public kv::KvService {
 public:
  asio::awaitable<absl::StatusOr<kv::PutReply>> Put(ServerContext&, kv::PutRequest r) override {
    values_[r.key()] = std::move(*r.mutable_value());
    co_return kv::PutReply();
  }

  asio::awaitable<absl::StatusOr<kv::GetReply>> Get(ServerContext&, kv::GetRequest r) override {
    auto it = values_.find(r.key());
    if (it == values_.end()) co_return NotFound(r.key());
    kv::GetReply reply;
    reply.set_value(it->second);
    co_return reply;
  }

  asio::awaitable<absl::StatusOr<kv::DeleteReply>> Delete(ServerContext&,
                                                          kv::DeleteRequest r) override {
    if (values_.erase(r.key()) == 0) co_return NotFound(r.key());
    co_return kv::DeleteReply();
  }

  asio::awaitable<absl::StatusOr<kv::ListReply>> List(ServerContext&, kv::ListRequest r) override {
    kv::ListReply reply;
    for (auto it = values_.lower_bound(r.prefix());
         it != values_.end() && it->first.compare(0, r.prefix().size(), r.prefix()) == 0; ++it) {
      kv::ListReply::Entry* entry = reply.add_entries();
      entry->set_key(it->first);
      entry->set_value(it->second);
    }
    co_return reply;
  }

  asio::awaitable<absl::StatusOr<kv::AddReply>> Add(ServerContext&, kv::AddRequest r) override {
    int64_t value = 0;
    auto it = values_.find(r.key());
    if (it != values_.end() && !absl::SimpleAtoi(it->second, &value)) {
      co_return absl::FailedPreconditionError(
          absl::StrCat("key '", r.key(), "' holds '", it->second, "', not an int64 counter"));
    }
    int64_t sum = 0;
    if (__builtin_add_overflow(value, r.delta(), &sum)) {
      co_return absl::OutOfRangeError(
          absl::StrCat(value, " + ", r.delta(), " overflows an int64 (key '", r.key(), "')"));
    }
    values_[r.key()] = absl::StrCat(sum);
    kv::AddReply reply;
    reply.set_value(sum);
    co_return reply;
  }

 private:
  static absl::Status NotFound(const std::string& key) {
    return absl::NotFoundError(absl::StrCat("no key '", key, "'"));
  }

  std::map<std::string, std::string> values_;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> uris;
  courier::ServerOptions server_options;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--listen" && i + 1 < argc) {
      uris.emplace_back(argv[++i]);
    } else if (std::string_view(argv[i]) == "--metrics-listen" && i + 1 < argc) {
      server_options.metrics_listen = argv[++i];
    } else {
      uris.clear();
      break;
    }
  }
  if (uris.empty()) {
    std::fprintf(stderr,
                 "usage: kv_server --listen URI [--listen URI ...] [--metrics-listen HOST:PORT]\n");
    return 2;
  }
  asio::io_context io(1);
  KvServer service;
  courier::Server server(io.get_executor(), server_options);
  return courier::examples::Serve(io, server, service, uris);
}
