// A peer that speaks the wire by hand, for tests that must break the rules a Channel keeps:
// frame builders, and a raw connection that writes bytes and collects what comes back.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/io_context.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "rpc/internal/wire.h"
#include "rpc/wire.pb.h"
#include "tests/testing/status_matchers.h"
#include "transport/frame.h"
#include "transport/registry.h"

namespace courier::testing {

// A courier hello; `stream_window` 0 takes part in no streaming call (PROTOCOL.md §13.1).
inline std::string HelloBytes(uint32_t max_frame_payload = 0, uint32_t stream_window = 0,
                              uint32_t max_concurrent_calls = 0) {
  return transport::EncodeFrame(
      internal::HelloFrame(max_frame_payload, max_concurrent_calls, stream_window));
}

inline std::string RequestBytes(uint32_t call_id, std::string method, std::string message,
                                uint64_t timeout_us = 10'000'000, Metadata metadata = {},
                                uint8_t flags = transport::kFlagEndOfStream) {
  wire::RequestHeader header;
  header.set_method(std::move(method));
  header.set_timeout_us(timeout_us);
  internal::ToWire(metadata, *header.mutable_metadata());
  return transport::EncodeFrame(transport::Frame{transport::FrameType::kRequest, flags, call_id,
                                                 internal::EncodePayload(header, message)});
}

inline std::string ControlBytes(transport::FrameType type, uint32_t call_id = 0,
                                std::string payload = {}) {
  return transport::EncodeFrame(transport::Frame{type, 0, call_id, std::move(payload)});
}

// Streaming calls (PROTOCOL.md §13). A REQUEST without end of stream and no message bytes.
inline std::string OpenStreamBytes(uint32_t call_id, std::string method,
                                   uint64_t timeout_us = 10'000'000, Metadata metadata = {}) {
  return RequestBytes(call_id, std::move(method), "", timeout_us, std::move(metadata), 0);
}
// One message; `flags` other than 0 only to break the rules.
inline std::string MessageBytes(uint32_t call_id, std::string message, uint8_t flags = 0) {
  return transport::EncodeFrame(
      transport::Frame{transport::FrameType::kMessage, flags, call_id, std::move(message)});
}
// The half-close: MESSAGE with end of stream and (unless breaking the rules) no payload.
inline std::string HalfCloseBytes(uint32_t call_id, std::string payload = {}) {
  return MessageBytes(call_id, std::move(payload), transport::kFlagEndOfStream);
}
// A WINDOW granting `increment` bytes (any u32, 0 included, to break the rules).
inline std::string WindowBytes(uint32_t call_id, uint32_t increment) {
  std::string payload;
  for (int i = 0; i < 4; ++i) payload.push_back(static_cast<char>((increment >> (8 * i)) & 0xff));
  return ControlBytes(transport::FrameType::kWindow, call_id, std::move(payload));
}
inline std::string CancelBytes(uint32_t call_id) {
  return ControlBytes(transport::FrameType::kCancel, call_id);
}
inline std::string PingBytes(std::string payload) {
  return ControlBytes(transport::FrameType::kPing, 0, std::move(payload));
}
// A server's RESPONSE: `status` (with `metadata`), then `message` if any; `flags` other than
// end of stream only to break the rules.
inline std::string ResponseBytes(uint32_t call_id, const absl::Status& status,
                                 std::string message = {}, Metadata metadata = {},
                                 uint8_t flags = transport::kFlagEndOfStream) {
  wire::ResponseHeader header;
  header.set_code(static_cast<int>(status.code()));
  header.set_message(std::string(status.message()));
  internal::ToWire(metadata, *header.mutable_metadata());
  return transport::EncodeFrame(transport::Frame{transport::FrameType::kResponse, flags, call_id,
                                                 internal::EncodePayload(header, message)});
}

// Every frame in `bytes`, in order (stops at the first incomplete or bad one).
inline std::vector<transport::Frame> Frames(const std::string& bytes) {
  transport::FrameDecoder decoder;
  decoder.Append(bytes);
  std::vector<transport::Frame> frames;
  for (;;) {
    absl::StatusOr<std::optional<transport::Frame>> frame = decoder.Next();
    if (!frame.ok() || !frame->has_value()) break;
    frames.push_back(**std::move(frame));
  }
  return frames;
}

struct RawResponse {
  uint32_t call_id;
  absl::Status status;
  std::string payload;  // the whole frame payload
};

inline std::vector<RawResponse> Responses(const std::string& bytes) {
  std::vector<RawResponse> out;
  for (transport::Frame& frame : Frames(bytes)) {
    if (frame.type != transport::FrameType::kResponse) continue;
    wire::ResponseHeader header;
    if (!internal::DecodePayloadHeader(frame.payload, header).ok()) break;
    out.push_back({frame.call_id, internal::StatusFromWire(header), std::move(frame.payload)});
  }
  return out;
}

// One raw connection on `io`: Write what you like, Read what arrives, see when it closes.
class RawPeer {
 public:
  // The raw server side: the next connection `listener` accepts (nullptr if it fails).
  static std::unique_ptr<RawPeer> Accept(asio::io_context& io, transport::Listener& listener) {
    absl::StatusOr<std::unique_ptr<transport::Connection>> connection =
        RunCoro(io, listener.Accept(io.get_executor()));
    if (!connection.ok()) return nullptr;
    auto peer = std::make_unique<RawPeer>();
    peer->connection_ = *std::move(connection);
    return peer;
  }

  static std::unique_ptr<RawPeer> Connect(asio::io_context& io, const transport::TransportInfo& t,
                                          const Endpoint& to) {
    auto transport = transport::NewTransport(t.scheme, io.get_executor()).value();
    absl::StatusOr<std::unique_ptr<transport::Connection>> connection =
        RunCoro(io, transport->Connect(to));
    if (!connection.ok()) return nullptr;
    auto peer = std::make_unique<RawPeer>();
    peer->connection_ = *std::move(connection);
    return peer;
  }

  // Writes all of `bytes` (running `io` while the kernel pushes back).
  absl::Status Write(asio::io_context& io, const std::string& bytes) {
    asio::const_buffer buffer = asio::buffer(bytes);
    return RunCoro(io, connection_->Write({&buffer, 1}));
  }
  // Writes what the kernel takes now, without waiting.
  size_t TryWrite(const std::string& bytes) {
    asio::const_buffer buffer = asio::buffer(bytes);
    return connection_->TryWrite({&buffer, 1}).value_or(0);
  }
  // Reads until `done(received)` or the peer closes (then closed() is true), for at most `bound`.
  template <typename Done>
  void ReadUntil(asio::io_context& io, Done done,
                 std::chrono::milliseconds bound = std::chrono::seconds(5)) {
    using namespace asio::experimental::awaitable_operators;
    auto op = [&]() -> asio::awaitable<void> {
      co_await asio::this_coro::throw_if_cancelled(false);
      asio::steady_timer timer(co_await asio::this_coro::executor, bound);
      char chunk[16384];
      while (!done(received_)) {
        auto r = co_await (connection_->Read(asio::buffer(chunk)) ||
                           timer.async_wait(transport::use_nothrow));
        if (r.index() == 1) co_return;  // the bound passed
        absl::StatusOr<size_t>& n = std::get<0>(r);
        if (!n.ok() || *n == 0) {
          closed_ = true;
          co_return;
        }
        received_.append(chunk, *n);
      }
    };
    RunCoro(io, op(), bound + std::chrono::seconds(5));
  }
  void ReadUntilClosed(asio::io_context& io,
                       std::chrono::milliseconds bound = std::chrono::seconds(5)) {
    ReadUntil(
        io, [](const std::string&) { return false; }, bound);
  }

  // Reads until the frames received so far are at least `count`; false if the peer closed or
  // `bound` passed first.
  bool ReadFrames(asio::io_context& io, size_t count,
                  std::chrono::milliseconds bound = std::chrono::seconds(5)) {
    ReadUntil(
        io, [count](const std::string& in) { return Frames(in).size() >= count; }, bound);
    return Frames(received_).size() >= count;
  }
  // Writes a PING and reads until its PONG: true if the peer is still there and has handled
  // everything written before (frames are handled in order).
  bool Pongs(asio::io_context& io) {
    const std::string token = "still-there-" + std::to_string(++pings_);
    if (!Write(io, PingBytes(token)).ok()) return false;
    ReadUntil(io, [&token](const std::string& in) {
      for (const transport::Frame& f : Frames(in)) {
        if (f.type == transport::FrameType::kPong && f.payload == token) return true;
      }
      return false;
    });
    for (const transport::Frame& f : Frames(received_)) {
      if (f.type == transport::FrameType::kPong && f.payload == token) return !closed_;
    }
    return false;
  }

  const std::string& received() const { return received_; }
  bool closed() const { return closed_; }
  transport::Connection& connection() { return *connection_; }

 private:
  std::unique_ptr<transport::Connection> connection_;
  std::string received_;
  bool closed_ = false;
  int pings_ = 0;
};

}  // namespace courier::testing
