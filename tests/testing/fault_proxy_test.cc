// FaultProxy over every byte-stream transport in the registry: forwarding is byte-exact, and
// each fault does what it says in each direction.
#include "tests/testing/fault_proxy.h"

#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace courier::testing {
namespace {

using transport::Connection;
using StatusOrBytes = absl::StatusOr<std::string>;
using std::chrono::milliseconds;

// Bytes that differ from one position to the next (and between seeds), so a lost, repeated or
// reordered byte shows.
std::string Pattern(size_t size, int seed) {
  std::string out(size, '\0');
  for (size_t i = 0; i < size; ++i)
    out[i] = static_cast<char>((i * 131 + seed * 17 + i / 251) & 0xff);
  return out;
}

// `connection` must stay valid until done.
asio::awaitable<absl::Status> WriteAll(Connection& connection, std::string data) {
  const asio::const_buffer buffer(data.data(), data.size());
  co_return co_await connection.Write(std::span(&buffer, 1));
}

// Up to `limit` bytes: fewer only if the stream ended first. An error is returned as such.
asio::awaitable<StatusOrBytes> ReadUpTo(Connection& connection, size_t limit) {
  std::string out;
  std::string buffer(64 * 1024, '\0');
  while (out.size() < limit) {
    const size_t want = std::min(buffer.size(), limit - out.size());
    absl::StatusOr<size_t> n = co_await connection.Read(asio::buffer(buffer.data(), want));
    if (!n.ok()) co_return n.status();
    if (*n == 0) break;
    out.append(buffer.data(), *n);
  }
  co_return out;
}

asio::awaitable<StatusOrBytes> ReadToEnd(Connection& connection) {
  return ReadUpTo(connection, std::string::npos);
}

// Runs `op` on `io` in the background; the result appears when it completes.
template <typename T>
std::shared_ptr<std::optional<T>> Spawn(asio::io_context& io, asio::awaitable<T> op) {
  auto result = std::make_shared<std::optional<T>>();
  asio::co_spawn(io, std::move(op), [result](std::exception_ptr e, T value) {
    if (e) std::rethrow_exception(e);
    result->emplace(std::move(value));
  });
  return result;
}

class FaultProxyTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  struct Peers {
    std::unique_ptr<Connection> client;  // dialled the proxy
    std::unique_ptr<Connection> server;  // accepted from the proxy's dial
    explicit operator bool() const { return client != nullptr && server != nullptr; }
  };

  void SetUp() override {
    absl::StatusOr<transport::Traits> traits = ProbeTraits(GetParam());
    ASSERT_THAT(traits, IsOk());
    if (traits->message_boundaries) GTEST_SKIP() << "FaultProxy serves byte streams only";
    absl::StatusOr<std::unique_ptr<transport::Transport>> transport =
        transport::NewTransport(GetParam().scheme, io_.get_executor());
    ASSERT_THAT(transport, IsOk());
    transport_ = *std::move(transport);
    absl::StatusOr<std::unique_ptr<transport::Listener>> listener =
        transport_->Listen(GetParam().loopback_endpoint());
    ASSERT_THAT(listener, IsOk());
    listener_ = *std::move(listener);
    absl::StatusOr<std::unique_ptr<FaultProxy>> proxy =
        FaultProxy::Start(io_.get_executor(), GetParam(), listener_->local_endpoint());
    ASSERT_THAT(proxy, IsOk());
    proxy_ = *std::move(proxy);
  }

  // A client connected through the proxy, and the server end of the proxy's own connection.
  Peers Connect() {
    auto connect = [](transport::Transport* transport, transport::Listener* listener, Endpoint to,
                      asio::any_io_executor executor) -> asio::awaitable<Peers> {
      Peers peers;
      absl::StatusOr<std::unique_ptr<Connection>> client = co_await transport->Connect(to);
      if (!client.ok()) co_return peers;
      absl::StatusOr<std::unique_ptr<Connection>> server = co_await listener->Accept(executor);
      if (!server.ok()) co_return peers;
      peers.client = *std::move(client);
      peers.server = *std::move(server);
      co_return peers;
    };
    return RunCoro(
        io_, connect(transport_.get(), listener_.get(), proxy_->endpoint(), io_.get_executor()));
  }

  asio::io_context io_;
  std::unique_ptr<transport::Transport> transport_;
  std::unique_ptr<transport::Listener> listener_;  // the target
  std::unique_ptr<FaultProxy> proxy_;
};

TEST_P(FaultProxyTest, ForwardsBytesUnchangedBothWays) {
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  const std::string up = Pattern(1 << 20, 1);
  const std::string down = Pattern(1 << 20, 2);
  auto sent_up = Spawn(io_, WriteAll(*peers.client, up));
  auto sent_down = Spawn(io_, WriteAll(*peers.server, down));
  auto got_up = Spawn(io_, ReadUpTo(*peers.server, up.size()));
  auto got_down = Spawn(io_, ReadUpTo(*peers.client, down.size()));
  ASSERT_TRUE(RunUntil(io_, [&] { return *sent_up && *sent_down && *got_up && *got_down; }));
  EXPECT_THAT(**sent_up, IsOk());
  EXPECT_THAT(**sent_down, IsOk());
  ASSERT_THAT(**got_up, IsOk());
  ASSERT_THAT(**got_down, IsOk());
  EXPECT_TRUE(***got_up == up);
  EXPECT_TRUE(***got_down == down);
  EXPECT_TRUE(RunUntil(io_, [&] {
    return proxy_->bytes_forwarded(Direction::kClientToServer) == up.size() &&
           proxy_->bytes_forwarded(Direction::kServerToClient) == down.size();
  }));
  EXPECT_EQ(proxy_->connections(), 1u);
  EXPECT_EQ(proxy_->accepted(), 1u);
}

TEST_P(FaultProxyTest, SliceWritesByteByByteAndKeepsTheBytesIntact) {
  for (Direction direction : kBothDirections) proxy_->Set(direction, Fault::Slice(1));
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  const std::string up = Pattern(3000, 3);
  const std::string down = Pattern(2000, 4);
  auto got_up = Spawn(io_, ReadUpTo(*peers.server, up.size()));
  auto got_down = Spawn(io_, ReadUpTo(*peers.client, down.size()));
  // One write each: the proxy reads them in as few chunks as the kernel hands it.
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, up)), IsOk());
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.server, down)), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return *got_up && *got_down; }));
  EXPECT_EQ((*got_up)->value_or("error"), up);
  EXPECT_EQ((*got_down)->value_or("error"), down);
  // The proxy counts a write when it completes, which may be after the peer has read it.
  const DirectionStats want_up{.bytes_forwarded = 3000, .bytes_discarded = 0, .writes = 3000};
  const DirectionStats want_down{.bytes_forwarded = 2000, .bytes_discarded = 0, .writes = 2000};
  EXPECT_TRUE(RunUntil(io_, [&] {
    return proxy_->stats(Direction::kClientToServer) == want_up &&
           proxy_->stats(Direction::kServerToClient) == want_down;
  }));
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer), want_up);
  EXPECT_EQ(proxy_->stats(Direction::kServerToClient), want_down);
}

TEST_P(FaultProxyTest, SliceOfSevenWritesInPiecesOfAtMostSeven) {
  proxy_->Set(Direction::kServerToClient, Fault::Slice(7));
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  const std::string down = Pattern(1000, 5);
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.server, down)), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.client, down.size())).value_or("error"), down);
  // Chunks as read may end anywhere, so each adds at most one short piece.
  EXPECT_TRUE(
      RunUntil(io_, [&] { return proxy_->bytes_forwarded(Direction::kServerToClient) == 1000; }));
  EXPECT_GE(proxy_->stats(Direction::kServerToClient).writes, (1000u + 6) / 7);
}

TEST_P(FaultProxyTest, DelayHoldsEachChunkAndKeepsTheOrder) {
  constexpr milliseconds kDelay(100);
  proxy_->Set(Direction::kClientToServer, Fault::Delay(kDelay));
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  const auto start = std::chrono::steady_clock::now();
  auto got = Spawn(io_, ReadUpTo(*peers.server, 11));
  for (const char* part : {"one", "two", "three"}) {
    EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, part)), IsOk());
  }
  // The undelayed direction is not held up.
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.server, "pong")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.client, 4)).value_or("error"), "pong");
  ASSERT_TRUE(RunUntil(io_, [&] { return got->has_value(); }));
  EXPECT_EQ((*got)->value_or("error"), "onetwothree");
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, kDelay);
  EXPECT_LT(took, std::chrono::seconds(5));
}

TEST_P(FaultProxyTest, StallKeepsTheWriterPendingUntilResumed) {
  proxy_->Set(Direction::kClientToServer, Fault::Stall());
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  // Far more than the sender's and the proxy's socket buffers hold (at most a few MiB here: the
  // proxy never reads, so the receive buffer does not grow).
  const std::string big = Pattern(24 << 20, 6);
  auto sent = Spawn(io_, WriteAll(*peers.client, big));
  // The other direction still flows.
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.server, "still flowing")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.client, 13)).value_or("error"), "still flowing");
  // A negative can only be shown by waiting: the write stays pending for as long as we look.
  EXPECT_FALSE(RunUntil(
      io_, [&] { return sent->has_value(); }, milliseconds(300)));
  EXPECT_EQ(proxy_->bytes_forwarded(Direction::kClientToServer), 0u);

  proxy_->Set(Direction::kClientToServer, Fault{});
  auto got = Spawn(io_, ReadUpTo(*peers.server, big.size()));
  ASSERT_TRUE(RunUntil(io_, [&] { return sent->has_value() && got->has_value(); }));
  EXPECT_THAT(**sent, IsOk());
  ASSERT_THAT(**got, IsOk());
  EXPECT_TRUE(***got == big);
}

TEST_P(FaultProxyTest, StallOnAnOpenConnectionHoldsAtMostOneChunk) {
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.server, "before")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.client, 6)).value_or("error"), "before");
  // The proxy is already waiting in a read, which may complete with a chunk it then holds.
  proxy_->Set(Direction::kServerToClient, Fault::Stall());
  const uint64_t forwarded = proxy_->bytes_forwarded(Direction::kServerToClient);
  const std::string big = Pattern(24 << 20, 9);
  auto sent = Spawn(io_, WriteAll(*peers.server, big));
  EXPECT_FALSE(RunUntil(
      io_, [&] { return sent->has_value(); }, milliseconds(300)));
  EXPECT_EQ(proxy_->bytes_forwarded(Direction::kServerToClient), forwarded);
  proxy_->ClearFaults();
  auto got = Spawn(io_, ReadUpTo(*peers.client, big.size()));
  ASSERT_TRUE(RunUntil(io_, [&] { return sent->has_value() && got->has_value(); }));
  EXPECT_THAT(**sent, IsOk());
  ASSERT_THAT(**got, IsOk());
  EXPECT_TRUE(***got == big);
}

TEST_P(FaultProxyTest, CutAfterDeliversExactlyThatManyBytesThenEndOfStream) {
  for (Direction direction : kBothDirections) {
    SCOPED_TRACE(DirectionName(direction));
    proxy_->ClearFaults();
    Peers peers = Connect();
    ASSERT_TRUE(peers);
    const bool up = direction == Direction::kClientToServer;
    Connection& sender = up ? *peers.client : *peers.server;
    Connection& receiver = up ? *peers.server : *peers.client;
    const uint64_t forwarded_before = proxy_->bytes_forwarded(direction);
    proxy_->Set(direction, Fault::CutAfter(1000));
    const std::string data = Pattern(200 * 1024, 7);
    // The proxy reads (and drops) what is past the cut until the sender closes, so this write
    // completes rather than failing.
    EXPECT_THAT(RunCoro(io_, WriteAll(sender, data)), IsOk());
    EXPECT_EQ(RunCoro(io_, ReadToEnd(receiver)).value_or("error"), data.substr(0, 1000));
    // Both sides were closed cleanly: end of stream, not a reset.
    EXPECT_EQ(RunCoro(io_, ReadToEnd(sender)).value_or("error"), "");
    EXPECT_EQ(proxy_->bytes_forwarded(direction) - forwarded_before, 1000u);
    EXPECT_EQ(proxy_->connections(), 0u);
  }
}

TEST_P(FaultProxyTest, CutCountsFromWhenItIsSetAndHonoursSlices) {
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, "0123456789")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.server, 10)).value_or("error"), "0123456789");
  const uint64_t writes_before = proxy_->stats(Direction::kClientToServer).writes;
  proxy_->Set(Direction::kClientToServer, Fault{.slice = 2, .cut_after = 5});
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, "abcdefghij")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*peers.server)).value_or("error"), "abcde");
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer).writes - writes_before, 3u);  // 2 + 2 + 1
}

TEST_P(FaultProxyTest, CutAfterZeroClosesOpenConnectionsAtOnce) {
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  ASSERT_EQ(proxy_->connections(), 1u);
  proxy_->Set(Direction::kServerToClient, Fault::CutAfter(0));
  EXPECT_EQ(proxy_->connections(), 0u);
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*peers.client)).value_or("error"), "");
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*peers.server)).value_or("error"), "");
}

TEST_P(FaultProxyTest, ResetAllGivesBothPeersAnErrorOrEndOfStreamPromptly) {
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, "up")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.server, 2)).value_or("error"), "up");
  auto client_read = Spawn(io_, ReadToEnd(*peers.client));
  auto server_read = Spawn(io_, ReadToEnd(*peers.server));
  proxy_->ResetAll();
  EXPECT_EQ(proxy_->connections(), 0u);
  ASSERT_TRUE(RunUntil(
      io_, [&] { return client_read->has_value() && server_read->has_value(); },
      std::chrono::seconds(2)));
  for (const StatusOrBytes& read : {**client_read, **server_read}) {
    if (GetParam().scheme == "tcp") {
      // SO_LINGER 0: a reset, which the transport reports as kUnavailable.
      EXPECT_THAT(read, StatusIs(absl::StatusCode::kUnavailable));
    } else {
      EXPECT_TRUE(!read.ok() || read->empty()) << "read " << read->size() << " bytes";
    }
  }
}

TEST_P(FaultProxyTest, BlackholeDiscardsWhatItReads) {
  proxy_->Set(Direction::kClientToServer, Fault::Blackhole());
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, Pattern(100 * 1024, 8))), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] {
    return proxy_->stats(Direction::kClientToServer).bytes_discarded == 100 * 1024;
  }));
  EXPECT_EQ(proxy_->bytes_forwarded(Direction::kClientToServer), 0u);
  proxy_->Set(Direction::kClientToServer, Fault{});
  EXPECT_THAT(RunCoro(io_, WriteAll(*peers.client, "after")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadUpTo(*peers.server, 5)).value_or("error"), "after");
}

TEST_P(FaultProxyTest, EitherPeerClosingEndsBothSides) {
  Peers first = Connect();
  ASSERT_TRUE(first);
  first.client->Close();
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*first.server)).value_or("error"), "");
  Peers second = Connect();
  ASSERT_TRUE(second);
  EXPECT_THAT(RunCoro(io_, WriteAll(*second.server, "bye")), IsOk());
  second.server->Close();
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*second.client)).value_or("error"), "bye");
  EXPECT_TRUE(RunUntil(io_, [&] { return proxy_->connections() == 0; }));
  EXPECT_EQ(proxy_->accepted(), 2u);
}

TEST_P(FaultProxyTest, CloseEndsConnectionsAndStopsListening) {
  Peers peers = Connect();
  ASSERT_TRUE(peers);
  proxy_->Close();
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*peers.client)).value_or("error"), "");
  EXPECT_EQ(RunCoro(io_, ReadToEnd(*peers.server)).value_or("error"), "");
  EXPECT_THAT(RunCoro(io_, transport_->Connect(proxy_->endpoint())),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_P(FaultProxyTest, UnreachableTargetClosesTheClient) {
  const Endpoint gone = listener_->local_endpoint();
  listener_->Close();
  absl::StatusOr<std::unique_ptr<Connection>> client =
      RunCoro(io_, transport_->Connect(proxy_->endpoint()));
  ASSERT_THAT(client, IsOk());
  StatusOrBytes read = RunCoro(io_, ReadToEnd(**client));
  EXPECT_TRUE(!read.ok() || read->empty());
  EXPECT_TRUE(RunUntil(io_, [&] { return proxy_->connections() == 0; }));
  EXPECT_EQ(proxy_->target(), gone);
}

TEST_P(FaultProxyTest, TargetOnAnotherSchemeIsInvalidArgument) {
  Endpoint elsewhere{GetParam().scheme == "tcp" ? "unix" : "tcp", "somewhere"};
  EXPECT_THAT(FaultProxy::Start(io_.get_executor(), GetParam(), elsewhere),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

INSTANTIATE_TEST_SUITE_P(AllTransports, FaultProxyTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier::testing
