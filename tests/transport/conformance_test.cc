// The contract every transport in transport/registry.cc must keep (transport/transport.h). Runs
// once per row of BuiltInTransports(), so a new transport is tested with no edit here.
#include <algorithm>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/buffer.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "asio/use_awaitable.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/connection_io.h"
#include "tests/testing/status_matchers.h"
#include "transport/endpoint.h"
#include "transport/frame.h"
#include "transport/framed_connection.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace courier::transport {

void PrintTo(const TransportInfo& info, std::ostream* os) { *os << info.scheme; }

namespace {

using ::courier::testing::ReadExactly;
using ::courier::testing::Write;

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// What one Read returns; empty at end of stream. (Not StatusOr<size_t>: g++ 12 -O2 gives a
// false -Wmaybe-uninitialized inside co_spawn for that type.)
asio::awaitable<absl::StatusOr<std::string>> ReadSome(Connection& connection, size_t max) {
  std::string data(max, '\0');
  absl::StatusOr<size_t> got = co_await connection.Read(asio::buffer(data));
  if (!got.ok()) co_return got.status();
  data.resize(*got);
  co_return data;
}

// Everything until the peer closes.
asio::awaitable<absl::StatusOr<std::string>> ReadToEnd(Connection& connection) {
  std::string data;
  char chunk[4096];
  for (;;) {
    absl::StatusOr<size_t> got = co_await connection.Read(asio::buffer(chunk));
    if (!got.ok()) co_return got.status();
    if (*got == 0) co_return data;
    data.append(chunk, *got);
  }
}

struct ConnectedPair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> client;
  std::unique_ptr<Connection> server;
};

// Accepts and connects concurrently (a transport may need both sides to take part). Both ends
// are bound to the executor we run on.
asio::awaitable<absl::StatusOr<ConnectedPair>> Connect(Transport& transport, Endpoint at) {
  asio::any_io_executor ex = co_await asio::this_coro::executor;
  ConnectedPair pair;
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport.Listen(at);
  if (!listener.ok()) co_return listener.status();
  pair.listener = *std::move(listener);

  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::steady_timer accepted_signal(ex, asio::steady_timer::time_point::max());
  asio::co_spawn(ex, pair.listener->Accept(ex),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                   accepted = std::move(result);
                   accepted_signal.cancel();
                 });
  absl::StatusOr<std::unique_ptr<Connection>> client =
      co_await transport.Connect(pair.listener->local_endpoint());
  if (!client.ok()) pair.listener->Close();  // so the Accept finishes
  while (!accepted) co_await accepted_signal.async_wait(use_nothrow);
  if (!client.ok()) co_return client.status();
  if (!accepted->ok()) co_return accepted->status();
  pair.client = *std::move(client);
  pair.server = **std::move(accepted);
  co_return pair;
}

class ConformanceTest : public ::testing::TestWithParam<TransportInfo> {
 protected:
  Endpoint Loopback() const { return GetParam().loopback_endpoint(); }

  // A connected pair, or a test failure and all nulls.
  ConnectedPair MakePair() {
    absl::StatusOr<ConnectedPair> pair = RunCoro(io_, Connect(*transport_, Loopback()));
    EXPECT_THAT(pair, IsOk());
    if (!pair.ok()) return {};
    return *std::move(pair);
  }

  asio::io_context io_;
  std::unique_ptr<Transport> transport_ = GetParam().factory(io_.get_executor(), {});
};

TEST_P(ConformanceTest, RoundTrip) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  EXPECT_THAT(RunCoro(io_, Write(*pair.client, "hello")), IsOk());
  absl::StatusOr<std::string> at_server = RunCoro(io_, ReadExactly(*pair.server, 5));
  ASSERT_THAT(at_server, IsOk());
  EXPECT_EQ(*at_server, "hello");

  EXPECT_THAT(RunCoro(io_, Write(*pair.server, "world!")), IsOk());
  absl::StatusOr<std::string> at_client = RunCoro(io_, ReadExactly(*pair.client, 6));
  ASSERT_THAT(at_client, IsOk());
  EXPECT_EQ(*at_client, "world!");
}

TEST_P(ConformanceTest, GatherWriteArrivesInOrder) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  std::string a = "first,", b = "second,", c = "third";
  const asio::const_buffer buffers[] = {asio::buffer(a), asio::buffer(b), asio::buffer(c)};
  EXPECT_THAT(RunCoro(io_, pair.client->Write(buffers)), IsOk());
  absl::StatusOr<std::string> got = RunCoro(io_, ReadExactly(*pair.server, 18));
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(*got, "first,second,third");
}

TEST_P(ConformanceTest, OneMebibyteWriteArrivesIntact) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  Traits traits = pair.client->traits();
  if (!traits.reliable) GTEST_SKIP() << "unreliable transport";
  if (traits.max_message != 0 && traits.max_message < (1 << 20)) {
    GTEST_SKIP() << "messages are capped at " << traits.max_message << " bytes";
  }
  std::string sent(1 << 20, '\0');
  for (size_t i = 0; i < sent.size(); ++i) sent[i] = static_cast<char>((i * 7919) >> 3);

  // The write blocks until the reader drains the socket buffers, so both run at once.
  absl::Status written;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        written = co_await Write(*pair.client, sent);
        pair.client->Close();  // lets the reader finish even if the write failed
      },
      asio::detached);
  absl::StatusOr<std::string> received = RunCoro(io_, ReadToEnd(*pair.server));
  EXPECT_THAT(written, IsOk());
  ASSERT_THAT(received, IsOk());
  ASSERT_EQ(received->size(), sent.size());
  EXPECT_TRUE(*received == sent) << "the bytes differ";
}

TEST_P(ConformanceTest, ManyWritesArriveInOrder) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  if (!pair.client->traits().reliable) GTEST_SKIP() << "unreliable transport";
  constexpr int kWrites = 2000;
  absl::Status written;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < kWrites && written.ok(); ++i) {
          written = co_await Write(*pair.client, absl::StrCat(i, ";"));
        }
        pair.client->Close();
      },
      asio::detached);
  absl::StatusOr<std::string> received = RunCoro(io_, ReadToEnd(*pair.server));
  EXPECT_THAT(written, IsOk());
  ASSERT_THAT(received, IsOk());
  std::string expected;
  for (int i = 0; i < kWrites; ++i) absl::StrAppend(&expected, i, ";");
  EXPECT_EQ(*received, expected);
}

Frame TestFrame(uint32_t call_id, std::string payload) {
  return Frame{
      .type = FrameType::kRequest, .flags = 0, .call_id = call_id, .payload = std::move(payload)};
}

TEST_P(ConformanceTest, FrameAtTheSizeLimitArrivesWhole) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  constexpr FrameLimits kLimits{.max_payload = 1 << 20};
  Traits traits = pair.client->traits();
  if (traits.message_boundaries && traits.max_message != 0 &&
      traits.max_message < kLimits.max_payload + kFrameHeaderSize) {
    GTEST_SKIP() << "messages are capped at " << traits.max_message << " bytes";
  }
  FramedConnection client(std::move(pair.client), kLimits);
  FramedConnection server(std::move(pair.server), kLimits);
  std::string payload(kLimits.max_payload, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i % 251);
  const Frame sent = TestFrame(7, payload);

  absl::Status written;
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        written = co_await client.WriteFrame(sent);
        if (!written.ok()) client.Close();
      },
      asio::detached);
  absl::StatusOr<std::optional<Frame>> received = RunCoro(io_, server.ReadFrame());
  EXPECT_THAT(written, IsOk());
  ASSERT_THAT(received, IsOk());
  ASSERT_TRUE(received->has_value());
  EXPECT_TRUE(**received == sent) << "the frames differ";
}

TEST_P(ConformanceTest, OversizedFrameIsResourceExhausted) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  FramedConnection client(std::move(pair.client));
  FramedConnection server(std::move(pair.server), FrameLimits{.max_payload = 1024});
  EXPECT_THAT(RunCoro(io_, client.WriteFrame(TestFrame(1, std::string(1025, 'x')))), IsOk());
  EXPECT_THAT(RunCoro(io_, server.ReadFrame()), StatusIs(absl::StatusCode::kResourceExhausted));
}

TEST_P(ConformanceTest, ManyFramesInOneGatherWriteArriveInOrder) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  if (!pair.client->traits().reliable) GTEST_SKIP() << "unreliable transport";
  FramedConnection client(std::move(pair.client));
  FramedConnection server(std::move(pair.server));
  // More buffers than one writev takes (Asio passes at most 64).
  std::vector<Frame> sent;
  for (uint32_t i = 1; i <= 500; ++i) sent.push_back(TestFrame(i, std::string(i % 17, 'a')));

  absl::Status written;
  asio::co_spawn(
      io_, [&]() -> asio::awaitable<void> { written = co_await client.WriteFrames(sent); },
      asio::detached);
  std::vector<Frame> received;
  absl::Status read_status;
  while (received.size() < sent.size()) {
    absl::StatusOr<std::optional<Frame>> frame = RunCoro(io_, server.ReadFrame());
    if (!frame.ok() || !frame->has_value()) {
      read_status = frame.ok() ? absl::DataLossError("end of stream") : frame.status();
      break;
    }
    received.push_back(**std::move(frame));
  }
  EXPECT_THAT(written, IsOk());
  EXPECT_THAT(read_status, IsOk());
  EXPECT_TRUE(received == sent);
}

TEST_P(ConformanceTest, PeerCloseIsCleanEndOfStream) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  if (!pair.client->traits().reliable) GTEST_SKIP() << "unreliable transport";
  EXPECT_THAT(RunCoro(io_, Write(*pair.server, "bye")), IsOk());
  pair.server->Close();
  absl::StatusOr<std::string> received = RunCoro(io_, ReadToEnd(*pair.client));
  ASSERT_THAT(received, IsOk());
  EXPECT_EQ(*received, "bye");
  // And it stays ended.
  absl::StatusOr<std::string> again = RunCoro(io_, ReadSome(*pair.client, 1));
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, "");
}

// The handler-based reads the session loops use. The peer's last bytes and its close arrive
// while a read waits, so they come as one readiness event: the short read of the bytes must not
// hide the end of stream behind it (a read loop would then wait forever).
TEST_P(ConformanceTest, AsyncReadSeesEndOfStreamThatCameWithTheLastBytes) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  if (!pair.client->traits().reliable) GTEST_SKIP() << "unreliable transport";
  std::string received;
  bool ended = false;
  std::optional<absl::Status> failed;
  char buffer[64];
  std::function<void()> read_more = [&] {
    pair.client->AsyncRead(asio::buffer(buffer), [&](absl::StatusOr<size_t> n) {
      if (!n.ok()) {
        failed = n.status();
      } else if (*n == 0) {
        ended = true;
      } else {
        received.append(buffer, *n);
        read_more();
      }
    });
  };
  read_more();
  io_.restart();
  io_.poll();  // the read waits: nothing has arrived
  ASSERT_TRUE(received.empty());
  std::string bye = "bye";
  asio::const_buffer bytes = asio::buffer(bye);
  absl::StatusOr<size_t> written = pair.server->TryWrite({&bytes, 1});
  ASSERT_THAT(written, IsOk());
  ASSERT_EQ(*written, 3u);
  pair.server->Close();
  ASSERT_TRUE(RunUntil(io_, [&] { return ended || failed.has_value(); }));
  EXPECT_FALSE(failed.has_value()) << *failed;
  EXPECT_EQ(received, "bye");
}

TEST_P(ConformanceTest, CloseCancelsPendingAsyncRead) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  std::optional<absl::StatusOr<size_t>> read;
  char buffer[16];
  pair.client->AsyncRead(asio::buffer(buffer),
                         [&](absl::StatusOr<size_t> n) { read = std::move(n); });
  io_.restart();
  io_.poll();  // nothing arrives
  ASSERT_FALSE(read.has_value());
  pair.client->Close();
  ASSERT_TRUE(RunUntil(io_, [&] { return read.has_value(); }));
  EXPECT_THAT(*read, StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ConformanceTest, CloseCancelsPendingRead) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  std::optional<absl::StatusOr<std::string>> read;
  asio::co_spawn(io_, ReadSome(*pair.client, 16),
                 [&](std::exception_ptr, absl::StatusOr<std::string> result) { read = result; });
  io_.restart();
  io_.poll();  // the read starts; nothing arrives
  ASSERT_FALSE(read.has_value());
  pair.client->Close();
  ASSERT_TRUE(RunUntil(io_, [&] { return read.has_value(); }));
  EXPECT_THAT(*read, StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ConformanceTest, CloseCancelsPendingWrite) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  if (pair.client->traits().message_boundaries) {
    GTEST_SKIP() << "a datagram write does not wait for the reader";
  }
  // Far more than any socket buffer, and nobody reads: the write must wait.
  std::string big(64 << 20, 'x');
  std::optional<absl::Status> written;
  asio::co_spawn(io_, Write(*pair.client, big),
                 [&](std::exception_ptr, absl::Status result) { written = result; });
  io_.restart();
  io_.poll();
  ASSERT_FALSE(written.has_value());
  pair.client->Close();
  ASSERT_TRUE(RunUntil(io_, [&] { return written.has_value(); }));
  EXPECT_THAT(*written, StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ConformanceTest, TryWriteBytesArriveLikeWrittenOnes) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  std::string first = "try-", second = "write";
  asio::const_buffer parts[] = {asio::buffer(first), asio::buffer(second)};
  absl::StatusOr<size_t> n = pair.client->TryWrite(parts);
  ASSERT_THAT(n, IsOk());
  // A transport may take nothing (no fast path); what it took must arrive, in order.
  std::string rest = (first + second).substr(*n);
  if (!rest.empty()) {
    EXPECT_THAT(RunCoro(io_, Write(*pair.client, rest)), IsOk());
  }
  absl::StatusOr<std::string> at_server = RunCoro(io_, ReadExactly(*pair.server, 9));
  ASSERT_THAT(at_server, IsOk());
  EXPECT_EQ(*at_server, "try-write");
  pair.client->Close();
  EXPECT_THAT(pair.client->TryWrite(parts), StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ConformanceTest, ReadAndWriteAfterCloseAreCancelled) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  pair.client->Close();
  pair.client->Close();  // idempotent
  EXPECT_THAT(RunCoro(io_, ReadSome(*pair.client, 1)), StatusIs(absl::StatusCode::kCancelled));
  EXPECT_THAT(RunCoro(io_, Write(*pair.client, "x")), StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ConformanceTest, WriteToClosedPeerIsUnavailableNotSigpipe) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  if (!pair.client->traits().reliable) GTEST_SKIP() << "unreliable transport";
  pair.server->Close();
  // The first writes may land in buffers before the peer's reset arrives; SIGPIPE would kill
  // the test binary here.
  absl::Status status;
  for (int i = 0; i < 1000 && status.ok(); ++i) {
    status = RunCoro(io_, Write(*pair.client, std::string(4096, 'x')));
  }
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable));
}

TEST_P(ConformanceTest, CloseCancelsPendingAccept) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(Loopback());
  ASSERT_THAT(listener, IsOk());
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::co_spawn(io_, (*listener)->Accept(io_.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                   accepted = std::move(result);
                 });
  io_.restart();
  io_.poll();
  ASSERT_FALSE(accepted.has_value());
  (*listener)->Close();
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  EXPECT_THAT(*accepted, StatusIs(absl::StatusCode::kCancelled));
  // Closed stays closed, and Close() is idempotent.
  (*listener)->Close();
  EXPECT_THAT(RunCoro(io_, (*listener)->Accept(io_.get_executor())),
              StatusIs(absl::StatusCode::kCancelled));
}

TEST_P(ConformanceTest, ConnectToNothingIsUnavailable) {
  // An endpoint that was just in use and is not any more (a real, free port for tcp).
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(Loopback());
  ASSERT_THAT(listener, IsOk());
  Endpoint gone = (*listener)->local_endpoint();
  (*listener)->Close();
  listener->reset();
  absl::StatusOr<std::unique_ptr<Connection>> connection = RunCoro(io_, transport_->Connect(gone));
  EXPECT_THAT(connection, StatusIs(absl::StatusCode::kUnavailable, HasSubstr(gone.address)));
}

TEST_P(ConformanceTest, LoopbackListenerReportsAReachableEndpoint) {
  Endpoint asked = Loopback();
  EXPECT_EQ(asked.scheme, GetParam().scheme);
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(asked);
  ASSERT_THAT(listener, IsOk());
  Endpoint local = (*listener)->local_endpoint();
  EXPECT_EQ(local.scheme, GetParam().scheme);
  EXPECT_FALSE(absl::EndsWith(local.address, ":0")) << local.ToString();
  absl::StatusOr<Endpoint> reparsed = ParseEndpoint(local.ToString());
  ASSERT_THAT(reparsed, IsOk());
  EXPECT_EQ(*reparsed, local);

  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::co_spawn(io_, (*listener)->Accept(io_.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                   accepted = std::move(result);
                 });
  absl::StatusOr<std::unique_ptr<Connection>> client = RunCoro(io_, transport_->Connect(local));
  ASSERT_THAT(client, IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  ASSERT_THAT(*accepted, IsOk());
}

TEST_P(ConformanceTest, TwoListenersGetDifferentEndpoints) {
  absl::StatusOr<std::unique_ptr<Listener>> a = transport_->Listen(Loopback());
  absl::StatusOr<std::unique_ptr<Listener>> b = transport_->Listen(Loopback());
  ASSERT_THAT(a, IsOk());
  ASSERT_THAT(b, IsOk());
  EXPECT_NE((*a)->local_endpoint(), (*b)->local_endpoint());
}

TEST_P(ConformanceTest, ManyConcurrentConnections) {
  constexpr int kConnections = 64;
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(Loopback());
  ASSERT_THAT(listener, IsOk());
  Listener& server = **listener;

  // The server echoes each connection's first 8 bytes, each connection in its own coroutine.
  std::vector<std::unique_ptr<Connection>> server_side;
  auto echo = [](Connection& connection) -> asio::awaitable<void> {
    absl::StatusOr<std::string> got = co_await ReadExactly(connection, 8);
    if (got.ok()) (void)co_await Write(connection, *got);
  };
  asio::co_spawn(
      io_,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < kConnections; ++i) {
          absl::StatusOr<std::unique_ptr<Connection>> accepted =
              co_await server.Accept(io_.get_executor());
          if (!accepted.ok()) co_return;
          server_side.push_back(*std::move(accepted));
          asio::co_spawn(io_, echo(*server_side.back()), asio::detached);
        }
      },
      asio::detached);

  std::vector<std::optional<absl::StatusOr<std::string>>> replies(kConnections);
  for (int i = 0; i < kConnections; ++i) {
    asio::co_spawn(
        io_,
        [&, i]() -> asio::awaitable<absl::StatusOr<std::string>> {
          absl::StatusOr<std::unique_ptr<Connection>> client =
              co_await transport_->Connect(server.local_endpoint());
          if (!client.ok()) co_return client.status();
          std::string message = absl::StrFormat("conn%04d", i);
          if (absl::Status s = co_await Write(**client, message); !s.ok()) co_return s;
          co_return co_await ReadExactly(**client, message.size());
        },
        [&, i](std::exception_ptr, absl::StatusOr<std::string> reply) { replies[i] = reply; });
  }
  ASSERT_TRUE(RunUntil(io_, [&] {
    return std::all_of(replies.begin(), replies.end(), [](const auto& r) { return r.has_value(); });
  }));
  for (int i = 0; i < kConnections; ++i) {
    ASSERT_THAT(*replies[i], IsOk()) << "connection " << i;
    EXPECT_EQ(**replies[i], absl::StrFormat("conn%04d", i));
  }
  EXPECT_EQ(server_side.size(), static_cast<size_t>(kConnections));
}

TEST_P(ConformanceTest, PeerIsKnownOnBothSides) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  std::string scheme_prefix = std::string(GetParam().scheme) + ":";
  EXPECT_THAT(pair.server->peer().address, StartsWith(scheme_prefix));
  EXPECT_THAT(pair.client->peer().address, StartsWith(scheme_prefix));
}

TEST_P(ConformanceTest, TraitsAreConsistentOnBothSides) {
  ConnectedPair pair = MakePair();
  ASSERT_NE(pair.client, nullptr);
  EXPECT_EQ(pair.client->traits(), pair.server->traits());
}

TEST_P(ConformanceTest, AcceptBindsConnectionToTheGivenExecutor) {
  asio::io_context other;
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(Loopback());
  ASSERT_THAT(listener, IsOk());
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::co_spawn(io_, (*listener)->Accept(other.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                   accepted = std::move(result);
                 });
  absl::StatusOr<std::unique_ptr<Connection>> client =
      RunCoro(io_, transport_->Connect((*listener)->local_endpoint()));
  ASSERT_THAT(client, IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  ASSERT_THAT(*accepted, IsOk());
  Connection& server = ***accepted;
  EXPECT_TRUE(server.executor() == asio::any_io_executor(other.get_executor()));
  EXPECT_TRUE((*client)->executor() == asio::any_io_executor(io_.get_executor()));

  // The connection's I/O runs on `other`.
  EXPECT_THAT(RunCoro(io_, Write(**client, "ping")), IsOk());
  absl::StatusOr<std::string> got = RunCoro(other, ReadExactly(server, 4));
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(*got, "ping");
}

INSTANTIATE_TEST_SUITE_P(BuiltIn, ConformanceTest, ::testing::ValuesIn(BuiltInTransports()),
                         [](const ::testing::TestParamInfo<TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier::transport
