// plain_echo_server --listen URI [--listen URI ...]
// For tests/cli/cli_test.sh: courier.examples.Echo WITHOUT reflection (so `courier` needs
// --proto), whose reply also shows the request's metadata: the text, then " key=value" for each
// entry in the order received; and courier.test.cli.Joiner (tests/cli/join.proto), a
// client-streaming method. Prints "listening on URI" per endpoint; SIGINT/SIGTERM stop it.
#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/io_context.hpp"
#include "asio/signal_set.hpp"
#include "examples/echo.courier.h"
#include "join.courier.h"
#include "rpc/server.h"

namespace {

using courier::examples::EchoReply;
using courier::examples::EchoRequest;
using courier::test::cli::Joined;
using courier::test::cli::Part;

class MetadataEcho final : public courier::examples::EchoService {
 public:
  asio::awaitable<absl::StatusOr<EchoReply>> Say(courier::ServerContext& ctx,
                                                 EchoRequest request) override {
    EchoReply reply;
    std::string text = request.text();
    for (const auto& [key, value] : ctx.metadata()) absl::StrAppend(&text, " ", key, "=", value);
    reply.set_text(std::move(text));
    co_return reply;
  }
};

// Client streaming, which no example has.
class Joiner final : public courier::test::cli::JoinerService {
 public:
  asio::awaitable<absl::StatusOr<Joined>> Join(courier::ServerContext&,
                                               courier::ServerReader<Part>& reader) override {
    Joined joined;
    while (std::optional<Part> part = co_await reader.Read()) {
      if (joined.parts() > 0) joined.mutable_text()->push_back(' ');
      joined.mutable_text()->append(part->text());
      joined.set_parts(joined.parts() + 1);
    }
    co_return joined;
  }
};

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
               std::string(s.message()).c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> uris;
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--listen" && i + 1 < argc) {
      uris.emplace_back(argv[++i]);
    } else {
      uris.clear();
      break;
    }
  }
  if (uris.empty()) {
    std::fprintf(stderr, "usage: plain_echo_server --listen URI [--listen URI ...]\n");
    return 2;
  }
  asio::io_context io(1);
  MetadataEcho echo;
  Joiner joiner;
  courier::Server server(io.get_executor());
  if (absl::Status s = server.AddService(echo); !s.ok()) return Fail(s);
  if (absl::Status s = server.AddService(joiner); !s.ok()) return Fail(s);
  for (const std::string& uri : uris) {
    absl::StatusOr<courier::Endpoint> endpoint = server.Listen(uri);
    if (!endpoint.ok()) return Fail(endpoint.status());
    std::printf("listening on %s\n", endpoint->ToString().c_str());
  }
  std::fflush(stdout);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code, int) { io.stop(); });
  io.run();
  return 0;
}
