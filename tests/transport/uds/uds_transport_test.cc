// unix:// specifics beyond the conformance suite: socket files (mode, stale and live files,
// removal), abstract names, peer credentials, address limits and a full backlog.
#include "transport/uds/uds_transport.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/buffer.hpp"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/connection_io.h"
#include "tests/testing/status_matchers.h"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::uds {
namespace {

using ::courier::testing::ReadExactly;
using ::courier::testing::Write;

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;

std::optional<struct stat> Lstat(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return std::nullopt;
  return st;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream contents;
  contents << in.rdbuf();
  return contents.str();
}

sockaddr_un SocketAddress(std::string_view sun_path) {
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::copy(sun_path.begin(), sun_path.end(), address.sun_path);
  return address;
}

socklen_t SocketAddressLength(std::string_view sun_path) {
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + sun_path.size());
}

// A socket file nobody listens on, as a crashed server leaves behind.
void MakeStaleSocketFile(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un address = SocketAddress(path);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&address), SocketAddressLength(path)), 0)
      << std::strerror(errno);
  ::close(fd);
}

class UdsTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TMPDIR");
    std::string templ = absl::StrCat(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp", "/uds-XXXXXX");
    ASSERT_NE(::mkdtemp(templ.data()), nullptr) << std::strerror(errno);
    dir_ = templ;
    std::error_code ignored;
    cwd_ = std::filesystem::current_path(ignored);
  }
  void TearDown() override {
    std::error_code ignored;
    if (!cwd_.empty()) std::filesystem::current_path(cwd_, ignored);  // tests may chdir
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }

  std::string PathIn(std::string_view name) const { return dir_ + "/" + std::string(name); }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(std::string address) {
    return transport_->Listen(Endpoint{"unix", std::move(address)});
  }

  // Connects to `listener` and accepts: {client, server}, or nulls after a failure.
  std::pair<std::unique_ptr<Connection>, std::unique_ptr<Connection>> Connect(Listener& listener) {
    std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
    asio::co_spawn(io_, listener.Accept(io_.get_executor()),
                   [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                     accepted = std::move(result);
                   });
    absl::StatusOr<std::unique_ptr<Connection>> client =
        RunCoro(io_, transport_->Connect(listener.local_endpoint()));
    EXPECT_THAT(client, IsOk());
    if (!client.ok()) listener.Close();
    if (!RunUntil(io_, [&] { return accepted.has_value(); })) {
      ADD_FAILURE() << "Accept did not complete";
      return {};
    }
    EXPECT_THAT(*accepted, IsOk());
    if (!client.ok() || !accepted->ok()) return {};
    return {*std::move(client), **std::move(accepted)};
  }

  void ExpectRoundTrip(Connection& a, Connection& b) {
    EXPECT_THAT(RunCoro(io_, Write(a, "ping")), IsOk());
    absl::StatusOr<std::string> got = RunCoro(io_, ReadExactly(b, 4));
    ASSERT_THAT(got, IsOk());
    EXPECT_EQ(*got, "ping");
  }

  std::string dir_;
  std::filesystem::path cwd_;
  asio::io_context io_;
  std::unique_ptr<Transport> transport_ = NewTransport(io_.get_executor());
};

TEST_F(UdsTransportTest, SocketFileModeIs0600ByDefault) {
  std::string path = PathIn("s.sock");
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path);
  ASSERT_THAT(listener, IsOk());
  std::optional<struct stat> st = Lstat(path);
  ASSERT_TRUE(st.has_value());
  EXPECT_TRUE(S_ISSOCK(st->st_mode));
  EXPECT_EQ(st->st_mode & 07777, 0600u);
  EXPECT_EQ((*listener)->local_endpoint(), (Endpoint{"unix", path}));
  EXPECT_EQ((*listener)->local_endpoint().ToString(), absl::StrCat("unix://", path));
  auto [client, server] = Connect(**listener);
  ASSERT_NE(client, nullptr);
  ExpectRoundTrip(*client, *server);
}

TEST_F(UdsTransportTest, ModeQuerySetsTheMode) {
  std::string path = PathIn("s.sock");
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path + "?mode=0660");
  ASSERT_THAT(listener, IsOk());
  std::optional<struct stat> st = Lstat(path);
  ASSERT_TRUE(st.has_value());
  EXPECT_EQ(st->st_mode & 07777, 0660u);
  // Where peers reach us carries no listen options.
  EXPECT_EQ((*listener)->local_endpoint(), (Endpoint{"unix", path}));
  auto [client, server] = Connect(**listener);
  EXPECT_NE(client, nullptr);
}

TEST_F(UdsTransportTest, BadQueryIsInvalidArgument) {
  std::string path = PathIn("s.sock");
  for (std::string query :
       {"?mode=9", "?mode=", "?mode=01777", "?mode=rw", "?owner=me", "?mode=0600&backlog=5"}) {
    SCOPED_TRACE(query);
    EXPECT_THAT(Listen(path + query), StatusIs(absl::StatusCode::kInvalidArgument));
  }
  EXPECT_THAT(Listen("@courier-test-abstract?mode=0600"),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_FALSE(Lstat(path).has_value());
}

TEST_F(UdsTransportTest, StaleSocketFileIsReplaced) {
  std::string path = PathIn("s.sock");
  MakeStaleSocketFile(path);
  ASSERT_TRUE(Lstat(path).has_value());
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path);
  ASSERT_THAT(listener, IsOk());
  auto [client, server] = Connect(**listener);
  ASSERT_NE(client, nullptr);
  ExpectRoundTrip(*client, *server);
}

TEST_F(UdsTransportTest, LiveSocketIsAlreadyExists) {
  std::string path = PathIn("s.sock");
  absl::StatusOr<std::unique_ptr<Listener>> first = Listen(path);
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(Listen(path),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("already listening on")));
  // The first server keeps its file and still answers.
  EXPECT_TRUE(Lstat(path).has_value());
  auto [client, server] = Connect(**first);
  EXPECT_NE(client, nullptr);
}

TEST_F(UdsTransportTest, RegularFileIsAlreadyExistsAndUntouched) {
  std::string path = PathIn("s.sock");
  std::ofstream(path) << "precious";
  EXPECT_THAT(Listen(path),
              StatusIs(absl::StatusCode::kAlreadyExists, HasSubstr("exists and is not a socket")));
  EXPECT_EQ(ReadFile(path), "precious");
}

TEST_F(UdsTransportTest, CloseRemovesTheSocketFile) {
  std::string path = PathIn("s.sock");
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path);
  ASSERT_THAT(listener, IsOk());
  ASSERT_TRUE(Lstat(path).has_value());
  (*listener)->Close();
  EXPECT_FALSE(Lstat(path).has_value());
  (*listener)->Close();  // idempotent
  // The path can be listened on again at once.
  EXPECT_THAT(Listen(path), IsOk());
}

TEST_F(UdsTransportTest, DestroyingTheListenerRemovesTheSocketFile) {
  std::string path = PathIn("s.sock");
  {
    absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path);
    ASSERT_THAT(listener, IsOk());
  }
  EXPECT_FALSE(Lstat(path).has_value());
}

TEST_F(UdsTransportTest, CloseLeavesAFileThatReplacedOursAlone) {
  std::string path = PathIn("s.sock");
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path);
  ASSERT_THAT(listener, IsOk());
  ASSERT_EQ(::unlink(path.c_str()), 0);
  std::ofstream(path) << "someone else's";
  (*listener)->Close();
  EXPECT_EQ(ReadFile(path), "someone else's");
}

TEST_F(UdsTransportTest, AbstractNameLeavesNoFile) {
  std::string name = absl::StrCat("courier-uds-test-", ::getpid());
  ASSERT_EQ(::chdir(dir_.c_str()), 0);  // so that a file made by mistake would show up here
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen("@" + name);
  ASSERT_THAT(listener, IsOk());
  Endpoint local = (*listener)->local_endpoint();
  EXPECT_EQ(local, (Endpoint{"unix", "@" + name}));
  EXPECT_EQ(local.ToString(), "unix:@" + name);
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
  auto [client, server] = Connect(**listener);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->peer().address, "unix:@" + name);
  ExpectRoundTrip(*server, *client);
  (*listener)->Close();
  EXPECT_TRUE(std::filesystem::is_empty(dir_));
}

TEST_F(UdsTransportTest, LoopbackEndpointsAreFreshAbstractNames) {
  Endpoint a = LoopbackEndpoint();
  Endpoint b = LoopbackEndpoint();
  EXPECT_EQ(a.scheme, "unix");
  EXPECT_THAT(a.address, ::testing::StartsWith(absl::StrCat("@courier-", ::getpid(), "-")));
  EXPECT_NE(a, b);
}

TEST_F(UdsTransportTest, AbstractNameInUseIsAlreadyExists) {
  Endpoint endpoint = LoopbackEndpoint();
  absl::StatusOr<std::unique_ptr<Listener>> first = transport_->Listen(endpoint);
  ASSERT_THAT(first, IsOk());
  EXPECT_THAT(transport_->Listen(endpoint), StatusIs(absl::StatusCode::kAlreadyExists));
}

TEST_F(UdsTransportTest, RelativePath) {
  ASSERT_EQ(::chdir(dir_.c_str()), 0);
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen("rel.sock");
  ASSERT_THAT(listener, IsOk());
  EXPECT_EQ((*listener)->local_endpoint().ToString(), "unix:rel.sock");
  EXPECT_TRUE(Lstat(PathIn("rel.sock")).has_value());
  auto [client, server] = Connect(**listener);
  EXPECT_NE(client, nullptr);
  (*listener)->Close();
  EXPECT_FALSE(Lstat(PathIn("rel.sock")).has_value());
}

TEST_F(UdsTransportTest, PeerCredentialsOnBothSides) {
  std::string path = PathIn("s.sock");
  absl::StatusOr<std::unique_ptr<Listener>> listener = Listen(path);
  ASSERT_THAT(listener, IsOk());
  auto [client, server] = Connect(**listener);
  ASSERT_NE(client, nullptr);
  PeerCredentials me{.pid = ::getpid(), .uid = ::getuid(), .gid = ::getgid()};
  EXPECT_EQ(server->peer().credentials, me);
  EXPECT_EQ(client->peer().credentials, me);
  EXPECT_EQ(client->peer().address, absl::StrCat("unix://", path));
  // The client socket has no name: logs name it by its kernel credentials.
  EXPECT_EQ(server->peer().address,
            absl::StrCat("unix:pid=", me.pid, ",uid=", me.uid, ",gid=", me.gid));
}

TEST_F(UdsTransportTest, TooLongPathIsInvalidArgument) {
  std::string path = PathIn(std::string(200, 'a'));
  EXPECT_THAT(Listen(path), StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("107")));
  EXPECT_THAT(RunCoro(io_, transport_->Connect(Endpoint{"unix", path})),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Listen("@" + std::string(107, 'a')), StatusIs(absl::StatusCode::kInvalidArgument));
  // The longest that fits.
  std::string longest = PathIn("");
  longest.append(107 - longest.size(), 'b');
  EXPECT_THAT(Listen(longest), IsOk());
  EXPECT_THAT(Listen("@" + std::string(106, 'c')), IsOk());
}

TEST_F(UdsTransportTest, ListenInAMissingDirectoryIsNotFound) {
  EXPECT_THAT(Listen(PathIn("no/such/dir/s.sock")), StatusIs(absl::StatusCode::kNotFound));
}

TEST_F(UdsTransportTest, ConnectToMissingPathIsUnavailable) {
  std::string path = PathIn("missing.sock");
  EXPECT_THAT(RunCoro(io_, transport_->Connect(Endpoint{"unix", path})),
              StatusIs(absl::StatusCode::kUnavailable,
                       HasSubstr(absl::StrCat("unix connect ", path, ": "))));
}

TEST_F(UdsTransportTest, ConnectToStaleSocketFileIsUnavailable) {
  std::string path = PathIn("s.sock");
  MakeStaleSocketFile(path);
  EXPECT_THAT(RunCoro(io_, transport_->Connect(Endpoint{"unix", path})),
              StatusIs(absl::StatusCode::kUnavailable));
}

// A listener with the smallest backlog, filled up by connections nobody accepts.
class FullBacklog {
 public:
  explicit FullBacklog(std::string_view abstract_name)
      : sun_path_(std::string(1, '\0') + std::string(abstract_name)) {
    listener_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address = SocketAddress(sun_path_);
    if (::bind(listener_, reinterpret_cast<sockaddr*>(&address), SocketAddressLength(sun_path_)) !=
            0 ||
        ::listen(listener_, 0) != 0) {
      return;
    }
    for (int i = 0; i < 64; ++i) {
      int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (::connect(fd, reinterpret_cast<sockaddr*>(&address), SocketAddressLength(sun_path_)) !=
          0) {
        full_ = errno == EAGAIN;
        ::close(fd);
        return;
      }
      clients_.push_back(fd);
    }
  }
  ~FullBacklog() {
    for (int fd : clients_) ::close(fd);
    for (int fd : accepted_) ::close(fd);
    ::close(listener_);
  }
  bool full() const { return full_; }
  // Makes room for one more connection.
  void AcceptOne() { accepted_.push_back(::accept(listener_, nullptr, nullptr)); }

 private:
  std::string sun_path_;
  int listener_ = -1;
  bool full_ = false;
  std::vector<int> clients_;
  std::vector<int> accepted_;
};

TEST_F(UdsTransportTest, ConnectWaitsWhileTheBacklogIsFull) {
  Endpoint endpoint = LoopbackEndpoint();
  FullBacklog backlog(endpoint.address.substr(1));
  ASSERT_TRUE(backlog.full());
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> connected;
  asio::co_spawn(io_, transport_->Connect(endpoint),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> result) {
                   connected = std::move(result);
                 });
  io_.restart();
  io_.poll();  // the first attempt fails with EAGAIN; Connect waits to retry
  ASSERT_FALSE(connected.has_value());
  backlog.AcceptOne();
  ASSERT_TRUE(RunUntil(io_, [&] { return connected.has_value(); }));
  EXPECT_THAT(*connected, IsOk());
}

TEST_F(UdsTransportTest, ConnectGivesUpWhenTheBacklogStaysFull) {
  Endpoint endpoint = LoopbackEndpoint();
  FullBacklog backlog(endpoint.address.substr(1));
  ASSERT_TRUE(backlog.full());
  EXPECT_THAT(RunCoro(io_, transport_->Connect(endpoint)),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr("backlog")));
}

}  // namespace
}  // namespace courier::transport::uds
