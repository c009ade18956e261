// The scenarios that need raw sockets: clients that break the rules a courier::Channel keeps.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include <algorithm>
#include <memory>
#include <thread>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "abuse/process.h"
#include "abuse/raw_client.h"
#include "abuse/scenarios.h"

namespace courier::abuse {
namespace {

using transport::FrameType;

constexpr uint64_t kUsPerSecond = 1000 * 1000;

// The server's memory now; reports and returns nullopt if it is gone.
std::optional<Memory> ServerMemory(const ScenarioContext& ctx, Report& report) {
  std::optional<Memory> m = ReadMemory(ctx.server_pid);
  if (!m) report.Figure("server gone", "the server process is not running");
  return m;
}

std::string DescribeStream(const StreamResult& r, size_t count, std::string_view what) {
  std::string how = r.done      ? "all written"
                    : r.closed  ? "the server closed the connection"
                    : r.stalled ? "then the socket blocked"
                                : "the time bound passed";
  return absl::StrFormat("%d of %d %s written in %.2f s (%s)", r.frames, count, what, r.seconds,
                         how);
}

// Bytes written on `fd` that the peer has not read yet (AF_UNIX: exact; TCP: unsent + unacked).
long UnreadBytes(int fd) {
  int queued = 0;
  if (ioctl(fd, TIOCOUTQ, &queued) != 0) return -1;
  return queued;
}

// "; the server read N of them (K KiB still in the socket)" where the kernel can tell (AF_UNIX).
std::string ServerRead(const ScenarioContext& ctx, RawConnection& c, const StreamResult& r,
                       size_t frame_size) {
  const long unread = UnreadBytes(c.fd());
  if (unread < 0 || ctx.transport != "unix") return "";
  const size_t in_socket = static_cast<size_t>(unread);
  return absl::StrFormat("; the server read %d of them (%d KiB still in the socket)",
                         r.bytes > in_socket ? (r.bytes - in_socket) / frame_size : 0,
                         in_socket / 1024);
}

std::string Percentiles(std::vector<double> ms) {
  if (ms.empty()) return "no responses";
  std::sort(ms.begin(), ms.end());
  auto at = [&](double p) { return ms[std::min(ms.size() - 1, size_t(p * ms.size()))]; };
  return absl::StrFormat("response p50 %.1f ms, p99 %.1f ms", at(0.5), at(0.99));
}

}  // namespace

void HeaderCommit(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 50 : 200;
  const size_t declared = 64 * 1024 * 1024;
  std::optional<Memory> before = ServerMemory(ctx, report);
  if (!before) return;
  // A HELLO header declaring `declared` payload bytes, none of which ever follow.
  std::string header = FrameBytes(FrameType::kHello, 0, 0, std::string(declared, '\0'));
  header.resize(transport::kFrameHeaderSize);

  PeakSampler sampler(ctx.server_pid);
  std::vector<std::unique_ptr<RawConnection>> connections;
  size_t dial_failures = 0;
  std::string first_failure;
  for (size_t i = 0; i < count; ++i) {
    absl::StatusOr<std::unique_ptr<RawConnection>> c =
        RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
    absl::Status s = c.ok()
                         ? (*c)->WriteAll(header, Clock::now() + std::chrono::seconds(2)).status()
                         : c.status();
    if (!s.ok()) {
      if (dial_failures++ == 0) first_failure = s.ToString();
      continue;
    }
    connections.push_back(*std::move(c));
  }
  // Hold them (reading the server's hello, and noticing closes) for a while.
  const auto hold = std::chrono::seconds(3);
  const Clock::time_point end = Clock::now() + hold;
  while (Clock::now() < end) {
    for (auto& c : connections) c->ReadAvailable();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  sampler.Stop();
  const Memory peak = sampler.peak();
  std::optional<Memory> after = ReadMemory(ctx.server_pid);
  const size_t closed = static_cast<size_t>(
      std::count_if(connections.begin(), connections.end(), [](auto& c) { return c->closed(); }));
  if (dial_failures > 0) {
    report.Detail(absl::StrCat(dial_failures, " connections failed: ", first_failure));
  }
  report.Detail(absl::StrFormat("server RSS %s before, peak %s, %s after %d s (RssAnon %+.1f MiB)",
                                Mib(before->rss_mib), Mib(peak.rss_mib),
                                after ? Mib(after->rss_mib) : "gone", hold.count(),
                                peak.anon_mib - before->anon_mib));
  report.Figure(absl::StrCat(Grow(peak.rss_mib - before->rss_mib), " server RSS"),
                absl::StrFormat("%d connections each sent a 16-byte header declaring %d MiB "
                                "before any hello; %d of them closed by the server within %d s",
                                connections.size(), declared >> 20, closed, hold.count()));
}

void NonReadingClient(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 1000 : 3000;
  absl::StatusOr<std::unique_ptr<RawConnection>> c =
      RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
  if (!c.ok()) return report.Figure("dial failed", c.status().ToString());
  if (absl::Status s = (*c)->Handshake(Clock::now() + std::chrono::seconds(5)); !s.ok()) {
    return report.Figure("handshake failed", s.ToString());
  }
  std::optional<Memory> before = ServerMemory(ctx, report);
  if (!before) return;
  const std::string payload =
      RequestPayload(kEchoMethod, 60 * kUsPerSecond, std::string(64 * 1024, 'x'));
  PeakSampler sampler(ctx.server_pid);
  StreamResult r = WriteFrames(
      **c, count,
      [&](size_t i, std::string& out) {
        out += RequestFrame(static_cast<uint32_t>(i + 1), payload);
      },
      std::chrono::seconds(2), /*read_replies=*/false, Clock::now() + std::chrono::seconds(60));
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  sampler.Stop();
  const Memory peak = sampler.peak();
  const std::string taken = ServerRead(ctx, **c, r, payload.size() + transport::kFrameHeaderSize);
  report.Detail(absl::StrFormat("server RSS %s before, peak %s (RssAnon %+.1f MiB)",
                                Mib(before->rss_mib), Mib(peak.rss_mib),
                                peak.anon_mib - before->anon_mib));
  report.Figure(absl::StrCat(Grow(peak.rss_mib - before->rss_mib), " server RSS"),
                absl::StrCat(DescribeStream(r, count, "64 KiB echo requests"), taken,
                             "; responses never read"));
}

void SleepingHandlers(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 20000 : 100000;
  absl::StatusOr<std::unique_ptr<RawConnection>> c =
      RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
  if (!c.ok()) return report.Figure("dial failed", c.status().ToString());
  if (absl::Status s = (*c)->Handshake(Clock::now() + std::chrono::seconds(5)); !s.ok()) {
    return report.Figure("handshake failed", s.ToString());
  }
  std::optional<Memory> before = ServerMemory(ctx, report);
  if (!before) return;
  const std::string payload = RequestPayload(kSleepMethod, 120 * kUsPerSecond, "60000");
  PeakSampler sampler(ctx.server_pid);
  StreamResult r = WriteFrames(
      **c, count,
      [&](size_t i, std::string& out) {
        out += RequestFrame(static_cast<uint32_t>(i + 1), payload);
      },
      std::chrono::seconds(5), /*read_replies=*/true, Clock::now() + std::chrono::seconds(60));
  ReadFor(**c, std::chrono::seconds(2));  // refusals of the last requests
  sampler.Stop();
  const Memory peak = sampler.peak();
  const Inbound& in = (*c)->inbound();
  const size_t refused = in.codes.contains(8) ? in.codes.at(8) : 0;
  const size_t unanswered = r.frames > in.responses ? r.frames - in.responses : 0;
  // Running on the server: what it says, else the unanswered calls of a connection still open.
  const std::optional<ServerStats> stats = QueryStats(ctx.uri);
  const size_t running = stats ? stats->active_calls : (*c)->closed() ? 0 : unanswered;
  report.Detail(DescribeStream(r, count, "Sleep(60000) calls"));
  report.Detail(absl::StrCat("back from the server: ", in.Summary(), "; ", DescribeStats(stats)));
  report.Detail(absl::StrFormat("server RSS %s before, peak %s (RssAnon %+.1f MiB)",
                                Mib(before->rss_mib), Mib(peak.rss_mib),
                                peak.anon_mib - before->anon_mib));
  report.Figure(
      absl::StrCat(Grow(peak.rss_mib - before->rss_mib), " server RSS; ", running, " running, ",
                   refused, " refused", (*c)->closed() ? ", connection closed" : ""),
      absl::StrFormat("%d Sleep(60 s) calls written on one connection: %d refused "
                      "RESOURCE_EXHAUSTED, %d other answers, %d unanswered after 2 s, "
                      "%d running on the server%s",
                      r.frames, refused, in.responses - refused, unanswered, running,
                      (*c)->closed() ? "; connection closed by the server" : ""));
}

void UnreadPongs(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 200000 : 1000000;
  absl::StatusOr<std::unique_ptr<RawConnection>> c =
      RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
  if (!c.ok()) return report.Figure("dial failed", c.status().ToString());
  if (absl::Status s = (*c)->Handshake(Clock::now() + std::chrono::seconds(5)); !s.ok()) {
    return report.Figure("handshake failed", s.ToString());
  }
  std::optional<Memory> before = ServerMemory(ctx, report);
  if (!before) return;
  const std::string ping = FrameBytes(FrameType::kPing, 0, 0, "abcdefgh");
  PeakSampler sampler(ctx.server_pid);
  StreamResult r = WriteFrames(
      **c, count, [&](size_t, std::string& out) { out += ping; }, std::chrono::seconds(2),
      /*read_replies=*/false, Clock::now() + std::chrono::seconds(60));
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  sampler.Stop();
  const Memory peak = sampler.peak();
  report.Detail(absl::StrFormat("server RSS %s before, peak %s (RssAnon %+.1f MiB)",
                                Mib(before->rss_mib), Mib(peak.rss_mib),
                                peak.anon_mib - before->anon_mib));
  report.Figure(absl::StrCat(Grow(peak.rss_mib - before->rss_mib), " server RSS"),
                absl::StrCat(DescribeStream(r, count, "8-byte PINGs"),
                             ServerRead(ctx, **c, r, ping.size()), "; pongs never read"));
}

void ShutdownNonReading(const ScenarioContext& ctx, Report& report) {
  const size_t count = ctx.quick ? 1000 : 3000;
  const int bound_s = ctx.quick ? 10 : 30;
  absl::StatusOr<std::unique_ptr<RawConnection>> c =
      RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
  if (!c.ok()) return report.Figure("dial failed", c.status().ToString());
  if (absl::Status s = (*c)->Handshake(Clock::now() + std::chrono::seconds(5)); !s.ok()) {
    return report.Figure("handshake failed", s.ToString());
  }
  const std::string payload =
      RequestPayload(kEchoMethod, 60 * kUsPerSecond, std::string(64 * 1024, 'x'));
  StreamResult r = WriteFrames(
      **c, count,
      [&](size_t i, std::string& out) {
        out += RequestFrame(static_cast<uint32_t>(i + 1), payload);
      },
      std::chrono::seconds(2), /*read_replies=*/false, Clock::now() + std::chrono::seconds(60));
  report.Detail(DescribeStream(r, count, "64 KiB echo requests"));
  const std::optional<double> cpu0 = ReadCpuSeconds(ctx.server_pid);
  const Clock::time_point sent = Clock::now();
  kill(ctx.server_pid, SIGTERM);
  const Clock::time_point bound = sent + std::chrono::seconds(bound_s);
  while (!Exited(ctx.server_pid) && Clock::now() < bound) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  const bool exited = Exited(ctx.server_pid);
  const double took = SecondsSince(sent);
  const char state = ReadState(ctx.server_pid);
  const std::optional<double> cpu1 = ReadCpuSeconds(ctx.server_pid);
  if (cpu0 && cpu1) {
    report.Detail(absl::StrFormat("server CPU from SIGTERM to %s: %.2f s (%.0f%%)",
                                  exited ? "exit" : "the bound", *cpu1 - *cpu0,
                                  (*cpu1 - *cpu0) / took * 100));
  }
  // Now read, to see what the server told us before it went (or while it lingers).
  ReadFor(**c, std::chrono::seconds(2));
  report.Detail(absl::StrCat("then read for 2 s: ", (*c)->inbound().Summary()));
  if (exited) {
    report.Figure(absl::StrCat("exited after ", Seconds(took)),
                  "SIGTERM with a non-reading client connected");
  } else {
    report.Figure(absl::StrCat("> ", bound_s, " s"),
                  absl::StrCat("SIGTERM with a non-reading client connected: still running after ",
                               bound_s, " s (state ", std::string(1, state), ")"));
  }
}

namespace {

// A raw connection and the ids it has used.
struct Lane {
  std::unique_ptr<RawConnection> connection;
  size_t sent_long = 0;  // long calls written here
  bool full = false;     // the server refused calls here: short calls would be refused too
  uint32_t next_id = 1;
  std::unordered_map<uint32_t, Clock::time_point> short_sent;  // short calls awaiting an answer
};

// Reads what has arrived on any of `lanes`, waiting up to `timeout_ms` for something.
void ReadLanes(std::vector<Lane>& lanes, std::vector<pollfd>& fds, int timeout_ms) {
  fds.clear();
  for (Lane& lane : lanes) fds.push_back(pollfd{lane.connection->fd(), POLLIN, 0});
  if (poll(fds.data(), fds.size(), timeout_ms) <= 0) return;
  for (size_t i = 0; i < lanes.size(); ++i) {
    if (fds[i].revents != 0) lanes[i].connection->ReadAvailable();
  }
}

struct ShortCallsResult {
  size_t sent = 0;
  double cpu_percent = -1;
  std::map<int, size_t> codes;
  std::vector<double> latency_ms;
};

// `rate` calls per second, each Sleep(100 ms) with a 5 ms deadline, spread over the lanes that
// are not full, for `duration`; the server's CPU over exactly that window.
ShortCallsResult ShortCalls(const ScenarioContext& ctx, std::vector<Lane>& lanes, int rate,
                            Clock::duration duration) {
  ShortCallsResult result;
  const std::string payload = RequestPayload(kSleepMethod, 5000, "100");
  std::vector<Lane*> usable;
  for (Lane& lane : lanes) {
    lane.connection->inbound().on_response = [&result, &lane](uint32_t id, int code) {
      auto it = lane.short_sent.find(id);
      if (it == lane.short_sent.end()) return;  // a long call's answer
      result.latency_ms.push_back(
          std::chrono::duration<double, std::milli>(Clock::now() - it->second).count());
      ++result.codes[code];
      lane.short_sent.erase(it);
    };
    if (!lane.full) usable.push_back(&lane);
  }
  std::vector<pollfd> fds;
  const std::optional<double> cpu0 = ReadCpuSeconds(ctx.server_pid);
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + duration;
  for (Clock::time_point now = start; now < end && !usable.empty(); now = Clock::now()) {
    const auto due = static_cast<size_t>(std::chrono::duration<double>(now - start).count() * rate);
    while (result.sent < due) {
      Lane& lane = *usable[result.sent++ % usable.size()];
      if (lane.connection->closed()) continue;
      const uint32_t id = lane.next_id++;
      lane.short_sent.emplace(id, Clock::now());
      (void)lane.connection->WriteAll(RequestFrame(id, payload),
                                      Clock::now() + std::chrono::milliseconds(100));
    }
    ReadLanes(lanes, fds, 1);
  }
  const std::optional<double> cpu1 = ReadCpuSeconds(ctx.server_pid);
  const double elapsed = SecondsSince(start);
  if (cpu0 && cpu1) result.cpu_percent = (*cpu1 - *cpu0) / elapsed * 100;
  const Clock::time_point drain = Clock::now() + std::chrono::milliseconds(300);
  while (Clock::now() < drain) ReadLanes(lanes, fds, 5);
  for (Lane& lane : lanes) lane.connection->inbound().on_response = nullptr;
  return result;
}

std::string DescribeShortCalls(const ShortCallsResult& r) {
  std::vector<std::string> by_code;
  size_t answered = 0;
  for (const auto& [code, n] : r.codes) {
    by_code.push_back(absl::StrCat(CodeName(code), " ", n));
    answered += n;
  }
  return absl::StrFormat("%d short calls sent, %d answered (%s), %s", r.sent, answered,
                         absl::StrJoin(by_code, ", "), Percentiles(r.latency_ms));
}

absl::StatusOr<Lane> NewLane(const ScenarioContext& ctx) {
  absl::StatusOr<std::unique_ptr<RawConnection>> c =
      RawConnection::Dial(ctx.endpoint, std::chrono::seconds(5));
  if (!c.ok()) return c.status();
  if (absl::Status s = (*c)->Handshake(Clock::now() + std::chrono::seconds(5)); !s.ok()) return s;
  Lane lane;
  lane.connection = *std::move(c);
  return lane;
}

}  // namespace

void DeadlineScan(const ScenarioContext& ctx, Report& report) {
  const size_t target = ctx.quick ? 20000 : 100000;
  const int rate = 500;
  const auto window = std::chrono::seconds(5);
  const size_t max_connections = 1000;
  std::vector<pollfd> fds;

  // Without open calls.
  std::vector<Lane> idle;
  {
    absl::StatusOr<Lane> lane = NewLane(ctx);
    if (!lane.ok()) return report.Figure("dial failed", lane.status().ToString());
    idle.push_back(*std::move(lane));
  }
  ShortCallsResult alone = ShortCalls(ctx, idle, rate, window);
  report.Detail(absl::StrFormat("without open calls: server CPU %.1f%%; %s", alone.cpu_percent,
                                DescribeShortCalls(alone)));
  // The server's per-connection limit, if it announces one (Hello.max_concurrent_calls).
  const size_t announced = idle[0].connection->inbound().max_concurrent_calls;
  idle.clear();

  // Open `target` long calls: on one connection if the server allows it, else spread over as many
  // as it takes, each a little under the limit so that the short calls find room beside them.
  // Rounds: open connections and write their calls, read what comes back, count.
  const std::string long_payload = RequestPayload(kSleepMethod, 600 * kUsPerSecond, "600000");
  auto per_lane = [](size_t cap) { return cap > 32 ? cap - 16 : cap; };
  size_t batch = announced > 0 ? per_lane(announced) : target;
  std::vector<Lane> lanes;
  size_t open = 0;
  size_t refused = 0;
  size_t lost = 0;  // calls on connections the server closed
  std::string closes;
  const Clock::time_point opening = Clock::now();
  const Clock::time_point give_up = opening + std::chrono::seconds(100);
  while (open < target && lanes.size() < max_connections && Clock::now() < give_up) {
    const size_t open_before = open;
    for (size_t planned = open;
         planned < target && lanes.size() < max_connections && Clock::now() < give_up;) {
      absl::StatusOr<Lane> lane = NewLane(ctx);
      if (!lane.ok()) {
        report.Detail(
            absl::StrCat("connection ", lanes.size() + 1, ": ", lane.status().ToString()));
        break;
      }
      const size_t n = std::min(target - planned, batch);
      const uint32_t first = lane->next_id;
      StreamResult r = WriteFrames(
          *lane->connection, n,
          [&](size_t i, std::string& out) {
            out += RequestFrame(first + static_cast<uint32_t>(i), long_payload);
          },
          std::chrono::seconds(5), /*read_replies=*/true, Clock::now() + std::chrono::seconds(60));
      lane->next_id += static_cast<uint32_t>(r.frames);
      lane->sent_long = r.frames;
      planned += r.frames;
      lanes.push_back(*std::move(lane));
      if (r.frames == 0) break;
    }
    const Clock::time_point settle = Clock::now() + std::chrono::seconds(1);
    while (Clock::now() < settle) ReadLanes(lanes, fds, 20);
    // Recount: a lane's calls are open unless answered (refused) or its connection closed.
    open = 0;
    size_t learnt_cap = 0;
    for (size_t i = 0; i < lanes.size(); ++i) {
      const Inbound& in = lanes[i].connection->inbound();
      const size_t accepted =
          lanes[i].sent_long > in.responses ? lanes[i].sent_long - in.responses : 0;
      if (lanes[i].connection->closed()) {
        refused += in.responses;
        lost += accepted;
        if (closes.empty()) closes = absl::StrCat("; a connection ", in.Summary());
        continue;
      }
      open += accepted;
      if (in.responses > 0 && !lanes[i].full) {
        lanes[i].full = true;
        refused += in.responses;
        learnt_cap = std::max(learnt_cap, accepted);
      }
    }
    std::erase_if(lanes, [](const Lane& l) { return l.connection->closed(); });
    if (learnt_cap > 0 && per_lane(learnt_cap) < batch) {
      batch = per_lane(learnt_cap);  // the server has a limit it did not announce
      continue;
    }
    if (open <= open_before) break;  // no progress
  }
  report.Detail(absl::StrFormat(
      "%d long Sleep calls open on %d connection(s) after %.1f s (%s); %d answered at once "
      "(refused), %d lost with closed connections%s; %s",
      open, lanes.size(), SecondsSince(opening),
      announced > 0 ? absl::StrCat("the server announces ", announced, " calls per connection")
                    : std::string("the server announces no limit"),
      refused, lost, closes, DescribeStats(QueryStats(ctx.uri))));
  if (lanes.empty()) return report.Figure("no calls open", "the server accepted no long call");
  if (std::all_of(lanes.begin(), lanes.end(), [](const Lane& l) { return l.full; })) {
    absl::StatusOr<Lane> lane = NewLane(ctx);  // every lane is at the cap: short calls go here
    if (!lane.ok()) return report.Figure("dial failed", lane.status().ToString());
    lanes.push_back(*std::move(lane));
    report.Detail("every connection is at the server's cap: the short calls use another one");
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));
  ShortCallsResult crowded = ShortCalls(ctx, lanes, rate, window);
  report.Detail(absl::StrFormat("with %d open calls: server CPU %.1f%%; %s", open,
                                crowded.cpu_percent, DescribeShortCalls(crowded)));
  report.Figure(absl::StrFormat("CPU %.1f%% vs %.1f%%", crowded.cpu_percent, alone.cpu_percent),
                absl::StrFormat("server CPU over %d s of %d calls/s with a 5 ms deadline, beside "
                                "%d open calls on %d connection(s) vs none",
                                window.count(), rate, open, lanes.size()));
}

}  // namespace courier::abuse
