// pubsub_client --connect URI subscribe TOPIC [--count N]
// pubsub_client --connect URI publish TOPIC DATA
// subscribe prints "subscribed to TOPIC" on stderr once the server confirmed the subscription,
// then one line per event on stdout, "topic=T sequence=S data=D" (D C-escaped, so one line),
// and exits 0 after N events (without --count it runs until the subscription ends). publish
// prints "sequence=S subscribers=K". The blocking style, as kv_client. A failed call prints the
// status code name (e.g. RESOURCE_EXHAUSTED) and message on stderr and exits 1; bad usage exits 2.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "pubsub/pubsub.courier.h"
#include "rpc/channel.h"

namespace {

namespace pubsub = courier::examples::pubsub;

int Usage() {
  std::fprintf(stderr,
               "usage: pubsub_client --connect URI subscribe TOPIC [--count N]\n"
               "       pubsub_client --connect URI publish TOPIC DATA\n");
  return 2;
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "%s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str());
  return 1;
}

// `count` 0: until the subscription ends.
int Subscribe(pubsub::PubSubStub& stub, const std::string& topic, uint64_t count) {
  pubsub::Topic request;
  request.set_name(topic);
  // A subscription has no natural end, so no deadline (the default is 30 s).
  auto subscription = stub.BlockingSubscribe(request, {.timeout = courier::Clock::duration::max()});
  std::optional<pubsub::Event> confirmation = subscription.Read();
  if (!confirmation) return Fail(subscription.Finish());
  if (confirmation->sequence() != 0) {
    return Fail(absl::InternalError("the server's first message is not a confirmation"));
  }
  std::fprintf(stderr, "subscribed to %s\n", topic.c_str());
  std::fflush(stderr);
  for (uint64_t received = 0; count == 0 || received < count; ++received) {
    std::optional<pubsub::Event> event = subscription.Read();
    if (!event) {
      absl::Status status = subscription.Finish();
      if (status.ok() && count != 0) {
        status = absl::UnavailableError("the subscription ended before --count events");
      }
      return status.ok() ? 0 : Fail(status);
    }
    std::printf("topic=%s sequence=%llu data=%s\n", event->topic().c_str(),
                static_cast<unsigned long long>(event->sequence()),
                absl::CEscape(event->data()).c_str());
    std::fflush(stdout);
  }
  subscription.Cancel();  // the server drops the subscriber now, not when the connection goes
  return 0;
}

int Publish(pubsub::PubSubStub& stub, const std::string& topic, const std::string& data) {
  pubsub::Event event;
  event.set_topic(topic);
  event.set_data(data);
  absl::StatusOr<pubsub::PublishReply> reply =
      stub.BlockingPublish(event, {.timeout = std::chrono::seconds(10)});
  if (!reply.ok()) return Fail(reply.status());
  std::printf("sequence=%llu subscribers=%u\n", static_cast<unsigned long long>(reply->sequence()),
              reply->subscribers());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::string uri;
  std::optional<uint64_t> count;
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--connect" && i + 1 < argc) {
      uri = argv[++i];
    } else if (arg == "--count" && i + 1 < argc) {
      uint64_t n = 0;
      if (!absl::SimpleAtoi(argv[++i], &n) || n == 0) return Usage();
      count = n;
    } else {
      args.emplace_back(arg);
    }
  }
  if (uri.empty() || args.empty()) return Usage();
  const bool subscribe = args[0] == "subscribe" && args.size() == 2;
  const bool publish = args[0] == "publish" && args.size() == 3 && !count;
  if (!subscribe && !publish) return Usage();

  absl::StatusOr<std::shared_ptr<courier::Channel>> channel = courier::Channel::Create(uri);
  if (!channel.ok()) return Fail(channel.status());
  pubsub::PubSubStub stub(*channel);
  return subscribe ? Subscribe(stub, args[1], count.value_or(0)) : Publish(stub, args[1], args[2]);
}
