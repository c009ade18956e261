// What the benchmark measures: a System (raw sockets, courier, gRPC, Cap'n Proto) serves an echo
// on a transport in its own process and calls it from the driver's. Each system lives in one file
// (raw_system.cc, courier_system.cc, grpc_system.cc, capnp_system.cc); the driver knows only this
// interface.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace courier::bench {

// Shared between a client running calls and the thread that samples it.
struct CallCounters {
  std::atomic<uint64_t> completed{0};  // calls that came back (and were checked)
  std::atomic<bool> stop{false};       // set by the sampler: issue no new calls
};

// One connection (or channel) from the driver to a server, used from one thread.
class EchoClient {
 public:
  virtual ~EchoClient() = default;
  // Makes `count` calls one at a time, each echoing `payload` bytes, and appends each round
  // trip in nanoseconds to `round_trips`. A reply of the wrong size is kDataLoss.
  virtual absl::Status PingPong(size_t payload, int count, std::vector<int64_t>& round_trips) = 0;
  // Keeps `in_flight` calls of `payload` bytes outstanding, counting each reply in
  // `counters.completed`, until `counters.stop` is set (from another thread); returns once every
  // outstanding call has come back, so the connection can be used again.
  virtual absl::Status Saturate(size_t payload, int in_flight, CallCounters& counters) = 0;
};

class System {
 public:
  virtual ~System() = default;
  // "raw", "courier", "grpc", "capnp".
  virtual std::string_view name() const = 0;
  // The transports it runs over ("unix", "tcp", ...), in report order.
  virtual std::vector<std::string> transports() const = 0;
  // Server process: serves the echo on `transport`, calls `ready` once with the endpoint clients
  // connect to, then serves until the process exits. Returns only on failure.
  virtual absl::Status Serve(std::string_view transport,
                             const std::function<void(const std::string& endpoint)>& ready) = 0;
  // Driver process: a client of the server at `endpoint` (what `ready` was given).
  virtual absl::StatusOr<std::unique_ptr<EchoClient>> Connect(std::string_view transport,
                                                              const std::string& endpoint) = 0;
};

std::unique_ptr<System> NewRawSystem();
std::unique_ptr<System> NewCourierSystem();
// Null when this build has no gRPC.
std::unique_ptr<System> NewGrpcSystem();
// What the report says about gRPC: "included (...)" with its version, or "not built (why)".
std::string GrpcNote();
// Null when this build has no Cap'n Proto.
std::unique_ptr<System> NewCapnpSystem();
// What the report says about Cap'n Proto: "included (...)" with its version, or "not built (why)".
std::string CapnpNote();

// Every system this build has, raw first (the floor), then courier, gRPC, Cap'n Proto.
std::vector<std::unique_ptr<System>> AllSystems();

// The bytes every system echoes: `size` bytes of printable ASCII (valid UTF-8, so protobuf
// string fields accept it).
std::string MakePayload(size_t size);

}  // namespace courier::bench
