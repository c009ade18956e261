// Streaming calls at the byte level (PROTOCOL.md §13), over every transport: a raw client that
// keeps the rules gets PROTOCOL.md §13.9's worked example byte for byte from a real server, and
// a real channel sends it to a raw server; a hostile raw client breaks each rule of §13.7 against
// a real server (the connection is closed, the server logs why and keeps serving), and a raw
// server breaks them against a channel (the channel closes the connection and the call fails).
#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/this_coro.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/internal/stream.h"
#include "rpc/log.h"
#include "rpc/server.h"
#include "rpc/service.h"
#include "tests/rpc/raw_peer.h"
#include "tests/rpc/test_service.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/stream_example.h"
#include "transport/frame.h"
#include "transport/registry.h"

namespace courier {
namespace {

using ::courier::testing::BytesFromHex;
using ::courier::testing::CancelBytes;
using ::courier::testing::ControlBytes;
using ::courier::testing::HalfCloseBytes;
using ::courier::testing::HelloBytes;
using ::courier::testing::IsOk;
using ::courier::testing::MessageBytes;
using ::courier::testing::OpenStreamBytes;
using ::courier::testing::RawPeer;
using ::courier::testing::RawResponse;
using ::courier::testing::RequestBytes;
using ::courier::testing::ResponseBytes;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::courier::testing::WindowBytes;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using transport::Frame;
using transport::FrameType;

constexpr char kShout[] = "/courier.examples.Chat/Shout";  // §13.9's method
constexpr char kHold[] = "/courier.test.Wire/Hold";        // reads nothing, ends with the call
constexpr char kFlood[] = "/courier.test.Wire/Flood";      // writes kFloodCount 4-byte messages
constexpr int kFloodCount = 10;
constexpr uint32_t kClientWindow = testing::kStreamExampleClientWindow;
constexpr uint32_t kMaxCredit = 0x7fffffff;

static_assert(std::string_view(kShout) == testing::kStreamExampleMethod);

// EchoRequest / EchoReply {string text = 1;} for texts under 128 bytes, encoded by hand.
std::string EchoText(const std::string& text) {
  return std::string{'\x0a', static_cast<char>(text.size())} + text;
}
std::optional<std::string> ParseEchoText(const std::string& bytes) {
  if (bytes.size() < 2 || bytes[0] != '\x0a' || static_cast<size_t>(bytes[1]) != bytes.size() - 2) {
    return std::nullopt;
  }
  return bytes.substr(2);
}

// Bytes as hex, for failure messages a person can compare with PROTOCOL.md.
std::string Hex(std::string_view bytes) {
  std::string out;
  for (unsigned char c : bytes) absl::StrAppendFormat(&out, out.empty() ? "%02x" : " %02x", c);
  return out;
}

// The encoded size of the first frame in `bytes`.
size_t FirstFrameSize(const std::string& bytes) {
  std::vector<Frame> frames = testing::Frames(bytes);
  return frames.empty() ? 0 : transport::kFrameHeaderSize + frames[0].payload.size();
}

std::vector<Frame> FramesFor(const std::string& bytes, uint32_t call_id, FrameType type) {
  std::vector<Frame> out;
  for (Frame& f : testing::Frames(bytes)) {
    if (f.call_id == call_id && f.type == type) out.push_back(std::move(f));
  }
  return out;
}

std::vector<RawResponse> ResponsesFor(const std::string& bytes, uint32_t call_id) {
  std::vector<RawResponse> out;
  for (RawResponse& r : testing::Responses(bytes)) {
    if (r.call_id == call_id) out.push_back(std::move(r));
  }
  return out;
}

class StreamWireTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    SetLogSink([this](LogSeverity, std::string_view line) { logs_.emplace_back(line); });
    // §13.9's service: each request's text in capitals; the trailer counts them in "notes".
    streams_.AddRawStreamingMethod(
        kShout,
        [](ServerContext& ctx, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          int notes = 0;
          while (std::optional<std::string> bytes = co_await stream.Read()) {
            std::optional<std::string> text = ParseEchoText(*bytes);
            if (!text) co_return absl::InvalidArgumentError("not an EchoRequest");
            absl::Status s = co_await stream.Write(EchoText(absl::AsciiStrToUpper(*text)));
            if (!s.ok()) co_return s;
            ++notes;
          }
          ctx.AddResponseMetadata("notes", absl::StrCat(notes));
          co_return absl::OkStatus();
        });
    streams_.AddRawStreamingMethod(
        kHold,
        [this](ServerContext&, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          co_await asio::this_coro::throw_if_cancelled(false);
          ++hold_started_;
          co_await stream.WaitForEnd();
          hold_end_ = stream.end_status();
          ++hold_ended_;
          co_return stream.end_status();
        });
    streams_.AddRawStreamingMethod(
        kFlood, [](ServerContext&, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          for (int i = 0; i < kFloodCount; ++i) {
            absl::Status s = co_await stream.Write(absl::StrFormat("f%03d", i));
            if (!s.ok()) co_return s;
          }
          co_return absl::OkStatus();
        });
  }
  void TearDown() override {
    server_.reset();
    SetLogSink(nullptr);
  }

  // The server of §13.9: a window of 8 bytes.
  static ServerOptions ExampleOptions() {
    ServerOptions options;
    options.stream_window = testing::kStreamExampleServerWindow;
    return options;
  }
  void StartServer(ServerOptions options = ExampleOptions()) {
    server_.reset();
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_.service()), IsOk());
    ASSERT_THAT(server_->AddService(streams_), IsOk());
    endpoint_ = server_->Listen(GetParam().loopback_endpoint().ToString()).value();
  }
  std::unique_ptr<RawPeer> Raw() { return RawPeer::Connect(io_, GetParam(), endpoint_); }
  // Connected, our hello (announcing `stream_window`) sent and the server's received.
  std::unique_ptr<RawPeer> Handshaken(uint32_t stream_window = kClientWindow) {
    auto peer = Raw();
    if (peer == nullptr || !peer->Write(io_, HelloBytes(0, stream_window)).ok() ||
        !peer->ReadFrames(io_, 1)) {
      ADD_FAILURE() << "no handshake with the server";
      return nullptr;
    }
    return peer;
  }
  // Writes `bytes` and reads until the server closes; true if it did within 5 s.
  bool ClosedAfter(RawPeer& peer, const std::string& bytes) {
    (void)peer.Write(io_, bytes);  // may fail once the server has closed
    peer.ReadUntilClosed(io_);
    return peer.closed();
  }
  // Reads until `count` responses for `call_id` have arrived; returns those that did.
  std::vector<RawResponse> AwaitResponses(RawPeer& peer, uint32_t call_id, size_t count = 1) {
    peer.ReadUntil(
        io_, [&](const std::string& in) { return ResponsesFor(in, call_id).size() >= count; });
    return ResponsesFor(peer.received(), call_id);
  }
  bool Logged(const std::string& fragment) const {
    for (const std::string& line : logs_) {
      if (line.find(fragment) != std::string::npos) return true;
    }
    return false;
  }
  void ExpectStillServing() {
    auto channel = Channel::Create(io_.get_executor(), endpoint_.ToString()).value();
    EXPECT_EQ(RunCoro(io_, channel->Call(testing::kEcho, "alive")).value_or(""), "alive");
  }

  // Declared before io_: handlers still suspended when io_ goes touch them.
  std::atomic<int> hold_started_{0};
  std::atomic<int> hold_ended_{0};
  absl::Status hold_end_;
  testing::TestService service_;
  GenericService streams_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
  std::vector<std::string> logs_;
};

// --- The worked example, both ways ---

// A raw client sends §13.9's client frames; the server answers with §13.9's server frames, byte
// for byte (its hello too, where the transport does not cap the frame size).
TEST_P(StreamWireTest, RawClientGetsTheWorkedExampleFromAServer) {
  StartServer();
  auto peer = Raw();
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, BytesFromHex(testing::kStreamClientHelloHex)), IsOk());
  ASSERT_TRUE(peer->ReadFrames(io_, 1));
  const size_t hello_size = FirstFrameSize(peer->received());
  if (peer->connection().traits().max_message == 0) {
    EXPECT_EQ(Hex(peer->received()), Hex(BytesFromHex(testing::kStreamServerHelloHex)));
  } else {
    wire::Hello hello;
    ASSERT_TRUE(hello.ParseFromString(testing::Frames(peer->received())[0].payload));
    EXPECT_EQ(hello.version(), 1u);
    EXPECT_EQ(hello.max_concurrent_calls(), testing::kStreamExampleServerMaxCalls);
    EXPECT_EQ(hello.stream_window(), testing::kStreamExampleServerWindow);
  }

  ASSERT_THAT(peer->Write(io_, BytesFromHex(testing::kStreamRequestHex) +
                                   BytesFromHex(testing::kStreamClientMessageHex)),
              IsOk());
  ASSERT_TRUE(peer->ReadFrames(io_, 3));  // the hello, a WINDOW and a MESSAGE
  const std::string window_and_reply =
      BytesFromHex(testing::kStreamWindowHex) + BytesFromHex(testing::kStreamServerMessageHex);
  EXPECT_EQ(Hex(peer->received().substr(hello_size)), Hex(window_and_reply));

  ASSERT_THAT(peer->Write(io_, BytesFromHex(testing::kStreamHalfCloseHex)), IsOk());
  ASSERT_TRUE(peer->ReadFrames(io_, 4));
  EXPECT_EQ(Hex(peer->received().substr(hello_size + window_and_reply.size())),
            Hex(BytesFromHex(testing::kStreamTrailerHex)));

  // The call is over; the connection is not.
  EXPECT_TRUE(peer->Pongs(io_));
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
  EXPECT_TRUE(logs_.empty()) << ::testing::PrintToString(logs_);
}

// A channel, driven as §13.9's client, sends §13.9's client frames to a raw server that answers
// with the server's, and sends nothing else for the call.
TEST_P(StreamWireTest, ChannelSendsTheWorkedExampleToARawServer) {
  auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
  std::unique_ptr<transport::Listener> listener =
      transport->Listen(GetParam().loopback_endpoint()).value();
  auto channel = Channel::Create(io_.get_executor(), listener->local_endpoint().ToString()).value();
  bool done = false;
  absl::Status written, finished;
  std::optional<std::string> reply;
  Metadata trailing;
  auto client = [&]() -> asio::awaitable<void> {
    CallOptions options;
    options.timeout = std::chrono::microseconds(testing::kStreamExampleTimeoutUs);
    std::shared_ptr<internal::ClientStream> stream = channel->OpenStream(kShout, options);
    written = co_await stream->Write(EchoText("hi"));
    reply = co_await stream->Read();
    (void)stream->WritesDone();
    finished = co_await stream->Finish();
    trailing = stream->trailing_metadata();
    done = true;
  };
  asio::co_spawn(io_, client, asio::detached);

  auto server = RawPeer::Accept(io_, *listener);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->ReadFrames(io_, 1));
  const size_t hello_size = FirstFrameSize(server->received());
  if (server->connection().traits().max_message == 0) {
    EXPECT_EQ(Hex(server->received()), Hex(BytesFromHex(testing::kStreamClientHelloHex)));
  } else {
    wire::Hello hello;
    ASSERT_TRUE(hello.ParseFromString(testing::Frames(server->received())[0].payload));
    EXPECT_EQ(hello.stream_window(), kClientWindow);
  }
  ASSERT_THAT(server->Write(io_, BytesFromHex(testing::kStreamServerHelloHex)), IsOk());

  ASSERT_TRUE(server->ReadFrames(io_, 3));  // the hello, the REQUEST and a MESSAGE
  const std::string request_and_message =
      BytesFromHex(testing::kStreamRequestHex) + BytesFromHex(testing::kStreamClientMessageHex);
  EXPECT_EQ(Hex(server->received().substr(hello_size)), Hex(request_and_message));

  ASSERT_THAT(server->Write(io_, BytesFromHex(testing::kStreamWindowHex) +
                                     BytesFromHex(testing::kStreamServerMessageHex)),
              IsOk());
  ASSERT_TRUE(server->ReadFrames(io_, 4));  // the half-close
  EXPECT_EQ(Hex(server->received().substr(hello_size + request_and_message.size())),
            Hex(BytesFromHex(testing::kStreamHalfCloseHex)));

  ASSERT_THAT(server->Write(io_, BytesFromHex(testing::kStreamTrailerHex)), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return done; }));
  EXPECT_THAT(written, IsOk());
  EXPECT_EQ(reply, EchoText("HI"));
  EXPECT_THAT(finished, IsOk());
  EXPECT_THAT(trailing, ElementsAre(Pair("notes", "1")));
  // Nothing more for the call (no WINDOW, no CANCEL): the pong is the next frame.
  ASSERT_TRUE(server->Pongs(io_));
  EXPECT_EQ(testing::Frames(server->received()).size(), 5u);
  listener->Close();
}

// --- A hostile client against a real server ---

TEST_P(StreamWireTest, MessageBeyondTheWindowClosesTheConnection) {
  StartServer();
  {
    // 8 bytes take the credit from 8 to 0: allowed. Then not even an empty message is.
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold) + MessageBytes(1, std::string(8, 'a'))),
                IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, MessageBytes(1, "")));
  }
  {
    // One message may overdraw (credit 8 - 100 = -92); the next may not.
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(
        peer->Write(io_, OpenStreamBytes(1, kHold) + MessageBytes(1, std::string(100, 'a'))),
        IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, MessageBytes(1, "x")));
  }
  EXPECT_TRUE(Logged("message beyond the flow-control window on call 1"));
  EXPECT_TRUE(RunUntil(io_, [&] { return hold_ended_ == 2; }));
  ExpectStillServing();
}

TEST_P(StreamWireTest, WindowThatGrantsZeroOrIsMalformedClosesTheConnection) {
  StartServer();
  for (const std::string& bad :
       {WindowBytes(1, 0), ControlBytes(FrameType::kWindow, 1, "abc"),
        ControlBytes(FrameType::kWindow, 1, "abcde"), ControlBytes(FrameType::kWindow, 1, "")}) {
    SCOPED_TRACE(Hex(bad));
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold)), IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, bad));
  }
  EXPECT_TRUE(Logged("window frame granting 0 bytes"));
  EXPECT_TRUE(Logged("window frame of 3 bytes"));
  EXPECT_TRUE(Logged("window frame of 5 bytes"));
  EXPECT_TRUE(Logged("window frame of 0 bytes"));
  ExpectStillServing();
}

TEST_P(StreamWireTest, WindowPastTheCreditMaximumClosesTheConnection) {
  StartServer();
  {
    // The server's credit starts at our window; up to exactly 2^31-1 is fine, one more is not.
    auto peer = Handshaken(kClientWindow);
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(
        peer->Write(io_, OpenStreamBytes(1, kHold) + WindowBytes(1, kMaxCredit - kClientWindow)),
        IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, WindowBytes(1, 1)));
  }
  {
    auto peer = Handshaken(kMaxCredit);
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold)), IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, WindowBytes(1, 1)));
  }
  {
    auto peer = Handshaken(1);
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold)), IsOk());
    EXPECT_TRUE(ClosedAfter(*peer, WindowBytes(1, 0xffffffff)));
  }
  EXPECT_TRUE(Logged("window on call 1 grows past 2^31-1 bytes"));
  EXPECT_TRUE(RunUntil(io_, [&] { return hold_ended_ == 3; }));
}

TEST_P(StreamWireTest, StreamFramesOnAUnaryCallCloseTheConnection) {
  StartServer();
  for (const std::string& bad : {MessageBytes(1, "x"), WindowBytes(1, 1), HalfCloseBytes(1)}) {
    SCOPED_TRACE(Hex(bad));
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, RequestBytes(1, testing::kSleep, "5000")), IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, bad));
  }
  EXPECT_TRUE(Logged("protocol error: frame type 8 for unary call 1"));
  EXPECT_TRUE(Logged("protocol error: frame type 9 for unary call 1"));
  // The sleeping handlers are cancelled with their connections.
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.sleep_cancelled == 3; }));
}

TEST_P(StreamWireTest, StreamFramesWithCallIdZeroCloseTheConnection) {
  StartServer();
  for (const std::string& bad : {MessageBytes(0, "x"), HalfCloseBytes(0), WindowBytes(0, 1)}) {
    SCOPED_TRACE(Hex(bad));
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    EXPECT_TRUE(ClosedAfter(*peer, bad));
  }
  EXPECT_TRUE(Logged("protocol error: frame type 8 with call id 0"));
  EXPECT_TRUE(Logged("protocol error: frame type 9 with call id 0"));
  ExpectStillServing();
}

TEST_P(StreamWireTest, RequestOpeningAStreamWithMessageBytesIsInvalidArgument) {
  StartServer();
  auto peer = Handshaken();
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, RequestBytes(1, kShout, EchoText("hi"), 10'000'000, {}, 0)), IsOk());
  std::vector<RawResponse> responses = AwaitResponses(*peer, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_THAT(responses[0].status,
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("carries no message bytes")));
  // The stream never opened and its id is free: the same id opens a proper one.
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kShout) + MessageBytes(1, EchoText("hi")) +
                                   HalfCloseBytes(1)),
              IsOk());
  responses = AwaitResponses(*peer, 1, 2);
  ASSERT_EQ(responses.size(), 2u);
  EXPECT_THAT(responses[1].status, IsOk());
  std::vector<Frame> messages = FramesFor(peer->received(), 1, FrameType::kMessage);
  ASSERT_EQ(messages.size(), 1u);
  EXPECT_EQ(messages[0].payload, EchoText("HI"));
  EXPECT_TRUE(logs_.empty()) << ::testing::PrintToString(logs_);
}

TEST_P(StreamWireTest, MethodKindMismatchIsUnimplemented) {
  StartServer();
  auto peer = Handshaken();
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, testing::kEcho) +
                                   RequestBytes(2, kShout, EchoText("hi")) +
                                   OpenStreamBytes(3, "/no.Such/Method")),
              IsOk());
  peer->ReadUntil(io_, [](const std::string& in) { return testing::Responses(in).size() >= 3; });
  std::vector<RawResponse> responses = testing::Responses(peer->received());
  ASSERT_EQ(responses.size(), 3u);
  for (const RawResponse& r : responses) {
    EXPECT_THAT(r.status, StatusIs(absl::StatusCode::kUnimplemented));
    // The refusal of a stream is an ordinary response: end of stream, header only.
    wire::ResponseHeader header;
    absl::StatusOr<size_t> offset = internal::DecodePayloadHeader(r.payload, header);
    ASSERT_THAT(offset, IsOk());
    EXPECT_EQ(*offset, r.payload.size());
  }
  EXPECT_EQ(responses[0].call_id, 1u);
  EXPECT_THAT(responses[0].status.message(), HasSubstr("a unary method"));
  EXPECT_EQ(responses[1].call_id, 2u);
  EXPECT_THAT(responses[1].status.message(), HasSubstr("a streaming method"));
  EXPECT_EQ(responses[2].call_id, 3u);
  EXPECT_THAT(responses[2].status.message(), HasSubstr("unknown method"));
  for (const Frame& f : testing::Frames(peer->received())) {
    if (f.type == FrameType::kResponse) {
      EXPECT_EQ(f.flags, transport::kFlagEndOfStream);
    }
  }
  EXPECT_TRUE(peer->Pongs(io_));
}

TEST_P(StreamWireTest, FramesForUnknownCallIdsAreIgnored) {
  StartServer();
  auto peer = Handshaken();
  ASSERT_NE(peer, nullptr);
  // Ids never opened, including frames that would be protocol errors on a stream.
  ASSERT_THAT(peer->Write(io_, MessageBytes(99, "x") + HalfCloseBytes(99) + WindowBytes(99, 5) +
                                   WindowBytes(99, 0) + MessageBytes(100, std::string(1000, 'm')) +
                                   HalfCloseBytes(100, "payload") + MessageBytes(100, "after")),
              IsOk());
  EXPECT_TRUE(peer->Pongs(io_));
  // A stream that has ended: its trailer is written, so its id is unknown again.
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kShout) + MessageBytes(1, EchoText("hi")) +
                                   HalfCloseBytes(1)),
              IsOk());
  std::vector<RawResponse> responses = AwaitResponses(*peer, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_THAT(responses[0].status, IsOk());
  ASSERT_THAT(peer->Write(io_, MessageBytes(1, "late") + WindowBytes(1, 7) + HalfCloseBytes(1) +
                                   MessageBytes(1, "later")),
              IsOk());
  EXPECT_TRUE(peer->Pongs(io_));
  EXPECT_EQ(testing::Responses(peer->received()).size(), 1u);  // nothing for 99 or 100
  EXPECT_TRUE(logs_.empty()) << ::testing::PrintToString(logs_);
}

TEST_P(StreamWireTest, HelloAnnouncingAWindowAbove2To31IsRefused) {
  StartServer();
  for (uint32_t window : {0x80000000u, 0xffffffffu}) {
    SCOPED_TRACE(window);
    auto peer = Raw();
    ASSERT_NE(peer, nullptr);
    EXPECT_TRUE(ClosedAfter(*peer, HelloBytes(0, window)));
  }
  EXPECT_TRUE(Logged("peer announced stream_window 2147483648, above the maximum of 2147483647"));
  EXPECT_TRUE(Logged("peer announced stream_window 4294967295"));
  // 2^31-1 itself is fine.
  auto peer = Handshaken(kMaxCredit);
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kShout) + MessageBytes(1, EchoText("hi")) +
                                   HalfCloseBytes(1)),
              IsOk());
  std::vector<RawResponse> responses = AwaitResponses(*peer, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_THAT(responses[0].status, IsOk());
}

// A configured window above 2^31-1 is announced as 2^31-1, so peers do not refuse the hello.
TEST_P(StreamWireTest, ConfiguredWindowAbove2To31IsAnnouncedAs2To31Minus1) {
  ServerOptions options;
  options.stream_window = 0xffffffff;
  StartServer(options);
  auto peer = Handshaken();
  ASSERT_NE(peer, nullptr);
  wire::Hello hello;
  ASSERT_TRUE(hello.ParseFromString(testing::Frames(peer->received())[0].payload));
  EXPECT_EQ(hello.stream_window(), kMaxCredit);
  // And a channel configured so streams with it.
  ChannelOptions channel_options;
  channel_options.stream_window = 0xffffffff;
  auto channel = Channel::Create(io_.get_executor(), endpoint_.ToString(), channel_options).value();
  std::shared_ptr<internal::ClientStream> stream = channel->OpenStream(kShout, {});
  auto op = [&]() -> asio::awaitable<std::optional<std::string>> {
    if (!(co_await stream->Write(EchoText("hi"))).ok()) co_return std::nullopt;
    co_return co_await stream->Read();
  };
  EXPECT_EQ(RunCoro(io_, op()), EchoText("HI"));
  EXPECT_THAT(RunCoro(io_, stream->Finish()), IsOk());
}

TEST_P(StreamWireTest, MessageAfterTheHalfCloseClosesTheConnection) {
  StartServer();
  {
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold) + MessageBytes(1, "a") +
                                     HalfCloseBytes(1) + WindowBytes(1, 1)),
                IsOk());
    EXPECT_TRUE(peer->Pongs(io_));  // a WINDOW after the half-close is fine
    EXPECT_TRUE(ClosedAfter(*peer, MessageBytes(1, "b")));
  }
  {
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold) + HalfCloseBytes(1)), IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, HalfCloseBytes(1)));
  }
  {
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold)), IsOk());
    EXPECT_TRUE(peer->Pongs(io_));
    EXPECT_TRUE(ClosedAfter(*peer, HalfCloseBytes(1, "x")));
  }
  EXPECT_TRUE(Logged("message after the end of stream on call 1"));
  EXPECT_TRUE(Logged("a second end of stream on call 1"));
  EXPECT_TRUE(Logged("end-of-stream message frame with 1 payload bytes"));
  EXPECT_TRUE(RunUntil(io_, [&] { return hold_ended_ == 3; }));
}

TEST_P(StreamWireTest, StreamBeforeBothHellosAnnounceAWindowClosesTheConnection) {
  StartServer();
  {
    auto peer = Handshaken(/*stream_window=*/0);
    ASSERT_NE(peer, nullptr);
    EXPECT_TRUE(ClosedAfter(*peer, OpenStreamBytes(1, kShout)));
  }
  ServerOptions options;
  options.stream_window = 0;
  StartServer(options);
  {
    auto peer = Handshaken();
    ASSERT_NE(peer, nullptr);
    wire::Hello hello;
    ASSERT_TRUE(hello.ParseFromString(testing::Frames(peer->received())[0].payload));
    EXPECT_EQ(hello.stream_window(), 0u);
    EXPECT_TRUE(ClosedAfter(*peer, OpenStreamBytes(1, kShout)));
  }
  EXPECT_TRUE(Logged("streams were not negotiated in the hellos"));
  // A channel does not try: UNIMPLEMENTED without a request on the wire.
  auto channel = Channel::Create(io_.get_executor(), endpoint_.ToString()).value();
  std::shared_ptr<internal::ClientStream> stream = channel->OpenStream(kShout, {});
  EXPECT_THAT(RunCoro(io_, stream->Finish()),
              StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("announced no stream window")));
  ExpectStillServing();
}

TEST_P(StreamWireTest, CancelEndsTheHandlerWithoutATrailer) {
  StartServer();
  auto peer = Handshaken();
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold)), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return hold_started_ == 1; }));
  ASSERT_THAT(peer->Write(io_, CancelBytes(1)), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return hold_ended_ == 1; }));
  EXPECT_THAT(hold_end_, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(peer->Pongs(io_));
  EXPECT_TRUE(ResponsesFor(peer->received(), 1).empty());
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

TEST_P(StreamWireTest, DeadlineEndsTheStreamWithADeadlineExceededTrailer) {
  StartServer();
  auto peer = Handshaken();
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kHold, /*timeout_us=*/50'000)), IsOk());
  std::vector<RawResponse> responses = AwaitResponses(*peer, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_THAT(responses[0].status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_THAT(hold_end_, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(FramesFor(peer->received(), 1, FrameType::kResponse)[0].flags,
            transport::kFlagEndOfStream);
}

// §13.5's sender rule, seen from the receiving side: the server sends while its credit is above
// 0, one message past it, and goes on when WINDOWs bring it above 0 again.
TEST_P(StreamWireTest, ServerSendsWhileItsCreditIsAboveZero) {
  StartServer();
  auto peer = Handshaken(/*stream_window=*/10);
  ASSERT_NE(peer, nullptr);
  auto messages = [&] { return FramesFor(peer->received(), 1, FrameType::kMessage).size(); };
  ASSERT_THAT(peer->Write(io_, OpenStreamBytes(1, kFlood)), IsOk());
  // 4-byte messages: credit 10, 6, 2, then -2 after the third.
  peer->ReadUntil(io_, [&](const std::string&) { return messages() >= 3; });
  EXPECT_TRUE(peer->Pongs(io_));
  EXPECT_EQ(messages(), 3u);
  ASSERT_THAT(peer->Write(io_, WindowBytes(1, 3)), IsOk());  // credit 1: one more, to -3
  EXPECT_TRUE(peer->Pongs(io_));
  EXPECT_EQ(messages(), 4u);
  ASSERT_THAT(peer->Write(io_, WindowBytes(1, 3)), IsOk());  // credit 0: none
  EXPECT_TRUE(peer->Pongs(io_));
  EXPECT_EQ(messages(), 4u);
  ASSERT_THAT(peer->Write(io_, WindowBytes(1, 1000)), IsOk());
  std::vector<RawResponse> responses = AwaitResponses(*peer, 1);
  ASSERT_EQ(responses.size(), 1u);
  EXPECT_THAT(responses[0].status, IsOk());
  std::vector<Frame> sent = FramesFor(peer->received(), 1, FrameType::kMessage);
  ASSERT_EQ(sent.size(), size_t{kFloodCount});
  for (int i = 0; i < kFloodCount; ++i) EXPECT_EQ(sent[i].payload, absl::StrFormat("f%03d", i));
  // The trailer came after the last message, though we never half-closed.
  std::vector<Frame> all = testing::Frames(peer->received());
  EXPECT_EQ(all.back().type, FrameType::kResponse);
}

// --- A hostile server against a real channel ---

class StreamWireClientTest : public StreamWireTest {
 protected:
  struct Outcome {
    absl::Status status;  // the call's
    bool closed = false;  // the channel closed the connection
  };
  // A channel calls kShout as a stream that neither reads nor writes (or, with `unary`, kEcho)
  // on a raw server that answers its hello with `hello` and, once the call's REQUEST has
  // arrived, sends `after_request(call_id)`. Waits for the call's end, then sees whether the
  // channel closed the connection.
  Outcome AgainstRawServer(const std::string& hello,
                           const std::function<std::string(uint32_t)>& after_request,
                           ChannelOptions options = {}, bool unary = false) {
    auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
    std::unique_ptr<transport::Listener> listener =
        transport->Listen(GetParam().loopback_endpoint()).value();
    auto channel =
        Channel::Create(io_.get_executor(), listener->local_endpoint().ToString(), options).value();
    std::optional<absl::Status> status;
    auto client = [&]() -> asio::awaitable<void> {
      if (unary) {
        status = (co_await channel->Call(testing::kEcho, "x")).status();
        co_return;
      }
      std::shared_ptr<internal::ClientStream> stream = channel->OpenStream(kShout, {});
      co_await stream->WaitForEnd();
      status = stream->end_status();
    };
    asio::co_spawn(io_, client, asio::detached);
    Outcome outcome;
    auto server = RawPeer::Accept(io_, *listener);
    if (server == nullptr || !server->ReadFrames(io_, 1) || !server->Write(io_, hello).ok()) {
      ADD_FAILURE() << "no connection from the channel";
      return outcome;
    }
    if (server->ReadFrames(io_, 2)) {
      const uint32_t call_id = testing::Frames(server->received())[1].call_id;
      (void)server->Write(io_, after_request(call_id));
    }
    if (!RunUntil(io_, [&] { return status.has_value(); })) {
      ADD_FAILURE() << "the call did not end";
      return outcome;
    }
    outcome.status = *status;
    // A channel that kept the connection answers a ping; one that closed it does not.
    if (!server->Pongs(io_)) {
      server->ReadUntilClosed(io_);
      outcome.closed = server->closed();
    }
    listener->Close();
    return outcome;
  }
  static std::string StreamHello(uint32_t stream_window = 8) {
    return HelloBytes(0, stream_window, 256);
  }
};

TEST_P(StreamWireClientTest, ResponseWithoutEndOfStreamClosesTheConnection) {
  for (bool unary : {false, true}) {
    SCOPED_TRACE(unary ? "unary" : "stream");
    Outcome o = AgainstRawServer(
        StreamHello(),
        [](uint32_t id) { return ResponseBytes(id, absl::OkStatus(), {}, {}, /*flags=*/0); }, {},
        unary);
    EXPECT_TRUE(o.closed);
    EXPECT_THAT(o.status,
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("without end of stream")));
  }
}

TEST_P(StreamWireClientTest, ServerBeyondTheClientsWindowClosesTheConnection) {
  ChannelOptions options;
  options.stream_window = 8;
  Outcome o = AgainstRawServer(
      StreamHello(),
      [](uint32_t id) { return MessageBytes(id, std::string(8, 'm')) + MessageBytes(id, "x"); },
      options);
  EXPECT_TRUE(o.closed);
  EXPECT_THAT(o.status, StatusIs(absl::StatusCode::kUnavailable,
                                 HasSubstr("message beyond the flow-control window")));
}

TEST_P(StreamWireClientTest, BadWindowFromTheServerClosesTheConnection) {
  Outcome zero = AgainstRawServer(StreamHello(), [](uint32_t id) { return WindowBytes(id, 0); });
  EXPECT_TRUE(zero.closed);
  EXPECT_THAT(zero.status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("window frame granting 0 bytes")));
  // The client's credit starts at the server's window, 2^31-1 here.
  Outcome past =
      AgainstRawServer(StreamHello(kMaxCredit), [](uint32_t id) { return WindowBytes(id, 1); });
  EXPECT_TRUE(past.closed);
  EXPECT_THAT(past.status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("grows past 2^31-1")));
}

TEST_P(StreamWireClientTest, StreamFramesTheClientCannotTakeCloseTheConnection) {
  Outcome on_unary = AgainstRawServer(
      StreamHello(), [](uint32_t id) { return MessageBytes(id, "x"); }, {}, /*unary=*/true);
  EXPECT_TRUE(on_unary.closed);
  EXPECT_THAT(on_unary.status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("unary call")));
  Outcome id_zero = AgainstRawServer(StreamHello(), [](uint32_t) { return MessageBytes(0, "x"); });
  EXPECT_TRUE(id_zero.closed);
  EXPECT_THAT(id_zero.status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("call id 0")));
  // A server may half-close before its trailer; a message after that is a protocol error.
  Outcome after_half_close = AgainstRawServer(
      StreamHello(), [](uint32_t id) { return HalfCloseBytes(id) + MessageBytes(id, "x"); });
  EXPECT_TRUE(after_half_close.closed);
  EXPECT_THAT(after_half_close.status,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("after the end of stream")));
}

TEST_P(StreamWireClientTest, FramesForUnknownCallsAreIgnoredAndTheTrailerEndsTheCall) {
  Outcome o = AgainstRawServer(StreamHello(), [](uint32_t id) {
    return MessageBytes(id + 50, "x") + WindowBytes(id + 50, 0) + HalfCloseBytes(id + 50, "p") +
           ResponseBytes(id + 50, absl::OkStatus()) +
           ResponseBytes(id, absl::PermissionDeniedError("no"), {}, {{"why", "test"}});
  });
  EXPECT_FALSE(o.closed);
  EXPECT_THAT(o.status, StatusIs(absl::StatusCode::kPermissionDenied, "no"));
}

TEST_P(StreamWireClientTest, ServerHelloAnnouncingAWindowAbove2To31IsRefused) {
  auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
  std::unique_ptr<transport::Listener> listener =
      transport->Listen(GetParam().loopback_endpoint()).value();
  auto channel = Channel::Create(io_.get_executor(), listener->local_endpoint().ToString()).value();
  std::optional<absl::StatusOr<std::string>> result;
  auto client = [&]() -> asio::awaitable<void> {
    result = co_await channel->Call(testing::kEcho, "x");
  };
  asio::co_spawn(io_, client, asio::detached);
  auto server = RawPeer::Accept(io_, *listener);
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(server->ReadFrames(io_, 1));
  ASSERT_THAT(server->Write(io_, HelloBytes(0, 0x80000000u)), IsOk());
  server->ReadUntilClosed(io_);
  EXPECT_TRUE(server->closed());
  ASSERT_TRUE(RunUntil(io_, [&] { return result.has_value(); }));
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kUnavailable,
                                HasSubstr("peer announced stream_window 2147483648")));
  listener->Close();
}

// Callers that let go of their streams as soon as Finish returns, for the three ways a call
// ends under them: the trailer arrives, the connection is lost, the deadline passes. The channel
// is then in the middle of ending the call (and, for the last two, of a loop over its calls);
// the streams must outlive that (ASan saw a use after free here).
TEST_P(StreamWireClientTest, CallersThatDropTheirStreamsWhenFinishReturns) {
  enum class End { kTrailer, kConnectionLost, kDeadline };
  for (End end : {End::kTrailer, End::kConnectionLost, End::kDeadline}) {
    SCOPED_TRACE(static_cast<int>(end));
    auto transport = transport::NewTransport(GetParam().scheme, io_.get_executor()).value();
    std::unique_ptr<transport::Listener> listener =
        transport->Listen(GetParam().loopback_endpoint()).value();
    auto channel =
        Channel::Create(io_.get_executor(), listener->local_endpoint().ToString()).value();
    constexpr int kCalls = 3;
    std::vector<absl::Status> results;
    auto client = [&]() -> asio::awaitable<void> {
      CallOptions options;
      if (end == End::kDeadline) options.timeout = std::chrono::milliseconds(100);
      absl::Status status;
      {
        std::shared_ptr<internal::ClientStream> stream = channel->OpenStream(kShout, options);
        status = co_await stream->Finish();
      }  // the last reference to the stream goes here
      results.push_back(status);
    };
    for (int i = 0; i < kCalls; ++i) asio::co_spawn(io_, client, asio::detached);
    auto server = RawPeer::Accept(io_, *listener);
    ASSERT_NE(server, nullptr);
    ASSERT_TRUE(server->ReadFrames(io_, 1));
    ASSERT_THAT(server->Write(io_, StreamHello()), IsOk());
    // Each call: a REQUEST and, Finish having half-closed it, a half-close.
    ASSERT_TRUE(server->ReadFrames(io_, 1 + 2 * kCalls));
    std::string trailers;
    for (const Frame& f : testing::Frames(server->received())) {
      if (f.type == FrameType::kRequest) trailers += ResponseBytes(f.call_id, absl::OkStatus());
    }
    if (end == End::kTrailer) {
      ASSERT_THAT(server->Write(io_, trailers), IsOk());
    } else if (end == End::kConnectionLost) {
      server->connection().Close();
    }
    ASSERT_TRUE(RunUntil(io_, [&] { return results.size() == kCalls; }));
    const absl::StatusCode expected = end == End::kTrailer ? absl::StatusCode::kOk
                                      : end == End::kConnectionLost
                                          ? absl::StatusCode::kUnavailable
                                          : absl::StatusCode::kDeadlineExceeded;
    for (const absl::Status& s : results) EXPECT_EQ(s.code(), expected) << s;
    // The channel let go of every call.
    EXPECT_TRUE(RunUntil(io_, [&] { return channel->calls_in_flight() == 0; }));
    listener->Close();
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransports, StreamWireTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });
INSTANTIATE_TEST_SUITE_P(AllTransports, StreamWireClientTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier
