// Runs the benchmark matrix: for each transport, one server process per system; for each
// payload and system in turn, a fresh client connection that measures latency (one call in
// flight) and throughput (N in flight), with the CPU time both processes spent per call.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "bench/results.h"
#include "bench/system.h"

namespace courier::bench {

struct PayloadPlan {
  size_t payload = 0;
  int warmup_calls = 0;   // untimed, before the latency sample
  int latency_calls = 0;  // timed, one in flight
  double warmup_s = 0;    // per throughput phase, before the window
  double measure_s = 0;   // the throughput window
};

// The streaming phase (issue #11), after a transport's payload cases, on a fresh connection per
// system: bidi ping-pong and unary calls interleaved in `rounds` (each round opens one bidi
// stream), then one server-streaming sample. Systems without them are skipped.
struct StreamPlan {
  size_t payload = 64;
  int warmup_calls = 0;   // untimed, bidi and unary each
  int latency_calls = 0;  // timed, bidi and unary each, split over `rounds`
  int rounds = 4;
  double warmup_s = 0;   // server streaming: before the window
  double measure_s = 0;  // server streaming: the window
  std::vector<std::string> transports;  // where it runs (those a system has)
};

// The handshake phase (issue #13), after a transport's payload cases, on the same servers: for
// each system, `warmup_connections` then `connections` fresh connections one after another, each
// timed from System::ConnectForFirstCall to the reply of one call of `payload` bytes, closed
// (untimed), then `pause_ms` of quiet before the next.
struct HandshakePlan {
  size_t payload = 64;
  int warmup_connections = 0;
  int connections = 0;
  double pause_ms = 1;
  std::vector<std::string> transports;  // where it runs (those a system has)
};

struct Plan {
  std::string mode;  // "smoke", "quick", "full"
  std::vector<PayloadPlan> payloads;
  std::vector<int> in_flight;
  // Smoke: only these transports, those that some system has (the first transport if none).
  std::vector<std::string> only_transports;
  // A throughput window runs past measure_s until every in-flight slot has completed a call,
  // for slow cases (large messages, many in flight), but no longer than this.
  double max_window_s = 2;
  StreamPlan stream;
  HandshakePlan handshake;
};
// "smoke", "quick" or "full"; anything else is treated as "full".
Plan MakePlan(const std::string& mode);

struct RunOptions {
  Plan plan;
  std::string exe;      // this program, started with --serve for each server
  std::string filter;   // which cases run: see MatchesFilter (empty: all)
  int server_cpu = -1;  // -1: unpinned
};

// "courier/unix/64B": what --filter matches.
std::string CaseKey(const std::string& system, const std::string& transport, size_t payload);

// "courier/unix/stream": the streaming phase's key for --filter.
std::string StreamKey(const std::string& system, const std::string& transport);

// "courier/tls/handshake": the handshake phase's key for --filter.
std::string HandshakeKey(const std::string& system, const std::string& transport);

// True if `key` contains `filter` or one of its comma-separated alternatives (empty ones are
// ignored; a filter with none matches every key).
bool MatchesFilter(const std::string& key, const std::string& filter);

// Runs every case (progress on stderr) and returns what was measured, ordered by transport,
// payload, then system; a case that fails keeps its error and the run goes on. The handshake
// phase's results go to `handshakes`, the streaming phase's to `streams` (each by transport,
// then system).
std::vector<CaseResult> RunCases(const std::vector<std::unique_ptr<System>>& systems,
                                 const RunOptions& options, std::vector<StreamResult>* streams,
                                 std::vector<HandshakeResult>* handshakes = nullptr);

}  // namespace courier::bench
