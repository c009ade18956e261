// Streaming calls (PROTOCOL.md §13): one side's state of a stream, shared by the client and the
// server. StreamCore keeps the messages received and not yet read (bounded by the window this
// side grants), the frames waiting for flow-control credit, and the coroutine waiting on either.
// ClientStream adds what a channel's call needs. Internal to rpc/; rpc/stream.h wraps them in
// typed readers and writers.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "asio/any_io_executor.hpp"
#include "asio/async_result.hpp"
#include "asio/awaitable.hpp"
#include "asio/cancellation_signal.hpp"
#include "asio/use_awaitable.hpp"
#include "rpc/call.h"
#include "transport/frame.h"

namespace courier {
class Channel;
}  // namespace courier

namespace courier::internal {

class MethodMetrics;
class Session;
struct PendingCall;

// The window each side grants a streaming call by default: the peer may send this many message
// bytes ahead of what the application has read (plus at most one message).
inline constexpr uint32_t kDefaultStreamWindow = 256 * 1024;
// The most credit a stream may hold (HTTP/2's bound); more is a protocol error.
inline constexpr int64_t kMaxStreamCredit = (int64_t{1} << 31) - 1;

class StreamCore {
 public:
  using Waiter = asio::async_result<asio::use_awaitable_t<>, void()>::handler_type;
  // Where one coroutine waits; `cancelled` says it was woken by its own cancellation.
  struct WaitSlot {
    std::optional<Waiter> waiter;
    bool cancelled = false;
    explicit operator bool() const { return waiter.has_value(); }
  };

  // `receive_window`: what we grant the peer; `max_receive`: the largest message we take.
  StreamCore(asio::any_io_executor executor, uint32_t call_id, uint32_t receive_window,
             size_t max_receive);
  virtual ~StreamCore() = default;
  StreamCore(const StreamCore&) = delete;
  StreamCore& operator=(const StreamCore&) = delete;

  // --- The owner (channel or server session) ---

  // Frames go to `session` from now on (until Detach); `send_window` is the credit the peer
  // granted in its hello, `max_send` the largest message it takes. Sends what is queued.
  void Attach(Session* session, uint32_t send_window, size_t max_send);
  void Detach() { session_ = nullptr; }
  // Message bytes received and written are recorded there from now on (null: not recorded);
  // it must outlive the stream.
  void set_metrics(MethodMetrics* metrics) { metrics_ = metrics; }
  MethodMetrics* metrics() const { return metrics_; }
  // A kMessage frame from the peer. A non-OK result with `fatal` set is a protocol error (close
  // the connection); without it, the call fails with that status.
  absl::Status Receive(transport::Frame& frame, bool& fatal);
  // A kWindow frame from the peer; any error is a protocol error.
  absl::Status Credit(const transport::Frame& frame);
  // The call is over with `status`: waiting reads and writes wake; writes fail from now on and
  // queued messages are dropped. Reads still return what arrived unless `discard`. Idempotent
  // (the first status stays).
  void End(absl::Status status, bool discard);
  // Queues a frame that is not flow-controlled (the server's trailer) behind the messages.
  void QueueFrame(transport::Frame frame);
  // Hands to the session what flow control and its queue bound allow.
  void Pump();
  bool ended() const { return ended_; }
  const absl::Status& end_status() const { return end_status_; }
  bool peer_half_closed() const { return peer_half_closed_; }
  bool queue_empty() const { return outq_.empty(); }
  uint32_t call_id() const { return call_id_; }
  // Discards what arrives and what is unread, granting the credit back (a caller that finishes
  // without reading everything cannot stall the peer).
  void DiscardIncoming();

  // --- The application (through rpc/stream.h) ---

  // The next message's bytes; std::nullopt at the peer's end of stream or the call's end (or
  // when the awaiting coroutine is cancelled).
  asio::awaitable<std::optional<std::string>> Read();
  // Queues one message and waits until flow control let it go to the connection. One Write at a
  // time. kFailedPrecondition after WritesDone; the call's status once it ended;
  // kResourceExhausted for a message over the peer's limit; kCancelled when the awaiting
  // coroutine is cancelled (the message is still sent when credit comes).
  asio::awaitable<absl::Status> Write(std::string message);
  // Queues a message without waiting for credit (a server-streaming call's one request).
  absl::Status Enqueue(std::string message);
  // Half-closes: the peer's reads end after the messages written so far.
  absl::Status WritesDone();
  // Waits until End.
  asio::awaitable<void> WaitForEnd();
  // The owner's reaction when a waiting Read, Write or WaitForEnd is cancelled through the
  // awaiting coroutine's cancellation slot (the client gives the call up).
  virtual void OnAbandoned() {}
  // A queued message turned out to be over the peer's limit when it could be sent.
  virtual void OnSendFailed(absl::Status status) { End(std::move(status), true); }

 protected:
  asio::any_io_executor executor_;

 private:
  // Suspends until Wake(slot); slot.cancelled is then set if the awaiting coroutine was
  // cancelled instead (the caller resets it).
  asio::awaitable<void> Wait(WaitSlot& slot);
  void Wake(WaitSlot& slot, bool inline_resume = true);
  void GrantConsumed(size_t bytes);
  std::optional<std::string> TakeMessage();

  uint32_t call_id_;
  uint32_t receive_window_;
  size_t max_receive_;
  Session* session_ = nullptr;
  MethodMetrics* metrics_ = nullptr;
  // Receiving.
  std::deque<std::string> inbox_;
  int64_t receive_credit_;  // what the peer may still send
  size_t consumed_ = 0;     // read since our last kWindow
  bool peer_half_closed_ = false;
  bool discarding_ = false;
  // Sending.
  std::deque<transport::Frame> outq_;
  int64_t send_credit_ = 0;
  size_t max_send_ = 0;  // 0: not known yet (not attached)
  uint64_t queued_ = 0;  // frames ever queued in outq_, and handed on from it
  uint64_t sent_ = 0;
  bool writes_done_ = false;
  // Writes in a row that went at once, with no wait for a read between them; from
  // kBurstToBatch on, frames are written in batches (Session::SendSoon).
  static constexpr int kBurstToBatch = 2;
  int burst_ = 0;
  bool writing_ = false;
  // The end.
  bool ended_ = false;
  absl::Status end_status_;
  WaitSlot read_waiter_, write_waiter_, end_waiter_;
};

// A streaming call's client side: created by Channel::OpenStream, owned by the typed handle
// (the channel keeps a plain pointer to it until the call is released). Use on the channel's
// executor.
class ClientStream final : public StreamCore, public std::enable_shared_from_this<ClientStream> {
 public:
  ClientStream(std::shared_ptr<Channel> channel, uint32_t call_id, uint32_t receive_window,
               size_t max_receive);
  // A call that failed before it started.
  static std::shared_ptr<ClientStream> Failed(asio::any_io_executor executor, absl::Status status);
  ~ClientStream() override;

  // Half-closes if the application did not, discards unread messages, waits for the call's
  // end and returns its status: the server's, or why the call failed.
  asio::awaitable<absl::Status> Finish();
  // Ends the call with kCancelled (the server is told). Idempotent.
  void Cancel();
  // Ends the call with `status` (say, a message that did not parse) and tells the server.
  void Abort(absl::Status status);
  // The metadata of the server's trailer (after Finish).
  const Metadata& trailing_metadata() const { return trailing_metadata_; }
  asio::any_io_executor executor() const { return executor_; }
  // Made by Failed(): it never reached a channel. Fixed at construction, so any thread may ask.
  bool failed() const { return channel_ == nullptr; }

  void OnAbandoned() override { Cancel(); }
  void OnSendFailed(absl::Status status) override { Abort(std::move(status)); }

 private:
  friend class courier::Channel;
  struct FailedTag {};
  ClientStream(FailedTag, asio::any_io_executor executor, absl::Status status);

  // Held until the stream is destroyed (its destructor releases the call in the channel).
  std::shared_ptr<Channel> channel_;  // null for Failed()
  std::unique_ptr<PendingCall> call_;
  std::string method_;
  Metadata trailing_metadata_;
  Metadata* response_metadata_ = nullptr;  // CallOptions::response_metadata
  Clock::time_point started_;              // with metrics (StreamCore::metrics())
  bool registered_ = false;                // in the channel's tables
};

}  // namespace courier::internal
