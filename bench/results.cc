#include "bench/results.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace courier::bench {

const ThroughputFigures* CaseResult::AtInFlight(int in_flight) const {
  for (const ThroughputFigures& t : throughput) {
    if (t.in_flight == in_flight) return &t;
  }
  return nullptr;
}

const CaseResult* RunResult::Find(const std::string& system, const std::string& transport,
                                  size_t payload) const {
  for (const CaseResult& c : cases) {
    if (c.system == system && c.transport == transport && c.payload == payload) return &c;
  }
  return nullptr;
}

namespace {

std::optional<double> Divide(std::optional<double> a, std::optional<double> b) {
  if (!a || !b || *b <= 0) return std::nullopt;
  return *a / *b;
}

std::optional<double> P50(const CaseResult* c) {
  if (!c || !c->latency) return std::nullopt;
  return c->latency->p50_us;
}

std::optional<double> CallsPerSecond(const CaseResult* c, int in_flight) {
  if (!c) return std::nullopt;
  const ThroughputFigures* t = c->AtInFlight(in_flight);
  if (!t) return std::nullopt;
  return t->calls_per_s;
}

// Every (transport, payload) pair seen for `system`, in run order.
std::vector<std::pair<std::string, size_t>> CasesOf(const RunResult& run,
                                                    const std::string& system) {
  std::vector<std::pair<std::string, size_t>> keys;
  for (const CaseResult& c : run.cases) {
    if (c.system == system) keys.emplace_back(c.transport, c.payload);
  }
  return keys;
}

std::optional<double> HandshakeP50(const HandshakeResult* h) {
  if (!h || !h->figures || !h->error.empty()) return std::nullopt;
  return h->figures->p50_us;
}

}  // namespace

const HandshakeResult* FindHandshake(const RunResult& run, const std::string& system,
                                     const std::string& transport) {
  for (const HandshakeResult& h : run.handshakes) {
    if (h.system == system && h.transport == transport) return &h;
  }
  return nullptr;
}

std::vector<TlsCost> ComputeTlsCosts(const RunResult& run) {
  std::vector<std::string> systems;
  auto note = [&](const std::string& system, const std::string& transport) {
    if (transport == "tls" && std::find(systems.begin(), systems.end(), system) == systems.end()) {
      systems.push_back(system);
    }
  };
  for (const CaseResult& c : run.cases) note(c.system, c.transport);
  for (const HandshakeResult& h : run.handshakes) note(h.system, h.transport);
  std::vector<TlsCost> costs;
  auto add = [&](const std::string& system, std::string metric, size_t payload,
                 std::optional<double> tcp, std::optional<double> tls, bool higher_is_better) {
    if (!tcp && !tls) return;
    costs.push_back(
        {system, std::move(metric), payload, tcp, tls, Divide(tls, tcp), higher_is_better});
  };
  for (const std::string& system : systems) {
    for (const auto& [transport, payload] : CasesOf(run, system)) {
      if (transport != "tls") continue;
      const CaseResult* tls = run.Find(system, "tls", payload);
      const CaseResult* tcp = run.Find(system, "tcp", payload);
      add(system, "p50_us", payload, P50(tcp), P50(tls), false);
      add(system, "calls_per_s@32", payload, CallsPerSecond(tcp, 32), CallsPerSecond(tls, 32),
          true);
    }
    const HandshakeResult* tls = FindHandshake(run, system, "tls");
    if (tls) {
      add(system, "handshake_p50_us", tls->payload, HandshakeP50(FindHandshake(run, system, "tcp")),
          HandshakeP50(tls), false);
    }
  }
  return costs;
}

std::vector<Ratio> ComputeRatios(const RunResult& run) {
  std::vector<Ratio> ratios;
  for (auto [numerator, denominator] : {std::pair<std::string, std::string>{"courier", "raw"},
                                        {"courier+metrics", "courier"},
                                        {"grpc", "courier"},
                                        {"capnp", "courier"}}) {
    for (const auto& [transport, payload] : CasesOf(run, numerator)) {
      const CaseResult* a = run.Find(numerator, transport, payload);
      const CaseResult* b = run.Find(denominator, transport, payload);
      if (!b) continue;
      Ratio r{numerator, denominator, transport, payload, Divide(P50(a), P50(b)), {}};
      for (int n : run.in_flight) {
        r.calls_per_s.push_back(Divide(CallsPerSecond(a, n), CallsPerSecond(b, n)));
      }
      ratios.push_back(std::move(r));
    }
  }
  return ratios;
}

std::vector<StreamRatio> ComputeStreamRatios(const RunResult& run) {
  auto find = [&](const std::string& system, const std::string& transport) -> const StreamResult* {
    for (const StreamResult& r : run.streams) {
      if (r.system == system && r.transport == transport) return &r;
    }
    return nullptr;
  };
  auto rate = [](const StreamResult* r) -> std::optional<double> {
    if (!r || !r->download) return std::nullopt;
    return r->download->messages_per_s;
  };
  std::vector<StreamRatio> ratios;
  for (const char* other : {"grpc", "raw"}) {
    for (const StreamResult& c : run.streams) {
      if (c.system != "courier") continue;
      const StreamResult* o = find(other, c.transport);
      if (!o || !o->download) continue;
      StreamRatio r;
      r.description = absl::StrCat("courier/", other, " messages/s");
      r.transport = c.transport;
      r.value = Divide(rate(&c), rate(o));
      r.higher_is_better = true;
      if (std::string_view(other) == "grpc" && c.transport == "unix") {
        r.limit = 5.0;  // issue #11: at least 5x gRPC's messages/s over unix://
        r.verdict = !r.value ? "n/a" : *r.value >= *r.limit ? "met" : "missed";
      } else {
        r.verdict = r.value ? "reported" : "n/a";
      }
      ratios.push_back(std::move(r));
    }
  }
  for (const StreamResult& c : run.streams) {
    if (c.system != "courier" || (!c.bidi && !c.unary)) continue;
    StreamRatio r;
    r.description = "courier bidi p50 / unary p50";
    r.transport = c.transport;
    if (c.bidi && c.unary) r.value = Divide(c.bidi->p50_us, c.unary->p50_us);
    r.limit = 1.20;
    r.verdict = !r.value ? "n/a" : *r.value <= *r.limit ? "met" : "missed";
    ratios.push_back(std::move(r));
  }
  return ratios;
}

std::vector<TargetCheck> CheckTargets(const RunResult& run) {
  std::vector<TargetCheck> checks;
  int issue = 8;
  auto add = [&](std::string description, std::optional<double> value, double limit,
                 std::string unit, bool higher_is_better) {
    std::string verdict = "n/a";
    if (value) {
      verdict = (higher_is_better ? *value >= limit : *value <= limit) ? "met" : "missed";
    }
    checks.push_back(
        {issue, std::move(description), value, limit, std::move(unit), higher_is_better, verdict});
  };
  auto report = [&](std::string description, std::optional<double> value, std::string unit) {
    checks.push_back(
        {issue, std::move(description), value, std::nullopt, std::move(unit), false, "reported"});
  };
  constexpr size_t kSmall = 64, kLarge = 1 << 20;
  const CaseResult* courier_unix = run.Find("courier", "unix", kSmall);
  for (const char* transport : {"unix", "tcp"}) {
    add(absl::StrCat("courier p50 <= 1.10x raw (", transport, " 64 B)"),
        Divide(P50(run.Find("courier", transport, kSmall)),
               P50(run.Find("raw", transport, kSmall))),
        1.10, "x", false);
  }
  for (const char* transport : {"unix", "tcp"}) {
    add(absl::StrCat("courier p50 below capnp's (", transport, " 64 B)"),
        Divide(P50(run.Find("courier", transport, kSmall)),
               P50(run.Find("capnp", transport, kSmall))),
        1.0, "x", false);
  }
  add("courier calls/s @32 >= 10x grpc's (unix 64 B)",
      Divide(CallsPerSecond(courier_unix, 32),
             CallsPerSecond(run.Find("grpc", "unix", kSmall), 32)),
      10.0, "x", true);
  for (const char* transport : {"unix", "tcp"}) {
    // The floor of one system call per message: raw's blocking echo, one call in flight.
    add(absl::StrCat("courier calls/s @128 >= raw's @1 (", transport, " 64 B)"),
        Divide(CallsPerSecond(run.Find("courier", transport, kSmall), 128),
               CallsPerSecond(run.Find("raw", transport, kSmall), 1)),
        1.0, "x", true);
  }
  const ThroughputFigures* at32 = courier_unix ? courier_unix->AtInFlight(32) : nullptr;
  add("courier client CPU per call @32 <= 1.0 us (unix 64 B)",
      at32 ? std::optional<double>(at32->client_cpu.total()) : std::nullopt, 1.0, "us", false);
  add("courier server CPU per call @32 <= 1.0 us (unix 64 B)",
      at32 ? std::optional<double>(at32->server_cpu.total()) : std::nullopt, 1.0, "us", false);
  for (const char* transport : {"unix", "tcp"}) {
    add(absl::StrCat("courier p50 <= 1.30x raw (", transport, " 1 MiB)"),
        Divide(P50(run.Find("courier", transport, kLarge)),
               P50(run.Find("raw", transport, kLarge))),
        1.30, "x", false);
  }
  // "At most 2 heap allocations per call on each side": the worst of the latency sample and
  // every throughput phase.
  for (bool client : {true, false}) {
    std::optional<double> worst;
    auto consider = [&](const std::optional<double>& client_allocs,
                        const std::optional<double>& server_allocs) {
      const std::optional<double>& allocs = client ? client_allocs : server_allocs;
      if (allocs) worst = std::max(worst.value_or(0), *allocs);
    };
    if (courier_unix && courier_unix->latency) {
      consider(courier_unix->latency->client_allocs_per_call,
               courier_unix->latency->server_allocs_per_call);
    }
    if (courier_unix) {
      for (const ThroughputFigures& t : courier_unix->throughput) {
        consider(t.client_allocs_per_call, t.server_allocs_per_call);
      }
    }
    add(absl::StrCat("courier ", client ? "client" : "server",
                     " heap allocs per call <= 2 (unix 64 B, worst N)"),
        worst, 2.0, "allocs", false);
  }

  // Issue #9: shm://, against courier on unix and against its own floor.
  issue = 9;
  const CaseResult* courier_shm = run.Find("courier", "shm", kSmall);
  add("courier p50 <= 2 us (shm 64 B)", P50(courier_shm), 2.0, "us", false);
  add("courier p50 unix / shm >= 20x (64 B)", Divide(P50(courier_unix), P50(courier_shm)), 20.0,
      "x", true);
  add("courier p50 <= 1.20x raw (shm-nospin 64 B)",
      Divide(P50(run.Find("courier", "shm-nospin", kSmall)),
             P50(run.Find("raw", "shm-nospin", kSmall))),
      1.20, "x", false);
  add("courier calls/s @32 >= 1M (shm 64 B)", CallsPerSecond(courier_shm, 32), 1e6, "calls/s",
      true);
  add("courier calls/s @32 shm / unix >= 2x (1 MiB)",
      Divide(CallsPerSecond(run.Find("courier", "shm", kLarge), 32),
             CallsPerSecond(run.Find("courier", "unix", kLarge), 32)),
      2.0, "x", true);
  // CPU per call, each side: at one in flight from the latency sample, as in the case table.
  for (const char* transport : {"shm", "shm-nospin"}) {
    const CaseResult* c = run.Find("courier", transport, kSmall);
    for (int n : {1, 32}) {
      std::optional<CpuTimes> client, server;
      if (c && n == 1 && c->latency) {
        client = c->latency->client_cpu;
        server = c->latency->server_cpu;
      } else if (const ThroughputFigures* t = c ? c->AtInFlight(n) : nullptr; n != 1 && t) {
        client = t->client_cpu;
        server = t->server_cpu;
      }
      for (bool is_client : {true, false}) {
        const std::optional<CpuTimes>& cpu = is_client ? client : server;
        report(absl::StrCat("courier ", is_client ? "client" : "server", " CPU per call @", n, " (",
                            transport, " 64 B)"),
               cpu ? std::optional<double>(cpu->total()) : std::nullopt, "us");
      }
    }
  }

  // Issue #13: courier's tls/tcp against gRPC's, 64 B and the handshake.
  issue = 13;
  std::vector<TlsCost> costs = ComputeTlsCosts(run);
  auto tls_ratio = [&](const std::string& system,
                       const std::string& metric) -> std::optional<double> {
    for (const TlsCost& c : costs) {
      if (c.system == system && c.metric == metric && c.payload == kSmall) return c.ratio;
    }
    return std::nullopt;
  };
  add("courier p50 tls/tcp / grpc's tls/tcp <= 1.00 (64 B)",
      Divide(tls_ratio("courier", "p50_us"), tls_ratio("grpc", "p50_us")), 1.0, "x", false);
  add("courier calls/s @32 tls/tcp / grpc's tls/tcp >= 1.00 (64 B)",
      Divide(tls_ratio("courier", "calls_per_s@32"), tls_ratio("grpc", "calls_per_s@32")), 1.0, "x",
      true);
  add("courier handshake p50 tls/tcp / grpc's tls/tcp <= 1.00",
      Divide(tls_ratio("courier", "handshake_p50_us"), tls_ratio("grpc", "handshake_p50_us")), 1.0,
      "x", false);
  return checks;
}

double Percentile(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1]);
}

LatencyFigures SummarizeLatency(std::vector<int64_t> round_trips_ns) {
  std::sort(round_trips_ns.begin(), round_trips_ns.end());
  LatencyFigures f;
  f.calls = static_cast<int64_t>(round_trips_ns.size());
  if (round_trips_ns.empty()) return f;
  f.p50_us = Percentile(round_trips_ns, 0.50) / 1e3;
  f.p99_us = Percentile(round_trips_ns, 0.99) / 1e3;
  f.p999_us = Percentile(round_trips_ns, 0.999) / 1e3;
  f.min_us = static_cast<double>(round_trips_ns.front()) / 1e3;
  f.max_us = static_cast<double>(round_trips_ns.back()) / 1e3;
  f.mean_us = std::accumulate(round_trips_ns.begin(), round_trips_ns.end(), 0.0) /
              static_cast<double>(round_trips_ns.size()) / 1e3;
  return f;
}

std::string PayloadLabel(size_t bytes) {
  if (bytes >= (1 << 20) && bytes % (1 << 20) == 0) return absl::StrCat(bytes >> 20, " MiB");
  if (bytes >= 1024 && bytes % 1024 == 0) return absl::StrCat(bytes >> 10, " KiB");
  return absl::StrCat(bytes, " B");
}

}  // namespace courier::bench
