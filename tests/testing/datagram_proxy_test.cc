// DatagramProxy with raw UDP sockets: forwarding is exact, each fault does what it says in
// each direction (statistically, with a fixed seed), and the bounds hold.
#include "tests/testing/datagram_proxy.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "asio/io_context.hpp"
#include "asio/ip/udp.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace courier::testing {
namespace {

using asio::ip::udp;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kSeed = 20240601;

udp::endpoint ToAsio(const Endpoint& endpoint) {
  absl::StatusOr<HostPort> host_port = SplitHostPort(endpoint.address);
  EXPECT_THAT(host_port, IsOk());
  if (!host_port.ok()) return {};
  return udp::endpoint(asio::ip::make_address(host_port->host),
                       static_cast<uint16_t>(std::stoi(host_port->port)));
}

Endpoint ToEndpoint(const udp::endpoint& endpoint) {
  const std::string host = endpoint.address().to_string();
  return Endpoint{"udp", endpoint.address().is_v6() ? absl::StrCat("[", host, "]:", endpoint.port())
                                                    : absl::StrCat(host, ":", endpoint.port())};
}

// A datagram numbered `seq`, `size` bytes (at least 8), so a lost, repeated or reordered one shows.
std::string Numbered(uint64_t seq, size_t size = 16) {
  std::string out(std::max<size_t>(size, 8), '\0');
  std::memcpy(out.data(), &seq, 8);
  for (size_t i = 8; i < out.size(); ++i) out[i] = static_cast<char>((seq * 31 + i) & 0xff);
  return out;
}
uint64_t SeqOf(const std::string& datagram) {
  uint64_t seq = 0;
  std::memcpy(&seq, datagram.data(), std::min<size_t>(8, datagram.size()));
  return seq;
}

// A bound UDP socket that keeps receiving into `got` while the io_context runs.
struct Peer {
  struct Received {
    std::string bytes;
    udp::endpoint from;
    Clock::time_point at;
  };

  Peer(asio::io_context& io, udp::endpoint bind_to) : socket(io) {
    socket.open(bind_to.protocol());
    socket.bind(bind_to);
    Receive();
  }
  void Receive() {
    socket.async_receive_from(asio::buffer(buffer), from, [this](std::error_code ec, size_t n) {
      if (ec) return;  // closed
      got.push_back(Received{std::string(buffer.data(), n), from, Clock::now()});
      Receive();
    });
  }
  std::vector<uint64_t> seqs(size_t from_index = 0) const {
    std::vector<uint64_t> out;
    for (size_t i = from_index; i < got.size(); ++i) out.push_back(SeqOf(got[i].bytes));
    return out;
  }

  udp::socket socket;
  std::vector<char> buffer = std::vector<char>(DatagramProxy::kMaxDatagram);
  udp::endpoint from;
  std::vector<Received> got;
};

class DatagramProxyTest : public ::testing::Test {
 protected:
  void SetUp() override { StartProxy(DatagramProxy::Options{}); }

  void StartProxy(DatagramProxy::Options options, uint64_t seed = kSeed) {
    proxy_.reset();
    absl::StatusOr<std::unique_ptr<DatagramProxy>> proxy = DatagramProxy::Start(
        io_.get_executor(), ToEndpoint(server_.socket.local_endpoint()), seed, options);
    ASSERT_THAT(proxy, IsOk());
    proxy_ = *std::move(proxy);
    ASSERT_TRUE(Handshake(client_));
  }

  // Sends a first datagram from `client` so the proxy maps it, and learns the proxy's upstream
  // address for it as the server sees it.
  bool Handshake(Peer& client) {
    const size_t before = server_.got.size();
    client.socket.send_to(asio::buffer(std::string("hello")), ToAsio(proxy_->endpoint()));
    if (!RunUntil(io_, [&] { return server_.got.size() > before; })) return false;
    upstream_[&client] = server_.got.back().from;
    server_.got.pop_back();
    return true;
  }

  Peer& receiver(Direction direction) {
    return direction == Direction::kClientToServer ? server_ : client_;
  }

  // Sends seq first..first+count-1 in `direction`, in batches small enough for the default socket
  // buffers, each once the proxy has taken in the last one and the receiver has everything the
  // proxy forwarded (so the kernel drops nothing and the only losses are the proxy's).
  void SendNumbered(Direction direction, uint64_t first, uint64_t count, size_t size = 16) {
    constexpr uint64_t kBatch = 32;
    const DatagramStats& stats = proxy_->stats(direction);
    Peer& to = receiver(direction);
    const uint64_t received_before = stats.received;
    const size_t got_before = to.got.size();
    const uint64_t forwarded_before = stats.forwarded;
    for (uint64_t i = 0; i < count; ++i) {
      const std::string datagram = Numbered(first + i, size);
      if (direction == Direction::kClientToServer) {
        client_.socket.send_to(asio::buffer(datagram), ToAsio(proxy_->endpoint()));
      } else {
        server_.socket.send_to(asio::buffer(datagram), upstream_[&client_]);
      }
      if ((i + 1) % kBatch == 0 || i + 1 == count) {
        ASSERT_TRUE(RunUntil(io_,
                             [&] {
                               return stats.received - received_before == i + 1 &&
                                      to.got.size() - got_before ==
                                          stats.forwarded - forwarded_before;
                             }))
            << "batch ending at " << i;
      }
    }
  }

  asio::io_context io_;
  Peer server_{io_, udp::endpoint(asio::ip::address_v4::loopback(), 0)};  // the target
  Peer client_{io_, udp::endpoint(asio::ip::address_v4::loopback(), 0)};
  std::map<Peer*, udp::endpoint> upstream_;  // per client: its mapping as the server sees it
  std::unique_ptr<DatagramProxy> proxy_;
};

TEST_F(DatagramProxyTest, ForwardsDatagramsUnchangedBothWays) {
  EXPECT_EQ(proxy_->endpoint().scheme, "udp");
  EXPECT_THAT(proxy_->endpoint().address, ::testing::StartsWith("127.0.0.1:"));
  // Sizes up to the IPv4 UDP maximum.
  const std::vector<size_t> sizes = {8, 1000, 9000, 65507};
  for (size_t size : sizes) {
    client_.socket.send_to(asio::buffer(Numbered(size, size)), ToAsio(proxy_->endpoint()));
    server_.socket.send_to(asio::buffer(Numbered(size + 1, size)), upstream_[&client_]);
    ASSERT_TRUE(RunUntil(io_, [&] { return server_.got.size() == 1 && client_.got.size() == 1; }));
    EXPECT_TRUE(server_.got[0].bytes == Numbered(size, size)) << size;
    EXPECT_TRUE(client_.got[0].bytes == Numbered(size + 1, size)) << size;
    // Replies come from the address the client sent to.
    EXPECT_EQ(client_.got[0].from, ToAsio(proxy_->endpoint()));
    server_.got.clear();
    client_.got.clear();
  }
  const DatagramStats want{.received = 4, .forwarded = 4};
  EXPECT_EQ(proxy_->stats(Direction::kServerToClient), want);
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer),
            (DatagramStats{.received = 5, .forwarded = 5}));  // and the handshake
  EXPECT_EQ(proxy_->mappings(), 1u);
}

TEST_F(DatagramProxyTest, DropLosesAboutThatShareAndNothingElse) {
  for (Direction direction : kBothDirections) {
    SCOPED_TRACE(DirectionName(direction));
    proxy_->Set(direction, DatagramFault::Drop(0.1));
    const DatagramStats before = proxy_->stats(direction);
    const size_t got_before = receiver(direction).got.size();
    SendNumbered(direction, 0, 10000);
    const DatagramStats& after = proxy_->stats(direction);
    const uint64_t dropped = after.dropped - before.dropped;
    EXPECT_GE(dropped, 800u);
    EXPECT_LE(dropped, 1200u);
    EXPECT_EQ(after.forwarded - before.forwarded, 10000 - dropped);
    // What arrived is in order, each once.
    const std::vector<uint64_t> seqs = receiver(direction).seqs(got_before);
    EXPECT_EQ(seqs.size(), 10000 - dropped);
    EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
    EXPECT_EQ(std::set<uint64_t>(seqs.begin(), seqs.end()).size(), seqs.size());
    proxy_->ClearFaults();
  }
}

TEST_F(DatagramProxyTest, TheSameSeedDropsTheSameDatagrams) {
  std::vector<uint64_t> runs[2];
  for (std::vector<uint64_t>& run : runs) {
    server_.got.clear();
    StartProxy(DatagramProxy::Options{});
    proxy_->Set(Direction::kClientToServer, DatagramFault::Drop(0.3));
    SendNumbered(Direction::kClientToServer, 0, 500);
    run = server_.seqs();
  }
  EXPECT_EQ(runs[0], runs[1]);
  EXPECT_LT(runs[0].size(), 500u);
  // Another seed drops others.
  server_.got.clear();
  StartProxy(DatagramProxy::Options{}, kSeed + 1);
  proxy_->Set(Direction::kClientToServer, DatagramFault::Drop(0.3));
  SendNumbered(Direction::kClientToServer, 0, 500);
  EXPECT_NE(server_.seqs(), runs[0]);
}

TEST_F(DatagramProxyTest, DuplicatesArriveTwiceBackToBack) {
  for (Direction direction : kBothDirections) {
    SCOPED_TRACE(DirectionName(direction));
    proxy_->Set(direction, DatagramFault::Duplicate(0.2));
    const DatagramStats before = proxy_->stats(direction);
    const size_t got_before = receiver(direction).got.size();
    SendNumbered(direction, 0, 2000);
    const uint64_t duplicated = proxy_->stats(direction).duplicated - before.duplicated;
    EXPECT_GE(duplicated, 320u);  // 400 expected; sd 18
    EXPECT_LE(duplicated, 480u);
    const std::vector<uint64_t> seqs = receiver(direction).seqs(got_before);
    EXPECT_EQ(seqs.size(), 2000 + duplicated);
    std::map<uint64_t, int> times;
    for (uint64_t seq : seqs) ++times[seq];
    EXPECT_EQ(times.size(), 2000u);
    uint64_t twice = 0;
    for (const auto& [seq, n] : times) {
      EXPECT_LE(n, 2) << seq;
      if (n == 2) ++twice;
    }
    EXPECT_EQ(twice, duplicated);
    // A copy follows its original at once; otherwise the order is kept.
    EXPECT_TRUE(std::is_sorted(seqs.begin(), seqs.end()));
    proxy_->ClearFaults();
  }
}

TEST_F(DatagramProxyTest, ReorderSwapsAHeldDatagramWithTheNextOne) {
  for (Direction direction : kBothDirections) {
    SCOPED_TRACE(DirectionName(direction));
    // Long enough that the next datagram, not the timer, releases a held one.
    proxy_->Set(direction, DatagramFault::Reorder(0.2, std::chrono::seconds(2)));
    const DatagramStats before = proxy_->stats(direction);
    Peer& to = receiver(direction);
    const size_t got_before = to.got.size();
    SendNumbered(direction, 0, 2000);
    const uint64_t reordered = proxy_->stats(direction).reordered - before.reordered;
    EXPECT_GE(reordered, 250u);  // each of the 2000 is held with p 0.2 unless it releases one
    EXPECT_LE(reordered, 420u);
    // The last one may still be held: it goes out within reorder_delay.
    ASSERT_TRUE(RunUntil(io_, [&] { return to.got.size() - got_before == 2000; }));
    const std::vector<uint64_t> seqs = to.seqs(got_before);
    EXPECT_EQ(std::set<uint64_t>(seqs.begin(), seqs.end()).size(), 2000u);
    // Every inversion is one held datagram sent right after its successor.
    uint64_t inversions = 0;
    for (size_t i = 0; i + 1 < seqs.size(); ++i) {
      if (seqs[i] > seqs[i + 1]) {
        ++inversions;
        EXPECT_EQ(seqs[i], seqs[i + 1] + 1) << "at " << i;
      }
    }
    // A held last datagram, released by its timer, is not an inversion.
    EXPECT_GE(inversions + 1, reordered);
    EXPECT_LE(inversions, reordered);
    proxy_->ClearFaults();
  }
}

TEST_F(DatagramProxyTest, AHeldDatagramGoesOutAfterTheReorderDelayAtMost) {
  constexpr milliseconds kHold(150);
  proxy_->Set(Direction::kClientToServer, DatagramFault::Reorder(1.0, kHold));
  const auto start = Clock::now();
  client_.socket.send_to(asio::buffer(Numbered(7)), ToAsio(proxy_->endpoint()));
  ASSERT_TRUE(RunUntil(io_, [&] { return server_.got.size() == 1; }));
  EXPECT_GE(server_.got[0].at - start, kHold);
  EXPECT_LT(server_.got[0].at - start, std::chrono::seconds(2));
  EXPECT_EQ(SeqOf(server_.got[0].bytes), 7u);
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer).reordered, 1u);
}

TEST_F(DatagramProxyTest, DelayHoldsEachDatagramAndKeepsTheOrder) {
  constexpr milliseconds kDelay(120);
  proxy_->Set(Direction::kClientToServer, DatagramFault::Delay(kDelay));
  std::vector<Clock::time_point> sent;
  for (uint64_t seq = 0; seq < 5; ++seq) {
    sent.push_back(Clock::now());
    client_.socket.send_to(asio::buffer(Numbered(seq)), ToAsio(proxy_->endpoint()));
  }
  // The undelayed direction is not held up.
  server_.socket.send_to(asio::buffer(Numbered(99)), upstream_[&client_]);
  ASSERT_TRUE(RunUntil(io_, [&] { return client_.got.size() == 1; }));
  EXPECT_LT(client_.got[0].at - sent[0], kDelay);
  EXPECT_TRUE(server_.got.empty());
  ASSERT_TRUE(RunUntil(io_, [&] { return server_.got.size() == 5; }));
  EXPECT_EQ(server_.seqs(), (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_GE(server_.got[i].at - sent[i], kDelay) << i;
    EXPECT_LT(server_.got[i].at - sent[i], std::chrono::seconds(2)) << i;
  }
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer).delayed, 5u);
}

TEST_F(DatagramProxyTest, ShorteningTheDelayReleasesWhatIsDue) {
  proxy_->Set(Direction::kServerToClient, DatagramFault::Delay(std::chrono::seconds(30)));
  server_.socket.send_to(asio::buffer(Numbered(1)), upstream_[&client_]);
  ASSERT_TRUE(
      RunUntil(io_, [&] { return proxy_->stats(Direction::kServerToClient).received == 1; }));
  EXPECT_FALSE(RunUntil(
      io_, [&] { return !client_.got.empty(); }, milliseconds(100)));
  proxy_->ClearFaults();
  ASSERT_TRUE(RunUntil(io_, [&] { return client_.got.size() == 1; }));
  EXPECT_EQ(SeqOf(client_.got[0].bytes), 1u);
}

TEST_F(DatagramProxyTest, BlackholeDropsEverythingUntilCleared) {
  proxy_->Set(Direction::kClientToServer, DatagramFault::Blackhole());
  SendNumbered(Direction::kClientToServer, 0, 100);
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer).dropped, 100u);
  EXPECT_TRUE(server_.got.empty());
  proxy_->ClearFaults();
  SendNumbered(Direction::kClientToServer, 100, 1);
  ASSERT_EQ(server_.got.size(), 1u);
  EXPECT_EQ(SeqOf(server_.got[0].bytes), 100u);
}

TEST_F(DatagramProxyTest, TwoClientPortsGetTwoMappingsAndTheirOwnReplies) {
  Peer second(io_, udp::endpoint(asio::ip::address_v4::loopback(), 0));
  ASSERT_TRUE(Handshake(second));
  EXPECT_EQ(proxy_->mappings(), 2u);
  EXPECT_NE(upstream_[&client_], upstream_[&second]);
  server_.socket.send_to(asio::buffer(Numbered(1)), upstream_[&client_]);
  server_.socket.send_to(asio::buffer(Numbered(2)), upstream_[&second]);
  ASSERT_TRUE(RunUntil(io_, [&] { return client_.got.size() == 1 && second.got.size() == 1; }));
  EXPECT_EQ(SeqOf(client_.got[0].bytes), 1u);
  EXPECT_EQ(SeqOf(second.got[0].bytes), 2u);
  // The same port again reuses its mapping.
  ASSERT_TRUE(Handshake(client_));
  EXPECT_EQ(proxy_->mappings(), 2u);
}

TEST_F(DatagramProxyTest, ClientsBeyondTheMappingBoundAreDroppedAndCounted) {
  StartProxy(DatagramProxy::Options{.max_mappings = 2});
  Peer second(io_, udp::endpoint(asio::ip::address_v4::loopback(), 0));
  Peer third(io_, udp::endpoint(asio::ip::address_v4::loopback(), 0));
  ASSERT_TRUE(Handshake(second));
  third.socket.send_to(asio::buffer(Numbered(3)), ToAsio(proxy_->endpoint()));
  ASSERT_TRUE(
      RunUntil(io_, [&] { return proxy_->stats(Direction::kClientToServer).overflowed == 1; }));
  EXPECT_EQ(proxy_->mappings(), 2u);
  EXPECT_TRUE(server_.got.empty());
  // Mapped clients still get through.
  SendNumbered(Direction::kClientToServer, 10, 1);
  EXPECT_EQ(server_.got.size(), 1u);
}

TEST_F(DatagramProxyTest, HeldDatagramsBeyondTheBoundAreDroppedAndCounted) {
  StartProxy(DatagramProxy::Options{.max_held = 10});
  proxy_->Set(Direction::kClientToServer, DatagramFault::Delay(milliseconds(200)));
  SendNumbered(Direction::kClientToServer, 0, 25);
  EXPECT_EQ(proxy_->stats(Direction::kClientToServer).overflowed, 15u);
  ASSERT_TRUE(RunUntil(io_, [&] { return server_.got.size() == 10; }));
  EXPECT_EQ(server_.seqs(), (std::vector<uint64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST_F(DatagramProxyTest, CloseStopsForwarding) {
  proxy_->Set(Direction::kClientToServer, DatagramFault::Delay(milliseconds(50)));
  client_.socket.send_to(asio::buffer(Numbered(1)), ToAsio(proxy_->endpoint()));
  ASSERT_TRUE(
      RunUntil(io_, [&] { return proxy_->stats(Direction::kClientToServer).received == 2; }));
  proxy_->Close();
  EXPECT_EQ(proxy_->mappings(), 0u);
  EXPECT_FALSE(RunUntil(
      io_, [&] { return !server_.got.empty(); }, milliseconds(200)));
  proxy_->Close();  // idempotent
}

TEST_F(DatagramProxyTest, AnIpv6TargetGetsAnIpv6Proxy) {
  udp::socket probe(io_);
  std::error_code ec;
  probe.open(udp::v6(), ec);
  if (!ec) probe.bind(udp::endpoint(asio::ip::address_v6::loopback(), 0), ec);
  if (ec) GTEST_SKIP() << "no IPv6 loopback: " << ec.message();
  probe.close();
  Peer server6(io_, udp::endpoint(asio::ip::address_v6::loopback(), 0));
  Peer client6(io_, udp::endpoint(asio::ip::address_v6::loopback(), 0));
  absl::StatusOr<std::unique_ptr<DatagramProxy>> proxy =
      DatagramProxy::Start(io_.get_executor(), ToEndpoint(server6.socket.local_endpoint()), kSeed);
  ASSERT_THAT(proxy, IsOk());
  EXPECT_THAT((*proxy)->endpoint().address, ::testing::StartsWith("[::1]:"));
  client6.socket.send_to(asio::buffer(Numbered(6)), ToAsio((*proxy)->endpoint()));
  ASSERT_TRUE(RunUntil(io_, [&] { return server6.got.size() == 1; }));
  server6.socket.send_to(asio::buffer(Numbered(7)), server6.got[0].from);
  ASSERT_TRUE(RunUntil(io_, [&] { return client6.got.size() == 1; }));
  EXPECT_EQ(SeqOf(client6.got[0].bytes), 7u);
}

TEST_F(DatagramProxyTest, BadTargetsAreInvalidArgument) {
  EXPECT_THAT(DatagramProxy::Start(io_.get_executor(), Endpoint{"tcp", "127.0.0.1:1"}, kSeed),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DatagramProxy::Start(io_.get_executor(), Endpoint{"udp", "no-port"}, kSeed),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DatagramProxy::Start(io_.get_executor(), Endpoint{"udp", "host.invalid:5"}, kSeed),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

}  // namespace
}  // namespace courier::testing
