// libFuzzer target for ParseEndpoint and SplitHostPort. Input: a URI. Checks: whatever parses
// round-trips through ToString (ParseEndpoint(e.ToString()) == e, and ToString is then a fixed
// point); errors are kInvalidArgument; a host:port that splits re-joins and splits the same.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/fuzz/fuzz_check.h"
#include "transport/endpoint.h"

namespace courier {
namespace {

void CheckEndpoint(std::string_view uri) {
  absl::StatusOr<Endpoint> e = ParseEndpoint(uri);
  if (!e.ok()) {
    FUZZ_CHECK(e.status().code() == absl::StatusCode::kInvalidArgument);
    FUZZ_CHECK(!e.status().message().empty());
    return;
  }
  FUZZ_CHECK(!e->scheme.empty());
  FUZZ_CHECK(!e->address.empty());
  const std::string canonical = e->ToString();
  absl::StatusOr<Endpoint> again = ParseEndpoint(canonical);
  if (!again.ok()) {
    std::fprintf(stderr, "ParseEndpoint(\"%s\".ToString() = \"%s\"): %s\n",
                 std::string(uri).c_str(), canonical.c_str(), again.status().ToString().c_str());
  }
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *e);
  FUZZ_CHECK(again->ToString() == canonical);
}

void CheckHostPort(std::string_view address) {
  absl::StatusOr<HostPort> hp = SplitHostPort(address);
  if (!hp.ok()) {
    FUZZ_CHECK(hp.status().code() == absl::StatusCode::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(!hp->host.empty());
  FUZZ_CHECK(!hp->port.empty());
  for (char c : hp->port) FUZZ_CHECK(c >= '0' && c <= '9');
  // SplitHostPort does not validate hosts, so "[[x]:1" gives the host "[x", which no
  // "host:port" string can spell; the re-join check covers the hosts that one can.
  if (hp->host.find_first_of("[]") != std::string::npos) return;
  // A host with a colon can only have come in brackets.
  const bool v6 = hp->host.find(':') != std::string::npos;
  const std::string joined = v6 ? "[" + hp->host + "]:" + hp->port : hp->host + ":" + hp->port;
  absl::StatusOr<HostPort> again = SplitHostPort(joined);
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(again->host == hp->host);
  FUZZ_CHECK(again->port == hp->port);
}

}  // namespace
}  // namespace courier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  courier::CheckEndpoint(input);
  courier::CheckHostPort(input);
  return 0;
}
