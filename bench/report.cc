#include "bench/report.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace courier::bench {
namespace {

// 1234567 → "1.23M", 71234 → "71.2k", 812 → "812".
std::string Rate(double calls_per_s) {
  if (calls_per_s >= 1e6) return absl::StrFormat("%.2fM", calls_per_s / 1e6);
  if (calls_per_s >= 1e4) return absl::StrFormat("%.1fk", calls_per_s / 1e3);
  return absl::StrFormat("%.0f", calls_per_s);
}

std::string Micros(double us) {
  if (us >= 1e4) return absl::StrFormat("%.0f", us);
  return absl::StrFormat("%.1f", us);
}

std::string Times(const std::optional<double>& ratio) {
  return ratio ? absl::StrFormat("%.2fx", *ratio) : std::string("-");
}

// A target's value in its unit: "1.23x", "0.84 us", "2.00".
std::string Value(const TargetCheck& t) {
  if (!t.value) return "-";
  if (t.unit == "us") return absl::StrFormat("%.2f us", *t.value);
  if (t.unit == "calls/s") return absl::StrCat(Rate(*t.value), "/s");
  if (t.unit == "x") return Times(t.value);
  return absl::StrFormat("%.2f", *t.value);
}

// "2.0/1.0" (client/server allocations per call), or "n/a" when they were not counted.
std::string Allocs(const std::optional<double>& client, const std::optional<double>& server) {
  if (!client || !server) return "n/a";
  return absl::StrFormat("%.1f/%.1f", *client, *server);
}

void PrintCases(const RunResult& run, std::FILE* out) {
  std::string header = absl::StrFormat("%-8s %-10s %-7s %9s %9s %9s", "system", "transport",
                                       "payload", "p50 us", "p99 us", "p99.9 us");
  for (int n : run.in_flight)
    absl::StrAppend(&header, absl::StrFormat(" %11s", absl::StrCat("calls/s@", n)));
  for (int n : {1, 32}) {
    absl::StrAppend(&header, absl::StrFormat(" %15s", absl::StrCat("cpu@", n, " cli/srv")));
  }
  for (int n : {1, 32}) {
    absl::StrAppend(&header, absl::StrFormat(" %17s", absl::StrCat("allocs@", n, " cli/srv")));
  }
  std::fprintf(out, "%s\n%s\n", header.c_str(), std::string(header.size(), '-').c_str());
  for (const CaseResult& c : run.cases) {
    std::string row =
        absl::StrFormat("%-8s %-10s %-7s", c.system, c.transport, PayloadLabel(c.payload));
    if (c.latency) {
      absl::StrAppend(&row, absl::StrFormat(" %9s %9s %9s", Micros(c.latency->p50_us),
                                            Micros(c.latency->p99_us), Micros(c.latency->p999_us)));
    } else {
      absl::StrAppend(&row, absl::StrFormat(" %9s %9s %9s", "-", "-", "-"));
    }
    for (int n : run.in_flight) {
      const ThroughputFigures* t = c.AtInFlight(n);
      absl::StrAppend(&row, absl::StrFormat(" %11s", t ? Rate(t->calls_per_s) : "-"));
    }
    for (int n : {1, 32}) {
      // CPU per call at one in flight comes from the latency sample (more calls, same shape).
      std::optional<std::pair<double, double>> cpu;
      if (n == 1 && c.latency)
        cpu = {{c.latency->client_cpu.total(), c.latency->server_cpu.total()}};
      if (const ThroughputFigures* t = c.AtInFlight(n); n != 1 && t) {
        cpu = {{t->client_cpu.total(), t->server_cpu.total()}};
      }
      absl::StrAppend(
          &row, absl::StrFormat(
                    " %15s", cpu ? absl::StrFormat("%s/%s", Micros(cpu->first), Micros(cpu->second))
                                 : std::string("-")));
    }
    for (int n : {1, 32}) {
      // Like CPU: at one in flight from the latency sample.
      std::string allocs = "-";
      if (n == 1 && c.latency) {
        allocs = Allocs(c.latency->client_allocs_per_call, c.latency->server_allocs_per_call);
      }
      if (const ThroughputFigures* t = c.AtInFlight(n); n != 1 && t) {
        allocs = Allocs(t->client_allocs_per_call, t->server_allocs_per_call);
      }
      absl::StrAppend(&row, absl::StrFormat(" %17s", allocs));
    }
    std::fprintf(out, "%s\n", row.c_str());
    if (!c.error.empty()) std::fprintf(out, "  ^ FAILED: %s\n", c.error.c_str());
  }
}

void PrintRatios(const RunResult& run, std::FILE* out) {
  std::vector<Ratio> ratios = ComputeRatios(run);
  if (ratios.empty()) return;
  std::fprintf(out,
               "\nRatios within this run (latency: lower is faster; calls/s: higher is more)\n");
  std::string header =
      absl::StrFormat("%-13s %-10s %-7s %11s", "ratio", "transport", "payload", "p50 latency");
  for (int n : run.in_flight)
    absl::StrAppend(&header, absl::StrFormat(" %11s", absl::StrCat("calls/s@", n)));
  std::fprintf(out, "%s\n%s\n", header.c_str(), std::string(header.size(), '-').c_str());
  for (const Ratio& r : ratios) {
    std::string row =
        absl::StrFormat("%-13s %-10s %-7s %11s", absl::StrCat(r.numerator, "/", r.denominator),
                        r.transport, PayloadLabel(r.payload), Times(r.p50));
    for (const std::optional<double>& x : r.calls_per_s)
      absl::StrAppend(&row, absl::StrFormat(" %11s", Times(x)));
    std::fprintf(out, "%s\n", row.c_str());
  }
}

// "cli/srv" CPU and allocations per connection of a handshake sample.
void PrintHandshakes(const RunResult& run, std::FILE* out) {
  if (run.handshakes.empty()) return;
  std::fprintf(out,
               "\nFresh connections (issue #13), %d per system and transport, one at a time: "
               "each timed from a new channel or client to the reply of its first %s call "
               "(connect, TLS handshake, protocol hello, the call); closing it and a %.0f ms "
               "pause after are not timed; cpu and allocs per connection, connect to close, "
               "client/server\n",
               run.handshake_connections, PayloadLabel(run.handshakes.front().payload).c_str(),
               run.handshake_pause_ms);
  std::string header =
      absl::StrFormat("%-15s %-10s %9s %9s %9s %9s %15s %17s", "system", "transport", "p50 us",
                      "p99 us", "min us", "mean us", "cpu cli/srv", "allocs cli/srv");
  std::fprintf(out, "%s\n%s\n", header.c_str(), std::string(header.size(), '-').c_str());
  for (const HandshakeResult& h : run.handshakes) {
    std::string row = absl::StrFormat("%-15s %-10s", h.system, h.transport);
    if (const std::optional<LatencyFigures>& f = h.figures) {
      absl::StrAppend(
          &row, absl::StrFormat(" %9s %9s %9s %9s %15s %17s", Micros(f->p50_us), Micros(f->p99_us),
                                Micros(f->min_us), Micros(f->mean_us),
                                absl::StrFormat("%s/%s", Micros(f->client_cpu.total()),
                                                Micros(f->server_cpu.total())),
                                Allocs(f->client_allocs_per_call, f->server_allocs_per_call)));
    } else {
      absl::StrAppend(&row,
                      absl::StrFormat(" %9s %9s %9s %9s %15s %17s", "-", "-", "-", "-", "-", "-"));
    }
    std::fprintf(out, "%s\n", row.c_str());
    if (!h.error.empty()) std::fprintf(out, "  ^ FAILED: %s\n", h.error.c_str());
  }
}

// Issue #13: each system's tls:// figures beside its tcp:// ones.
void PrintTlsCosts(const RunResult& run, std::FILE* out) {
  std::vector<TlsCost> costs = ComputeTlsCosts(run);
  if (costs.empty()) return;
  std::fprintf(out,
               "\nWhat TLS costs (issue #13): tls:// beside tcp:// within each system (p50: one "
               "call in flight, lower is faster; calls/s: 32 in flight, higher is more; "
               "handshake: the fresh-connection p50 above)\n");
  std::string header = absl::StrFormat("%-15s %-18s %-7s %11s %11s %9s", "system", "figure",
                                       "payload", "tcp", "tls", "tls/tcp");
  std::fprintf(out, "%s\n%s\n", header.c_str(), std::string(header.size(), '-').c_str());
  for (const TlsCost& c : costs) {
    auto figure = [&](const std::optional<double>& x) -> std::string {
      if (!x) return "-";
      return c.metric == "calls_per_s@32" ? absl::StrCat(Rate(*x), "/s")
                                          : absl::StrCat(Micros(*x), " us");
    };
    std::string name = c.metric == "p50_us"           ? "p50"
                       : c.metric == "calls_per_s@32" ? "calls/s@32"
                                                      : "handshake p50";
    std::fprintf(
        out, "%s\n",
        absl::StrFormat("%-15s %-18s %-7s %11s %11s %9s", c.system, name, PayloadLabel(c.payload),
                        figure(c.tcp), figure(c.tls), Times(c.ratio))
            .c_str());
  }
}

void PrintTargets(const RunResult& run, std::FILE* out) {
  int issue = 0;
  for (const TargetCheck& t : CheckTargets(run)) {
    if (t.issue != issue) {
      issue = t.issue;
      const char* what =
          issue == 9    ? "shm://: latency, ratios within this run, calls/s; CPU per call reported"
          : issue == 13 ? "tls://: courier's tls/tcp ratio divided by gRPC's, within this run"
                        : "ratios within this run; CPU and allocations per call";
      std::fprintf(out, "\nTargets from issue #%d (%s)\n", issue, what);
    }
    std::fprintf(out, "  %-62s %9s  %s\n", t.description.c_str(), Value(t).c_str(),
                 t.verdict.c_str());
  }
}

void PrintStreaming(const RunResult& run, std::FILE* out) {
  if (run.streams.empty()) return;
  std::fprintf(out,
               "\nStreaming (issue #11), %s messages: stream msg/s: one server-streaming call, "
               "messages back to back (raw: its one-way stream); bidi: one message out and its "
               "echo back on one open bidi stream, beside unary calls on the same connection\n",
               PayloadLabel(run.streams.front().payload).c_str());
  std::string header =
      absl::StrFormat("%-8s %-10s %13s %11s %11s %12s %12s", "system", "transport", "stream msg/s",
                      "bidi p50 us", "bidi p99 us", "unary p50 us", "unary p99 us");
  std::fprintf(out, "%s\n%s\n", header.c_str(), std::string(header.size(), '-').c_str());
  for (const StreamResult& r : run.streams) {
    std::fprintf(out, "%s\n",
                 absl::StrFormat("%-8s %-10s %13s %11s %11s %12s %12s", r.system, r.transport,
                                 r.download ? Rate(r.download->messages_per_s) : "-",
                                 r.bidi ? Micros(r.bidi->p50_us) : "-",
                                 r.bidi ? Micros(r.bidi->p99_us) : "-",
                                 r.unary ? Micros(r.unary->p50_us) : "-",
                                 r.unary ? Micros(r.unary->p99_us) : "-")
                     .c_str());
    if (!r.error.empty()) std::fprintf(out, "  ^ FAILED: %s\n", r.error.c_str());
  }
  std::vector<StreamRatio> ratios = ComputeStreamRatios(run);
  if (ratios.empty()) return;
  std::fprintf(out, "\nStreaming ratios within this run\n");
  for (const StreamRatio& r : ratios) {
    std::string what = absl::StrCat(r.description, " (", r.transport, ")");
    if (r.limit) {
      absl::StrAppend(&what,
                      absl::StrFormat(r.higher_is_better ? " >= %.2fx" : " <= %.2fx", *r.limit));
    }
    std::fprintf(out, "  %-62s %9s  %s\n", what.c_str(), Times(r.value).c_str(), r.verdict.c_str());
  }
}

}  // namespace

void PrintReport(const RunResult& run, std::FILE* out) {
  const MachineInfo& m = run.machine;
  std::fprintf(out, "courier-bench %s, %s\n", run.mode.c_str(), m.date.c_str());
  std::fprintf(
      out, "machine: %s, %d CPUs, %s; %s\n", m.cpu_model.c_str(), m.nproc, m.kernel.c_str(),
      m.pinned
          ? absl::StrFormat("server pinned to CPU %d, client to CPU %d", m.server_cpu, m.client_cpu)
                .c_str()
          : "not pinned");
  std::fprintf(out, "gRPC: %s\n", run.grpc_note.c_str());
  std::fprintf(out, "Cap'n Proto: %s\n", run.capnp_note.c_str());
  std::fprintf(out, "heap allocations: %s\n", run.allocs_note.c_str());
  std::fprintf(out,
               "latency: one call in flight; calls/s: N calls in flight on one connection; "
               "cpu: CPU us per call, client/server process; allocs: operator new calls per "
               "call, client/server process\n\n");
  PrintCases(run, out);
  PrintRatios(run, out);
  PrintHandshakes(run, out);
  PrintTlsCosts(run, out);
  PrintTargets(run, out);
  PrintStreaming(run, out);
}

}  // namespace courier::bench
