#include "bench/runner.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "bench/alloc_counter.h"
#include "bench/cpu.h"
#include "bench/server_process.h"

namespace courier::bench {
namespace {

constexpr size_t kMiB = 1 << 20;

// The server's allocations so far, or nullopt when this build (the server's too: it is this
// executable) counts none.
absl::StatusOr<std::optional<uint64_t>> ServerAllocs(ServerProcess& server) {
  if (!AllocCounterEnabled()) return std::optional<uint64_t>();
  absl::StatusOr<uint64_t> allocs = server.Allocs();
  if (!allocs.ok()) return allocs.status();
  return std::optional<uint64_t>(*allocs);
}

std::optional<double> AllocsPerCall(std::optional<uint64_t> before, std::optional<uint64_t> after,
                                    int64_t calls) {
  if (!before || !after || calls <= 0) return std::nullopt;
  return static_cast<double>(*after - *before) / static_cast<double>(calls);
}

// The client's counts are taken right around the timed calls, on this thread, and the server's
// just outside them: what the control protocol allocates in the driver is not counted, and the
// server allocates nothing to answer it. The round trips vector is reserved, so the samples
// themselves allocate nothing either.
absl::StatusOr<LatencyFigures> MeasureLatency(EchoClient& client, ServerProcess& server,
                                              const PayloadPlan& plan) {
  std::vector<int64_t> round_trips;
  round_trips.reserve(static_cast<size_t>(std::max(plan.warmup_calls, plan.latency_calls)));
  if (absl::Status s = client.PingPong(plan.payload, plan.warmup_calls, round_trips); !s.ok()) {
    return s;
  }
  round_trips.clear();
  absl::StatusOr<CpuTimes> server_before = server.Cpu();
  if (!server_before.ok()) return server_before.status();
  absl::StatusOr<std::optional<uint64_t>> server_allocs_before = ServerAllocs(server);
  if (!server_allocs_before.ok()) return server_allocs_before.status();
  CpuTimes client_before = ProcessCpu();
  std::optional<uint64_t> client_allocs_before = AllocationsSoFar();
  if (absl::Status s = client.PingPong(plan.payload, plan.latency_calls, round_trips); !s.ok()) {
    return s;
  }
  std::optional<uint64_t> client_allocs_after = AllocationsSoFar();
  CpuTimes client_used = ProcessCpu() - client_before;
  absl::StatusOr<std::optional<uint64_t>> server_allocs_after = ServerAllocs(server);
  if (!server_allocs_after.ok()) return server_allocs_after.status();
  absl::StatusOr<CpuTimes> server_after = server.Cpu();
  if (!server_after.ok()) return server_after.status();
  LatencyFigures figures = SummarizeLatency(std::move(round_trips));
  figures.client_cpu = client_used.PerCallMicros(figures.calls);
  figures.server_cpu = (*server_after - *server_before).PerCallMicros(figures.calls);
  figures.client_allocs_per_call =
      AllocsPerCall(client_allocs_before, client_allocs_after, figures.calls);
  figures.server_allocs_per_call =
      AllocsPerCall(*server_allocs_before, *server_allocs_after, figures.calls);
  return figures;
}

// The client keeps `in_flight` calls going on this thread while a sampler thread marks the
// window: after warm-up it snapshots (calls, time, both CPUs, both allocation counts), again at
// the end (after measure_s, and once at least `in_flight` calls completed in the window), then
// stops the client. The server is asked before the client's figures are read at the start and
// after at the end, so that the sampler's own allocations (the control protocol's strings) fall
// outside the client's window.
absl::StatusOr<ThroughputFigures> MeasureThroughput(EchoClient& client, ServerProcess& server,
                                                    const PayloadPlan& plan, int in_flight,
                                                    double max_window_s) {
  struct Snapshot {
    std::chrono::steady_clock::time_point time;
    uint64_t calls = 0;
    CpuTimes client, server;
    std::optional<uint64_t> client_allocs, server_allocs;
  };
  CallCounters counters;
  std::mutex mu;
  std::condition_variable client_done;
  bool finished = false;
  Snapshot begin, end;
  absl::Status sampler_status;
  auto fail = [&](const absl::Status& s) {
    if (sampler_status.ok()) sampler_status = s;
  };
  auto take_server = [&](Snapshot& snapshot) {
    absl::StatusOr<CpuTimes> cpu = server.Cpu();
    if (cpu.ok()) {
      snapshot.server = *cpu;
    } else {
      fail(cpu.status());
    }
    absl::StatusOr<std::optional<uint64_t>> allocs = ServerAllocs(server);
    if (allocs.ok()) {
      snapshot.server_allocs = *allocs;
    } else {
      fail(allocs.status());
    }
  };
  auto take_client = [&](Snapshot& snapshot) {
    snapshot.calls = counters.completed.load(std::memory_order_relaxed);
    snapshot.time = std::chrono::steady_clock::now();
    snapshot.client = ProcessCpu();
    snapshot.client_allocs = AllocationsSoFar();
  };
  auto wait = [&](double seconds) {  // false: the client ended early
    std::unique_lock lock(mu);
    return !client_done.wait_for(lock, std::chrono::duration<double>(seconds),
                                 [&] { return finished; });
  };
  std::thread sampler([&] {
    if (wait(plan.warmup_s)) {
      take_server(begin);
      take_client(begin);
      bool running = wait(plan.measure_s);
      auto enough = [&] {
        return counters.completed.load() - begin.calls >= static_cast<uint64_t>(in_flight) ||
               std::chrono::steady_clock::now() - begin.time >
                   std::chrono::duration<double>(max_window_s);
      };
      while (running && !enough()) running = wait(0.01);
      if (running) {
        take_client(end);
        take_server(end);
      }
    }
    counters.stop.store(true);
  });
  absl::Status status = client.Saturate(plan.payload, in_flight, counters);
  {
    std::lock_guard lock(mu);
    finished = true;
  }
  client_done.notify_all();
  sampler.join();
  if (!status.ok()) return status;
  if (!sampler_status.ok()) return sampler_status;
  ThroughputFigures figures;
  figures.in_flight = in_flight;
  figures.calls = static_cast<int64_t>(end.calls - begin.calls);
  figures.seconds = std::chrono::duration<double>(end.time - begin.time).count();
  if (figures.calls <= 0 || figures.seconds <= 0) {
    return absl::InternalError("no calls completed in the measurement window");
  }
  figures.calls_per_s = static_cast<double>(figures.calls) / figures.seconds;
  figures.client_cpu = (end.client - begin.client).PerCallMicros(figures.calls);
  figures.server_cpu = (end.server - begin.server).PerCallMicros(figures.calls);
  figures.client_allocs_per_call =
      AllocsPerCall(begin.client_allocs, end.client_allocs, figures.calls);
  figures.server_allocs_per_call =
      AllocsPerCall(begin.server_allocs, end.server_allocs, figures.calls);
  return figures;
}

void RunPayload(System& system, const std::string& transport, ServerProcess& server,
                const Plan& plan, const PayloadPlan& payload, CaseResult& result) {
  absl::StatusOr<std::unique_ptr<EchoClient>> client = system.Connect(transport, server.endpoint());
  if (!client.ok()) {
    result.error = client.status().ToString();
    std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
    return;
  }
  absl::StatusOr<LatencyFigures> latency = MeasureLatency(**client, server, payload);
  if (!latency.ok()) {
    result.error = absl::StrCat("latency: ", latency.status().ToString());
    std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
    return;
  }
  result.latency = *latency;
  std::fprintf(stderr, "  p50 %8.1f us  p99 %8.1f us", latency->p50_us, latency->p99_us);
  for (int n : plan.in_flight) {
    absl::StatusOr<ThroughputFigures> throughput =
        MeasureThroughput(**client, server, payload, n, plan.max_window_s);
    if (!throughput.ok()) {
      result.error = absl::StrCat(n, " in flight: ", throughput.status().ToString());
      break;
    }
    result.throughput.push_back(*throughput);
    std::fprintf(stderr, "  @%d %.0f/s", n, throughput->calls_per_s);
  }
  std::fprintf(stderr, "%s\n", result.error.empty() ? "" : ("  FAILED: " + result.error).c_str());
}

// Bidi ping-pong and unary calls interleaved in rounds (so that a change in the machine's load
// skews both alike), then one server-streaming sample; what the system does not support stays
// nullopt.
void RunStream(System& system, const std::string& transport, ServerProcess& server,
               const StreamPlan& plan, StreamResult& result) {
  absl::StatusOr<std::unique_ptr<EchoClient>> client = system.Connect(transport, server.endpoint());
  if (!client.ok()) {
    result.error = client.status().ToString();
    std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
    return;
  }
  auto fail = [&](const char* what, const absl::Status& s) {
    result.error = absl::StrCat(what, ": ", s.ToString());
    std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
  };
  std::vector<int64_t> bidi, unary;
  const int per_round = std::max(1, plan.latency_calls / std::max(1, plan.rounds));
  bidi.reserve(static_cast<size_t>(std::max(plan.warmup_calls, per_round * plan.rounds)));
  unary.reserve(bidi.capacity());
  absl::Status s = (*client)->BidiPingPong(plan.payload, plan.warmup_calls, bidi);
  if (s.ok()) {
    bidi.clear();
    if (s = (*client)->PingPong(plan.payload, plan.warmup_calls, unary); !s.ok()) {
      return fail("unary", s);
    }
    unary.clear();
    for (int round = 0; round < plan.rounds; ++round) {
      if (s = (*client)->PingPong(plan.payload, per_round, unary); !s.ok()) {
        return fail("unary", s);
      }
      if (s = (*client)->BidiPingPong(plan.payload, per_round, bidi); !s.ok()) {
        return fail("bidi", s);
      }
    }
    result.bidi = SummarizeLatency(std::move(bidi));
    result.unary = SummarizeLatency(std::move(unary));
    std::fprintf(stderr, "  bidi p50 %6.1f us  unary p50 %6.1f us", result.bidi->p50_us,
                 result.unary->p50_us);
  } else if (!absl::IsUnimplemented(s)) {
    return fail("bidi", s);
  }
  absl::StatusOr<StreamSample> sample =
      (*client)->StreamDownload(plan.payload, plan.warmup_s, plan.measure_s);
  if (sample.ok()) {
    StreamFigures figures;
    figures.messages = sample->messages;
    figures.seconds = sample->seconds;
    figures.messages_per_s =
        sample->seconds > 0 ? static_cast<double>(sample->messages) / sample->seconds : 0;
    result.download = figures;
    std::fprintf(stderr, "  stream %.0f msg/s", figures.messages_per_s);
  } else if (!absl::IsUnimplemented(sample.status())) {
    return fail("server streaming", sample.status());
  }
  std::fprintf(stderr, "%s\n", !result.bidi && !result.download ? "  (no streaming: skipped)" : "");
}

// Fresh connections one after another, each timed from nothing to its first call's reply; the
// client and server CPU and allocations are taken around the timed connections, so they are
// per connection, connect to close (the pauses between them cost no CPU).
void RunHandshake(System& system, const std::string& transport, ServerProcess& server,
                  const HandshakePlan& plan, HandshakeResult& result) {
  std::vector<int64_t> times, reply;
  times.reserve(static_cast<size_t>(plan.connections));
  reply.reserve(1);
  const auto pause = std::chrono::duration<double, std::milli>(plan.pause_ms);
  auto connect_and_call = [&]() -> absl::Status {
    reply.clear();
    auto start = std::chrono::steady_clock::now();
    absl::StatusOr<std::unique_ptr<EchoClient>> client =
        system.ConnectForFirstCall(transport, server.endpoint());
    if (!client.ok()) return client.status();
    absl::Status s = (*client)->PingPong(plan.payload, 1, reply);
    auto elapsed = std::chrono::steady_clock::now() - start;
    client->reset();
    if (!s.ok()) return s;
    times.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
    std::this_thread::sleep_for(pause);
    return absl::OkStatus();
  };
  auto fail = [&](const absl::Status& s) {
    result.error = s.ToString();
    std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
  };
  for (int i = 0; i < plan.warmup_connections; ++i) {
    if (absl::Status s = connect_and_call(); !s.ok()) return fail(s);
  }
  times.clear();
  absl::StatusOr<CpuTimes> server_before = server.Cpu();
  if (!server_before.ok()) return fail(server_before.status());
  absl::StatusOr<std::optional<uint64_t>> server_allocs_before = ServerAllocs(server);
  if (!server_allocs_before.ok()) return fail(server_allocs_before.status());
  CpuTimes client_before = ProcessCpu();
  std::optional<uint64_t> client_allocs_before = AllocationsSoFar();
  for (int i = 0; i < plan.connections; ++i) {
    if (absl::Status s = connect_and_call(); !s.ok()) {
      return fail(absl::Status(s.code(), absl::StrCat("connection ", i + 1, ": ", s.message())));
    }
  }
  std::optional<uint64_t> client_allocs_after = AllocationsSoFar();
  CpuTimes client_used = ProcessCpu() - client_before;
  absl::StatusOr<std::optional<uint64_t>> server_allocs_after = ServerAllocs(server);
  if (!server_allocs_after.ok()) return fail(server_allocs_after.status());
  absl::StatusOr<CpuTimes> server_after = server.Cpu();
  if (!server_after.ok()) return fail(server_after.status());
  LatencyFigures figures = SummarizeLatency(std::move(times));
  figures.client_cpu = client_used.PerCallMicros(figures.calls);
  figures.server_cpu = (*server_after - *server_before).PerCallMicros(figures.calls);
  figures.client_allocs_per_call =
      AllocsPerCall(client_allocs_before, client_allocs_after, figures.calls);
  figures.server_allocs_per_call =
      AllocsPerCall(*server_allocs_before, *server_allocs_after, figures.calls);
  result.figures = figures;
  std::fprintf(stderr, "  p50 %8.1f us  p99 %8.1f us  (%lld connections)\n", figures.p50_us,
               figures.p99_us, static_cast<long long>(figures.calls));
}

}  // namespace

bool MatchesFilter(const std::string& key, const std::string& filter) {
  bool any = false;
  for (size_t begin = 0; begin <= filter.size();) {
    size_t end = std::min(filter.find(',', begin), filter.size());
    if (end > begin) {
      any = true;
      if (key.find(std::string_view(filter).substr(begin, end - begin)) != std::string::npos) {
        return true;
      }
    }
    begin = end + 1;
  }
  return !any;
}

std::string HandshakeKey(const std::string& system, const std::string& transport) {
  return absl::StrCat(system, "/", transport, "/handshake");
}

std::string StreamKey(const std::string& system, const std::string& transport) {
  return absl::StrCat(system, "/", transport, "/stream");
}

Plan MakePlan(const std::string& mode) {
  Plan plan;
  plan.mode = mode;
  plan.in_flight = {1, 32, 128};
  // Every courier transport (not raw's mq, which only the floor has).
  const std::vector<std::string> handshake_transports = {"unix", "tcp",  "tls", "shm",
                                                         "pipe", "fifo", "udp"};
  // {payload, warm-up calls, latency calls, throughput warm-up s, throughput window s}
  // {payload, warm-up calls, latency calls, rounds, streaming warm-up s, window s, transports}
  // {payload, warm-up connections, connections, pause ms, transports}
  if (mode == "smoke") {
    plan.payloads = {{64, 50, 300, 0.05, 0.2}};
    plan.only_transports = {"unix", "shm", "shm-nospin", "pipe", "fifo", "udp", "mq", "tls"};
    plan.stream = {64, 50, 300, 2, 0.05, 0.2, {"unix", "shm"}};
    plan.handshake = {64, 2, 10, 1, {"unix", "tls"}};
  } else if (mode == "quick") {
    plan.payloads = {
        {64, 200, 2000, 0.1, 0.4}, {4096, 200, 2000, 0.1, 0.4}, {kMiB, 5, 50, 0.15, 0.5}};
    plan.stream = {64, 200, 2000, 4, 0.2, 1.0, {"unix", "tcp", "shm"}};
    plan.handshake = {64, 5, 100, 1, handshake_transports};
  } else {
    plan.mode = "full";
    plan.payloads = {
        {64, 2000, 20000, 0.5, 3.0}, {4096, 2000, 20000, 0.5, 3.0}, {kMiB, 20, 500, 0.5, 3.0}};
    plan.max_window_s = 15;
    plan.stream = {64, 2000, 20000, 10, 0.5, 3.0, {"unix", "tcp", "shm"}};
    plan.handshake = {64, 10, 200, 1, handshake_transports};
  }
  return plan;
}

std::string CaseKey(const std::string& system, const std::string& transport, size_t payload) {
  return absl::StrCat(system, "/", transport, "/",
                      absl::StrReplaceAll(PayloadLabel(payload), {{" ", ""}}));
}

std::vector<CaseResult> RunCases(const std::vector<std::unique_ptr<System>>& systems,
                                 const RunOptions& options, std::vector<StreamResult>* streams,
                                 std::vector<HandshakeResult>* handshakes) {
  // Transport-major, then payload, then system: the figures a ratio compares are taken seconds
  // apart, so a change in the machine's load (it may be shared) skews them less.
  std::vector<std::string> transports;
  for (const std::unique_ptr<System>& system : systems) {
    for (const std::string& t : system->transports()) {
      if (std::find(transports.begin(), transports.end(), t) == transports.end()) {
        transports.push_back(t);
      }
    }
  }
  if (!options.plan.only_transports.empty() && !transports.empty()) {
    std::vector<std::string> kept;
    for (const std::string& t : transports) {
      if (std::find(options.plan.only_transports.begin(), options.plan.only_transports.end(), t) !=
          options.plan.only_transports.end()) {
        kept.push_back(t);
      }
    }
    transports = kept.empty() ? std::vector<std::string>{transports.front()} : kept;
  }
  auto selected = [&](const System& system, const std::string& transport, size_t payload) {
    std::vector<std::string> own = system.transports();
    return std::find(own.begin(), own.end(), transport) != own.end() &&
           MatchesFilter(CaseKey(std::string(system.name()), transport, payload), options.filter);
  };

  const std::vector<std::string>& stream_transports = options.plan.stream.transports;
  auto stream_selected = [&](const System& system, const std::string& transport) {
    std::vector<std::string> own = system.transports();
    return std::find(own.begin(), own.end(), transport) != own.end() &&
           std::find(stream_transports.begin(), stream_transports.end(), transport) !=
               stream_transports.end() &&
           MatchesFilter(StreamKey(std::string(system.name()), transport), options.filter);
  };

  const HandshakePlan& handshake_plan = options.plan.handshake;
  auto handshake_selected = [&](const System& system, const std::string& transport) {
    std::vector<std::string> own = system.transports();
    return handshake_plan.connections > 0 &&
           std::find(own.begin(), own.end(), transport) != own.end() &&
           std::find(handshake_plan.transports.begin(), handshake_plan.transports.end(),
                     transport) != handshake_plan.transports.end() &&
           MatchesFilter(HandshakeKey(std::string(system.name()), transport), options.filter);
  };

  std::vector<CaseResult> results;
  for (const std::string& transport : transports) {
    // One server per system on this transport, started only if one of its cases is selected.
    std::vector<std::optional<absl::StatusOr<std::unique_ptr<ServerProcess>>>> servers(
        systems.size());
    auto start = [&](size_t i) {
      if (!servers[i]) {
        servers[i] =
            ServerProcess::Start(options.exe, systems[i]->name(), transport, options.server_cpu);
      }
    };
    for (size_t i = 0; i < systems.size(); ++i) {
      for (const PayloadPlan& p : options.plan.payloads) {
        if (selected(*systems[i], transport, p.payload)) start(i);
      }
      if (streams && stream_selected(*systems[i], transport)) start(i);
      if (handshakes && handshake_selected(*systems[i], transport)) start(i);
    }
    for (const PayloadPlan& payload : options.plan.payloads) {
      for (size_t i = 0; i < systems.size(); ++i) {
        if (!servers[i] || !selected(*systems[i], transport, payload.payload)) continue;
        CaseResult& result = results.emplace_back();
        result.system = std::string(systems[i]->name());
        result.transport = transport;
        result.payload = payload.payload;
        std::fprintf(stderr, "%-24s", CaseKey(result.system, transport, payload.payload).c_str());
        if (!servers[i]->ok()) {
          result.error = servers[i]->status().ToString();
          std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
          continue;
        }
        RunPayload(*systems[i], transport, ***servers[i], options.plan, payload, result);
      }
    }
    for (size_t i = 0; handshakes && i < systems.size(); ++i) {
      if (!servers[i] || !handshake_selected(*systems[i], transport)) continue;
      HandshakeResult& result = handshakes->emplace_back();
      result.system = std::string(systems[i]->name());
      result.transport = transport;
      result.payload = handshake_plan.payload;
      std::fprintf(stderr, "%-24s", HandshakeKey(result.system, transport).c_str());
      if (!servers[i]->ok()) {
        result.error = servers[i]->status().ToString();
        std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
        continue;
      }
      RunHandshake(*systems[i], transport, ***servers[i], handshake_plan, result);
    }
    for (size_t i = 0; streams && i < systems.size(); ++i) {
      if (!servers[i] || !stream_selected(*systems[i], transport)) continue;
      StreamResult result;
      result.system = std::string(systems[i]->name());
      result.transport = transport;
      result.payload = options.plan.stream.payload;
      std::fprintf(stderr, "%-24s", StreamKey(result.system, transport).c_str());
      if (!servers[i]->ok()) {
        result.error = servers[i]->status().ToString();
        std::fprintf(stderr, "  FAILED: %s\n", result.error.c_str());
      } else {
        RunStream(*systems[i], transport, ***servers[i], options.plan.stream, result);
      }
      // A system with no streaming at all (capnp) leaves no row.
      if (!result.error.empty() || result.download || result.bidi) {
        streams->push_back(std::move(result));
      }
    }
  }
  return results;
}

}  // namespace courier::bench
