// The kv example's Add over udp:// through a lossy network (DatagramProxy, both directions:
// loss, 10% duplication, 10% reordering): every call that returned OK ran exactly once, every
// call that did not ran at most once, and every call ended (none lost without an error). The
// server side counts executions per call; each call's delta is unique, so a double execution
// cannot hide.
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kv/kv.courier.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "tests/testing/datagram_proxy.h"
#include "tests/testing/status_matchers.h"
#include "transport/udp/udp_transport.h"

namespace courier {
namespace {

namespace kv = ::courier::examples::kv;
using ::courier::testing::DatagramFault;
using ::courier::testing::DatagramProxy;
using ::courier::testing::Direction;
using ::courier::testing::IsOk;
using ::courier::testing::RunUntil;

// Add as kv_server does it, counting how often each delta was applied.
class CountingKv final : public kv::KvService {
 public:
  asio::awaitable<absl::StatusOr<kv::AddReply>> Add(ServerContext&, kv::AddRequest r) override {
    ++executions[r.delta()];
    total += r.delta();
    kv::AddReply reply;
    reply.set_value(total);
    co_return reply;
  }
  std::map<int64_t, int> executions;
  int64_t total = 0;
};

struct Outcome {
  int64_t delta = 0;
  bool done = false;
  absl::Status status;
};

class KvUdpFaultTest : public ::testing::TestWithParam<double> {};

TEST_P(KvUdpFaultTest, EveryCallRunsAtMostOnceAndOkCallsExactlyOnce) {
  const double loss = GetParam();
  constexpr int kClients = 4;
  constexpr int kCallsPerClient = 50;
  CountingKv service;
  asio::io_context io;
  Server server(io.get_executor());
  ASSERT_THAT(server.AddService(service), IsOk());
  absl::StatusOr<Endpoint> endpoint = server.Listen("udp://127.0.0.1:0");
  ASSERT_THAT(endpoint, IsOk());
  absl::StatusOr<std::unique_ptr<DatagramProxy>> proxy = DatagramProxy::Start(
      io.get_executor(), *endpoint, /*seed=*/static_cast<uint64_t>(loss * 100));
  ASSERT_THAT(proxy, IsOk());
  const DatagramFault fault{.drop = loss,
                            .duplicate = 0.1,
                            .reorder = 0.1,
                            .reorder_delay = std::chrono::milliseconds(5)};
  (*proxy)->Set(Direction::kClientToServer, fault);
  (*proxy)->Set(Direction::kServerToClient, fault);

  std::vector<std::shared_ptr<Channel>> channels;
  std::vector<std::unique_ptr<kv::KvStub>> stubs;
  for (int c = 0; c < kClients; ++c) {
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(io.get_executor(), (*proxy)->endpoint().ToString());
    ASSERT_THAT(channel, IsOk());
    channels.push_back(*channel);
    stubs.push_back(std::make_unique<kv::KvStub>(*channel));
  }
  // Each client makes its calls one after another (so each call is a few datagrams of its own,
  // not batched with the others), the clients at once.
  std::vector<Outcome> outcomes(kClients * kCallsPerClient);
  for (int c = 0; c < kClients; ++c) {
    for (int i = 0; i < kCallsPerClient; ++i)
      outcomes[c * kCallsPerClient + i].delta = c * 1000 + i + 1;
    auto client = [](kv::KvStub& stub, std::span<Outcome> mine) -> asio::awaitable<void> {
      for (Outcome& outcome : mine) {
        kv::AddRequest request;
        request.set_key("total");
        request.set_delta(outcome.delta);
        CallOptions options;
        options.timeout = std::chrono::seconds(20);
        options.wait_for_ready = true;
        absl::StatusOr<kv::AddReply> reply = co_await stub.Add(request, options);
        outcome.status = reply.status();
        outcome.done = true;
      }
    };
    asio::co_spawn(io,
                   client(*stubs[c], std::span<Outcome>(outcomes).subspan(c * kCallsPerClient,
                                                                          kCallsPerClient)),
                   asio::detached);
  }
  const bool all_done = RunUntil(
      io,
      [&] {
        for (const Outcome& o : outcomes) {
          if (!o.done) return false;
        }
        return true;
      },
      std::chrono::seconds(60));
  ASSERT_TRUE(all_done) << "calls still pending after 60 s";

  int ok = 0;
  int failed = 0;
  int double_executions = 0;
  int64_t sum_ok = 0;
  int64_t sum_executed = 0;
  for (const Outcome& o : outcomes) {
    const int runs = service.executions.count(o.delta) ? service.executions[o.delta] : 0;
    if (runs > 1) ++double_executions;
    if (o.status.ok()) {
      ++ok;
      sum_ok += o.delta;
      EXPECT_EQ(runs, 1) << "call with delta " << o.delta << " returned OK";
    } else {
      ++failed;
      EXPECT_LE(runs, 1) << "call with delta " << o.delta << ": " << o.status;
    }
    sum_executed += o.delta * runs;
  }
  EXPECT_EQ(double_executions, 0);
  EXPECT_EQ(service.total, sum_executed);
  EXPECT_LE(sum_ok, service.total);
  for (const auto& [delta, runs] : service.executions) {
    EXPECT_TRUE(delta >= 1 && delta % 1000 <= kCallsPerClient && delta / 1000 < kClients)
        << "the server ran a delta nobody sent: " << delta;
  }
  // Close everything so that every connection's counters reach the process totals.
  const transport::udp::ConnectionStats before = transport::udp::FinishedConnectionTotals();
  stubs.clear();
  for (auto& channel : channels) channel->Close();
  channels.clear();
  asio::co_spawn(io, server.Shutdown(), asio::detached);
  // A closing udp connection lingers until its FIN is acknowledged (at most dead_after, 3 s).
  RunUntil(
      io, [] { return false; }, std::chrono::milliseconds(3500));
  const transport::udp::ConnectionStats after = transport::udp::FinishedConnectionTotals();
  const testing::DatagramStats& up = (*proxy)->stats(Direction::kClientToServer);
  const testing::DatagramStats& down = (*proxy)->stats(Direction::kServerToClient);
  const std::string figures = absl::StrCat(
      "loss ", loss, ": ", outcomes.size(), " calls from ", kClients, " clients, ", ok, " OK, ",
      failed, " failed, double executions ", double_executions, "; client->server ", up.received,
      " datagrams, ", up.dropped, " dropped, ", up.duplicated, " duplicated, ", up.reordered,
      " reordered; server->client ", down.received, " datagrams, ", down.dropped, " dropped, ",
      down.duplicated, " duplicated, ", down.reordered,
      " reordered; udp connections: ", after.retransmits - before.retransmits, " retransmits, ",
      after.duplicates - before.duplicates, " duplicates suppressed");
  std::cout << "udp fault figures: " << figures << "\n";
  RecordProperty("figures", figures);
  // With a 20 s deadline, retransmission gets every call through at these loss rates.
  EXPECT_EQ(failed, 0);
}

INSTANTIATE_TEST_SUITE_P(Loss, KvUdpFaultTest, ::testing::Values(0.1, 0.3),
                         [](const ::testing::TestParamInfo<double>& info) {
                           return absl::StrCat(static_cast<int>(info.param * 100), "pct");
                         });

}  // namespace
}  // namespace courier
