// Streaming calls over every transport in the registry, after gRPC's interop cases: client,
// server and ping-pong streaming with the interop sizes, empty streams, cancellation, deadlines,
// errors mid-stream, a client that goes away, 100 concurrent streams beside unary calls, 32 MiB
// in one stream, flow control against a slow reader, and the three client styles.
#include <atomic>
#include <chrono>
#include <functional>
#include <future>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_future.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "streams.courier.h"
#include "tests/testing/fault_proxy.h"
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

Payload Sized(size_t size, int response_size = 0) {
  Payload p;
  p.set_body(std::string(size, 'p'));
  p.set_response_size(response_size);
  return p;
}

class Streams final : public StreamsService {
 public:
  std::atomic<int> cancelled{0};      // handlers that saw their call cancelled
  std::atomic<int> write_failed{0};   // Writes that failed (the client went away)
  std::atomic<int> finished{0};       // handlers that returned
  std::atomic<int64_t> written{0};    // Download: message bytes written so far
  std::atomic<int> upload_started{0};
  std::atomic<int> download_started{0};

  asio::awaitable<absl::Status> Download(ServerContext& ctx, StreamRequest request,
                                         ServerWriter<Payload>& writer) override {
    co_await asio::this_coro::throw_if_cancelled(false);
    ++download_started;
    struct Done {
      Streams* s;
      ~Done() { ++s->finished; }
    } done{this};
    int sent = 0;
    auto send = [&](size_t size) -> asio::awaitable<absl::Status> {
      if (request.sleep_ms() > 0) {
        asio::steady_timer timer(co_await asio::this_coro::executor,
                                 std::chrono::milliseconds(request.sleep_ms()));
        co_await timer.async_wait(internal::use_nothrow);
        if (ctx.cancelled()) {
          ++cancelled;
          co_return absl::CancelledError("cancelled while sleeping");
        }
      }
      absl::Status s = co_await writer.Write(Sized(size));
      if (!s.ok()) {
        ++write_failed;
        if (ctx.cancelled()) ++cancelled;
        co_return s;
      }
      written += static_cast<int64_t>(size);
      ++sent;
      co_return absl::OkStatus();
    };
    for (int size : request.response_sizes()) {
      if (request.fail_after() > 0 && sent == request.fail_after()) break;
      if (absl::Status s = co_await send(size); !s.ok()) co_return s;
    }
    if (request.fail_after() > 0 && sent == request.fail_after()) {
      co_return absl::Status(static_cast<absl::StatusCode>(request.fail_code()),
                             "failed mid-stream on purpose");
    }
    for (int i = 0; i < request.flood_count(); ++i) {
      if (absl::Status s = co_await send(request.flood_size()); !s.ok()) co_return s;
    }
    ctx.AddResponseMetadata("sent", std::to_string(sent));
    co_return absl::OkStatus();
  }

  asio::awaitable<absl::StatusOr<Summary>> Upload(ServerContext& ctx,
                                                  ServerReader<Payload>& reader) override {
    ++upload_started;
    Summary summary;
    while (std::optional<Payload> p = co_await reader.Read()) {
      summary.set_total_bytes(summary.total_bytes() + static_cast<int64_t>(p->body().size()));
      summary.set_count(summary.count() + 1);
    }
    ++finished;
    if (ctx.cancelled()) {
      ++cancelled;
      co_return absl::CancelledError("upload cancelled");
    }
    co_return summary;
  }

  asio::awaitable<absl::Status> PingPong(ServerContext& ctx,
                                         ServerReaderWriter<Payload, Payload>& stream) override {
    while (std::optional<Payload> p = co_await stream.Read()) {
      if (absl::Status s = co_await stream.Write(Sized(p->response_size())); !s.ok()) {
        ++write_failed;
        co_return s;
      }
    }
    ++finished;
    if (ctx.cancelled()) {
      ++cancelled;
      co_return absl::CancelledError("ping-pong cancelled");
    }
    co_return absl::OkStatus();
  }

  asio::awaitable<absl::StatusOr<Payload>> Unary(ServerContext&, Payload request) override {
    co_return request;
  }
};

class StreamingTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void SetUp() override { StartServer(); }

  void StartServer(ServerOptions options = {}) {
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_), IsOk());
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

  // The largest message the transport carries, or `wanted`.
  size_t Cap(size_t wanted) {
    absl::StatusOr<transport::Traits> traits = testing::ProbeTraits(GetParam());
    if (!traits.ok() || traits->max_message == 0) return wanted;
    return std::min(wanted, traits->max_message);
  }

  Streams service_;  // outlives the io_context, whose pending handlers refer to it
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
};

TEST_P(StreamingTest, ClientStreamingSendsTheInteropSizes) {
  StreamsStub stub(NewChannel());
  absl::StatusOr<Summary> summary =
      RunCoro(io_, [&]() -> asio::awaitable<absl::StatusOr<Summary>> {
        auto call = stub.Upload();
        for (int size : {27182, 8, 1828, 45904}) {
          absl::Status s = co_await call.Write(Sized(size));
          if (!s.ok()) co_return s;
        }
        EXPECT_THAT(call.WritesDone(), IsOk());
        co_return co_await call.Finish();
      }());
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->total_bytes(), 74922);
  EXPECT_EQ(summary->count(), 4);
}

TEST_P(StreamingTest, ServerStreamingSendsTheInteropSizesInOrder) {
  StreamsStub stub(NewChannel());
  StreamRequest request;
  for (int size : {31415, 9, 2653, 58979}) request.add_response_sizes(size);
  std::vector<size_t> sizes;
  Metadata trailer;
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.Download(request);
    while (std::optional<Payload> p = co_await call.Read()) sizes.push_back(p->body().size());
    absl::Status s = co_await call.Finish();
    trailer = call.trailing_metadata();
    co_return s;
  }());
  ASSERT_THAT(status, IsOk());
  EXPECT_THAT(sizes, ::testing::ElementsAre(31415, 9, 2653, 58979));
  EXPECT_THAT(trailer, ::testing::Contains(std::pair<std::string, std::string>("sent", "4")));
}

TEST_P(StreamingTest, PingPongInterleavesTheInteropSizes) {
  StreamsStub stub(NewChannel());
  const std::pair<int, int> rounds[] = {{27182, 31415}, {8, 9}, {1828, 2653}, {45904, 58979}};
  std::vector<size_t> got;
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.PingPong();
    for (auto [request, response] : rounds) {
      if (absl::Status s = co_await call.Write(Sized(request, response)); !s.ok()) co_return s;
      std::optional<Payload> p = co_await call.Read();
      if (!p) co_return absl::InternalError("no answer");
      got.push_back(p->body().size());
    }
    EXPECT_THAT(call.WritesDone(), IsOk());
    EXPECT_FALSE((co_await call.Read()).has_value());
    co_return co_await call.Finish();
  }());
  ASSERT_THAT(status, IsOk());
  EXPECT_THAT(got, ::testing::ElementsAre(31415, 9, 2653, 58979));
}

TEST_P(StreamingTest, EmptyStreamEndsCleanly) {
  StreamsStub stub(NewChannel());
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.PingPong();
    EXPECT_THAT(call.WritesDone(), IsOk());
    EXPECT_FALSE((co_await call.Read()).has_value());
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, IsOk());
  absl::StatusOr<Summary> summary = RunCoro(io_, [&]() -> asio::awaitable<absl::StatusOr<Summary>> {
    auto call = stub.Upload();
    co_return co_await call.Finish();  // Finish half-closes
  }());
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->count(), 0);
}

TEST_P(StreamingTest, CancelAfterBeginCancelsTheHandler) {
  StreamsStub stub(NewChannel());
  absl::StatusOr<Summary> result = RunCoro(io_, [&]() -> asio::awaitable<absl::StatusOr<Summary>> {
    auto call = stub.Upload();
    // Let the request reach the server first.
    co_await call.Write(Sized(10));
    asio::steady_timer wait(co_await asio::this_coro::executor);
    for (int i = 0; i < 200 && service_.upload_started == 0; ++i) {
      wait.expires_after(std::chrono::milliseconds(5));
      co_await wait.async_wait(internal::use_nothrow);
    }
    call.Cancel();
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(result, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.cancelled == 1; }));
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

TEST_P(StreamingTest, CancelAfterFirstResponse) {
  StreamsStub stub(NewChannel());
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.PingPong();
    co_await call.Write(Sized(27182, 31415));
    std::optional<Payload> first = co_await call.Read();
    EXPECT_TRUE(first.has_value());
    call.Cancel();
    EXPECT_FALSE((co_await call.Read()).has_value());
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kCancelled));
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.cancelled == 1; }));
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

TEST_P(StreamingTest, DeadlineEndsAStreamWhoseServerSleeps) {
  StreamsStub stub(NewChannel());
  StreamRequest request;
  request.add_response_sizes(10);
  request.add_response_sizes(10);
  request.set_sleep_ms(5000);
  const auto start = Clock::now();
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.Download(request, {.timeout = std::chrono::milliseconds(200)});
    while (co_await call.Read()) {
    }
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kDeadlineExceeded));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  // The server's own deadline cancels the handler.
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.cancelled == 1; }));
}

TEST_P(StreamingTest, ServerErrorMidStreamArrivesAfterTheMessagesBeforeIt) {
  StreamsStub stub(NewChannel());
  StreamRequest request;
  for (int i = 0; i < 4; ++i) request.add_response_sizes(100);
  request.set_fail_after(2);
  request.set_fail_code(static_cast<int>(absl::StatusCode::kNotFound));
  int read = 0;
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.Download(request);
    while (co_await call.Read()) ++read;
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kNotFound, HasSubstr("mid-stream")));
  EXPECT_EQ(read, 2);
}

TEST_P(StreamingTest, ClientThatDisappearsFailsTheWriterAndCancelsTheHandler) {
  std::shared_ptr<Channel> channel = NewChannel();
  StreamsStub stub(channel);
  StreamRequest request;
  request.set_flood_count(1'000'000);
  request.set_flood_size(1024);
  RunCoro(io_, [&]() -> asio::awaitable<void> {
    auto call = stub.Download(request, {.timeout = Clock::duration::max()});
    for (int i = 0; i < 10; ++i) EXPECT_TRUE((co_await call.Read()).has_value());
    channel->Close();  // the connection goes away with the stream still open
    EXPECT_THAT(co_await call.Finish(), StatusIs(absl::StatusCode::kCancelled));
  }());
  EXPECT_TRUE(RunUntil(io_, [&] { return service_.write_failed == 1 && service_.cancelled == 1; }));
  EXPECT_TRUE(RunUntil(io_, [&] { return server_->active_calls() == 0; }));
}

// Readers whose call ends while they wait (the trailer, the deadline, the channel closed, the
// connection lost) and that drop their handle as soon as they wake, with it the last reference
// to the stream: the channel must be done with the stream by then. (The wake-up used to resume
// them inside StreamCore::End, and the stream was freed under End and under
// Channel::OnResponse, StreamEnded and its loops over pending calls: heap-use-after-free under
// ASan.)
TEST_P(StreamingTest, ReaderWokenByTheEndOfItsCallMayDropItsHandleAtOnce) {
  std::shared_ptr<Channel> channel = NewChannel();
  StreamsStub stub(channel);
  auto read_once = [](StreamsStub stub, StreamRequest request,
                      CallOptions options) -> asio::awaitable<absl::Status> {
    auto call = stub.Download(request, options);
    if (co_await call.Read()) co_return absl::InternalError("unexpected message");
    co_return co_await call.Finish();  // at once, the call is over; `call` goes with this frame
  };
  EXPECT_THAT(RunCoro(io_, read_once(stub, StreamRequest(), {})), IsOk());
  StreamRequest asleep;
  asleep.add_response_sizes(1);
  asleep.set_sleep_ms(5000);
  EXPECT_THAT(RunCoro(io_, read_once(stub, asleep, {.timeout = std::chrono::milliseconds(50)})),
              StatusIs(absl::StatusCode::kDeadlineExceeded));
  // Readers on `on` whose calls end together: `end` runs on the executor, as the channel's
  // loops over its pending calls do.
  constexpr int kReaders = 8;
  auto end_together = [&](StreamsStub on, std::function<void()> end) -> std::vector<absl::Status> {
    std::vector<absl::Status> statuses(kReaders);
    int done = 0;
    service_.download_started = 0;
    for (int i = 0; i < kReaders; ++i) {
      asio::co_spawn(io_, read_once(on, asleep, {.timeout = Clock::duration::max()}),
                     [&, i](std::exception_ptr, absl::Status s) {
                       statuses[i] = std::move(s);
                       ++done;
                     });
    }
    EXPECT_TRUE(RunUntil(io_, [&] { return service_.download_started == kReaders; }));
    asio::post(io_, end);
    EXPECT_TRUE(RunUntil(io_, [&] { return done == kReaders; }));
    return statuses;
  };
  for (const absl::Status& s : end_together(stub, [&] { channel->Close(); })) {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kCancelled));
  }
  // The connection lost: the server goes without answering.
  for (const absl::Status& s : end_together(StreamsStub(NewChannel()), [&] { server_.reset(); })) {
    EXPECT_THAT(s, StatusIs(absl::StatusCode::kUnavailable));
  }
}

TEST_P(StreamingTest, HundredConcurrentStreamsBesideUnaryCalls) {
  StreamsStub stub(NewChannel());
  constexpr int kStreams = 100;
  constexpr int kRounds = 5;
  int streams_ok = 0, unary_ok = 0, done = 0;
  for (int i = 0; i < kStreams; ++i) {
    asio::co_spawn(
        io_,
        [&, i]() -> asio::awaitable<absl::Status> {
          auto call = stub.PingPong();
          for (int r = 0; r < kRounds; ++r) {
            const int size = 1 + (i * 7 + r * 131) % 3000;
            if (absl::Status s = co_await call.Write(Sized(10, size)); !s.ok()) co_return s;
            std::optional<Payload> p = co_await call.Read();
            if (!p || p->body().size() != size_t(size)) co_return absl::InternalError("mismatch");
          }
          (void)call.WritesDone();
          co_return co_await call.Finish();
        },
        [&](std::exception_ptr, absl::Status s) {
          ++done;
          if (s.ok()) ++streams_ok;
        });
    asio::co_spawn(io_, stub.Unary(Sized(i)),
                   [&, i](std::exception_ptr, absl::StatusOr<Payload> r) {
                     ++done;
                     if (r.ok() && r->body().size() == size_t(i)) ++unary_ok;
                   });
  }
  ASSERT_TRUE(RunUntil(io_, [&] { return done == 2 * kStreams; }, std::chrono::seconds(60)));
  EXPECT_EQ(streams_ok, kStreams);
  EXPECT_EQ(unary_ok, kStreams);
  EXPECT_EQ(server_->connections(), 1u);
}

TEST_P(StreamingTest, ThirtyTwoMebibytesInOneStream) {
  StreamsStub stub(NewChannel());
  const size_t kSize = Cap(256 * 1024);
  const int kCount = static_cast<int>((32u << 20) / kSize);
  absl::StatusOr<Summary> summary = RunCoro(
      io_,
      [&]() -> asio::awaitable<absl::StatusOr<Summary>> {
        auto call = stub.Upload({.timeout = std::chrono::seconds(60)});
        const Payload message = Sized(kSize);
        for (int i = 0; i < kCount; ++i) {
          if (absl::Status s = co_await call.Write(message); !s.ok()) co_return s;
        }
        co_return co_await call.Finish();
      }(),
      std::chrono::seconds(60));
  ASSERT_THAT(summary, IsOk());
  EXPECT_EQ(summary->total_bytes(), int64_t{32} << 20);
  EXPECT_EQ(summary->count(), kCount);
}

// Flow control: a server writing as fast as it can is never more than the window (plus one
// message) ahead of a client that reads one message per 10 ms, whatever the transport buffers.
TEST_P(StreamingTest, FastWriterStaysAWindowAheadOfASlowReader) {
  ChannelOptions options;
  options.stream_window = 128 * 1024;
  StreamsStub stub(NewChannel(options));
  constexpr int kMessage = 16 * 1024;
  StreamRequest request;
  request.set_flood_count(60);
  request.set_flood_size(kMessage);
  int64_t read_bytes = 0, worst_lead = 0;
  absl::Status status = RunCoro(
      io_,
      [&]() -> asio::awaitable<absl::Status> {
        auto call = stub.Download(request);
        asio::steady_timer pause(co_await asio::this_coro::executor);
        while (std::optional<Payload> p = co_await call.Read()) {
          read_bytes += static_cast<int64_t>(p->body().size());
          pause.expires_after(std::chrono::milliseconds(10));
          co_await pause.async_wait(internal::use_nothrow);
          worst_lead = std::max(worst_lead, service_.written.load() - read_bytes);
        }
        co_return co_await call.Finish();
      }(),
      std::chrono::seconds(30));
  ASSERT_THAT(status, IsOk());
  EXPECT_EQ(read_bytes, 60 * kMessage);
  EXPECT_LE(worst_lead, options.stream_window + kMessage);
  EXPECT_GT(worst_lead, 0);
}

TEST_P(StreamingTest, UnknownStreamingMethodIsUnimplemented) {
  std::shared_ptr<Channel> channel = NewChannel();
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    ClientReaderWriter<Payload, Payload> call(
        channel->OpenStream("/no.Such/Stream", CallOptions{}));
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("/no.Such/Stream")));
}

TEST_P(StreamingTest, UnaryMethodOpenedAsAStreamIsUnimplemented) {
  std::shared_ptr<Channel> channel = NewChannel();
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    ClientReaderWriter<Payload, Payload> call(
        channel->OpenStream(StreamsService::kUnaryMethodName, CallOptions{}));
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("unary")));
}

TEST_P(StreamingTest, ServerWithoutStreamsRefusesThemClearly) {
  server_.reset();
  ServerOptions options;
  options.stream_window = 0;
  StartServer(options);
  StreamsStub stub(NewChannel());
  absl::Status status = RunCoro(io_, [&]() -> asio::awaitable<absl::Status> {
    auto call = stub.PingPong();
    co_return co_await call.Finish();
  }());
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnimplemented, HasSubstr("streaming")));
  // Unary calls still work.
  EXPECT_THAT(RunCoro(io_, stub.Unary(Sized(3))), IsOk());
}

TEST_P(StreamingTest, CallbackStyleReadsAndFinishes) {
  StreamsStub stub(NewChannel());
  StreamRequest request;
  for (int size : {1, 2, 3}) request.add_response_sizes(size);
  auto call = std::make_shared<ClientReader<Payload>>(stub.Download(request));
  std::vector<size_t> sizes;
  std::optional<absl::Status> finished;
  std::function<void(std::optional<Payload>)> on_read = [&](std::optional<Payload> p) {
    if (p) {
      sizes.push_back(p->body().size());
      call->AsyncRead(on_read);
      return;
    }
    call->AsyncFinish([&](absl::Status s) { finished = s; });
  };
  call->AsyncRead(on_read);
  ASSERT_TRUE(RunUntil(io_, [&] { return finished.has_value(); }));
  EXPECT_THAT(*finished, IsOk());
  EXPECT_THAT(sizes, ::testing::ElementsAre(1, 2, 3));
}

TEST_P(StreamingTest, BlockingStyleOnAChannelWithItsOwnThread) {
  std::thread server_thread([&] {
    auto guard = asio::make_work_guard(io_);
    io_.run_for(std::chrono::seconds(20));
  });
  {
    absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(endpoint_.ToString());
    ASSERT_THAT(channel, IsOk());
    {
      StreamsStub stub(*channel);
      StreamRequest request;
      for (int size : {31415, 9}) request.add_response_sizes(size);
      auto reader = stub.BlockingDownload(request);
      std::vector<size_t> sizes;
      while (std::optional<Payload> p = reader.Read()) sizes.push_back(p->body().size());
      EXPECT_THAT(reader.Finish(), IsOk());
      EXPECT_THAT(sizes, ::testing::ElementsAre(31415, 9));

      auto writer = stub.BlockingUpload();
      EXPECT_THAT(writer.Write(Sized(27182)), IsOk());
      EXPECT_THAT(writer.Write(Sized(8)), IsOk());
      EXPECT_THAT(writer.WritesDone(), IsOk());
      absl::StatusOr<Summary> summary = writer.Finish();
      ASSERT_THAT(summary, IsOk());
      EXPECT_EQ(summary->total_bytes(), 27190);

      auto both = stub.BlockingPingPong();
      EXPECT_THAT(both.Write(Sized(1, 1828)), IsOk());
      std::optional<Payload> answer = both.Read();
      ASSERT_TRUE(answer.has_value());
      EXPECT_EQ(answer->body().size(), 1828u);
      EXPECT_THAT(both.WritesDone(), IsOk());
      EXPECT_FALSE(both.Read().has_value());
      EXPECT_THAT(both.Finish(), IsOk());
    }
    // The handles let go of their streams on the channel's thread: wait for that, so that the
    // last reference to the channel is ours and its thread is joined here. (Dropped on its own
    // thread, the channel leaves the thread to end by itself, which can outlive the test
    // binary's main: UBSan then reports a destroyed error_category at exit.)
    asio::post((*channel)->executor(), asio::use_future).get();
  }
  io_.stop();
  server_thread.join();
}

// A blocking handle made for a call that had already ended (a fast server: the trailer can come
// before OpenBlocking returns) still reads the messages that came before the end. It took any
// ended call for one that never started and read nothing.
TEST_P(StreamingTest, BlockingReaderOfACallThatEndedBeforeTheHandleWasMade) {
  std::thread server_thread([&] {
    auto guard = asio::make_work_guard(io_);
    io_.run_for(std::chrono::seconds(20));
  });
  {
    absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(endpoint_.ToString());
    ASSERT_THAT(channel, IsOk());
    StreamRequest request;
    for (int size : {31415, 9}) request.add_response_sizes(size);
    std::promise<std::shared_ptr<internal::ClientStream>> opened;
    asio::post((*channel)->executor(), [&] {
      opened.set_value(internal::OpenWithRequest(*channel, "/courier.test.streams.Streams/Download",
                                                 request, CallOptions{}));
    });
    std::shared_ptr<internal::ClientStream> stream = opened.get_future().get();
    // The trailer has arrived before the handle exists.
    asio::co_spawn((*channel)->executor(), stream->WaitForEnd(), asio::use_future).get();
    {
      BlockingClientReader<Payload> reader(std::move(stream));
      std::vector<size_t> sizes;
      while (std::optional<Payload> p = reader.Read()) sizes.push_back(p->body().size());
      EXPECT_THAT(sizes, ::testing::ElementsAre(31415, 9));
      EXPECT_THAT(reader.Finish(), IsOk());
    }
    // The handle let go of the stream on the channel's thread: wait for that, so that the last
    // reference to the channel is ours and its thread is joined here, not left to end by itself.
    asio::post((*channel)->executor(), asio::use_future).get();
  }
  io_.stop();
  server_thread.join();
}

INSTANTIATE_TEST_SUITE_P(AllTransports, StreamingTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

}  // namespace
}  // namespace courier
