// Prometheus metrics of calls and connections, for Server and Channel: each method's counters
// and histogram, resolved once and then updated without any lookup, and the HTTP endpoint that
// serves them (prometheus-cpp's pull exposer). Internal to rpc/.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "rpc/call.h"

namespace courier::internal {

// The metrics, SIDE being "server" or "client" (method is "/package.Service/Method"):
//   courier_SIDE_started_total{method}         counter    calls started
//   courier_SIDE_handled_total{method,code}    counter    calls finished; code "OK", "NOT_FOUND"
//   courier_SIDE_handling_seconds{method}      histogram  start to end (LatencyBuckets)
//   courier_SIDE_received_bytes_total{method}  counter    message bytes from the peer
//   courier_SIDE_sent_bytes_total{method}      counter    message bytes to the peer
//   courier_SIDE_calls_in_flight{method}       gauge      started, not finished
//   courier_server_connections_open{transport}            gauge    ("tcp", "unix", ...)
//   courier_server_connections_accepted_total{transport}  counter
//   courier_server_protocol_errors_total{transport}       counter
//   courier_server_connections_not_allowed_total{transport}  counter (ServerOptions::allowed_peers)
// Message bytes are protobuf bytes, without frame and call headers: a unary call's request and
// response, each message of a streaming call. A server counts a call once its method is looked
// up: calls to methods it does not serve go under method="unknown" (so a peer sending random
// names cannot make label values without bound), and with the wrong kind (unary/streaming)
// under the method, both finished UNIMPLEMENTED at once; calls refused before the lookup (a
// malformed header, over max_concurrent_calls or max_message_size, while draining) are not
// counted per method (ServerStats counts some). A call ServerOptions::authorize refuses is
// counted as finished with the hook's code, under its method (or "unknown"). A server call ends
// when its handler returns (or is cancelled), with the status sent; a client call when its result
// is returned (a stream: when the channel releases it, just after its end).

// absl::StatusCode values 0..16, the gRPC codes; any other code is recorded as UNKNOWN.
inline constexpr int kStatusCodes = 17;

// The families of one side's call metrics ("courier_server_..." or "courier_client_..."), each
// with a `method` label; handled_total adds `code`.
struct CallFamilies {
  CallFamilies(prometheus::Registry& registry, std::string_view side);
  prometheus::Family<prometheus::Counter>* started;
  prometheus::Family<prometheus::Counter>* handled;
  prometheus::Family<prometheus::Histogram>* seconds;
  prometheus::Family<prometheus::Counter>* received_bytes;
  prometheus::Family<prometheus::Counter>* sent_bytes;
  prometheus::Family<prometheus::Gauge>* in_flight;
};

// One method's metrics on one side. Thread-safe (prometheus-cpp's metrics are atomic); the
// pointers stay valid as long as the registry does. The "finished" counter of each status code
// is made when that code first ends a call, so a scrape shows only the codes that occurred.
class MethodMetrics {
 public:
  MethodMetrics(const CallFamilies& families, std::string method);
  MethodMetrics(const MethodMetrics&) = delete;
  MethodMetrics& operator=(const MethodMetrics&) = delete;

  // A call started; returns the start time, for Finished.
  Clock::time_point Started();
  // The call started at `started` ended with `code`.
  void Finished(absl::StatusCode code, Clock::time_point started);
  // Message bytes received and sent: a unary call's request and response, each message of a
  // streaming call as it arrives or as the application writes it.
  void Received(size_t bytes);
  void Sent(size_t bytes);

 private:
  prometheus::Counter& Handled(absl::StatusCode code);

  prometheus::Family<prometheus::Counter>* handled_family_;
  std::string method_;
  prometheus::Counter* started_;
  prometheus::Histogram* seconds_;
  prometheus::Counter* received_bytes_;
  prometheus::Counter* sent_bytes_;
  prometheus::Gauge* in_flight_;
  std::array<std::atomic<prometheus::Counter*>, kStatusCodes> handled_{};
};

// A server's connections on one transport (label `transport`: the scheme).
struct TransportMetrics {
  prometheus::Gauge* open;
  prometheus::Counter* accepted;
  // Connections closed because the peer broke the protocol (IsProtocolError): one rejected
  // frame each, since the first such frame closes the connection.
  prometheus::Counter* protocol_errors;
  prometheus::Counter* not_allowed;  // refused by the allow-list
};

// True for the statuses a session closes with when the peer broke the protocol: kDataLoss
// (a corrupt frame, a frame the protocol does not allow there) and the "protocol error: ..."
// and "frame: ..." failures of other codes (an oversized frame, a bad hello, a flow-control
// overrun).
bool IsProtocolError(const absl::Status& status);

// Everything a Server records. Methods and transports are added before or while listening, on
// the server's main executor; the returned pointers are then used from any reactor.
class ServerMetrics {
 public:
  // Records into `registry`, or into a registry of its own when it is null.
  explicit ServerMetrics(std::shared_ptr<prometheus::Registry> registry);
  ~ServerMetrics();

  // The metrics of method `name` ("/package.Service/Method"); call once per method.
  MethodMetrics* AddMethod(const std::string& name);
  // Calls to methods the server does not serve, all under method="unknown": a peer sending
  // random names cannot make label values without bound.
  MethodMetrics* unknown_method() { return &unknown_; }
  // The metrics of connections on `scheme` (made on first use).
  TransportMetrics* ForTransport(const std::string& scheme);

  // Serves the registry in the Prometheus text format at http://`address`/metrics (address
  // "host:port", IPv6 hosts in brackets; port 0 picks a free one). Returns "host:port" with the
  // real port. kInvalidArgument for a malformed address, kUnavailable when it cannot be bound.
  absl::StatusOr<std::string> Expose(const std::string& address);
  // Stops the HTTP endpoint and joins its threads. Idempotent.
  void StopExposing() { exposer_.reset(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  CallFamilies families_;
  prometheus::Family<prometheus::Gauge>* connections_open_;
  prometheus::Family<prometheus::Counter>* connections_accepted_;
  prometheus::Family<prometheus::Counter>* protocol_errors_;
  prometheus::Family<prometheus::Counter>* not_allowed_;
  MethodMetrics unknown_;
  std::vector<std::unique_ptr<MethodMetrics>> methods_;
  absl::flat_hash_map<std::string, std::unique_ptr<TransportMetrics>> transports_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// What a Channel records. Use on the channel's executor; MethodMetrics pointers stay valid as
// long as this object.
class ClientMetrics {
 public:
  explicit ClientMetrics(std::shared_ptr<prometheus::Registry> registry);
  ~ClientMetrics();
  // `method`'s metrics: one hash lookup in the channel's own table; the registry is consulted
  // only the first time.
  MethodMetrics* ForMethod(std::string_view method);

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  CallFamilies families_;
  absl::flat_hash_map<std::string, std::unique_ptr<MethodMetrics>> methods_;
};

}  // namespace courier::internal
