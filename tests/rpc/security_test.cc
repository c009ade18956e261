// Who may connect and who may call: uid/gid allow-lists on the transports with kernel
// credentials (refused in the server's hello, PROTOCOL.md §6.1a), the authorize hook and call
// credentials over every transport, and no token in any log line.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/call.h"
#include "rpc/channel.h"
#include "rpc/log.h"
#include "rpc/server.h"
#include "rpc/service.h"
#include "rpc/wire.pb.h"
#include "streams.courier.h"
#include "tests/rpc/raw_peer.h"
#include "tests/rpc/test_service.h"
#include "tests/testing/log_capture.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"
#include "transport/status.h"

namespace courier {
namespace {

using ::courier::test::streams::Payload;
using ::courier::test::streams::StreamRequest;
using ::courier::test::streams::StreamsService;
using ::courier::test::streams::StreamsStub;
using ::courier::test::streams::Summary;
using ::courier::testing::IsOk;
using ::courier::testing::LogCapture;
using ::courier::testing::RawPeer;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kToken[] = "s3cr3t-t0k3n-7f1e9a";

// Unary and server-streaming methods that count how often their handlers ran.
class Streams final : public StreamsService {
 public:
  std::atomic<int> handled{0};

  asio::awaitable<absl::StatusOr<Payload>> Unary(ServerContext&, Payload request) override {
    ++handled;
    co_return request;
  }
  asio::awaitable<absl::Status> Download(ServerContext&, StreamRequest request,
                                         ServerWriter<Payload>& writer) override {
    ++handled;
    for (int size : request.response_sizes()) {
      Payload p;
      p.set_body(std::string(size, 'd'));
      if (absl::Status s = co_await writer.Write(p); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
  asio::awaitable<absl::StatusOr<Summary>> Upload(ServerContext&,
                                                  ServerReader<Payload>& reader) override {
    ++handled;
    Summary summary;
    while (std::optional<Payload> p = co_await reader.Read())
      summary.set_count(summary.count() + 1);
    co_return summary;
  }
  asio::awaitable<absl::Status> PingPong(ServerContext&,
                                         ServerReaderWriter<Payload, Payload>& stream) override {
    ++handled;
    while (std::optional<Payload> p = co_await stream.Read()) {
      if (absl::Status s = co_await stream.Write(*p); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
};

// The value of `key` in `metadata`, if present.
std::optional<std::string> Find(const Metadata& metadata, std::string_view key) {
  for (const auto& [k, v] : metadata) {
    if (k == key) return v;
  }
  return std::nullopt;
}

// Requires "authorization: Bearer <kToken>", as an application would.
absl::Status RequireToken(const AuthorizationContext& context) {
  std::optional<std::string> value = Find(context.metadata, "authorization");
  if (!value) return absl::UnauthenticatedError("no credentials");
  if (*value != absl::StrCat("Bearer ", kToken)) return absl::PermissionDeniedError("bad token");
  return absl::OkStatus();
}

CallCredentials AddToken() {
  return [](const CallCredentialsContext&, Metadata& metadata) {
    metadata.emplace_back("authorization", absl::StrCat("Bearer ", kToken));
    return absl::OkStatus();
  };
}

std::string ParamName(const ::testing::TestParamInfo<transport::TransportInfo>& info) {
  return std::string(info.param.scheme);
}

std::vector<transport::TransportInfo> WithKernelCredentials() {
  std::vector<transport::TransportInfo> out;
  for (const transport::TransportInfo& info : transport::BuiltInTransports()) {
    if (info.kernel_credentials) out.push_back(info);
  }
  return out;
}

class SecurityTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  // Starts a server with `options` on the transport's loopback endpoint (plus `query`).
  void StartServer(ServerOptions options = {}, std::string query = "") {
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(streams_), IsOk());
    ASSERT_THAT(server_->AddService(raw_.service()), IsOk());
    std::string uri = GetParam().loopback_endpoint().ToString();
    if (!query.empty())
      absl::StrAppend(&uri, uri.find('?') == std::string::npos ? "?" : "&", query);
    absl::StatusOr<Endpoint> endpoint = server_->Listen(uri);
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = *endpoint;
  }

  std::shared_ptr<Channel> NewChannel(ChannelOptions options = {}) {
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io_.get_executor(), endpoint_.ToString(), options);
    EXPECT_THAT(channel, IsOk());
    return channel.ok() ? *channel : nullptr;
  }

  absl::StatusOr<Payload> Unary(const std::shared_ptr<Channel>& channel, CallOptions call = {}) {
    StreamsStub stub(channel);
    Payload request;
    request.set_body("ping");
    call.timeout = std::chrono::seconds(10);
    return RunCoro(io_, stub.Unary(request, call));
  }

  // A server-streaming call: the messages' count, or the call's status.
  absl::StatusOr<int> Download(const std::shared_ptr<Channel>& channel, CallOptions call = {}) {
    StreamsStub stub(channel);
    StreamRequest request;
    request.add_response_sizes(3);
    request.add_response_sizes(5);
    call.timeout = std::chrono::seconds(10);
    return RunCoro(io_, [&]() -> asio::awaitable<absl::StatusOr<int>> {
      auto reader = stub.Download(request, call);
      int count = 0;
      while (std::optional<Payload> p = co_await reader.Read()) ++count;
      absl::Status s = co_await reader.Finish();
      if (!s.ok()) co_return s;
      co_return count;
    }());
  }

  absl::StatusOr<std::string> Raw(const std::shared_ptr<Channel>& channel, std::string method,
                                  CallOptions call = {}) {
    call.timeout = std::chrono::seconds(10);
    return RunCoro(io_, channel->Call(std::move(method), "raw", call));
  }

  Streams streams_;  // outlive the io_context, whose pending handlers refer to them
  testing::TestService raw_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
};

// --- The authorize hook, over every transport.

TEST_P(SecurityTest, AuthorizeRefusesPerMethodBeforeTheHandlerRuns) {
  ServerOptions options;
  options.authorize = [](const AuthorizationContext& context) {
    if (context.method.ends_with("/Download")) {
      return absl::PermissionDeniedError("downloads are not for you");
    }
    return absl::OkStatus();
  };
  StartServer(options);
  auto channel = NewChannel();
  EXPECT_THAT(Unary(channel), IsOk());
  EXPECT_THAT(Download(channel), StatusIs(absl::StatusCode::kPermissionDenied,
                                          HasSubstr("downloads are not for you")));
  EXPECT_EQ(streams_.handled.load(), 1);  // Unary's only
  EXPECT_EQ(server_->stats().calls_not_authorized, 1u);
  EXPECT_THAT(Unary(channel), IsOk()) << "the connection stays usable";
}

TEST_P(SecurityTest, AuthorizeSeesThePeerTheMethodAndTheMetadata) {
  std::vector<std::string> seen;
  std::optional<transport::PeerCredentials> credentials;
  ServerOptions options;
  options.authorize = [&](const AuthorizationContext& context) {
    seen.push_back(absl::StrCat(transport::AsAbsl(context.method), " ",
                                Find(context.metadata, "x-user").value_or("-"), " ",
                                context.peer.address.empty() ? "no address" : "address"));
    credentials = context.peer.credentials;
    return absl::OkStatus();
  };
  StartServer(options);
  auto channel = NewChannel();
  CallOptions call;
  call.metadata.emplace_back("x-user", "alice");
  ASSERT_THAT(Unary(channel, call), IsOk());
  ASSERT_THAT(Raw(channel, testing::kEcho), IsOk());
  EXPECT_THAT(seen, ::testing::ElementsAre("/courier.test.streams.Streams/Unary alice address",
                                           "/courier.test.Test/Echo - address"));
  if (GetParam().kernel_credentials) {
    ASSERT_TRUE(credentials.has_value());
    EXPECT_EQ(credentials->uid, getuid());
  }
}

TEST_P(SecurityTest, AuthorizeRunsBeforeTheMethodIsLookedUp) {
  ServerOptions options;
  options.authorize = RequireToken;
  StartServer(options);
  auto channel = NewChannel();
  // A caller without credentials learns nothing about which methods exist.
  EXPECT_THAT(Raw(channel, "/no.Such/Method"), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(Raw(channel, testing::kEcho), StatusIs(absl::StatusCode::kUnauthenticated));
  CallOptions call;
  call.metadata.emplace_back("authorization", absl::StrCat("Bearer ", kToken));
  EXPECT_THAT(Raw(channel, "/no.Such/Method", call), StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_THAT(Raw(channel, testing::kEcho, call), IsOk());
  call.metadata = {{"authorization", "Bearer wrong"}};
  EXPECT_THAT(Raw(channel, testing::kEcho, call),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("bad token")));
}

TEST_P(SecurityTest, AnAuthorizeHookThatThrowsAnswersInternal) {
  ServerOptions options;
  options.authorize = [](const AuthorizationContext&) -> absl::Status {
    throw std::runtime_error("policy store unreachable");
  };
  StartServer(options);
  auto channel = NewChannel();
  EXPECT_THAT(Unary(channel),
              StatusIs(absl::StatusCode::kInternal, HasSubstr("policy store unreachable")));
  EXPECT_EQ(streams_.handled.load(), 0);
  EXPECT_THAT(Unary(channel), StatusIs(absl::StatusCode::kInternal)) << "and the server lives on";
}

// --- Call credentials, over every transport.

TEST_P(SecurityTest, CallCredentialsGoWithEveryKindOfCall) {
  ServerOptions server_options;
  server_options.authorize = RequireToken;
  StartServer(server_options);
  std::atomic<int> asked{0};
  ChannelOptions options;
  options.call_credentials = [&](const CallCredentialsContext& context, Metadata& metadata) {
    ++asked;
    EXPECT_EQ(context.endpoint, endpoint_);
    EXPECT_TRUE(context.method.starts_with("/courier.test.")) << context.method;
    return AddToken()(context, metadata);
  };
  options.allow_insecure_call_credentials = !GetParam().confidential;
  auto channel = NewChannel(options);
  EXPECT_THAT(Unary(channel), IsOk());               // generated unary stub
  absl::StatusOr<int> streamed = Download(channel);  // generated streaming stub
  ASSERT_THAT(streamed, IsOk());
  EXPECT_EQ(*streamed, 2);
  EXPECT_THAT(Raw(channel, testing::kEcho), IsOk());  // Channel::Call
  EXPECT_EQ(asked.load(), 3);
  // Without the credentials the same server refuses.
  auto bare = NewChannel();
  EXPECT_THAT(Unary(bare), StatusIs(absl::StatusCode::kUnauthenticated));
}

TEST_P(SecurityTest, CallCredentialsAreNotSentOverTransportsAnyoneCanRead) {
  std::atomic<int> authorized{0};
  ServerOptions server_options;
  server_options.authorize = [&](const AuthorizationContext& context) {
    ++authorized;
    return RequireToken(context);
  };
  StartServer(server_options);
  ChannelOptions options;
  options.call_credentials = AddToken();
  auto channel = NewChannel(options);
  if (GetParam().confidential) {
    EXPECT_THAT(Unary(channel), IsOk());
    EXPECT_EQ(authorized.load(), 1);
    return;
  }
  EXPECT_THAT(Unary(channel), StatusIs(absl::StatusCode::kUnauthenticated,
                                       HasSubstr("allow_insecure_call_credentials")));
  EXPECT_THAT(Download(channel), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_THAT(Raw(channel, testing::kEcho), StatusIs(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(authorized.load(), 0) << "nothing reached the server";
}

TEST_P(SecurityTest, CallCredentialsThatFailFailTheCallUnsent) {
  std::atomic<int> authorized{0};
  ServerOptions server_options;
  server_options.authorize = [&](const AuthorizationContext&) {
    ++authorized;
    return absl::OkStatus();
  };
  StartServer(server_options);
  ChannelOptions options;
  options.call_credentials = [](const CallCredentialsContext&, Metadata&) {
    return absl::UnavailableError("token service down");
  };
  options.allow_insecure_call_credentials = true;
  auto channel = NewChannel(options);
  EXPECT_THAT(Unary(channel), StatusIs(absl::StatusCode::kUnavailable, HasSubstr("token service")));
  EXPECT_THAT(Download(channel), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(Raw(channel, testing::kEcho), StatusIs(absl::StatusCode::kUnavailable));
  // Metadata the hook adds is checked like the caller's own.
  ChannelOptions bad_key;
  bad_key.call_credentials = [](const CallCredentialsContext&, Metadata& metadata) {
    metadata.emplace_back("Authorization", "Bearer x");
    return absl::OkStatus();
  };
  bad_key.allow_insecure_call_credentials = true;
  EXPECT_THAT(Unary(NewChannel(bad_key)), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(authorized.load(), 0);
}

TEST_P(SecurityTest, NoLogLineCarriesAToken) {
  LogCapture logs;
  ServerOptions server_options;
  server_options.authorize = RequireToken;
  server_options.handshake_timeout = std::chrono::milliseconds(200);
  StartServer(server_options);
  ChannelOptions options;
  options.call_credentials = AddToken();
  options.allow_insecure_call_credentials = true;
  auto channel = NewChannel(options);
  EXPECT_THAT(Unary(channel), IsOk());
  EXPECT_THAT(Raw(channel, "/no.Such/Method"), StatusIs(absl::StatusCode::kUnimplemented));
  CallOptions wrong;
  wrong.metadata = {{"authorization", absl::StrCat("Bearer not-", kToken)}};
  EXPECT_THAT(Unary(NewChannel(), wrong), StatusIs(absl::StatusCode::kPermissionDenied));
  // A raw client that sends a request with the token and then breaks the protocol: the server
  // logs why it closed the connection, and nothing of the request's metadata.
  auto peer = RawPeer::Connect(io_, GetParam(), endpoint_);
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io_, testing::HelloBytes()), IsOk());
  ASSERT_TRUE(peer->ReadFrames(io_, 1));
  // (Call 1 sleeps, so the second request reuses an id in flight.)
  ASSERT_THAT(
      peer->Write(io_, testing::RequestBytes(1, testing::kSleep, "2000", 10'000'000,
                                             {{"authorization", absl::StrCat("Bearer ", kToken)}}) +
                           testing::RequestBytes(1, testing::kSleep, "2000", 10'000'000,
                                                 {{"authorization", kToken}})),
      IsOk());
  peer->ReadUntilClosed(io_);
  EXPECT_TRUE(peer->closed());
  ASSERT_TRUE(RunUntil(io_, [&] { return !logs.Matching("reused while in flight").empty(); }));
  for (const std::string& line : logs.Lines()) {
    EXPECT_THAT(line, Not(HasSubstr(kToken)));
    EXPECT_THAT(line, Not(HasSubstr("t0k3n")));
  }
}

INSTANTIATE_TEST_SUITE_P(AllTransports, SecurityTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()), ParamName);

// --- Allow-lists by uid and gid, on the transports with kernel credentials.

class AllowListTest : public SecurityTest {};

TEST_P(AllowListTest, OwnUidIsAdmitted) {
  ServerOptions options;
  options.allowed_peers.uids = {getuid()};
  StartServer(options);
  EXPECT_THAT(Unary(NewChannel()), IsOk());
  EXPECT_EQ(server_->stats().connections_not_allowed, 0u);
}

TEST_P(AllowListTest, OtherUidsAreRefusedWithPermissionDenied) {
  LogCapture logs;
  ServerOptions options;
  options.allowed_peers.uids = {getuid() + 1, getuid() + 2};
  StartServer(options);
  auto channel = NewChannel();
  EXPECT_THAT(
      Unary(channel),
      StatusIs(absl::StatusCode::kPermissionDenied,
               HasSubstr(absl::StrCat("uid ", getuid(), " (gid ", getgid(), ") may not connect"))));
  // While the channel backs off, its calls fail fast with the same code.
  EXPECT_THAT(Download(channel), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(Raw(channel, testing::kEcho), StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(streams_.handled.load(), 0);
  EXPECT_EQ(server_->stats().connections_not_allowed, 1u);
  const std::vector<std::string> refused = logs.Matching("refused a connection from");
  ASSERT_EQ(refused.size(), 1u);
  EXPECT_THAT(refused[0], HasSubstr(absl::StrCat("uid ", getuid())));
  if (GetParam().scheme != "fifo") {  // fifo:// knows the FIFOs' owner, not the process
    EXPECT_THAT(refused[0], ::testing::AnyOf(HasSubstr(absl::StrCat("pid ", getpid())),
                                             HasSubstr(absl::StrCat("pid=", getpid()))));
    EXPECT_THAT(refused[0], Not(::testing::AllOf(HasSubstr(absl::StrCat("pid ", getpid())),
                                                 HasSubstr(absl::StrCat("pid=", getpid())))));
  }
  EXPECT_TRUE(logs.Matching("closing connection").empty()) << "logged once, not twice";
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
}

TEST_P(AllowListTest, AGidOnTheListAdmitsAnyUid) {
  ServerOptions options;
  options.allowed_peers.uids = {getuid() + 1};
  options.allowed_peers.gids = {getgid()};
  StartServer(options);
  EXPECT_THAT(Unary(NewChannel()), IsOk());
  options.allowed_peers.gids = {getgid() + 1};
  StartServer(options);
  EXPECT_THAT(Unary(NewChannel()), StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST_P(AllowListTest, TheUrisListReplacesTheOptionsAndIsTakenOutOfTheEndpoint) {
  ServerOptions options;
  options.allowed_peers.uids = {getuid() + 1};  // would refuse us
  StartServer(options, absl::StrCat("allow_uid=", getuid() + 5, ",", getuid()));
  EXPECT_THAT(endpoint_.address, Not(HasSubstr("allow_")));
  EXPECT_THAT(Unary(NewChannel()), IsOk());
  StartServer({}, absl::StrCat("allow_gid=", getgid() + 1));
  EXPECT_THAT(Unary(NewChannel()), StatusIs(absl::StatusCode::kPermissionDenied));
  StartServer({}, absl::StrCat("allow_uid=", getuid() + 1, "&allow_gid=", getgid()));
  EXPECT_THAT(Unary(NewChannel()), IsOk());
}

TEST_P(AllowListTest, ARefusalIsAHelloAndTheServerClosesWithinASecond) {
  ServerOptions options;
  options.allowed_peers.uids = {getuid() + 1};
  StartServer(options);
  auto peer = RawPeer::Connect(io_, GetParam(), endpoint_);
  ASSERT_NE(peer, nullptr);
  ASSERT_TRUE(peer->ReadFrames(io_, 1));
  std::vector<transport::Frame> frames = testing::Frames(peer->received());
  ASSERT_EQ(frames[0].type, transport::FrameType::kHello);
  wire::Hello hello;
  ASSERT_TRUE(hello.ParseFromString(frames[0].payload));
  EXPECT_EQ(hello.refusal_code(), static_cast<uint32_t>(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(hello.refusal_message(), HasSubstr("may not connect"));
  // A client that says hello, calls anyway and never closes: nothing is answered, and the
  // server closes at kRefusalLinger.
  const auto start = std::chrono::steady_clock::now();
  ASSERT_THAT(
      peer->Write(io_, testing::HelloBytes() + testing::RequestBytes(1, testing::kEcho, "x")),
      IsOk());
  peer->ReadUntilClosed(io_, std::chrono::seconds(5));
  EXPECT_TRUE(peer->closed());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(testing::Frames(peer->received()).size(), 1u) << "only the hello";
  EXPECT_EQ(raw_.sleep_started.load(), 0);
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->connections() == 0; }));
}

TEST_P(AllowListTest, ShutdownClosesARefusedConnectionWithoutAGoaway) {
  ServerOptions options;
  options.allowed_peers.uids = {getuid() + 1};
  StartServer(options);
  auto peer = RawPeer::Connect(io_, GetParam(), endpoint_);
  ASSERT_NE(peer, nullptr);
  ASSERT_TRUE(peer->ReadFrames(io_, 1));
  ASSERT_TRUE(RunUntil(io_, [&] { return server_->connections() == 1; }));
  const auto start = std::chrono::steady_clock::now();
  RunCoro(io_, server_->Shutdown(std::chrono::seconds(5)));
  peer->ReadUntilClosed(io_, std::chrono::seconds(5));
  EXPECT_TRUE(peer->closed());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(3));
  std::vector<transport::Frame> frames = testing::Frames(peer->received());
  ASSERT_EQ(frames.size(), 1u) << "the refusing hello, and no goaway after it";
  EXPECT_EQ(frames[0].type, transport::FrameType::kHello);
}

INSTANTIATE_TEST_SUITE_P(KernelCredentials, AllowListTest,
                         ::testing::ValuesIn(WithKernelCredentials()), ParamName);

// --- What needs no transport of its own.

TEST(AllowListOptions, TransportsWithoutKernelCredentialsRefuseAnAllowList) {
  asio::io_context io;
  for (const transport::TransportInfo& info : transport::BuiltInTransports()) {
    if (info.kernel_credentials) continue;
    SCOPED_TRACE(info.scheme);
    ServerOptions options;
    options.allowed_peers.gids = {getgid()};
    Server with_options(io.get_executor(), options);
    EXPECT_THAT(with_options.Listen(info.loopback_endpoint().ToString()),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kernel credentials")));
    Server with_query(io.get_executor());
    std::string uri = info.loopback_endpoint().ToString();
    absl::StrAppend(&uri, uri.find('?') == std::string::npos ? "?" : "&", "allow_uid=0");
    EXPECT_THAT(with_query.Listen(uri),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("kernel credentials")));
  }
}

TEST(AllowListOptions, MalformedIdsAreInvalidArgument) {
  asio::io_context io;
  for (const char* query : {"allow_uid=", "allow_uid=abc", "allow_uid=1,,2", "allow_uid=-1",
                            "allow_gid=+5", "allow_uid=99999999999", "allow_gid=1 "}) {
    SCOPED_TRACE(query);
    Server server(io.get_executor());
    EXPECT_THAT(server.Listen(absl::StrCat("unix:@courier-allow-", getpid(), "?", query)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("allow_")));
  }
}

TEST(AllowListOptions, TheTransportsOwnOptionsStay) {
  asio::io_context io;
  Server server(io.get_executor());
  const std::string path = absl::StrCat(::testing::TempDir(), "/courier-allow-", getpid(), ".sock");
  absl::StatusOr<Endpoint> endpoint =
      server.Listen(absl::StrCat("unix://", path, "?allow_uid=", getuid(), "&mode=0660"));
  ASSERT_THAT(endpoint, IsOk());
  EXPECT_THAT(endpoint->address, Not(HasSubstr("allow_uid")));
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0660u);
}

TEST(Refusal, AClientHelloCarryingARefusalIsAProtocolError) {
  asio::io_context io;
  Server server(io.get_executor());
  const transport::TransportInfo& unix_info = *transport::FindTransport("unix").value();
  absl::StatusOr<Endpoint> endpoint = server.Listen(unix_info.loopback_endpoint().ToString());
  ASSERT_THAT(endpoint, IsOk());
  auto peer = RawPeer::Connect(io, unix_info, *endpoint);
  ASSERT_NE(peer, nullptr);
  ASSERT_THAT(peer->Write(io, transport::EncodeFrame(internal::HelloFrame(
                                  0, 0, 0, absl::PermissionDeniedError("you may not")))),
              IsOk());
  peer->ReadUntilClosed(io);
  EXPECT_TRUE(peer->closed());
}

}  // namespace
}  // namespace courier
