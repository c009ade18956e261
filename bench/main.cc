// courier-bench: courier against the raw mechanism, gRPC and Cap'n Proto, in one run on one
// machine.
//
//   courier-bench [--quick | --full | --smoke] [--no-pin] [--filter SUBSTRING[,SUBSTRING...]]
//                 [--out-json PATH] [--out-svg PATH] [--latency-only] [--calls N]
//                 [--handshakes N]
//
// For each system (raw, courier, grpc, capnp) and transport it starts a server process (this
// program with --serve, pinned to one CPU), runs the client here (pinned to another), and measures
// echo latency (one call in flight), throughput (1/32/128 in flight), CPU and heap allocations per
// call on each side (alloc_counter.h) for 64 B, 4 KiB and 1 MiB, then the streaming figures
// (issue #11: server-streaming messages/s, bidi ping-pong p50 beside unary; unix, tcp, shm;
// --filter key SYSTEM/TRANSPORT/stream) and the time from a fresh connection to its first call's
// reply (issue #13, TLS handshakes included; --filter key SYSTEM/TRANSPORT/handshake), with what
// tls:// costs courier and gRPC beside their tcp://. Prints a table with ratios and
// writes JSON and SVG (bench-results.{json,svg} in the working directory by default).
// Exits 1 if any case failed, 2 on bad flags.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "bench/alloc_counter.h"
#include "bench/cpu.h"
#include "bench/json_output.h"
#include "bench/machine.h"
#include "bench/report.h"
#include "bench/results.h"
#include "bench/runner.h"
#include "bench/server_process.h"
#include "bench/svg_chart.h"
#include "bench/system.h"

namespace courier::bench {
namespace {

int Usage() {
  std::fprintf(
      stderr,
      "usage: courier-bench [--quick | --full | --smoke] [--no-pin] [--filter S[,S...]]\n"
      "                     [--out-json PATH] [--out-svg PATH] [--latency-only] [--calls N]\n"
      "                     [--handshakes N]\n"
      "  --quick     all cases, short samples (under a minute)\n"
      "  --full      all cases, long samples (the default)\n"
      "  --smoke     unix, shm, shm-nospin, pipe, fifo, udp, mq and tls only, 64 B only\n"
      "              (for the test suite)\n"
      "  --no-pin    do not pin the server and client to different CPUs\n"
      "  --filter S  only cases whose key SYSTEM/TRANSPORT/PAYLOAD (or SYSTEM/TRANSPORT/stream,\n"
      "              SYSTEM/TRANSPORT/handshake) contains S or one of S's comma-separated\n"
      "              parts, e.g. courier/unix/64B, /tcp/, /1MiB, /handshake,\n"
      "              courier/tcp/,courier/tls/,grpc/tcp/,grpc/tls/\n"
      "  --latency-only  skip the throughput phases (e.g. under a profiler)\n"
      "  --calls N   timed calls in each latency sample, instead of the mode's\n"
      "  --handshakes N  timed fresh connections in each handshake sample, instead of the\n"
      "              mode's (0: no handshake phase)\n");
  return 2;
}

std::string SelfExe() {
  char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "";
  return std::string(path, static_cast<size_t>(n));
}

int Serve(std::string_view system_name, std::string_view transport, int pin_cpu) {
  for (std::unique_ptr<System>& system : AllSystems()) {
    if (system->name() == system_name) return ServeMain(*system, transport, pin_cpu);
  }
  std::printf("error no system %.*s in this build\n", static_cast<int>(system_name.size()),
              system_name.data());
  return 1;
}

int Main(int argc, char** argv) {
  signal(SIGPIPE, SIG_IGN);
  std::string mode = "full";
  bool pin = true;
  bool latency_only = false;
  int calls = 0;
  int handshakes = -1;
  std::string filter, json_path = "bench-results.json", svg_path = "bench-results.svg";
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--serve" && i + 2 < argc) {
      int pin_cpu = -1;
      if (i + 4 < argc && std::string_view(argv[i + 3]) == "--pin-cpu") {
        pin_cpu = std::atoi(argv[i + 4]);
      }
      return Serve(argv[i + 1], argv[i + 2], pin_cpu);
    } else if (arg == "--quick" || arg == "--full" || arg == "--smoke") {
      mode = std::string(arg.substr(2));
    } else if (arg == "--no-pin") {
      pin = false;
    } else if (arg == "--latency-only") {
      latency_only = true;
    } else if (arg == "--calls" && i + 1 < argc) {
      calls = std::atoi(argv[++i]);
      if (calls <= 0) return Usage();
    } else if (arg == "--handshakes" && i + 1 < argc) {
      handshakes = std::atoi(argv[++i]);
      if (handshakes < 0 || (handshakes == 0 && std::string_view(argv[i]) != "0")) return Usage();
    } else if (arg == "--filter" && i + 1 < argc) {
      filter = argv[++i];
    } else if (arg == "--out-json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (arg == "--out-svg" && i + 1 < argc) {
      svg_path = argv[++i];
    } else {
      return Usage();
    }
  }

  RunResult run;
  run.mode = mode;
  run.machine = DescribeMachine();
  RunOptions options;
  options.plan = MakePlan(mode);
  if (latency_only) options.plan.in_flight.clear();
  if (calls > 0) {
    for (PayloadPlan& p : options.plan.payloads) p.latency_calls = calls;
  }
  if (handshakes >= 0) options.plan.handshake.connections = handshakes;
  options.exe = SelfExe();
  options.filter = filter;
  run.in_flight = options.plan.in_flight;
  run.handshake_connections = options.plan.handshake.connections;
  run.handshake_pause_ms = options.plan.handshake.pause_ms;
  std::vector<int> cpus = AllowedCpus();
  if (pin && cpus.size() >= 2) {
    // Before any thread starts, so the client's threads (gRPC's too) inherit the pinning.
    if (absl::Status s = PinToCpu(cpus[1]); s.ok()) {
      run.machine.pinned = true;
      run.machine.server_cpu = options.server_cpu = cpus[0];
      run.machine.client_cpu = cpus[1];
    } else {
      std::fprintf(stderr, "courier-bench: not pinning: %s\n", s.ToString().c_str());
    }
  }

  std::vector<std::unique_ptr<System>> systems = AllSystems();
  run.grpc_note = GrpcNote();
  run.capnp_note = CapnpNote();
  for (const std::unique_ptr<System>& system : systems) {
    if (system->name() == "grpc") run.grpc_included = true;
    if (system->name() == "capnp") run.capnp_included = true;
  }
  run.allocs_counted = AllocCounterEnabled();
  run.allocs_note = AllocCounterNote();
  std::fprintf(stderr, "courier-bench %s: gRPC %s; Cap'n Proto %s\n", mode.c_str(),
               run.grpc_note.c_str(), run.capnp_note.c_str());
  run.cases = RunCases(systems, options, &run.streams, &run.handshakes);
  std::fprintf(stderr, "\n");

  PrintReport(run, stdout);
  int exit_code = 0;
  for (const CaseResult& c : run.cases) {
    if (!c.error.empty()) exit_code = 1;
  }
  for (const StreamResult& s : run.streams) {
    if (!s.error.empty()) exit_code = 1;
  }
  for (const HandshakeResult& h : run.handshakes) {
    if (!h.error.empty()) exit_code = 1;
  }
  if (run.cases.empty() && run.streams.empty() && run.handshakes.empty()) {
    std::fprintf(stderr, "courier-bench: no case matches --filter '%s'\n", filter.c_str());
    exit_code = 1;
  }
  for (const absl::Status& s : {WriteJsonFile(run, json_path), WriteSvgFile(run, svg_path)}) {
    if (!s.ok()) {
      std::fprintf(stderr, "courier-bench: %s\n", s.ToString().c_str());
      exit_code = 1;
    }
  }
  std::printf("\nwrote %s and %s\n", json_path.c_str(), svg_path.c_str());
  return exit_code;
}

}  // namespace
}  // namespace courier::bench

int main(int argc, char** argv) { return courier::bench::Main(argc, argv); }
