// pubsub_server --listen URI [--listen URI ...] [--max-queued-events N]
//               [--metrics-listen HOST:PORT]
// The publish/subscribe service of pubsub.proto, in memory. Prints "listening on URI" per
// endpoint; on SIGINT or SIGTERM ends every subscription (UNAVAILABLE) and shuts down
// gracefully. A subscriber with N events (default 1024) waiting for it at the server is ended
// with RESOURCE_EXHAUSTED "subscriber fell N events behind".
#include "rpc/server.h"

#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/numbers.h"
#include "asio/io_context.hpp"
#include "examples/common/serve.h"
#include "examples/pubsub/pubsub_service.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: pubsub_server --listen URI [--listen URI ...] [--max-queued-events N] "
               "[--metrics-listen HOST:PORT]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> uris;
  courier::examples::pubsub::BrokerOptions options;
  courier::ServerOptions server_options;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      uris.emplace_back(argv[++i]);
    } else if (arg == "--metrics-listen" && i + 1 < argc) {
      server_options.metrics_listen = argv[++i];
    } else if (arg == "--max-queued-events" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &options.max_queued_events) ||
          options.max_queued_events == 0) {
        return Usage();
      }
    } else {
      return Usage();
    }
  }
  if (uris.empty()) return Usage();

  asio::io_context io(1);
  // The broker keeps its state on this one thread: the server runs no threads of its own.
  courier::examples::pubsub::Broker broker(io.get_executor(), options);
  courier::Server server(io.get_executor(), server_options);
  return courier::examples::Serve(io, server, broker, uris, [&] { broker.Shutdown(); });
}
