#include "transport/tls/tls_transport.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/error.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/ip/tcp.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "transport/endpoint.h"
#include "transport/internal/fd_stream.h"
#include "transport/internal/socket_connection.h"
#include "transport/internal/tcp_socket.h"
#include "transport/status.h"
#include "transport/tls/dev_cert.h"
#include "transport/tls/openssl_errors.h"

namespace courier::transport::tls {
namespace {

using asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using internal::use_nothrow;

// The largest plaintext of one TLS record: each SSL_write of at most this is one record.
constexpr size_t kRecordPlaintext = 16 * 1024;
// ALPN's wire form: a length byte, then the name.
const std::string kAlpnWire =
    absl::StrCat(std::string(1, static_cast<char>(kAlpn.size())), AsAbsl(kAlpn));

struct SslCtxFree {
  void operator()(SSL_CTX* ctx) const { SSL_CTX_free(ctx); }
};
struct SslFree {
  void operator()(SSL* ssl) const { SSL_free(ssl); }
};
using SslContext = std::shared_ptr<SSL_CTX>;

// --- Address and options ---------------------------------------------------------------------

struct TlsAddress {
  std::string host_port;  // without the query
  std::string host;       // of host_port, without brackets
  std::string query;      // as given, without '?'
  TlsOptions options;     // the caller's, with the query's overrides
};

// %XX decoding of a query value; nullopt for a malformed escape.
std::optional<std::string> PercentDecode(absl::string_view text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out.push_back(text[i]);
      continue;
    }
    if (i + 2 >= text.size()) return std::nullopt;
    auto hex = [](char c) -> int {
      if (c >= '0' && c <= '9') return c - '0';
      if (c >= 'a' && c <= 'f') return c - 'a' + 10;
      if (c >= 'A' && c <= 'F') return c - 'A' + 10;
      return -1;
    };
    int high = hex(text[i + 1]), low = hex(text[i + 2]);
    if (high < 0 || low < 0) return std::nullopt;
    out.push_back(static_cast<char>(high * 16 + low));
    i += 2;
  }
  return out;
}

absl::Status BadAddress(std::string_view address, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat("tls address '", AsAbsl(address), "': ", why));
}

absl::StatusOr<TlsAddress> ParseAddress(std::string_view address, const TlsOptions& defaults) {
  TlsAddress out;
  out.options = defaults;
  std::string_view host_port = address;
  if (size_t q = address.find('?'); q != std::string_view::npos) {
    host_port = address.substr(0, q);
    out.query = std::string(address.substr(q + 1));
  }
  out.host_port = std::string(host_port);
  absl::StatusOr<HostPort> split = SplitHostPort(host_port);
  if (!split.ok()) return BadAddress(address, split.status().message());
  out.host = split->host;
  for (absl::string_view option : absl::StrSplit(out.query, '&', absl::SkipEmpty())) {
    std::pair<absl::string_view, absl::string_view> kv = absl::StrSplit(option, '=');
    std::optional<std::string> value = PercentDecode(kv.second);
    if (!value) return BadAddress(address, absl::StrCat("bad %-escape in '", option, "'"));
    if (value->empty()) return BadAddress(address, absl::StrCat("empty value for ", kv.first));
    if (kv.first == "cert") {
      out.options.certificate_file = *value;
      out.options.certificate_pem.clear();
    } else if (kv.first == "key") {
      out.options.private_key_file = *value;
      out.options.private_key_pem.clear();
    } else if (kv.first == "ca") {
      out.options.ca_file = *value;
      out.options.ca_pem.clear();
    } else if (kv.first == "server_name") {
      out.options.server_name = *value;
    } else if (kv.first == "client_auth") {
      if (*value != "require" && *value != "none") {
        return BadAddress(address, "client_auth is require or none");
      }
      out.options.require_client_certificate = *value == "require";
    } else {
      return BadAddress(address,
                        absl::StrCat("unknown option '", kv.first,
                                     "' (known: cert, key, ca, server_name, client_auth)"));
    }
  }
  return out;
}

// --- Contexts ----------------------------------------------------------------------------------

// Loads PEM text (or, if it is empty, the file) with `load_text` / `load_file`.
absl::Status LoadPem(const std::string& pem, const std::string& file, const char* role,
                     const std::string& what, const auto& load_text, const auto& load_file) {
  ERR_clear_error();
  bool ok = !pem.empty() ? load_text(pem) : load_file(file);
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": cannot load the ", role,
                                                 pem.empty() ? absl::StrCat(" ", file) : "", ": ",
                                                 OpenSslReasons()));
}

// Reads every certificate of a PEM text into the context's trust store.
bool AddCaText(SSL_CTX* ctx, const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return false;
  X509_STORE* store = SSL_CTX_get_cert_store(ctx);
  int added = 0;
  while (X509* cert = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) {
    if (X509_STORE_add_cert(store, cert) == 1) ++added;
    X509_free(cert);
  }
  BIO_free(bio);
  ERR_clear_error();  // the end of the text reads as an error
  return added > 0;
}

bool UseChainText(SSL_CTX* ctx, const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return false;
  X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  bool ok = leaf != nullptr && SSL_CTX_use_certificate(ctx, leaf) == 1;
  X509_free(leaf);
  while (ok) {
    X509* extra = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
    if (extra == nullptr) break;
    if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
      X509_free(extra);
      ok = false;
    }
  }
  BIO_free(bio);
  if (ok) ERR_clear_error();
  return ok;
}

bool UseKeyText(SSL_CTX* ctx, const std::string& pem) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (bio == nullptr) return false;
  EVP_PKEY* key = PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr);
  bool ok = key != nullptr && SSL_CTX_use_PrivateKey(ctx, key) == 1;
  EVP_PKEY_free(key);
  BIO_free(bio);
  return ok;
}

// The server's ALPN choice: courier/1 if the client offers it; a client that offers only other
// protocols is refused (no_application_protocol); one that offers none is served.
int SelectAlpn(SSL*, const unsigned char** out, unsigned char* out_length,
               const unsigned char* offered, unsigned int offered_length, void*) {
  unsigned char* chosen = nullptr;
  int result = SSL_select_next_proto(
      &chosen, out_length, reinterpret_cast<const unsigned char*>(kAlpnWire.data()),
      static_cast<unsigned>(kAlpnWire.size()), offered, offered_length);
  if (result != OPENSSL_NPN_NEGOTIATED) return SSL_TLSEXT_ERR_ALERT_FATAL;
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

absl::StatusOr<SslContext> MakeContext(const TlsOptions& options, bool server,
                                       const std::string& what) {
  ERR_clear_error();
  SslContext ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()), SslCtxFree());
  if (!ctx) return absl::InternalError(absl::StrCat(what, ": ", OpenSslReasons()));
  SSL_CTX* c = ctx.get();
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  // No renegotiation (a peer could make us redo handshakes), and an EOF without close_notify
  // reads as end of stream: the framing layer sees a frame cut short on its own.
  SSL_CTX_set_options(c, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF);
  SSL_CTX_set_mode(c, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Read what the socket has, not one record header and then its body: two read() calls per
  // record otherwise, and at many calls in flight every frame is a record of its own.
  SSL_CTX_set_read_ahead(c, 1);

  const bool has_cert = !options.certificate_pem.empty() || !options.certificate_file.empty();
  const bool has_key = !options.private_key_pem.empty() || !options.private_key_file.empty();
  if (server && (!has_cert || !has_key)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what,
                     ": a tls:// server needs a certificate and its key (cert=FILE&key=FILE, or "
                     "TlsOptions)"));
  }
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": a certificate needs its key, and a key its certificate"));
  }
  if (has_cert) {
    absl::Status cert = LoadPem(
        options.certificate_pem, options.certificate_file, "certificate", what,
        [&](const std::string& pem) { return UseChainText(c, pem); },
        [&](const std::string& file) {
          return SSL_CTX_use_certificate_chain_file(c, file.c_str()) == 1;
        });
    if (!cert.ok()) return cert;
    absl::Status key = LoadPem(
        options.private_key_pem, options.private_key_file, "private key", what,
        [&](const std::string& pem) { return UseKeyText(c, pem); },
        [&](const std::string& file) {
          return SSL_CTX_use_PrivateKey_file(c, file.c_str(), SSL_FILETYPE_PEM) == 1;
        });
    if (!key.ok()) return key;
    if (SSL_CTX_check_private_key(c) != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": the private key does not match the certificate: ", OpenSslReasons()));
    }
  }
  const bool has_ca = !options.ca_pem.empty() || !options.ca_file.empty();
  if (has_ca) {
    absl::Status ca = LoadPem(
        options.ca_pem, options.ca_file, "CA certificates", what,
        [&](const std::string& pem) { return AddCaText(c, pem); },
        [&](const std::string& file) {
          return SSL_CTX_load_verify_locations(c, file.c_str(), nullptr) == 1;
        });
    if (!ca.ok()) return ca;
  }
  if (has_cert) {
    STACK_OF(X509)* chain = nullptr;
    SSL_CTX_get0_chain_certs(c, &chain);
    if (chain == nullptr || sk_X509_num(chain) == 0) {
      // A certificate file with no chain of its own: OpenSSL would build the chain it sends
      // from the trust store on every handshake (a verification each time, a quarter of a
      // server's handshake). Built once here instead, without the root; the same chain.
      if (SSL_CTX_build_cert_chain(c, SSL_BUILD_CHAIN_FLAG_NO_ROOT |
                                          SSL_BUILD_CHAIN_FLAG_IGNORE_ERROR |
                                          SSL_BUILD_CHAIN_FLAG_CLEAR_ERROR) > 0) {
        SSL_CTX_set_mode(c, SSL_MODE_NO_AUTO_CHAIN);
      }
      ERR_clear_error();
    }
  }
  if (server) {
    if (options.require_client_certificate) {
      if (!has_ca) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, ": client_auth=require needs the CAs that vouch for clients (ca=FILE)"));
      }
      SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    } else {
      SSL_CTX_set_verify(c, SSL_VERIFY_NONE, nullptr);
    }
    SSL_CTX_set_alpn_select_cb(c, &SelectAlpn, nullptr);
    // Clients keep no sessions to resume: tickets would be bytes and work for nothing.
    SSL_CTX_set_num_tickets(c, 0);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  } else {
    if (!has_ca && SSL_CTX_set_default_verify_paths(c) != 1) {
      return absl::InternalError(
          absl::StrCat(what, ": cannot load the system's CA store: ", OpenSslReasons()));
    }
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_alpn_protos(c, reinterpret_cast<const unsigned char*>(kAlpnWire.data()),
                            static_cast<unsigned>(kAlpnWire.size()));
  }
  ERR_clear_error();
  return ctx;
}

// The client contexts of the process, one per TLS setting, shared by every channel and
// connection that uses it: making one (OpenSSL 3's SSL_CTX_new, the CA file parsed into a
// store, the certificate and key) costs more CPU than the handshake's own cryptography. A file
// counts by its path and by its inode, size and modification time, so an edited file is read
// again; the system's store is read once. At most kMaxClientContexts; the oldest goes first.
// Never destroyed: a context freed after OpenSSL's clean-up at exit would touch freed state.
class ClientContexts {
 public:
  static ClientContexts& Get() {
    static ClientContexts* const contexts = new ClientContexts;
    return *contexts;
  }

  absl::StatusOr<SslContext> For(const TlsOptions& options, const std::string& what) {
    std::optional<std::string> key = Key(options);
    if (key) {
      std::lock_guard lock(mu_);
      for (const auto& [k, ctx] : entries_) {
        if (k == *key) return ctx;
      }
    }
    absl::StatusOr<SslContext> ctx = MakeContext(options, /*server=*/false, what);
    if (!ctx.ok() || !key) return ctx;  // a file that cannot be read: MakeContext says why
    std::lock_guard lock(mu_);
    if (entries_.size() >= kMaxClientContexts) entries_.pop_front();
    entries_.emplace_back(*std::move(key), *ctx);
    return ctx;
  }

 private:
  static constexpr size_t kMaxClientContexts = 16;

  // Everything MakeContext reads for a client; nullopt when a file cannot be looked at.
  static std::optional<std::string> Key(const TlsOptions& options) {
    std::string key;
    for (const std::string* file :
         {&options.ca_file, &options.certificate_file, &options.private_key_file}) {
      struct stat st {};
      if (!file->empty() && ::stat(file->c_str(), &st) != 0) return std::nullopt;
      absl::StrAppend(&key, file->size(), ":", *file, ":", st.st_dev, ":", st.st_ino, ":",
                      st.st_size, ":", st.st_mtim.tv_sec, ".", st.st_mtim.tv_nsec, "|");
    }
    // PEM texts by their digest: the cache keeps no copy of a private key. (Most settings have
    // none: files, or the system's store.)
    for (const std::string* pem :
         {&options.ca_pem, &options.certificate_pem, &options.private_key_pem}) {
      if (pem->empty()) {
        key.append("0|");
        continue;
      }
      unsigned char digest[EVP_MAX_MD_SIZE];
      unsigned int length = 0;
      if (EVP_Digest(pem->data(), pem->size(), digest, &length, EVP_sha256(), nullptr) != 1) {
        return std::nullopt;
      }
      key.push_back('1');
      key.append(reinterpret_cast<const char*>(digest), length);
      key.push_back('|');
    }
    return key;
  }

  std::mutex mu_;
  std::deque<std::pair<std::string, SslContext>> entries_;
};

// --- Peer info ---------------------------------------------------------------------------------

std::string NameToString(X509_NAME* name) {
  BIO* bio = BIO_new(BIO_s_mem());
  X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<size_t>(n));
  BIO_free(bio);
  return out;
}

std::vector<std::string> AltNames(X509* cert) {
  std::vector<std::string> out;
  auto* names =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (names == nullptr) return out;
  for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
    auto text = [](ASN1_STRING* s) {
      return std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                         static_cast<size_t>(ASN1_STRING_length(s)));
    };
    switch (name->type) {
      case GEN_DNS:
        out.push_back(absl::StrCat("DNS:", text(name->d.dNSName)));
        break;
      case GEN_URI:
        out.push_back(absl::StrCat("URI:", text(name->d.uniformResourceIdentifier)));
        break;
      case GEN_EMAIL:
        out.push_back(absl::StrCat("email:", text(name->d.rfc822Name)));
        break;
      case GEN_IPADD: {
        const ASN1_OCTET_STRING* ip = name->d.iPAddress;
        char buffer[INET6_ADDRSTRLEN] = {};
        int family = ip->length == 4 ? AF_INET : ip->length == 16 ? AF_INET6 : 0;
        if (family != 0 && ::inet_ntop(family, ip->data, buffer, sizeof(buffer)) != nullptr) {
          out.push_back(absl::StrCat("IP:", buffer));
        }
        break;
      }
      default:
        break;
    }
  }
  GENERAL_NAMES_free(names);
  return out;
}

TlsPeer PeerOf(SSL* ssl) {
  TlsPeer peer;
  peer.version = SSL_get_version(ssl);
  if (const char* cipher = SSL_get_cipher_name(ssl)) peer.cipher = cipher;
  const unsigned char* alpn = nullptr;
  unsigned alpn_length = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_length);
  peer.alpn.assign(reinterpret_cast<const char*>(alpn), alpn_length);
  if (X509* cert = SSL_get0_peer_certificate(ssl)) {
    peer.peer_certificate = true;
    peer.subject = NameToString(X509_get_subject_name(cert));
    peer.subject_alt_names = AltNames(cert);
  }
  return peer;
}

// --- The handshake -----------------------------------------------------------------------------

// What a failed SSL call means, with a hint when the peer plainly does not speak TLS.
std::string FailureReason(SSL* ssl, int ssl_error, int saved_errno) {
  unsigned long first = ERR_peek_error();
  std::string reason = OpenSslReasons();
  if (long verify = SSL_get_verify_result(ssl); verify != X509_V_OK) {
    absl::StrAppend(&reason, ": ", X509_verify_cert_error_string(verify));
  }
  if (reason.empty()) {
    if (ssl_error == SSL_ERROR_SYSCALL && saved_errno != 0) {
      reason = std::strerror(saved_errno);
    } else if (ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN) {
      reason = "the peer closed the connection";
    } else {
      reason = absl::StrCat("SSL error ", ssl_error);
    }
  }
  if (ERR_GET_LIB(first) == ERR_LIB_SSL) {
    int code = ERR_GET_REASON(first);
    if (code == SSL_R_WRONG_VERSION_NUMBER || code == SSL_R_PACKET_LENGTH_TOO_LONG ||
        code == SSL_R_HTTP_REQUEST || code == SSL_R_UNKNOWN_PROTOCOL) {
      absl::StrAppend(&reason, " (the peer does not speak TLS: a plain tcp:// endpoint?)");
    }
  }
  return reason;
}

// Waits until `socket` is ready for `wait` or `deadline` passes: false on timeout or error.
asio::awaitable<bool> WaitReady(tcp::socket& socket, tcp::socket::wait_type wait,
                                Clock::time_point deadline) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(socket.get_executor(), deadline);
  auto result = co_await (socket.async_wait(wait, use_nothrow) || timer.async_wait(use_nothrow));
  if (result.index() != 0) co_return false;
  auto [ec] = std::get<0>(result);
  co_return !ec;
}

// Runs SSL_do_handshake on `ssl` (set up over `socket`'s descriptor) until it finishes, fails
// or `deadline` passes. kUnavailable "what: reason" on failure, kDeadlineExceeded on timeout.
asio::awaitable<absl::Status> Handshake(tcp::socket& socket, SSL* ssl, Clock::time_point deadline,
                                        const std::string& what) {
  for (;;) {
    ERR_clear_error();
    errno = 0;
    int result = SSL_do_handshake(ssl);
    if (result == 1) break;
    int error = SSL_get_error(ssl, result);
    int saved_errno = errno;
    if (error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE) {
      bool ready = co_await WaitReady(
          socket, error == SSL_ERROR_WANT_READ ? tcp::socket::wait_read : tcp::socket::wait_write,
          deadline);
      if (!ready) {
        if (Clock::now() >= deadline) {
          co_return absl::DeadlineExceededError(
              absl::StrCat(what, ": the handshake did not finish in time"));
        }
        co_return absl::CancelledError(absl::StrCat(what, ": cancelled"));
      }
      continue;
    }
    co_return absl::UnavailableError(
        absl::StrCat(what, ": ", FailureReason(ssl, error, saved_errno)));
  }
  const unsigned char* alpn = nullptr;
  unsigned alpn_length = 0;
  SSL_get0_alpn_selected(ssl, &alpn, &alpn_length);
  if (std::string_view(reinterpret_cast<const char*>(alpn), alpn_length) != kAlpn &&
      !SSL_is_server(ssl)) {
    co_return absl::UnavailableError(absl::StrCat(what,
                                                  ": the server did not choose ALPN protocol ",
                                                  AsAbsl(kAlpn), " (not a courier server?)"));
  }
  co_return absl::OkStatus();
}

// --- The connection ----------------------------------------------------------------------------

// What the connection's operations share; pending waits hold it alive (a handler may run after
// the Connection is gone, with kCancelled).
struct Core {
  Core(tcp::socket s, SSL* handle, PeerInfo p)
      : socket(std::move(s)), ssl(handle), peer(std::move(p)) {}
  ~Core() { SSL_free(ssl); }

  tcp::socket socket;
  SSL* ssl;
  PeerInfo peer;
  bool closed = false;
  std::optional<absl::StatusOr<size_t>> read_end;  // 0 after end of stream, or the read error
  // The write in flight (AsyncWrite), or the one TryWrite could not finish.
  std::vector<asio::const_buffer> pending;
  std::string record;  // the plaintext of the record being written
  // The length of a record SSL_write could not finish (the socket was full); OpenSSL needs the
  // retry to present the same bytes, so the next record is exactly this long. 0: none.
  size_t retry_length = 0;
};

enum class Step { kDone, kWantRead, kWantWrite };

class TlsConnection final : public Connection {
 public:
  explicit TlsConnection(std::shared_ptr<Core> core)
      : core_(std::move(core)), executor_(core_->socket.get_executor()) {}
  ~TlsConnection() override { Close(); }

  void AsyncRead(asio::mutable_buffer into, ReadHandler done) override {
    Core& c = *core_;
    if (c.closed || c.read_end) {
      asio::post(executor_, [result = c.closed ? Closed("read") : *c.read_end,
                             done = std::move(done)]() mutable { done(std::move(result)); });
      return;
    }
    if (into.size() == 0) {
      asio::post(executor_, [done = std::move(done)]() mutable { done(size_t{0}); });
      return;
    }
    ReadStep(core_, into, std::move(done), /*inline_call=*/true);
  }

  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) override {
    std::shared_ptr<Core> core = core_;
    for (;;) {
      if (core->closed) co_return Closed("read");
      if (core->read_end) co_return *core->read_end;
      if (into.size() == 0) co_return size_t{0};
      auto [step, result] = ReadOnce(*core, into);
      if (step == Step::kDone) co_return result;
      auto [ec] = co_await core->socket.async_wait(
          step == Step::kWantRead ? tcp::socket::wait_read : tcp::socket::wait_write, use_nothrow);
      if (core->closed || ec == asio::error::operation_aborted) co_return Closed("read");
    }
  }

  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) override {
    Core& c = *core_;
    if (c.closed) return Closed("write");
    c.pending.assign(data.begin(), data.end());
    size_t total = asio::buffer_size(data);
    absl::StatusOr<Step> step = WriteSome(c);
    if (!step.ok()) return step.status();
    size_t left = asio::buffer_size(c.pending);
    c.pending.clear();
    // A record cut short by a full socket stays in OpenSSL; the AsyncWrite that follows with
    // the rest of `data` starts with the same bytes, which is what OpenSSL needs to finish it.
    return total - left;
  }

  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) override {
    if (core_->closed) {
      asio::post(executor_, [done = std::move(done)]() mutable { done(Closed("write")); });
      return;
    }
    core_->pending.assign(data.begin(), data.end());
    WriteStep(core_, std::move(done), /*inline_call=*/true);
  }

  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) override {
    std::shared_ptr<Core> core = core_;
    if (core->closed) co_return Closed("write");
    core->pending.assign(data.begin(), data.end());
    for (;;) {
      absl::StatusOr<Step> step = WriteSome(*core);
      if (!step.ok()) co_return step.status();
      if (*step == Step::kDone) co_return absl::OkStatus();
      auto [ec] = co_await core->socket.async_wait(
          *step == Step::kWantRead ? tcp::socket::wait_read : tcp::socket::wait_write, use_nothrow);
      if (core->closed || ec == asio::error::operation_aborted) co_return Closed("write");
    }
  }

  // Sends close_notify if the socket takes it now, then shuts the socket down both ways.
  void Close() override {
    Core& c = *core_;
    if (c.closed) return;
    c.closed = true;
    ERR_clear_error();
    if (SSL_is_init_finished(c.ssl)) SSL_shutdown(c.ssl);
    ERR_clear_error();
    asio::error_code ignored;
    c.socket.shutdown(tcp::socket::shutdown_both, ignored);
    c.socket.close(ignored);
  }

  Traits traits() const override {
    return Traits{.message_boundaries = false,
                  .reliable = true,
                  .max_message = 0,
                  .duplex = true,
                  .reach = Reach::kNetwork};
  }
  PeerInfo peer() const override { return core_->peer; }
  asio::any_io_executor executor() const override { return executor_; }

 private:
  static absl::Status Closed(const char* op) {
    return absl::CancelledError(absl::StrCat("tls ", op, ": cancelled"));
  }

  // One SSL_read: kDone with the result (bytes, 0 at end of stream, or the error, remembered),
  // or what to wait for.
  static std::pair<Step, absl::StatusOr<size_t>> ReadOnce(Core& c, asio::mutable_buffer into) {
    ERR_clear_error();
    errno = 0;
    int n = SSL_read(c.ssl, into.data(), static_cast<int>(std::min<size_t>(into.size(), 1 << 30)));
    if (n > 0) {
      // One SSL_read returns one record: take the others already decrypted or buffered too.
      size_t got = static_cast<size_t>(n);
      while (got < into.size() && SSL_has_pending(c.ssl) == 1) {
        ERR_clear_error();
        int more = SSL_read(c.ssl, static_cast<char*>(into.data()) + got,
                            static_cast<int>(std::min<size_t>(into.size() - got, 1 << 30)));
        if (more <= 0) break;  // what it means is seen by the next read
        got += static_cast<size_t>(more);
      }
      return {Step::kDone, got};
    }
    int error = SSL_get_error(c.ssl, n);
    int saved_errno = errno;
    if (error == SSL_ERROR_WANT_READ) return {Step::kWantRead, size_t{0}};
    if (error == SSL_ERROR_WANT_WRITE) return {Step::kWantWrite, size_t{0}};
    if (error == SSL_ERROR_ZERO_RETURN) {
      c.read_end = size_t{0};
    } else if (error == SSL_ERROR_SYSCALL && saved_errno != 0) {
      c.read_end = ErrnoStatus(saved_errno, absl::StrCat("tls read from ", c.peer.address));
    } else {
      c.read_end = absl::UnavailableError(absl::StrCat("tls read from ", c.peer.address, ": ",
                                                       FailureReason(c.ssl, error, saved_errno)));
    }
    return {Step::kDone, *c.read_end};
  }

  // Reads, waiting in the reactor while OpenSSL wants the socket. The handler always runs from
  // the executor, never inside AsyncRead.
  static void ReadStep(std::shared_ptr<Core> core, asio::mutable_buffer into, ReadHandler done,
                       bool inline_call) {
    auto [step, result] = ReadOnce(*core, into);
    if (step == Step::kDone) {
      if (inline_call) {
        asio::any_io_executor ex = core->socket.get_executor();
        asio::post(ex, [done = std::move(done), result = std::move(result)]() mutable {
          done(std::move(result));
        });
      } else {
        done(std::move(result));
      }
      return;
    }
    Core& c = *core;
    c.socket.async_wait(
        step == Step::kWantRead ? tcp::socket::wait_read : tcp::socket::wait_write,
        [core = std::move(core), into, done = std::move(done)](asio::error_code ec) mutable {
          if (core->closed || ec == asio::error::operation_aborted) return done(Closed("read"));
          ReadStep(std::move(core), into, std::move(done), /*inline_call=*/false);
        });
  }

  // Writes `c.pending` one record at a time (each gathered into `c.record`) until the socket
  // is full or all is written; consumes what was written from `c.pending`.
  static absl::StatusOr<Step> WriteSome(Core& c) {
    for (;;) {
      size_t left = asio::buffer_size(c.pending);
      if (left == 0) return Step::kDone;
      size_t length = c.retry_length != 0 ? c.retry_length : std::min(left, kRecordPlaintext);
      c.record.resize(length);
      asio::buffer_copy(asio::buffer(c.record), c.pending);
      ERR_clear_error();
      errno = 0;
      int n = SSL_write(c.ssl, c.record.data(), static_cast<int>(length));
      if (n > 0) {
        c.retry_length = 0;
        SkipWritten(c.pending, static_cast<size_t>(n));
        continue;
      }
      int error = SSL_get_error(c.ssl, n);
      int saved_errno = errno;
      if (error == SSL_ERROR_WANT_WRITE || error == SSL_ERROR_WANT_READ) {
        c.retry_length = length;
        return error == SSL_ERROR_WANT_WRITE ? Step::kWantWrite : Step::kWantRead;
      }
      if (error == SSL_ERROR_SYSCALL && saved_errno != 0) {
        return ErrnoStatus(saved_errno, absl::StrCat("tls write to ", c.peer.address));
      }
      return absl::UnavailableError(absl::StrCat("tls write to ", c.peer.address, ": ",
                                                 FailureReason(c.ssl, error, saved_errno)));
    }
  }

  // `done` travels with the wait, never in Core: a handler held by Core would keep the
  // connection's owner (and so Core) alive forever if its reactor went away with the wait.
  static void WriteStep(std::shared_ptr<Core> core, WriteHandler done, bool inline_call) {
    Core& c = *core;
    absl::StatusOr<Step> step = WriteSome(c);
    if (!step.ok() || *step == Step::kDone) {
      absl::Status result = step.status();
      c.pending.clear();
      if (inline_call) {
        asio::post(c.socket.get_executor(),
                   [done = std::move(done), result]() mutable { done(result); });
      } else {
        done(result);
      }
      return;
    }
    c.socket.async_wait(
        *step == Step::kWantRead ? tcp::socket::wait_read : tcp::socket::wait_write,
        [core = std::move(core), done = std::move(done)](asio::error_code ec) mutable {
          if (core->closed || ec == asio::error::operation_aborted) {
            core->pending.clear();
            return done(Closed("write"));
          }
          WriteStep(std::move(core), std::move(done), /*inline_call=*/false);
        });
  }

  std::shared_ptr<Core> core_;
  asio::any_io_executor executor_;
};

// Sets up `ssl` for a client handshake that checks the server is `name`.
absl::Status PrepareClient(SSL* ssl, const std::string& name, const std::string& what) {
  in6_addr ip{};
  const bool is_ip =
      ::inet_pton(AF_INET, name.c_str(), &ip) == 1 || ::inet_pton(AF_INET6, name.c_str(), &ip) == 1;
  bool ok;
  if (is_ip) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str()) == 1;
  } else {
    ok = SSL_set_tlsext_host_name(ssl, name.c_str()) == 1 && SSL_set1_host(ssl, name.c_str()) == 1;
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": bad server name '", name, "': ", OpenSslReasons()));
}

// --- The listener ------------------------------------------------------------------------------

// A connection whose handshake finished, waiting for Accept.
struct Handshaken {
  tcp protocol;
  int fd;    // owned
  SSL* ssl;  // owned, set up over fd
  PeerInfo peer;
};

struct ListenerState {
  explicit ListenerState(asio::any_io_executor ex) : signal(ex, Clock::time_point::max()) {}
  ~ListenerState() {
    for (absl::StatusOr<Handshaken>& entry : ready) {
      if (!entry.ok()) continue;
      SSL_free(entry->ssl);
      ::close(entry->fd);
    }
  }
  // Hands Accept an error, unless one already waits there (so errors queue no deeper than the
  // connections between them).
  void Report(absl::Status error) {
    if (!ready.empty() && !ready.back().ok()) return;
    ready.push_back(std::move(error));
    signal.cancel();
  }

  std::deque<absl::StatusOr<Handshaken>> ready;
  asio::steady_timer signal;  // cancelled when `ready` grows or on Close
  bool closed = false;
  bool loop_running = false;
  size_t handshakes = 0;
  std::set<tcp::socket*> handshaking;  // the sockets of the handshakes in progress
};

class TlsListener final : public Listener {
 public:
  TlsListener(tcp::acceptor acceptor, SslContext ctx, std::string query,
              Clock::duration handshake_timeout)
      : executor_(acceptor.get_executor()),
        acceptor_(std::make_shared<tcp::acceptor>(std::move(acceptor))),
        ctx_(std::move(ctx)),
        handshake_timeout_(handshake_timeout),
        state_(std::make_shared<ListenerState>(executor_)) {
    asio::error_code ec;
    Endpoint bound = internal::ToEndpoint(acceptor_->local_endpoint(ec));
    local_ =
        Endpoint{"tls", query.empty() ? bound.address : absl::StrCat(bound.address, "?", query)};
  }
  ~TlsListener() override { Close(); }

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    std::shared_ptr<ListenerState> state = state_;
    const absl::Status cancelled =
        absl::CancelledError(absl::StrCat("tls accept on ", local_.address, ": cancelled"));
    if (!state->loop_running && !state->closed) {
      state->loop_running = true;
      asio::co_spawn(executor_, AcceptLoop(acceptor_, state, ctx_, handshake_timeout_),
                     asio::detached);
    }
    for (;;) {
      if (state->closed) co_return cancelled;
      if (!state->ready.empty()) {
        absl::StatusOr<Handshaken> next = std::move(state->ready.front());
        state->ready.pop_front();
        if (!next.ok()) co_return next.status();
        tcp::socket socket(connection_executor);
        asio::error_code ec;
        socket.assign(next->protocol, next->fd, ec);
        if (ec) {
          SSL_free(next->ssl);
          ::close(next->fd);
          continue;
        }
        socket.non_blocking(true, ec);
        co_return std::unique_ptr<Connection>(std::make_unique<TlsConnection>(
            std::make_shared<Core>(std::move(socket), next->ssl, std::move(next->peer))));
      }
      state->signal.expires_at(Clock::time_point::max());
      co_await state->signal.async_wait(use_nothrow);
    }
  }

  Endpoint local_endpoint() const override { return local_; }

  void Close() override {
    if (state_->closed) return;
    state_->closed = true;
    asio::error_code ignored;
    acceptor_->close(ignored);
    for (tcp::socket* socket : state_->handshaking) socket->close(ignored);
    state_->signal.cancel();
  }

 private:
  static asio::awaitable<void> AcceptLoop(std::shared_ptr<tcp::acceptor> acceptor,
                                          std::shared_ptr<ListenerState> state, SslContext ctx,
                                          Clock::duration timeout) {
    const asio::any_io_executor ex = acceptor->get_executor();
    asio::steady_timer backoff(ex);
    std::chrono::milliseconds delay(10);
    while (!state->closed) {
      auto [ec, socket] = co_await acceptor->async_accept(use_nothrow);
      if (state->closed) break;
      if (ec == asio::error::connection_aborted) continue;
      if (ec) {
        // Out of descriptors or memory: tell Accept (the server logs it), wait, try again.
        state->Report(absl::ResourceExhaustedError(absl::StrCat("tls accept: ", ec.message())));
        backoff.expires_after(delay);
        co_await backoff.async_wait(use_nothrow);
        delay = std::min(delay * 2, std::chrono::milliseconds(1000));
        continue;
      }
      delay = std::chrono::milliseconds(10);
      internal::SetCloseOnExec(socket.native_handle());
      std::string peer = internal::ToEndpoint(socket.remote_endpoint(ec)).address;
      if (state->handshakes + state->ready.size() >= kMaxPendingHandshakes) {
        state->Report(absl::AbortedError(absl::StrCat(
            "tls: refused ", peer, ": ", kMaxPendingHandshakes, " handshakes pending")));
        continue;  // closes the socket
      }
      ++state->handshakes;
      asio::co_spawn(ex, ServeHandshake(std::move(socket), std::move(peer), state, ctx, timeout),
                     asio::detached);
    }
    state->loop_running = false;
  }

  static asio::awaitable<void> ServeHandshake(tcp::socket socket, std::string peer_address,
                                              std::shared_ptr<ListenerState> state, SslContext ctx,
                                              Clock::duration timeout) {
    asio::error_code ec;
    socket.non_blocking(true, ec);
    socket.set_option(tcp::no_delay(true), ec);
    // Owned here until it is queued: a frame destroyed unresumed (its io_context gone) frees it.
    std::unique_ptr<SSL, SslFree> ssl(SSL_new(ctx.get()));
    // Listed so that Close() can end the handshake at once instead of at its time limit.
    state->handshaking.insert(&socket);
    absl::Status result = absl::InternalError("tls: SSL_new failed");
    if (ssl != nullptr && SSL_set_fd(ssl.get(), socket.native_handle()) == 1) {
      SSL_set_accept_state(ssl.get());
      result = co_await Handshake(socket, ssl.get(), Clock::now() + timeout,
                                  absl::StrCat("tls handshake with ", peer_address));
    }
    state->handshaking.erase(&socket);
    --state->handshakes;
    if (state->closed || !result.ok()) {
      if (!state->closed) state->Report(absl::AbortedError(result.message()));
      co_return;
    }
    PeerInfo peer{.address = absl::StrCat("tls://", peer_address),
                  .credentials = std::nullopt,
                  .tls = PeerOf(ssl.get())};
    tcp protocol = socket.local_endpoint(ec).protocol();
    state->ready.push_back(
        Handshaken{protocol, socket.release(ec), ssl.release(), std::move(peer)});
    state->signal.cancel();
  }

  asio::any_io_executor executor_;
  std::shared_ptr<tcp::acceptor> acceptor_;
  SslContext ctx_;
  Clock::duration handshake_timeout_;
  std::shared_ptr<ListenerState> state_;
  Endpoint local_;
};

// --- The transport -----------------------------------------------------------------------------

class TlsTransport final : public Transport {
 public:
  TlsTransport(asio::any_io_executor executor, TransportOptions options)
      : executor_(std::move(executor)), options_(std::move(options)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    const std::string what = absl::StrCat("tls connect ", to.address);
    absl::StatusOr<TlsAddress> address = ParseAddress(to.address, options_.tls);
    if (!address.ok()) co_return address.status();
    absl::StatusOr<SslContext> ctx = ClientContexts::Get().For(address->options, what);
    if (!ctx.ok()) co_return ctx.status();
    const Clock::time_point deadline = Clock::now() + options_.handshake_timeout;
    absl::StatusOr<tcp::socket> socket =
        co_await internal::ConnectTcp(executor_, address->host_port, what);
    if (!socket.ok()) co_return socket.status();
    internal::SetCloseOnExec(socket->native_handle());
    asio::error_code ec;
    socket->non_blocking(true, ec);
    socket->set_option(tcp::no_delay(true), ec);
    std::string name = address->options.server_name;
    if (name.empty()) name = address->host;
    SSL* ssl = SSL_new(ctx->get());
    if (ssl == nullptr) co_return absl::InternalError(absl::StrCat(what, ": SSL_new failed"));
    auto core = std::make_shared<Core>(*std::move(socket), ssl, PeerInfo{});
    if (SSL_set_fd(ssl, core->socket.native_handle()) != 1) {
      co_return absl::InternalError(absl::StrCat(what, ": ", OpenSslReasons()));
    }
    if (absl::Status prepared = PrepareClient(ssl, name, what); !prepared.ok()) {
      co_return prepared;
    }
    SSL_set_connect_state(ssl);
    absl::Status shaken = co_await Handshake(
        core->socket, ssl, deadline, absl::StrCat("tls handshake with ", address->host_port));
    if (!shaken.ok()) {
      // A handshake that ran out of time is a server that does not answer: kUnavailable too.
      if (shaken.code() == absl::StatusCode::kDeadlineExceeded) {
        co_return absl::UnavailableError(shaken.message());
      }
      co_return shaken;
    }
    core->peer.address = absl::StrCat("tls://", address->host_port);
    core->peer.tls = PeerOf(ssl);
    co_return std::unique_ptr<Connection>(std::make_unique<TlsConnection>(std::move(core)));
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    const std::string what = absl::StrCat("tls listen ", at.address);
    absl::StatusOr<TlsAddress> address = ParseAddress(at.address, options_.tls);
    if (!address.ok()) return address.status();
    absl::StatusOr<SslContext> ctx = MakeContext(address->options, /*server=*/true, what);
    if (!ctx.ok()) return ctx.status();
    absl::StatusOr<tcp::acceptor> acceptor =
        internal::ListenTcp(executor_, address->host_port, what);
    if (!acceptor.ok()) return acceptor.status();
    return std::make_unique<TlsListener>(*std::move(acceptor), *std::move(ctx), address->query,
                                         options_.handshake_timeout);
  }

 private:
  asio::any_io_executor executor_;
  TransportOptions options_;
};

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options) {
  // OpenSSL writes to the socket with write(), which raises SIGPIPE at a peer that is gone.
  internal::IgnoreSigpipe();
  return std::make_unique<TlsTransport>(std::move(executor), options);
}

Endpoint LoopbackEndpoint() {
  absl::StatusOr<LoopbackFiles> files = GetLoopbackFiles();
  if (!files.ok()) return Endpoint{"tls", "127.0.0.1:0"};  // Listen says a certificate is missing
  return Endpoint{"tls", absl::StrCat("127.0.0.1:0?cert=", files->certificate_file,
                                      "&key=", files->private_key_file, "&ca=", files->ca_file)};
}

void PrepareProcess() { OPENSSL_init_ssl(0, nullptr); }

void EndThread() { OPENSSL_thread_stop(); }

}  // namespace courier::transport::tls
