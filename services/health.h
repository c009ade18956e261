// Health checking: grpc.health.v1.Health (Check and the server-streaming Watch), with gRPC's
// exact names, so container probes, load balancers and `courier health` can ask a server
// whether it serves. Services layer.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "asio/any_io_executor.hpp"
#include "grpc/health/v1/health.courier.h"
#include "rpc/server.h"

namespace courier {

// The health service's state. Thread-safe: statuses may be set from any thread.
//
// A service's status is the one set for it with SetServingStatus; a service the server serves
// whose status was never set has the server's overall status (service ""), which starts
// SERVING; any other name is unknown (Check: NOT_FOUND; Watch: SERVICE_UNKNOWN). When the
// server begins to shut down everything goes NOT_SERVING for good, and every Watch gets that
// status and then ends with UNAVAILABLE, so the drain does not wait for watchers.
class Health final : public grpc::health::v1::HealthService {
 public:
  using ServingStatus = grpc::health::v1::HealthCheckResponse::ServingStatus;

  // `server` is asked which services it serves; it must outlive the calls (EnableHealth
  // arranges that: the server owns the service).
  explicit Health(const Server* server) : server_(server) {}

  // `service` "" is the server as a whole. Ignored once shutting down. Watchers are told.
  void SetServingStatus(std::string_view service, bool serving);
  // Everything NOT_SERVING from now on; watches end. Called by the server's Shutdown.
  void Shutdown();
  // The status Check would answer (SERVICE_UNKNOWN for an unknown service).
  ServingStatus Status(std::string_view service) const;

  asio::awaitable<absl::StatusOr<grpc::health::v1::HealthCheckResponse>> Check(
      ServerContext& ctx, grpc::health::v1::HealthCheckRequest request) override;
  asio::awaitable<absl::Status> Watch(
      ServerContext& ctx, grpc::health::v1::HealthCheckRequest request,
      ServerWriter<grpc::health::v1::HealthCheckResponse>& writer) override;

 private:
  struct Watcher;
  void WakeWatchers() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Server* server_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, bool> serving_ ABSL_GUARDED_BY(mu_);
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
};

// Serves grpc.health.v1.Health on `server` (call before Listen) and goes NOT_SERVING when its
// Shutdown begins. The returned handle sets statuses; the server keeps the service alive.
// kAlreadyExists if health is already served.
absl::StatusOr<std::shared_ptr<Health>> EnableHealth(Server& server);

}  // namespace courier
