// Prometheus metrics (ServerOptions::metrics_listen and metrics_registry,
// ChannelOptions::metrics_registry) over every transport: unary calls that succeed and fail,
// the three kinds of streaming call, unknown methods, protocol errors and connections move the
// counters by exactly what happened, on both sides; and the HTTP endpoint answers GET /metrics
// only and keeps serving through a flood of junk requests.
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/write.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "streams.courier.h"
#include "tests/rpc/raw_peer.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"

namespace courier {
namespace {

using ::courier::test::streams::Payload;
using ::courier::test::streams::StreamRequest;
using ::courier::test::streams::StreamsService;
using ::courier::test::streams::StreamsStub;
using ::courier::test::streams::Summary;
using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;

constexpr char kUnary[] = "/courier.test.streams.Streams/Unary";
constexpr char kUpload[] = "/courier.test.streams.Streams/Upload";
constexpr char kDownload[] = "/courier.test.streams.Streams/Download";
constexpr char kPingPong[] = "/courier.test.streams.Streams/PingPong";

Payload Sized(size_t size, int response_size = 0) {
  Payload p;
  p.set_body(std::string(size, 'p'));
  p.set_response_size(response_size);
  return p;
}

size_t Bytes(const google::protobuf::MessageLite& message) { return message.ByteSizeLong(); }

class Streams final : public StreamsService {
 public:
  // Echoes the request; a negative response_size fails the call with NOT_FOUND.
  asio::awaitable<absl::StatusOr<Payload>> Unary(ServerContext&, Payload request) override {
    if (request.response_size() < 0) co_return absl::NotFoundError("no such payload");
    co_return request;
  }
  asio::awaitable<absl::Status> Download(ServerContext&, StreamRequest request,
                                         ServerWriter<Payload>& writer) override {
    for (int size : request.response_sizes()) {
      if (absl::Status s = co_await writer.Write(Sized(size)); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
  asio::awaitable<absl::StatusOr<Summary>> Upload(ServerContext&,
                                                  ServerReader<Payload>& reader) override {
    Summary summary;
    while (std::optional<Payload> p = co_await reader.Read()) {
      summary.set_count(summary.count() + 1);
    }
    co_return summary;
  }
  asio::awaitable<absl::Status> PingPong(ServerContext&,
                                         ServerReaderWriter<Payload, Payload>& stream) override {
    while (std::optional<Payload> p = co_await stream.Read()) {
      if (absl::Status s = co_await stream.Write(Sized(p->response_size())); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
};

// The value of the sample of family `name` whose labels include all of `labels`: a counter's or
// gauge's value, a histogram's sample count. nullopt when there is no such sample.
std::optional<double> Sample(prometheus::Registry& registry, const std::string& name,
                             const std::vector<std::pair<std::string, std::string>>& labels) {
  for (const prometheus::MetricFamily& family : registry.Collect()) {
    if (family.name != name) continue;
    for (const prometheus::ClientMetric& metric : family.metric) {
      bool match = true;
      for (const auto& [key, value] : labels) {
        bool found = false;
        for (const prometheus::ClientMetric::Label& label : metric.label) {
          found = found || (label.name == key && label.value == value);
        }
        match = match && found;
      }
      if (!match) continue;
      switch (family.type) {
        case prometheus::MetricType::Counter:
          return metric.counter.value;
        case prometheus::MetricType::Gauge:
          return metric.gauge.value;
        case prometheus::MetricType::Histogram:
          return static_cast<double>(metric.histogram.sample_count);
        default:
          return std::nullopt;
      }
    }
  }
  return std::nullopt;
}

double Value(prometheus::Registry& registry, const std::string& name,
             const std::vector<std::pair<std::string, std::string>>& labels) {
  return Sample(registry, name, labels).value_or(-1);
}

class MetricsTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.metrics_registry = server_metrics_;
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen(GetParam().loopback_endpoint().ToString());
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = *endpoint;
    ChannelOptions channel_options;
    channel_options.metrics_registry = client_metrics_;
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io_.get_executor(), endpoint_.ToString(), channel_options);
    ASSERT_THAT(channel, IsOk());
    channel_ = *channel;
  }

  double ServerValue(const std::string& name,
                     const std::vector<std::pair<std::string, std::string>>& labels) {
    return Value(*server_metrics_, name, labels);
  }
  double ClientValue(const std::string& name,
                     const std::vector<std::pair<std::string, std::string>>& labels) {
    return Value(*client_metrics_, name, labels);
  }

  // The calls one client made are over on both sides (a client stream's end is recorded when
  // the channel releases it, just after Finish returns).
  bool Settled(const std::string& method, double calls) {
    return RunUntil(io_, [&] {
      return ServerValue("courier_server_handling_seconds", {{"method", method}}) == calls &&
             ClientValue("courier_client_handling_seconds", {{"method", method}}) == calls;
    });
  }

  Streams service_;  // outlives the io_context, whose pending handlers refer to it
  std::shared_ptr<prometheus::Registry> server_metrics_ = std::make_shared<prometheus::Registry>();
  std::shared_ptr<prometheus::Registry> client_metrics_ = std::make_shared<prometheus::Registry>();
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  std::shared_ptr<Channel> channel_;
  Endpoint endpoint_;
};

TEST_P(MetricsTest, UnaryCallsMoveEveryCounterOnBothSides) {
  StreamsStub stub(channel_);
  const Payload ok = Sized(100);
  Payload failing = Sized(10);
  failing.set_response_size(-1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_THAT(RunCoro(io_, stub.Unary(ok)), IsOk());
  }
  EXPECT_THAT(RunCoro(io_, stub.Unary(failing)), StatusIs(absl::StatusCode::kNotFound));
  ASSERT_TRUE(Settled(kUnary, 4));

  const std::pair<std::string, std::string> method{"method", kUnary};
  for (const char* side : {"server", "client"}) {
    SCOPED_TRACE(side);
    prometheus::Registry& r = side == std::string("server") ? *server_metrics_ : *client_metrics_;
    const std::string prefix = absl::StrCat("courier_", side, "_");
    EXPECT_EQ(Value(r, prefix + "started_total", {method}), 4);
    EXPECT_EQ(Value(r, prefix + "handled_total", {method, {"code", "OK"}}), 3);
    EXPECT_EQ(Value(r, prefix + "handled_total", {method, {"code", "NOT_FOUND"}}), 1);
    // Only the codes that occurred have a sample.
    EXPECT_FALSE(Sample(r, prefix + "handled_total", {method, {"code", "INTERNAL"}}).has_value());
    EXPECT_EQ(Value(r, prefix + "handling_seconds", {method}), 4);
    EXPECT_EQ(Value(r, prefix + "calls_in_flight", {method}), 0);
  }
  // Requests: three OK ones and the failing one; responses: the three OK ones (echoes).
  EXPECT_EQ(ServerValue("courier_server_received_bytes_total", {method}),
            3 * Bytes(ok) + Bytes(failing));
  EXPECT_EQ(ServerValue("courier_server_sent_bytes_total", {method}), 3 * Bytes(ok));
  EXPECT_EQ(ClientValue("courier_client_sent_bytes_total", {method}),
            3 * Bytes(ok) + Bytes(failing));
  EXPECT_EQ(ClientValue("courier_client_received_bytes_total", {method}), 3 * Bytes(ok));

  const std::pair<std::string, std::string> transport{"transport", GetParam().scheme};
  EXPECT_EQ(ServerValue("courier_server_connections_accepted_total", {transport}), 1);
  EXPECT_EQ(ServerValue("courier_server_connections_open", {transport}), 1);
  EXPECT_EQ(ServerValue("courier_server_protocol_errors_total", {transport}), 0);
  channel_->Close();
  EXPECT_TRUE(RunUntil(
      io_, [&] { return ServerValue("courier_server_connections_open", {transport}) == 0; }));
}

TEST_P(MetricsTest, CallsInFlightCountsARunningCall) {
  StreamsStub stub(channel_);
  std::optional<absl::Status> done;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        auto call = stub.Upload();
        (void)co_await call.Write(Sized(5));
        // Open on both sides until the server has seen the message.
        while (ServerValue("courier_server_received_bytes_total", {{"method", kUpload}}) < 1) {
          asio::steady_timer wait(co_await asio::this_coro::executor, std::chrono::milliseconds(1));
          co_await wait.async_wait(internal::use_nothrow);
        }
        EXPECT_EQ(ServerValue("courier_server_calls_in_flight", {{"method", kUpload}}), 1);
        EXPECT_EQ(ClientValue("courier_client_calls_in_flight", {{"method", kUpload}}), 1);
        absl::StatusOr<Summary> summary = co_await call.Finish();
        done = summary.status();
      },
      asio::detached);
  ASSERT_TRUE(RunUntil(io_, [&] { return done.has_value(); }));
  EXPECT_THAT(*done, IsOk());
  ASSERT_TRUE(Settled(kUpload, 1));
  EXPECT_EQ(ServerValue("courier_server_calls_in_flight", {{"method", kUpload}}), 0);
  EXPECT_EQ(ClientValue("courier_client_calls_in_flight", {{"method", kUpload}}), 0);
}

TEST_P(MetricsTest, StreamingCallsCountTheirMessageBytes) {
  StreamsStub stub(channel_);
  const std::vector<Payload> up = {Sized(300), Sized(7), Sized(1000)};
  size_t up_bytes = 0;
  for (const Payload& p : up) up_bytes += Bytes(p);
  absl::StatusOr<Summary> summary = RunCoro(io_, [&]() -> asio::awaitable<absl::StatusOr<Summary>> {
    auto call = stub.Upload();
    for (const Payload& p : up) {
      if (absl::Status s = co_await call.Write(p); !s.ok()) co_return s;
    }
    co_return co_await call.Finish();
  }());
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->count(), 3);

  StreamRequest request;
  size_t down_bytes = 0;
  for (int size : {50, 0, 2000}) {
    request.add_response_sizes(size);
    down_bytes += Bytes(Sized(size));
  }
  absl::Status download = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.Download(request);
    while (co_await call.Read()) {
    }
    co_return co_await call.Finish();
  }());
  ASSERT_THAT(download, IsOk());

  const Payload ping = Sized(20, 40);
  absl::Status pingpong = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.PingPong();
    for (int i = 0; i < 2; ++i) {
      if (absl::Status s = co_await call.Write(ping); !s.ok()) co_return s;
      if (!co_await call.Read()) co_return absl::InternalError("no answer");
    }
    co_return co_await call.Finish();
  }());
  ASSERT_THAT(pingpong, IsOk());
  ASSERT_TRUE(Settled(kUpload, 1));
  ASSERT_TRUE(Settled(kDownload, 1));
  ASSERT_TRUE(Settled(kPingPong, 1));

  for (const char* method : {kUpload, kDownload, kPingPong}) {
    SCOPED_TRACE(method);
    EXPECT_EQ(ServerValue("courier_server_started_total", {{"method", method}}), 1);
    EXPECT_EQ(ServerValue("courier_server_handled_total", {{"method", method}, {"code", "OK"}}), 1);
    EXPECT_EQ(ClientValue("courier_client_started_total", {{"method", method}}), 1);
    EXPECT_EQ(ClientValue("courier_client_handled_total", {{"method", method}, {"code", "OK"}}), 1);
  }
  // Upload: the client's messages up and the summary (a unary response) down.
  EXPECT_EQ(ServerValue("courier_server_received_bytes_total", {{"method", kUpload}}), up_bytes);
  EXPECT_EQ(ServerValue("courier_server_sent_bytes_total", {{"method", kUpload}}), Bytes(*summary));
  EXPECT_EQ(ClientValue("courier_client_sent_bytes_total", {{"method", kUpload}}), up_bytes);
  EXPECT_EQ(ClientValue("courier_client_received_bytes_total", {{"method", kUpload}}),
            Bytes(*summary));
  // Download: the one request message up, the three messages down.
  EXPECT_EQ(ServerValue("courier_server_received_bytes_total", {{"method", kDownload}}),
            Bytes(request));
  EXPECT_EQ(ServerValue("courier_server_sent_bytes_total", {{"method", kDownload}}), down_bytes);
  EXPECT_EQ(ClientValue("courier_client_sent_bytes_total", {{"method", kDownload}}),
            Bytes(request));
  EXPECT_EQ(ClientValue("courier_client_received_bytes_total", {{"method", kDownload}}),
            down_bytes);
  // PingPong: two messages each way.
  EXPECT_EQ(ServerValue("courier_server_received_bytes_total", {{"method", kPingPong}}),
            2 * Bytes(ping));
  EXPECT_EQ(ServerValue("courier_server_sent_bytes_total", {{"method", kPingPong}}),
            2 * Bytes(Sized(40)));
  EXPECT_EQ(ClientValue("courier_client_received_bytes_total", {{"method", kPingPong}}),
            2 * Bytes(Sized(40)));
}

TEST_P(MetricsTest, UnknownMethodsShareOneLabelValue) {
  for (int i = 0; i < 3; ++i) {
    const std::string method = absl::StrCat("/no.Such/Method", i);
    EXPECT_THAT(RunCoro(io_, channel_->Call(method, "")),
                StatusIs(absl::StatusCode::kUnimplemented));
  }
  ASSERT_TRUE(RunUntil(io_, [&] {
    return ServerValue("courier_server_handling_seconds", {{"method", "unknown"}}) == 3;
  }));
  EXPECT_EQ(ServerValue("courier_server_started_total", {{"method", "unknown"}}), 3);
  EXPECT_EQ(ServerValue("courier_server_handled_total",
                        {{"method", "unknown"}, {"code", "UNIMPLEMENTED"}}),
            3);
  for (int i = 0; i < 3; ++i) {
    const std::string method = absl::StrCat("/no.Such/Method", i);
    EXPECT_FALSE(Sample(*server_metrics_, "courier_server_started_total", {{"method", method}}));
    // The client names what it called: its own methods are bounded by its code.
    EXPECT_EQ(ClientValue("courier_client_handled_total",
                          {{"method", method}, {"code", "UNIMPLEMENTED"}}),
              1);
  }
}

TEST_P(MetricsTest, ProtocolErrorsAreCountedPerTransport) {
  std::unique_ptr<testing::RawPeer> peer = testing::RawPeer::Connect(io_, GetParam(), endpoint_);
  ASSERT_NE(peer, nullptr);
  // A response is never sent to a server: the connection is closed as a protocol error.
  ASSERT_THAT(
      peer->Write(io_, testing::HelloBytes() + testing::ResponseBytes(1, absl::OkStatus(), "x")),
      IsOk());
  peer->ReadUntilClosed(io_);
  const std::pair<std::string, std::string> transport{"transport", GetParam().scheme};
  EXPECT_TRUE(RunUntil(
      io_, [&] { return ServerValue("courier_server_protocol_errors_total", {transport}) == 1; }));
  EXPECT_EQ(ServerValue("courier_server_connections_accepted_total", {transport}), 1);
  // A well-behaved client afterwards is no protocol error.
  StreamsStub stub(channel_);
  ASSERT_THAT(RunCoro(io_, stub.Unary(Sized(1))), IsOk());
  EXPECT_EQ(ServerValue("courier_server_protocol_errors_total", {transport}), 1);
  EXPECT_EQ(ServerValue("courier_server_connections_accepted_total", {transport}), 2);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, MetricsTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const auto& info) { return std::string(info.param.scheme); });

// --- The HTTP endpoint ---

// Sends `request` to 127.0.0.1:`port`, half-closes, and returns all that comes back until the
// server closes (keep-alive is off), or "" if the connection fails. Blocking; the server's HTTP
// threads answer without the test's io_context running.
std::string HttpExchange(int port, const std::string& request) {
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  std::error_code ec;
  socket.connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port)}, ec);
  if (ec) return "";
  asio::write(socket, asio::buffer(request), ec);
  socket.shutdown(asio::ip::tcp::socket::shutdown_send, ec);
  std::string response;
  char chunk[4096];
  for (;;) {
    const size_t n = socket.read_some(asio::buffer(chunk), ec);
    if (ec) break;
    response.append(chunk, n);
  }
  return response;
}

std::string Get(int port, const std::string& path) {
  return HttpExchange(port, absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: localhost\r\n\r\n"));
}

int PortOf(const std::string& host_port) {
  int port = 0;
  const size_t colon = host_port.rfind(':');
  if (colon == std::string::npos || !absl::SimpleAtoi(host_port.substr(colon + 1), &port)) {
    return 0;
  }
  return port;
}

class MetricsHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ServerOptions options;
    options.metrics_listen = "127.0.0.1:0";
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen("tcp://127.0.0.1:0");
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = *endpoint;
    port_ = PortOf(server_->metrics_endpoint());
    ASSERT_GT(port_, 0) << server_->metrics_endpoint();
    EXPECT_TRUE(absl::StartsWith(server_->metrics_endpoint(), "127.0.0.1:"));
  }

  absl::Status OneCall() {
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io_.get_executor(), endpoint_.ToString());
    if (!channel.ok()) return channel.status();
    StreamsStub stub(*channel);
    return RunCoro(io_, stub.Unary(Sized(10))).status();
  }

  Streams service_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
  int port_ = 0;
};

TEST_F(MetricsHttpTest, GetMetricsServesTheTextFormat) {
  ASSERT_THAT(OneCall(), IsOk());
  ASSERT_THAT(OneCall(), IsOk());
  const std::string response = Get(port_, "/metrics");
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(response, HasSubstr("# TYPE courier_server_started_total counter"));
  EXPECT_THAT(response,
              HasSubstr(absl::StrCat("courier_server_started_total{method=\"", kUnary, "\"} 2")));
  EXPECT_THAT(response, HasSubstr(absl::StrCat("courier_server_handled_total{code=\"OK\",method=\"",
                                               kUnary, "\"} 2")));
  EXPECT_THAT(response,
              HasSubstr("courier_server_connections_accepted_total{transport=\"tcp\"} 2"));
  EXPECT_THAT(response, HasSubstr("# TYPE courier_server_handling_seconds histogram"));
}

TEST_F(MetricsHttpTest, OnlyGetMetricsAnswers) {
  EXPECT_THAT(Get(port_, "/"), HasSubstr(" 404 "));
  EXPECT_THAT(Get(port_, "/metricsx"), HasSubstr(" 404 "));
  EXPECT_THAT(Get(port_, "/etc/passwd"), HasSubstr(" 404 "));
  EXPECT_THAT(Get(port_, "/../../etc/passwd"), ::testing::Not(HasSubstr(" 200 ")));
  for (const char* method : {"POST", "PUT", "DELETE"}) {
    SCOPED_TRACE(method);
    const std::string response = HttpExchange(
        port_, absl::StrCat(method, " /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
    EXPECT_THAT(response, HasSubstr("HTTP/1.1 "));
    EXPECT_THAT(response, ::testing::Not(HasSubstr(" 200 ")));
    EXPECT_THAT(response, ::testing::Not(HasSubstr("courier_server")));
  }
}

TEST_F(MetricsHttpTest, KeepsServingThroughAFloodOfJunkRequests) {
  const std::vector<std::string> junk = {
      "\r\n\r\n",
      "GARBAGE\r\n\r\n",
      std::string(64 * 1024, 'A') + "\r\n\r\n",  // a request line over the size limit
      "GET /metrics HTTP/9.9\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
      "GET " + std::string(20000, '/') + " HTTP/1.1\r\n\r\n",
      std::string("\x00\x01\x02\xff\xfe", 5) + "\r\n\r\n",
      "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzzzz\r\n",
      "GET /metrics HTTP/1.1\r\n" + std::string(100, 'H') + ":\r\n\r\n",
  };
  // Clients that hold a half-sent request open (fewer than the endpoint's threads).
  asio::io_context io;
  std::vector<std::unique_ptr<asio::ip::tcp::socket>> slow;
  for (int i = 0; i < 3; ++i) {
    auto& socket = slow.emplace_back(std::make_unique<asio::ip::tcp::socket>(io));
    socket->connect({asio::ip::make_address("127.0.0.1"), static_cast<uint16_t>(port_)});
    asio::write(*socket, asio::buffer(std::string("GET /metrics HTTP/1.1\r\nHost: x")));
  }
  // Clients that connect and close at once, or send a partial request and close.
  for (int round = 0; round < 20; ++round) {
    for (const std::string& request : junk) HttpExchange(port_, request);
    HttpExchange(port_, "");
    HttpExchange(port_, "GET /met");
  }
  const std::string response = Get(port_, "/metrics");
  EXPECT_THAT(response, HasSubstr("HTTP/1.1 200 OK"));
  EXPECT_THAT(response, HasSubstr("courier_server_connections_open"));
  EXPECT_THAT(OneCall(), IsOk());
}

TEST(MetricsOptions, MalformedOrTakenAddressFailsListen) {
  asio::io_context io;
  Streams service;
  {
    ServerOptions options;
    options.metrics_listen = "no-port";
    Server server(io.get_executor(), options);
    ASSERT_THAT(server.AddService(service), IsOk());
    EXPECT_THAT(server.Listen("tcp://127.0.0.1:0"), StatusIs(absl::StatusCode::kInvalidArgument));
    EXPECT_EQ(server.metrics_endpoint(), "");
  }
  ServerOptions first_options;
  first_options.metrics_listen = "127.0.0.1:0";
  Server first(io.get_executor(), first_options);
  ASSERT_THAT(first.Listen("tcp://127.0.0.1:0"), IsOk());
  ServerOptions options;
  options.metrics_listen = first.metrics_endpoint();
  Server second(io.get_executor(), options);
  EXPECT_THAT(second.Listen("tcp://127.0.0.1:0"), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(MetricsOptions, WithoutMetricsThereIsNoEndpoint) {
  asio::io_context io;
  Server server(io.get_executor());
  ASSERT_THAT(server.Listen("tcp://127.0.0.1:0"), IsOk());
  EXPECT_EQ(server.metrics_endpoint(), "");
}

TEST(MetricsOptions, RefusalsByTheAllowListAndTheAuthorizeHookAreCounted) {
  asio::io_context io;
  auto registry = std::make_shared<prometheus::Registry>();
  ServerOptions options;
  options.metrics_registry = registry;
  options.allowed_peers.uids = {getuid() + 1};
  options.authorize = [](const AuthorizationContext& context) {
    return context.method == kUnary ? absl::PermissionDeniedError("no") : absl::OkStatus();
  };
  GenericService service;
  service.AddRawMethod(
      kUnary,
      [](ServerContext&, std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
        co_return std::string(request);
      });
  Server server(io.get_executor(), options);
  ASSERT_THAT(server.AddService(service), IsOk());
  // Refused at the door: unix:// carries the uid, and ours is not on the list.
  absl::StatusOr<Endpoint> refused = server.Listen(
      absl::StrCat(transport::FindTransport("unix").value()->loopback_endpoint().ToString()));
  ASSERT_THAT(refused, IsOk());
  // Admitted (the URI's list), then refused per call by the hook.
  absl::StatusOr<Endpoint> admitted = server.Listen(
      absl::StrCat(transport::FindTransport("unix").value()->loopback_endpoint().ToString(),
                   "?allow_uid=", getuid()));
  ASSERT_THAT(admitted, IsOk());
  auto outsider = Channel::Create(io.get_executor(), refused->ToString()).value();
  EXPECT_THAT(RunCoro(io, outsider->Call(kUnary, "x")),
              StatusIs(absl::StatusCode::kPermissionDenied));
  auto insider = Channel::Create(io.get_executor(), admitted->ToString()).value();
  EXPECT_THAT(RunCoro(io, insider->Call(kUnary, "x")),
              StatusIs(absl::StatusCode::kPermissionDenied));
  EXPECT_THAT(RunCoro(io, insider->Call("/no.Such/Method", "x")),
              StatusIs(absl::StatusCode::kUnimplemented));
  EXPECT_EQ(
      Value(*registry, "courier_server_connections_not_allowed_total", {{"transport", "unix"}}), 1);
  EXPECT_EQ(Value(*registry, "courier_server_handled_total",
                  {{"method", kUnary}, {"code", "PERMISSION_DENIED"}}),
            1);
  EXPECT_EQ(Value(*registry, "courier_server_handled_total",
                  {{"method", "unknown"}, {"code", "UNIMPLEMENTED"}}),
            1);
}

}  // namespace
}  // namespace courier
