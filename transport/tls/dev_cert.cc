#include "transport/tls/dev_cert.h"

#include <fcntl.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "transport/tls/openssl_errors.h"

namespace courier::transport::tls {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
  void operator()(X509_NAME* p) const { X509_NAME_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};
template <typename T>
using Owned = std::unique_ptr<T, Free>;

// kInternal with `what` and the reasons OpenSSL queued (which this clears).
absl::Status OpenSslError(absl::string_view what) {
  const std::string reasons = OpenSslReasons();
  return absl::InternalError(
      absl::StrCat("dev certificate: ", what, ": ", reasons.empty() ? "no reason given" : reasons));
}

std::string ToPem(X509* cert) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_X509(bio.get(), cert);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

std::string ToPem(EVP_PKEY* key) {
  Owned<BIO> bio(BIO_new(BIO_s_mem()));
  PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(n));
}

// Adds extension `nid` with the config-style `value` ("critical,CA:TRUE"), in the context of
// `issuer` signing `cert`.
bool AddExtension(X509* cert, X509* issuer, int nid, const std::string& value) {
  X509V3_CTX ctx;
  X509V3_set_ctx_nodb(&ctx);
  X509V3_set_ctx(&ctx, issuer, cert, nullptr, nullptr, 0);
  Owned<X509_EXTENSION> ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value.c_str()));
  return ext != nullptr && X509_add_ext(cert, ext.get(), -1) == 1;
}

bool SetTime(ASN1_TIME* field, std::chrono::system_clock::time_point when) {
  return ASN1_TIME_set(field, std::chrono::system_clock::to_time_t(when)) != nullptr;
}

}  // namespace

absl::StatusOr<Pem> MakeCertificate(const CertificateSpec& spec, const Pem* issuer) {
  Owned<EVP_PKEY> key(EVP_EC_gen("P-256"));
  if (!key) return OpenSslError("key");
  Owned<X509> cert(X509_new());
  if (!cert || X509_set_version(cert.get(), 2) != 1) return OpenSslError("certificate");

  // A random 64-bit positive serial, so that no two certificates of one CA collide.
  unsigned char serial_bytes[8];
  if (RAND_bytes(serial_bytes, sizeof(serial_bytes)) != 1) return OpenSslError("serial");
  serial_bytes[0] &= 0x7f;
  BIGNUM* serial = BN_bin2bn(serial_bytes, sizeof(serial_bytes), nullptr);
  bool serial_ok =
      serial != nullptr && BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert.get())) != nullptr;
  BN_free(serial);
  if (!serial_ok) return OpenSslError("serial");

  if (!SetTime(X509_getm_notBefore(cert.get()), spec.not_before) ||
      !SetTime(X509_getm_notAfter(cert.get()), spec.not_after)) {
    return OpenSslError("validity");
  }
  X509_NAME* subject = X509_get_subject_name(cert.get());
  auto add_entry = [&](const char* field, const std::string& value) {
    return X509_NAME_add_entry_by_txt(subject, field, MBSTRING_UTF8,
                                      reinterpret_cast<const unsigned char*>(value.c_str()), -1, -1,
                                      0) == 1;
  };
  if (!spec.organization.empty() && !add_entry("O", spec.organization)) {
    return OpenSslError("subject");
  }
  if (!add_entry("CN", spec.common_name)) return OpenSslError("subject");
  if (X509_set_pubkey(cert.get(), key.get()) != 1) return OpenSslError("public key");

  // The signer: the issuer's key and name, or our own.
  Owned<X509> issuer_cert;
  Owned<EVP_PKEY> issuer_key;
  if (issuer != nullptr) {
    Owned<BIO> cert_bio(
        BIO_new_mem_buf(issuer->certificate.data(), static_cast<int>(issuer->certificate.size())));
    issuer_cert.reset(PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr));
    Owned<BIO> key_bio(
        BIO_new_mem_buf(issuer->private_key.data(), static_cast<int>(issuer->private_key.size())));
    issuer_key.reset(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
    if (!issuer_cert || !issuer_key) return OpenSslError("issuer");
  }
  X509* signer_cert = issuer_cert ? issuer_cert.get() : cert.get();
  EVP_PKEY* signer_key = issuer_key ? issuer_key.get() : key.get();
  if (X509_set_issuer_name(cert.get(), X509_get_subject_name(signer_cert)) != 1) {
    return OpenSslError("issuer name");
  }

  bool ok = AddExtension(cert.get(), signer_cert, NID_subject_key_identifier, "hash") &&
            AddExtension(cert.get(), signer_cert, NID_authority_key_identifier, "keyid:always");
  if (spec.is_ca) {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_basic_constraints, "critical,CA:TRUE") &&
         AddExtension(cert.get(), signer_cert, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    ok = ok && AddExtension(cert.get(), signer_cert, NID_basic_constraints, "critical,CA:FALSE") &&
         AddExtension(cert.get(), signer_cert, NID_key_usage, "critical,digitalSignature");
    std::vector<std::string> usages;
    if (spec.server_auth) usages.push_back("serverAuth");
    if (spec.client_auth) usages.push_back("clientAuth");
    if (!usages.empty()) {
      ok = ok &&
           AddExtension(cert.get(), signer_cert, NID_ext_key_usage, absl::StrJoin(usages, ","));
    }
  }
  std::vector<std::string> names;
  for (const std::string& dns : spec.dns_names) names.push_back(absl::StrCat("DNS:", dns));
  for (const std::string& ip : spec.ip_addresses) names.push_back(absl::StrCat("IP:", ip));
  if (!names.empty()) {
    ok = ok &&
         AddExtension(cert.get(), signer_cert, NID_subject_alt_name, absl::StrJoin(names, ","));
  }
  if (!ok) return OpenSslError("extensions");
  if (X509_sign(cert.get(), signer_key, EVP_sha256()) == 0) return OpenSslError("signature");
  return Pem{.certificate = ToPem(cert.get()), .private_key = ToPem(key.get())};
}

absl::StatusOr<Pem> MakeCa(const std::string& common_name, std::chrono::hours valid_for) {
  CertificateSpec spec;
  spec.common_name = common_name;
  spec.is_ca = true;
  spec.not_after = std::chrono::system_clock::now() + valid_for;
  return MakeCertificate(spec);
}

absl::Status WritePrivateFile(const std::string& path, const std::string& contents) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(errno)));
  }
  size_t done = 0;
  while (done < contents.size()) {
    ssize_t n = ::write(fd, contents.data() + done, contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int error = errno;
      ::close(fd);
      return absl::InternalError(absl::StrCat("write ", path, ": ", std::strerror(error)));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return absl::OkStatus();
}

namespace {

// Removes the loopback directory when the process that made it exits normally (not a forked
// child of it, which shares the static but not the ownership).
struct LoopbackDirectory {
  LoopbackFiles files;
  pid_t owner = ::getpid();
  ~LoopbackDirectory() {
    if (files.directory.empty() || ::getpid() != owner) return;
    std::error_code ignored;
    std::filesystem::remove_all(files.directory, ignored);
  }
};

absl::StatusOr<LoopbackFiles> MakeLoopbackFiles() {
  absl::StatusOr<Pem> ca = MakeCa("courier loopback CA");
  if (!ca.ok()) return ca.status();
  CertificateSpec leaf;
  leaf.common_name = "localhost";
  leaf.organization = "courier loopback";
  leaf.dns_names = {"localhost"};
  leaf.ip_addresses = {"127.0.0.1", "::1"};
  absl::StatusOr<Pem> cert = MakeCertificate(leaf, &*ca);
  if (!cert.ok()) return cert.status();

  const char* tmp = std::getenv("TMPDIR");
  std::string pattern =
      absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/courier-tls-XXXXXX");
  if (::mkdtemp(pattern.data()) == nullptr) {  // mode 0700
    return absl::InternalError(absl::StrCat("mkdtemp ", pattern, ": ", std::strerror(errno)));
  }
  LoopbackFiles files{.directory = pattern,
                      .ca_file = pattern + "/ca.pem",
                      .certificate_file = pattern + "/cert.pem",
                      .private_key_file = pattern + "/key.pem"};
  for (auto [path, text] : {std::pair{&files.ca_file, &ca->certificate},
                            std::pair{&files.certificate_file, &cert->certificate},
                            std::pair{&files.private_key_file, &cert->private_key}}) {
    if (absl::Status written = WritePrivateFile(*path, *text); !written.ok()) {
      std::error_code ignored;
      std::filesystem::remove_all(files.directory, ignored);
      return written;
    }
  }
  return files;
}

}  // namespace

absl::StatusOr<LoopbackFiles> GetLoopbackFiles() {
  static std::mutex mutex;
  static LoopbackDirectory* made = nullptr;
  static absl::Status failure = absl::OkStatus();
  std::lock_guard lock(mutex);
  if (made != nullptr) return made->files;
  if (!failure.ok()) return failure;
  absl::StatusOr<LoopbackFiles> files = MakeLoopbackFiles();
  if (!files.ok()) {
    failure = files.status();
    return failure;
  }
  static LoopbackDirectory directory{*files};
  made = &directory;
  return made->files;
}

}  // namespace courier::transport::tls
