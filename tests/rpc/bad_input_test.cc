// Hostile and broken peers against a real server, over every transport: the server closes the
// offending connection with a clear status, logs once, allocates nothing large, and keeps
// serving everyone else.
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/internal/wire.h"
#include "rpc/log.h"
#include "rpc/server.h"
#include "rpc/wire.pb.h"
#include "tests/rpc/test_service.h"
#include "tests/testing/status_matchers.h"
#include "transport/frame.h"
#include "transport/registry.h"

namespace courier {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;
using transport::Frame;
using transport::FrameType;

class BadInputTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    SetLogSink([this](LogSeverity, std::string_view line) { logs_.emplace_back(line); });
    typed_.AddMethod<wire::Hello, wire::Hello>(
        "/courier.test.Typed/Hello",
        [](ServerContext&, wire::Hello hello) -> asio::awaitable<absl::StatusOr<wire::Hello>> {
          co_return hello;
        });
    server_ = std::make_unique<Server>(io_.get_executor());
    ASSERT_THAT(server_->AddService(service_.service()), IsOk());
    ASSERT_THAT(server_->AddService(typed_), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen(GetParam().loopback_endpoint().ToString());
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = *endpoint;
  }
  void TearDown() override { SetLogSink(nullptr); }

  // Connects without the framing layer, writes `bytes`, and reads until the server closes.
  // Returns everything the server sent, or nullopt if it did not close within 5 s.
  std::optional<std::string> SendRaw(std::string bytes) {
    auto op = [&]() -> asio::awaitable<std::optional<std::string>> {
      auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
      auto connection = co_await transport->Connect(endpoint_);
      if (!connection.ok()) co_return std::nullopt;
      asio::const_buffer buffer = asio::buffer(bytes);
      if (!(co_await (*connection)->Write({&buffer, 1})).ok()) co_return std::nullopt;
      std::string received;
      char chunk[4096];
      for (;;) {
        absl::StatusOr<size_t> n = co_await (*connection)->Read(asio::buffer(chunk));
        if (!n.ok() || *n == 0) co_return received;  // closed (cleanly or by reset)
        received.append(chunk, *n);
      }
    };
    return RunCoro(io_, op(), std::chrono::seconds(5));
  }

  static std::string Hello() { return transport::EncodeFrame(internal::HelloFrame(0)); }
  static std::string Request(uint32_t call_id, std::string method, std::string message) {
    wire::RequestHeader header;
    header.set_method(std::move(method));
    header.set_timeout_us(1000000);
    return transport::EncodeFrame(Frame{FrameType::kRequest, transport::kFlagEndOfStream, call_id,
                                        internal::EncodePayload(header, message)});
  }

  // The server still answers a well-behaved client.
  void ExpectStillServing() {
    auto channel = Channel::Create(io_.get_executor(), endpoint_.ToString()).value();
    EXPECT_EQ(RunCoro(io_, channel->Call(testing::kEcho, "alive")).value_or(""), "alive");
  }

  void ExpectOneLogLine(const std::string& fragment) {
    ASSERT_EQ(logs_.size(), 1u) << ::testing::PrintToString(logs_);
    EXPECT_THAT(logs_[0], HasSubstr(fragment));
  }

  testing::TestService service_;
  GenericService typed_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
  std::vector<std::string> logs_;
};

TEST_P(BadInputTest, GarbageBytesCloseTheConnection) {
  ASSERT_TRUE(SendRaw("GET / HTTP/1.1\r\nHost: x\r\n\r\n").has_value());
  ExpectOneLogLine("DATA_LOSS");
  ExpectStillServing();
}

TEST_P(BadInputTest, WrongMagicClosesTheConnection) {
  std::string hello = Hello();
  hello[3] = 'X';
  ASSERT_TRUE(SendRaw(hello).has_value());
  ExpectOneLogLine("bad magic");
  ExpectStillServing();
}

TEST_P(BadInputTest, ReservedBitsCloseTheConnection) {
  std::string hello = Hello();
  hello[5] = static_cast<char>(0x80);
  ASSERT_TRUE(SendRaw(hello).has_value());
  ExpectOneLogLine("reserved bits");
  ExpectStillServing();
}

TEST_P(BadInputTest, HugeLengthPrefixIsResourceExhausted) {
  std::string frame = Hello();
  for (int i = 12; i < 16; ++i) frame[i] = static_cast<char>(0xFF);
  ASSERT_TRUE(SendRaw(frame).has_value());
  ExpectOneLogLine("RESOURCE_EXHAUSTED");
  ExpectStillServing();
}

TEST_P(BadInputTest, RequestBeforeHelloClosesTheConnection) {
  ASSERT_TRUE(SendRaw(Request(1, testing::kEcho, "x")).has_value());
  ExpectOneLogLine("first frame is not a hello");
  ExpectStillServing();
}

TEST_P(BadInputTest, CallIdZeroClosesTheConnection) {
  ASSERT_TRUE(SendRaw(Hello() + Request(0, testing::kEcho, "x")).has_value());
  ExpectOneLogLine("call id 0");
  ExpectStillServing();
}

TEST_P(BadInputTest, ReusedCallIdClosesTheConnection) {
  ASSERT_TRUE(
      SendRaw(Hello() + Request(7, testing::kSleep, "5000") + Request(7, testing::kSleep, "5000"))
          .has_value());
  ExpectOneLogLine("reused");
  // The handler of the first call 7 is cancelled with the connection.
  EXPECT_TRUE(testing::RunUntil(io_, [&] { return service_.sleep_cancelled == 1; }));
  ExpectStillServing();
}

// A frame cut short by the peer's close is DATA_LOSS on our side, not a hang.
TEST_P(BadInputTest, CloseInTheMiddleOfAFrame) {
  std::string request = Request(1, testing::kEcho, "xxxxxxxx");
  std::string bytes = Hello() + request.substr(0, request.size() - 3);
  auto op = [&]() -> asio::awaitable<absl::Status> {
    auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
    auto connection = co_await transport->Connect(endpoint_);
    if (!connection.ok()) co_return connection.status();
    asio::const_buffer buffer = asio::buffer(bytes);
    absl::Status written = co_await (*connection)->Write({&buffer, 1});
    // Take the server's hello first: closing with unread bytes would be a reset, not a close.
    transport::FrameDecoder decoder;
    char chunk[256];
    for (;;) {
      absl::StatusOr<size_t> n = co_await (*connection)->Read(asio::buffer(chunk));
      if (!n.ok() || *n == 0) break;
      decoder.Append(std::string_view(chunk, *n));
      if (auto frame = decoder.Next(); frame.ok() && frame->has_value()) break;
    }
    (*connection)->Close();
    co_return written;
  };
  ASSERT_THAT(RunCoro(io_, op()), IsOk());
  EXPECT_TRUE(testing::RunUntil(io_, [&] { return server_->connections() == 0; }));
  ExpectOneLogLine("middle of a frame");
  ExpectStillServing();
}

// Decodes the responses in `bytes` (after the server's hello).
std::vector<absl::Status> ResponseStatuses(const std::string& bytes) {
  transport::FrameDecoder decoder;
  decoder.Append(bytes);
  std::vector<absl::Status> statuses;
  for (;;) {
    absl::StatusOr<std::optional<Frame>> frame = decoder.Next();
    if (!frame.ok() || !frame->has_value()) break;
    if ((*frame)->type != FrameType::kResponse) continue;
    wire::ResponseHeader header;
    if (!internal::DecodePayloadHeader((*frame)->payload, header).ok()) break;
    statuses.push_back(internal::StatusFromWire(header));
  }
  return statuses;
}

TEST_P(BadInputTest, MalformedRequestHeaderIsInvalidArgumentForThatCall) {
  // A payload whose varint promises more header bytes than there are.
  std::string bad = transport::EncodeFrame(
      Frame{FrameType::kRequest, transport::kFlagEndOfStream, 3, std::string("\x7f\x01", 2)});
  auto op = [&]() -> asio::awaitable<std::vector<absl::Status>> {
    auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
    auto connection = *co_await transport->Connect(endpoint_);
    std::string bytes = Hello() + bad + Request(4, testing::kEcho, "ok");
    asio::const_buffer buffer = asio::buffer(bytes);
    (void)co_await connection->Write({&buffer, 1});
    std::string received;
    char chunk[4096];
    while (ResponseStatuses(received).size() < 2) {
      absl::StatusOr<size_t> n = co_await connection->Read(asio::buffer(chunk));
      if (!n.ok() || *n == 0) break;
      received.append(chunk, *n);
    }
    co_return ResponseStatuses(received);
  };
  std::vector<absl::Status> statuses = RunCoro(io_, op(), std::chrono::seconds(5));
  ASSERT_EQ(statuses.size(), 2u);
  EXPECT_THAT(statuses[0], StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(statuses[1], IsOk());
  EXPECT_TRUE(logs_.empty());
}

TEST_P(BadInputTest, RequestMessageThatDoesNotParseIsInvalidArgument) {
  auto channel = Channel::Create(io_.get_executor(), endpoint_.ToString()).value();
  EXPECT_THAT(RunCoro(io_, channel->Call("/courier.test.Typed/Hello", "\xff\xff\xff")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("does not parse")));
  wire::Hello hello;
  hello.set_agent("typed");
  absl::StatusOr<std::string> r =
      RunCoro(io_, channel->Call("/courier.test.Typed/Hello", hello.SerializeAsString()));
  ASSERT_THAT(r, IsOk());
  wire::Hello back;
  ASSERT_TRUE(back.ParseFromString(*r));
  EXPECT_EQ(back.agent(), "typed");
}

// A "server" that speaks nothing: the channel fails the call as UNAVAILABLE, without hanging.
TEST_P(BadInputTest, ServerThatSendsGarbageFailsCallsUnavailable) {
  auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
  auto listener = transport->Listen(GetParam().loopback_endpoint()).value();
  auto serve_garbage = [&]() -> asio::awaitable<void> {
    auto connection = co_await listener->Accept(io_.get_executor());
    if (!connection.ok()) co_return;
    std::string garbage = "this is not a courier server";
    asio::const_buffer buffer = asio::buffer(garbage);
    (void)co_await (*connection)->Write({&buffer, 1});
    char chunk[256];
    while ((co_await (*connection)->Read(asio::buffer(chunk))).value_or(0) > 0) {
    }
  };
  asio::co_spawn(io_, serve_garbage(), asio::detached);
  auto channel = Channel::Create(io_.get_executor(), listener->local_endpoint().ToString()).value();
  absl::StatusOr<std::string> r = RunCoro(io_, channel->Call(testing::kEcho, "x"));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("bad magic")));
  listener->Close();
}

// A peer that completes the handshake and then goes silent: keepalive finds it dead and the
// calls waiting on it fail UNAVAILABLE long before their deadline.
TEST_P(BadInputTest, SilentServerIsFoundByKeepalive) {
  auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
  auto listener = transport->Listen(GetParam().loopback_endpoint()).value();
  std::unique_ptr<transport::Connection> kept;
  auto hello_then_silence = [&]() -> asio::awaitable<void> {
    auto connection = co_await listener->Accept(io_.get_executor());
    if (!connection.ok()) co_return;
    kept = *std::move(connection);
    std::string hello = Hello();
    asio::const_buffer buffer = asio::buffer(hello);
    (void)co_await kept->Write({&buffer, 1});
  };
  asio::co_spawn(io_, hello_then_silence(), asio::detached);
  ChannelOptions options;
  options.keepalive_interval = std::chrono::milliseconds(100);
  options.keepalive_timeout = std::chrono::milliseconds(100);
  auto channel =
      Channel::Create(io_.get_executor(), listener->local_endpoint().ToString(), options).value();
  CallOptions call;
  call.timeout = std::chrono::seconds(8);
  const auto start = Clock::now();
  absl::StatusOr<std::string> r = RunCoro(io_, channel->Call(testing::kEcho, "x", call));
  EXPECT_THAT(r, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("keepalive")));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  listener->Close();
}

// A client that connects and never says hello is dropped after the handshake timeout.
TEST_P(BadInputTest, SilentClientIsDroppedAfterTheHandshakeTimeout) {
  server_.reset();
  ServerOptions options;
  options.handshake_timeout = std::chrono::milliseconds(100);
  server_ = std::make_unique<Server>(io_.get_executor(), options);
  ASSERT_THAT(server_->AddService(service_.service()), IsOk());
  endpoint_ = server_->Listen(GetParam().loopback_endpoint().ToString()).value();
  ASSERT_TRUE(SendRaw("").has_value());  // connects, sends nothing, reads until closed
  ExpectOneLogLine("no protocol hello");
  ExpectStillServing();
}

INSTANTIATE_TEST_SUITE_P(AllTransports, BadInputTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier
