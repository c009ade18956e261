// The abuse scenarios: each runs in a forked child of the driver (main.cc), against a fresh
// server process when it needs one, and reports through a pipe: detail lines as it goes, then
// one figure. The driver bounds its time and kills it (and the server) when that passes.
#pragma once

#include <sys/types.h>

#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "abuse/process.h"
#include "transport/endpoint.h"

namespace courier::abuse {

struct ScenarioContext {
  pid_t server_pid = -1;  // -1 for scenarios that start no server
  std::string uri;        // the server's resolved endpoint, e.g. "unix://@courier-..."
  Endpoint endpoint;
  std::string transport;  // "unix" or "tcp"
  bool quick = false;
  std::string self_exe;     // for the one-call client process
  std::string echo_client;  // examples/echo_client if found, else empty
};

// Lines to the driver: "detail TEXT" and, once, "figure HEADLINE\tTEXT". Newlines in the text
// become spaces.
class Report {
 public:
  explicit Report(int fd) : fd_(fd) {}
  void Detail(std::string_view text);
  // `headline`: the short figure for the final table; `text`: the rest of the scenario's line.
  void Figure(std::string_view headline, std::string_view text);

 private:
  void Write(std::string line);
  int fd_;
};

struct Scenario {
  std::string_view name;
  std::string_view what;  // one line for --list
  bool needs_server;
  bool stops_server;  // ends the server itself (so its exit is no surprise)
  int bound_seconds;  // the driver gives up (and says "timed out after X s") after this
  void (*run)(const ScenarioContext& ctx, Report& report);
};

// In the order of a full run.
std::span<const Scenario> AllScenarios();

// The scenarios (wire_scenarios.cc: raw sockets; channel_scenarios.cc: courier::Channel).
void HeaderCommit(const ScenarioContext& ctx, Report& report);
void NonReadingClient(const ScenarioContext& ctx, Report& report);
void SleepingHandlers(const ScenarioContext& ctx, Report& report);
void SleepingHandlersChannel(const ScenarioContext& ctx, Report& report);
void UnreadPongs(const ScenarioContext& ctx, Report& report);
void ShutdownNonReading(const ScenarioContext& ctx, Report& report);
void FloodFairness(const ScenarioContext& ctx, Report& report);
void DeadlineScan(const ScenarioContext& ctx, Report& report);
void IdleConnections(const ScenarioContext& ctx, Report& report);
void DeadServer(const ScenarioContext& ctx, Report& report);
void StoppedServer(const ScenarioContext& ctx, Report& report);

// What the server says of itself (the Stats method), not counting the asking call and its
// connection; nullopt if it does not answer within 2 s.
struct ServerStats {
  size_t active_calls = 0;
  size_t connections = 0;
};
std::optional<ServerStats> QueryStats(const std::string& uri);
// "the server reports N calls running on M connections", or that it did not answer.
std::string DescribeStats(const std::optional<ServerStats>& stats);

// Shared by the scenarios.
std::string Mib(double mib);     // "814.2 MiB"
std::string Grow(double delta);  // "+814.2 MiB", "-0.3 MiB"
std::string Seconds(double s);   // "1.23 s"

}  // namespace courier::abuse
