#include "examples/pubsub/pubsub_service.h"

#include <algorithm>
#include <cassert>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/bind_cancellation_slot.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/co_spawn.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "asio/use_awaitable.hpp"

namespace courier::examples::pubsub {
namespace {

constexpr auto use_nothrow = asio::experimental::as_tuple(asio::use_awaitable);

// One Write in a coroutine of its own, so that a cancellation signal of ours (not the server's,
// which belongs to the call) can interrupt its wait for flow-control credit.
asio::awaitable<absl::Status> WriteEvent(ServerWriter<Event>& writer,
                                         std::shared_ptr<const Event> event) {
  co_await asio::this_coro::throw_if_cancelled(false);
  co_return co_await writer.Write(*event);
}

}  // namespace

struct Broker::Subscriber {
  Subscriber(asio::any_io_executor executor, const ServerContext& ctx, TopicState& topic)
      : wake(std::move(executor)), ctx(&ctx), topic(&topic) {}

  // The handler waits here for the queue; Publish and End cancel it.
  asio::steady_timer wake;
  // End emits it: a Write waiting for credit gives up.
  asio::cancellation_signal stop;
  std::deque<std::shared_ptr<const Event>> queue;
  const ServerContext* ctx;
  TopicState* topic;  // null once ended
  absl::Status end_status;
};

Broker::Broker(asio::any_io_executor executor, BrokerOptions options)
    : executor_(std::move(executor)), options_(options) {
  options_.max_queued_events = std::max<size_t>(options_.max_queued_events, 1);
}

Broker::~Broker() {
  // Handlers unregister before they complete; one still registered would dangle.
  for ([[maybe_unused]] const auto& [name, topic] : topics_) assert(topic.subscribers.empty());
}

absl::Status Broker::CheckExecutor(const asio::any_io_executor& current) const {
  if (current == executor_) return absl::OkStatus();
  return absl::FailedPreconditionError(
      "pubsub: this call runs on another executor than the broker's state (serve the broker "
      "from a Server with threads = 0 on its executor)");
}

void Broker::End(Subscriber& subscriber, absl::Status status) {
  if (subscriber.topic == nullptr) return;
  std::vector<Subscriber*>& list = subscriber.topic->subscribers;
  auto it = std::find(list.begin(), list.end(), &subscriber);
  assert(it != list.end());
  *it = list.back();
  list.pop_back();
  subscriber.topic = nullptr;
  subscriber.end_status = std::move(status);
  subscriber.queue.clear();
  subscriber.wake.cancel();
  subscriber.stop.emit(asio::cancellation_type::terminal);
}

asio::awaitable<absl::Status> Broker::Subscribe(ServerContext& ctx, Topic topic,
                                                ServerWriter<Event>& writer) {
  // Our waits report the server's cancellation (the client left) by their error codes.
  co_await asio::this_coro::throw_if_cancelled(false);
  const asio::any_io_executor executor = co_await asio::this_coro::executor;
  if (absl::Status s = CheckExecutor(executor); !s.ok()) co_return s;
  if (topic.name().empty()) co_return absl::InvalidArgumentError("subscribe: topic name is empty");
  if (shut_down_) co_return absl::UnavailableError("the server is shutting down");

  // Registered before the confirmation goes: whatever is published once the client has it
  // reaches this subscriber.
  auto [entry, inserted] = topics_.try_emplace(topic.name());
  Subscriber me(executor, ctx, entry->second);
  entry->second.subscribers.push_back(&me);
  struct Unregister {
    Broker* broker;
    Subscriber* subscriber;
    ~Unregister() { broker->End(*subscriber, absl::OkStatus()); }
  } unregister{this, &me};

  auto confirmation = std::make_shared<Event>();
  confirmation->set_topic(topic.name());
  std::shared_ptr<const Event> next = std::move(confirmation);
  for (;;) {
    auto [error, status] =
        co_await asio::co_spawn(executor, WriteEvent(writer, std::move(next)),
                                asio::bind_cancellation_slot(me.stop.slot(), use_nothrow));
    if (me.topic == nullptr) co_return me.end_status;  // ended while the write waited
    if (error) co_return absl::InternalError("subscribe: the write threw");
    if (!status.ok()) co_return status;  // the call is over: the client left, the deadline...
    while (me.queue.empty() && me.topic != nullptr && !ctx.cancelled()) {
      me.wake.expires_at(asio::steady_timer::time_point::max());
      co_await me.wake.async_wait(use_nothrow);  // Publish, End or the server cancels it
    }
    if (me.topic == nullptr) co_return me.end_status;
    if (ctx.cancelled()) co_return absl::CancelledError("the subscriber left");
    next = std::move(me.queue.front());
    me.queue.pop_front();
  }
}

asio::awaitable<absl::StatusOr<PublishReply>> Broker::Publish(ServerContext& ctx, Event event) {
  if (absl::Status s = CheckExecutor(co_await asio::this_coro::executor); !s.ok()) co_return s;
  if (event.topic().empty()) co_return absl::InvalidArgumentError("publish: topic name is empty");
  if (shut_down_) co_return absl::UnavailableError("the server is shutting down");
  TopicState& topic = topics_[event.topic()];
  event.set_sequence(++topic.last_sequence);
  PublishReply reply;
  reply.set_sequence(event.sequence());
  auto shared = std::make_shared<const Event>(std::move(event));
  uint32_t queued = 0;
  // End takes a subscriber off the list by moving the last one into its place: look at the
  // same index again then.
  for (size_t i = 0; i < topic.subscribers.size();) {
    Subscriber& subscriber = *topic.subscribers[i];
    if (subscriber.ctx->cancelled()) {
      // Its cancel arrived before this publish; its handler has yet to run and see it.
      End(subscriber, absl::CancelledError("the subscriber left"));
    } else if (subscriber.queue.size() >= options_.max_queued_events) {
      End(subscriber,
          absl::ResourceExhaustedError(absl::StrCat("subscriber fell ", options_.max_queued_events,
                                                    " events behind on topic '", shared->topic(),
                                                    "' (at sequence ", shared->sequence(), ")")));
    } else {
      subscriber.queue.push_back(shared);
      subscriber.wake.cancel();
      ++queued;
      ++i;
    }
  }
  reply.set_subscribers(queued);
  co_return reply;
}

void Broker::Shutdown() {
  shut_down_ = true;
  for (auto& [name, topic] : topics_) {
    while (!topic.subscribers.empty()) {
      End(*topic.subscribers.back(), absl::UnavailableError("the server is shutting down"));
    }
  }
}

size_t Broker::subscribers(std::string_view topic) const {
  auto it = topics_.find(topic);
  return it == topics_.end() ? 0 : it->second.subscribers.size();
}

}  // namespace courier::examples::pubsub
