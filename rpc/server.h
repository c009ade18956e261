// Server: serves registered services on any number of endpoints at once. Every call is its own
// coroutine on the reactor that read it, so a slow handler never blocks others. RPC layer, public.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "rpc/call.h"
#include "rpc/service.h"
#include "transport/endpoint.h"
#include "transport/registry.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace courier {

namespace internal {
struct ServerState;
}  // namespace internal

// Who may connect, by the kernel's word (unix://, shm:// and fifo://, whose connections carry
// PeerInfo::credentials: TransportInfo::kernel_credentials). Empty: anyone who can reach the
// endpoint. Otherwise a peer is served if its uid is in `uids` or its gid (the primary group
// the kernel reports, not supplementary groups) is in `gids`.
struct PeerAllowList {
  std::vector<uid_t> uids;
  std::vector<gid_t> gids;
  bool empty() const { return uids.empty() && gids.empty(); }
  bool Admits(const transport::PeerCredentials& peer) const;
};

// What ServerOptions::authorize is asked about. `method` and `metadata` are the request's as
// the client sent them (not yet matched against the methods served: a caller probing for
// method names is refused like any other).
struct AuthorizationContext {
  const transport::PeerInfo& peer;
  std::string_view method;  // "/package.Service/Method"
  const Metadata& metadata;
};
// OK serves the call; any other status is its answer, and the handler never runs (return
// kUnauthenticated for missing or bad credentials, kPermissionDenied for a caller who may not
// call this method).
using Authorizer = std::function<absl::Status(const AuthorizationContext& context)>;

struct ServerOptions {
  // Largest request accepted; a bigger one is refused by the client before sending (our limit
  // travels in the hello). Responses over the client's limit are answered kResourceExhausted.
  size_t max_message_size = kDefaultMaxMessageSize;
  // 0: connections and handlers run on the executor given to the Server. N > 0: the server
  // starts N threads, each running its own reactor (io_context), and spreads connections over
  // them; a connection's calls run on its reactor's thread, so services must be thread-safe.
  int threads = 0;
  // Ping idle clients after this much silence and drop those that do not answer within
  // keepalive_timeout. 0 disables (clients ping; the server always answers).
  Clock::duration keepalive_interval{0};
  Clock::duration keepalive_timeout = std::chrono::seconds(10);
  // A connection that has not sent its protocol hello by then is closed (and logged).
  Clock::duration handshake_timeout = std::chrono::seconds(10);
  // A connection whose peer stops in the middle of a frame for this long is closed. 0: never.
  Clock::duration frame_stall_timeout = std::chrono::seconds(20);
  // A connection with no call in flight on which nothing has arrived for this long gets
  // GOAWAY and is closed (courier clients ping idle connections every 30 s). 0: never.
  Clock::duration idle_timeout = std::chrono::minutes(5);
  // Calls served at once on one connection; announced in the hello, so courier clients queue
  // the rest locally. A request beyond it is answered kResourceExhausted.
  uint32_t max_concurrent_calls = 256;
  // Bytes queued for writing on one connection above which the server stops reading from it
  // until they drain (a client that does not read is pushed back on by its kernel).
  size_t max_queued_bytes = 4 * 1024 * 1024;
  // Streaming calls: the message bytes a client may send on one stream ahead of what its handler
  // has read (announced in the hello; at most 2^31-1, a larger value is taken as that). 0: the
  // server takes no streaming calls (a courier client then fails them kUnimplemented without
  // sending).
  uint32_t stream_window = internal::kDefaultStreamWindow;
  // Connections open at once; a connection beyond it is closed as soon as it is accepted.
  size_t max_connections = 10000;
  // Serves Prometheus metrics (calls, latency and bytes per method; connections and protocol
  // errors per transport) over HTTP at http://ADDRESS/metrics, e.g. "127.0.0.1:9464"; port 0
  // picks a free one (Server::metrics_endpoint() tells which). Started by the first Listen.
  // Empty: no HTTP endpoint.
  std::string metrics_listen;
  // Records the metrics into the application's registry (and serves that one at
  // metrics_listen, if set, with whatever else it holds). Null: the server makes a registry of
  // its own if metrics_listen is set; with neither, nothing is recorded (the cost per call is
  // one null-pointer check).
  std::shared_ptr<prometheus::Registry> metrics_registry;
  // tls:// only: the server's certificate and key, and for mutual TLS the CAs that vouch for
  // clients (transport/tls/tls_transport.h; the URI's query overrides these). The TLS handshake
  // is bounded by handshake_timeout, and a connection's hello by it again after that.
  transport::TlsOptions tls;
  // unix://, shm:// and fifo:// only: who may connect (PeerAllowList). A listener whose URI has
  // allow_uid=1000,1001 and/or allow_gid=100 in its query admits those instead. A refused peer
  // gets kPermissionDenied in the server's hello (PROTOCOL.md §6.1a), which its calls report;
  // the server logs it (rate-limited) and closes within kRefusalLinger (1 s). Listen on a
  // transport without kernel credentials with a non-empty list is kInvalidArgument.
  PeerAllowList allowed_peers;
  // Runs before every call's handler, on the connection's reactor, for every transport; must not
  // block (it holds up the connection's other calls) or throw (that answers kInternal). Null:
  // every call is served.
  Authorizer authorize;
  std::span<const transport::TransportInfo> transports = transport::BuiltInTransports();
};

// Counters since the server started, over all reactors (for tests, logs and metrics).
struct ServerStats {
  uint64_t connections_refused = 0;           // over max_connections
  uint64_t calls_refused = 0;                 // over max_concurrent_calls
  uint64_t connections_closed_for_abuse = 0;  // too many pings, cancels or refused calls
  uint64_t connections_not_allowed = 0;       // refused by the allow-list (allowed_peers)
  uint64_t calls_not_authorized = 0;          // refused by ServerOptions::authorize
  uint64_t deadline_checks = 0;               // calls examined when a deadline timer fired
};

class Server {
 public:
  explicit Server(asio::any_io_executor executor, ServerOptions options = {});
  // Closes listeners and connections at once; running handlers are cancelled and unwind the next
  // time their executor runs (so keep services alive until then, or await Shutdown first).
  // With threads > 0, joins the reactor threads.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Serves `service`'s methods; it must outlive the server. Call before the first Listen.
  // kAlreadyExists if a method name is already served, kFailedPrecondition after Listen.
  absl::Status AddService(ServiceBase& service);
  // The same, and the server keeps `service` alive as long as it needs it (for services a
  // helper makes, such as EnableReflection's and EnableHealth's).
  absl::Status AddService(std::shared_ptr<ServiceBase> service);

  // The fully qualified names ("package.Service") of the services served, sorted; a method
  // registered under a name without that form counts as its own service. Thread-safe once
  // listening (the table no longer changes).
  std::vector<std::string> service_names() const;

  // Runs `hook` on executor() when Shutdown begins, before calls are drained (health checking
  // goes NOT_SERVING there, and ends its watches). Call before Listen.
  void OnShutdown(std::function<void()> hook);

  // Starts listening on `uri` (callable several times, for several endpoints) and returns the
  // resolved endpoint (the real port for port 0; without allow_uid and allow_gid, which are the
  // server's). kInvalidArgument for a bad URI, an unknown scheme or an allow-list on a transport
  // without kernel credentials, kAlreadyExists when the address is taken, kFailedPrecondition after
  // Shutdown. The first call also starts the metrics endpoint (ServerOptions::metrics_listen), and
  // fails kInvalidArgument for a malformed address or kUnavailable when it cannot be bound.
  absl::StatusOr<Endpoint> Listen(std::string_view uri);

  // Stops accepting, tells clients to go away (their new calls go elsewhere), lets calls in
  // flight finish for up to `drain`, then cancels the rest (clients see kUnavailable); completes
  // when every connection is closed. Idempotent. Await it on executor().
  asio::awaitable<void> Shutdown(Clock::duration drain = Clock::duration::zero()) {
    return internal::WithoutCancellationThrow(ShutdownImpl(state_, drain));
  }

  // Calls whose handler is running, over all reactors.
  size_t active_calls() const;
  // Open connections, over all reactors.
  size_t connections() const;
  ServerStats stats() const;
  const std::vector<Endpoint>& endpoints() const { return endpoints_; }
  // "host:port" of the metrics endpoint, with the real port, once Listen started it; empty
  // without ServerOptions::metrics_listen.
  const std::string& metrics_endpoint() const { return metrics_endpoint_; }
  asio::any_io_executor executor() const { return executor_; }

 private:
  static asio::awaitable<void> ShutdownImpl(std::shared_ptr<internal::ServerState> state,
                                            Clock::duration drain);

  asio::any_io_executor executor_;
  std::shared_ptr<internal::ServerState> state_;
  std::vector<Endpoint> endpoints_;
  std::string metrics_endpoint_;
};

}  // namespace courier
