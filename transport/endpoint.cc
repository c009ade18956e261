#include "transport/endpoint.h"

#include <algorithm>
#include <array>
#include <charconv>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "transport/status.h"

namespace courier {
namespace {

using transport::AsAbsl;

constexpr std::array<std::string_view, 7> kKnownSchemes = {"tcp",  "tls",  "unix", "udp",
                                                           "pipe", "fifo", "shm"};

// absl::StrJoin's formatter for std::string_view, which Debian's AlphaNum does not take.
void AppendView(std::string* out, std::string_view s) { out->append(s); }

bool IsHostPortScheme(std::string_view scheme) {
  return scheme == "tcp" || scheme == "tls" || scheme == "udp";
}

}  // namespace

std::string Endpoint::ToString() const {
  // The short form only where it parses back: "unix:a://b" would read as scheme "unix:a".
  if (scheme == "unix" && !address.empty() && address[0] != '/' &&
      address.find("://") == std::string::npos) {
    return absl::StrCat("unix:", AsAbsl(address));  // abstract "@name" or a relative path
  }
  return absl::StrCat(scheme, "://", AsAbsl(address));
}

absl::StatusOr<HostPort> SplitHostPort(std::string_view address) {
  std::string_view host, port;
  if (!address.empty() && address[0] == '[') {
    size_t close = address.find(']');
    if (close == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", AsAbsl(address), "': missing ']'"));
    }
    host = address.substr(1, close - 1);
    std::string_view rest = address.substr(close + 1);
    if (rest.empty() || rest[0] != ':') {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", AsAbsl(address), "': missing port"));
    }
    port = rest.substr(1);
  } else {
    size_t colon = address.rfind(':');
    if (colon == std::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("address '", AsAbsl(address), "': missing port"));
    }
    host = address.substr(0, colon);
    port = address.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "address '", AsAbsl(address), "': an IPv6 host needs brackets, as in [::1]:7000"));
    }
  }
  if (host.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("address '", AsAbsl(address), "': missing host"));
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("address '", AsAbsl(address), "': port '",
                                                   AsAbsl(port), "' is not a number 0-65535"));
  }
  return HostPort{std::string(host), std::string(port)};
}

absl::StatusOr<Endpoint> ParseEndpoint(std::string_view uri) {
  if (uri.empty()) return absl::InvalidArgumentError("endpoint: empty URI");
  Endpoint endpoint;
  size_t sep = uri.find("://");
  if (sep == std::string_view::npos) {
    // gRPC's short UNIX forms: "unix:relative/path", "unix:/abs/path", "unix:@abstract".
    if (absl::StartsWith(AsAbsl(uri), "unix:")) {
      endpoint.scheme = "unix";
      endpoint.address = std::string(uri.substr(5));
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "endpoint '", AsAbsl(uri), "': expected scheme://address, e.g. tcp://host:port"));
    }
  } else {
    endpoint.scheme = absl::AsciiStrToLower(AsAbsl(uri.substr(0, sep)));
    endpoint.address = std::string(uri.substr(sep + 3));
  }
  if (std::find(kKnownSchemes.begin(), kKnownSchemes.end(), endpoint.scheme) ==
      kKnownSchemes.end()) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint '", AsAbsl(uri), "': unknown scheme '", endpoint.scheme,
                     "' (known: ", absl::StrJoin(kKnownSchemes, ", ", AppendView), ")"));
  }
  if (endpoint.address.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint '", AsAbsl(uri), "': empty address"));
  }
  if (endpoint.address.find('\0') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("endpoint '", AsAbsl(uri), "': NUL in address"));
  }
  if (IsHostPortScheme(endpoint.scheme)) {
    // The options after a '?' are the transport's to check (udp://h:7000?dgram=1200).
    const std::string_view address = endpoint.address;
    const std::string_view host_port = address.substr(0, address.find('?'));
    if (absl::StatusOr<HostPort> hp = SplitHostPort(host_port); !hp.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("endpoint '", AsAbsl(uri), "': ", hp.status().message()));
    }
  }
  if (endpoint.scheme == "unix" && endpoint.address == "@") {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint '", AsAbsl(uri), "': empty abstract name"));
  }
  return endpoint;
}

}  // namespace courier
