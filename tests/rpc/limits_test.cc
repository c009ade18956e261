// The bounds a peer cannot push past, over every transport: concurrent calls per connection,
// queued bytes (backpressure), time limits (mid-frame stall, idle), abuse budgets (cancel and
// ping floods), bounded shutdown, ordered deadline bookkeeping; on the client, connection
// backoff, wait_for_ready, and calls that let go of everything when they give up; and the wire
// rules of PROTOCOL.md as a hostile peer meets them.
#include <algorithm>
#include <array>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/steady_timer.hpp"
#include "asio/write.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/log.h"
#include "rpc/server.h"
#include "tests/rpc/raw_peer.h"
#include "tests/rpc/test_service.h"
#include "tests/testing/descriptor_limit.h"
#include "tests/testing/fault_proxy.h"
#include "tests/testing/status_matchers.h"
#include "transport/framed_connection.h"
#include "transport/registry.h"
#include "transport/shm/segment.h"

namespace courier {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::RawPeer;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;
using transport::FrameType;
using StatusOrBytes = absl::StatusOr<std::string>;

class LimitsTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    SetLogSink([this](LogSeverity, std::string_view line) { logs_.emplace_back(line); });
  }
  void TearDown() override {
    server_.reset();
    SetLogSink(nullptr);
  }

  void StartServer(ServerOptions options = {}) {
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_.service()), IsOk());
    endpoint_ = server_->Listen(GetParam().loopback_endpoint().ToString()).value();
  }
  std::unique_ptr<RawPeer> Raw() { return RawPeer::Connect(io_, GetParam(), endpoint_); }
  std::shared_ptr<Channel> NewChannel(ChannelOptions options = {}) {
    return Channel::Create(io_.get_executor(), endpoint_.ToString(), options).value();
  }
  void ExpectStillServing() {
    auto channel = NewChannel();
    EXPECT_EQ(RunCoro(io_, channel->Call(testing::kEcho, "alive")).value_or(""), "alive");
  }
  bool Logged(const std::string& fragment) const {
    return std::any_of(logs_.begin(), logs_.end(),
                       [&](const std::string& line) { return line.find(fragment) != line.npos; });
  }
  // Writes echo requests of `size` bytes without reading anything back, until the kernel has
  // taken nothing for half a second or `limit` bytes went out; returns the bytes written.
  size_t FloodWithoutReading(RawPeer& peer, size_t size, size_t limit) {
    std::string bytes = testing::HelloBytes();
    size_t written = 0;
    int idle_rounds = 0;
    for (uint32_t id = 1; written < limit && idle_rounds < 50;) {
      if (bytes.empty())
        bytes = testing::RequestBytes(id++, testing::kEcho, std::string(size, 'x'));
      const size_t n = peer.TryWrite(bytes);
      written += n;
      bytes.erase(0, n);
      if (n == 0) {
        ++idle_rounds;
        io_.restart();
        io_.run_for(std::chrono::milliseconds(10));
      } else {
        idle_rounds = 0;
        io_.restart();
        io_.poll();
      }
    }
    return written;
  }

  testing::TestService service_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
  std::vector<std::string> logs_;
};

TEST_P(LimitsTest, HelloAnnouncesTheConcurrencyLimit) {
  StartServer({.max_concurrent_calls = 7});
  auto peer = Raw();
  ASSERT_NE(peer, nullptr);
  peer->ReadUntil(io_, [](const std::string& in) { return !testing::Frames(in).empty(); });
  std::vector<transport::Frame> frames = testing::Frames(peer->received());
  ASSERT_FALSE(frames.empty());
  ASSERT_EQ(frames[0].type, FrameType::kHello);
  wire::Hello hello;
  ASSERT_TRUE(hello.ParseFromString(frames[0].payload));
  EXPECT_EQ(hello.max_concurrent_calls(), 7u);
}

// A client that ignores the announced limit gets RESOURCE_EXHAUSTED for the calls beyond it.
TEST_P(LimitsTest, RequestsOverTheConcurrencyLimitAreRefused) {
  StartServer({.max_concurrent_calls = 4});
  auto peer = Raw();
  std::string bytes = testing::HelloBytes();
  for (uint32_t id = 1; id <= 6; ++id) bytes += testing::RequestBytes(id, testing::kSleep, "5000");
  ASSERT_THAT(peer->Write(io_, bytes), IsOk());
  peer->ReadUntil(io_, [](const std::string& in) { return testing::Responses(in).size() >= 2; });
  std::vector<testing::RawResponse> responses = testing::Responses(peer->received());
  ASSERT_EQ(responses.size(), 2u);
  for (const auto& r : responses) {
    EXPECT_GE(r.call_id, 5u);
    EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("limit is 4")));
  }
  EXPECT_EQ(service_.sleep_started, 4);
  EXPECT_EQ(server_->stats().calls_refused, 2u);
}

// A Channel keeps to the server's limit and queues the rest, so every call succeeds.
TEST_P(LimitsTest, ChannelQueuesCallsBeyondTheServersLimit) {
  StartServer({.max_concurrent_calls = 2});
  auto channel = NewChannel();
  constexpr int kCalls = 10;
  int ok = 0, done = 0;
  size_t most_active = 0;
  for (int i = 0; i < kCalls; ++i) {
    asio::co_spawn(io_, channel->Call(testing::kSleep, "20"),
                   [&](std::exception_ptr, StatusOrBytes r) {
                     ok += r.ok();
                     ++done;
                   });
  }
  ASSERT_TRUE(RunUntil(io_, [&] {
    most_active = std::max(most_active, server_->active_calls());
    return done == kCalls;
  }));
  EXPECT_EQ(ok, kCalls);
  EXPECT_LE(most_active, 2u);
  EXPECT_EQ(server_->stats().calls_refused, 0u);
}

// A client that writes requests and reads nothing: once the server's queue of responses is over
// its bound, the server stops reading, so the kernel pushes back and the client's writes stall.
// (Before, the server read everything: memory grew 1:1 with the bytes sent.)
TEST_P(LimitsTest, NonReadingClientIsPushedBack) {
  StartServer({.max_queued_bytes = 1 << 20});
  auto peer = Raw();
  ASSERT_NE(peer, nullptr);
  const size_t limit = 256u << 20;
  const size_t written = FloodWithoutReading(*peer, 64 * 1024, limit);
  EXPECT_LT(written, 64u << 20) << "the server kept reading a client that does not read";
  EXPECT_EQ(server_->connections(), 1u);
  ExpectStillServing();
}

// Shutdown completes within its drain deadline plus a small bound, even with a client that does
// not read (before, it never completed).
TEST_P(LimitsTest, ShutdownIsBoundedWithANonReadingClient) {
  StartServer({.max_queued_bytes = 1 << 20});
  auto peer = Raw();
  FloodWithoutReading(*peer, 64 * 1024, 256u << 20);
  const auto start = Clock::now();
  RunCoro(io_, server_->Shutdown(std::chrono::milliseconds(200)), std::chrono::seconds(20));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_EQ(server_->connections(), 0u);
}

TEST_P(LimitsTest, ShutdownIsBoundedWhenAHandlerIgnoresCancellation) {
  GenericService stubborn;
  stubborn.AddRawMethod("/courier.test.Stubborn/Wait",
                        [](ServerContext&, std::string_view) -> asio::awaitable<StatusOrBytes> {
                          co_await asio::this_coro::throw_if_cancelled(false);
                          asio::steady_timer t(co_await asio::this_coro::executor);
                          for (int i = 0; i < 100; ++i) {  // 10 s, whatever cancellation says
                            t.expires_after(std::chrono::milliseconds(100));
                            co_await t.async_wait(internal::use_nothrow);
                          }
                          co_return std::string("late");
                        });
  server_ = std::make_unique<Server>(io_.get_executor());
  ASSERT_THAT(server_->AddService(stubborn), IsOk());
  endpoint_ = server_->Listen(GetParam().loopback_endpoint().ToString()).value();
  auto channel = NewChannel();
  std::optional<StatusOrBytes> result;
  asio::co_spawn(io_, channel->Call("/courier.test.Stubborn/Wait", ""),
                 [&](std::exception_ptr, StatusOrBytes r) { result = std::move(r); });
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 1; }));
  const auto start = Clock::now();
  RunCoro(io_, server_->Shutdown(std::chrono::milliseconds(100)), std::chrono::seconds(20));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  ASSERT_TRUE(RunUntil(io_, [&] { return result.has_value(); }));
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kUnavailable));
}

TEST_P(LimitsTest, PeerStalledInTheMiddleOfAFrameIsDropped) {
  StartServer({.frame_stall_timeout = std::chrono::milliseconds(200)});
  auto peer = Raw();
  std::string request = testing::RequestBytes(1, testing::kEcho, "hello");
  ASSERT_THAT(peer->Write(io_, testing::HelloBytes() + request.substr(0, 20)), IsOk());
  peer->ReadUntilClosed(io_);
  EXPECT_TRUE(peer->closed());
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
  EXPECT_TRUE(Logged("stalled in the middle of a frame")) << ::testing::PrintToString(logs_);
}

TEST_P(LimitsTest, IdleConnectionIsClosedAndTheChannelRedials) {
  StartServer({.idle_timeout = std::chrono::milliseconds(200)});
  auto channel = NewChannel({.keepalive_interval = std::chrono::seconds(0)});
  ASSERT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "one")), IsOk());
  EXPECT_EQ(server_->connections(), 1u);
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
  EXPECT_TRUE(RunUntil(io_, [&] { return !channel->connected(); })) << "the goaway arrives";
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "two")), IsOk());
}

// A connection starts with a small read buffer (an idle connection must cost little).
TEST_P(LimitsTest, ReadBufferStartsSmall) {
  auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
  auto listener = transport->Listen(GetParam().loopback_endpoint()).value();
  auto accept = [&]() -> asio::awaitable<absl::StatusOr<std::unique_ptr<transport::Connection>>> {
    co_return co_await listener->Accept(io_.get_executor());
  };
  std::optional<absl::StatusOr<std::unique_ptr<transport::Connection>>> accepted;
  asio::co_spawn(io_, accept(), [&](std::exception_ptr, auto r) { accepted = std::move(r); });
  auto client = RunCoro(io_, transport->Connect(listener->local_endpoint())).value();
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  transport::FramedConnection server(std::move(**accepted));
  transport::FramedConnection framed_client(std::move(client));
  transport::Frame ping{FrameType::kPing, 0, 0, "x"};
  ASSERT_THAT(RunCoro(io_, framed_client.WriteFrame(ping)), IsOk());
  ASSERT_THAT(RunCoro(io_, server.ReadFrame()), IsOk());
  EXPECT_LE(server.read_buffer_size(), 4096u);
}

// A REQUEST+CANCEL flood (HTTP/2's rapid reset): GOAWAY and close, and others are unaffected.
TEST_P(LimitsTest, CancelFloodGetsGoAway) {
  StartServer();
  auto peer = Raw();
  std::string bytes = testing::HelloBytes();
  for (uint32_t id = 1; id <= 3000; ++id) {
    bytes += testing::RequestBytes(id, testing::kSleep, "10000");
    bytes += testing::ControlBytes(FrameType::kCancel, id);
  }
  (void)peer->Write(io_, bytes);
  peer->ReadUntilClosed(io_);
  EXPECT_TRUE(peer->closed());
  std::vector<transport::Frame> frames = testing::Frames(peer->received());
  EXPECT_TRUE(std::any_of(frames.begin(), frames.end(), [](const transport::Frame& f) {
    return f.type == FrameType::kGoAway && f.payload.find("too many cancels") != std::string::npos;
  }));
  EXPECT_EQ(server_->stats().connections_closed_for_abuse, 1u);
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
  ExpectStillServing();
}

TEST_P(LimitsTest, PingFloodGetsGoAway) {
  StartServer();
  auto peer = Raw();
  std::string bytes = testing::HelloBytes();
  for (int i = 0; i < 1000; ++i) bytes += testing::ControlBytes(FrameType::kPing, 0, "12345678");
  (void)peer->Write(io_, bytes);
  peer->ReadUntilClosed(io_);
  EXPECT_TRUE(peer->closed());
  std::vector<transport::Frame> frames = testing::Frames(peer->received());
  const auto pongs = std::count_if(frames.begin(), frames.end(), [](const transport::Frame& f) {
    return f.type == FrameType::kPong;
  });
  EXPECT_LE(pongs, 101);
  EXPECT_TRUE(std::any_of(frames.begin(), frames.end(), [](const transport::Frame& f) {
    return f.type == FrameType::kGoAway && f.payload.find("too many pings") != std::string::npos;
  }));
  EXPECT_EQ(server_->stats().connections_closed_for_abuse, 1u);
}

// Out of descriptors, the server says so once, keeps retrying with backoff, and says when it
// recovers (before, accept failures were silent).
TEST_P(LimitsTest, RunningOutOfDescriptorsIsLoggedOncePerEpisode) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "sanitizer runtimes need descriptors of their own";
#endif
  const std::string scheme(GetParam().scheme);
  if (scheme != "tcp" && scheme != "unix" && scheme != "shm") {
    GTEST_SKIP() << "connects with a raw socket of its own";
  }
  StartServer();
  std::optional<asio::ip::tcp::socket> tcp_client;
  std::optional<asio::local::stream_protocol::socket> unix_client;
  {
    testing::LowDescriptorLimit limit;
    ASSERT_TRUE(limit.UseAllDescriptors());
    limit.ReleaseOne();  // for the client's socket: then none is left for accept()
    asio::error_code ec;
    if (GetParam().scheme == "tcp") {
      const std::string& address = endpoint_.address;
      const auto colon = address.rfind(':');
      tcp_client.emplace(io_);
      tcp_client->connect({asio::ip::make_address(address.substr(0, colon)),
                           static_cast<uint16_t>(std::stoi(address.substr(colon + 1)))},
                          ec);
    } else if (scheme == "unix") {
      std::string name = endpoint_.address;
      if (!name.empty() && name[0] == '@') name[0] = '\0';
      unix_client.emplace(io_);
      unix_client->connect(asio::local::stream_protocol::endpoint(name), ec);
    } else {
      // shm://: its rendezvous socket, and the client's hello, so that the handshake can finish
      // once descriptors are back.
      absl::StatusOr<std::string> path = transport::shm::RendezvousPath(endpoint_.address, false);
      ASSERT_TRUE(path.ok()) << path.status();
      unix_client.emplace(io_);
      unix_client->connect(asio::local::stream_protocol::endpoint(*path), ec);
      if (!ec) {
        std::array<std::byte, 16> hello = transport::shm::Encode(transport::shm::ClientHello{});
        asio::write(*unix_client, asio::buffer(hello), ec);
      }
    }
    ASSERT_FALSE(ec) << ec.message();
    for (int i = 0; i < 40; ++i) {
      io_.restart();
      io_.run_one_for(std::chrono::milliseconds(10));
    }
    EXPECT_EQ(server_->connections(), 0u);
    EXPECT_EQ(logs_.size(), 1u) << ::testing::PrintToString(logs_);
    EXPECT_TRUE(Logged("retrying with backoff"));
  }
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 1; }));
  EXPECT_TRUE(Logged("works again")) << ::testing::PrintToString(logs_);
  EXPECT_EQ(logs_.size(), 2u);
}

// With many long calls open, expiring a few short deadlines looks at those calls only (before,
// each expiry scanned every open call).
TEST_P(LimitsTest, ExpiringDeadlinesExamineOnlyExpiredCalls) {
  StartServer({.max_concurrent_calls = 0});
  auto channel = NewChannel();
  constexpr int kLong = 2000, kShort = 50;
  for (int i = 0; i < kLong; ++i) {
    asio::co_spawn(io_,
                   channel->Call(testing::kSleep, "60000", {.timeout = std::chrono::minutes(1)}),
                   asio::detached);
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == kLong; }));
  int expired = 0;
  for (int i = 0; i < kShort; ++i) {
    StatusOrBytes r = RunCoro(
        io_, channel->Call(testing::kSleep, "10000", {.timeout = std::chrono::milliseconds(5)}));
    expired += r.status().code() == absl::StatusCode::kDeadlineExceeded;
  }
  EXPECT_EQ(expired, kShort);
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == kLong; }));
  EXPECT_LE(server_->stats().deadline_checks, uint64_t(2 * kShort));
  channel->Close();
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

class ChannelLimitsTest : public LimitsTest {
 protected:
  // An endpoint nobody listens on (a server was there and is gone).
  void UseDeadEndpoint() {
    StartServer();
    server_.reset();
    io_.restart();
    io_.poll();
  }
};

TEST_P(ChannelLimitsTest, CallsFailFastWhileBackingOff) {
  if (GetParam().scheme == "tcp") GTEST_SKIP() << "a closed port may be reused";
  UseDeadEndpoint();
  auto channel = NewChannel({.backoff = {.initial = std::chrono::milliseconds(300), .jitter = 0}});
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(channel->connect_attempts(), 1u);
  for (int i = 0; i < 100; ++i) {
    EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x")),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("before the next attempt")));
  }
  EXPECT_EQ(channel->connect_attempts(), 1u) << "no new attempt during the backoff";
  asio::steady_timer wait(io_, std::chrono::milliseconds(350));
  RunCoro(io_, wait.async_wait(asio::use_awaitable));
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x")),
              StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_EQ(channel->connect_attempts(), 2u);
}

TEST_P(ChannelLimitsTest, WaitForReadyWaitsForTheServer) {
  if (GetParam().scheme == "tcp") GTEST_SKIP() << "a closed port may be reused";
  UseDeadEndpoint();
  auto channel = NewChannel({.backoff = {.initial = std::chrono::milliseconds(100)}});
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x")),
              StatusIs(absl::StatusCode::kUnavailable));
  asio::steady_timer later(io_, std::chrono::milliseconds(200));
  later.async_wait([&](std::error_code) {
    server_ = std::make_unique<Server>(io_.get_executor());
    ASSERT_THAT(server_->AddService(service_.service()), IsOk());
    ASSERT_THAT(server_->Listen(endpoint_.ToString()), IsOk());
  });
  EXPECT_THAT(
      RunCoro(io_, channel->Call(testing::kEcho, "x",
                                 {.timeout = std::chrono::seconds(5), .wait_for_ready = true})),
      IsOk());
}

// A server that accepts connections but never says hello (a stopped process): the call gives up
// at its deadline, the attempt is abandoned with it, and the event loop has nothing left to do.
TEST_P(ChannelLimitsTest, GivingUpAbandonsTheConnectionAttempt) {
  asio::io_context io;
  auto transport = transport::NewTransport(GetParam().scheme, io.get_executor()).value();
  auto listener = transport->Listen(GetParam().loopback_endpoint()).value();  // never accepts
  auto channel = Channel::Create(io.get_executor(), listener->local_endpoint().ToString()).value();
  EXPECT_THAT(
      RunCoro(io, channel->Call(testing::kEcho, "x", {.timeout = std::chrono::milliseconds(200)})),
      StatusIs(absl::StatusCode::kDeadlineExceeded));
  const auto start = Clock::now();
  io.restart();
  io.run_for(std::chrono::seconds(5));  // returns as soon as no work is left
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(1)) << "the dial kept running";
}

// Calls that give up while their requests are still queued (the server does not read) take them
// back, so the client does not keep their bytes.
TEST_P(ChannelLimitsTest, GivingUpTakesBackTheUnsentRequest) {
  auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
  auto listener = transport->Listen(GetParam().loopback_endpoint()).value();
  std::unique_ptr<transport::Connection> kept;
  auto hello_then_never_read = [&]() -> asio::awaitable<void> {
    auto connection = co_await listener->Accept(io_.get_executor());
    if (!connection.ok()) co_return;
    kept = *std::move(connection);
    std::string hello = testing::HelloBytes();
    asio::const_buffer buffer = asio::buffer(hello);
    (void)co_await kept->Write({&buffer, 1});
  };
  asio::co_spawn(io_, hello_then_never_read(), asio::detached);
  auto channel = Channel::Create(io_.get_executor(), listener->local_endpoint().ToString(),
                                 {.max_queued_bytes = 64u << 20})
                     .value();
  ASSERT_THAT(
      RunCoro(io_, channel->Call(testing::kEcho, "", {.timeout = std::chrono::milliseconds(50)})),
      StatusIs(absl::StatusCode::kDeadlineExceeded));
  constexpr int kCalls = 100;
  int done = 0;
  for (int i = 0; i < kCalls; ++i) {
    asio::co_spawn(io_,
                   channel->Call(testing::kEcho, std::string(256 * 1024, 'x'),
                                 {.timeout = std::chrono::milliseconds(100)}),
                   [&](std::exception_ptr, StatusOrBytes) { ++done; });
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return done == kCalls; }));
  EXPECT_LT(channel->queued_bytes(), 4u << 20) << "requests of calls that gave up are still queued";
  EXPECT_EQ(channel->calls_in_flight(), 0u);
  listener->Close();
}

// The wire rules of PROTOCOL.md, as a hostile or careless peer meets them.
class WireRulesTest : public LimitsTest {
 protected:
  // Sends `bytes` after the hello and reads until the server closes; true if it did within 5 s.
  bool ClosedAfter(const std::string& bytes, bool hello = true) {
    auto peer = Raw();
    if (peer == nullptr) return false;
    (void)peer->Write(io_, (hello ? testing::HelloBytes() : "") + bytes);
    peer->ReadUntilClosed(io_);
    return peer->closed();
  }
  // Sends `bytes` after the hello and returns the first response.
  std::optional<testing::RawResponse> FirstResponse(const std::string& bytes,
                                                    uint32_t max_frame_payload = 0) {
    auto peer = Raw();
    (void)peer->Write(io_, testing::HelloBytes(max_frame_payload) + bytes);
    peer->ReadUntil(io_, [](const std::string& in) { return !testing::Responses(in).empty(); });
    std::vector<testing::RawResponse> responses = testing::Responses(peer->received());
    if (responses.empty()) return std::nullopt;
    return responses[0];
  }
};

TEST_P(WireRulesTest, CancelWithCallIdZeroClosesTheConnection) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::ControlBytes(FrameType::kCancel, 0)));
  EXPECT_TRUE(Logged("cancel with call id 0"));
  ExpectStillServing();
}

// A call is in flight until its response is written: a request reusing the id of a call whose
// handler has finished but whose response is still queued is a protocol error.
TEST_P(WireRulesTest, CallIdIsInFlightUntilItsResponseIsWritten) {
  absl::StatusOr<transport::Traits> traits = testing::ProbeTraits(GetParam());
  ASSERT_THAT(traits, IsOk());
  if (traits->max_message != 0 && traits->max_message < (32u << 20)) {
    GTEST_SKIP() << GetParam().scheme << " carries messages up to " << traits->max_message
                 << " bytes; this test needs a 32 MiB response";
  }
  StartServer({.max_queued_bytes = 256u << 20});
  auto peer = Raw();
  // Call 1's 32 MiB response fills the socket; call 2's response queues behind it.
  std::string bytes = testing::HelloBytes() +
                      testing::RequestBytes(1, testing::kBig, std::to_string(32 << 20)) +
                      testing::RequestBytes(2, testing::kEcho, "first");
  ASSERT_THAT(peer->Write(io_, bytes), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
  ASSERT_THAT(peer->Write(io_, testing::RequestBytes(2, testing::kEcho, "again")), IsOk());
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
  EXPECT_TRUE(Logged("call id 2 reused while in flight")) << ::testing::PrintToString(logs_);
}

TEST_P(WireRulesTest, AnswerAfterTheDeadlineIsDeadlineExceeded) {
  GenericService blocking;
  blocking.AddRawMethod("/courier.test.Blocking/Wait",
                        [](ServerContext&, std::string_view) -> asio::awaitable<StatusOrBytes> {
                          // Holds the reactor past the deadline, so no timer can cancel it.
                          std::this_thread::sleep_for(std::chrono::milliseconds(100));
                          co_return std::string("late");
                        });
  server_ = std::make_unique<Server>(io_.get_executor());
  ASSERT_THAT(server_->AddService(blocking), IsOk());
  endpoint_ = server_->Listen(GetParam().loopback_endpoint().ToString()).value();
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::RequestBytes(1, "/courier.test.Blocking/Wait", "", 20'000));
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, StatusIs(absl::StatusCode::kDeadlineExceeded));
}

TEST_P(WireRulesTest, MessageOverTheServersLimitIsResourceExhausted) {
  StartServer({.max_message_size = 1024});
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::RequestBytes(1, testing::kEcho, std::string(2000, 'x')));
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, StatusIs(absl::StatusCode::kResourceExhausted,
                                  HasSubstr("request message of 2000 bytes")));
}

// The RESOURCE_EXHAUSTED sent instead of a response over the client's limit fits that limit
// itself, and says how large the response was.
TEST_P(WireRulesTest, ErrorInsteadOfATooLargeResponseFitsTheClientsLimit) {
  StartServer();
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::RequestBytes(1, testing::kBig, "100000"), internal::kMinFramePayload);
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, StatusIs(absl::StatusCode::kResourceExhausted,
                                  HasSubstr("exceeds the client's limit of 16384")));
  EXPECT_THAT(std::string(r->status.message()), Not(HasSubstr("response of 0 bytes")));
  EXPECT_LE(r->payload.size(), internal::kMinFramePayload);
}

TEST_P(WireRulesTest, HelloBelowTheMinimumFrameLimitIsRefused) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::HelloBytes(100), /*hello=*/false));
  EXPECT_TRUE(Logged("below the minimum")) << ::testing::PrintToString(logs_);
}

TEST_P(WireRulesTest, EmptyHelloIsRefused) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::ControlBytes(FrameType::kHello), /*hello=*/false));
  EXPECT_TRUE(Logged("version 0")) << ::testing::PrintToString(logs_);
}

TEST_P(WireRulesTest, ReservedFrameTypeBeforeTheHelloIsAProtocolError) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::ControlBytes(FrameType(9)), /*hello=*/false));
  EXPECT_TRUE(Logged("first frame is not a hello"));
}

TEST_P(WireRulesTest, ReservedFrameTypeAfterTheHelloIsIgnored) {
  StartServer();
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::ControlBytes(FrameType(200), 5, "skip me") +
                    testing::RequestBytes(1, testing::kEcho, "after"));
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, IsOk());
}

TEST_P(WireRulesTest, UnknownMethodErrorDoesNotEchoAHugeName) {
  StartServer();
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::RequestBytes(1, "/" + std::string(10000, 'm'), ""));
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_LT(r->status.message().size(), 300u);
}

TEST_P(WireRulesTest, OversizedRequestHeaderIsResourceExhausted) {
  StartServer();
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::RequestBytes(1, "/" + std::string(100000, 'm'), ""));
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("header")));
}

TEST_P(WireRulesTest, PingWithACallIdOrALongPayloadClosesTheConnection) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::ControlBytes(FrameType::kPing, 3, "x")));
  EXPECT_TRUE(ClosedAfter(testing::ControlBytes(FrameType::kPing, 0, std::string(65, 'x'))));
  EXPECT_TRUE(Logged("protocol error: ping"));
}

TEST_P(WireRulesTest, SecondHelloClosesTheConnection) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::HelloBytes()));
  EXPECT_TRUE(Logged("a second hello"));
}

TEST_P(WireRulesTest, RequestWithoutEndOfStreamClosesTheConnection) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(testing::RequestBytes(1, testing::kEcho, "x", 1000000, {}, 0)));
  EXPECT_TRUE(Logged("without the end-of-stream flag"));
}

TEST_P(WireRulesTest, ResponseSentToAServerClosesTheConnection) {
  StartServer();
  EXPECT_TRUE(ClosedAfter(transport::EncodeFrame(
      {FrameType::kResponse, transport::kFlagEndOfStream, 1, std::string(1, '\0')})));
  EXPECT_TRUE(Logged("is not sent to servers"));
}

TEST_P(WireRulesTest, UppercaseMetadataKeyIsInvalidArgument) {
  StartServer();
  std::optional<testing::RawResponse> r =
      FirstResponse(testing::RequestBytes(1, testing::kEcho, "x", 1000000, {{"Token", "secret"}}));
  ASSERT_TRUE(r.has_value());
  EXPECT_THAT(r->status, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("lowercase")));
}

TEST_P(WireRulesTest, ChannelRefusesMetadataThePeerWouldRefuse) {
  StartServer();
  auto channel = NewChannel();
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x", {.metadata = {{"Bad Key", "v"}}})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  Metadata many;
  for (int i = 0; i < 65; ++i) many.emplace_back(absl::StrCat("k", i), "v");
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x", {.metadata = many})),
              StatusIs(absl::StatusCode::kResourceExhausted));
  EXPECT_THAT(
      RunCoro(io_, channel->Call(testing::kEcho, "x", {.metadata = {{"good-key.1_x", "v"}}})),
      IsOk());
}

TEST_P(WireRulesTest, TooLongUnixPathIsInvalidArgumentOnBothSides) {
  if (GetParam().scheme != "unix") GTEST_SKIP() << "about UNIX socket paths";
  const std::string uri = "unix:///tmp/" + std::string(200, 'a');
  Server server(io_.get_executor());
  EXPECT_THAT(server.Listen(uri), StatusIs(absl::StatusCode::kInvalidArgument));
  auto channel = Channel::Create(io_.get_executor(), uri).value();
  EXPECT_THAT(RunCoro(io_, channel->Call(testing::kEcho, "x")),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// Each hostile connection would log a line; past the burst, lines are dropped and counted.
TEST_P(WireRulesTest, WarningsAboutHostileConnectionsAreRateLimited) {
  StartServer();
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < kLogBurst + 50; ++i) {
    auto peer = Raw();
    ASSERT_NE(peer, nullptr);
    (void)peer->Write(io_, "GET / HTTP/1.1\r\n\r\n");
    peer->ReadUntilClosed(io_);
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
  EXPECT_GE(logs_.size(), size_t(kLogBurst));
  // Past the burst the budget refills at kLogLinesPerSecond: a slow run (tls:// handshakes on a
  // loaded machine take a second or more for these) may log that many more, and no more.
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LE(logs_.size(), size_t(kLogBurst) + size_t(kLogLinesPerSecond * (seconds + 1)));
}

std::string Name(const ::testing::TestParamInfo<transport::TransportInfo>& info) {
  return std::string(info.param.scheme);
}
INSTANTIATE_TEST_SUITE_P(AllTransports, LimitsTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()), Name);
INSTANTIATE_TEST_SUITE_P(AllTransports, ChannelLimitsTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()), Name);
INSTANTIATE_TEST_SUITE_P(AllTransports, WireRulesTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()), Name);

}  // namespace
}  // namespace courier
