// What the benchmark measures: a System (raw sockets, courier, gRPC, Cap'n Proto) serves an echo
// on a transport in its own process and calls it from the driver's. Each system lives in one file
// (raw_system.cc, courier_system.cc, grpc_system.cc, capnp_system.cc); the driver knows only this
// interface.
#pragma once

#include <atomic>
#include <chrono>
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

// What a server-streaming sample counted: messages that arrived in the window, and its length.
struct StreamSample {
  int64_t messages = 0;
  double seconds = 0;
};

// The client's side of a server-streaming sample (StreamDownload): the server writes for
// warmup + measure seconds from when it got the request; the window opens `warmup` seconds
// after this was made (the request was sent) and closes when the stream ends, so it is about
// `measure` seconds of messages arriving back to back. Until it opens, the clock is read every
// 16th message; after, not at all, so counting costs next to nothing.
class StreamWindow {
 public:
  explicit StreamWindow(double warmup_s)
      : opens_(std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                   std::chrono::duration<double>(warmup_s))) {}
  // `n` more messages arrived.
  void Received(int64_t n = 1) {
    if (open_) {
      messages_ += n;
      return;
    }
    since_check_ += n;
    if (since_check_ < 16) return;
    since_check_ = 0;
    if (std::chrono::steady_clock::now() >= opens_) {
      open_ = true;
      begin_ = std::chrono::steady_clock::now();
    }
  }
  // The stream ended (its last message came before).
  void Close() {
    if (!closed_) end_ = std::chrono::steady_clock::now();
    closed_ = true;
  }
  absl::StatusOr<StreamSample> Result() const {
    if (!closed_ || !open_ || messages_ <= 0) {
      return absl::InternalError("the stream ended before its measurement window");
    }
    StreamSample sample;
    sample.messages = messages_;
    sample.seconds = std::chrono::duration<double>(end_ - begin_).count();
    return sample;
  }

 private:
  std::chrono::steady_clock::time_point opens_, begin_, end_;
  bool open_ = false, closed_ = false;
  int64_t since_check_ = 0;
  int64_t messages_ = 0;
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

  // Streaming (issue #11); a system or transport without it keeps these defaults (kUnimplemented),
  // and the report shows "-".
  //
  // One server-streaming call: the server writes messages of `payload` bytes back to back for
  // warmup_s + measure_s, as fast as its flow control lets it, then ends the stream; the client
  // counts them in a StreamWindow(warmup_s). The connection is usable again after it returns.
  virtual absl::StatusOr<StreamSample> StreamDownload(size_t /*payload*/, double /*warmup_s*/,
                                                      double /*measure_s*/) {
    return absl::UnimplementedError("no server streaming");
  }
  // Opens one bidirectional stream and makes `count` round trips on it, one message of
  // `payload` bytes out and its echo back, appending each in nanoseconds to `round_trips`
  // (opening and closing the stream is not timed).
  virtual absl::Status BidiPingPong(size_t /*payload*/, int /*count*/,
                                    std::vector<int64_t>& /*round_trips*/) {
    return absl::UnimplementedError("no bidirectional streaming");
  }
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
  // The handshake phase (issue #13): a new connection, made as a client that calls at once
  // would make it; the runner times this and the first call together. A system whose Connect
  // waits for something a first call would wait for anyway (gRPC's WaitForConnected) skips it
  // here.
  virtual absl::StatusOr<std::unique_ptr<EchoClient>> ConnectForFirstCall(
      std::string_view transport, const std::string& endpoint) {
    return Connect(transport, endpoint);
  }
};

std::unique_ptr<System> NewRawSystem();
std::unique_ptr<System> NewCourierSystem();
// courier with Prometheus metrics on (ServerOptions::metrics_listen,
// ChannelOptions::metrics_registry).
std::unique_ptr<System> NewCourierMetricsSystem();
// Null when this build has no gRPC.
std::unique_ptr<System> NewGrpcSystem();
// What the report says about gRPC: "included (...)" with its version, or "not built (why)".
std::string GrpcNote();
// Null when this build has no Cap'n Proto.
std::unique_ptr<System> NewCapnpSystem();
// What the report says about Cap'n Proto: "included (...)" with its version, or "not built (why)".
std::string CapnpNote();

// Every system this build has, raw first (the floor), then courier, courier+metrics, gRPC,
// Cap'n Proto.
std::vector<std::unique_ptr<System>> AllSystems();

// The bytes every system echoes: `size` bytes of printable ASCII (valid UTF-8, so protobuf
// string fields accept it).
std::string MakePayload(size_t size);

}  // namespace courier::bench
