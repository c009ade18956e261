// Certificates made on the spot, for development, tests and benchmarks: a private CA, leaf
// certificates it signs (for servers and clients, with any names and validity), and the files
// tls://'s loopback endpoint uses. Keys are ECDSA P-256, signatures SHA-256. Nothing here is
// for production identities: the keys live in memory and in files of this process's user.
#pragma once

#include <chrono>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace courier::transport::tls {

// A certificate and its private key, both PEM.
struct Pem {
  std::string certificate;
  std::string private_key;
};

struct CertificateSpec {
  std::string common_name = "courier";
  std::string organization;  // O=, if not empty
  std::vector<std::string> dns_names;
  std::vector<std::string> ip_addresses;  // "127.0.0.1", "::1"
  // Validity; the defaults are an hour ago to a day from now.
  std::chrono::system_clock::time_point not_before =
      std::chrono::system_clock::now() - std::chrono::hours(1);
  std::chrono::system_clock::time_point not_after =
      std::chrono::system_clock::now() + std::chrono::hours(24);
  bool is_ca = false;
  // extendedKeyUsage of a leaf: serverAuth and/or clientAuth (a CA gets none).
  bool server_auth = true;
  bool client_auth = true;
};

// A new key and a certificate for `spec`, signed by `issuer` (a CA's Pem), or self-signed when
// `issuer` is null. kInternal if OpenSSL fails (its reason in the message).
absl::StatusOr<Pem> MakeCertificate(const CertificateSpec& spec, const Pem* issuer = nullptr);

// A CA named `common_name`, valid from an hour ago for `valid_for`.
absl::StatusOr<Pem> MakeCa(const std::string& common_name,
                           std::chrono::hours valid_for = std::chrono::hours(24 * 365));

// The files of this process's loopback identity, made once per process on first use in a
// fresh 0700 directory (removed at exit): a CA, and a leaf it signs for "localhost",
// 127.0.0.1 and ::1 that serves as both server and client certificate.
struct LoopbackFiles {
  std::string directory;
  std::string ca_file;
  std::string certificate_file;
  std::string private_key_file;
};
absl::StatusOr<LoopbackFiles> GetLoopbackFiles();

// Writes `contents` to `path` with mode 0600 (replacing it). kInternal naming the path on error.
absl::Status WritePrivateFile(const std::string& path, const std::string& contents);

}  // namespace courier::transport::tls
