// Session: RPC state on one connection, the part clients and servers share — the read side, the
// batching write side, the hello handshake, ping/pong keepalive, the bounds a peer cannot push
// past (queued bytes, time limits, ping rate) and closing. ClientSession and ServerSession
// derive from it. Internal to rpc/.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "asio/awaitable.hpp"
#include "asio/steady_timer.hpp"
#include "rpc/call.h"
#include "rpc/wire.pb.h"
#include "transport/frame.h"
#include "transport/framed_connection.h"
#include "transport/transport.h"

namespace courier::internal {

// A token bucket: `burst` events at once, then `per_second` on average. For rates a
// well-behaved peer stays far below (pings, cancels); running dry means abuse.
class RateBudget {
 public:
  RateBudget(double burst, double per_second)
      : burst_(burst), per_second_(per_second), tokens_(burst), last_(Clock::now()) {}
  // False when the budget is spent.
  bool Take(Clock::time_point now) {
    tokens_ = std::min(burst_,
                       tokens_ + per_second_ * std::chrono::duration<double>(now - last_).count());
    last_ = now;
    if (tokens_ < 1) return false;
    tokens_ -= 1;
    return true;
  }

 private:
  double burst_, per_second_, tokens_;
  Clock::time_point last_;
};

// A peer may send this many pings at once, and this many per second after that; beyond it the
// session sends GOAWAY and closes (courier's own keepalive pings once per interval).
inline constexpr double kPingBurst = 100;
inline constexpr double kPingsPerSecond = 10;
// Frames handled in a row before the read loop lets other connections on its reactor run.
inline constexpr int kFramesPerTurn = 64;
// While a read's frames are handled, what they produced is written every this many frames, not
// only at the end: the peer starts on the first answers while we work on the rest (measured: 32
// calls in flight over shm:// went from about 0.25-0.55M to 0.65-0.84M calls/s, over unix:// from
// about 0.2M to 0.5M; a write per 8 frames instead of one per read).
inline constexpr int kFramesPerFlush = 8;
// How long a close after flushing waits for the queued frames to be written before closing
// hard anyway (a peer that does not read cannot hold a closing connection open).
inline constexpr Clock::duration kFlushTimeout = std::chrono::seconds(1);
// One write takes at most this many frames and (past its first frame) this many bytes from the
// queue; the rest stays queued, where a call that gives up can still take its request back.
inline constexpr size_t kMaxBatchFrames = 512;
inline constexpr size_t kMaxBatchBytes = 1024 * 1024;

struct SessionOptions {
  size_t max_message_size = kDefaultMaxMessageSize;  // what we accept
  // 0: no pings of our own (we still answer the peer's). Otherwise ping after this much silence
  // and close with kUnavailable if nothing arrives within keepalive_timeout.
  Clock::duration keepalive_interval{0};
  Clock::duration keepalive_timeout = std::chrono::seconds(10);
  // Close with kDeadlineExceeded if the peer's hello has not arrived by then. 0: wait forever.
  Clock::duration handshake_timeout{0};
  // Close with kDeadlineExceeded when the peer stops in the middle of a frame for this long
  // (while we are reading). 0: never.
  Clock::duration stall_timeout{0};
  // Close when nothing at all has arrived for this long and Idle() says so. 0: never.
  Clock::duration idle_timeout{0};
  // Above this many bytes queued for writing, the session stops reading from the peer until the
  // queue is back under it, so a peer that does not read is pushed back on by its own kernel.
  size_t max_queued_bytes = 4 * 1024 * 1024;
  // False for clients: what a server sends them (responses) makes them queue nothing, and their
  // own requests wait in the channel instead; pausing there too would deadlock with a server
  // that paused for the same reason (each waiting for the other to read).
  bool pause_reading_when_over_bound = true;
  // Sent in our hello: the calls we serve at once on this connection (0: not limited).
  uint32_t max_concurrent_calls = 0;
  // Sent in our hello: the window we grant each streaming call (0: we take no streaming calls).
  uint32_t stream_window = 0;
  std::string peer_name;  // for messages, e.g. the endpoint a client dialled
  // Servers: refuse the peer in our hello (PROTOCOL.md §6.1a) with this status, then read and
  // drop what it sends until it closes, at most kRefusalLinger, and close with this status.
  absl::Status refusal;
  // Clients: the peer's hello may refuse us (then the session closes with the refusal's code);
  // a server that receives a refusal closes on a protocol error.
  bool accept_refusal = false;
};

// How long a refusing server waits for the refused client to close first (PROTOCOL.md §6.1a).
inline constexpr Clock::duration kRefusalLinger = std::chrono::seconds(1);

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::unique_ptr<transport::Connection> connection, SessionOptions options);
  virtual ~Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Sends our hello and starts the loops. Call once, on the session's executor.
  void Start();
  // Queues `frame` and writes it at once (inline, when the transport has room), unless frames
  // are being handled (then it goes with the batch's others when it ends) or a write is in
  // flight (then with the next). Returns the frame's sequence number, for Unsend. Dropped after
  // Close().
  uint64_t Send(transport::Frame frame);
  // Send for a burst: the frame is queued and written from the reactor's queue (once for all
  // frames queued until then), so a writer producing many small frames in a row pays one write
  // for them, not one each. Frames already being batched go with the batch.
  uint64_t SendSoon(transport::Frame frame);
  // Takes back a frame queued by Send that no write has taken yet, and
  // returns true; false if it is already (being) written or the session is closed.
  bool Unsend(uint64_t sequence);
  // Idempotent. Closes the connection at once (queued frames are dropped); OnClose(why) runs
  // exactly once, before Close returns.
  void Close(absl::Status why);
  // Sends what is queued, then closes with `why`; after kFlushTimeout it closes regardless.
  // Nothing more is queued after this.
  void CloseAfterFlush(absl::Status why);
  // Sends GOAWAY with `reason` and closes after flushing: for peers that broke a rule.
  void GoAwayAndClose(uint32_t last_call_id, absl::Status why);

  bool closed() const { return closed_; }
  // True when we refused the peer (SessionOptions::refusal) or the peer's hello refused us.
  bool refused() const { return refusing_ || peer_refused_; }
  // True once the peer's hello has arrived.
  bool handshaken() const { return peer_hello_.has_value(); }
  // Largest payload the peer accepts (its hello), or our own limit before the hello arrives;
  // never more than the transport carries (Traits::max_message).
  size_t peer_max_frame_payload() const;
  // Calls the peer serves at once (its hello); 0 when it set no limit.
  uint32_t peer_max_concurrent_calls() const {
    return peer_hello_ ? peer_hello_->max_concurrent_calls() : 0;
  }
  // The window the peer grants each streaming call (its hello); 0: it speaks no streams.
  uint32_t peer_stream_window() const { return peer_hello_ ? peer_hello_->stream_window() : 0; }
  // Bytes queued for writing or being written.
  size_t queued_bytes() const { return queued_bytes_; }
  // True while queued_bytes() is over the bound (reading is paused).
  bool over_queue_bound() const { return queued_bytes_ > options_.max_queued_bytes; }
  const transport::PeerInfo& peer() const { return peer_; }
  const SessionOptions& options() const { return options_; }
  asio::any_io_executor executor() const { return executor_; }

 protected:
  // A frame other than hello, ping and pong, in arrival order. Not called after Close().
  virtual void OnFrame(transport::Frame frame) = 0;
  // The peer's hello arrived (first frame).
  virtual void OnHandshake() {}
  // Exactly once, from Close(); `why` is kUnavailable when the peer went away.
  virtual void OnClose(const absl::Status& why) = 0;
  // After the frames were handed to the transport (written).
  virtual void OnWritten(std::span<const transport::Frame> frames) {}
  // The write queue went from over its bound to under it.
  virtual void OnQueueDrained() {}
  // For idle_timeout: true when nothing is in progress on the connection.
  virtual bool Idle() const { return true; }
  // The peer sent far more of something (pings) than any real peer does. Default: Close(why).
  virtual void OnPeerAbuse(absl::Status why) { Close(std::move(why)); }

 private:
  // The read side, as completion handlers (no coroutine frame per read): StartRead issues one
  // read; OnRead takes its bytes; ProcessFrames handles every complete frame buffered, with
  // writes corked so that what the frames produce goes out in one write per kFramesPerFlush
  // frames and one at the end.
  void StartRead();
  void OnRead(absl::StatusOr<size_t> n);
  void ProcessFrames();
  void ResumeReading();
  // ProcessFrames from the reactor's queue (at most one pending).
  void PostProcessFrames();
  // The write side: writes what is queued, inline while the transport takes it, then one
  // asynchronous write for the rest; OnWriteDone continues.
  void Flush();
  void OnWriteDone(absl::Status status);
  void FinishBatch();
  asio::awaitable<void> KeepaliveLoop();
  absl::Status HandleHello(const transport::Frame& frame);
  // The connection-level frames (ping, pong, hello): handled here. Returns a protocol error.
  absl::Status HandleControl(transport::Frame& frame, bool& handled);
  // One frame from the peer; false when the session closed (or stops reading).
  bool HandleFrame(transport::Frame& frame);
  void ArmWatchdog();
  void OnWatchdog();

  asio::any_io_executor executor_;
  SessionOptions options_;
  transport::PeerInfo peer_;
  // Read from the connection before framed_ takes it (members initialise in this order).
  transport::Traits traits_;
  transport::FramedConnection framed_;
  std::deque<transport::Frame> outbox_;
  std::vector<transport::Frame> writing_;            // the batch being written
  std::vector<asio::const_buffer> pending_buffers_;  // what the asynchronous write still owes
  uint64_t outbox_first_sequence_ = 0;               // Send's number for outbox_[0]
  size_t queued_bytes_ = 0;
  size_t batch_bytes_ = 0;  // wire bytes of writing_
  asio::steady_timer keepalive_timer_;
  asio::steady_timer watchdog_;     // hello, mid-frame stall and idle time limits
  asio::steady_timer flush_timer_;  // bounds CloseAfterFlush
  Clock::time_point started_;
  Clock::time_point read_resumed_;  // stall time is counted from here after a pause
  Clock::time_point last_read_;
  std::optional<wire::Hello> peer_hello_;
  RateBudget ping_budget_{kPingBurst, kPingsPerSecond};
  bool read_pending_ = false;   // an AsyncRead is in flight
  bool write_pending_ = false;  // an AsyncWrite is in flight
  bool corked_ = false;         // frames are being handled: Send queues, the batch end flushes
  bool flushing_ = false;       // inside Flush (a Send from a hook must not re-enter it)
  bool reading_paused_ = false;
  bool resume_posted_ = false;
  bool flush_posted_ = false;  // SendSoon's flush is in the reactor's queue
  bool close_after_flush_ = false;
  bool closed_ = false;
  bool refusing_ = false;      // we refused the peer: its frames are dropped
  bool peer_refused_ = false;  // the peer's hello refused us
  absl::Status flush_status_;
};

}  // namespace courier::internal
