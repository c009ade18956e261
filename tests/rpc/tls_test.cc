// Calls over tls:// end to end: mutual TLS with the client's identity in the handler's peer
// info, options from ChannelOptions/ServerOptions and from the URI's query, and the failures a
// caller must be told about plainly (wrong CA, no client certificate, a plaintext peer on
// either side, a stalled handshake), each logged once by the server.
#include <chrono>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "asio/io_context.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/write.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/call.h"
#include "rpc/channel.h"
#include "rpc/log.h"
#include "rpc/server.h"
#include "rpc/service.h"
#include "tests/testing/log_capture.h"
#include "tests/testing/status_matchers.h"
#include "transport/tls/dev_cert.h"

namespace courier {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::LogCapture;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;
using transport::tls::CertificateSpec;
using transport::tls::Pem;

constexpr char kWhoAmI[] = "/courier.test.Tls/WhoAmI";

struct Certificates {
  Pem ca, other_ca, server, client, stranger;
};

const Certificates& Certs() {
  static const Certificates* certs = [] {
    auto* c = new Certificates;
    c->ca = transport::tls::MakeCa("rpc test CA").value();
    c->other_ca = transport::tls::MakeCa("another CA").value();
    CertificateSpec server;
    server.common_name = "localhost";
    server.dns_names = {"localhost"};
    server.ip_addresses = {"127.0.0.1"};
    c->server = transport::tls::MakeCertificate(server, &c->ca).value();
    CertificateSpec client;
    client.common_name = "billing";
    client.organization = "acme";
    client.dns_names = {"billing.acme.internal"};
    client.server_auth = false;
    c->client = transport::tls::MakeCertificate(client, &c->ca).value();
    client.common_name = "mallory";
    c->stranger = transport::tls::MakeCertificate(client, &c->other_ca).value();
    return c;
  }();
  return *certs;
}

class TlsCallTest : public ::testing::Test {
 protected:
  TlsCallTest() {
    service_.AddRawMethod(
        kWhoAmI,
        [](ServerContext& ctx, std::string_view) -> asio::awaitable<absl::StatusOr<std::string>> {
          const transport::PeerInfo& peer = ctx.peer();
          if (!peer.tls) co_return absl::FailedPreconditionError("not TLS");
          co_return absl::StrCat(peer.tls->peer_certificate ? peer.tls->subject : "(none)", " | ",
                                 absl::StrJoin(peer.tls->subject_alt_names, ","), " | ",
                                 peer.tls->alpn);
        });
  }

  // Starts a server on `uri` (default a fresh tls://127.0.0.1:0) with `tls`.
  void StartServer(transport::TlsOptions tls, std::string uri = "tls://127.0.0.1:0",
                   std::chrono::milliseconds handshake_timeout = std::chrono::seconds(10)) {
    ServerOptions options;
    options.tls = std::move(tls);
    options.handshake_timeout = handshake_timeout;
    server_ = std::make_unique<Server>(io_.get_executor(), options);
    ASSERT_THAT(server_->AddService(service_), IsOk());
    absl::StatusOr<Endpoint> endpoint = server_->Listen(uri);
    ASSERT_THAT(endpoint, IsOk());
    endpoint_ = *endpoint;
  }

  // "127.0.0.1:PORT" of the server.
  std::string ServerHostPort() const {
    return endpoint_.address.substr(0, endpoint_.address.find('?'));
  }

  absl::StatusOr<std::string> Call(std::string uri, transport::TlsOptions tls,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
    ChannelOptions options;
    options.tls = std::move(tls);
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io_.get_executor(), uri, options);
    if (!channel.ok()) return channel.status();
    CallOptions call;
    call.timeout = timeout;
    return RunCoro(io_, (*channel)->Call(kWhoAmI, "", call));
  }

  static transport::TlsOptions ServerIdentity(bool require_client = false) {
    return transport::TlsOptions{.certificate_pem = Certs().server.certificate,
                                 .private_key_pem = Certs().server.private_key,
                                 .ca_pem = require_client ? Certs().ca.certificate : "",
                                 .require_client_certificate = require_client};
  }
  static transport::TlsOptions Trusting(const Pem& ca, const Pem* identity = nullptr) {
    transport::TlsOptions tls{.ca_pem = ca.certificate};
    if (identity != nullptr) {
      tls.certificate_pem = identity->certificate;
      tls.private_key_pem = identity->private_key;
    }
    return tls;
  }

  LogCapture logs_;
  GenericService service_;
  asio::io_context io_;
  std::unique_ptr<Server> server_;
  Endpoint endpoint_;
};

TEST_F(TlsCallTest, MutualTlsHandlerSeesTheClientsSubjectAndNames) {
  StartServer(ServerIdentity(/*require_client=*/true));
  absl::StatusOr<std::string> who =
      Call(absl::StrCat("tls://", ServerHostPort()), Trusting(Certs().ca, &Certs().client));
  ASSERT_THAT(who, IsOk());
  EXPECT_EQ(*who, "CN=billing,O=acme | DNS:billing.acme.internal | courier/1");
}

TEST_F(TlsCallTest, WithoutClientAuthTheHandlerSeesNoCertificate) {
  StartServer(ServerIdentity());
  absl::StatusOr<std::string> who =
      Call(absl::StrCat("tls://", ServerHostPort()), Trusting(Certs().ca));
  ASSERT_THAT(who, IsOk());
  EXPECT_EQ(*who, "(none) |  | courier/1");
}

TEST_F(TlsCallTest, OptionsCanAllComeFromTheUri) {
  // Files in a private directory, named in both URIs; no TlsOptions at all.
  std::string dir = ::testing::TempDir() + "tls_call_test";
  std::filesystem::create_directories(dir);
  ASSERT_THAT(transport::tls::WritePrivateFile(dir + "/ca.pem", Certs().ca.certificate), IsOk());
  ASSERT_THAT(transport::tls::WritePrivateFile(dir + "/server.pem", Certs().server.certificate),
              IsOk());
  ASSERT_THAT(transport::tls::WritePrivateFile(dir + "/server.key", Certs().server.private_key),
              IsOk());
  ASSERT_THAT(transport::tls::WritePrivateFile(dir + "/client.pem", Certs().client.certificate),
              IsOk());
  ASSERT_THAT(transport::tls::WritePrivateFile(dir + "/client.key", Certs().client.private_key),
              IsOk());
  StartServer({}, absl::StrCat("tls://127.0.0.1:0?cert=", dir, "/server.pem&key=", dir,
                               "/server.key&ca=", dir, "/ca.pem&client_auth=require"));
  absl::StatusOr<std::string> who =
      Call(absl::StrCat("tls://", ServerHostPort(), "?ca=", dir, "/ca.pem&cert=", dir,
                        "/client.pem&key=", dir, "/client.key&server_name=localhost"),
           {});
  ASSERT_THAT(who, IsOk());
  EXPECT_THAT(*who, HasSubstr("CN=billing,O=acme"));
}

TEST_F(TlsCallTest, ServerFromAnUntrustedCaFailsUnavailableWithTheReason) {
  StartServer(ServerIdentity());
  absl::StatusOr<std::string> who =
      Call(absl::StrCat("tls://", ServerHostPort()), Trusting(Certs().other_ca));
  EXPECT_THAT(who,
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("certificate verify failed")));
  // The server logs the failed handshake, once.
  ASSERT_TRUE(RunUntil(io_, [&] { return !logs_.Matching("tls handshake with").empty(); }));
  EXPECT_EQ(logs_.Matching("tls handshake with").size(), 1u);
}

TEST_F(TlsCallTest, MissingOrUntrustedClientCertificateIsRefused) {
  StartServer(ServerIdentity(/*require_client=*/true));
  absl::StatusOr<std::string> missing =
      Call(absl::StrCat("tls://", ServerHostPort()), Trusting(Certs().ca));
  EXPECT_THAT(missing, StatusIs(absl::StatusCode::kUnavailable));
  absl::StatusOr<std::string> stranger =
      Call(absl::StrCat("tls://", ServerHostPort()), Trusting(Certs().ca, &Certs().stranger));
  EXPECT_THAT(stranger, StatusIs(absl::StatusCode::kUnavailable));
  ASSERT_TRUE(RunUntil(io_, [&] { return logs_.Matching("tls handshake with").size() >= 2; }));
  EXPECT_THAT(absl::StrJoin(logs_.Matching("tls handshake with"), "\n"),
              HasSubstr("peer did not return a certificate"));
  EXPECT_THAT(absl::StrJoin(logs_.Matching("tls handshake with"), "\n"),
              HasSubstr("certificate verify failed"));
}

TEST_F(TlsCallTest, PlaintextChannelToATlsServerFailsFastNotAtTheDeadline) {
  StartServer(ServerIdentity());
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<std::string> who =
      Call(absl::StrCat("tcp://", ServerHostPort()), {}, std::chrono::seconds(30));
  EXPECT_THAT(who, StatusIs(absl::StatusCode::kUnavailable));
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(20));
  ASSERT_TRUE(RunUntil(io_, [&] { return !logs_.Matching("does not speak TLS").empty(); }));
}

TEST_F(TlsCallTest, TlsChannelToAPlaintextServerSaysSo) {
  server_ = std::make_unique<Server>(io_.get_executor());
  ASSERT_THAT(server_->AddService(service_), IsOk());
  absl::StatusOr<Endpoint> plain = server_->Listen("tcp://127.0.0.1:0");
  ASSERT_THAT(plain, IsOk());
  absl::StatusOr<std::string> who =
      Call(absl::StrCat("tls://", plain->address), Trusting(Certs().ca));
  EXPECT_THAT(who, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("does not speak TLS")));
  // And the plain server's log says what came in.
  EXPECT_TRUE(RunUntil(io_, [&] { return !logs_.Matching("sent a TLS handshake record").empty(); }))
      << "no log line names the TLS client";
}

TEST_F(TlsCallTest, StalledHandshakeIsClosedAtTheServersHandshakeTimeout) {
  StartServer(ServerIdentity(), "tls://127.0.0.1:0", std::chrono::milliseconds(300));
  asio::ip::tcp::socket socket(io_);
  absl::StatusOr<courier::HostPort> host_port = SplitHostPort(ServerHostPort());
  ASSERT_THAT(host_port, IsOk());
  socket.connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"),
                                         static_cast<unsigned short>(std::stoi(host_port->port))));
  asio::write(socket, asio::buffer(std::string("\x16\x03\x01\x02\x00", 5)));
  ASSERT_TRUE(RunUntil(io_, [&] { return !logs_.Matching("did not finish in time").empty(); }));
  // And calls from good clients go on meanwhile.
  EXPECT_THAT(Call(absl::StrCat("tls://", ServerHostPort()), Trusting(Certs().ca)), IsOk());
}

}  // namespace
}  // namespace courier
