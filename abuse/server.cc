#include "abuse/server.h"

#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <future>
#include <memory>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "abuse/raw_client.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/signal_set.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_future.hpp"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/service.h"

namespace courier::abuse {
namespace {

asio::awaitable<absl::StatusOr<std::string>> Echo(ServerContext&, std::string_view request) {
  co_return std::string(request);
}

asio::awaitable<absl::StatusOr<std::string>> Sleep(ServerContext& ctx, std::string_view request) {
  long ms = 0;
  auto [end, ec] = std::from_chars(request.data(), request.data() + request.size(), ms);
  if (ec != std::errc() || end != request.data() + request.size() || ms < 0) {
    co_return absl::InvalidArgumentError(
        absl::StrCat("sleep: request is not a number of milliseconds: \"",
                     std::string(request.substr(0, 32)), "\""));
  }
  // A cancel that arrived before this coroutine first ran found no operation to wake.
  if (ctx.cancelled()) co_return absl::CancelledError("sleep cancelled");
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(ms));
  auto [wait_error] = co_await timer.async_wait(transport::use_nothrow);
  if (wait_error || ctx.cancelled()) co_return absl::CancelledError("sleep cancelled");
  co_return absl::StrCat(ms);
}

}  // namespace

int ServeMain(const std::string& uri) {
  asio::io_context io(1);
  GenericService service;
  service.AddRawMethod(std::string(kEchoMethod), Echo);
  service.AddRawMethod(std::string(kSleepMethod), Sleep);
  Server* served = nullptr;
  service.AddRawMethod(
      std::string(kStatsMethod),
      [&served](ServerContext&, std::string_view) -> asio::awaitable<absl::StatusOr<std::string>> {
        co_return absl::StrCat("active_calls=", served->active_calls(),
                               " connections=", served->connections());
      });
  // Defaults everywhere, except room for the idle-connections scenario's 10 000 connections
  // plus the one that asks for the figures.
  ServerOptions options;
  options.max_connections = 12000;
  Server server(io.get_executor(), options);
  served = &server;
  if (absl::Status s = server.AddService(service); !s.ok()) {
    std::fprintf(stderr, "courier-abuse --serve: %s\n", s.ToString().c_str());
    return 1;
  }
  absl::StatusOr<Endpoint> endpoint = server.Listen(uri);
  if (!endpoint.ok()) {
    std::fprintf(stderr, "courier-abuse --serve: %s\n", endpoint.status().ToString().c_str());
    return 1;
  }
  std::printf("listening on %s\n", endpoint->ToString().c_str());
  std::fflush(stdout);
  asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](std::error_code ec, int) {
    if (ec) return;
    asio::co_spawn(
        io,
        [&]() -> asio::awaitable<void> {
          co_await server.Shutdown(std::chrono::seconds(5));
          std::printf("shut down\n");
          std::fflush(stdout);
          io.stop();  // whatever is still queued does not keep the process alive
        },
        asio::detached);
  });
  io.run();
  return 0;
}

namespace {

int PrintResult(const absl::StatusOr<std::string>& result) {
  if (result.ok()) {
    std::printf("OK\n");
  } else {
    std::printf("%s: %s\n", absl::StatusCodeToString(result.status().code()).c_str(),
                std::string(result.status().message()).c_str());
  }
  std::fflush(stdout);
  return result.ok() ? 0 : 1;
}

}  // namespace

int OneCallMain(const std::string& uri, long timeout_ms, bool blocking) {
  CallOptions options;
  options.timeout = std::chrono::milliseconds(timeout_ms);
  if (blocking) {
    absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(uri);
    if (!channel.ok()) return PrintResult(channel.status());
    std::future<absl::StatusOr<std::string>> reply =
        (*channel)->AsyncCall(std::string(kEchoMethod), "hi", options, asio::use_future);
    return PrintResult(reply.get());
  }
  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io.get_executor(), uri);
  if (!channel.ok()) return PrintResult(channel.status());
  int exit_code = 1;
  (*channel)->AsyncCall(std::string(kEchoMethod), "hi", options,
                        [&](absl::StatusOr<std::string> result) {
                          exit_code = PrintResult(result);
                          // Like echo_client: nothing keeps the channel alive past the call.
                          channel = absl::CancelledError("released");
                        });
  io.run();
  return exit_code;
}

}  // namespace courier::abuse
