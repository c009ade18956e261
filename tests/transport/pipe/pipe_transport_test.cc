// pipe:// as a whole: the command-line syntax, the stdio form in a forked child (and where its
// stray prints go), spawned children (round trip, death mid-read, exit status, reaping, no
// leaked descriptors, a missing program) and the @NAME rendezvous against hostile clients.
#include "transport/pipe/pipe_transport.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "transport/internal/fd.h"

namespace courier::transport {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using internal::UniqueFd;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

using ConnectionOr = absl::StatusOr<std::unique_ptr<Connection>>;

MATCHER_P(Holds, value, "is OK and holds " + ::testing::PrintToString(value)) {
  if (!arg.ok()) {
    *result_listener << "status " << arg.status();
    return false;
  }
  *result_listener << "holds " << ::testing::PrintToString(*arg);
  return *arg == value;
}

asio::awaitable<absl::Status> WriteAll(Connection& connection, std::string data) {
  asio::const_buffer buffer = asio::buffer(data);
  co_return co_await connection.Write(std::span<const asio::const_buffer>(&buffer, 1));
}

// Reads until end of stream (or `limit` bytes); an error ends it too.
asio::awaitable<absl::StatusOr<std::string>> ReadAll(Connection& connection, size_t limit) {
  std::string out;
  // On the heap, not in the coroutine frame: GCC 12's Debug build then flags Asio's frame
  // allocation as a mismatched new/delete (-Wmismatched-new-delete, a false positive).
  std::string buffer(4096, '\0');
  while (out.size() < limit) {
    absl::StatusOr<size_t> n = co_await connection.Read(asio::buffer(buffer));
    if (!n.ok()) co_return n.status();
    if (*n == 0) break;
    out.append(buffer.data(), *n);
  }
  co_return out;
}

// Reads a raw descriptor until end of stream.
std::string Drain(int fd) {
  std::string out;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buffer, static_cast<size_t>(n));
  }
}

bool Reaped(pid_t pid) { return ::waitpid(pid, nullptr, WNOHANG) < 0 && errno == ECHILD; }

// ---- command lines ---------------------------------------------------------------------------

TEST(SplitCommandLine, SplitsOnUnquotedBlanks) {
  EXPECT_THAT(*pipe::SplitCommandLine("kv_server --listen pipe://stdio"),
              ElementsAre("kv_server", "--listen", "pipe://stdio"));
  EXPECT_THAT(*pipe::SplitCommandLine("  a\t\tb  "), ElementsAre("a", "b"));
}

TEST(SplitCommandLine, QuotesAndEscapes) {
  EXPECT_THAT(*pipe::SplitCommandLine(R"(a 'b c' "d e")"), ElementsAre("a", "b c", "d e"));
  EXPECT_THAT(*pipe::SplitCommandLine(R"('a\b' "x\"y\\z\n")"), ElementsAre(R"(a\b)", R"(x"y\z\n)"));
  EXPECT_THAT(*pipe::SplitCommandLine(R"(a\ b c\'d)"), ElementsAre("a b", "c'd"));
  EXPECT_THAT(*pipe::SplitCommandLine(R"(pre'mid'"post" '')"), ElementsAre("premidpost", ""));
}

TEST(SplitCommandLine, ErrorsNameTheProblem) {
  EXPECT_THAT(pipe::SplitCommandLine("a 'b"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unterminated '")));
  EXPECT_THAT(pipe::SplitCommandLine(R"(a "b\")"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unterminated \"")));
  EXPECT_THAT(pipe::SplitCommandLine("a\\"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing backslash")));
  EXPECT_THAT(pipe::SplitCommandLine(" \t "),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty command")));
}

// ---- pipe://stdio ----------------------------------------------------------------------------

TEST(PipeStdio, ForkedChildServesItsStdioAndStrayPrintsGoToStderr) {
  int to_child[2], from_child[2], child_err[2];
  ASSERT_EQ(::pipe(to_child), 0);
  ASSERT_EQ(::pipe(from_child), 0);
  ASSERT_EQ(::pipe(child_err), 0);
  std::fflush(nullptr);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::dup2(child_err[1], 2);
    for (int fd :
         {to_child[0], to_child[1], from_child[0], from_child[1], child_err[0], child_err[1]}) {
      ::close(fd);
    }
    asio::io_context io;
    std::unique_ptr<Transport> transport = pipe::NewTransport(io.get_executor());
    absl::StatusOr<std::unique_ptr<Listener>> listener =
        transport->Listen(Endpoint{"pipe", "stdio"});
    if (!listener.ok()) ::_exit(10);
    // Printed after Listen, and what was buffered: both must land on stderr.
    std::printf("stray print\n");
    std::fflush(stdout);
    if (transport->Listen(Endpoint{"pipe", "stdio"}).status().code() !=
        absl::StatusCode::kAlreadyExists) {
      ::_exit(11);
    }
    ConnectionOr connection = RunCoro(io, (*listener)->Accept(io.get_executor()));
    if (!connection.ok()) ::_exit(12);
    if ((*connection)->peer().address != "pipe://stdio") ::_exit(13);
    absl::StatusOr<std::string> got = RunCoro(io, ReadAll(**connection, 4));
    if (!got.ok() || *got != "ping") ::_exit(14);
    if (!RunCoro(io, WriteAll(**connection, "pong:" + *got)).ok()) ::_exit(15);
    ::_exit(0);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  ::close(child_err[1]);
  ASSERT_EQ(::write(to_child[1], "ping", 4), 4);
  ::close(to_child[1]);
  EXPECT_EQ(Drain(from_child[0]), "pong:ping");
  EXPECT_THAT(Drain(child_err[0]), HasSubstr("stray print"));
  ::close(from_child[0]);
  ::close(child_err[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// ---- spawned children ------------------------------------------------------------------------

class PipeSpawnTest : public ::testing::Test {
 protected:
  ConnectionOr Spawn(std::string command) {
    return RunCoro(io_, transport_->Connect(Endpoint{"pipe", std::move(command)}));
  }
  pid_t PidOf(Connection& connection) { return connection.peer().credentials->pid; }

  asio::io_context io_;
  std::unique_ptr<Transport> transport_ = pipe::NewTransport(io_.get_executor());
};

TEST_F(PipeSpawnTest, RoundTripThroughCatAndTheChildIsReaped) {
  ConnectionOr cat = Spawn("/bin/cat");
  ASSERT_THAT(cat, IsOk());
  const pid_t pid = PidOf(**cat);
  EXPECT_EQ((*cat)->peer().address, absl::StrCat("pipe:///bin/cat (pid ", pid, ")"));
  EXPECT_EQ((*cat)->peer().credentials->uid, ::getuid());
  EXPECT_EQ((*cat)->traits().reach, Reach::kParentChild);
  EXPECT_FALSE((*cat)->traits().duplex);
  ASSERT_THAT(RunCoro(io_, WriteAll(**cat, "hello")), IsOk());
  char buffer[5];
  size_t got = 0;
  while (got < 5) {
    absl::StatusOr<size_t> n = RunCoro(io_, (*cat)->Read(asio::buffer(buffer + got, 5 - got)));
    ASSERT_THAT(n, IsOk());
    ASSERT_GT(*n, 0u);
    got += *n;
  }
  EXPECT_EQ(std::string(buffer, 5), "hello");
  cat->reset();  // closes its stdin: cat exits, and is reaped
  EXPECT_TRUE(RunUntil(io_, [&] { return Reaped(pid); }));
}

TEST_F(PipeSpawnTest, SearchesPathForABareProgramName) {
  ConnectionOr echo = Spawn("echo 'two words'");
  ASSERT_THAT(echo, IsOk());
  EXPECT_THAT(RunCoro(io_, ReadAll(**echo, 1 << 20)), Holds(std::string("two words\n")));
}

TEST_F(PipeSpawnTest, ChildKilledMidReadIsUnavailableNamingIt) {
  ConnectionOr sleeper = Spawn("sleep 30");
  ASSERT_THAT(sleeper, IsOk());
  const pid_t pid = PidOf(**sleeper);
  std::optional<absl::StatusOr<size_t>> result;
  char buffer[16];
  (*sleeper)->AsyncRead(asio::buffer(buffer),
                        [&](absl::StatusOr<size_t> r) { result = std::move(r); });
  EXPECT_FALSE(RunUntil(
      io_, [&] { return result.has_value(); }, 50ms));
  const auto start = std::chrono::steady_clock::now();
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(RunUntil(io_, [&] { return result.has_value(); }));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_THAT(*result, StatusIs(absl::StatusCode::kUnavailable,
                                HasSubstr(absl::StrCat("pipe child 'sleep' (pid ", pid,
                                                       ") was killed by signal 9"))));
  // Said again by later reads, in both forms.
  EXPECT_THAT(RunCoro(io_, (*sleeper)->Read(asio::buffer(buffer))),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("signal 9")));
  (*sleeper)->Close();
  EXPECT_TRUE(RunUntil(io_, [&] { return Reaped(pid); }));
}

TEST_F(PipeSpawnTest, ExitStatusIsInTheReadError) {
  ConnectionOr child = Spawn("/bin/sh -c 'exit 3'");
  ASSERT_THAT(child, IsOk());
  EXPECT_THAT(RunCoro(io_, ReadAll(**child, 100)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("exited with status 3")));
}

TEST_F(PipeSpawnTest, ACleanExitIsEndOfStream) {
  ConnectionOr child = Spawn("/bin/sh -c 'printf done'");
  ASSERT_THAT(child, IsOk());
  EXPECT_THAT(RunCoro(io_, ReadAll(**child, 100)), Holds(std::string("done")));
}

TEST_F(PipeSpawnTest, NoDescriptorLeaksIntoTheChild) {
  // A descriptor without close-on-exec, which a plain fork+exec would pass on.
  UniqueFd leaky(::dup(2));
  ASSERT_TRUE(leaky);
  ConnectionOr child = Spawn("/bin/sh -c 'ls /proc/self/fd'");
  ASSERT_THAT(child, IsOk());
  absl::StatusOr<std::string> listing = RunCoro(io_, ReadAll(**child, 1 << 20));
  ASSERT_THAT(listing, IsOk());
  std::set<std::string> fds;
  for (absl::string_view line : absl::StrSplit(*listing, '\n', absl::SkipEmpty())) {
    fds.emplace(line);
  }
  // 0, 1, 2 and the directory ls has open to list.
  EXPECT_THAT(fds, ElementsAre("0", "1", "2", "3")) << *listing;
}

TEST_F(PipeSpawnTest, ChildThatIgnoresItsStdinIsTerminated) {
  ConnectionOr child = Spawn("sleep 30");
  ASSERT_THAT(child, IsOk());
  const pid_t pid = PidOf(**child);
  const auto start = std::chrono::steady_clock::now();
  (*child)->Close();
  ASSERT_TRUE(RunUntil(
      io_, [&] { return Reaped(pid); }, 6s));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 90ms);  // SIGTERM after the grace period
  EXPECT_LT(took, 1500ms);
}

TEST_F(PipeSpawnTest, ChildThatIgnoresSigtermIsKilled) {
  ConnectionOr child = Spawn("/bin/sh -c 'trap \"\" TERM; while :; do sleep 1; done'");
  ASSERT_THAT(child, IsOk());
  const pid_t pid = PidOf(**child);
  RunUntil(
      io_, [] { return false; }, 100ms);  // the shell has set its trap
  const auto start = std::chrono::steady_clock::now();
  (*child)->Close();
  ASSERT_TRUE(RunUntil(
      io_, [&] { return Reaped(pid); }, 6s));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_GE(took, 1900ms);  // SIGKILL 2 s after SIGTERM
  EXPECT_LT(took, 3500ms);
}

TEST_F(PipeSpawnTest, DestroyingTheReactorStillReapsTheChild) {
  pid_t pid = 0;
  {
    asio::io_context io;
    std::unique_ptr<Transport> transport = pipe::NewTransport(io.get_executor());
    ConnectionOr child = RunCoro(io, transport->Connect(Endpoint{"pipe", "sleep 30"}));
    ASSERT_THAT(child, IsOk());
    pid = PidOf(**child);
    child->reset();
  }
  EXPECT_TRUE(Reaped(pid));
}

TEST_F(PipeSpawnTest, MissingProgramIsUnavailableNamingIt) {
  EXPECT_THAT(Spawn("courier-no-such-program --flag"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("courier-no-such-program")));
  EXPECT_THAT(Spawn("/nonexistent/courier-prog"),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("/nonexistent/courier-prog")));
  EXPECT_THAT(Spawn("a 'b"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(PipeSpawnTest, ListenOnACommandLineIsInvalid) {
  EXPECT_THAT(transport_->Listen(Endpoint{"pipe", "/bin/cat"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// ---- pipe://@NAME ----------------------------------------------------------------------------

class PipeNamedTest : public ::testing::Test {
 protected:
  asio::io_context io_;
  std::unique_ptr<Transport> transport_ = pipe::NewTransport(io_.get_executor());
};

TEST_F(PipeNamedTest, CredentialsOnBothSides) {
  Endpoint at = pipe::LoopbackEndpoint();
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(at);
  ASSERT_THAT(listener, IsOk());
  EXPECT_THAT(transport_->Listen(at), StatusIs(absl::StatusCode::kAlreadyExists));
  std::optional<ConnectionOr> accepted;
  asio::co_spawn(io_, (*listener)->Accept(io_.get_executor()),
                 [&](std::exception_ptr, ConnectionOr c) { accepted = std::move(c); });
  ConnectionOr client = RunCoro(io_, transport_->Connect(at));
  ASSERT_THAT(client, IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  ASSERT_THAT(*accepted, IsOk());
  const PeerCredentials me{.pid = ::getpid(), .uid = ::geteuid(), .gid = ::getegid()};
  EXPECT_EQ((*client)->peer().credentials, me);
  EXPECT_EQ((**accepted)->peer().credentials, me);
  EXPECT_EQ((*client)->peer().address, at.ToString());
  EXPECT_EQ((*client)->traits().reach, Reach::kSameHost);
}

UniqueFd RawConnect(const std::string& name) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = "courier-pipe-" + name;
  std::memcpy(addr.sun_path + 1, path.data(), path.size());
  const socklen_t length =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), length) != 0) return UniqueFd();
  return fd;
}

bool SawEndOfStream(int fd) {
  char byte;
  ssize_t n = ::recv(fd, &byte, 1, MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

TEST_F(PipeNamedTest, HostileRendezvousClientsAreDroppedAndTheListenerKeepsServing) {
  Endpoint at = pipe::LoopbackEndpoint();
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(at);
  ASSERT_THAT(listener, IsOk());
  std::optional<ConnectionOr> accepted;
  asio::co_spawn(io_, (*listener)->Accept(io_.get_executor()),
                 [&](std::exception_ptr, ConnectionOr c) { accepted = std::move(c); });
  const std::string name = at.address.substr(1);
  const std::string hello = "CORPIPE1";
  auto bytes = [](const std::string& s) { return std::as_bytes(std::span(s.data(), s.size())); };

  int p1[2], p2[2];
  ASSERT_EQ(::pipe(p1), 0);
  ASSERT_EQ(::pipe(p2), 0);
  UniqueFd p1r(p1[0]), p1w(p1[1]), p2r(p2[0]), p2w(p2[1]);
  UniqueFd event(::eventfd(0, EFD_CLOEXEC));
  std::vector<UniqueFd> hostile;
  auto send = [&](const std::string& data, std::vector<int> fds) {
    UniqueFd fd = RawConnect(name);
    ASSERT_TRUE(fd);
    ASSERT_THAT(internal::SendWithFds(fd.get(), bytes(data), fds), IsOk());
    hostile.push_back(std::move(fd));
  };
  send("garbage!", {p1r.get(), p2w.get()});        // wrong hello
  send(hello, {});                                 // no pipes
  send(hello, {p1r.get()});                        // one pipe
  send(hello, {p1r.get(), p2w.get(), p2r.get()});  // three
  send(hello, {event.get(), event.get()});         // not pipes
  send(hello, {p1w.get(), p2r.get()});             // wrong access modes
  ASSERT_TRUE(RunUntil(io_, [&] {
    for (UniqueFd& fd : hostile) {
      if (!SawEndOfStream(fd.get())) return false;
    }
    return true;
  }));
  EXPECT_FALSE(accepted.has_value());

  ConnectionOr client = RunCoro(io_, transport_->Connect(at));
  ASSERT_THAT(client, IsOk());
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted.has_value(); }));
  ASSERT_THAT(*accepted, IsOk());
  ASSERT_THAT(RunCoro(io_, WriteAll(**client, "ok")), IsOk());
  (*client)->Close();
  EXPECT_THAT(RunCoro(io_, ReadAll(***accepted, 100)), Holds(std::string("ok")));
}

TEST_F(PipeNamedTest, BadNamesAreInvalid) {
  EXPECT_THAT(transport_->Listen(Endpoint{"pipe", "@"}),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(transport_->Listen(Endpoint{"pipe", "@" + std::string(94, 'x')}),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace courier::transport
