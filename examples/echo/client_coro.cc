// echo_client --connect URI [--count N] [--size BYTES] [--timeout-ms MS] TEXT
// Calls courier.examples.Echo/Say with coroutines and prints the reply. With --count N, makes N
// sequential calls and prints "N calls, p50 X us, p99 Y us". --size pads TEXT to BYTES bytes.
// On failure prints the status code name and message to stderr and exits 1.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "examples/echo.courier.h"
#include "rpc/channel.h"

namespace {

using courier::examples::EchoReply;
using courier::examples::EchoRequest;

struct Flags {
  std::string uri;
  long count = 0;
  long size = -1;
  long timeout_ms = 10000;
  std::string text;
};

int Usage() {
  std::fprintf(stderr,
               "usage: echo_client --connect URI [--count N] [--size BYTES] [--timeout-ms MS] "
               "TEXT\n");
  return 2;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

asio::awaitable<int> Run(asio::io_context& io, Flags flags) {
  absl::StatusOr<std::shared_ptr<courier::Channel>> channel =
      courier::Channel::Create(io.get_executor(), flags.uri);
  if (!channel.ok()) co_return Fail(channel.status());
  EchoRequest request;
  request.set_text(flags.text);
  if (flags.size >= 0) {
    std::string text = flags.text.empty() ? std::string("x") : flags.text;
    std::string padded;
    while (padded.size() < static_cast<size_t>(flags.size)) padded += text;
    padded.resize(static_cast<size_t>(flags.size));
    request.set_text(std::move(padded));
  }
  courier::examples::EchoStub stub(*channel);
  courier::CallOptions options;
  options.timeout = std::chrono::milliseconds(flags.timeout_ms);

  const long calls = std::max(1L, flags.count);
  std::vector<double> micros;
  micros.reserve(calls);
  EchoReply reply;
  for (long i = 0; i < calls; ++i) {
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<EchoReply> response = co_await stub.Say(request, options);
    auto elapsed = std::chrono::steady_clock::now() - start;
    if (!response.ok()) co_return Fail(response.status());
    reply = *std::move(response);
    micros.push_back(std::chrono::duration<double, std::micro>(elapsed).count());
  }
  if (flags.count <= 0) {
    std::printf("%s\n", reply.text().c_str());
  } else {
    std::sort(micros.begin(), micros.end());
    auto pct = [&](double p) {
      return micros[std::min(micros.size() - 1, static_cast<size_t>(p * micros.size()))];
    };
    std::printf("%ld calls, p50 %.1f us, p99 %.1f us\n", calls, pct(0.50), pct(0.99));
  }
  co_return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  bool have_text = false;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--connect" && i + 1 < argc) {
      flags.uri = argv[++i];
    } else if (arg == "--count" && i + 1 < argc) {
      flags.count = std::atol(argv[++i]);
    } else if (arg == "--size" && i + 1 < argc) {
      flags.size = std::atol(argv[++i]);
    } else if (arg == "--timeout-ms" && i + 1 < argc) {
      flags.timeout_ms = std::atol(argv[++i]);
    } else if (!arg.starts_with("--") && !have_text) {
      flags.text = std::string(arg);
      have_text = true;
    } else {
      return Usage();
    }
  }
  if (flags.uri.empty() || !have_text) return Usage();
  asio::io_context io(1);
  int exit_code = 1;
  asio::co_spawn(io, Run(io, flags),
                 [&](std::exception_ptr e, int code) { exit_code = e ? 1 : code; });
  io.run();
  return exit_code;
}
