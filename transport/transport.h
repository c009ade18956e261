// The byte-mover interfaces every transport implements: Transport (dial and listen), Listener
// and Connection. Transport layer; knows nothing of frames. Implementations live in
// transport/<scheme>/ and are listed in transport/registry.cc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/buffer.hpp"
#include "asio/experimental/as_tuple.hpp"
#include "asio/use_awaitable.hpp"
#include "transport/endpoint.h"

namespace courier::transport {

// Asio completion token that never throws: results arrive as a tuple with the error_code. Our
// code never throws (STYLE §5), so every await in courier uses it.
inline constexpr auto use_nothrow = asio::experimental::as_tuple(asio::use_awaitable);

// Who can be at the other end of a transport's connections.
enum class Reach {
  kParentChild,  // a process we started, or the one that started us (pipe://stdio, spawn)
  kSameHost,     // any process on this host that may open the address (unix, shm, fifo)
  kNetwork,      // any host that can route to the address (tcp, udp)
};

// What a transport can and cannot do; the framing and rpc layers adapt to it, and the README's
// "Choosing a transport" table is drawn from it.
struct Traits {
  bool message_boundaries = false;  // true: each Read returns exactly one peer Write
  bool reliable = true;             // false: datagrams may be lost, duplicated or reordered
  // The largest message (one RPC request or response) the transport carries; 0: no limit of its
  // own. The rpc layer refuses a larger one with kResourceExhausted before sending it.
  size_t max_message = 0;
  // true: one kernel object carries both directions (a socket, a shared segment); false: the
  // mechanism is one-way and the transport pairs two of them (pipes, FIFOs).
  bool duplex = true;
  Reach reach = Reach::kSameHost;
  friend bool operator==(const Traits&, const Traits&) = default;
};

// Who is on the other end. Credentials come from the kernel (SO_PEERCRED) where it vouches.
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
  friend bool operator==(const PeerCredentials&, const PeerCredentials&) = default;
};
// What a TLS handshake established about the peer (tls:// only).
struct TlsPeer {
  std::string version;  // "TLSv1.3"
  std::string cipher;   // "TLS_AES_256_GCM_SHA384"
  std::string alpn;     // the protocol both sides chose, "courier/1"
  // The peer's certificate, if it sent one (a server always does; a client does under mutual
  // TLS), verified against our trust anchors: its subject in RFC 2253 form ("CN=client,O=acme")
  // and its subjectAltNames as "DNS:name", "IP:127.0.0.1", "URI:spiffe://...", "email:...".
  bool peer_certificate = false;
  std::string subject;
  std::vector<std::string> subject_alt_names;
  friend bool operator==(const TlsPeer&, const TlsPeer&) = default;
};
struct PeerInfo {
  std::string address;  // e.g. "tcp://127.0.0.1:51234", "unix:@svc"
  std::optional<PeerCredentials> credentials;
  std::optional<TlsPeer> tls;
};

// TLS settings (tls:// only; the URI's query, documented in transport/tls/tls_transport.h,
// overrides them field by field). A PEM text wins over the file of the same role.
struct TlsOptions {
  // Our certificate chain and private key: required on a server; on a client, the certificate
  // it presents when the server asks (mutual TLS).
  std::string certificate_file, private_key_file;
  std::string certificate_pem, private_key_pem;
  // The CAs that vouch for the peer. Client: empty means the system's store. Server: the CAs a
  // client certificate must chain to (needed for require_client_certificate).
  std::string ca_file, ca_pem;
  // Client: the name the server's certificate must carry (a DNS name, or an IP address checked
  // against IP SANs), also sent as SNI; empty: the host of the URI.
  std::string server_name;
  // Server: refuse clients that present no certificate, or one that does not verify.
  bool require_client_certificate = false;
};

// What a transport is made with, besides its executor. Most transports ignore it.
struct TransportOptions {
  TlsOptions tls;
  // A transport-level handshake (TLS; the rpc layer has its own hello timeout) not finished by
  // then is abandoned: the client's Connect fails kUnavailable, the server drops the peer.
  std::chrono::steady_clock::duration handshake_timeout = std::chrono::seconds(10);
};

// One open connection, bound to one executor. At most one read and one write in flight.
//
// The seam is completion-handler based, so the framing layer can run its read and write loops
// without a coroutine frame or a scheduler round trip per operation:
//   - AsyncRead/AsyncWrite start one operation; its handler runs later on executor(), never
//     inside the call (so a handler may start the next operation at once);
//   - TryWrite writes what the transport takes right now, inline, without waiting: a response
//     goes out in the same turn that produced it when the kernel (or ring) has room;
//   - after Close() every pending handler runs with kCancelled; handlers must not assume the
//     Connection still exists when they run with kCancelled.
// How a read waits is the transport's own business, inside AsyncRead: a socket waits in the
// reactor (socket_connection.h says why a read after a short one is still tried); a ring can
// check for data, spin for a bounded time in slices that let the reactor run others, then
// announce that it sleeps and wait on its eventfd. A read must never miss the peer's close.
// Read and Write are the same operations as coroutines, for tests and tools; unlike the handler
// forms they can be cancelled through the awaiting coroutine's cancellation slot (for example
// by a timer in an `||`), after which nothing more is written into the buffer.
class Connection {
 public:
  using ReadHandler = absl::AnyInvocable<void(absl::StatusOr<size_t>)>;
  using WriteHandler = absl::AnyInvocable<void(absl::Status)>;

  virtual ~Connection() = default;
  // Reads some bytes into `into` (which must stay valid until done): the count, 0 when the peer
  // closed cleanly. Message transports read one datagram. kCancelled after Close();
  // kUnavailable on reset. Once the stream has ended or failed, every later read says so again.
  virtual void AsyncRead(asio::mutable_buffer into, ReadHandler done) = 0;
  // Writes all of `data`; `data` and what it points to must stay valid until done. kCancelled
  // after Close(); kUnavailable when the peer is gone.
  virtual void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) = 0;
  // Writes what the transport can take right now without waiting, and returns how many bytes
  // that was (0: it would have to wait, or the transport has no such fast path). Never call it
  // while a write is in flight. A message transport takes a whole datagram or nothing.
  virtual absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) {
    return size_t{0};
  }
  // Idempotent; pending reads and writes complete with kCancelled.
  virtual void Close() = 0;
  virtual Traits traits() const = 0;
  virtual PeerInfo peer() const = 0;
  virtual asio::any_io_executor executor() const = 0;

  // AsyncRead and AsyncWrite as cancellable coroutines (same results).
  virtual asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) = 0;
  virtual asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) = 0;
};

class Listener {
 public:
  virtual ~Listener() = default;
  // The next connection, bound to `connection_executor` (so a server can spread connections
  // over several reactors). kCancelled after Close(). kAborted: a peer was refused (a malformed
  // or hostile handshake), the listener is fine; log it (the message says why) and accept again
  // at once. Anything else (kResourceExhausted: out of descriptors) is a listener in trouble:
  // accept again after a pause.
  virtual asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) = 0;
  // Where peers reach us, with port 0 and temporary names resolved.
  virtual Endpoint local_endpoint() const = 0;
  // Idempotent; stops listening (and removes what Listen created, e.g. a socket file).
  virtual void Close() = 0;
};

// `buffers` without their first `written` bytes (what a partial write took).
inline void SkipWritten(std::vector<asio::const_buffer>& buffers, size_t written) {
  size_t first = 0;
  while (first < buffers.size() && written >= buffers[first].size()) {
    written -= buffers[first++].size();
  }
  buffers.erase(buffers.begin(), buffers.begin() + static_cast<std::ptrdiff_t>(first));
  if (written > 0) buffers[0] += written;
}

// One per scheme, made by the registry for an executor.
class Transport {
 public:
  virtual ~Transport() = default;
  // kUnavailable naming the endpoint when nobody answers; kInvalidArgument on a bad address.
  virtual asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) = 0;
  // kInvalidArgument on a bad address; kAlreadyExists when the address is in use.
  virtual absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) = 0;
};

}  // namespace courier::transport
