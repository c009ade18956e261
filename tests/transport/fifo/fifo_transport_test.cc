// fifo:// specifics beyond the conformance suite: the request FIFO (stale, taken, removed), the
// handshake's clean-up when a client or the server dies, connect records that are garbage, and
// the bound on connections pending accept.
#include "transport/fifo/fifo_transport.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/buffer.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/connection_io.h"
#include "tests/testing/status_matchers.h"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::fifo {
namespace {

using ::courier::testing::ReadExactly;
using ::courier::testing::Write;

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using namespace std::chrono_literals;

std::vector<std::string> List(const std::string& dir) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

class FifoTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/courier-fifo-test-XXXXXX";
    ASSERT_NE(::mkdtemp(pattern), nullptr);
    dir_ = pattern;
    path_ = dir_ + "/svc";
    endpoint_ = Endpoint{"fifo", path_};
    transport_ = NewTransport(io_.get_executor());
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // Accepts in the background until a connection comes (into `out`, then `done`); the errors
  // Accept returned meanwhile go to `errors`.
  void SpawnAccept(Listener& listener, std::vector<absl::Status>* errors,
                   std::unique_ptr<Connection>* out, bool* done) {
    asio::co_spawn(
        io_,
        [&listener, errors, out, done, this]() -> asio::awaitable<void> {
          for (;;) {
            absl::StatusOr<std::unique_ptr<Connection>> c =
                co_await listener.Accept(io_.get_executor());
            if (c.ok()) {
              *out = *std::move(c);
              break;
            }
            if (c.status().code() == absl::StatusCode::kCancelled) break;
            if (errors != nullptr) errors->push_back(c.status());
          }
          *done = true;
        },
        asio::detached);
  }
  std::unique_ptr<Connection> AcceptOne(Listener& listener, std::vector<absl::Status>* errors) {
    std::unique_ptr<Connection> out;
    bool done = false;
    SpawnAccept(listener, errors, &out, &done);
    (void)RunUntil(io_, [&] { return done; });
    return out;
  }

  // A connected pair: Connect and Accept run together.
  std::pair<std::unique_ptr<Connection>, std::unique_ptr<Connection>> Pair(Listener& listener) {
    std::optional<absl::StatusOr<std::unique_ptr<Connection>>> client;
    asio::co_spawn(io_, transport_->Connect(endpoint_),
                   [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> c) {
                     client = std::move(c);
                   });
    std::unique_ptr<Connection> server = AcceptOne(listener, nullptr);
    EXPECT_TRUE(RunUntil(io_, [&] { return client.has_value(); }));
    if (!client || !client->ok()) {
      ADD_FAILURE() << "connect: " << (client ? client->status().ToString() : "hangs");
      return {nullptr, nullptr};
    }
    return {std::move(**client), std::move(server)};
  }

  void ExpectRoundTrip(Connection& client, Connection& server, std::string_view tag) {
    ASSERT_THAT(RunCoro(io_, Write(client, tag)), IsOk());
    EXPECT_EQ(RunCoro(io_, ReadExactly(server, tag.size())).value_or("?"), tag);
    ASSERT_THAT(RunCoro(io_, Write(server, tag)), IsOk());
    EXPECT_EQ(RunCoro(io_, ReadExactly(client, tag.size())).value_or("?"), tag);
  }

  asio::io_context io_;
  std::string dir_, path_;
  Endpoint endpoint_;
  std::unique_ptr<Transport> transport_;
};

TEST_F(FifoTransportTest, RoundTripLeavesOnlyTheRequestFifo) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  EXPECT_EQ((*listener)->local_endpoint(), endpoint_);
  struct stat st;
  ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto [client, server] = Pair(**listener);
  ASSERT_NE(client, nullptr);
  ASSERT_NE(server, nullptr);
  ExpectRoundTrip(*client, *server, "ping");
  EXPECT_THAT(List(dir_), ElementsAre("svc"));
  EXPECT_THAT(server->peer().address, HasSubstr(absl::StrCat("fifo:pid=", ::getpid())));
  EXPECT_EQ(client->peer().address, "fifo://" + path_);
  ASSERT_TRUE(server->peer().credentials.has_value());
  EXPECT_EQ(server->peer().credentials->uid, ::geteuid());
  EXPECT_EQ(server->traits().duplex, false);
  EXPECT_EQ(StatsOf(**listener)->accepted, 1u);
  EXPECT_EQ(StatsOf(**listener)->dropped_records, 0u);

  // The client closes: the server reads end of stream.
  client->Close();
  EXPECT_EQ(RunCoro(io_, server->Read(asio::buffer(&st, 1))).value_or(99), 0u);
}

TEST_F(FifoTransportTest, KilledClientLeavesNothingAndTheOtherKeepsWorking) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC | O_NONBLOCK), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(ready[0]);
    asio::io_context io;
    std::unique_ptr<Transport> transport = NewTransport(io.get_executor());
    absl::StatusOr<std::unique_ptr<Connection>> c =
        RunCoro(io, transport->Connect(Endpoint{"fifo", path_}));
    if (!c.ok()) _exit(1);
    if (!RunCoro(io, Write(**c, "child")).ok()) _exit(2);
    if (::write(ready[1], "r", 1) != 1) _exit(3);
    ::pause();
    _exit(0);
  }
  ::close(ready[1]);
  std::unique_ptr<Connection> child_side = AcceptOne(**listener, nullptr);
  ASSERT_NE(child_side, nullptr);
  EXPECT_EQ(RunCoro(io_, ReadExactly(*child_side, 5)).value_or("?"), "child");
  char c;
  ASSERT_TRUE(RunUntil(io_, [&] { return ::read(ready[0], &c, 1) == 1; }));
  ::close(ready[0]);

  auto [client, server] = Pair(**listener);
  ASSERT_NE(client, nullptr);
  ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  // The dead client's connection ends; the live one goes on; only the request FIFO is left.
  EXPECT_EQ(RunCoro(io_, child_side->Read(asio::buffer(&c, 1))).value_or(99), 0u);
  EXPECT_THAT(RunCoro(io_, Write(*child_side, "x")), StatusIs(absl::StatusCode::kUnavailable));
  ExpectRoundTrip(*client, *server, "alive");
  EXPECT_THAT(List(dir_), ElementsAre("svc"));
}

TEST_F(FifoTransportTest, GarbageRecordsAreDroppedAndCounted) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  const std::string pid = absl::StrCat(::getpid());
  auto pair_base = [&](const std::string& hex) { return absl::StrCat("svc.", pid, ".", hex); };
  auto record = [&](const std::string& base) {
    return absl::StrCat("CFIFO1 ", pid, " ", base, ".c2s ", base, ".s2c\n");
  };
  // A regular file pair, a symlink pair (to FIFOs of ours elsewhere), a 0666 FIFO pair.
  const std::string regular = pair_base("1111111111111111");
  const std::string links = pair_base("2222222222222222");
  const std::string open_mode = pair_base("3333333333333333");
  char other_pattern[] = "/tmp/courier-fifo-elsewhere-XXXXXX";
  ASSERT_NE(::mkdtemp(other_pattern), nullptr);
  const std::string other = other_pattern;
  for (const char* side : {".c2s", ".s2c"}) {
    ASSERT_EQ(::close(::open((dir_ + "/" + regular + side).c_str(), O_CREAT | O_WRONLY, 0600)), 0);
    const std::string target = other + "/target" + side;
    ASSERT_EQ(::mkfifo(target.c_str(), 0600), 0);
    ASSERT_EQ(::symlink(target.c_str(), (dir_ + "/" + links + side).c_str()), 0);
    const std::string wide = dir_ + "/" + open_mode + side;
    ASSERT_EQ(::mkfifo(wide.c_str(), 0600), 0);
    ASSERT_EQ(::chmod(wide.c_str(), 0666), 0);
  }
  const std::vector<std::string> garbage = {
      "hello\n",
      std::string(5000, 'x') + "\n",
      absl::StrCat("CFIFO1 ", pid, " ../", pair_base("4444444444444444"), ".c2s ../",
                   pair_base("4444444444444444"), ".s2c\n"),
      "CFIFO1 1 .. ..\n",
      record(regular),
      record(links),
      record(open_mode),
  };
  // Records are read from the first Accept on.
  std::vector<absl::Status> errors;
  std::unique_ptr<Connection> server;
  bool accepted = false;
  SpawnAccept(**listener, &errors, &server, &accepted);
  {
    int request = ::open(path_.c_str(), O_WRONLY | O_NONBLOCK);
    ASSERT_GE(request, 0);
    for (const std::string& g : garbage) {
      ASSERT_EQ(::write(request, g.data(), g.size()), static_cast<ssize_t>(g.size()));
    }
    ::close(request);
  }
  EXPECT_TRUE(RunUntil(io_, [&] { return StatsOf(**listener)->dropped_records == garbage.size(); }))
      << StatsOf(**listener)->dropped_records;

  // A real client is served all the same; Accept reported the drops first (rate-limited).
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> client;
  asio::co_spawn(io_, transport_->Connect(endpoint_),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> c) {
                   client = std::move(c);
                 });
  ASSERT_TRUE(RunUntil(io_, [&] { return accepted; }));
  ASSERT_NE(server, nullptr);
  ASSERT_TRUE(RunUntil(io_, [&] { return client.has_value(); }));
  ASSERT_THAT(*client, IsOk());
  ExpectRoundTrip(***client, *server, "still");
  ASSERT_EQ(errors.size(), 1u);  // one report per second at most
  EXPECT_EQ(errors[0].code(), absl::StatusCode::kAborted) << errors[0];
  EXPECT_THAT(errors[0].message(), HasSubstr("dropped"));
  EXPECT_EQ(StatsOf(**listener)->dropped_records, garbage.size());
  // What was not the client's own FIFO pair is left alone.
  for (const char* side : {".c2s", ".s2c"}) {
    EXPECT_TRUE(std::filesystem::exists(dir_ + "/" + regular + side));
    EXPECT_TRUE(std::filesystem::is_symlink(dir_ + "/" + links + side));
    EXPECT_TRUE(std::filesystem::exists(other + "/target" + side));
  }
  std::filesystem::remove_all(other);
}

TEST_F(FifoTransportTest, TakenPathsAreAlreadyExists) {
  ASSERT_EQ(::close(::open(path_.c_str(), O_CREAT | O_WRONLY, 0600)), 0);
  EXPECT_THAT(transport_->Listen(endpoint_),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("not a FIFO")));
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  ASSERT_EQ(::mkdir(path_.c_str(), 0700), 0);
  EXPECT_THAT(transport_->Listen(endpoint_), StatusIs(absl::StatusCode::kAlreadyExists));
  ASSERT_EQ(::rmdir(path_.c_str()), 0);

  absl::StatusOr<std::unique_ptr<Listener>> live = transport_->Listen(endpoint_);
  ASSERT_THAT(live, IsOk());
  EXPECT_THAT(transport_->Listen(endpoint_),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("live server")));
  EXPECT_THAT(List(dir_), ElementsAre("svc"));  // no temporary left behind
}

TEST_F(FifoTransportTest, StaleRequestFifoIsReplaced) {
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  struct stat before, after;
  ASSERT_EQ(::lstat(path_.c_str(), &before), 0);
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  ASSERT_EQ(::lstat(path_.c_str(), &after), 0);
  EXPECT_NE(before.st_ino, after.st_ino);
  auto [client, server] = Pair(**listener);
  ASSERT_NE(client, nullptr);
  ExpectRoundTrip(*client, *server, "fresh");
}

TEST_F(FifoTransportTest, CloseRemovesTheRequestFifoButNotAReplacement) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  (*listener)->Close();
  struct stat st;
  EXPECT_NE(::lstat(path_.c_str(), &st), 0);
  EXPECT_THAT(RunCoro(io_, transport_->Connect(endpoint_)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(path_)));

  listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  ASSERT_EQ(::unlink(path_.c_str()), 0);
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);  // somebody else's now
  (*listener)->Close();
  EXPECT_EQ(::lstat(path_.c_str(), &st), 0);
}

TEST_F(FifoTransportTest, ClientOfAGoneServerIsUnavailableAndCleansUp) {
  // A dead server's FIFO: nobody reads it, refused at once, nothing created.
  ASSERT_EQ(::mkfifo(path_.c_str(), 0600), 0);
  EXPECT_THAT(RunCoro(io_, transport_->Connect(endpoint_)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("nobody serves it")));
  EXPECT_THAT(List(dir_), ElementsAre("svc"));

  // A server that takes the record and dies: seen within a check interval, pair removed.
  int reader = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  asio::steady_timer die(io_, 200ms);
  die.async_wait([&](asio::error_code) { ::close(reader); });
  auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(RunCoro(io_, transport_->Connect(endpoint_)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("server left")));
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_THAT(List(dir_), ElementsAre("svc"));

  // A server that reads but never answers: kUnavailable after the handshake timeout.
  reader = ::open(path_.c_str(), O_RDONLY | O_NONBLOCK);
  ASSERT_GE(reader, 0);
  start = std::chrono::steady_clock::now();
  EXPECT_THAT(RunCoro(io_, transport_->Connect(endpoint_)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("did not answer")));
  EXPECT_GE(std::chrono::steady_clock::now() - start, kHandshakeTimeout - 100ms);
  EXPECT_THAT(List(dir_), ElementsAre("svc"));

  // A caller that gives up (cancels) stops the attempt at once, and the pair goes too.
  using namespace asio::experimental::awaitable_operators;
  start = std::chrono::steady_clock::now();
  asio::steady_timer give_up(io_, 100ms);
  auto raced = RunCoro(io_, [&]() -> asio::awaitable<bool> {
    auto winner =
        co_await (transport_->Connect(endpoint_) || give_up.async_wait(asio::use_awaitable));
    co_return winner.index() == 1;
  }());
  EXPECT_TRUE(raced);
  io_.restart();
  io_.run_for(2s);  // returns when nothing is left to do: the attempt stopped
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  EXPECT_THAT(List(dir_), ElementsAre("svc"));
  ::close(reader);
}

TEST_F(FifoTransportTest, PendingConnectionsAreBounded) {
  absl::StatusOr<std::unique_ptr<Listener>> listener = transport_->Listen(endpoint_);
  ASSERT_THAT(listener, IsOk());
  // One connection is accepted (so records are read); then kMaxPending handshakes finish and
  // wait for an Accept that does not come, and the next record is dropped.
  auto [client, server] = Pair(**listener);
  ASSERT_NE(server, nullptr);
  std::vector<std::optional<absl::StatusOr<std::unique_ptr<Connection>>>> clients(kMaxPending + 1);
  for (size_t i = 0; i < clients.size(); ++i) {
    asio::co_spawn(io_, transport_->Connect(endpoint_),
                   [&, i](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> c) {
                     clients[i] = std::move(c);
                   });
  }
  ASSERT_TRUE(RunUntil(io_, [&] {
    return std::all_of(clients.begin(), clients.end(), [](auto& c) { return c.has_value(); });
  }));
  size_t ok = 0;
  for (auto& c : clients) ok += c->ok() ? 1 : 0;
  EXPECT_EQ(ok, kMaxPending);
  EXPECT_EQ(StatsOf(**listener)->dropped_records, 1u);
  EXPECT_THAT(List(dir_), ElementsAre("svc"));
}

TEST_F(FifoTransportTest, BadAddresses) {
  for (const char* address :
       {"relative/svc", "/tmp/", "/tmp/.hidden", "/tmp/a b", "/tmp/x?mode=0600"}) {
    EXPECT_THAT(transport_->Listen(Endpoint{"fifo", address}),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << address;
    EXPECT_THAT(RunCoro(io_, transport_->Connect(Endpoint{"fifo", address})),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << address;
  }
}

}  // namespace
}  // namespace courier::transport::fifo
