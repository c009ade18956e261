#include "rpc/internal/metrics.h"

#include <chrono>
#include <exception>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"

namespace courier::internal {

namespace {

// Call latency buckets in seconds: 10 µs (a call over shm://) up to a minute.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      0.00001, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
      0.05,    0.1,     0.25,   0.5,     1,      2.5,   5,      10,    30,   60};
  return *buckets;
}

// The HTTP endpoint's bounds (civetweb, under prometheus-cpp's Exposer). Four worker threads
// serve one connection each at a time; up to 64 more accepted connections wait in the queue
// and the kernel's backlog holds 128 beyond that (more are refused by the kernel). A request
// head over 16 KiB is refused and its connection closed; a client that has not sent a whole
// request head within 5 s is dropped, so a slow client holds a thread for at most 5 s (four
// of them at once delay a scrape by that much). Keep-alive is off: one request per
// connection. Only GET /metrics (with any query) answers 200; other paths are 404 (there is
// no document root), other methods 404 or 405.
constexpr char kHttpThreads[] = "4";
constexpr char kHttpQueue[] = "64";
constexpr char kHttpBacklog[] = "128";
constexpr char kHttpMaxRequest[] = "16384";
constexpr char kHttpRequestTimeoutMs[] = "5000";

std::string CodeLabel(int code) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

}  // namespace

CallFamilies::CallFamilies(prometheus::Registry& registry, std::string_view side) {
  const std::string prefix = absl::StrCat("courier_", std::string(side), "_");
  const std::string calls = side == "server" ? "Calls the server " : "Calls the client ";
  started = &prometheus::BuildCounter()
                 .Name(prefix + "started_total")
                 .Help(calls + "started, by method")
                 .Register(registry);
  handled = &prometheus::BuildCounter()
                 .Name(prefix + "handled_total")
                 .Help(calls + "finished, by method and status code")
                 .Register(registry);
  seconds = &prometheus::BuildHistogram()
                 .Name(prefix + "handling_seconds")
                 .Help(calls + "finished, by method: time from start to end in seconds")
                 .Register(registry);
  received_bytes = &prometheus::BuildCounter()
                        .Name(prefix + "received_bytes_total")
                        .Help(
                            "Message bytes received (requests on a server, responses on a "
                            "client), by method")
                        .Register(registry);
  sent_bytes = &prometheus::BuildCounter()
                    .Name(prefix + "sent_bytes_total")
                    .Help(
                        "Message bytes sent (responses on a server, requests on a client), "
                        "by method")
                    .Register(registry);
  in_flight = &prometheus::BuildGauge()
                   .Name(prefix + "calls_in_flight")
                   .Help(calls + "started and not finished, by method")
                   .Register(registry);
}

MethodMetrics::MethodMetrics(const CallFamilies& families, std::string method)
    : handled_family_(families.handled),
      method_(std::move(method)),
      started_(&families.started->Add({{"method", method_}})),
      seconds_(&families.seconds->Add({{"method", method_}}, LatencyBuckets())),
      received_bytes_(&families.received_bytes->Add({{"method", method_}})),
      sent_bytes_(&families.sent_bytes->Add({{"method", method_}})),
      in_flight_(&families.in_flight->Add({{"method", method_}})) {}

Clock::time_point MethodMetrics::Started() {
  started_->Increment();
  in_flight_->Increment();
  return Clock::now();
}

void MethodMetrics::Finished(absl::StatusCode code, Clock::time_point started) {
  const std::chrono::duration<double> took = Clock::now() - started;
  seconds_->Observe(took.count());
  Handled(code).Increment();
  in_flight_->Decrement();
}

void MethodMetrics::Received(size_t bytes) {
  received_bytes_->Increment(static_cast<double>(bytes));
}

void MethodMetrics::Sent(size_t bytes) { sent_bytes_->Increment(static_cast<double>(bytes)); }

prometheus::Counter& MethodMetrics::Handled(absl::StatusCode code) {
  int index = static_cast<int>(code);
  if (index < 0 || index >= kStatusCodes) index = static_cast<int>(absl::StatusCode::kUnknown);
  std::atomic<prometheus::Counter*>& slot = handled_[index];
  prometheus::Counter* counter = slot.load(std::memory_order_acquire);
  if (counter == nullptr) {
    // Family::Add is thread-safe and returns the same counter for the same labels, so threads
    // racing here store the same pointer.
    counter = &handled_family_->Add({{"method", method_}, {"code", CodeLabel(index)}});
    slot.store(counter, std::memory_order_release);
  }
  return *counter;
}

bool IsProtocolError(const absl::Status& status) {
  if (status.code() == absl::StatusCode::kDataLoss) return true;
  return absl::StartsWith(status.message(), "protocol error") ||
         absl::StartsWith(status.message(), "frame:");
}

ServerMetrics::ServerMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(registry != nullptr ? std::move(registry)
                                    : std::make_shared<prometheus::Registry>()),
      families_(*registry_, "server"),
      connections_open_(&prometheus::BuildGauge()
                             .Name("courier_server_connections_open")
                             .Help("Connections open on the server, by transport")
                             .Register(*registry_)),
      connections_accepted_(&prometheus::BuildCounter()
                                 .Name("courier_server_connections_accepted_total")
                                 .Help("Connections the server accepted and served, by transport")
                                 .Register(*registry_)),
      protocol_errors_(&prometheus::BuildCounter()
                            .Name("courier_server_protocol_errors_total")
                            .Help("Connections closed because the client broke the protocol (a "
                                  "corrupt or misplaced frame), by transport")
                            .Register(*registry_)),
      not_allowed_(&prometheus::BuildCounter()
                        .Name("courier_server_connections_not_allowed_total")
                        .Help("Connections refused by the uid/gid allow-list, by transport")
                        .Register(*registry_)),
      unknown_(families_, "unknown") {}

// The exposer goes first: its threads may be collecting from the registry until it stops.
ServerMetrics::~ServerMetrics() { StopExposing(); }

MethodMetrics* ServerMetrics::AddMethod(const std::string& name) {
  return methods_.emplace_back(std::make_unique<MethodMetrics>(families_, name)).get();
}

TransportMetrics* ServerMetrics::ForTransport(const std::string& scheme) {
  std::unique_ptr<TransportMetrics>& entry = transports_[scheme];
  if (entry == nullptr) {
    const prometheus::Labels labels{{"transport", scheme}};
    entry = std::make_unique<TransportMetrics>(
        TransportMetrics{.open = &connections_open_->Add(labels),
                         .accepted = &connections_accepted_->Add(labels),
                         .protocol_errors = &protocol_errors_->Add(labels),
                         .not_allowed = &not_allowed_->Add(labels)});
  }
  return entry.get();
}

absl::StatusOr<std::string> ServerMetrics::Expose(const std::string& address) {
  if (exposer_ != nullptr) return absl::FailedPreconditionError("metrics are already exposed");
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(address.substr(colon + 1), &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics address \"", address, "\": expected host:port"));
  }
  const std::string host = address.substr(0, colon);
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", kHttpThreads, "connection_queue", kHttpQueue,
        "listen_backlog", kHttpBacklog, "max_request_size", kHttpMaxRequest, "request_timeout_ms",
        kHttpRequestTimeoutMs, "enable_keep_alive", "no"});
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("metrics: cannot serve http on ", address, ": ", e.what()));
  }
  // civetweb matches a handler's URI as a prefix ("/metrics" would serve "/metricsxyz" too);
  // "$" anchors the pattern at the end of the path.
  exposer_->RegisterCollectable(registry_, "/metrics$");
  const std::vector<int> ports = exposer_->GetListeningPorts();
  if (ports.empty()) {
    exposer_.reset();
    return absl::UnavailableError(absl::StrCat("metrics: no port bound for ", address));
  }
  return absl::StrCat(host, ":", ports.front());
}

ClientMetrics::ClientMetrics(std::shared_ptr<prometheus::Registry> registry)
    : registry_(std::move(registry)), families_(*registry_, "client") {}

ClientMetrics::~ClientMetrics() = default;

MethodMetrics* ClientMetrics::ForMethod(std::string_view method) {
  auto it = methods_.find(absl::string_view(method.data(), method.size()));
  if (it == methods_.end()) {
    it = methods_
             .emplace(std::string(method),
                      std::make_unique<MethodMetrics>(families_, std::string(method)))
             .first;
  }
  return it->second.get();
}

}  // namespace courier::internal
