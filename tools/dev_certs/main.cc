// courier-dev-certs DIR [NAME...]: writes a private CA and certificates it signs into DIR, for
// trying tls:// and mutual TLS on one machine (the README's commands use it):
//   ca.pem                      the CA certificate (what clients and servers trust)
//   server.pem, server.key      for localhost, 127.0.0.1, ::1 and every NAME given
//   client.pem, client.key      CN=courier-client, for mutual TLS
// Keys are ECDSA P-256, valid for 30 days, files mode 0600. Not for production identities.
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "transport/tls/dev_cert.h"

namespace {

using courier::transport::tls::CertificateSpec;
using courier::transport::tls::Pem;

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "courier-dev-certs: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') {
    std::fprintf(stderr, "usage: courier-dev-certs DIR [EXTRA_SERVER_NAME...]\n");
    return 2;
  }
  const std::string dir = argv[1];
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Fail(absl::InternalError(absl::StrCat("mkdir ", dir, ": ", std::strerror(errno))));
  }
  const auto valid_until = std::chrono::system_clock::now() + std::chrono::hours(24 * 30);
  absl::StatusOr<Pem> ca =
      courier::transport::tls::MakeCa("courier dev CA", std::chrono::hours(24 * 30));
  if (!ca.ok()) return Fail(ca.status());

  CertificateSpec server;
  server.common_name = "localhost";
  server.organization = "courier dev";
  server.dns_names = {"localhost"};
  server.ip_addresses = {"127.0.0.1", "::1"};
  for (int i = 2; i < argc; ++i) server.dns_names.push_back(argv[i]);
  server.not_after = valid_until;
  server.client_auth = false;
  absl::StatusOr<Pem> server_pem = courier::transport::tls::MakeCertificate(server, &*ca);
  if (!server_pem.ok()) return Fail(server_pem.status());

  CertificateSpec client;
  client.common_name = "courier-client";
  client.organization = "courier dev";
  client.not_after = valid_until;
  client.server_auth = false;
  absl::StatusOr<Pem> client_pem = courier::transport::tls::MakeCertificate(client, &*ca);
  if (!client_pem.ok()) return Fail(client_pem.status());

  const std::vector<std::pair<std::string, const std::string*>> files = {
      {"ca.pem", &ca->certificate},
      {"server.pem", &server_pem->certificate},
      {"server.key", &server_pem->private_key},
      {"client.pem", &client_pem->certificate},
      {"client.key", &client_pem->private_key}};
  for (const auto& [name, text] : files) {
    absl::Status written = courier::transport::tls::WritePrivateFile(dir + "/" + name, *text);
    if (!written.ok()) return Fail(written);
  }
  std::printf("wrote %s/{ca.pem,server.pem,server.key,client.pem,client.key}\n", dir.c_str());
  return 0;
}
