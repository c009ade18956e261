// udp:// over real sockets: a lossy relay, a garbage flood, a server restart, a dead server.
#include "transport/udp/udp_transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <deque>
#include <random>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/datagram_proxy.h"
#include "tests/testing/status_matchers.h"

namespace courier::transport::udp {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::RunCoro;
using ::courier::testing::RunUntil;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}
uint16_t PortOf(const Endpoint& e) {
  return static_cast<uint16_t>(std::stoi(e.address.substr(e.address.rfind(':') + 1)));
}

// Forwards between one client and the server, dropping, duplicating and holding back datagrams.
class LossyRelay {
 public:
  LossyRelay(uint16_t server_port, double loss, double dup, double reorder)
      : loss_(loss), dup_(dup), reorder_(reorder) {
    front_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in a = Loopback(0);
    ::bind(front_, reinterpret_cast<sockaddr*>(&a), sizeof(a));
    socklen_t n = sizeof(a);
    ::getsockname(front_, reinterpret_cast<sockaddr*>(&a), &n);
    port_ = ntohs(a.sin_port);
    back_ = ::socket(AF_INET, SOCK_DGRAM, 0);
    sockaddr_in s = Loopback(server_port);
    ::connect(back_, reinterpret_cast<sockaddr*>(&s), sizeof(s));
    thread_ = std::thread([this] { Run(); });
  }
  ~LossyRelay() {
    stop_ = true;
    thread_.join();
    ::close(front_);
    ::close(back_);
  }
  uint16_t port() const { return port_; }
  uint64_t dropped() const { return dropped_; }

 private:
  void Run() {
    std::mt19937 rng(7);
    std::uniform_real_distribution<double> u(0, 1);
    sockaddr_in client{};
    bool have_client = false;
    std::deque<std::pair<int, std::string>> held;  // (direction, bytes)
    char buf[70000];
    while (!stop_) {
      pollfd fds[2] = {{front_, POLLIN, 0}, {back_, POLLIN, 0}};
      ::poll(fds, 2, 2);
      for (int i = 0; i < 2; ++i) {
        if (!(fds[i].revents & POLLIN)) continue;
        sockaddr_in from{};
        socklen_t len = sizeof(from);
        ssize_t n = ::recvfrom(fds[i].fd, buf, sizeof(buf), MSG_DONTWAIT,
                               reinterpret_cast<sockaddr*>(&from), &len);
        if (n < 0) continue;
        if (i == 0) {
          client = from;
          have_client = true;
        }
        if (u(rng) < loss_) {
          ++dropped_;
          continue;
        }
        std::string d(buf, static_cast<size_t>(n));
        if (u(rng) < reorder_) {
          held.emplace_back(i, d);
          continue;
        }
        Send(i, d, client, have_client);
        if (u(rng) < dup_) Send(i, d, client, have_client);
      }
      while (held.size() > 3 || (!held.empty() && fds[0].revents == 0 && fds[1].revents == 0)) {
        Send(held.front().first, held.front().second, client, have_client);
        held.pop_front();
      }
    }
  }
  void Send(int from_side, const std::string& d, const sockaddr_in& client, bool have_client) {
    if (from_side == 0) {
      ::send(back_, d.data(), d.size(), MSG_DONTWAIT);
    } else if (have_client) {
      ::sendto(front_, d.data(), d.size(), MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&client),
               sizeof(client));
    }
  }
  double loss_, dup_, reorder_;
  int front_ = -1, back_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> dropped_{0};
  std::thread thread_;
};

asio::awaitable<absl::Status> WriteAll(Connection& c, std::string data) {
  asio::const_buffer b(data.data(), data.size());
  co_return co_await c.Write(std::span<const asio::const_buffer>(&b, 1));
}
asio::awaitable<absl::StatusOr<std::string>> ReadN(Connection& c, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    absl::StatusOr<size_t> r = co_await c.Read(asio::buffer(out.data() + got, n - got));
    if (!r.ok()) co_return r.status();
    if (*r == 0) co_return absl::DataLossError("end of stream");
    got += *r;
  }
  co_return out;
}

struct Pair {
  std::unique_ptr<Listener> listener;
  std::unique_ptr<Connection> server, client;
};

Pair Open(asio::io_context& io, Transport& t, const std::string& listen_at,
          std::optional<uint16_t> dial_port = std::nullopt, const std::string& query = "") {
  Pair p;
  p.listener = t.Listen(Endpoint{"udp", listen_at}).value();
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::co_spawn(io, p.listener->Accept(io.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> r) {
                   accepted = std::move(r);
                 });
  Endpoint to = p.listener->local_endpoint();
  if (dial_port) to.address = absl::StrCat("127.0.0.1:", *dial_port, query);
  absl::StatusOr<std::unique_ptr<Connection>> client = RunCoro(io, t.Connect(to));
  EXPECT_THAT(client, IsOk());
  EXPECT_TRUE(RunUntil(io, [&] { return accepted.has_value(); }));
  if (client.ok()) p.client = *std::move(client);
  if (accepted && accepted->ok()) p.server = **std::move(accepted);
  return p;
}

std::string Pattern(size_t n, int salt) {
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(i * 13 + salt + i / 997);
  return s;
}

class LossTest : public ::testing::TestWithParam<double> {};

TEST_P(LossTest, OneMebibyteAndManySmallWritesArriveIntactAndInOrder) {
  asio::io_context io;
  auto transport = NewTransport(io.get_executor());
  auto listener = transport->Listen(Endpoint{"udp", "127.0.0.1:0?window=256k"}).value();
  LossyRelay relay(PortOf(listener->local_endpoint()), GetParam(), 0.1, 0.1);
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::co_spawn(io, listener->Accept(io.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> r) {
                   accepted = std::move(r);
                 });
  absl::StatusOr<std::unique_ptr<Connection>> client =
      RunCoro(io, transport->Connect(Endpoint{
                      "udp", absl::StrCat("127.0.0.1:", relay.port(), "?window=256k&dgram=1200")}));
  ASSERT_THAT(client, IsOk());
  ASSERT_TRUE(RunUntil(io, [&] { return accepted.has_value(); }));
  ASSERT_THAT(*accepted, IsOk());
  Connection& server = ***accepted;
  std::string big = Pattern(1 << 20, 1);
  std::string small;
  for (int i = 0; i < 200; ++i) small += Pattern(1 + i % 50, i);
  std::optional<absl::Status> written;
  // A named lambda: a coroutine lambda's captures live in the lambda object, which must outlive
  // the coroutine (a temporary would die at the end of the co_spawn statement).
  auto write_all = [&]() -> asio::awaitable<absl::Status> {
    absl::Status s = co_await WriteAll(**client, big);
    for (int i = 0, at = 0; i < 200 && s.ok(); at += 1 + i % 50, ++i) {
      s = co_await WriteAll(**client, small.substr(at, 1 + i % 50));
    }
    co_return s;
  };
  asio::co_spawn(io, write_all(), [&](std::exception_ptr, absl::Status s) { written = s; });
  absl::StatusOr<std::string> got =
      RunCoro(io, ReadN(server, big.size() + small.size()), std::chrono::seconds(60));
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(*got == big + small) << "the bytes differ";
  ASSERT_TRUE(RunUntil(io, [&] { return written.has_value(); }));
  EXPECT_THAT(*written, IsOk());
  std::optional<ConnectionStats> stats = GetConnectionStats(**client);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GT(stats->retransmits, 0u);
  std::printf("loss %.0f%%: %llu retransmits, relay dropped %llu\n", GetParam() * 100,
              static_cast<unsigned long long>(stats->retransmits),
              static_cast<unsigned long long>(relay.dropped()));
}

INSTANTIATE_TEST_SUITE_P(Loss, LossTest, ::testing::Values(0.1, 0.3));

TEST(UdpTransportTest, ServerGoneIsUnavailablePromptly) {
  asio::io_context io;
  auto transport = NewTransport(io.get_executor());
  Pair p = Open(io, *transport, "127.0.0.1:0");
  ASSERT_NE(p.server, nullptr);
  p.server.reset();
  p.listener.reset();
  // Without FIN acked the old port is closed: the next datagrams draw ICMP port unreachable.
  RunUntil(
      io, [] { return false; }, std::chrono::milliseconds(50));
  const auto start = std::chrono::steady_clock::now();
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) {
    status = RunCoro(io, WriteAll(*p.client, "x"));
    RunUntil(
        io, [] { return false; }, std::chrono::milliseconds(10));
  }
  absl::StatusOr<std::string> read = RunCoro(io, ReadN(*p.client, 1));
  EXPECT_FALSE(read.ok() && status.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// A network that stops delivering anything (both directions blackholed): each side probes, then
// gives up after dead_after with kUnavailable saying the peer went silent.
TEST(UdpTransportTest, SilentPeerIsUnavailableAfterDeadAfter) {
  asio::io_context io;
  auto transport = NewTransport(io.get_executor());
  auto listener = transport->Listen(Endpoint{"udp", "127.0.0.1:0?dead_after_ms=600"});
  ASSERT_THAT(listener, IsOk());
  Endpoint target = (*listener)->local_endpoint();
  target.address = target.address.substr(0, target.address.find('?'));
  auto proxy = ::courier::testing::DatagramProxy::Start(io.get_executor(), target, 1);
  ASSERT_THAT(proxy, IsOk());
  std::optional<absl::StatusOr<std::unique_ptr<Connection>>> accepted;
  asio::co_spawn(io, (*listener)->Accept(io.get_executor()),
                 [&](std::exception_ptr, absl::StatusOr<std::unique_ptr<Connection>> r) {
                   accepted = std::move(r);
                 });
  Endpoint to = (*proxy)->endpoint();
  to.address += "?dead_after_ms=600";
  absl::StatusOr<std::unique_ptr<Connection>> client = RunCoro(io, transport->Connect(to));
  ASSERT_THAT(client, IsOk());
  ASSERT_TRUE(RunUntil(io, [&] { return accepted.has_value(); }));
  ASSERT_THAT(*accepted, IsOk());
  std::unique_ptr<Connection> server = **std::move(accepted);
  ASSERT_THAT(RunCoro(io, WriteAll(**client, "ping")), IsOk());
  ASSERT_EQ(RunCoro(io, ReadN(*server, 4)).value_or(""), "ping");

  for (auto direction : ::courier::testing::kBothDirections) {
    (*proxy)->Set(direction, ::courier::testing::DatagramFault::Blackhole());
  }
  const auto start = std::chrono::steady_clock::now();
  std::optional<absl::StatusOr<size_t>> client_read, server_read;
  char a[16], b[16];
  (*client)->AsyncRead(asio::buffer(a), [&](absl::StatusOr<size_t> r) { client_read = r; });
  server->AsyncRead(asio::buffer(b), [&](absl::StatusOr<size_t> r) { server_read = r; });
  ASSERT_TRUE(RunUntil(
      io, [&] { return client_read.has_value() && server_read.has_value(); },
      std::chrono::seconds(5)));
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_THAT(*client_read, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("silent")));
  EXPECT_THAT(*server_read, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("silent")));
  EXPECT_GE(took, std::chrono::milliseconds(500));
  EXPECT_LT(took, std::chrono::seconds(3));
}

TEST(UdpTransportTest, ServerRestartIsDetectedByTheIncarnation) {
  asio::io_context io;
  auto transport = NewTransport(io.get_executor());
  Pair p = Open(io, *transport, "127.0.0.1:0");
  ASSERT_NE(p.server, nullptr);
  Endpoint at = p.listener->local_endpoint();
  p.server.reset();                                                                      // FIN
  EXPECT_THAT(RunCoro(io, ReadN(*p.client, 1)), StatusIs(absl::StatusCode::kDataLoss));  // EOF
  p.listener.reset();
  absl::StatusOr<std::unique_ptr<Listener>> again;
  for (int i = 0; i < 100; ++i) {
    again = transport->Listen(at);
    if (again.ok()) break;
    RunUntil(
        io, [] { return false; }, std::chrono::milliseconds(20));
  }
  ASSERT_THAT(again, IsOk());
  asio::co_spawn(io, (*again)->Accept(io.get_executor()), asio::detached);
  absl::Status status;
  for (int i = 0; i < 100 && status.ok(); ++i) {
    status = RunCoro(io, WriteAll(*p.client, "after restart"));
    RunUntil(
        io, [] { return false; }, std::chrono::milliseconds(10));
  }
  EXPECT_THAT(status, StatusIs(absl::StatusCode::kUnavailable, HasSubstr("restarted")));
  std::optional<ListenerStats> stats = GetListenerStats(**again);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GT(stats->resets_sent, 0u);
}

TEST(UdpTransportTest, GarbageFloodCreatesNothingWhileAClientRoundTrips) {
  asio::io_context io;
  auto transport = NewTransport(io.get_executor());
  Pair p = Open(io, *transport, "127.0.0.1:0");
  ASSERT_NE(p.server, nullptr);
  sockaddr_in to = Loopback(PortOf(p.listener->local_endpoint()));
  std::mt19937 rng(3);
  for (int burst = 0; burst < 50; ++burst) {
    int fd = ::socket(AF_INET, SOCK_DGRAM, 0);  // a new source port per burst
    for (int i = 0; i < 100; ++i) {
      std::string d(rng() % 120, '\0');
      for (char& ch : d) ch = static_cast<char>(rng());
      if (i % 3 == 0 && d.size() >= 48)
        d.replace(0, 8, std::string("CUD1\x03\0\0\0", 8));  // OPEN, bad cookie
      ::sendto(fd, d.data(), d.size(), 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
    }
    ::close(fd);
    ASSERT_THAT(RunCoro(io, WriteAll(*p.client, "ping")), IsOk());
    absl::StatusOr<std::string> got = RunCoro(io, ReadN(*p.server, 4));
    ASSERT_THAT(got, IsOk());
  }
  RunUntil(
      io, [] { return false; }, std::chrono::milliseconds(50));
  ListenerStats stats = GetListenerStats(*p.listener).value();
  EXPECT_GE(stats.datagrams, 4000u);
  EXPECT_GT(stats.dropped_malformed, 1000u);
  EXPECT_EQ(stats.opened, 1u);
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.open, 1u);
}

}  // namespace
}  // namespace courier::transport::udp
