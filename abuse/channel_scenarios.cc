// The scenarios that need a real client: courier::Channel, on an io_context of this process.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "abuse/process.h"
#include "abuse/raw_client.h"
#include "abuse/scenarios.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "rpc/channel.h"

namespace courier::abuse {
namespace {

using transport::use_nothrow;

// Runs `op` on `io` (in this thread) until it completes. Other work on `io` (idle channels)
// stays queued for the next call.
template <typename T>
T RunOn(asio::io_context& io, asio::awaitable<T> op) {
  std::optional<T> result;
  asio::co_spawn(io, std::move(op), [&](std::exception_ptr e, T r) {
    if (!e) result = std::move(r);
    io.stop();
  });
  io.restart();
  io.run();
  return result ? std::move(*result) : T{};
}

// Runs make(0) ... make(n - 1) concurrently and returns when all have completed.
asio::awaitable<void> ForkJoin(size_t n, std::function<asio::awaitable<void>(size_t)> make) {
  auto executor = co_await asio::this_coro::executor;
  size_t left = n;
  for (size_t i = 0; i < n; ++i) {
    asio::co_spawn(executor, make(i), [&left](std::exception_ptr) { --left; });
  }
  asio::steady_timer tick(executor);
  while (left > 0) {
    tick.expires_after(std::chrono::milliseconds(20));
    co_await tick.async_wait(use_nothrow);
  }
}

asio::awaitable<void> SleepFor(Clock::duration d) {
  asio::steady_timer timer(co_await asio::this_coro::executor, d);
  co_await timer.async_wait(use_nothrow);
}

// Call outcomes by status code.
struct Tally {
  size_t calls = 0;
  size_t ok = 0;
  std::map<absl::StatusCode, size_t> failures;
  std::string first_failure;
  void Add(const absl::Status& s) {
    ++calls;
    if (s.ok()) {
      ++ok;
      return;
    }
    if (failures.empty()) first_failure = s.ToString();
    ++failures[s.code()];
  }
  size_t failed() const { return calls - ok; }
  std::string Summary() const {
    std::vector<std::string> parts;
    for (const auto& [code, n] : failures) {
      parts.push_back(absl::StrCat(absl::StatusCodeToString(code), " ", n));
    }
    std::string text = absl::StrCat(calls, " calls, ", ok, " OK");
    if (!parts.empty()) absl::StrAppend(&text, ", ", absl::StrJoin(parts, ", "));
    if (!first_failure.empty()) absl::StrAppend(&text, "; first failure: ", first_failure);
    return text;
  }
};

struct Latencies {
  std::vector<double> us;
  Tally tally;
  double Mean() const {
    double sum = 0;
    for (double v : us) sum += v;
    return us.empty() ? 0 : sum / us.size();
  }
  double Percentile(double p) const {
    if (us.empty()) return 0;
    std::vector<double> sorted = us;
    std::sort(sorted.begin(), sorted.end());
    return sorted[std::min(sorted.size() - 1, static_cast<size_t>(p * sorted.size()))];
  }
};

std::string Url(const std::string& scheme, const std::string& address) {
  return absl::StrCat(scheme, "://", address);
}

// Sequential 64 B echo calls: `count` of them, or as many as fit in `bound`.
asio::awaitable<Latencies> EchoLoop(std::shared_ptr<Channel> channel, size_t count,
                                    Clock::duration bound) {
  Latencies result;
  const std::string request(64, 'e');
  CallOptions options;
  options.timeout = std::chrono::seconds(5);
  const Clock::time_point end = Clock::now() + bound;
  for (size_t i = 0; i < count && Clock::now() < end; ++i) {
    const Clock::time_point start = Clock::now();
    absl::StatusOr<std::string> reply =
        co_await channel->Call(std::string(kEchoMethod), request, options);
    result.tally.Add(reply.status());
    if (reply.ok()) {
      result.us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - start).count());
    }
  }
  co_return result;
}

// What the flooding connection saw.
struct FloodStats {
  size_t pairs = 0;  // REQUEST+CANCEL pairs written in full
  double seconds = 0;
  std::optional<double> goaway_after;
  std::optional<double> closed_after;
  std::string error;
  std::string inbound;
};

// Writes REQUEST+CANCEL pairs as fast as the socket takes them until `stop`, reading whatever
// comes back so that its own unread responses never block it.
void Flood(const ScenarioContext& ctx, const std::atomic<bool>& stop, FloodStats& stats) {
  absl::StatusOr<std::unique_ptr<RawConnection>> c =
      RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
  if (!c.ok()) {
    stats.error = c.status().ToString();
    return;
  }
  RawConnection& connection = **c;
  if (absl::Status s = connection.Handshake(Clock::now() + std::chrono::seconds(5)); !s.ok()) {
    stats.error = s.ToString();
    return;
  }
  const std::string payload = RequestPayload(kSleepMethod, 10 * 1000 * 1000, "1000");
  const size_t pair_size = RequestFrame(1, payload).size() + CancelFrame(1).size();
  uint32_t next_id = 1;
  std::string pending;
  size_t written = 0;
  const Clock::time_point start = Clock::now();
  while (!stop.load(std::memory_order_relaxed) && !connection.closed()) {
    if (pending.size() < 64 * 1024) {
      for (int i = 0; i < 512; ++i) {
        const uint32_t id = next_id++;
        pending += RequestFrame(id, payload);
        pending += CancelFrame(id);
      }
    }
    absl::StatusOr<size_t> n = connection.TryWrite(pending);
    if (!n.ok()) break;
    written += *n;
    pending.erase(0, *n);
    connection.ReadAvailable();
    if (*n == 0) connection.Wait(POLLIN | POLLOUT, 10);
  }
  connection.ReadAvailable();
  const Inbound& in = connection.inbound();
  stats.pairs = written / pair_size;
  stats.seconds = SecondsSince(start);
  if (in.first_goaway) {
    stats.goaway_after = std::chrono::duration<double>(*in.first_goaway - start).count();
  }
  if (in.closed) stats.closed_after = std::chrono::duration<double>(*in.closed - start).count();
  stats.inbound = in.Summary();
}

}  // namespace

std::optional<ServerStats> QueryStats(const std::string& uri) {
  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io.get_executor(), uri);
  if (!channel.ok()) return std::nullopt;
  CallOptions options;
  options.timeout = std::chrono::seconds(2);
  absl::StatusOr<std::string> reply =
      RunOn(io, (*channel)->Call(std::string(kStatsMethod), "", options));
  (*channel)->Close();
  if (!reply.ok()) return std::nullopt;
  ServerStats stats;
  long calls = 0, connections = 0;
  if (std::sscanf(reply->c_str(), "active_calls=%ld connections=%ld", &calls, &connections) != 2) {
    return std::nullopt;
  }
  stats.active_calls = calls > 0 ? static_cast<size_t>(calls - 1) : 0;
  stats.connections = connections > 0 ? static_cast<size_t>(connections - 1) : 0;
  return stats;
}

std::string DescribeStats(const std::optional<ServerStats>& stats) {
  if (!stats) return "the server did not answer a Stats call within 2 s";
  return absl::StrFormat("the server reports %d calls running on %d connections",
                         stats->active_calls, stats->connections);
}

void SleepingHandlersChannel(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 20000 : 100000;
  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io.get_executor(), ctx.uri);
  if (!channel.ok()) return report.Figure("channel failed", channel.status().ToString());
  Latencies warm = RunOn(io, EchoLoop(*channel, 1, std::chrono::seconds(5)));
  if (warm.tally.ok == 0) return report.Figure("echo failed", warm.tally.Summary());
  std::optional<Memory> server_before = ReadMemory(ctx.server_pid);
  std::optional<Memory> client_before = ReadMemory(getpid());
  if (!server_before || !client_before) return report.Figure("server gone", "");
  PeakSampler sampler(ctx.server_pid);
  Tally tally;
  CallOptions options;
  options.timeout = std::chrono::seconds(120);
  const Clock::time_point start = Clock::now();
  RunOn(io, [&]() -> asio::awaitable<int> {
    auto executor = co_await asio::this_coro::executor;
    for (size_t i = 0; i < count; ++i) {
      asio::co_spawn(
          executor,
          [&]() -> asio::awaitable<void> {
            absl::StatusOr<std::string> reply =
                co_await (*channel)->Call(std::string(kSleepMethod), "60000", options);
            tally.Add(reply.status());
          },
          asio::detached);
    }
    co_await SleepFor(std::chrono::seconds(3));
    co_return 0;
  }());
  sampler.Stop();
  const Memory server_peak = sampler.peak();
  std::optional<Memory> client_after = ReadMemory(getpid());
  const size_t waiting = (*channel)->calls_in_flight();
  const std::optional<ServerStats> stats = QueryStats(ctx.uri);
  report.Detail(absl::StrFormat(
      "%d Sleep(60 s) calls started at once on one channel; after "
      "%.1f s: %d answered (%s), %d waiting in the channel; %s",
      count, SecondsSince(start), tally.calls, tally.Summary(), waiting, DescribeStats(stats)));
  report.Detail(absl::StrFormat("server RSS %s before, peak %s; client RSS %s -> %s",
                                Mib(server_before->rss_mib), Mib(server_peak.rss_mib),
                                Mib(client_before->rss_mib),
                                client_after ? Mib(client_after->rss_mib) : "?"));
  const size_t running = stats ? stats->active_calls : 0;
  report.Figure(absl::StrFormat("%s server RSS; %d running, %d refused, %d queued in the client",
                                Grow(server_peak.rss_mib - server_before->rss_mib), running,
                                tally.failed(), waiting > running ? waiting - running : 0),
                absl::StrFormat("%d Sleep(60 s) calls through one Channel; client RSS %s", count,
                                client_after ? Grow(client_after->rss_mib - client_before->rss_mib)
                                             : std::string("?")));
}

void FloodFairness(const ScenarioContext& ctx, Report& report) {
  const size_t calls = ctx.quick ? 1000 : 5000;
  const auto bound = std::chrono::seconds(30);
  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io.get_executor(), ctx.uri);
  if (!channel.ok()) return report.Figure("channel failed", channel.status().ToString());
  Latencies warm = RunOn(io, EchoLoop(*channel, 200, bound));
  if (warm.tally.ok == 0) return report.Figure("echo failed", warm.tally.Summary());
  Latencies base = RunOn(io, EchoLoop(*channel, calls, bound));
  report.Detail(absl::StrFormat("baseline: %d calls, p50 %.0f us, p99 %.0f us, mean %.0f us (%s)",
                                base.us.size(), base.Percentile(0.5), base.Percentile(0.99),
                                base.Mean(), base.tally.Summary()));

  std::atomic<bool> stop{false};
  FloodStats flood;
  std::thread flooder([&] { Flood(ctx, stop, flood); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const Clock::time_point measuring = Clock::now();
  Latencies under = RunOn(io, EchoLoop(*channel, calls, bound));
  const double measured_s = SecondsSince(measuring);
  stop.store(true);
  flooder.join();
  report.Detail(absl::StrFormat(
      "under flood: %d calls in %.1f s, p50 %.0f us, p99 %.0f us, mean %.0f us (%s)",
      under.us.size(), measured_s, under.Percentile(0.5), under.Percentile(0.99), under.Mean(),
      under.tally.Summary()));
  std::string fate;
  if (!flood.error.empty()) {
    fate = "flooder could not start: " + flood.error;
  } else {
    fate = absl::StrFormat("flooder wrote %d REQUEST+CANCEL pairs in %.1f s (%.0f/s); ",
                           flood.pairs, flood.seconds, flood.pairs / std::max(flood.seconds, 1e-9));
    fate += flood.goaway_after ? absl::StrFormat("GOAWAY after %.2f s, ", *flood.goaway_after)
                               : std::string("no GOAWAY, ");
    fate += flood.closed_after ? absl::StrFormat("closed after %.2f s", *flood.closed_after)
                               : std::string("not closed");
    report.Detail(absl::StrCat("flooder got back: ", flood.inbound));
  }
  const double p50_ratio = under.Percentile(0.5) / std::max(base.Percentile(0.5), 1e-9);
  const double p99_ratio = under.Percentile(0.99) / std::max(base.Percentile(0.99), 1e-9);
  report.Figure(
      absl::StrFormat("p50 %.0f->%.0f us (x%.1f), p99 %.0f->%.0f us (x%.1f)%s",
                      base.Percentile(0.5), under.Percentile(0.5), p50_ratio, base.Percentile(0.99),
                      under.Percentile(0.99), p99_ratio,
                      flood.closed_after
                          ? absl::StrFormat("; flooder closed at %.1f s", *flood.closed_after)
                          : std::string("; flooder not closed")),
      absl::StrFormat("64 B echo, baseline vs another connection flooding; mean %.0f->%.0f us; %s",
                      base.Mean(), under.Mean(), fate));
}

void IdleConnections(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 1000 : 10000;
  const size_t concurrency = 64;
  asio::io_context io(1);
  CallOptions options;
  options.timeout = std::chrono::seconds(10);
  {  // warm-up, so that the baselines include code and allocator start-up
    absl::StatusOr<std::shared_ptr<Channel>> warm = Channel::Create(io.get_executor(), ctx.uri);
    if (!warm.ok()) return report.Figure("channel failed", warm.status().ToString());
    Latencies w = RunOn(io, EchoLoop(*warm, 10, std::chrono::seconds(10)));
    if (w.tally.ok == 0) return report.Figure("echo failed", w.tally.Summary());
  }
  std::optional<Memory> server_before = ReadMemory(ctx.server_pid);
  std::optional<Memory> client_before = ReadMemory(getpid());
  if (!server_before || !client_before) return report.Figure("server gone", "");

  std::vector<std::shared_ptr<Channel>> channels;
  channels.reserve(count);
  Tally tally;
  size_t next = 0;
  const Clock::time_point start = Clock::now();
  const Clock::time_point give_up = start + std::chrono::seconds(200);
  auto worker = [&](size_t) -> asio::awaitable<void> {
    while (next < count && Clock::now() < give_up) {
      ++next;
      absl::StatusOr<std::shared_ptr<Channel>> channel =
          Channel::Create(co_await asio::this_coro::executor, ctx.uri);
      if (!channel.ok()) {
        tally.Add(channel.status());
        continue;
      }
      absl::StatusOr<std::string> reply =
          co_await (*channel)->Call(std::string(kEchoMethod), "x", options);
      tally.Add(reply.status());
      if (reply.ok()) channels.push_back(*std::move(channel));
    }
  };
  RunOn(io, [&]() -> asio::awaitable<int> {
    co_await ForkJoin(concurrency, worker);
    co_await SleepFor(std::chrono::seconds(1));  // let both sides settle
    co_return 0;
  }());
  const double took = SecondsSince(start);
  std::optional<Memory> server_after = ReadMemory(ctx.server_pid);
  std::optional<Memory> client_after = ReadMemory(getpid());
  const int server_fds = CountOpenFds(ctx.server_pid);
  if (!server_after || !client_after) return report.Figure("server gone", tally.Summary());
  const size_t open = channels.size();
  report.Detail(absl::StrFormat("%d channels opened in %.1f s: %s; server has %d fds open; %s",
                                open, took, tally.Summary(), server_fds,
                                DescribeStats(QueryStats(ctx.uri))));
  report.Detail(absl::StrFormat("server RSS %s -> %s, client RSS %s -> %s",
                                Mib(server_before->rss_mib), Mib(server_after->rss_mib),
                                Mib(client_before->rss_mib), Mib(client_after->rss_mib)));
  if (open == 0) return report.Figure("no connection", tally.Summary());
  const double server_kib = (server_after->rss_mib - server_before->rss_mib) * 1024 / open;
  const double client_kib = (client_after->rss_mib - client_before->rss_mib) * 1024 / open;
  report.Figure(
      absl::StrFormat("server %.1f KiB/conn, client %.1f KiB/conn", server_kib, client_kib),
      absl::StrFormat("%d idle channels, each after one successful call "
                      "(RssAnon: server %.1f, client %.1f KiB/conn)",
                      open, (server_after->anon_mib - server_before->anon_mib) * 1024 / open,
                      (client_after->anon_mib - client_before->anon_mib) * 1024 / open));
}

namespace {

// Listens on a fresh endpoint and closes every connection it accepts, counting them: each dial
// a client makes is one accept here. `after_first_bytes`: close once the client has sent
// something (its hello) or 100 ms have passed, rather than at once.
class CountingListener {
 public:
  static absl::StatusOr<std::unique_ptr<CountingListener>> Start(const std::string& transport,
                                                                 bool after_first_bytes) {
    static int serial = 0;
    int fd = -1;
    std::string uri;
    if (transport == "unix") {
      const std::string name = absl::StrCat("courier-abuse-", getpid(), "-listener-", serial++);
      sockaddr_un addr{};
      addr.sun_family = AF_UNIX;
      std::memcpy(addr.sun_path + 1, name.data(), name.size());
      fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0 ||
          bind(fd, reinterpret_cast<sockaddr*>(&addr),
               static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())) != 0) {
        return absl::ErrnoToStatus(errno, "bind listener");
      }
      uri = Url("unix", "@" + name);
    } else {
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
      if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        return absl::ErrnoToStatus(errno, "bind listener");
      }
      socklen_t len = sizeof(addr);
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
      uri = Url("tcp", absl::StrCat("127.0.0.1:", ntohs(addr.sin_port)));
    }
    if (listen(fd, 4096) != 0) return absl::ErrnoToStatus(errno, "listen");
    return std::unique_ptr<CountingListener>(new CountingListener(fd, uri, after_first_bytes));
  }
  ~CountingListener() {
    stop_.store(true);
    thread_.join();
    close(fd_);
  }
  const std::string& uri() const { return uri_; }
  size_t accepts() const { return accepts_.load(); }

 private:
  CountingListener(int fd, std::string uri, bool after_first_bytes)
      : fd_(fd), uri_(std::move(uri)) {
    thread_ = std::thread([this, after_first_bytes] {
      while (!stop_.load()) {
        pollfd p{fd_, POLLIN, 0};
        poll(&p, 1, 20);
        for (int c; (c = accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC)) >= 0;) {
          accepts_.fetch_add(1);
          if (after_first_bytes) {
            pollfd q{c, POLLIN, 0};
            poll(&q, 1, 100);
          }
          close(c);
        }
      }
    });
  }
  int fd_;
  std::string uri_;
  std::atomic<bool> stop_{false};
  std::atomic<size_t> accepts_{0};
  std::thread thread_;
};

// An endpoint where nothing listens (connect is refused).
std::string RefusedUri(const std::string& transport) {
  if (transport == "unix") return Url("unix", absl::StrCat("@courier-abuse-", getpid(), "-nobody"));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);  // the port is free again, and nobody listens on it
  return Url("tcp", absl::StrCat("127.0.0.1:", ntohs(addr.sin_port)));
}

struct LoopResult {
  Tally tally;
  double seconds = 0;
};

// `callers` coroutines sharing one fresh Channel, each calling Echo (1 s deadline) in a loop for
// `duration`, yielding to the event loop between calls.
LoopResult CallInLoops(const std::string& uri, size_t callers, Clock::duration duration) {
  asio::io_context io(1);
  LoopResult result;
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io.get_executor(), uri);
  if (!channel.ok()) {
    result.tally.Add(channel.status());
    return result;
  }
  CallOptions options;
  options.timeout = std::chrono::seconds(1);
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + duration;
  auto caller = [&](size_t) -> asio::awaitable<void> {
    auto executor = co_await asio::this_coro::executor;
    while (Clock::now() < end) {
      absl::StatusOr<std::string> reply =
          co_await (*channel)->Call(std::string(kEchoMethod), "x", options);
      result.tally.Add(reply.status());
      co_await asio::post(executor, use_nothrow);
    }
  };
  RunOn(io, [&]() -> asio::awaitable<int> {
    co_await ForkJoin(callers, caller);
    co_return 0;
  }());
  result.seconds = SecondsSince(start);
  return result;
}

}  // namespace

void DeadServer(const ScenarioContext& ctx, Report& report) {
  const auto short_run = std::chrono::seconds(2);
  const auto long_run = std::chrono::seconds(5);
  const std::string refused = RefusedUri(ctx.transport);

  struct Run {
    LoopResult loops;
    size_t connects = 0;
    double calls_per_s() const { return loops.tally.calls / loops.seconds; }
    double connects_per_s() const { return connects / loops.seconds; }
  };
  // Against a counting listener (`after_first_bytes` as in CountingListener), or nothing.
  enum class Target { kNothing, kCloseAfterHello, kCloseAtOnce };
  auto run = [&](Target target, size_t callers, Clock::duration duration) -> std::optional<Run> {
    Run r;
    if (target == Target::kNothing) {
      r.loops = CallInLoops(refused, callers, duration);
    } else {
      absl::StatusOr<std::unique_ptr<CountingListener>> listener =
          CountingListener::Start(ctx.transport, target == Target::kCloseAfterHello);
      if (!listener.ok()) {
        report.Detail("listener failed: " + listener.status().ToString());
        return std::nullopt;
      }
      r.loops = CallInLoops((*listener)->uri(), callers, duration);
      r.connects = (*listener)->accepts();
    }
    const char* what = target == Target::kNothing           ? "nothing listening"
                       : target == Target::kCloseAfterHello ? "listener closing after the hello"
                                                            : "listener closing at once";
    report.Detail(absl::StrFormat(
        "%d caller(s), %s, %.1f s: %.0f calls/s%s; %s", callers, what, r.loops.seconds,
        r.calls_per_s(),
        target == Target::kNothing
            ? ""
            : absl::StrFormat(", %d connects (%.0f/s)", r.connects, r.connects_per_s()),
        r.loops.tally.Summary()));
    return r;
  };

  // (a) one caller looping.
  std::optional<Run> hello = run(Target::kCloseAfterHello, 1, short_run);
  std::optional<Run> at_once = run(Target::kCloseAtOnce, 1, short_run);
  std::optional<Run> nothing = run(Target::kNothing, 1, short_run);
  // (b) 20 callers sharing one channel.
  std::optional<Run> many = run(Target::kNothing, 20, long_run);
  std::optional<Run> many_hello = run(Target::kCloseAfterHello, 20, long_run);
  if (!hello || !at_once || !nothing || !many || !many_hello) {
    return report.Figure("listener failed", "");
  }
  report.Figure(
      absl::StrFormat("%.0f connects/s; %d failed calls in %.0f s", hello->connects_per_s(),
                      many->loops.tally.failed(), many->loops.seconds),
      absl::StrFormat(
          "1 caller: %.0f calls/s and %.0f connects/s against a listener that closes after the "
          "hello (%.0f connects/s if it closes at once), %.0f calls/s with nothing listening; "
          "20 callers: %d failed calls in %.1f s with nothing listening, %d connects with the "
          "listener",
          hello->calls_per_s(), hello->connects_per_s(), at_once->connects_per_s(),
          nothing->calls_per_s(), many->loops.tally.failed(), many->loops.seconds,
          many_hello->connects));
}

namespace {

struct Exit {
  std::optional<double> printed;  // first output line, seconds after spawn
  std::optional<double> exited;   // seconds after spawn; nullopt: killed at the bound
  std::string line;
};

// Runs `argv`, timing its first line of output and its exit; kills it after `bound`.
Exit TimeProcess(const std::vector<std::string>& argv, Clock::duration bound) {
  Exit result;
  const Clock::time_point start = Clock::now();
  absl::StatusOr<Spawned> child = Spawn(argv, "");
  if (!child.ok()) {
    result.line = child.status().ToString();
    return result;
  }
  std::string buffer;
  absl::StatusOr<std::string> line = ReadLineWithPrefix(child->output, buffer, "", start + bound);
  if (line.ok()) {
    result.printed = SecondsSince(start);
    result.line = *line;
  }
  std::optional<int> status = WaitWithDeadline(child->pid, start + bound);
  if (status) {
    result.exited = SecondsSince(start);
  } else {
    kill(-child->pid, SIGKILL);
    kill(child->pid, SIGKILL);
    WaitWithDeadline(child->pid, Clock::now() + std::chrono::seconds(5));
  }
  close(child->output);
  return result;
}

std::string DescribeExit(const Exit& e, int bound_s) {
  return absl::StrCat(
      e.printed ? absl::StrFormat("printed \"%s\" at %.1f s", e.line.substr(0, 120), *e.printed)
                : std::string("printed nothing"),
      ", ",
      e.exited ? absl::StrFormat("exited at %.1f s", *e.exited)
               : absl::StrFormat("still running at %d s (killed)", bound_s));
}

}  // namespace

void StoppedServer(const ScenarioContext& ctx, Report& report) {
  const auto duration = ctx.quick ? std::chrono::seconds(5) : std::chrono::seconds(10);
  const int rate = 100;  // calls started per second, each with its own 1 s deadline
  const int bound_s = 30;
  asio::io_context io(1);
  absl::StatusOr<std::shared_ptr<Channel>> channel = Channel::Create(io.get_executor(), ctx.uri);
  if (!channel.ok()) return report.Figure("channel failed", channel.status().ToString());
  Latencies warm = RunOn(io, EchoLoop(*channel, 1, std::chrono::seconds(5)));
  if (warm.tally.ok == 0) return report.Figure("echo failed", warm.tally.Summary());
  std::optional<Memory> before = ReadMemory(getpid());

  kill(ctx.server_pid, SIGSTOP);
  PeakSampler sampler(getpid());
  Tally tally;
  size_t in_flight = 0;
  CallOptions options;
  options.timeout = std::chrono::seconds(1);
  const Clock::time_point start = Clock::now();
  RunOn(io, [&]() -> asio::awaitable<int> {
    auto executor = co_await asio::this_coro::executor;
    asio::steady_timer tick(executor);
    for (int i = 0; Clock::now() < start + duration; ++i) {
      ++in_flight;
      asio::co_spawn(
          executor,
          [&]() -> asio::awaitable<void> {
            absl::StatusOr<std::string> reply = co_await (*channel)->Call(
                std::string(kEchoMethod), std::string(64 * 1024, 'r'), options);
            tally.Add(reply.status());
            --in_flight;
          },
          asio::detached);
      tick.expires_at(start + std::chrono::milliseconds(1000 / rate) * (i + 1));
      co_await tick.async_wait(use_nothrow);
    }
    const Clock::time_point drain = Clock::now() + std::chrono::seconds(3);
    while (in_flight > 0 && Clock::now() < drain) co_await SleepFor(std::chrono::milliseconds(20));
    co_return 0;
  }());
  std::optional<Memory> after = ReadMemory(getpid());
  sampler.Stop();
  const Memory peak = sampler.peak();
  report.Detail(
      absl::StrFormat("%d calls/s of 64 KiB with 1 s deadlines for %d s against the "
                      "stopped server: %s; %d still in flight",
                      rate, std::chrono::duration_cast<std::chrono::seconds>(duration).count(),
                      tally.Summary(), in_flight));
  report.Detail(absl::StrFormat("client RSS %s before, peak %s, %s after the calls ended",
                                before ? Mib(before->rss_mib) : "?", Mib(peak.rss_mib),
                                after ? Mib(after->rss_mib) : "?"));

  // Short-lived processes making one call with a 1 s deadline (the server is still stopped).
  auto exits_at = [&](const Exit& e) {
    return e.exited ? absl::StrFormat("%.1f s", *e.exited) : absl::StrFormat("> %d s", bound_s);
  };
  Exit one = TimeProcess({ctx.self_exe, "--one-call", ctx.uri, "--timeout-ms", "1000"},
                         std::chrono::seconds(bound_s));
  report.Detail(absl::StrCat("one-call process (Channel on main's io_context, 1 s timeout): ",
                             DescribeExit(one, bound_s)));
  Exit blocking =
      TimeProcess({ctx.self_exe, "--one-call", ctx.uri, "--timeout-ms", "1000", "--blocking"},
                  std::chrono::seconds(bound_s));
  report.Detail(
      absl::StrCat("one-call process (blocking Channel on its own reactor, 1 s "
                   "timeout): ",
                   DescribeExit(blocking, bound_s)));
  std::string echo_text;
  if (!ctx.echo_client.empty()) {
    Exit echo = TimeProcess({ctx.echo_client, "--connect", ctx.uri, "--timeout-ms", "1000", "hi"},
                            std::chrono::seconds(bound_s));
    echo_text = absl::StrCat(", echo_client ", exits_at(echo));
    report.Detail(
        absl::StrCat("examples' echo_client --timeout-ms 1000: ", DescribeExit(echo, bound_s)));
  }
  const double growth = before ? peak.rss_mib - before->rss_mib : 0;
  report.Figure(
      absl::StrFormat("client RSS %s; one-call exits at %s (blocking %s%s)", Grow(growth),
                      exits_at(one), exits_at(blocking), echo_text),
      absl::StrFormat("client RSS %s -> peak %s over %d s of %d calls/s to a SIGSTOPped server; "
                      "one-call process with a 1 s timeout %s",
                      before ? Mib(before->rss_mib) : "?", Mib(peak.rss_mib),
                      std::chrono::duration_cast<std::chrono::seconds>(duration).count(), rate,
                      DescribeExit(one, bound_s)));
}

}  // namespace courier::abuse
