// tls:// — TLS 1.2 or 1.3 (OpenSSL 3) over TCP: what tcp:// carries, encrypted and
// authenticated, for calls that cross machines.
//
// Address: "tls://HOST:PORT[?OPTION=VALUE&...]", HOST as for tcp:// (IPv4, [IPv6], a DNS name).
// Options (a value may percent-encode '&', '=', '%' and spaces); each overrides the field of
// TlsOptions (transport.h) in the channel's or server's options:
//   cert=FILE         our certificate chain, PEM: the server's (required to listen), or the one a
//                     client presents when the server asks (mutual TLS)
//   key=FILE          the private key of `cert`, PEM
//   ca=FILE           the CAs that vouch for the peer, PEM. Client: default the system's store.
//                     Server: the CAs a client certificate must chain to
//   server_name=NAME  client: the name the server's certificate must carry (DNS SAN, or an IP
//                     address checked against IP SANs) and the SNI sent; default HOST
//   client_auth=require|none
//                     server: require a client certificate that chains to `ca` (mutual TLS);
//                     default none (no certificate is asked for)
// One URI can serve both ends (the listener ignores server_name, a client client_auth), and a
// listener's local_endpoint() keeps the query it was given, so tests dial what they listened on.
//
// A client context (CA store, certificate, key) is made once per process for each distinct
// setting and shared by every connection that uses it (at most 16; a file replaced under its
// path is read again). A server certificate without a chain in its file gets its chain built
// once, at Listen, from `ca` (the root left out).
//
// The handshake: TLS 1.2 at least, OpenSSL's default cipher suites, ALPN "courier/1" required
// by both sides (a server refuses a client that offers other protocols only; a client refuses
// a server that does not choose courier/1), no renegotiation, no session tickets. A client
// verifies the server's chain and name; a failure is kUnavailable with OpenSSL's reason
// ("certificate verify failed: certificate has expired"). A listener runs each handshake in a
// coroutine of its own, at most kMaxPendingHandshakes at once (counting finished ones not yet
// accepted; more are closed at once), each bounded by TransportOptions::handshake_timeout; a
// failed or timed-out one reaches Accept as kAborted naming the peer and the reason (the server
// logs it, rate-limited, and accepts on).
//
// Peer info: "tls://IP:PORT" and PeerInfo::tls (version, cipher, ALPN, and the peer's verified
// certificate subject and SANs: a server's always, a client's under client_auth=require).
// The connection is a reliable byte stream; writes are gathered into records of up to 16 KiB.
#pragma once

#include <cstddef>
#include <memory>

#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::tls {

inline constexpr size_t kMaxPendingHandshakes = 128;
// The ALPN protocol name both sides require.
inline constexpr std::string_view kAlpn = "courier/1";

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// tls://127.0.0.1:0 with this process's loopback CA and certificate (dev_cert.h) in the query:
// a server listens with them and a client that dials the listener's endpoint trusts them.
Endpoint LoopbackEndpoint();

// OpenSSL's initialisation, which registers its clean-up at exit (TransportInfo::prepare_process).
void PrepareProcess();
// OPENSSL_thread_stop: the calling thread's OpenSSL state, freed (TransportInfo::end_thread).
void EndThread();

}  // namespace courier::transport::tls
