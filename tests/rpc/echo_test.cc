// The RPC behaviour suite, run over every transport in the registry: calls, concurrency,
// deadlines, cancellation, errors, limits, shutdown and peer death.
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_future.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "tests/rpc/test_service.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"

namespace courier {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::courier::testing::TestService;
using internal::use_nothrow;
using ::testing::HasSubstr;
using StatusOrBytes = absl::StatusOr<std::string>;

class EchoTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer(ServerOptions options = {}) {
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_.service()), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen(GetParam().loopback_endpoint().ToString());
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = *endpoint;
  }

  std::shared_ptr<Channel> NewChannel(ChannelOptions options = {}) {
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io_.get_executor(), endpoint_.ToString(), options);
    EXPECT_THAT(channel, IsOk());
    return channel.ok() ? *channel : nullptr;
  }

  // The server replaced by one with two reactor threads, and four channels to it.
  std::vector<std::shared_ptr<Channel>> TwoThreadServerAndFourChannels() {
    server_.reset();
    ServerOptions options;
    options.threads = 2;
    StartServer(options);
    std::vector<std::shared_ptr<Channel>> channels;
    for (int i = 0; i < 4; ++i) channels.push_back(NewChannel());
    return channels;
  }

  StatusOrBytes Call(const std::shared_ptr<Channel>& channel, std::string method,
                     std::string request, CallOptions options = {}) {
    return RunCoro(io_, channel->Call(std::move(method), std::move(request), std::move(options)));
  }

  TestService service_;  // outlives the io_context, whose pending handlers refer to it
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
};

TEST_P(EchoTest, EchoesBytes) {
  auto channel = NewChannel();
  EXPECT_EQ(Call(channel, testing::kEcho, "hello").value_or("error"), "hello");
  EXPECT_EQ(Call(channel, testing::kEcho, "").value_or("error"), "");
}

TEST_P(EchoTest, ManyCallsShareOneConnection) {
  auto channel = NewChannel();
  for (int i = 0; i < 20; ++i) {
    ASSERT_THAT(Call(channel, testing::kEcho, absl::StrCat(i)), IsOk());
  }
  EXPECT_EQ(server_->connections(), 1u);
}

TEST_P(EchoTest, ThousandConcurrentCallsAnswerInAnyOrder) {
  auto channel = NewChannel();
  constexpr int kCalls = 1000;
  int ok = 0, mismatched = 0, done = 0;
  for (int i = 0; i < kCalls; ++i) {
    // Every third call sleeps, so responses come back out of order.
    const bool sleep = i % 3 == 0;
    std::string request = sleep ? std::to_string(i % 7) : absl::StrCat("call-", i);
    asio::co_spawn(io_, channel->Call(sleep ? testing::kSleep : testing::kEcho, request),
                   [&, request](std::exception_ptr, StatusOrBytes r) {
                     ++done;
                     if (!r.ok()) return;
                     ++ok;
                     if (*r != request) ++mismatched;
                   });
  }
  ASSERT_TRUE(RunUntil(
      io_, [&] { return done == kCalls; }, std::chrono::seconds(30)));
  EXPECT_EQ(ok, kCalls);
  EXPECT_EQ(mismatched, 0);
  EXPECT_EQ(server_->connections(), 1u);
}

TEST_P(EchoTest, LargeMessagesRoundTrip) {
  absl::StatusOr<transport::Traits> traits = testing::ProbeTraits(GetParam());
  ASSERT_THAT(traits, IsOk());
  if (traits->max_message != 0 && traits->max_message < 4 * 1024 * 1024 + 17) {
    GTEST_SKIP() << GetParam().scheme << " carries messages up to " << traits->max_message
                 << " bytes; MessagesOverTheTransportsLimit… covers its largest";
  }
  auto channel = NewChannel();
  std::string big(4 * 1024 * 1024 + 17, 'x');
  for (size_t i = 0; i < big.size(); i += 4096) big[i] = static_cast<char>('a' + i % 26);
  StatusOrBytes r = Call(channel, testing::kEcho, big);
  ASSERT_THAT(r, IsOk());
  EXPECT_TRUE(*r == big);
}

TEST_P(EchoTest, HandlerStatusCrossesTheWire) {
  auto channel = NewChannel();
  for (absl::StatusCode code :
       {absl::StatusCode::kNotFound, absl::StatusCode::kPermissionDenied,
        absl::StatusCode::kFailedPrecondition, absl::StatusCode::kUnauthenticated}) {
    StatusOrBytes r = Call(channel, testing::kFail, std::to_string(static_cast<int>(code)));
    EXPECT_THAT(r, StatusIs(code, HasSubstr("failed on purpose")));
  }
}

TEST_P(EchoTest, UnknownMethodIsUnimplemented) {
  auto channel = NewChannel();
  EXPECT_THAT(Call(channel, "/no.Such/Method", "x"),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("/no.Such/Method")));
  // The connection survives.
  EXPECT_THAT(Call(channel, testing::kEcho, "x"), IsOk());
}

TEST_P(EchoTest, HandlerSeesMetadataPeerAndDeadline) {
  auto channel = NewChannel();
  CallOptions options;
  options.metadata = {{"user", "alice"}};
  options.timeout = std::chrono::seconds(5);
  Metadata response_metadata;
  options.response_metadata = &response_metadata;
  StatusOrBytes r = Call(channel, testing::kInspect, "", options);
  ASSERT_THAT(r, IsOk());
  EXPECT_THAT(*r, HasSubstr("method=/courier.test.Test/Inspect"));
  EXPECT_THAT(*r, HasSubstr("user=alice"));
  EXPECT_THAT(*r, HasSubstr(absl::StrCat(";peer=", std::string(GetParam().scheme))));
  if (GetParam().scheme == "unix") {
    EXPECT_THAT(*r, HasSubstr(absl::StrCat(";uid=", getuid(), ";pid=", getpid())));
  }
  // The deadline travelled: between 0 and 5 s left when the handler ran.
  size_t at = r->find("deadline_ms=");
  ASSERT_NE(at, std::string::npos);
  int left = std::stoi(r->substr(at + 12));
  EXPECT_GT(left, 3000);
  EXPECT_LE(left, 5000);
  EXPECT_EQ(response_metadata, (Metadata{{"served-by", "test"}}));
}

TEST_P(EchoTest, DeadlineExceededOnTimeAndHandlerCancelled) {
  auto channel = NewChannel();
  CallOptions options;
  options.timeout = std::chrono::milliseconds(100);
  const auto start = Clock::now();
  StatusOrBytes r = Call(channel, testing::kSleep, "5000", options);
  const auto took = Clock::now() - start;
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_GE(took, std::chrono::milliseconds(100));
  EXPECT_LT(took, std::chrono::milliseconds(2000));
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

TEST_P(EchoTest, CancellingTheCallerCancelsTheHandler) {
  using namespace asio::experimental::awaitable_operators;
  auto channel = NewChannel();
  auto race = [&]() -> asio::awaitable<StatusOrBytes> {
    asio::steady_timer timer(io_, std::chrono::milliseconds(50));
    auto result =
        co_await (channel->Call(testing::kSleep, "5000") || timer.async_wait(use_nothrow));
    if (result.index() == 0) co_return std::get<0>(std::move(result));
    co_return absl::CancelledError("the timer won, as expected");
  };
  EXPECT_THAT(RunCoro(io_, race()), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  EXPECT_EQ(channel->calls_in_flight(), 0u);
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

TEST_P(EchoTest, CancelledCallLeavesOthersRunning) {
  using namespace asio::experimental::awaitable_operators;
  auto channel = NewChannel();
  std::optional<StatusOrBytes> survivor;
  asio::co_spawn(io_, channel->Call(testing::kSleep, "200"),
                 [&](std::exception_ptr, StatusOrBytes r) { survivor = std::move(r); });
  auto race = [&]() -> asio::awaitable<void> {
    asio::steady_timer timer(io_, std::chrono::milliseconds(20));
    co_await (channel->Call(testing::kSleep, "5000") || timer.async_wait(use_nothrow));
  };
  RunCoro(io_, race());
  ASSERT_TRUE(RunUntil(io_, [&] { return survivor.has_value(); }));
  EXPECT_THAT(*survivor, IsOk());
}

TEST_P(EchoTest, ChannelCloseCancelsCallsInFlight) {
  auto channel = NewChannel();
  std::optional<StatusOrBytes> result;
  asio::co_spawn(io_, channel->Call(testing::kSleep, "5000"),
                 [&](std::exception_ptr, StatusOrBytes r) { result = std::move(r); });
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started == 1; }));
  channel->Close();
  ASSERT_TRUE(RunUntil(io_, [&] { return result.has_value(); }));
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(Call(channel, testing::kEcho, "x"), StatusIs(absl::StatusCode::kCancelled));
  // The server notices the closed connection and cancels the handler.
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
}

TEST_P(EchoTest, CallbackAndFutureStyles) {
  auto channel = NewChannel();
  std::optional<StatusOrBytes> from_callback;
  channel->AsyncCall(testing::kEcho, "cb", {},
                     [&](StatusOrBytes r) { from_callback = std::move(r); });
  ASSERT_TRUE(RunUntil(io_, [&] { return from_callback.has_value(); }));
  EXPECT_EQ(from_callback->value_or(""), "cb");

  std::future<StatusOrBytes> future =
      channel->AsyncCall(testing::kEcho, "fut", {}, asio::use_future);
  ASSERT_TRUE(RunUntil(
      io_, [&] { return future.wait_for(std::chrono::seconds(0)) == std::future_status::ready; }));
  EXPECT_EQ(future.get().value_or(""), "fut");
}

TEST_P(EchoTest, RequestOverTheLimitIsRefusedBeforeSending) {
  ChannelOptions options;
  options.max_message_size = 1024;
  auto channel = NewChannel(options);
  EXPECT_THAT(Call(channel, testing::kEcho, std::string(2048, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(Call(channel, testing::kEcho, std::string(1000, 'x')), IsOk());
}

TEST_P(EchoTest, RequestOverTheServersLimitIsResourceExhausted) {
  server_.reset();
  ServerOptions options;
  options.max_message_size = 4096;
  StartServer(options);
  auto channel = NewChannel();
  EXPECT_THAT(Call(channel, testing::kEcho, std::string(100 * 1024, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(Call(channel, testing::kEcho, "still fine"), IsOk());
}

TEST_P(EchoTest, ResponseOverTheClientsLimitIsResourceExhausted) {
  ChannelOptions options;
  options.max_message_size = 4096;
  auto channel = NewChannel(options);
  EXPECT_THAT(Call(channel, testing::kBig, "100000"),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(Call(channel, testing::kBig, "1000"), IsOk());
}

// A transport that carries messages only up to a size of its own (udp://: its reassembly
// maximum) makes both sides refuse a larger one before sending it, whatever their own limits, and
// the connection stays usable.
TEST_P(EchoTest, MessagesOverTheTransportsLimitAreResourceExhaustedBeforeSending) {
  absl::StatusOr<transport::Traits> traits = testing::ProbeTraits(GetParam());
  ASSERT_THAT(traits, IsOk());
  if (traits->max_message == 0) {
    GTEST_SKIP() << GetParam().scheme << " has no message size limit of its own";
  }
  const size_t limit = traits->max_message;
  server_.reset();
  ServerOptions server_options;
  server_options.max_message_size = 4 * limit;
  StartServer(server_options);
  ChannelOptions options;
  options.max_message_size = 4 * limit;
  auto channel = NewChannel(options);
  // The limit bounds a frame: the message and its header (at most a few KiB more).
  EXPECT_THAT(Call(channel, testing::kEcho, std::string(limit + 65536, 'x')),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(Call(channel, testing::kBig, std::to_string(limit + 65536)),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(Call(channel, testing::kEcho, std::string(limit, 'y')).value_or("").size(), limit);
  EXPECT_EQ(Call(channel, testing::kBig, std::to_string(limit)).value_or("").size(), limit);
}

TEST_P(EchoTest, ConnectToNothingIsUnavailableNamingTheEndpoint) {
  server_.reset();
  Endpoint nowhere = GetParam().loopback_endpoint();
  if (GetParam().scheme == "tcp") nowhere = endpoint_;  // the port we just stopped using
  auto channel = Channel::Create(io_.get_executor(), nowhere.ToString());
  ASSERT_THAT(channel, IsOk());
  StatusOrBytes r = RunCoro(io_, (*channel)->Call(testing::kEcho, "x"));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(std::string(r.status().message()), HasSubstr(nowhere.ToString()));
}

TEST_P(EchoTest, ReconnectsAfterTheServerComesBack) {
  if (GetParam().scheme == "tcp") GTEST_SKIP() << "port reuse after close is not guaranteed";
  auto channel = NewChannel();
  ASSERT_THAT(Call(channel, testing::kEcho, "one"), IsOk());
  RunCoro(io_, server_->Shutdown());
  server_.reset();
  EXPECT_THAT(Call(channel, testing::kEcho, "down"), StatusIs(absl::StatusCode::kUnavailable));
  server_ = std::make_unique<Server>(io_.get_executor());
  ASSERT_THAT(server_->AddService(service_.service()), IsOk());
  ASSERT_THAT(server_->Listen(endpoint_.ToString()), IsOk());
  // The failed attempt started a backoff (1 s): a call now fails fast, as in gRPC, and one that
  // asks to wait for the connection gets through once the channel tries again.
  EXPECT_THAT(Call(channel, testing::kEcho, "backing off"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("before the next attempt")));
  EXPECT_THAT(Call(channel, testing::kEcho, "two",
                   {.timeout = std::chrono::seconds(5), .wait_for_ready = true}),
              IsOk());
}

TEST_P(EchoTest, ShutdownDrainsCallsInFlight) {
  auto channel = NewChannel();
  std::optional<StatusOrBytes> result;
  asio::co_spawn(io_, channel->Call(testing::kSleep, "200"),
                 [&](std::exception_ptr, StatusOrBytes r) { result = std::move(r); });
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started == 1; }));
  RunCoro(io_, server_->Shutdown(std::chrono::seconds(5)));
  ASSERT_TRUE(result.has_value());
  EXPECT_THAT(*result, IsOk());
  EXPECT_EQ(server_->connections(), 0u);
  // New calls find nobody listening.
  EXPECT_THAT(Call(channel, testing::kEcho, "x"), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(server_->Listen(endpoint_.ToString()),
              StatusIs(absl::StatusCode::kFailedPrecondition));
}

TEST_P(EchoTest, ShutdownCancelsCallsAfterTheDrainDeadline) {
  auto channel = NewChannel();
  std::optional<StatusOrBytes> result;
  asio::co_spawn(io_, channel->Call(testing::kSleep, "10000"),
                 [&](std::exception_ptr, StatusOrBytes r) { result = std::move(r); });
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started == 1; }));
  const auto start = Clock::now();
  RunCoro(io_, server_->Shutdown(std::chrono::milliseconds(100)));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  ASSERT_TRUE(RunUntil(io_, [&] { return result.has_value(); }));
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(service_.sleep_cancelled, 1);
}

TEST_P(EchoTest, MultiThreadedServerSpreadsConnections) {
  std::vector<std::shared_ptr<Channel>> channels = TwoThreadServerAndFourChannels();
  int done = 0, ok = 0;
  for (int i = 0; i < 200; ++i) {
    asio::co_spawn(io_, channels[i % 4]->Call(testing::kEcho, std::to_string(i)),
                   [&, i](std::exception_ptr, StatusOrBytes r) {
                     ++done;
                     if (r.ok() && *r == std::to_string(i)) ++ok;
                   });
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return done == 200; }));
  EXPECT_EQ(ok, 200);
  EXPECT_EQ(server_->connections(), 4u);
  RunCoro(io_, server_->Shutdown(std::chrono::seconds(1)));
  EXPECT_EQ(server_->connections(), 0u);
}

// Destroyed without Shutdown while its reactor threads run handlers: nothing is used after it
// is freed (ASan: an accept the listener's Close cancelled completes later on the main
// executor, with a socket made for a reactor's io_context), no handler runs on, and every call
// ends. Most end at once as their connection closes; over shm:// and fifo:// one in a few runs
// learns of it only at its deadline (3 s here), hence the wait.
TEST_P(EchoTest, MultiThreadedServerDestroyedWithCallsInFlight) {
  std::vector<std::shared_ptr<Channel>> channels = TwoThreadServerAndFourChannels();
  CallOptions call;
  call.timeout = std::chrono::seconds(3);
  int done = 0;
  for (int i = 0; i < 40; ++i) {
    asio::co_spawn(io_,
                   channels[i % 4]->Call(i % 2 ? testing::kSleep : testing::kEcho, "5000", call),
                   [&](std::exception_ptr, StatusOrBytes) { ++done; });
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started >= 20; }));
  server_.reset();
  EXPECT_TRUE(RunUntil(
      io_, [&] { return done == 40; }, std::chrono::seconds(10)));
  EXPECT_EQ(service_.sleep_finished, 0);
}

// The server runs in a child process that we SIGKILL with calls in flight.
TEST_P(EchoTest, ServerKilledWithCallsInFlightEndsEveryCallUnavailable) {
  server_.reset();
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const std::string uri = GetParam().loopback_endpoint().ToString();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(fds[0]);
    asio::io_context io;
    Server server(io.get_executor());
    if (!server.AddService(service_.service()).ok()) _exit(1);
    absl::StatusOr<Endpoint> endpoint = server.Listen(uri);
    if (!endpoint.ok()) _exit(1);
    std::string line = endpoint->ToString() + "\n";
    if (write(fds[1], line.data(), line.size()) != static_cast<ssize_t>(line.size())) _exit(1);
    io.run();
    _exit(0);
  }
  close(fds[1]);
  std::string line;
  char c;
  while (read(fds[0], &c, 1) == 1 && c != '\n') line += c;
  close(fds[0]);
  ASSERT_FALSE(line.empty());
  auto channel = Channel::Create(io_.get_executor(), line).value();
  ASSERT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "up")), IsOk());
  int done = 0;
  std::vector<StatusOrBytes> results;
  for (int i = 0; i < 10; ++i) {
    asio::co_spawn(io_, channel->Call(testing::kSleep, "20000"),
                   [&](std::exception_ptr, StatusOrBytes r) {
                     ++done;
                     results.push_back(std::move(r));
                   });
  }
  RunUntil(
      io_, [] { return false; }, std::chrono::milliseconds(100));  // requests leave
  const auto killed_at = Clock::now();
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  ASSERT_TRUE(RunUntil(
      io_, [&] { return done == 10; }, std::chrono::seconds(5)));
  EXPECT_LT(Clock::now() - killed_at, std::chrono::seconds(2));
  for (const StatusOrBytes& r : results) EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable));
}

// The client runs in a child process that we SIGKILL while its call runs on our server.
TEST_P(EchoTest, ClientKilledMidCallCancelsTheHandler) {
  const std::string uri = endpoint_.ToString();
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    asio::io_context io;
    auto channel = Channel::Create(io.get_executor(), uri).value();
    asio::co_spawn(io, channel->Call(testing::kSleep, "20000"), asio::detached);
    io.run();
    _exit(0);
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 1; }));
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  EXPECT_TRUE(
      RunUntil(io_, [&] { return server_->active_calls() == 0 && server_->connections() == 0; }));
}

// One server, one service, every transport at once.
TEST(ServerTest, ListensOnSeveralEndpointsAtOnce) {
  TestService service;
  asio::io_context io;
  Server server(io.get_executor());
  ASSERT_THAT(server.AddService(service.service()), IsOk());
  std::vector<std::shared_ptr<Channel>> channels;
  for (const transport::TransportInfo& info : transport::BuiltInTransports()) {
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<Endpoint> endpoint = server.Listen(info.loopback_endpoint().ToString());
      ASSERT_THAT(endpoint, IsOk());
      channels.push_back(Channel::Create(io.get_executor(), endpoint->ToString()).value());
    }
  }
  EXPECT_EQ(server.endpoints().size(), channels.size());
  for (auto& channel : channels) {
    EXPECT_EQ(
        RunCoro(io, channel->Call(testing::kEcho, channel->endpoint().ToString())).value_or(""),
        channel->endpoint().ToString());
  }
  EXPECT_EQ(server.connections(), channels.size());
}

// A slow handler does not hold up a fast call on the same connection.
TEST_P(EchoTest, SlowHandlerDoesNotBlockOthers) {
  auto channel = NewChannel();
  std::optional<StatusOrBytes> slow;
  asio::co_spawn(io_, channel->Call(testing::kSleep, "3000"),
                 [&](std::exception_ptr, StatusOrBytes r) { slow = std::move(r); });
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started == 1; }));
  const auto start = Clock::now();
  EXPECT_THAT(Call(channel, testing::kEcho, "fast"), IsOk());
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_FALSE(slow.has_value());
  channel->Close();
}

INSTANTIATE_TEST_SUITE_P(AllTransports, EchoTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier
