// What one run measured, and the ratios and targets derived from it. Pure data: the runner fills
// it, report.cc, json_output.cc and svg_chart.cc present it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bench/cpu.h"

namespace courier::bench {

// One call in flight, `calls` timed round trips after a warm-up.
struct LatencyFigures {
  int64_t calls = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, mean_us = 0, min_us = 0, max_us = 0;
  CpuTimes client_cpu, server_cpu;  // per call, in microseconds, each process
  // Heap allocations (operator new calls) per call, each process; nullopt when not counted.
  std::optional<double> client_allocs_per_call, server_allocs_per_call;
};

// `in_flight` calls kept outstanding for `seconds` after a warm-up.
struct ThroughputFigures {
  int in_flight = 0;
  int64_t calls = 0;
  double seconds = 0;
  double calls_per_s = 0;
  CpuTimes client_cpu, server_cpu;  // per call, in microseconds, each process
  // Heap allocations (operator new calls) per call, each process; nullopt when not counted.
  std::optional<double> client_allocs_per_call, server_allocs_per_call;
};

struct CaseResult {
  std::string system;     // "raw", "courier", "grpc", "capnp"
  std::string transport;  // "unix", "tcp", ...
  size_t payload = 0;     // bytes echoed per call
  std::string error;      // empty when every phase ran
  std::optional<LatencyFigures> latency;
  std::vector<ThroughputFigures> throughput;

  const ThroughputFigures* AtInFlight(int in_flight) const;
};

// Streaming (issue #11), one system on one transport: a server-streaming sample of `payload`
// byte messages, and (courier) bidirectional ping-pong beside unary calls on the same connection.
struct StreamFigures {
  int64_t messages = 0;
  double seconds = 0;
  double messages_per_s = 0;
};
struct StreamResult {
  std::string system, transport;
  size_t payload = 0;
  std::string error;                      // empty when every phase it supports ran
  std::optional<StreamFigures> download;  // nullopt: not supported (or failed)
  // One message out and its echo back on one open bidi stream, and unary calls, interleaved in
  // rounds on one connection; nullopt when not supported.
  std::optional<LatencyFigures> bidi, unary;
};

// The streaming section's ratios: courier ÷ gRPC and courier ÷ raw messages/s, and courier's bidi
// p50 ÷ its unary p50 (targets: courier/grpc over unix >= 5x, bidi/unary <= 1.20x); verdict
// "met", "missed" or "reported" (no limit).
struct StreamRatio {
  std::string description;  // "courier/grpc messages/s"
  std::string transport;
  std::optional<double> value;
  std::optional<double> limit;
  bool higher_is_better = false;
  std::string verdict;
};

// The handshake phase (issue #13), one system on one transport: fresh connections made one
// after another, each timed from nothing (a new channel or client) to the reply of its first
// call (connect, TLS handshake where there is one, the protocol's hello, one call of `payload`
// bytes); closing it is not timed. `figures` holds the distribution per connection (its `calls`
// is the number of connections) and CPU and allocations per connection, connect to close.
struct HandshakeResult {
  std::string system, transport;
  size_t payload = 0;
  std::string error;  // empty when every connection completed its call
  std::optional<LatencyFigures> figures;
};

// Issue #13: what tls:// costs a system beside its own tcp://, one figure at a time: p50 at one
// in flight and calls/s at 32 in flight (per payload), and the handshake phase's p50.
struct TlsCost {
  std::string system;  // "courier", "courier+metrics", "grpc"
  std::string metric;  // "p50_us", "calls_per_s@32", "handshake_p50_us"
  size_t payload = 0;
  std::optional<double> tcp, tls;
  std::optional<double> ratio;  // tls / tcp
  bool higher_is_better = false;
};

struct MachineInfo {
  int nproc = 0;
  std::string cpu_model, kernel, hostname, date;
  bool pinned = false;
  int server_cpu = -1, client_cpu = -1;
};

struct RunResult {
  std::string mode;  // "smoke", "quick", "full"
  MachineInfo machine;
  bool grpc_included = false;
  std::string grpc_note;  // its version, or why gRPC is absent
  bool capnp_included = false;
  std::string capnp_note;  // its version, or why Cap'n Proto is absent
  bool allocs_counted = false;
  std::string allocs_note;  // what the allocation counter counts, or why it is off
  std::vector<int> in_flight;
  std::vector<CaseResult> cases;
  std::vector<StreamResult> streams;
  std::vector<HandshakeResult> handshakes;
  int handshake_connections = 0;  // timed connections per handshake sample
  double handshake_pause_ms = 0;  // the pause after each connection closes

  const CaseResult* Find(const std::string& system, const std::string& transport,
                         size_t payload) const;
};

// A ratio of two systems on one transport and payload: p50 latency and calls/s per in-flight.
struct Ratio {
  std::string numerator, denominator;  // "courier"/"raw", "grpc"/"courier", "capnp"/"courier"
  std::string transport;
  size_t payload = 0;
  std::optional<double> p50;                       // numerator p50 / denominator p50
  std::vector<std::optional<double>> calls_per_s;  // per RunResult::in_flight, same order
};
std::vector<Ratio> ComputeRatios(const RunResult& run);

// Issue #8's targets (unix, tcp), issue #9's (shm) and issue #13's (tls), checked within the run:
// "met", "missed" or "n/a" (a figure is missing); a figure reported beside them without a limit is
// "reported".
struct TargetCheck {
  int issue = 8;            // the issue that set it: 8 (call path), 9 (shm://), 13 (tls://)
  std::string description;  // "courier p50 <= 1.10x raw (unix 64 B)"
  std::optional<double> value;
  std::optional<double> limit;  // nullopt: reported, not checked
  // "x" (a ratio within the run), "us" (latency or CPU per call), "allocs" (per call),
  // "calls/s"
  std::string unit;
  bool higher_is_better = false;
  std::string verdict;
};
// Issue #13 adds three checks at 64 B, each of courier's tls/tcp ratio divided by gRPC's, against
// 1.0: TLS should cost courier no more, relative to its plain TCP, than it costs gRPC (p50 and
// handshake p50: value <= 1; calls/s @32: value >= 1).
std::vector<TargetCheck> CheckTargets(const RunResult& run);
std::vector<StreamRatio> ComputeStreamRatios(const RunResult& run);
// Every system with a tls:// figure and the tcp:// one beside it, in run order: per payload p50
// and calls/s @32, then the handshake p50.
std::vector<TlsCost> ComputeTlsCosts(const RunResult& run);
const HandshakeResult* FindHandshake(const RunResult& run, const std::string& system,
                                     const std::string& transport);

// Nearest-rank percentile (0 < p <= 1) of an ascending sample; 0 if empty.
double Percentile(const std::vector<int64_t>& sorted, double p);
LatencyFigures SummarizeLatency(std::vector<int64_t> round_trips_ns);

// "64 B", "4 KiB", "1 MiB".
std::string PayloadLabel(size_t bytes);

}  // namespace courier::bench
