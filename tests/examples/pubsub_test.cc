// The pubsub example's broker served in-process over every transport in the registry: many
// subscribers receive every event in order beside concurrent publishers; a subscriber that reads
// nothing is ended with RESOURCE_EXHAUSTED at its bound while fast ones (one on the same
// connection) receive everything; cancelled, dropped and disconnected subscribers leave their
// topic; events published before a subscription are not delivered; Shutdown ends subscriptions
// with UNAVAILABLE; a server with reactor threads is refused instead of raced.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "examples/pubsub/pubsub_service.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "tests/testing/status_matchers.h"
#include "transport/registry.h"

namespace courier {
namespace {

namespace pubsub = ::courier::examples::pubsub;
using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using pubsub::Broker;
using pubsub::BrokerOptions;
using pubsub::Event;
using pubsub::PublishReply;
using pubsub::PubSubStub;
using ::testing::HasSubstr;

constexpr char kTopic[] = "news";

// Opens a subscription and reads its confirmation: from then on it receives every event
// published on `topic`.
asio::awaitable<absl::StatusOr<ClientReader<Event>>> Subscribe(PubSubStub stub, std::string topic) {
  pubsub::Topic request;
  request.set_name(topic);
  ClientReader<Event> call = stub.Subscribe(request, {.timeout = Clock::duration::max()});
  std::optional<Event> confirmation = co_await call.Read();
  if (!confirmation) {
    absl::Status status = co_await call.Finish();
    co_return status.ok() ? absl::InternalError("the subscription ended unconfirmed") : status;
  }
  if (confirmation->sequence() != 0 || confirmation->topic() != topic) {
    co_return absl::InternalError(
        absl::StrCat("the first message is not a confirmation: ", confirmation->DebugString()));
  }
  co_return std::move(call);
}

// Reads events into `out` until it holds `count`: OK then, else the status the call ended with.
// `call` and `out` must stay valid until done.
asio::awaitable<absl::Status> ReadEvents(ClientReader<Event>& call, size_t count,
                                         std::vector<Event>& out) {
  while (out.size() < count) {
    std::optional<Event> event = co_await call.Read();
    if (!event) {
      absl::Status status = co_await call.Finish();
      co_return status.ok() ? absl::InternalError("the subscription ended early") : status;
    }
    out.push_back(*std::move(event));
  }
  co_return absl::OkStatus();
}

// Reads until the call ends and returns its status.
asio::awaitable<absl::Status> ReadToEnd(ClientReader<Event>& call, std::vector<Event>& out) {
  while (std::optional<Event> event = co_await call.Read()) out.push_back(*std::move(event));
  co_return co_await call.Finish();
}

asio::awaitable<absl::StatusOr<PublishReply>> Publish(PubSubStub stub, std::string topic,
                                                      std::string data) {
  Event event;
  event.set_topic(std::move(topic));
  event.set_data(std::move(data));
  co_return co_await stub.Publish(event);
}

// Publishes `data[i]` one after the other, appending each reply to `replies`; stops at the first
// failure and returns it. `replies` must stay valid until done.
asio::awaitable<absl::Status> PublishAll(PubSubStub stub, std::string topic,
                                         std::vector<std::string> data,
                                         std::vector<PublishReply>& replies) {
  for (std::string& d : data) {
    absl::StatusOr<PublishReply> reply = co_await Publish(stub, topic, std::move(d));
    if (!reply.ok()) co_return reply.status();
    replies.push_back(*std::move(reply));
  }
  co_return absl::OkStatus();
}

std::vector<std::string> Numbered(const std::string& prefix, int count, size_t pad = 0) {
  std::vector<std::string> data;
  for (int i = 0; i < count; ++i) {
    std::string d = absl::StrCat(prefix, i);
    if (d.size() < pad) d.resize(pad, '.');
    data.push_back(std::move(d));
  }
  return data;
}

// The events' sequence numbers run first, first + 1, ... and they are all on `topic`.
::testing::AssertionResult Consecutive(const std::vector<Event>& events, uint64_t first,
                                       std::string_view topic = kTopic) {
  for (size_t i = 0; i < events.size(); ++i) {
    if (events[i].sequence() != first + i || events[i].topic() != topic) {
      return ::testing::AssertionFailure()
             << "event " << i << " is " << events[i].topic() << " #" << events[i].sequence()
             << ", want " << topic << " #" << first + i;
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<std::string> DataOf(const std::vector<Event>& events) {
  std::vector<std::string> data;
  for (const Event& e : events) data.push_back(e.data());
  return data;
}

class PubSubTest : public ::testing::TestWithParam<transport::TransportInfo> {
 protected:
  void StartServer(BrokerOptions options = {}) {
    broker_.emplace(io_.get_executor(), options);
    server_ = std::make_unique<Server>(io_.get_executor());
    ASSERT_THAT(server_->AddService(*broker_), IsOk());
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

  // Spawns `op`; `*done` counts it when it completes, `*status` receives its result.
  void Spawn(asio::awaitable<absl::Status> op, absl::Status* status, int* done) {
    asio::co_spawn(io_, std::move(op), [status, done](std::exception_ptr e, absl::Status s) {
      *status = e ? absl::InternalError("threw") : std::move(s);
      ++*done;
    });
  }

  // Destroyed after io_, whose pending handlers (subscriptions) refer to it.
  std::optional<Broker> broker_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
};

TEST_P(PubSubTest, ManySubscribersReceiveEveryEventInOrder) {
  StartServer();
  constexpr int kSubscribers = 8, kPublishers = 2, kEach = 50;
  // Subscribers spread over three connections, publishers on their own.
  std::vector<PubSubStub> subscriber_stubs;
  for (int i = 0; i < 3; ++i) subscriber_stubs.emplace_back(NewChannel());
  std::vector<ClientReader<Event>> calls;
  for (int i = 0; i < kSubscribers; ++i) {
    absl::StatusOr<ClientReader<Event>> call =
        RunCoro(io_, Subscribe(subscriber_stubs[i % 3], kTopic));
    ASSERT_THAT(call, IsOk());
    calls.push_back(*std::move(call));
  }
  EXPECT_EQ(broker_->subscribers(kTopic), size_t{kSubscribers});

  std::vector<std::vector<Event>> received(kSubscribers);
  std::vector<std::vector<PublishReply>> replies(kPublishers);
  std::vector<absl::Status> statuses(kSubscribers + kPublishers);
  int done = 0;
  for (int i = 0; i < kSubscribers; ++i) {
    Spawn(ReadEvents(calls[i], kPublishers * kEach, received[i]), &statuses[i], &done);
  }
  for (int p = 0; p < kPublishers; ++p) {
    Spawn(PublishAll(PubSubStub(NewChannel()), kTopic, Numbered(absl::StrCat("p", p, "-"), kEach),
                     replies[p]),
          &statuses[kSubscribers + p], &done);
  }
  ASSERT_TRUE(RunUntil(
      io_, [&] { return done == kSubscribers + kPublishers; }, std::chrono::seconds(60)));
  for (const absl::Status& s : statuses) EXPECT_THAT(s, IsOk());

  // One order for everybody: the server's, numbered 1..100, each publisher's events in the
  // order it published them, each numbered as its reply said.
  for (int i = 0; i < kSubscribers; ++i) {
    ASSERT_EQ(received[i].size(), size_t{kPublishers * kEach}) << "subscriber " << i;
    EXPECT_TRUE(Consecutive(received[i], 1)) << "subscriber " << i;
    EXPECT_EQ(DataOf(received[i]), DataOf(received[0])) << "subscriber " << i;
  }
  for (int p = 0; p < kPublishers; ++p) {
    const std::vector<std::string> want = Numbered(absl::StrCat("p", p, "-"), kEach);
    std::vector<std::string> seen;
    for (const Event& e : received[0]) {
      if (e.data().starts_with(absl::StrCat("p", p, "-"))) seen.push_back(e.data());
    }
    EXPECT_EQ(seen, want) << "publisher " << p;
    ASSERT_EQ(replies[p].size(), size_t{kEach});
    for (int k = 0; k < kEach; ++k) {
      EXPECT_EQ(replies[p][k].subscribers(), uint32_t{kSubscribers});
      const uint64_t sequence = replies[p][k].sequence();
      ASSERT_GE(sequence, 1u);
      ASSERT_LE(sequence, uint64_t{kPublishers * kEach});
      EXPECT_EQ(received[0][sequence - 1].data(), want[k]);
    }
  }
}

// A subscriber that reads nothing after its confirmation: flow control holds its writes back a
// window (256 KiB) behind, then its queue fills, and the publish that finds the queue full ends
// it. Fast subscribers, one on the same connection, miss nothing, and no publish waits.
TEST_P(PubSubTest, SubscriberThatReadsNothingIsEndedWhileFastOnesGetEverything) {
  constexpr size_t kBound = 16;
  constexpr int kEvents = 600;  // 1 KiB each: well past a 256 KiB window plus the bound
  StartServer({.max_queued_events = kBound});
  PubSubStub shared(NewChannel()), other(NewChannel()), publisher(NewChannel());
  absl::StatusOr<ClientReader<Event>> slow = RunCoro(io_, Subscribe(shared, kTopic));
  absl::StatusOr<ClientReader<Event>> fast_same = RunCoro(io_, Subscribe(shared, kTopic));
  absl::StatusOr<ClientReader<Event>> fast_other = RunCoro(io_, Subscribe(other, kTopic));
  ASSERT_THAT(slow, IsOk());
  ASSERT_THAT(fast_same, IsOk());
  ASSERT_THAT(fast_other, IsOk());

  std::vector<Event> got_same, got_other;
  std::vector<PublishReply> replies;
  absl::Status same_status, other_status, publish_status;
  int done = 0;
  Spawn(ReadEvents(*fast_same, kEvents, got_same), &same_status, &done);
  Spawn(ReadEvents(*fast_other, kEvents, got_other), &other_status, &done);
  Spawn(PublishAll(publisher, kTopic, Numbered("e", kEvents, 1024), replies), &publish_status,
        &done);
  ASSERT_TRUE(RunUntil(
      io_, [&] { return done == 3; }, std::chrono::seconds(60)));
  ASSERT_THAT(publish_status, IsOk());
  EXPECT_THAT(same_status, IsOk());
  EXPECT_THAT(other_status, IsOk());
  EXPECT_TRUE(Consecutive(got_same, 1));
  EXPECT_TRUE(Consecutive(got_other, 1));
  EXPECT_EQ(DataOf(got_same), Numbered("e", kEvents, 1024));

  // Three subscribers until the slow one was dropped, two from then on, and not before its
  // queue could hold the bound.
  size_t dropped_at = replies.size();
  for (size_t i = 0; i < replies.size(); ++i) {
    if (replies[i].subscribers() != 3) {
      dropped_at = i;
      break;
    }
  }
  ASSERT_LT(dropped_at, replies.size()) << "the slow subscriber was never dropped";
  EXPECT_GT(dropped_at, kBound);
  for (size_t i = dropped_at; i < replies.size(); ++i) {
    EXPECT_EQ(replies[i].subscribers(), 2u) << "publish " << i;
  }
  EXPECT_EQ(broker_->subscribers(kTopic), 2u);

  // The slow one still reads what reached it before it was dropped (a prefix without gaps),
  // then the reason.
  std::vector<Event> got_slow;
  absl::Status slow_status = RunCoro(io_, ReadToEnd(*slow, got_slow));
  EXPECT_THAT(slow_status,
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr(absl::StrCat("subscriber fell ", kBound, " events behind"))));
  EXPECT_TRUE(Consecutive(got_slow, 1));
  // When it was dropped, more than the bound waited for it at the server.
  EXPECT_LT(got_slow.size() + kBound, dropped_at);
}

// With a window of one byte, what is beyond the bound is one event in the client and one in a
// waiting write: the publish that would queue the bound plus one ends the subscriber. (Its
// credit and the publishes share one connection, so their order is fixed.)
TEST_P(PubSubTest, SubscriberIsEndedByThePublishThatPassesTheBound) {
  constexpr size_t kBound = 4;
  StartServer({.max_queued_events = kBound});
  ChannelOptions tiny;
  tiny.stream_window = 1;
  PubSubStub stub(NewChannel(tiny));
  PubSubStub fast_stub(NewChannel());
  absl::StatusOr<ClientReader<Event>> slow = RunCoro(io_, Subscribe(stub, kTopic));
  absl::StatusOr<ClientReader<Event>> fast = RunCoro(io_, Subscribe(fast_stub, kTopic));
  ASSERT_THAT(slow, IsOk());
  ASSERT_THAT(fast, IsOk());
  std::vector<PublishReply> replies;
  ASSERT_THAT(RunCoro(io_, PublishAll(stub, kTopic, Numbered("e", 12), replies)), IsOk());
  std::vector<uint32_t> counts;
  for (const PublishReply& r : replies) counts.push_back(r.subscribers());
  // Delivered: the first; waiting for credit: the second; queued: the bound.
  const std::vector<uint32_t> want_counts = {2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1};
  EXPECT_EQ(counts, want_counts);

  std::vector<Event> got_slow;
  EXPECT_THAT(RunCoro(io_, ReadToEnd(*slow, got_slow)),
              StatusIs(absl::StatusCode::kResourceExhausted,
                       HasSubstr("subscriber fell 4 events behind on topic 'news'")));
  EXPECT_TRUE(Consecutive(got_slow, 1));
  EXPECT_EQ(got_slow.size(), 1u);  // what reached the client; the rest was dropped
  std::vector<Event> got_fast;
  EXPECT_THAT(RunCoro(io_, ReadEvents(*fast, 12, got_fast)), IsOk());
  EXPECT_TRUE(Consecutive(got_fast, 1));
}

TEST_P(PubSubTest, CancelledDroppedAndDisconnectedSubscribersLeaveTheTopic) {
  StartServer();
  std::shared_ptr<Channel> doomed = NewChannel();
  PubSubStub one(NewChannel()), two(doomed), publisher(NewChannel());
  absl::StatusOr<ClientReader<Event>> cancelled = RunCoro(io_, Subscribe(one, kTopic));
  absl::StatusOr<ClientReader<Event>> dropped = RunCoro(io_, Subscribe(one, kTopic));
  absl::StatusOr<ClientReader<Event>> disconnected = RunCoro(io_, Subscribe(two, kTopic));
  absl::StatusOr<ClientReader<Event>> beside_publisher = RunCoro(io_, Subscribe(publisher, kTopic));
  absl::StatusOr<ClientReader<Event>> stays = RunCoro(io_, Subscribe(one, kTopic));
  for (auto* call : {&cancelled, &dropped, &disconnected, &beside_publisher, &stays}) {
    ASSERT_THAT(*call, IsOk());
  }
  auto subscribers_after_publish = [&]() -> int {
    absl::StatusOr<PublishReply> reply = RunCoro(io_, Publish(publisher, kTopic, "x"));
    EXPECT_THAT(reply, IsOk());
    return reply.ok() ? static_cast<int>(reply->subscribers()) : -1;
  };
  EXPECT_EQ(subscribers_after_publish(), 5);

  cancelled->Cancel();
  ASSERT_TRUE(RunUntil(io_, [&] { return broker_->subscribers(kTopic) == 4; }));
  EXPECT_EQ(subscribers_after_publish(), 4);
  EXPECT_THAT(RunCoro(io_, cancelled->Finish()), StatusIs(absl::StatusCode::kCancelled));

  dropped = absl::CancelledError("dropped");  // destroying the handle of an open call cancels it
  ASSERT_TRUE(RunUntil(io_, [&] { return broker_->subscribers(kTopic) == 3; }));
  EXPECT_EQ(subscribers_after_publish(), 3);

  doomed->Close();  // the connection goes, with the subscription open
  ASSERT_TRUE(RunUntil(io_, [&] { return broker_->subscribers(kTopic) == 2; }));
  EXPECT_EQ(subscribers_after_publish(), 2);

  // On the publisher's own connection the cancel reaches the server before the next publish,
  // which does not count the subscriber even though its handler has not run yet.
  beside_publisher->Cancel();
  EXPECT_EQ(subscribers_after_publish(), 1);
  EXPECT_EQ(broker_->subscribers(kTopic), 1u);

  // The one left received every event published while it was subscribed.
  std::vector<Event> got;
  EXPECT_THAT(RunCoro(io_, ReadEvents(*stays, 5, got)), IsOk());
  EXPECT_TRUE(Consecutive(got, 1));
  stays->Cancel();
  EXPECT_TRUE(RunUntil(
      io_, [&] { return broker_->subscribers(kTopic) == 0 && server_->active_calls() == 0; }));
}

TEST_P(PubSubTest, EventsPublishedBeforeSubscribingAreNotDelivered) {
  StartServer();
  PubSubStub stub(NewChannel());
  std::vector<PublishReply> before;
  ASSERT_THAT(RunCoro(io_, PublishAll(stub, kTopic, Numbered("before-", 3), before)), IsOk());
  for (const PublishReply& r : before) EXPECT_EQ(r.subscribers(), 0u);
  absl::StatusOr<ClientReader<Event>> call =
      RunCoro(io_, Subscribe(PubSubStub(NewChannel()), kTopic));
  ASSERT_THAT(call, IsOk());
  std::vector<PublishReply> after;
  ASSERT_THAT(RunCoro(io_, PublishAll(stub, kTopic, Numbered("after-", 2), after)), IsOk());
  ASSERT_EQ(after.size(), 2u);
  EXPECT_EQ(after[0].sequence(), 4u);
  EXPECT_EQ(after[0].subscribers(), 1u);
  // Another topic's events do not arrive either.
  ASSERT_THAT(RunCoro(io_, Publish(stub, "sports", "elsewhere")), IsOk());
  ASSERT_THAT(RunCoro(io_, Publish(stub, kTopic, "after-2")), IsOk());

  std::vector<Event> got;
  EXPECT_THAT(RunCoro(io_, ReadEvents(*call, 3, got)), IsOk());
  EXPECT_TRUE(Consecutive(got, 4));
  EXPECT_EQ(DataOf(got), Numbered("after-", 3));
}

TEST_P(PubSubTest, ShutdownEndsSubscriptionsWithUnavailable) {
  StartServer();
  PubSubStub stub(NewChannel());
  absl::StatusOr<ClientReader<Event>> call = RunCoro(io_, Subscribe(stub, kTopic));
  ASSERT_THAT(call, IsOk());
  broker_->Shutdown();
  std::vector<Event> got;
  EXPECT_THAT(RunCoro(io_, ReadToEnd(*call, got)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("shutting down")));
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(broker_->subscribers(kTopic), 0u);
  EXPECT_THAT(RunCoro(io_, Subscribe(stub, kTopic)), StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_THAT(RunCoro(io_, Publish(stub, kTopic, "late")),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_P(PubSubTest, EmptyTopicNameIsInvalid) {
  StartServer();
  PubSubStub stub(NewChannel());
  EXPECT_THAT(RunCoro(io_, Subscribe(stub, "")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("topic name is empty")));
  EXPECT_THAT(RunCoro(io_, Publish(stub, "", "x")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("topic name is empty")));
}

INSTANTIATE_TEST_SUITE_P(AllTransports, PubSubTest,
                         ::testing::ValuesIn(transport::BuiltInTransports()),
                         [](const ::testing::TestParamInfo<transport::TransportInfo>& info) {
                           return std::string(info.param.scheme);
                         });

// The broker's state has no locks: a server whose handlers run on its own reactor threads gets
// FAILED_PRECONDITION instead of a data race.
TEST(PubSubBroker, RefusesCallsFromAnotherExecutor) {
  asio::io_context io;
  Broker broker(io.get_executor());
  std::optional<Server> server;
  server.emplace(io.get_executor(), ServerOptions{.threads = 2});
  ASSERT_THAT(server->AddService(broker), IsOk());
  absl::StatusOr<Endpoint> endpoint = server->Listen("tcp://127.0.0.1:0");
  ASSERT_THAT(endpoint, IsOk());
  absl::StatusOr<std::shared_ptr<Channel>> channel =
      Channel::Create(io.get_executor(), endpoint->ToString());
  ASSERT_THAT(channel, IsOk());
  PubSubStub stub(*channel);
  EXPECT_THAT(RunCoro(io, Publish(stub, kTopic, "x")),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("threads = 0")));
  EXPECT_THAT(RunCoro(io, Subscribe(stub, kTopic)),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("threads = 0")));
  // Shut down before the server goes: its accept loop, on `io`, holds a socket of a reactor
  // whose io_context ~Server destroys (destroying it first is a use-after-free under ASan).
  RunCoro(io, server->Shutdown());
  server.reset();  // joins the reactor threads before the broker goes
}

}  // namespace
}  // namespace courier
