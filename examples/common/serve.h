// The part every example server's main() shares: add the service with server reflection and
// health checking (so the `courier` tool can list, describe, call and probe it), listen on each
// URI printing "listening on URI" (the real port for port 0), then "metrics on
// http://HOST:PORT/metrics" if the server was given ServerOptions::metrics_listen (--metrics-listen
// ADDR in the examples; the real port), serve until SIGINT/SIGTERM, then
// shut down gracefully (health goes NOT_SERVING; 5 s drain; the server closes whatever is left
// soon after) and print "shut down".
// A second SIGINT/SIGTERM exits at once. Header-only, for examples.
#pragma once

#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/signal_set.hpp"
#include "rpc/server.h"
#include "rpc/service.h"
#include "services/health.h"
#include "services/reflection.h"

namespace courier::examples {

// Returns the process exit code: 0 after a graceful shutdown, 1 if a URI could not be served
// (the status code name and message go to stderr). `before_shutdown`, if set, runs on `io` when
// the first signal arrives, before the drain: a service whose calls never end on their own
// (pubsub's subscriptions) ends them there, or the drain would wait its whole 5 s for them.
inline int Serve(asio::io_context& io, Server& server, ServiceBase& service,
                 const std::vector<std::string>& uris,
                 std::function<void()> before_shutdown = nullptr) {
  auto fail = [](const absl::Status& s) {
    std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(s.code()).c_str(),
                 std::string(s.message()).c_str());
    return 1;
  };
  if (absl::Status s = server.AddService(service); !s.ok()) return fail(s);
  if (absl::Status s = EnableReflection(server); !s.ok()) return fail(s);
  if (absl::StatusOr<std::shared_ptr<Health>> health = EnableHealth(server); !health.ok()) {
    return fail(health.status());
  }
  for (const std::string& uri : uris) {
    absl::StatusOr<Endpoint> endpoint = server.Listen(uri);
    if (!endpoint.ok()) return fail(endpoint.status());
    std::printf("listening on %s\n", endpoint->ToString().c_str());
  }
  if (!server.metrics_endpoint().empty()) {
    std::printf("metrics on http://%s/metrics\n", server.metrics_endpoint().c_str());
  }
  std::fflush(stdout);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code ec, int) {
    if (ec) return;
    // The second signal: the user does not want to wait for the drain.
    signals.async_wait([&](std::error_code ec, int signal) {
      if (ec) return;
      std::fprintf(stderr, "second signal %d: exiting without finishing the shutdown\n", signal);
      std::fflush(stdout);
      std::_Exit(1);
    });
    if (before_shutdown) before_shutdown();
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await server.Shutdown(std::chrono::seconds(5));
          std::printf("shut down\n");
          std::fflush(stdout);
          signals.cancel();
        },
        asio::detached);
  });
  io.run();
  return 0;
}

}  // namespace courier::examples
