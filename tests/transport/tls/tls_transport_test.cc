// tls:// specifics beyond the conformance suite (which runs it too): certificate checks on both
// sides, mutual TLS, peers that do not speak TLS or speak it badly, stalls, the handshake bound,
// the version floor, ALPN, and the URI's options. Every certificate is made here, at test time.
#include "transport/tls/tls_transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/buffer.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/read.hpp"
#include "asio/write.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/connection_io.h"
#include "tests/testing/status_matchers.h"
#include "transport/endpoint.h"
#include "transport/tcp/tcp_transport.h"
#include "transport/tls/dev_cert.h"
#include "transport/transport.h"

namespace courier::transport::tls {
namespace {

using ::courier::testing::ReadExactly;
using ::courier::testing::Write;

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using std::chrono::milliseconds;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::StartsWith;

// The certificates of one test run: two unrelated CAs, and leaves signed by the first.
struct Pki {
  Pem ca, other_ca;
  Pem server;          // localhost, 127.0.0.1, ::1
  Pem expired_server;  // the same names, expired an hour ago
  Pem elsewhere;       // only "other.example"
  Pem internal_name;   // only "svc.internal"
  Pem client;          // CN=client-a, a SPIFFE URI, by `ca`
  Pem stranger;        // a client by `other_ca`
};

Pki MakePki() {
  Pki pki;
  pki.ca = MakeCa("test CA").value();
  pki.other_ca = MakeCa("other CA").value();
  CertificateSpec server;
  server.common_name = "localhost";
  server.organization = "courier tests";
  server.dns_names = {"localhost"};
  server.ip_addresses = {"127.0.0.1", "::1"};
  pki.server = MakeCertificate(server, &pki.ca).value();
  CertificateSpec expired = server;
  expired.not_before = std::chrono::system_clock::now() - std::chrono::hours(48);
  expired.not_after = std::chrono::system_clock::now() - std::chrono::hours(1);
  pki.expired_server = MakeCertificate(expired, &pki.ca).value();
  CertificateSpec elsewhere;
  elsewhere.common_name = "other.example";
  elsewhere.dns_names = {"other.example"};
  pki.elsewhere = MakeCertificate(elsewhere, &pki.ca).value();
  CertificateSpec internal_name;
  internal_name.common_name = "svc.internal";
  internal_name.dns_names = {"svc.internal"};
  pki.internal_name = MakeCertificate(internal_name, &pki.ca).value();
  CertificateSpec client;
  client.common_name = "client-a";
  client.organization = "acme";
  client.server_auth = false;
  pki.client = MakeCertificate(client, &pki.ca).value();
  client.common_name = "stranger";
  pki.stranger = MakeCertificate(client, &pki.other_ca).value();
  return pki;
}

const Pki& TestPki() {
  static const Pki* pki = new Pki(MakePki());
  return *pki;
}

TlsOptions ServerTls(const Pem& identity) {
  return TlsOptions{.certificate_pem = identity.certificate,
                    .private_key_pem = identity.private_key};
}
TlsOptions ClientTls(const Pem& trusted_ca) { return TlsOptions{.ca_pem = trusted_ca.certificate}; }

class TlsTransportTest : public ::testing::Test {
 protected:
  using Accepted = std::optional<absl::StatusOr<std::unique_ptr<Connection>>>;

  // Starts one Accept on `listener`; its result lands in `into` (which must outlive io_'s run).
  void StartAccept(Listener& listener, Accepted& into) {
    asio::co_spawn(io_, listener.Accept(io_.get_executor()),
                   [&into](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                     into = std::move(result);
                   });
  }

  // Where `listener` is, for a raw TCP socket.
  static asio::ip::tcp::endpoint TcpEndpointOf(Listener& listener) {
    return asio::ip::tcp::endpoint(
        asio::ip::make_address("127.0.0.1"),
        static_cast<unsigned short>(std::stoi(SplitHostPort(HostPortOf(listener))->port)));
  }

  // Listens on 127.0.0.1:0 with `server` options (and `query`); nullptr after a failure.
  std::unique_ptr<Listener> Listen(const TlsOptions& server, std::string query = "",
                                   milliseconds handshake_timeout = milliseconds(10'000)) {
    server_transport_ =
        NewTransport(io_.get_executor(),
                     TransportOptions{.tls = server, .handshake_timeout = handshake_timeout});
    std::string address = query.empty() ? "127.0.0.1:0" : absl::StrCat("127.0.0.1:0?", query);
    absl::StatusOr<std::unique_ptr<Listener>> listener =
        server_transport_->Listen(Endpoint{"tls", address});
    EXPECT_THAT(listener, IsOk());
    return listener.ok() ? *std::move(listener) : nullptr;
  }

  // "127.0.0.1:PORT" of `listener`, without its query.
  static std::string HostPortOf(Listener& listener) {
    std::string address = listener.local_endpoint().address;
    return address.substr(0, address.find('?'));
  }

  struct Attempt {
    absl::StatusOr<std::unique_ptr<Connection>> client = absl::UnknownError("not run");
    // What the listener's Accept returned (nullopt: it never returned).
    Accepted server;
  };

  // A client with `client` options dials `listener` (at `address`, default its own host and
  // port); the listener accepts once. Waits until the client is done and Accept has returned.
  Attempt Dial(Listener& listener, const TlsOptions& client, std::string address = "",
               milliseconds handshake_timeout = milliseconds(10'000)) {
    Attempt attempt;
    StartAccept(listener, attempt.server);
    client_transport_ =
        NewTransport(io_.get_executor(),
                     TransportOptions{.tls = client, .handshake_timeout = handshake_timeout});
    if (address.empty()) address = HostPortOf(listener);
    attempt.client = RunCoro(io_, client_transport_->Connect(Endpoint{"tls", address}));
    EXPECT_TRUE(RunUntil(io_, [&] { return attempt.server.has_value(); }))
        << "Accept did not return";
    return attempt;
  }

  // After a handshake the server refused late (TLS 1.3 clients finish first): the client's
  // first read fails.
  absl::Status FirstRead(Connection& client) {
    absl::StatusOr<std::string> got = RunCoro(io_, ReadExactly(client, 1));
    return got.status();
  }

  asio::io_context io_;
  std::unique_ptr<Transport> server_transport_;
  std::unique_ptr<Transport> client_transport_;
};

TEST_F(TlsTransportTest, GoodHandshakeCarriesBytesAndTellsEachSideWhoThePeerIs) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.server));
  ASSERT_NE(listener, nullptr);
  Attempt attempt = Dial(*listener, ClientTls(pki.ca));
  ASSERT_THAT(attempt.client, IsOk());
  ASSERT_THAT(*attempt.server, IsOk());
  Connection& client = **attempt.client;
  Connection& server = ***attempt.server;

  EXPECT_THAT(RunCoro(io_, Write(client, "ping")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadExactly(server, 4)).value_or(""), "ping");
  EXPECT_THAT(RunCoro(io_, Write(server, "pong")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadExactly(client, 4)).value_or(""), "pong");

  PeerInfo seen_by_client = client.peer();
  EXPECT_EQ(seen_by_client.address, absl::StrCat("tls://", HostPortOf(*listener)));
  ASSERT_TRUE(seen_by_client.tls.has_value());
  EXPECT_EQ(seen_by_client.tls->version, "TLSv1.3");
  EXPECT_EQ(seen_by_client.tls->alpn, "courier/1");
  EXPECT_FALSE(seen_by_client.tls->cipher.empty());
  EXPECT_TRUE(seen_by_client.tls->peer_certificate);
  EXPECT_EQ(seen_by_client.tls->subject, "CN=localhost,O=courier tests");
  EXPECT_THAT(seen_by_client.tls->subject_alt_names, Contains("DNS:localhost"));
  EXPECT_THAT(seen_by_client.tls->subject_alt_names, Contains("IP:127.0.0.1"));
  EXPECT_THAT(seen_by_client.tls->subject_alt_names, Contains("IP:::1"));

  PeerInfo seen_by_server = server.peer();
  EXPECT_THAT(seen_by_server.address, StartsWith("tls://127.0.0.1:"));
  ASSERT_TRUE(seen_by_server.tls.has_value());
  EXPECT_EQ(seen_by_server.tls->alpn, "courier/1");
  EXPECT_FALSE(seen_by_server.tls->peer_certificate);  // no client certificate was asked for
  EXPECT_EQ(server.traits().reach, Reach::kNetwork);
}

TEST_F(TlsTransportTest, LargeWritesArriveWhole) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.server));
  ASSERT_NE(listener, nullptr);
  Attempt attempt = Dial(*listener, ClientTls(pki.ca));
  ASSERT_THAT(attempt.client, IsOk());
  ASSERT_THAT(*attempt.server, IsOk());
  std::string big(3 * 1024 * 1024 + 17, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 4096);
  std::optional<absl::Status> written;
  asio::co_spawn(io_, Write(**attempt.client, big),
                 [&](std::exception_ptr, absl::Status s) { written = s; });
  absl::StatusOr<std::string> got = RunCoro(io_, ReadExactly(***attempt.server, big.size()));
  ASSERT_TRUE(RunUntil(io_, [&] { return written.has_value(); }));
  EXPECT_THAT(*written, IsOk());
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(*got == big);
}

TEST_F(TlsTransportTest, ServerFromAnotherCaIsRefused) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.server));
  ASSERT_NE(listener, nullptr);
  Attempt attempt = Dial(*listener, ClientTls(pki.other_ca));
  EXPECT_THAT(attempt.client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate verify failed")));
  EXPECT_THAT(attempt.client.status().message(), HasSubstr("unable to get local issuer"));
  EXPECT_THAT(*attempt.server,
              StatusIs(absl::StatusCode::kAborted, HasSubstr("tls handshake with 127.0.0.1:")));
}

// Client contexts are shared across transports while the settings stay the same; a CA file
// replaced under the same path (a rotation, written elsewhere and renamed in) is read again.
TEST_F(TlsTransportTest, AReplacedCaFileIsReadAgain) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.server));
  ASSERT_NE(listener, nullptr);
  const std::string dir = ::testing::TempDir();
  const std::string ca_file = absl::StrCat(dir, "/courier-rotated-ca-", getpid(), ".pem");
  auto install = [&](const std::string& pem) {
    const std::string staged = ca_file + ".new";
    std::FILE* f = std::fopen(staged.c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fwrite(pem.data(), 1, pem.size(), f);
    std::fclose(f);
    ASSERT_EQ(std::rename(staged.c_str(), ca_file.c_str()), 0);
  };
  install(pki.other_ca.certificate);
  EXPECT_THAT(Dial(*listener, TlsOptions{.ca_file = ca_file}).client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate verify failed")));
  install(pki.ca.certificate);
  EXPECT_THAT(Dial(*listener, TlsOptions{.ca_file = ca_file}).client, IsOk());
  EXPECT_THAT(Dial(*listener, TlsOptions{.ca_file = ca_file}).client, IsOk()) << "and again";
  install(pki.other_ca.certificate);
  EXPECT_THAT(Dial(*listener, TlsOptions{.ca_file = ca_file}).client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate verify failed")));
  std::remove(ca_file.c_str());
}

TEST_F(TlsTransportTest, ExpiredServerCertificateIsRefused) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.expired_server));
  ASSERT_NE(listener, nullptr);
  Attempt attempt = Dial(*listener, ClientTls(pki.ca));
  EXPECT_THAT(attempt.client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate has expired")));
  EXPECT_THAT(*attempt.server, StatusIs(absl::StatusCode::kAborted));
}

TEST_F(TlsTransportTest, CertificateForAnotherNameIsRefused) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.elsewhere));
  ASSERT_NE(listener, nullptr);
  // Dialled by IP: the certificate has no IP SAN.
  Attempt by_ip = Dial(*listener, ClientTls(pki.ca));
  EXPECT_THAT(by_ip.client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("IP address mismatch")));
  // Dialled by name: another name.
  TlsOptions by_name = ClientTls(pki.ca);
  by_name.server_name = "localhost";
  Attempt attempt = Dial(*listener, by_name);
  EXPECT_THAT(attempt.client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("hostname mismatch")));
}

TEST_F(TlsTransportTest, ServerNameChoosesTheNameChecked) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.internal_name));
  ASSERT_NE(listener, nullptr);
  TlsOptions client = ClientTls(pki.ca);
  client.server_name = "svc.internal";
  Attempt attempt = Dial(*listener, client);
  ASSERT_THAT(attempt.client, IsOk());
  EXPECT_EQ((*attempt.client)->peer().tls->subject, "CN=svc.internal");
  // The query says the same.
  Attempt by_query = Dial(*listener, ClientTls(pki.ca),
                          absl::StrCat(HostPortOf(*listener), "?server_name=svc.internal"));
  EXPECT_THAT(by_query.client, IsOk());
}

TEST_F(TlsTransportTest, MutualTlsWantsAGoodClientCertificate) {
  const Pki& pki = TestPki();
  TlsOptions server = ServerTls(pki.server);
  server.ca_pem = pki.ca.certificate;
  server.require_client_certificate = true;
  std::unique_ptr<Listener> listener = Listen(server);
  ASSERT_NE(listener, nullptr);

  // No certificate: a TLS 1.3 client finishes its half first; the refusal reaches its read.
  Attempt missing = Dial(*listener, ClientTls(pki.ca));
  EXPECT_THAT(*missing.server,
              StatusIs(absl::StatusCode::kAborted, HasSubstr("peer did not return a certificate")));
  if (missing.client.ok()) {
    EXPECT_THAT(FirstRead(**missing.client),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate required")));
  }

  // A certificate from a CA the server does not trust.
  TlsOptions stranger = ClientTls(pki.ca);
  stranger.certificate_pem = pki.stranger.certificate;
  stranger.private_key_pem = pki.stranger.private_key;
  Attempt wrong = Dial(*listener, stranger);
  EXPECT_THAT(*wrong.server,
              StatusIs(absl::StatusCode::kAborted, HasSubstr("certificate verify failed")));
  if (wrong.client.ok()) {
    EXPECT_THAT(FirstRead(**wrong.client),
                StatusIs(absl::StatusCode::kUnavailable, HasSubstr("unknown ca")));
  }

  // A good one: the server sees who it is.
  TlsOptions good = ClientTls(pki.ca);
  good.certificate_pem = pki.client.certificate;
  good.private_key_pem = pki.client.private_key;
  Attempt ok = Dial(*listener, good);
  ASSERT_THAT(ok.client, IsOk());
  ASSERT_THAT(*ok.server, IsOk());
  PeerInfo client = (**ok.server)->peer();
  ASSERT_TRUE(client.tls.has_value());
  EXPECT_TRUE(client.tls->peer_certificate);
  EXPECT_EQ(client.tls->subject, "CN=client-a,O=acme");
  EXPECT_THAT(RunCoro(io_, Write(**ok.client, "hi")), IsOk());
  EXPECT_EQ(RunCoro(io_, ReadExactly(***ok.server, 2)).value_or(""), "hi");
}

TEST_F(TlsTransportTest, PlaintextClientIsDroppedWithAReason) {
  const Pki& pki = TestPki();
  std::unique_ptr<Listener> listener = Listen(ServerTls(pki.server));
  ASSERT_NE(listener, nullptr);
  Accepted accepted;
  StartAccept(*listener, accepted);
  std::unique_ptr<Transport> plain = tcp::NewTransport(io_.get_executor());
  absl::StatusOr<std::unique_ptr<Connection>> client =
      RunCoro(io_, plain->Connect(Endpoint{"tcp", HostPortOf(*listener)}));
  ASSERT_THAT(client, IsOk());
  // What a courier client sends first: a HELLO frame (any non-TLS bytes will do).
  EXPECT_THAT(RunCoro(io_, Write(**client, std::string("\x01\x00\x00\x00\x00\x00\x00\x00\x10"
                                                       "hello, plaintext",
                                                       25))),
              IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  EXPECT_THAT(*accepted, StatusIs(absl::StatusCode::kAborted, HasSubstr("does not speak TLS")));
  // The plaintext client sees its connection end (an alert, then end of stream), not a hang.
  std::string sink(4096, '\0');
  absl::StatusOr<size_t> got = 1;
  while (got.ok() && *got > 0) got = RunCoro(io_, (*client)->Read(asio::buffer(sink)));
  SUCCEED();
}

// A plain server that greets first, as a courier tcp:// server does.
asio::awaitable<void> GreetAndWait(asio::ip::tcp::acceptor& acceptor) {
  auto [ec, socket] = co_await acceptor.async_accept(use_nothrow);
  if (ec) co_return;
  static const char kGreeting[] = "\x01\x00\x00\x00\x00\x00\x00\x00\x20 courier hello, no TLS here";
  co_await asio::async_write(socket, asio::buffer(kGreeting, sizeof(kGreeting) - 1), use_nothrow);
  std::array<char, 1024> sink;
  for (;;) {
    auto [read_ec, n] = co_await socket.async_read_some(asio::buffer(sink), use_nothrow);
    if (read_ec) co_return;
  }
}

TEST_F(TlsTransportTest, PlaintextServerIsNamedAsSuch) {
  asio::ip::tcp::acceptor acceptor(io_,
                                   asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::co_spawn(io_, GreetAndWait(acceptor), asio::detached);
  client_transport_ =
      NewTransport(io_.get_executor(), TransportOptions{.tls = ClientTls(TestPki().ca)});
  absl::StatusOr<std::unique_ptr<Connection>> client =
      RunCoro(io_, client_transport_->Connect(Endpoint{
                       "tls", absl::StrCat("127.0.0.1:", acceptor.local_endpoint().port())}));
  EXPECT_THAT(client, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("does not speak TLS")));
}

TEST_F(TlsTransportTest, SilentServerTimesTheHandshakeOut) {
  asio::ip::tcp::acceptor acceptor(io_,
                                   asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::optional<asio::ip::tcp::socket> held;  // accepted and never answered
  acceptor.async_accept([&](asio::error_code, asio::ip::tcp::socket s) { held = std::move(s); });
  client_transport_ = NewTransport(
      io_.get_executor(),
      TransportOptions{.tls = ClientTls(TestPki().ca), .handshake_timeout = milliseconds(300)});
  absl::StatusOr<std::unique_ptr<Connection>> client =
      RunCoro(io_, client_transport_->Connect(Endpoint{
                       "tls", absl::StrCat("127.0.0.1:", acceptor.local_endpoint().port())}));
  EXPECT_THAT(client,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("did not finish in time")));
}

// Raw bytes to the listener; returns once the server has closed the connection (end of stream
// or a reset), or a failure after `limit`.
void ExpectServerCloses(asio::io_context& io, asio::ip::tcp::socket& socket,
                        milliseconds limit = milliseconds(10'000)) {
  bool closed = false;
  std::array<char, 4096> sink;
  std::function<void()> read_more = [&] {
    socket.async_read_some(asio::buffer(sink), [&](asio::error_code ec, size_t) {
      if (ec) {
        closed = true;
        return;
      }
      read_more();
    });
  };
  read_more();
  EXPECT_TRUE(RunUntil(
      io, [&] { return closed; }, limit))
      << "the server kept the connection";
}

TEST_F(TlsTransportTest, GarbageClientHelloIsRefused) {
  std::unique_ptr<Listener> listener = Listen(ServerTls(TestPki().server));
  ASSERT_NE(listener, nullptr);
  Accepted accepted;
  StartAccept(*listener, accepted);
  asio::ip::tcp::socket socket(io_);
  socket.connect(TcpEndpointOf(*listener));
  // A handshake record header claiming a ClientHello, then nonsense of the length it claims.
  std::string hello =
      std::string("\x16\x03\x01\x00\x40\x01\x00\x00\x3c", 9) + std::string(60, '\xee');
  asio::write(socket, asio::buffer(hello));
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  EXPECT_THAT(*accepted, StatusIs(absl::StatusCode::kAborted, HasSubstr("tls handshake with")));
  ExpectServerCloses(io_, socket);
}

TEST_F(TlsTransportTest, ClientThatStallsMidHandshakeIsClosedAtTheTimeout) {
  std::unique_ptr<Listener> listener = Listen(ServerTls(TestPki().server), "", milliseconds(300));
  ASSERT_NE(listener, nullptr);
  Accepted accepted;
  StartAccept(*listener, accepted);
  asio::ip::tcp::socket socket(io_);
  socket.connect(TcpEndpointOf(*listener));
  // The first bytes of a ClientHello record, and then nothing.
  asio::write(socket, asio::buffer(std::string("\x16\x03\x01\x02\x00\x01\x00\x01", 8)));
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  EXPECT_THAT(*accepted, StatusIs(absl::StatusCode::kAborted, HasSubstr("did not finish in time")));
  ExpectServerCloses(io_, socket);
}

TEST_F(TlsTransportTest, HandshakesInProgressAreBounded) {
  std::unique_ptr<Listener> listener = Listen(ServerTls(TestPki().server));
  ASSERT_NE(listener, nullptr);
  Accepted accepted;
  StartAccept(*listener, accepted);
  const asio::ip::tcp::endpoint at = TcpEndpointOf(*listener);
  // Silent peers fill every handshake slot...
  std::vector<asio::ip::tcp::socket> silent;
  for (size_t i = 0; i < kMaxPendingHandshakes; ++i) silent.emplace_back(io_).connect(at);
  // ...and the next is closed at once, and reported.
  asio::ip::tcp::socket extra(io_);
  extra.connect(at);
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  EXPECT_THAT(*accepted, StatusIs(absl::StatusCode::kAborted, HasSubstr("handshakes pending")));
  ExpectServerCloses(io_, extra, milliseconds(5'000));
}

// A blocking OpenSSL client with its own settings, for what courier's client never does.
struct RawClientResult {
  bool connected = false;
  std::string alpn;
};
RawClientResult RawClient(unsigned short port, int max_version, std::string alpn_wire) {
  RawClientResult result;
  asio::io_context io;
  asio::ip::tcp::socket socket(io);
  asio::error_code ec;
  socket.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  if (ec) return result;
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (max_version != 0) SSL_CTX_set_max_proto_version(ctx, max_version);
  SSL_CTX_set_min_proto_version(ctx, 0);
  SSL_CTX_set_security_level(ctx, 0);  // let the old versions be offered at all
  if (!alpn_wire.empty()) {
    SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn_wire.data()),
                            static_cast<unsigned>(alpn_wire.size()));
  }
  SSL* ssl = SSL_new(ctx);
  SSL_set_fd(ssl, socket.native_handle());
  result.connected = SSL_connect(ssl) == 1;
  if (result.connected) {
    const unsigned char* chosen = nullptr;
    unsigned length = 0;
    SSL_get0_alpn_selected(ssl, &chosen, &length);
    result.alpn.assign(reinterpret_cast<const char*>(chosen), length);
  }
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  ERR_clear_error();
  return result;
}

class RawClientTest : public TlsTransportTest {
 protected:
  // Runs RawClient against a fresh listener; Accept's result and the client's.
  std::pair<absl::Status, RawClientResult> Run(int max_version, std::string alpn_wire) {
    std::unique_ptr<Listener> listener = Listen(ServerTls(TestPki().server));
    if (listener == nullptr) return {absl::InternalError("no listener"), {}};
    Accepted accepted;
    StartAccept(*listener, accepted);
    const unsigned short port = TcpEndpointOf(*listener).port();
    RawClientResult client;
    bool done = false;
    std::thread thread([&] {
      client = RawClient(port, max_version, alpn_wire);
      done = true;
    });
    RunUntil(io_, [&] { return accepted.has_value(); });
    thread.join();
    if (!accepted) return {absl::InternalError("Accept did not return"), client};
    return {accepted->status(), client};
  }
};

TEST_F(RawClientTest, TlsBelowOnePointTwoIsRefused) {
  auto [server, client] = Run(TLS1_1_VERSION, "");
  EXPECT_FALSE(client.connected);
  EXPECT_THAT(server, StatusIs(absl::StatusCode::kAborted, HasSubstr("unsupported protocol")));
}

TEST_F(RawClientTest, TlsOnePointTwoIsServed) {
  auto [server, client] = Run(TLS1_2_VERSION, std::string("\x09"
                                                          "courier/1",
                                                          10));
  EXPECT_TRUE(client.connected);
  EXPECT_EQ(client.alpn, "courier/1");
  EXPECT_THAT(server, IsOk());
}

TEST_F(RawClientTest, OtherApplicationProtocolsAreRefused) {
  auto [server, client] = Run(0, std::string("\x02h2", 3));
  EXPECT_FALSE(client.connected);
  EXPECT_THAT(server, StatusIs(absl::StatusCode::kAborted, HasSubstr("no application protocol")));
}

TEST_F(TlsTransportTest, OptionsAreChecked) {
  std::unique_ptr<Transport> transport = NewTransport(io_.get_executor());
  auto listen = [&](std::string address) {
    return transport->Listen(Endpoint{"tls", address}).status();
  };
  EXPECT_THAT(listen("127.0.0.1:0"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a certificate")));
  EXPECT_THAT(listen("127.0.0.1:0?colour=blue"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown option 'colour'")));
  EXPECT_THAT(listen("127.0.0.1:0?client_auth=maybe"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("require or none")));
  EXPECT_THAT(listen("127.0.0.1:0?cert=%zz"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("bad %-escape")));
  EXPECT_THAT(listen("127.0.0.1:0?cert=/nonexistent/cert.pem&key=/nonexistent/key.pem"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("/nonexistent/cert.pem")));
  absl::StatusOr<LoopbackFiles> files = GetLoopbackFiles();
  ASSERT_THAT(files, IsOk());
  EXPECT_THAT(listen(absl::StrCat("127.0.0.1:0?cert=", files->certificate_file)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs a certificate")));
  EXPECT_THAT(listen(absl::StrCat("127.0.0.1:0?cert=", files->certificate_file,
                                  "&key=", files->private_key_file, "&client_auth=require")),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs the CAs")));
  // A key that is not the certificate's.
  TlsOptions mismatched = ServerTls(TestPki().server);
  mismatched.private_key_pem = TestPki().client.private_key;
  std::unique_ptr<Transport> other =
      NewTransport(io_.get_executor(), TransportOptions{.tls = mismatched});
  EXPECT_THAT(other->Listen(Endpoint{"tls", "127.0.0.1:0"}).status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("key values mismatch")));
  // %-escapes decode: "%2F" is '/'.
  std::string escaped = files->certificate_file;
  for (size_t at = escaped.find('/'); at != std::string::npos; at = escaped.find('/', at + 3)) {
    escaped.replace(at, 1, "%2F");
  }
  EXPECT_THAT(listen(absl::StrCat("127.0.0.1:0?cert=", escaped, "&key=", files->private_key_file)),
              IsOk());
}

TEST_F(TlsTransportTest, LoopbackEndpointListensAndItsEndpointDials) {
  Endpoint loopback = LoopbackEndpoint();
  EXPECT_THAT(loopback.address, StartsWith("127.0.0.1:0?cert="));
  std::unique_ptr<Transport> transport = NewTransport(io_.get_executor());
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport->Listen(loopback);
  ASSERT_THAT(listener, IsOk());
  Endpoint local = (*listener)->local_endpoint();
  EXPECT_NE(local.address, loopback.address);  // the real port
  EXPECT_NE(local.address.find("?cert="), std::string::npos);
  Accepted accepted;
  StartAccept(**listener, accepted);
  EXPECT_THAT(RunCoro(io_, transport->Connect(local)), IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  EXPECT_THAT(*accepted, IsOk());
}

}  // namespace
}  // namespace courier::transport::tls
