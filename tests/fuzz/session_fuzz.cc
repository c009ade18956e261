// libFuzzer target for a server session: a real courier::Server reads the input as the bytes one
// client sends, through the hello, the frame and wire headers, dispatch and the handlers. The
// connection is in memory (a transport table of our own), so there is no socket.
// Input: one mode byte, then the client's bytes.
//   mode bits 0-2: read chunk size: 1, 3, 7, 16, 61, 256, 4096 bytes, or all at once
//   mode bits 3-4: writes: 0 TryWrite takes everything; 1 TryWrite takes nothing (every write
//                  is asynchronous); 2 TryWrite takes 5 bytes, Write the rest; 3 the peer is gone
//                  (Write fails kUnavailable)
//   mode bit 5:    after the input the client stays connected until the calls are done (else:
//                  end of stream, which cancels them)
//   mode bit 6:    the connection has message boundaries (one Write per frame)
//   mode bit 7:    Shutdown() the server once half the input has been read
// Checks: every byte the server writes decodes as frames; the first is its hello; responses
// answer call ids the client used, carry a ResponseHeader that parses and, when not OK (or for
// a stream), no message; stream messages and windows name the client's streams, and the server
// half-closes only with its trailer; pongs and goaway are connection-level; the run ends (no
// hang, no work left once the server is destroyed); and, under ASan, nothing leaks.
#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/io_context.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "google/protobuf/stubs/logging.h"
#include "rpc/call.h"
#include "rpc/internal/wire.h"
#include "rpc/log.h"
#include "rpc/server.h"
#include "rpc/service.h"
#include "rpc/wire.pb.h"
#include "tests/fuzz/fuzz_check.h"
#include "transport/endpoint.h"
#include "transport/frame.h"
#include "transport/registry.h"
#include "transport/transport.h"

namespace courier {
namespace {

using transport::Frame;
using transport::FrameType;
using transport::use_nothrow;

constexpr char kEcho[] = "/fuzz.Fuzz/Echo";    // the request, with its metadata sent back
constexpr char kHello[] = "/fuzz.Fuzz/Hello";  // typed: wire::Hello in, the same Hello out
constexpr char kSleep[] = "/fuzz.Fuzz/Sleep";  // sleeps (request[0] % 8) * 250 us
constexpr char kFail[] = "/fuzz.Fuzz/Fail";    // status code (request[0] % 16) + 1, see below
constexpr char kThrow[] = "/fuzz.Fuzz/Throw";  // a handler that throws: answered kInternal
constexpr char kBig[] = "/fuzz.Fuzz/Big";      // 2 * (request[0] | request[1] << 8) bytes
// Streaming (bidi): each message echoed, at most 16; ends OK after the client's half-close.
constexpr char kStream[] = "/fuzz.Fuzz/Stream";
// Streaming: after its first message m, writes m[0] % 64 messages of 4 * m[1] bytes.
constexpr char kFlood[] = "/fuzz.Fuzz/Flood";
// A stream handler waits at most this long for each read or write (a fuzz input may never send
// what it waits for; the run must still end).
constexpr auto kStreamPatience = std::chrono::milliseconds(2);

// Far beyond any run's real length (a few ms): reaching it means the session hangs.
constexpr auto kHangGuard = std::chrono::seconds(5);

enum class WriteMode { kTakeAll, kTakeNothing, kTakeSome, kPeerGone };

// The client's side of the in-memory connection: what it sends, and what it has received.
struct Peer {
  std::string_view input;
  size_t read = 0;  // bytes of `input` the server has read
  size_t chunk = 0;
  WriteMode write_mode = WriteMode::kTakeAll;
  bool hold_open = false;
  bool message_boundaries = false;
  std::string output;     // everything the server wrote
  bool accepted = false;  // the listener has handed out the connection
  bool read_all = false;  // the server came back for more after the last byte
};

// The transport factory is a plain function pointer, so the run's peer is found here.
Peer* g_peer = nullptr;

class FuzzConnection final : public transport::Connection {
 public:
  FuzzConnection(asio::any_io_executor executor, Peer& peer)
      : executor_(std::move(executor)), peer_(peer), hold_(executor_) {}

  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) override {
    // Like a socket, complete through the scheduler: handlers run between reads.
    co_await asio::post(executor_, use_nothrow);
    if (closed_) co_return absl::CancelledError("fuzz read: connection closed");
    if (peer_.read < peer_.input.size() && into.size() > 0) {
      const size_t n = std::min({into.size(), peer_.chunk, peer_.input.size() - peer_.read});
      std::memcpy(into.data(), peer_.input.data() + peer_.read, n);
      peer_.read += n;
      co_return n;
    }
    peer_.read_all = true;
    if (!peer_.hold_open) co_return size_t{0};
    hold_.expires_at(asio::steady_timer::time_point::max());
    co_await hold_.async_wait(use_nothrow);  // until Close()
    co_return absl::CancelledError("fuzz read: connection closed");
  }

  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) override {
    // Suspends first, so `data` must really stay valid until the write completes.
    co_await asio::post(executor_, use_nothrow);
    if (closed_) co_return absl::CancelledError("fuzz write: connection closed");
    if (peer_.write_mode == WriteMode::kPeerGone) {
      co_return absl::UnavailableError("fuzz write: connection reset by peer");
    }
    Take(data, std::numeric_limits<size_t>::max());
    co_return absl::OkStatus();
  }

  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) override {
    if (closed_) return absl::CancelledError("fuzz write: connection closed");
    switch (peer_.write_mode) {
      case WriteMode::kTakeAll:
        return Take(data, std::numeric_limits<size_t>::max());
      case WriteMode::kTakeSome:
        return Take(data, 5);
      case WriteMode::kTakeNothing:
      case WriteMode::kPeerGone:
        break;
    }
    return size_t{0};
  }

  // The handler forms run the coroutines: the session (which owns this connection) stays alive
  // until its handler has run, so `this` outlives them.
  void AsyncRead(asio::mutable_buffer into, ReadHandler done) override {
    asio::co_spawn(executor_, Read(into),
                   [done = std::move(done)](std::exception_ptr, absl::StatusOr<size_t> n) mutable {
                     done(std::move(n));
                   });
  }
  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) override {
    asio::co_spawn(executor_, Write(data),
                   [done = std::move(done)](std::exception_ptr, absl::Status s) mutable {
                     done(std::move(s));
                   });
  }

  void Close() override {
    closed_ = true;
    hold_.cancel();
  }
  transport::Traits traits() const override {
    return {.message_boundaries = peer_.message_boundaries, .reliable = true, .max_message = 0};
  }
  transport::PeerInfo peer() const override { return {"pipe://fuzz-client", std::nullopt}; }
  asio::any_io_executor executor() const override { return executor_; }

 private:
  // Appends up to `max` bytes of `data` to the peer's output; returns how many.
  size_t Take(std::span<const asio::const_buffer> data, size_t max) {
    size_t taken = 0;
    for (const asio::const_buffer& buffer : data) {
      const size_t n = std::min(buffer.size(), max - taken);
      peer_.output.append(static_cast<const char*>(buffer.data()), n);
      taken += n;
      if (taken == max) break;
    }
    return taken;
  }

  asio::any_io_executor executor_;
  Peer& peer_;
  asio::steady_timer hold_;  // a read after the input waits here when the peer holds on
  bool closed_ = false;
};

// Hands out one connection, then waits until closed.
class FuzzListener final : public transport::Listener {
 public:
  FuzzListener(asio::any_io_executor executor, Peer& peer)
      : peer_(peer), closed_timer_(executor, asio::steady_timer::time_point::max()) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<transport::Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    if (!closed_ && !peer_.accepted) {
      peer_.accepted = true;
      std::unique_ptr<transport::Connection> connection =
          std::make_unique<FuzzConnection>(std::move(connection_executor), peer_);
      co_return std::move(connection);
    }
    if (!closed_) co_await closed_timer_.async_wait(use_nothrow);
    co_return absl::CancelledError("fuzz accept: listener closed");
  }
  Endpoint local_endpoint() const override { return {"pipe", "fuzz-session"}; }
  void Close() override {
    closed_ = true;
    closed_timer_.cancel();
  }

 private:
  Peer& peer_;
  asio::steady_timer closed_timer_;
  bool closed_ = false;
};

class FuzzTransport final : public transport::Transport {
 public:
  explicit FuzzTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<transport::Connection>>> Connect(
      Endpoint) override {
    co_return absl::UnimplementedError("fuzz transport: servers only");
  }
  absl::StatusOr<std::unique_ptr<transport::Listener>> Listen(const Endpoint&) override {
    return std::make_unique<FuzzListener>(executor_, *g_peer);
  }

 private:
  asio::any_io_executor executor_;
};

std::unique_ptr<transport::Transport> NewFuzzTransport(asio::any_io_executor executor,
                                                       const transport::TransportOptions&) {
  return std::make_unique<FuzzTransport>(std::move(executor));
}
Endpoint FuzzEndpoint() { return {"pipe", "fuzz-session"}; }

// ParseEndpoint accepts only the schemes it knows (endpoint.h), so the in-memory transport
// borrows "pipe", which this table alone maps.
constexpr char kEndpoint[] = "pipe://fuzz-session";
constexpr transport::TransportInfo kTransports[] = {
    {"pipe", &NewFuzzTransport, &FuzzEndpoint},
};

class FuzzService {
 public:
  FuzzService() {
    service_.AddRawMethod(
        kEcho,
        [](ServerContext& ctx,
           std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          for (const auto& [key, value] : ctx.metadata()) ctx.AddResponseMetadata(key, value);
          co_return std::string(request);
        });
    service_.AddMethod<wire::Hello, wire::Hello>(
        kHello,
        [](ServerContext&, wire::Hello hello) -> asio::awaitable<absl::StatusOr<wire::Hello>> {
          co_return hello;
        });
    service_.AddRawMethod(
        kSleep,
        [](ServerContext& ctx,
           std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          co_await asio::this_coro::throw_if_cancelled(false);
          const int steps = request.empty() ? 0 : static_cast<uint8_t>(request[0]) % 8;
          asio::steady_timer timer(co_await asio::this_coro::executor,
                                   std::chrono::microseconds(250 * steps));
          auto [ec] = co_await timer.async_wait(use_nothrow);
          if (ec || ctx.cancelled()) co_return absl::CancelledError("sleep cancelled");
          co_return std::string(request);
        });
    service_.AddRawMethod(
        kFail,
        [](ServerContext&,
           std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          const int code = request.empty() ? 2 : static_cast<uint8_t>(request[0]) % 16 + 1;
          // A second byte 'L' asks for a message over the server's cut-off, 'U' for one in
          // 3-byte UTF-8 characters (U+20AC), so that a cut can fall inside a character.
          std::string message = "failed on purpose";
          if (request.size() > 1 && request[1] == 'L') message = std::string(6000, 'x');
          if (request.size() > 1 && request[1] == 'U') {
            message.clear();
            for (int i = 0; i < 2000; ++i) message += "\xe2\x82\xac";
          }
          co_return absl::Status(static_cast<absl::StatusCode>(code), message);
        });
    // Large responses without large inputs: over a client's announced max_frame_payload, the
    // server answers kResourceExhausted instead.
    service_.AddRawMethod(
        kBig,
        [](ServerContext&,
           std::string_view request) -> asio::awaitable<absl::StatusOr<std::string>> {
          size_t size = 0;
          if (request.size() >= 2) {
            size = 2 * (static_cast<uint8_t>(request[0]) | static_cast<uint8_t>(request[1]) << 8);
          }
          co_return std::string(size, 'b');
        });
    service_.AddRawStreamingMethod(
        kStream, [](ServerContext&, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          for (int i = 0; i < 16; ++i) {
            std::optional<std::string> message = co_await ReadPatiently(stream);
            if (!message) break;
            if (!(co_await WritePatiently(stream, *std::move(message))).ok()) break;
          }
          co_return absl::OkStatus();
        });
    service_.AddRawStreamingMethod(
        kFlood, [](ServerContext&, internal::StreamCore& stream) -> asio::awaitable<absl::Status> {
          std::optional<std::string> first = co_await ReadPatiently(stream);
          if (!first || first->size() < 2) co_return absl::InvalidArgumentError("flood: 2 bytes");
          const int count = static_cast<uint8_t>((*first)[0]) % 64;
          const size_t size = 4 * size_t{static_cast<uint8_t>((*first)[1])};
          for (int i = 0; i < count; ++i) {
            if (!(co_await WritePatiently(stream, std::string(size, 'f'))).ok()) break;
          }
          co_return absl::OkStatus();
        });
    // The server catches what a handler throws (courier's own code never throws).
    service_.AddRawMethod(
        kThrow,
        [](ServerContext&, std::string_view) -> asio::awaitable<absl::StatusOr<std::string>> {
          throw std::runtime_error("thrown on purpose");
          co_return std::string();
        });
  }
  ServiceBase& service() { return service_; }

 private:
  static asio::awaitable<std::optional<std::string>> ReadPatiently(internal::StreamCore& stream) {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timer(co_await asio::this_coro::executor, kStreamPatience);
    auto result = co_await (stream.Read() || timer.async_wait(use_nothrow));
    if (result.index() != 0) co_return std::nullopt;
    co_return std::get<0>(std::move(result));
  }
  static asio::awaitable<absl::Status> WritePatiently(internal::StreamCore& stream,
                                                      std::string message) {
    using namespace asio::experimental::awaitable_operators;
    asio::steady_timer timer(co_await asio::this_coro::executor, kStreamPatience);
    auto result = co_await (stream.Write(std::move(message)) || timer.async_wait(use_nothrow));
    if (result.index() != 0) co_return absl::DeadlineExceededError("flood: no credit");
    co_return std::get<0>(std::move(result));
  }

  GenericService service_;
};

// The call ids of the client's requests, of those that opened streams, and of unary ones. An id
// may be in both (reused after its call ended, or after a protocol error the server stopped at).
struct ClientCalls {
  absl::flat_hash_set<uint32_t> all;
  absl::flat_hash_set<uint32_t> streams;
  absl::flat_hash_set<uint32_t> unary;
};

// What the server sent must be a well-formed stream of server frames.
void CheckOutput(const std::string& output, const ClientCalls& calls) {
  const absl::flat_hash_set<uint32_t>& call_ids = calls.all;
  transport::FrameDecoder decoder(
      transport::FrameLimits{.max_payload = std::numeric_limits<uint32_t>::max()});
  decoder.Append(output);
  bool first = true;
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder.Next();
    if (!next.ok()) std::fprintf(stderr, "server output: %s\n", next.status().ToString().c_str());
    FUZZ_CHECK(next.ok());
    if (!next->has_value()) break;  // a close may cut the last frame short
    const Frame& frame = **next;
    if (first) {
      FUZZ_CHECK(frame.type == FrameType::kHello);
      wire::Hello hello;
      FUZZ_CHECK(hello.ParseFromString(frame.payload));
      FUZZ_CHECK(hello.version() >= 1);
      first = false;
      continue;
    }
    switch (frame.type) {
      case FrameType::kResponse: {
        FUZZ_CHECK(frame.call_id != 0);
        FUZZ_CHECK(call_ids.contains(frame.call_id));
        FUZZ_CHECK(frame.flags == transport::kFlagEndOfStream);
        wire::ResponseHeader header;
        absl::StatusOr<size_t> offset = internal::DecodePayloadHeader(frame.payload, header);
        if (!offset.ok()) {
          std::fprintf(stderr, "response: %s\n", offset.status().ToString().c_str());
        }
        FUZZ_CHECK(offset.ok());
        if (header.code() != 0) FUZZ_CHECK(*offset == frame.payload.size());
        // A stream's trailer carries no message: its messages came in kMessage frames. (An id
        // the client also used for a unary call may be answering that one.)
        if (calls.streams.contains(frame.call_id) && !calls.unary.contains(frame.call_id)) {
          FUZZ_CHECK(*offset == frame.payload.size());
        }
        break;
      }
      case FrameType::kMessage:
        FUZZ_CHECK(calls.streams.contains(frame.call_id));
        FUZZ_CHECK(frame.flags == 0);  // a server half-closes with its trailer only
        break;
      case FrameType::kWindow:
        FUZZ_CHECK(calls.streams.contains(frame.call_id));
        FUZZ_CHECK(internal::DecodeWindow(frame.payload).ok());
        break;
      case FrameType::kPing:
      case FrameType::kPong:
        FUZZ_CHECK(frame.call_id == 0);
        FUZZ_CHECK(frame.payload.size() <= 64);
        break;
      case FrameType::kGoAway: {
        FUZZ_CHECK(frame.call_id == 0);
        wire::GoAway goaway;
        FUZZ_CHECK(goaway.ParseFromString(frame.payload));
        break;
      }
      default:
        std::fprintf(stderr, "server sent frame type %d\n", static_cast<int>(frame.type));
        FUZZ_CHECK(false);
    }
  }
}

// The call ids of the request frames in `stream`, as far as it decodes (the server stops there
// too).
ClientCalls RequestCallIds(std::string_view stream) {
  transport::FrameDecoder decoder(
      transport::FrameLimits{.max_payload = std::numeric_limits<uint32_t>::max()});
  decoder.Append(stream);
  ClientCalls ids;
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder.Next();
    if (!next.ok() || !next->has_value()) return ids;
    if ((*next)->type != FrameType::kRequest) continue;
    ids.all.insert((*next)->call_id);
    if (((*next)->flags & transport::kFlagEndOfStream) == 0) {
      ids.streams.insert((*next)->call_id);
    } else {
      ids.unary.insert((*next)->call_id);
    }
  }
}

size_t ChunkSize(uint8_t mode) {
  constexpr size_t kSizes[] = {1, 3, 7, 16, 61, 256, 4096, std::numeric_limits<size_t>::max()};
  return kSizes[mode & 0x07];
}

void Run(const uint8_t* data, size_t size) {
  if (size == 0) return;
  static FuzzService* const service = [] {
    static FuzzService s;
    // Closing a misbehaving connection is logged, and so is a string field that is not UTF-8;
    // thousands of lines a second help nobody (the checks see what matters).
    SetLogSink([](LogSeverity, std::string_view) {});
    google::protobuf::SetLogHandler(nullptr);
    return &s;
  }();

  const uint8_t mode = data[0];
  Peer peer;
  peer.input = std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1);
  peer.chunk = ChunkSize(mode);
  peer.write_mode = static_cast<WriteMode>((mode >> 3) & 0x03);
  peer.hold_open = (mode & 0x20) != 0;
  peer.message_boundaries = (mode & 0x40) != 0;
  const size_t shutdown_at = (mode & 0x80) ? peer.input.size() / 2 : peer.input.size() + 1;
  g_peer = &peer;

  {
    asio::io_context io(1);
    ServerOptions options;
    options.transports = kTransports;
    // A call carrying metadata "x-deny" is refused before its method is looked up.
    options.authorize = [](const AuthorizationContext& context) {
      for (const auto& [key, value] : context.metadata) {
        if (key == "x-deny") return absl::PermissionDeniedError("denied by the fuzz policy");
      }
      return absl::OkStatus();
    };
    auto server = std::make_unique<Server>(io.get_executor(), options);
    FUZZ_CHECK(server->AddService(service->service()).ok());
    FUZZ_CHECK(server->Listen(kEndpoint).ok());

    // The client is done when the connection is closed, or when it holds on and the server has
    // read everything and answered every call.
    auto done = [&] {
      return peer.accepted &&
             (server->connections() == 0 || (peer.read_all && server->active_calls() == 0));
    };
    const auto give_up = Clock::now() + kHangGuard;
    bool shutdown_started = false;
    while (!done()) {
      if (Clock::now() > give_up) {
        std::fprintf(stderr, "session still busy after %lld s: %zu of %zu bytes read\n",
                     static_cast<long long>(kHangGuard.count()), peer.read, peer.input.size());
        FUZZ_CHECK(false);
      }
      if (!shutdown_started && peer.read >= shutdown_at) {
        shutdown_started = true;
        asio::co_spawn(io, server->Shutdown(), asio::detached);
      }
      io.run_one_for(std::chrono::milliseconds(1));
    }
    io.poll();  // writes already under way
    // Destroying the server closes the connection and cancels what runs; then everything must
    // unwind, leaving the io_context without work.
    server.reset();
    io.restart();
    io.run_for(kHangGuard);
    if (!io.stopped()) std::fprintf(stderr, "work left after the server was destroyed\n");
    FUZZ_CHECK(io.stopped());
  }
  g_peer = nullptr;
  CheckOutput(peer.output, RequestCallIds(peer.input));
}

}  // namespace
}  // namespace courier

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  courier::Run(data, size);
  return 0;
}
