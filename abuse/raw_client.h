// Hand-made courier clients over non-blocking sockets, for what no courier::Channel would do:
// stop reading, declare huge frames, flood. Frames are built with transport/frame.h and the
// headers with wire.pb.h (PROTOCOL.md); replies are decoded and tallied in an Inbound.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "abuse/process.h"
#include "transport/endpoint.h"
#include "transport/frame.h"

namespace courier::abuse {

inline constexpr std::string_view kEchoMethod = "/courier.abuse.Abuse/Echo";
inline constexpr std::string_view kSleepMethod = "/courier.abuse.Abuse/Sleep";
inline constexpr std::string_view kStatsMethod = "/courier.abuse.Abuse/Stats";

// Whole frames, header and payload.
std::string HelloFrameBytes();
std::string FrameBytes(transport::FrameType type, uint8_t flags, uint32_t call_id,
                       std::string payload);
// A REQUEST payload: the varint-delimited RequestHeader, then `message`. timeout_us 0: none.
std::string RequestPayload(std::string_view method, uint64_t timeout_us, std::string_view message);
std::string RequestFrame(uint32_t call_id, std::string_view payload);
std::string CancelFrame(uint32_t call_id);

// What came back on a connection, tallied as it is read.
struct Inbound {
  size_t bytes = 0;
  size_t hellos = 0;
  // From the server's HELLO: Hello.max_concurrent_calls (field 4, newer servers); 0: none.
  uint32_t max_concurrent_calls = 0;
  size_t responses = 0;
  size_t pongs = 0;
  size_t goaways = 0;
  size_t other = 0;
  std::map<int, size_t> codes;  // response status code → count
  std::optional<Clock::time_point> first_goaway;
  std::string goaway_reason;
  std::optional<Clock::time_point> closed;  // EOF, reset or a frame we could not decode
  std::string close_reason;
  // Called for every response (call id, status code) if set.
  std::function<void(uint32_t, int)> on_response;

  // "3 responses (RESOURCE_EXHAUSTED 2, OK 1), goaway \"...\"", for reports.
  std::string Summary() const;
};

// "OK", "RESOURCE_EXHAUSTED", ... for a wire status code.
std::string CodeName(int code);

class RawConnection {
 public:
  // Connects (non-blocking, bounded by `timeout`) to a unix:// or tcp:// endpoint.
  static absl::StatusOr<std::unique_ptr<RawConnection>> Dial(const Endpoint& endpoint,
                                                             Clock::duration timeout);
  explicit RawConnection(int fd);
  ~RawConnection();
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  int fd() const { return fd_; }
  // True once the peer closed, reset the connection, or sent what we could not decode.
  bool closed() const { return inbound_.closed.has_value(); }
  Inbound& inbound() { return inbound_; }

  // Sends our HELLO and reads until the server's HELLO has arrived (PROTOCOL.md §6.1).
  absl::Status Handshake(Clock::time_point deadline);
  // Writes what the socket takes now (0 when it would block). kUnavailable once the peer is
  // gone (the connection is then closed()).
  absl::StatusOr<size_t> TryWrite(std::string_view data);
  // Writes all of `data` unless `deadline` passes first; returns the bytes written.
  absl::StatusOr<size_t> WriteAll(std::string_view data, Clock::time_point deadline);
  // Reads and decodes everything available now, without waiting. False once closed().
  bool ReadAvailable();
  // Waits up to `timeout_ms` (-1: forever) for `events`; returns the revents (0: timed out).
  short Wait(short events, int timeout_ms);

 private:
  void MarkClosed(std::string why);

  int fd_;
  transport::FrameDecoder decoder_;
  Inbound inbound_;
};

struct StreamResult {
  size_t frames = 0;  // written in full
  size_t bytes = 0;
  bool done = false;     // all `count` frames written
  bool stalled = false;  // no byte went out for `stall`
  bool closed = false;   // the peer went away
  double seconds = 0;
};

// Writes `count` frames, frame i made by `make(i, out)` appending its bytes, as fast as the socket
// takes them, until all are written, no byte goes out for `stall`, the peer goes away, or
// `deadline` passes. With `read_replies`, reads what comes back meanwhile (into inbound()).
StreamResult WriteFrames(RawConnection& connection, size_t count,
                         absl::FunctionRef<void(size_t, std::string&)> make, Clock::duration stall,
                         bool read_replies, Clock::time_point deadline);

// Reads (and tallies) whatever arrives on `connection` for `duration` or until it closes.
void ReadFor(RawConnection& connection, Clock::duration duration);

}  // namespace courier::abuse
