// ResourceLedger: a leak fails naming what leaked; giving it back (now, or later on the
// io_context) passes.
#include "tests/testing/resource_ledger.h"

#include <fcntl.h>
#include <unistd.h>

#include <future>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "asio/steady_timer.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "rpc/service.h"
#include "tests/testing/status_matchers.h"

namespace courier::testing {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

// Starts `io`'s reactor, whose descriptors Asio opens on first use and keeps.
void StartReactor(asio::io_context& io) { asio::steady_timer timer(io); }

TEST(ResourceLedger, QuietProcessIsAtBaseline) {
  asio::io_context io;
  StartReactor(io);
  ResourceLedger ledger;
  EXPECT_TRUE(ledger.ExpectBackToBaseline(io, milliseconds(100)));
}

TEST(ResourceLedger, OpenDescriptorFailsNamingItUntilClosed) {
  asio::io_context io;
  StartReactor(io);
  ResourceLedger ledger;
  const size_t before = ResourceLedger::OpenFds().size();
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  ::testing::AssertionResult result = ledger.ExpectBackToBaseline(io, milliseconds(50));
  EXPECT_FALSE(result);
  EXPECT_THAT(result.message(), HasSubstr(absl::StrCat("fds: ", before, " -> ", before + 1)));
  EXPECT_THAT(result.message(), HasSubstr(absl::StrCat(fd, " /dev/null")));
  EXPECT_THAT(result.message(), HasSubstr("after 50 ms"));
  ::close(fd);
  EXPECT_TRUE(ledger.ExpectBackToBaseline(io, milliseconds(50)));
}

TEST(ResourceLedger, RunsTheIoContextUntilItGivesTheDescriptorBack) {
  asio::io_context io;
  StartReactor(io);
  ResourceLedger ledger;
  const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  asio::steady_timer timer(io, milliseconds(20));
  timer.async_wait([fd](std::error_code) { ::close(fd); });
  EXPECT_TRUE(ledger.ExpectBackToBaseline(io, milliseconds(5000)));
}

TEST(ResourceLedger, ThreadFailsUntilJoined) {
#if defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "ThreadSanitizer's runtime starts a thread of its own on the first join";
#endif
  asio::io_context io;
  StartReactor(io);
  ResourceLedger ledger;
  std::promise<void> release;
  std::thread thread([done = release.get_future()]() mutable { done.wait(); });
  ::testing::AssertionResult result = ledger.ExpectBackToBaseline(io, milliseconds(50));
  EXPECT_FALSE(result);
  EXPECT_THAT(result.message(), HasSubstr("threads: "));
  release.set_value();
  thread.join();
  // The kernel may count the thread for a moment after join returns: the ledger polls.
  EXPECT_TRUE(ledger.ExpectBackToBaseline(io, milliseconds(2000)));
}

TEST(ResourceLedger, CountsTheServersConnectionsAndTrackedCounts) {
  asio::io_context io;
  GenericService service;
  Server server(io.get_executor());
  ASSERT_THAT(server.AddService(service), IsOk());
  // unix: a TCP connect would start Asio's resolver thread, which stays (see the header).
  absl::StatusOr<Endpoint> endpoint =
      server.Listen("unix:@courier-ledger-test-" + std::to_string(::getpid()));
  ASSERT_THAT(endpoint, IsOk());
  ResourceLedger ledger(&server);
  size_t widgets = 0;
  ledger.Track("widgets", [&widgets] { return widgets; });

  auto channel = Channel::Create(io.get_executor(), endpoint->ToString()).value();
  EXPECT_THAT(RunCoro(io, channel->Call("/no.Such/Method", "")),
              StatusIs(absl::StatusCode::kUnimplemented));
  ++widgets;
  ::testing::AssertionResult result = ledger.ExpectBackToBaseline(io, milliseconds(50));
  EXPECT_FALSE(result);
  EXPECT_THAT(result.message(), HasSubstr("server connections: 0 -> 1"));
  EXPECT_THAT(result.message(), HasSubstr("widgets: 0 -> 1"));
  EXPECT_THAT(result.message(), HasSubstr("socket:["));

  channel->Close();
  --widgets;
  EXPECT_TRUE(ledger.ExpectBackToBaseline(io, milliseconds(2000)));
}

}  // namespace
}  // namespace courier::testing
