// echo_server --listen URI [--listen URI ...] [--threads N] [--metrics-listen HOST:PORT]
// Serves courier.examples.Echo on every URI, prints "listening on URI" for each (with the real
// port for port 0), serves Prometheus metrics at http://HOST:PORT/metrics with --metrics-listen
// (printing "metrics on http://HOST:PORT/metrics"), and shuts down gracefully on SIGINT or
// SIGTERM.
#include "rpc/server.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "asio/io_context.hpp"
#include "examples/common/serve.h"
#include "examples/echo.courier.h"
#include "examples/echo/echo_service.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: echo_server --listen URI [--listen URI ...] [--threads N] "
               "[--metrics-listen HOST:PORT]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> uris;
  int threads = 0;
  std::string metrics_listen;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      uris.emplace_back(argv[++i]);
    } else if (arg == "--threads" && i + 1 < argc) {
      threads = std::atoi(argv[++i]);
    } else if (arg == "--metrics-listen" && i + 1 < argc) {
      metrics_listen = argv[++i];
    } else {
      return Usage();
    }
  }
  if (uris.empty()) return Usage();

  asio::io_context io(1);
  courier::examples::EchoServer echo;
  courier::ServerOptions options;
  options.threads = threads;
  options.metrics_listen = metrics_listen;
  courier::Server server(io.get_executor(), options);
  return courier::examples::Serve(io, server, echo, uris);
}
