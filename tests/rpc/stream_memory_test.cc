// Flow control across two processes, over every transport in the registry: a server process
// (stream_flood_server) streams 32 KiB messages as fast as it can, a client here reads one per
// 10 ms, and neither process's resident memory grows by more than kRssBound while they do. The
// bound (README, "Streaming calls") is what the stream window, the per-connection write queue
// and the allocator's slack add up to; a stream that queued without bound would pass it within
// a tenth of a second (the writer is thousands of times faster than the reader).
//
// Resident memory under ASan measures its quarantine, not us: the test skips there.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <optional>
#include <string>

#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "streams.courier.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"

extern char** environ;

#if defined(__SANITIZE_ADDRESS__)
#define COURIER_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define COURIER_UNDER_ASAN 1
#endif
#endif

namespace courier {
namespace {

using ::courier::test::streams::Payload;
using ::courier::test::streams::StreamRequest;
using ::courier::test::streams::StreamsStub;
using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::StatusIs;

constexpr int64_t kRssBound = 8 << 20;  // bytes of growth allowed in each process
constexpr int kMessage = 32 * 1024;     // below every transport's largest message
constexpr auto kReadFor = std::chrono::seconds(3);
constexpr auto kReadEvery = std::chrono::milliseconds(10);

// Resident set of process `pid` ("self" for this one), in bytes; -1 if unreadable.
int64_t Rss(const std::string& pid) {
  std::ifstream status("/proc/" + pid + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;
  }
  return -1;
}

// The server process: started on construction, told to stop (end of file on its stdin) and
// reaped on destruction.
class FloodServer {
 public:
  explicit FloodServer(const std::string& endpoint) {
    int in[2], out[2];
    if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0) return;
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
    std::string program = COURIER_FLOOD_SERVER;
    char* argv[] = {program.data(), const_cast<char*>(endpoint.c_str()), nullptr};
    const int rc = posix_spawn(&pid_, program.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(in[0]);
    ::close(out[1]);
    stdin_ = in[1];
    if (rc != 0) {
      pid_ = 0;
      ::close(out[0]);
      return;
    }
    // Its first line is the endpoint it listens on.
    FILE* from_server = ::fdopen(out[0], "r");
    char line[512];
    if (std::fgets(line, sizeof line, from_server) != nullptr) {
      endpoint_ = line;
      if (!endpoint_.empty() && endpoint_.back() == '\n') endpoint_.pop_back();
    }
    std::fclose(from_server);
  }
  ~FloodServer() {
    if (stdin_ >= 0) ::close(stdin_);
    if (pid_ > 0) {
      int status = 0;
      ::waitpid(pid_, &status, 0);
    }
  }

  pid_t pid() const { return pid_; }
  const std::string& endpoint() const { return endpoint_; }  // empty: it did not start

 private:
  pid_t pid_ = 0;
  int stdin_ = -1;
  std::string endpoint_;
};

class StreamMemoryTest : public ::testing::TestWithParam<transport::TransportInfo> {};

TEST_P(StreamMemoryTest, FastServerAndSlowClientStayUnderTheBound) {
#ifdef COURIER_UNDER_ASAN
  GTEST_SKIP() << "resident memory under ASan is its quarantine";
#endif
  FloodServer server(GetParam().loopback_endpoint().ToString());
  ASSERT_GT(server.pid(), 0);
  ASSERT_FALSE(server.endpoint().empty()) << "the server did not start";
  const std::string server_pid = std::to_string(server.pid());

  asio::io_context io;
  absl::StatusOr<std::shared_ptr<Channel>> channel =
      Channel::Create(io.get_executor(), server.endpoint());
  ASSERT_THAT(channel, IsOk());
  StreamsStub stub(*channel);
  // Connected (the server does not serve Unary) before the baselines are taken.
  ASSERT_THAT(RunCoro(io, stub.Unary(Payload())).status(),
              StatusIs(absl::StatusCode::kUnimplemented));
  const int64_t client_base = Rss("self"), server_base = Rss(server_pid);
  ASSERT_GT(client_base, 0);
  ASSERT_GT(server_base, 0);

  StreamRequest request;
  request.set_flood_size(kMessage);
  request.set_flood_count(1'000'000);  // 32 GB: far more than a slow reader takes in kReadFor
  int messages = 0;
  int64_t client_peak = client_base, server_peak = server_base;
  absl::Status status = RunCoro(
      io,
      [&]() -> asio::awaitable<absl::Status> {
        auto call = stub.Download(request);
        asio::steady_timer pause(co_await asio::this_coro::executor);
        const auto stop = std::chrono::steady_clock::now() + kReadFor;
        while (std::chrono::steady_clock::now() < stop) {
          std::optional<Payload> p = co_await call.Read();
          if (!p) break;
          ++messages;
          client_peak = std::max(client_peak, Rss("self"));
          server_peak = std::max(server_peak, Rss(server_pid));
          pause.expires_after(kReadEvery);
          co_await pause.async_wait(internal::use_nothrow);
        }
        call.Cancel();
        co_return co_await call.Finish();
      }(),
      std::chrono::seconds(30));
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kCancelled));
  // One message per 10 ms for 3 s, give or take a slow machine: the stream kept going.
  EXPECT_GE(messages, 100);
  std::printf("%s: %d messages read; growth: client %lld KiB, server %lld KiB (bound %lld KiB)\n",
              std::string(GetParam().scheme).c_str(), messages,
              static_cast<long long>((client_peak - client_base) >> 10),
              static_cast<long long>((server_peak - server_base) >> 10),
              static_cast<long long>(kRssBound >> 10));
  EXPECT_LE(client_peak - client_base, kRssBound);
  EXPECT_LE(server_peak - server_base, kRssBound);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, StreamMemoryTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier
