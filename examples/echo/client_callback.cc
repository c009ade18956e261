// echo_client_callback --connect URI [--count N] TEXT
// The callback style: each reply arrives in a completion handler that starts the next call; no
// coroutine in sight. Prints the last reply; on failure the status code name and message on
// stderr, exit 1.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "asio/io_context.hpp"
#include "examples/echo.courier.h"
#include "rpc/channel.h"

namespace {

using courier::examples::EchoReply;
using courier::examples::EchoRequest;

// Makes `remaining` calls one after another, each started from the previous one's callback.
struct CallChain {
  courier::examples::EchoStub stub;
  EchoRequest request;
  long remaining = 1;
  int exit_code = 1;

  void Next() {
    stub.AsyncSay(request, {}, [this](absl::StatusOr<EchoReply> reply) {
      if (!reply.ok()) {
        std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(reply.status().code()).c_str(),
                     std::string(reply.status().message()).c_str());
        stub.channel()->Close();
        return;
      }
      if (--remaining > 0) return Next();
      std::printf("%s\n", reply->text().c_str());
      exit_code = 0;
      stub.channel()->Close();  // lets io.run() return
    });
  }
};

}  // namespace

int main(int argc, char** argv) {
  std::string uri, text;
  long count = 1;
  bool have_text = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--connect" && i + 1 < argc) {
      uri = argv[++i];
    } else if (arg == "--count" && i + 1 < argc) {
      count = std::max(1L, std::atol(argv[++i]));
    } else if (!arg.starts_with("--") && !have_text) {
      text = std::string(arg);
      have_text = true;
    } else {
      have_text = false;
      break;
    }
  }
  if (uri.empty() || !have_text) {
    std::fprintf(stderr, "usage: echo_client_callback --connect URI [--count N] TEXT\n");
    return 2;
  }
  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<courier::Channel>> channel =
      courier::Channel::Create(io.get_executor(), uri);
  if (!channel.ok()) {
    std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(channel.status().code()).c_str(),
                 std::string(channel.status().message()).c_str());
    return 1;
  }
  CallChain chain{courier::examples::EchoStub(*channel), {}, count};
  chain.request.set_text(text);
  chain.Next();
  io.run();
  return chain.exit_code;
}
