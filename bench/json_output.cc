#include "bench/json_output.h"

#include <cmath>
#include <fstream>
#include <optional>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace courier::bench {
namespace {

std::string Str(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += absl::StrFormat("\\u%04x", c);
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

std::string Num(double x) { return std::isfinite(x) ? absl::StrFormat("%.6g", x) : "null"; }
std::string Num(const std::optional<double>& x) { return x ? Num(*x) : "null"; }
std::string Bool(bool b) { return b ? "true" : "false"; }

// CPU per call in microseconds: total, and its user/system split, for each process.
std::string Cpu(const CpuTimes& client, const CpuTimes& server) {
  return absl::StrCat("\"client_cpu_us_per_call\": ", Num(client.total()),
                      ", \"server_cpu_us_per_call\": ", Num(server.total()),
                      ", \"client_cpu_user_us\": ", Num(client.user),
                      ", \"client_cpu_system_us\": ", Num(client.system),
                      ", \"server_cpu_user_us\": ", Num(server.user),
                      ", \"server_cpu_system_us\": ", Num(server.system));
}

// Heap allocations per call, each process; null when not counted (a sanitizer build).
std::string Allocs(const std::optional<double>& client, const std::optional<double>& server) {
  return absl::StrCat("\"client_allocs_per_call\": ", Num(client),
                      ", \"server_allocs_per_call\": ", Num(server));
}

std::string Latency(const LatencyFigures& f) {
  return absl::StrCat("{\"calls\": ", f.calls, ", \"p50_us\": ", Num(f.p50_us),
                      ", \"p99_us\": ", Num(f.p99_us), ", \"p999_us\": ", Num(f.p999_us),
                      ", \"mean_us\": ", Num(f.mean_us), ", \"min_us\": ", Num(f.min_us),
                      ", \"max_us\": ", Num(f.max_us), ", ", Cpu(f.client_cpu, f.server_cpu), ", ",
                      Allocs(f.client_allocs_per_call, f.server_allocs_per_call), "}");
}

std::string Throughput(const ThroughputFigures& f) {
  return absl::StrCat("{\"in_flight\": ", f.in_flight, ", \"calls\": ", f.calls,
                      ", \"seconds\": ", Num(f.seconds), ", \"calls_per_s\": ", Num(f.calls_per_s),
                      ", ", Cpu(f.client_cpu, f.server_cpu), ", ",
                      Allocs(f.client_allocs_per_call, f.server_allocs_per_call), "}");
}

std::string Case(const CaseResult& c) {
  std::vector<std::string> throughput;
  for (const ThroughputFigures& t : c.throughput) throughput.push_back(Throughput(t));
  return absl::StrCat("    {\"system\": ", Str(c.system), ", \"transport\": ", Str(c.transport),
                      ", \"payload_bytes\": ", c.payload, ", \"ok\": ", Bool(c.error.empty()),
                      ", \"error\": ", c.error.empty() ? "null" : Str(c.error),
                      ",\n     \"latency\": ", c.latency ? Latency(*c.latency) : "null",
                      ",\n     \"throughput\": [\n       ", absl::StrJoin(throughput, ",\n       "),
                      "]}");
}

std::string RatioJson(const Ratio& r, const std::vector<int>& in_flight) {
  std::vector<std::string> rates;
  for (size_t i = 0; i < r.calls_per_s.size() && i < in_flight.size(); ++i) {
    rates.push_back(absl::StrCat("\"", in_flight[i], "\": ", Num(r.calls_per_s[i])));
  }
  return absl::StrCat("    {\"ratio\": ", Str(r.numerator + "/" + r.denominator),
                      ", \"transport\": ", Str(r.transport), ", \"payload_bytes\": ", r.payload,
                      ", \"p50_latency\": ", Num(r.p50), ", \"calls_per_s_by_in_flight\": {",
                      absl::StrJoin(rates, ", "), "}}");
}

std::string Target(const TargetCheck& t) {
  return absl::StrCat(
      "    {\"issue\": ", t.issue, ", \"target\": ", Str(t.description),
      ", \"value\": ", Num(t.value), ", \"limit\": ", Num(t.limit), ", \"unit\": ", Str(t.unit),
      ", \"higher_is_better\": ", Bool(t.higher_is_better), ", \"verdict\": ", Str(t.verdict), "}");
}

// A streaming latency sample: no CPU or allocation figures (not measured there).
std::string StreamLatency(const std::optional<LatencyFigures>& f) {
  if (!f) return "null";
  return absl::StrCat("{\"calls\": ", f->calls, ", \"p50_us\": ", Num(f->p50_us),
                      ", \"p99_us\": ", Num(f->p99_us), ", \"p999_us\": ", Num(f->p999_us),
                      ", \"mean_us\": ", Num(f->mean_us), ", \"min_us\": ", Num(f->min_us),
                      ", \"max_us\": ", Num(f->max_us), "}");
}

std::string Streaming(const RunResult& run) {
  std::vector<std::string> results, ratios;
  for (const StreamResult& r : run.streams) {
    std::string download = "null";
    if (r.download) {
      download = absl::StrCat("{\"messages\": ", r.download->messages,
                              ", \"seconds\": ", Num(r.download->seconds),
                              ", \"messages_per_s\": ", Num(r.download->messages_per_s), "}");
    }
    results.push_back(absl::StrCat(
        "      {\"system\": ", Str(r.system), ", \"transport\": ", Str(r.transport),
        ", \"payload_bytes\": ", r.payload, ", \"ok\": ", Bool(r.error.empty()),
        ", \"error\": ", r.error.empty() ? "null" : Str(r.error),
        ",\n       \"server_streaming\": ", download,
        ",\n       \"bidi_ping_pong\": ", StreamLatency(r.bidi),
        ",\n       \"unary\": ", StreamLatency(r.unary), "}"));
  }
  for (const StreamRatio& r : ComputeStreamRatios(run)) {
    ratios.push_back(absl::StrCat("      {\"ratio\": ", Str(r.description),
                                  ", \"transport\": ", Str(r.transport),
                                  ", \"value\": ", Num(r.value), ", \"limit\": ", Num(r.limit),
                                  ", \"higher_is_better\": ", Bool(r.higher_is_better),
                                  ", \"verdict\": ", Str(r.verdict), "}"));
  }
  return absl::StrCat("{\n    \"results\": [\n", absl::StrJoin(results, ",\n"),
                      "\n    ],\n    \"ratios\": [\n", absl::StrJoin(ratios, ",\n"), "\n    ]}");
}

// The handshake phase (issue #13): per system and transport, the distribution per connection,
// CPU and allocations per connection; then what tls:// costs each system beside tcp://.
std::string Handshakes(const RunResult& run) {
  std::vector<std::string> results;
  for (const HandshakeResult& h : run.handshakes) {
    std::string figures = "null";
    if (const std::optional<LatencyFigures>& f = h.figures) {
      figures =
          absl::StrCat("{\"connections\": ", f->calls, ", \"p50_us\": ", Num(f->p50_us),
                       ", \"p99_us\": ", Num(f->p99_us), ", \"mean_us\": ", Num(f->mean_us),
                       ", \"min_us\": ", Num(f->min_us), ", \"max_us\": ", Num(f->max_us),
                       ", \"client_cpu_us_per_connection\": ", Num(f->client_cpu.total()),
                       ", \"server_cpu_us_per_connection\": ", Num(f->server_cpu.total()),
                       ", \"client_allocs_per_connection\": ", Num(f->client_allocs_per_call),
                       ", \"server_allocs_per_connection\": ", Num(f->server_allocs_per_call), "}");
    }
    results.push_back(absl::StrCat(
        "      {\"system\": ", Str(h.system), ", \"transport\": ", Str(h.transport),
        ", \"payload_bytes\": ", h.payload, ", \"ok\": ", Bool(h.error.empty()), ", \"error\": ",
        h.error.empty() ? "null" : Str(h.error), ",\n       \"figures\": ", figures, "}"));
  }
  return absl::StrCat("{\"connections\": ", run.handshake_connections,
                      ", \"pause_ms\": ", Num(run.handshake_pause_ms), ",\n    \"results\": [\n",
                      absl::StrJoin(results, ",\n"), "\n    ]}");
}

std::string TlsCosts(const RunResult& run) {
  std::vector<std::string> costs;
  for (const TlsCost& c : ComputeTlsCosts(run)) {
    costs.push_back(absl::StrCat("      {\"system\": ", Str(c.system),
                                 ", \"metric\": ", Str(c.metric),
                                 ", \"payload_bytes\": ", c.payload, ", \"tcp\": ", Num(c.tcp),
                                 ", \"tls\": ", Num(c.tls), ", \"tls_over_tcp\": ", Num(c.ratio),
                                 ", \"higher_is_better\": ", Bool(c.higher_is_better), "}"));
  }
  return absl::StrCat("{\n    \"costs\": [\n", absl::StrJoin(costs, ",\n"), "\n    ]}");
}

}  // namespace

std::string ToJson(const RunResult& run) {
  const MachineInfo& m = run.machine;
  std::vector<std::string> cases, ratios, targets, in_flight;
  for (const CaseResult& c : run.cases) cases.push_back(Case(c));
  for (const Ratio& r : ComputeRatios(run)) ratios.push_back(RatioJson(r, run.in_flight));
  for (const TargetCheck& t : CheckTargets(run)) targets.push_back(Target(t));
  for (int n : run.in_flight) in_flight.push_back(absl::StrCat(n));
  return absl::StrCat(
      "{\n  \"tool\": \"courier-bench\",\n  \"mode\": ", Str(run.mode),
      ",\n  \"date\": ", Str(m.date), ",\n  \"machine\": {\"nproc\": ", m.nproc,
      ", \"cpu_model\": ", Str(m.cpu_model), ", \"kernel\": ", Str(m.kernel),
      ", \"hostname\": ", Str(m.hostname), ", \"pinned\": ", Bool(m.pinned),
      ", \"server_cpu\": ", m.server_cpu, ", \"client_cpu\": ", m.client_cpu,
      "},\n  \"grpc\": {\"included\": ", Bool(run.grpc_included),
      ", \"note\": ", Str(run.grpc_note),
      "},\n  \"capnp\": {\"included\": ", Bool(run.capnp_included),
      ", \"note\": ", Str(run.capnp_note),
      "},\n  \"allocs\": {\"counted\": ", Bool(run.allocs_counted),
      ", \"note\": ", Str(run.allocs_note), "},\n  \"in_flight\": [",
      absl::StrJoin(in_flight, ", "), "],\n  \"units\": {\"latency\": \"microseconds\", ",
      "\"cpu\": \"microseconds of CPU time per call\", \"throughput\": \"calls per second\", ",
      "\"allocs\": \"operator new calls per call\"},\n", "  \"results\": [\n",
      absl::StrJoin(cases, ",\n"), "\n  ],\n  \"ratios\": [\n", absl::StrJoin(ratios, ",\n"),
      "\n  ],\n  \"targets\": [\n", absl::StrJoin(targets, ",\n"),
      "\n  ],\n  \"streaming\": ", Streaming(run), ",\n  \"handshake\": ", Handshakes(run),
      ",\n  \"tls\": ", TlsCosts(run), "\n}\n");
}

absl::Status WriteJsonFile(const RunResult& run, const std::string& path) {
  std::ofstream file(path, std::ios::trunc);
  file << ToJson(run);
  file.close();
  if (!file) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

}  // namespace courier::bench
