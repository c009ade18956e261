#include "bench/results.h"

#include <algorithm>
#include <cmath>
#include <numeric>

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

}  // namespace

std::vector<Ratio> ComputeRatios(const RunResult& run) {
  std::vector<Ratio> ratios;
  for (auto [numerator, denominator] :
       {std::pair<std::string, std::string>{"courier", "raw"}, {"grpc", "courier"}}) {
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

std::vector<TargetCheck> CheckTargets(const RunResult& run) {
  std::vector<TargetCheck> checks;
  auto add = [&](std::string description, std::optional<double> value, double limit,
                 bool higher_is_better) {
    std::string verdict = "n/a";
    if (value) {
      verdict = (higher_is_better ? *value >= limit : *value <= limit) ? "met" : "missed";
    }
    checks.push_back({std::move(description), value, limit, higher_is_better, verdict});
  };
  for (const char* transport : {"unix", "tcp"}) {
    add(absl::StrCat("courier ", transport, " 64 B p50 <= 1.10x raw"),
        Divide(P50(run.Find("courier", transport, 64)), P50(run.Find("raw", transport, 64))), 1.10,
        false);
  }
  add("courier unix 64 B calls/s @32 >= 10x grpc unix",
      Divide(CallsPerSecond(run.Find("courier", "unix", 64), 32),
             CallsPerSecond(run.Find("grpc", "unix", 64), 32)),
      10.0, true);
  for (const char* transport : {"unix", "tcp"}) {
    // "within 1.3x of the raw mechanism's throughput": raw calls/s / courier calls/s, the worst
    // over the in-flight levels.
    std::optional<double> worst;
    for (int n : run.in_flight) {
      std::optional<double> ratio =
          Divide(CallsPerSecond(run.Find("raw", transport, 1 << 20), n),
                 CallsPerSecond(run.Find("courier", transport, 1 << 20), n));
      if (!ratio) {
        worst.reset();
        break;
      }
      worst = std::max(worst.value_or(0), *ratio);
    }
    add(absl::StrCat("courier ", transport, " 1 MiB calls/s: raw/courier <= 1.30x (worst N)"),
        worst, 1.30, false);
  }
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
