// RPC under network faults, over every byte-stream transport in the registry: a FaultProxy sits
// between Channel and Server and slices, delays, cuts, resets, stalls or blackholes the bytes.
// Every case ends with a ResourceLedger check: descriptors, threads and the server's
// connections and active calls come back to where they were.
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "tests/rpc/test_service.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/resource_ledger.h"
#include "tests/testing/status_matchers.h"
#include "transport/frame.h"
#include "transport/registry.h"

namespace courier {
namespace {

using ::courier::testing::Direction;
using ::courier::testing::Fault;
using ::courier::testing::FaultProxy;
using ::courier::testing::IsOk;
using ::courier::testing::kBothDirections;
using ::courier::testing::ResourceLedger;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::courier::testing::TestService;
using std::chrono::milliseconds;
using StatusOrBytes = absl::StatusOr<std::string>;

// How long everything may take to come back after a test closes its channel.
constexpr milliseconds kLedgerBound(3000);

class FaultTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    absl::StatusOr<transport::Traits> traits = testing::ProbeTraits(GetParam());
    ASSERT_THAT(traits, IsOk());
    if (traits->message_boundaries) GTEST_SKIP() << "FaultProxy serves byte streams only";
    max_message_ = traits->max_message;
    server_ = std::make_unique<Server>(io_.get_executor());
    ASSERT_THAT(server_->AddService(service_.service()), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen(GetParam().loopback_endpoint().ToString());
    ASSERT_THAT(endpoint, IsOk());
    absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
        FaultProxy::Start(io_.get_executor(), GetParam(), *endpoint);
    ASSERT_THAT(proxy, IsOk());
    proxy_ = *std::move(proxy);

    // One call through the proxy before the snapshot: Asio starts a resolver thread on the first
    // TCP connect and keeps it for the io_context's life. Then wait until its descriptors are
    // all closed again, so that the baseline holds none of them.
    const size_t fds = ResourceLedger::OpenFds().size();
    std::shared_ptr<Channel> warm = NewChannel();
    ASSERT_NE(warm, nullptr);
    ASSERT_THAT(RunCoro(io_, warm->Call(testing::kEcho, "warm up")), IsOk());
    warm->Close();
    warm.reset();
    ASSERT_TRUE(RunUntil(io_, [&] {
      return server_->connections() == 0 && proxy_->connections() == 0 &&
             ResourceLedger::OpenFds().size() <= fds;
    }));
    ledger_.emplace(server_.get());
    ledger_->Track("proxy connections", [this] { return proxy_->connections(); });
  }

  std::shared_ptr<Channel> NewChannel(ChannelOptions options = {}) {
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io_.get_executor(), proxy_->endpoint().ToString(), options);
    EXPECT_THAT(channel, IsOk());
    return channel.ok() ? *channel : nullptr;
  }

  StatusOrBytes Call(const std::shared_ptr<Channel>& channel, std::string method,
                     std::string request, CallOptions options = {}) {
    return RunCoro(io_, channel->Call(std::move(method), std::move(request), std::move(options)));
  }

  // Starts a call in the background; the result appears when it completes.
  std::shared_ptr<std::optional<StatusOrBytes>> Spawn(const std::shared_ptr<Channel>& channel,
                                                      std::string method, std::string request,
                                                      CallOptions options = {}) {
    auto result = std::make_shared<std::optional<StatusOrBytes>>();
    asio::co_spawn(io_, channel->Call(std::move(method), std::move(request), std::move(options)),
                   [result](std::exception_ptr e, StatusOrBytes r) {
                     result->emplace(e ? absl::InternalError("exception") : std::move(r));
                   });
    return result;
  }

  // Closes `channel` and checks that everything comes back.
  ::testing::AssertionResult CloseAndCheckLedger(std::shared_ptr<Channel>& channel) {
    channel->Close();
    channel.reset();
    return ledger_->ExpectBackToBaseline(io_, kLedgerBound);
  }

  TestService service_;  // outlives the io_context, whose pending handlers refer to it
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  std::unique_ptr<FaultProxy> proxy_;
  size_t max_message_ = 0;  // the transport's own limit (Traits::max_message)
  std::optional<ResourceLedger> ledger_;
};

std::string Pattern(size_t size) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i) out[i] = static_cast<char>('a' + (i * 7 + i / 26) % 26);
  return out;
}

TEST_P(FaultTest, OneByteSlicesBothWaysStillEcho) {
  // The warm-up call in SetUp went through unsliced.
  const testing::DirectionStats before[] = {proxy_->stats(Direction::kClientToServer),
                                            proxy_->stats(Direction::kServerToClient)};
  for (Direction direction : kBothDirections) proxy_->Set(direction, Fault::Slice(1));
  auto channel = NewChannel();
  // The hello exchange, too, arrives a byte at a time.
  for (const std::string& request : {std::string("hello"), std::string(), Pattern(3000)}) {
    EXPECT_EQ(Call(channel, testing::kEcho, request).value_or("error"), request);
  }
  // Concurrent calls, whose frames the proxy interleaves byte by byte with nothing lost.
  std::vector<std::shared_ptr<std::optional<StatusOrBytes>>> results;
  for (int i = 0; i < 10; ++i) {
    results.push_back(Spawn(channel, testing::kEcho, absl::StrCat("call-", i)));
  }
  ASSERT_TRUE(RunUntil(io_, [&] {
    for (auto& r : results)
      if (!r->has_value()) return false;
    return true;
  }));
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ(results[i]->value().value_or("error"), absl::StrCat("call-", i));
  }
  EXPECT_EQ(server_->connections(), 1u);
  for (Direction direction : kBothDirections) {
    const testing::DirectionStats& now = proxy_->stats(direction);
    const testing::DirectionStats& then = before[static_cast<int>(direction)];
    EXPECT_EQ(now.writes - then.writes, now.bytes_forwarded - then.bytes_forwarded)
        << testing::DirectionName(direction);
    EXPECT_GT(now.writes - then.writes, 3000u) << testing::DirectionName(direction);
  }
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

TEST_P(FaultTest, DelayLongerThanTheDeadlineIsDeadlineExceededAndCancelsTheHandler) {
  auto channel = NewChannel();
  ASSERT_THAT(Call(channel, testing::kEcho, "connected"), IsOk());
  for (Direction direction : kBothDirections) {
    proxy_->Set(direction, Fault::Delay(milliseconds(300)));
  }
  CallOptions options;
  options.timeout = milliseconds(100);
  const auto start = Clock::now();
  EXPECT_THAT(Call(channel, testing::kSleep, "5000", options),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  const auto took = Clock::now() - start;
  EXPECT_GE(took, milliseconds(100));
  EXPECT_LT(took, milliseconds(2000));
  // The request still reaches the server (late); its handler must not run to the end.
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  EXPECT_EQ(service_.sleep_started, 1);
  EXPECT_EQ(service_.sleep_finished, 0);
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
  proxy_->ClearFaults();
  EXPECT_EQ(Call(channel, testing::kEcho, "after").value_or("error"), "after");
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

TEST_P(FaultTest, CutInTheMiddleOfARequestFrameIsUnavailableAndTheServerDropsTheConnection) {
  auto channel = NewChannel();
  ASSERT_THAT(Call(channel, testing::kEcho, "connected"), IsOk());
  ASSERT_EQ(server_->connections(), 1u);
  // The next bytes up are the request frame: its header and 10 bytes of its payload pass.
  proxy_->Set(Direction::kClientToServer, Fault::CutAfter(transport::kFrameHeaderSize + 10));
  EXPECT_THAT(Call(channel, testing::kEcho, Pattern(1000)),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
  EXPECT_EQ(server_->active_calls(), 0u);
  EXPECT_GT(proxy_->bytes_forwarded(Direction::kClientToServer), 0u);
  // The channel dials again.
  proxy_->ClearFaults();
  EXPECT_EQ(Call(channel, testing::kEcho, "again").value_or("error"), "again");
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

TEST_P(FaultTest, ResetMidCallIsUnavailablePromptlyAndCancelsTheHandler) {
  auto channel = NewChannel();
  CallOptions options;
  options.timeout = std::chrono::seconds(20);
  auto result = Spawn(channel, testing::kSleep, "8000", options);
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started == 1; }));
  const auto reset_at = Clock::now();
  proxy_->ResetAll();
  ASSERT_TRUE(RunUntil(
      io_, [&] { return result->has_value(); }, std::chrono::seconds(2)));
  EXPECT_LT(Clock::now() - reset_at, std::chrono::seconds(1));
  EXPECT_THAT(**result, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  EXPECT_TRUE(
      RunUntil(io_, [&] { return server_->connections() == 0 && server_->active_calls() == 0; }));
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

TEST_P(FaultTest, StalledResponsesMakeCallsHitTheirDeadlineAndTheChannelRecovers) {
  auto channel = NewChannel();
  ASSERT_THAT(Call(channel, testing::kEcho, "connected"), IsOk());
  proxy_->Set(Direction::kServerToClient, Fault::Stall());
  CallOptions options;
  options.timeout = milliseconds(200);
  // The client keeps calling, one after another and many at once; every call ends at its
  // deadline.
  for (int i = 0; i < 3; ++i) {
    EXPECT_THAT(Call(channel, testing::kEcho, absl::StrCat("stalled-", i), options),
                StatusIs(absl::StatusCode::kDeadlineExceeded));
  }
  std::vector<std::shared_ptr<std::optional<StatusOrBytes>>> results;
  for (int i = 0; i < 20; ++i) {
    results.push_back(Spawn(channel, testing::kEcho, absl::StrCat("many-", i), options));
  }
  ASSERT_TRUE(RunUntil(
      io_,
      [&] {
        for (auto& r : results)
          if (!r->has_value()) return false;
        return true;
      },
      std::chrono::seconds(5)));
  for (auto& r : results) EXPECT_THAT(**r, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(channel->calls_in_flight(), 0u);
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));

  proxy_->Set(Direction::kServerToClient, Fault{});
  EXPECT_EQ(Call(channel, testing::kEcho, "resumed").value_or("error"), "resumed");
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

// The request is larger than the socket buffers, so the client's write itself is stuck: the call
// must still end at its deadline, and so must a small call queued behind it.
TEST_P(FaultTest, StalledLargeRequestHitsItsDeadlineAndTheChannelRecovers) {
  auto channel = NewChannel();
  ASSERT_THAT(Call(channel, testing::kEcho, "connected"), IsOk());
  proxy_->Set(Direction::kClientToServer, Fault::Stall());
  CallOptions options;
  options.timeout = milliseconds(300);
  // 8 MiB, or the most the transport carries in one message (udp://: 1 MiB, its whole window).
  size_t size = 8 << 20;
  if (max_message_ != 0) size = std::min(size, max_message_);
  EXPECT_THAT(Call(channel, testing::kEcho, Pattern(size), options),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(Call(channel, testing::kEcho, "small", options),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(channel->calls_in_flight(), 0u);
  proxy_->Set(Direction::kClientToServer, Fault{});
  EXPECT_EQ(Call(channel, testing::kEcho, "resumed").value_or("error"), "resumed");
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

// Nothing comes back and nothing is refused: only keepalive can tell the connection is dead.
TEST_P(FaultTest, BlackholedConnectionIsDetectedByKeepaliveAndTheHandlerCancelled) {
  ChannelOptions channel_options;
  channel_options.keepalive_interval = milliseconds(200);
  channel_options.keepalive_timeout = milliseconds(300);
  auto channel = NewChannel(channel_options);
  CallOptions options;
  options.timeout = std::chrono::seconds(20);
  auto result = Spawn(channel, testing::kSleep, "8000", options);
  ASSERT_TRUE(RunUntil(io_, [&] { return service_.sleep_started == 1; }));
  for (Direction direction : kBothDirections) proxy_->Set(direction, Fault::Blackhole());
  ASSERT_TRUE(RunUntil(
      io_, [&] { return result->has_value(); }, std::chrono::seconds(3)));
  EXPECT_THAT(**result, StatusIs(absl::StatusCode::kUnavailable));
  // The client closed its connection, so the proxy ends the server's, which cancels the handler.
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  EXPECT_TRUE(
      RunUntil(io_, [&] { return server_->connections() == 0 && server_->active_calls() == 0; }));
  proxy_->ClearFaults();
  EXPECT_EQ(Call(channel, testing::kEcho, "again").value_or("error"), "again");
  EXPECT_TRUE(CloseAndCheckLedger(channel));
}

INSTANTIATE_TEST_SUITE_P(AllTransports, FaultTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier
