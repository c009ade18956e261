// Session: RPC state on one connection, the part clients and servers share — the read loop, the
// batching write loop, the hello handshake, ping/pong keepalive and closing. ClientSession and
// ServerSession derive from it. Internal to rpc/.
#pragma once

#include <memory>
#include <optional>
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

struct SessionOptions {
  size_t max_message_size = kDefaultMaxMessageSize;  // what we accept
  // 0: no pings of our own (we still answer the peer's). Otherwise ping after this much silence
  // and close with kUnavailable if nothing arrives within keepalive_timeout.
  Clock::duration keepalive_interval{0};
  Clock::duration keepalive_timeout = std::chrono::seconds(10);
  // Close with kDeadlineExceeded if the peer's hello has not arrived by then. 0: wait forever.
  Clock::duration handshake_timeout{0};
  std::string peer_name;  // for messages, e.g. the endpoint a client dialled
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(std::unique_ptr<transport::Connection> connection, SessionOptions options);
  virtual ~Session() = default;
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // Sends our hello and starts the loops. Call once, on the session's executor.
  void Start();
  // Queues `frame` for the write loop; frames queued together go out in one gather write.
  // Dropped after Close().
  void Send(transport::Frame frame);
  // Idempotent. Closes the connection at once (queued frames are dropped); OnClose(why) runs
  // exactly once, before Close returns.
  void Close(absl::Status why);
  // Sends what is queued, then closes with `why`.
  void CloseAfterFlush(absl::Status why);

  bool closed() const { return closed_; }
  // True once the peer's hello has arrived.
  bool handshaken() const { return peer_hello_.has_value(); }
  // Largest payload the peer accepts (its hello), or our own limit before the hello arrives.
  size_t peer_max_frame_payload() const;
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

 private:
  asio::awaitable<void> ReadLoop();
  asio::awaitable<void> WriteLoop();
  asio::awaitable<void> KeepaliveLoop();
  absl::Status HandleHello(const transport::Frame& frame);

  asio::any_io_executor executor_;
  SessionOptions options_;
  transport::PeerInfo peer_;
  transport::FramedConnection framed_;
  std::vector<transport::Frame> outbox_;
  std::vector<transport::Frame> writing_;
  asio::steady_timer outbox_ready_;
  asio::steady_timer keepalive_timer_;
  asio::steady_timer handshake_timer_;
  Clock::time_point last_read_;
  std::optional<wire::Hello> peer_hello_;
  bool writer_idle_ = false;
  bool close_after_flush_ = false;
  bool closed_ = false;
  absl::Status flush_status_;
};

}  // namespace courier::internal
