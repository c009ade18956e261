// ParseEndpoint, Endpoint::ToString and SplitHostPort: every scheme of DESIGN §1, the errors
// (each names its problem), and the round trip ParseEndpoint(e.ToString()) == e.
#include "transport/endpoint.h"

#include <ostream>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace courier {

void PrintTo(const Endpoint& e, std::ostream* os) {
  *os << "Endpoint{scheme \"" << e.scheme << "\", address \"" << e.address << "\"}";
}

namespace {

using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

struct ParseCase {
  std::string_view uri;
  std::string_view scheme;
  std::string_view address;
};

// Every form DESIGN §1 lists, and a few more of each scheme.
constexpr ParseCase kValid[] = {
    {"tcp://127.0.0.1:7000", "tcp", "127.0.0.1:7000"},
    {"tcp://[::1]:0", "tcp", "[::1]:0"},
    {"tcp://[fe80::1%eth0]:7000", "tcp", "[fe80::1%eth0]:7000"},
    {"tcp://host.example:7000", "tcp", "host.example:7000"},
    {"tcp://localhost:65535", "tcp", "localhost:65535"},
    {"tcp://0.0.0.0:0", "tcp", "0.0.0.0:0"},
    {"TCP://Host.Example:80", "tcp", "Host.Example:80"},  // the scheme is case-insensitive
    {"unix:///run/svc.sock", "unix", "/run/svc.sock"},
    {"unix:/run/svc.sock", "unix", "/run/svc.sock"},
    {"unix:@svc", "unix", "@svc"},
    {"unix://@svc", "unix", "@svc"},
    {"unix:relative/svc.sock", "unix", "relative/svc.sock"},
    {"unix://relative/svc.sock", "unix", "relative/svc.sock"},
    {"unix:svc.sock", "unix", "svc.sock"},
    {"udp://127.0.0.1:7001", "udp", "127.0.0.1:7001"},
    {"udp://[::1]:0", "udp", "[::1]:0"},
    {"udp://host.example:53", "udp", "host.example:53"},
    // Options after '?' stay in the address, for the transport to check.
    {"udp://localhost:7000?dgram=1200&window=256k", "udp", "localhost:7000?dgram=1200&window=256k"},
    {"tls://127.0.0.1:7443", "tls", "127.0.0.1:7443"},
    {"tls://[::1]:0?ca=/etc/ca.pem&server_name=svc", "tls",
     "[::1]:0?ca=/etc/ca.pem&server_name=svc"},
    {"pipe://stdio", "pipe", "stdio"},
    {"pipe:///tmp/a", "pipe", "/tmp/a"},
    {"fifo:///run/svc", "fifo", "/run/svc"},
    {"fifo://relative/svc", "fifo", "relative/svc"},
    {"shm://svc", "shm", "svc"},
    {"shm://a", "shm", "a"},
};

TEST(ParseEndpoint, AcceptsEveryScheme) {
  for (const ParseCase& c : kValid) {
    SCOPED_TRACE(c.uri);
    absl::StatusOr<Endpoint> e = ParseEndpoint(c.uri);
    ASSERT_THAT(e, IsOk());
    EXPECT_EQ(e->scheme, c.scheme);
    EXPECT_EQ(e->address, c.address);
  }
}

TEST(ParseEndpoint, KeepsIpv6BracketsInTheAddress) {
  absl::StatusOr<Endpoint> e = ParseEndpoint("tcp://[2001:db8::7]:443");
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->address, "[2001:db8::7]:443");
  absl::StatusOr<HostPort> hp = SplitHostPort(e->address);
  ASSERT_THAT(hp, IsOk());
  EXPECT_EQ(hp->host, "2001:db8::7");
  EXPECT_EQ(hp->port, "443");
}

TEST(ParseEndpoint, AcceptsDnsNames) {
  for (std::string_view uri : {"tcp://localhost:1", "tcp://a.b.c.example.com:7000",
                               "udp://my-host:9", "tcp://xn--bcher-kva.example:80"}) {
    SCOPED_TRACE(uri);
    absl::StatusOr<Endpoint> e = ParseEndpoint(uri);
    ASSERT_THAT(e, IsOk());
    EXPECT_EQ(e->address, uri.substr(6));
  }
}

struct ErrorCase {
  std::string_view uri;
  std::string_view problem;  // a substring of the message that names it
};

constexpr ErrorCase kInvalid[] = {
    {"", "empty URI"},
    {"tls://host?ca=/x:7", "port"},  // the port comes before the options
    {"tcp:127.0.0.1:7000", "expected scheme://address"},
    {"localhost:7000", "expected scheme://address"},
    {"/run/svc.sock", "expected scheme://address"},
    {"http://example.com:80", "unknown scheme 'http'"},
    {"tcpx://h:1", "unknown scheme 'tcpx'"},
    {"://h:1", "unknown scheme ''"},
    {"tcp://", "empty address"},
    {"udp://", "empty address"},
    {"unix://", "empty address"},
    {"unix:", "empty address"},
    {"pipe://", "empty address"},
    {"fifo://", "empty address"},
    {"shm://", "empty address"},
    {"unix:@", "empty abstract name"},
    {"unix://@", "empty abstract name"},
    {"tcp://localhost", "missing port"},
    {"udp://127.0.0.1", "missing port"},
    {"tcp://[::1]", "missing port"},
    {"tcp://[::1]7000", "missing port"},
    {"tcp://[::1:7000", "missing ']'"},
    {"tcp://h:99999", "port '99999'"},
    {"tcp://h:65536", "port '65536'"},
    {"tcp://h:abc", "port 'abc'"},
    {"tcp://h:", "port ''"},
    {"tcp://h:-1", "port '-1'"},
    {"tcp://h:+1", "port '+1'"},
    {"tcp://h:70x", "port '70x'"},
    {"udp://h: 80", "port ' 80'"},
    {"tcp://:7000", "missing host"},
    {"tcp://[]:7000", "missing host"},
    {"tcp://::1:7000", "needs brackets"},
    {"udp://fe80::1:53", "needs brackets"},
};

TEST(ParseEndpoint, RejectsBadUrisNamingTheProblem) {
  for (const ErrorCase& c : kInvalid) {
    SCOPED_TRACE(c.uri);
    EXPECT_THAT(ParseEndpoint(c.uri),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(std::string(c.problem))));
  }
}

TEST(ParseEndpoint, ErrorMessagesQuoteTheUri) {
  for (const ErrorCase& c : kInvalid) {
    if (c.uri.empty()) continue;
    SCOPED_TRACE(c.uri);
    EXPECT_THAT(ParseEndpoint(c.uri), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("'" + std::string(c.uri) + "'")));
  }
}

TEST(ParseEndpoint, RejectsNulInTheAddress) {
  using namespace std::string_view_literals;
  EXPECT_THAT(ParseEndpoint("unix:///tmp/a\0b"sv),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
  EXPECT_THAT(ParseEndpoint("unix:@a\0b"sv),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("NUL")));
}

TEST(Endpoint, ToStringUsesTheCanonicalForm) {
  EXPECT_EQ((Endpoint{"tcp", "127.0.0.1:7000"}).ToString(), "tcp://127.0.0.1:7000");
  EXPECT_EQ((Endpoint{"tcp", "[::1]:0"}).ToString(), "tcp://[::1]:0");
  EXPECT_EQ((Endpoint{"unix", "/run/a.sock"}).ToString(), "unix:///run/a.sock");
  EXPECT_EQ((Endpoint{"unix", "@svc"}).ToString(), "unix:@svc");
  EXPECT_EQ((Endpoint{"unix", "rel/a.sock"}).ToString(), "unix:rel/a.sock");
  EXPECT_EQ((Endpoint{"pipe", "stdio"}).ToString(), "pipe://stdio");
  EXPECT_EQ((Endpoint{"shm", "svc"}).ToString(), "shm://svc");
}

TEST(Endpoint, ToStringRoundTripsThroughParseEndpoint) {
  for (const ParseCase& c : kValid) {
    SCOPED_TRACE(c.uri);
    absl::StatusOr<Endpoint> e = ParseEndpoint(c.uri);
    ASSERT_THAT(e, IsOk());
    const std::string canonical = e->ToString();
    absl::StatusOr<Endpoint> again = ParseEndpoint(canonical);
    ASSERT_THAT(again, IsOk()) << canonical;
    EXPECT_EQ(*again, *e) << canonical;
    EXPECT_EQ(again->ToString(), canonical) << "ToString is not idempotent";
  }
}

// A relative UNIX path prints in the short form "unix:path", which ParseEndpoint reads as
// "scheme://address" when the path itself contains "://".
TEST(Endpoint, ToStringRoundTripsARelativeUnixPathContainingTheSchemeSeparator) {
  absl::StatusOr<Endpoint> e = ParseEndpoint("unix://a://b");
  ASSERT_THAT(e, IsOk());
  EXPECT_EQ(e->address, "a://b");
  EXPECT_THAT(ParseEndpoint(e->ToString()), IsOk()) << e->ToString();
  if (absl::StatusOr<Endpoint> again = ParseEndpoint(e->ToString()); again.ok()) {
    EXPECT_EQ(*again, *e);
  }
}

TEST(Endpoint, ComparesByValue) {
  EXPECT_EQ((Endpoint{"tcp", "h:1"}), (Endpoint{"tcp", "h:1"}));
  EXPECT_NE((Endpoint{"tcp", "h:1"}), (Endpoint{"udp", "h:1"}));
  EXPECT_NE((Endpoint{"tcp", "h:1"}), (Endpoint{"tcp", "h:2"}));
}

TEST(SplitHostPort, SplitsHostAndPort) {
  struct Case {
    std::string_view address, host, port;
  };
  const Case cases[] = {
      {"127.0.0.1:7000", "127.0.0.1", "7000"},     {"[::1]:0", "::1", "0"},
      {"[fe80::1%eth0]:80", "fe80::1%eth0", "80"}, {"host.example:65535", "host.example", "65535"},
      {"localhost:1", "localhost", "1"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.address);
    absl::StatusOr<HostPort> hp = SplitHostPort(c.address);
    ASSERT_THAT(hp, IsOk());
    EXPECT_EQ(hp->host, c.host);
    EXPECT_EQ(hp->port, c.port);
  }
}

TEST(SplitHostPort, RejectsBadAddressesNamingTheProblem) {
  const ErrorCase cases[] = {
      {"", "missing port"},
      {"host", "missing port"},
      {"[::1]", "missing port"},
      {"[::1]80", "missing port"},
      {"[::1", "missing ']'"},
      {":80", "missing host"},
      {"[]:80", "missing host"},
      {"host:", "port ''"},
      {"host:65536", "port '65536'"},
      {"host:99999", "port '99999'"},
      {"host:4294967296", "port '4294967296'"},
      {"host:abc", "port 'abc'"},
      {"host:-1", "port '-1'"},
      {"::1:80", "needs brackets"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.uri);
    EXPECT_THAT(SplitHostPort(c.uri), StatusIs(absl::StatusCode::kInvalidArgument,
                                               AllOf(HasSubstr(std::string(c.problem)),
                                                     HasSubstr("'" + std::string(c.uri) + "'"))));
  }
}

}  // namespace
}  // namespace courier
