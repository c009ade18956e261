#include "services/health.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "transport/transport.h"

namespace courier {

namespace v1 = grpc::health::v1;

// One Watch call: its handler sleeps on `wake` (on its own executor) until a status changes.
struct Health::Watcher {
  explicit Watcher(asio::any_io_executor executor) : wake(std::move(executor)) {}
  asio::steady_timer wake;
};

void Health::SetServingStatus(std::string_view service, bool serving) {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return;
  serving_[std::string(service)] = serving;
  WakeWatchers();
}

void Health::Shutdown() {
  absl::MutexLock lock(&mu_);
  shutting_down_ = true;
  WakeWatchers();
}

void Health::WakeWatchers() {
  for (const std::shared_ptr<Watcher>& watcher : watchers_) {
    // The timer belongs to the watcher's executor: cancel it there. A watcher that is between
    // two waits reads the status again before it waits, so no change is missed.
    asio::post(watcher->wake.get_executor(), [watcher] { watcher->wake.cancel(); });
  }
}

Health::ServingStatus Health::Status(std::string_view service) const {
  absl::MutexLock lock(&mu_);
  if (shutting_down_) return v1::HealthCheckResponse::NOT_SERVING;
  auto serving = [](bool on) {
    return on ? v1::HealthCheckResponse::SERVING : v1::HealthCheckResponse::NOT_SERVING;
  };
  if (auto it = serving_.find(std::string(service)); it != serving_.end()) {
    return serving(it->second);
  }
  const std::vector<std::string> served = server_->service_names();
  if (!service.empty() && !std::binary_search(served.begin(), served.end(), service)) {
    return v1::HealthCheckResponse::SERVICE_UNKNOWN;
  }
  auto overall = serving_.find("");
  return serving(overall == serving_.end() || overall->second);
}

asio::awaitable<absl::StatusOr<v1::HealthCheckResponse>> Health::Check(
    ServerContext& ctx, v1::HealthCheckRequest request) {
  v1::HealthCheckResponse response;
  response.set_status(Status(request.service()));
  if (response.status() == v1::HealthCheckResponse::SERVICE_UNKNOWN) {
    co_return absl::NotFoundError(absl::StrCat("unknown service: ", request.service()));
  }
  co_return response;
}

asio::awaitable<absl::Status> Health::Watch(ServerContext& ctx, v1::HealthCheckRequest request,
                                            ServerWriter<v1::HealthCheckResponse>& writer) {
  auto watcher = std::make_shared<Watcher>(co_await asio::this_coro::executor);
  {
    absl::MutexLock lock(&mu_);
    watchers_.push_back(watcher);
  }
  absl::Status result;
  bool sent = false;
  v1::HealthCheckResponse last;
  for (;;) {
    v1::HealthCheckResponse now;
    now.set_status(Status(request.service()));
    if (!sent || now.status() != last.status()) {
      if (absl::Status s = co_await writer.Write(now); !s.ok()) {
        result = s;
        break;
      }
      sent = true;
      last = now;
      continue;  // read again: a change during the write woke nobody
    }
    bool shutting_down;
    {
      absl::MutexLock lock(&mu_);
      shutting_down = shutting_down_;
    }
    if (shutting_down) {
      result = absl::UnavailableError("the server is shutting down");
      break;
    }
    watcher->wake.expires_at(Clock::time_point::max());
    co_await watcher->wake.async_wait(transport::use_nothrow);
    if (ctx.cancelled()) {
      result = absl::CancelledError("the watch was cancelled");
      break;
    }
  }
  absl::MutexLock lock(&mu_);
  watchers_.erase(std::find(watchers_.begin(), watchers_.end(), watcher));
  co_return result;
}

absl::StatusOr<std::shared_ptr<Health>> EnableHealth(Server& server) {
  auto health = std::make_shared<Health>(&server);
  if (absl::Status s = server.AddService(health); !s.ok()) return s;
  server.OnShutdown([health] { health->Shutdown(); });
  return health;
}

}  // namespace courier
