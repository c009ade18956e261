// The PubSub service of pubsub.proto, in memory: named topics, a bounded queue per subscriber,
// and the rule that drops a subscriber that falls too far behind. A library, so that tests serve
// it in-process; pubsub_server serves it from the command line. Examples.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "pubsub/pubsub.courier.h"
#include "rpc/call.h"
#include "rpc/stream.h"

namespace courier::examples::pubsub {

inline constexpr size_t kDefaultMaxQueuedEvents = 1024;

struct BrokerOptions {
  // Events one subscriber may have waiting at the server. They wait once flow control holds
  // the subscription's writes back (the client is a stream window behind: 256 KiB of events by
  // default, ChannelOptions::stream_window); the event that would be one more ends that
  // subscriber with RESOURCE_EXHAUSTED "subscriber fell N events behind" instead. At least 1.
  size_t max_queued_events = kDefaultMaxQueuedEvents;
};

// Serves Subscribe and Publish. Every subscriber receives every event published on its topic
// after its confirmation, in order; Publish never waits for a subscriber. A queued event is
// shared by all the subscribers it was queued for, so a topic holds at most its last
// max_queued_events events however many subscribe.
//
// All state lives on `executor`, with no locks: serve the broker from a Server with
// ServerOptions::threads = 0 on that executor, whose handlers all run there. A call that
// arrives on another executor (threads > 0) fails FAILED_PRECONDITION rather than race. Like
// any service, the broker must outlive the server and the handlers still pending on the
// executor. The server remembers each topic's sequence number (one small entry per topic).
class Broker final : public PubSubService {
 public:
  explicit Broker(asio::any_io_executor executor, BrokerOptions options = {});
  ~Broker() override;

  // The confirmation, then the topic's events until the client goes away (the call ends with
  // its status: CANCELLED...), the subscriber falls behind (RESOURCE_EXHAUSTED) or Shutdown
  // (UNAVAILABLE). INVALID_ARGUMENT for an empty topic name.
  asio::awaitable<absl::Status> Subscribe(ServerContext& ctx, Topic topic,
                                          ServerWriter<Event>& writer) override;
  // The event's sequence number and how many subscribers it was queued for. INVALID_ARGUMENT
  // for an empty topic name, UNAVAILABLE after Shutdown.
  asio::awaitable<absl::StatusOr<PublishReply>> Publish(ServerContext& ctx, Event event) override;

  // Ends every subscription with UNAVAILABLE "the server is shutting down" and refuses new
  // calls. Call it before Server::Shutdown, whose drain would otherwise wait out its whole time
  // for subscriptions, which never end on their own. Idempotent; on the executor.
  void Shutdown();

  // How many subscribe to `topic` now (for tests and introspection). On the executor.
  size_t subscribers(std::string_view topic) const;

 private:
  struct Subscriber;
  struct TopicState {
    uint64_t last_sequence = 0;
    std::vector<Subscriber*> subscribers;  // in no particular order
  };

  // FAILED_PRECONDITION unless the call runs on executor_.
  absl::Status CheckExecutor(const asio::any_io_executor& current) const;
  // Takes `subscriber` off its topic and wakes its handler, which returns `status`. No-op for
  // a subscriber already ended.
  void End(Subscriber& subscriber, absl::Status status);

  asio::any_io_executor executor_;
  BrokerOptions options_;
  std::map<std::string, TopicState, std::less<>> topics_;  // references stay valid
  bool shut_down_ = false;
};

}  // namespace courier::examples::pubsub
