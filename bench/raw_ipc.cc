// The raw floors of pipe, fifo, udp and mq: raw_system.cc's echo (a 4-byte little-endian length
// and that many bytes) over each bare mechanism, served by the bench's server process.
//
// pipe and fifo carry it as a byte stream, with raw_system.cc's stream echo and client
// (raw_system.h) on a pair of descriptors: requests one way, replies the other. The client
// connects to an abstract UNIX socket only to be handed its pair: for "pipe" the server makes two
// pipes per client and passes their client ends over the socket (SCM_RIGHTS); for "fifo" it
// mkfifo()s two FIFOs in its temporary directory and sends their path, both sides open them by
// name (requests first, so neither blocks the other), and the server unlinks them once open.
// Either way the socket is closed after the hand-over; the end of a pipe is the hang-up.
//
// udp and mq carry it as datagrams: a message is cut into chunks of at most the mechanism's
// maximum (65507 bytes for UDP, so a 1 MiB message is 17 datagrams; /proc/sys/fs/mqueue/
// msgsize_max, often 8192, for mq) and the server sends back every chunk as it comes. The
// client never blocks: one loop sends what it may and receives what is there, and waits (poll())
// for either when neither progressed, for one call in flight as for N (with a blocking send of a
// 1 MiB message into a 10-message queue both sides would wait for the other). "udp": a server
// socket on 127.0.0.1:0 echoes to each sender; each client is a socket connected to it. There is
// no retransmission: the raw floor does not recover loss. Instead the client keeps at most a
// quarter of its receive buffer's bytes unanswered, so the loopback (which loses nothing but
// what overflows a receive buffer) drops nothing, and a reply missing for 2 s fails the case.
// "mq": per client the server mq_open()s two queues (msgsize_max bytes, msg_max messages) and
// sends their name; the client opens them non-blocking (its own open descriptions: a passed
// descriptor would share the server's, O_NONBLOCK included) and unlinks them. The hand-over
// socket stays open, so that the server's echo thread sees the client go.
#include "bench/raw_ipc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <mqueue.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/raw_system.h"
#include "bench/server_process.h"
#include "transport/internal/fd.h"

namespace courier::bench {
namespace {

using transport::internal::UniqueFd;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kTransports[] = {"pipe", "fifo", "udp", "mq"};
constexpr char kUnixPrefix[] = "unix:@";
constexpr char kUdpPrefix[] = "udp://127.0.0.1:";
constexpr int kIoTimeoutMs = 30000;
constexpr int kUdpLossTimeoutMs = 2000;
constexpr size_t kMaxUdpPayload = 65507;  // IPv4: 65535 - 20 (IP) - 8 (UDP)
constexpr int kUdpBufferBytes = 4 << 20;  // asked for; the kernel caps it at net.core.*mem_max

absl::Status Errno(std::string_view transport, std::string_view what) {
  return absl::ErrnoToStatus(errno,
                             absl::StrCat("raw ", std::string(transport), " ", std::string(what)));
}

// /proc/sys/fs/mqueue/NAME, or `fallback` if it cannot be read.
long MqueueLimit(const char* name, long fallback) {
  std::FILE* f = std::fopen(absl::StrCat("/proc/sys/fs/mqueue/", name).c_str(), "r");
  if (f == nullptr) return fallback;
  long value = fallback;
  if (std::fscanf(f, "%ld", &value) != 1 || value <= 0) value = fallback;
  std::fclose(f);
  return value;
}

// --- The hand-over socket (pipe, fifo, mq) ---

// Listens on an abstract UNIX socket, reports it, and calls `hand_over` with each client's
// socket (on this thread; it starts the echo on a thread of its own).
absl::Status ServeHandOvers(std::string_view transport,
                            const std::function<void(const std::string&)>& ready,
                            const std::function<absl::Status(int socket)>& hand_over) {
  const std::string name =
      absl::StrCat("courier-bench-raw-", std::string(transport), "-", getpid());
  auto [addr, len] = AbstractAddress(name);
  UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) return Errno(transport, "socket");
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return Errno(transport, "bind");
  }
  if (listen(listener.get(), 16) != 0) return Errno(transport, "listen");
  ready(absl::StrCat(kUnixPrefix, name));
  while (true) {
    UniqueFd client(accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!client) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return Errno(transport, "accept");
    }
    // A failure is this client's (it sees the socket close); the next may fare better.
    if (absl::Status s = hand_over(client.get()); !s.ok()) {
      std::fprintf(stderr, "raw %s: %s\n", std::string(transport).c_str(), s.ToString().c_str());
    }
  }
}

// What the server hands a client: one message of at most 256 bytes with up to `max_fds`.
struct HandOver {
  std::string bytes;
  std::vector<UniqueFd> fds;
  UniqueFd socket;  // mq keeps it open: its closing tells the server the client has gone
};

absl::Status SendHandOver(int socket, std::string_view bytes, std::span<const int> fds) {
  absl::StatusOr<size_t> sent = transport::internal::SendWithFds(
      socket, std::as_bytes(std::span(bytes.data(), bytes.size())), fds);
  if (!sent.ok()) return sent.status();
  if (*sent != bytes.size()) return absl::UnavailableError("hand-over: socket full");
  return absl::OkStatus();
}

absl::StatusOr<HandOver> ReceiveHandOver(std::string_view transport, const std::string& endpoint,
                                         size_t max_fds) {
  if (!endpoint.starts_with(kUnixPrefix)) {
    return absl::InvalidArgumentError(
        absl::StrCat("raw ", std::string(transport), ": bad endpoint ", endpoint));
  }
  auto [addr, len] = AbstractAddress(endpoint.substr(sizeof(kUnixPrefix) - 1));
  UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket) return Errno(transport, "socket");
  if (connect(socket.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
    return Errno(transport, "connect");
  }
  pollfd p{socket.get(), POLLIN, 0};
  int ready = poll(&p, 1, kIoTimeoutMs);
  if (ready < 0) return Errno(transport, "poll");
  if (ready == 0) {
    return absl::DeadlineExceededError(
        absl::StrCat("raw ", std::string(transport), ": nothing handed over in 30 s"));
  }
  std::array<std::byte, 256> buffer;
  absl::StatusOr<transport::internal::Received> got =
      transport::internal::ReceiveWithFds(socket.get(), buffer, max_fds);
  if (!got.ok()) return got.status();
  if (got->bytes == 0 || got->fds_truncated || got->fds.size() != max_fds) {
    return absl::UnavailableError(
        absl::StrCat("raw ", std::string(transport), ": the server handed nothing over"));
  }
  HandOver out;
  out.bytes.assign(reinterpret_cast<const char*>(buffer.data()), got->bytes);
  out.fds = std::move(got->fds);
  out.socket = std::move(socket);
  return out;
}

// --- pipe ---

absl::Status HandOverPipes(int socket) {
  int request[2], reply[2];
  if (pipe2(request, O_CLOEXEC) != 0) return Errno("pipe", "pipe2");
  UniqueFd request_read(request[0]), request_write(request[1]);
  if (pipe2(reply, O_CLOEXEC) != 0) return Errno("pipe", "pipe2");
  UniqueFd reply_read(reply[0]), reply_write(reply[1]);
  const int theirs[2] = {request_write.get(), reply_read.get()};
  if (absl::Status s = SendHandOver(socket, "p", theirs); !s.ok()) return s;
  // Ours only from here: the client's end of stream is the request pipe's.
  std::thread(EchoStream, request_read.release(), reply_write.release()).detach();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EchoClient>> ConnectPipes(const std::string& endpoint) {
  absl::StatusOr<HandOver> got = ReceiveHandOver("pipe", endpoint, 2);
  if (!got.ok()) return got.status();
  const int out = got->fds[0].release();
  return NewStreamClient(/*in=*/got->fds[1].release(), out);
}

// --- fifo ---

std::string* fifo_directory = nullptr;  // the server's; removed on quit

absl::Status HandOverFifos(int socket) {
  static std::atomic<int> next{0};
  const std::string base = absl::StrCat(*fifo_directory, "/", next++);
  const std::string request = base + ".req", reply = base + ".rep";
  if (mkfifo(request.c_str(), 0600) != 0) return Errno("fifo", "mkfifo");
  if (mkfifo(reply.c_str(), 0600) != 0) {
    unlink(request.c_str());
    return Errno("fifo", "mkfifo");
  }
  if (absl::Status s = SendHandOver(socket, base, {}); !s.ok()) {
    unlink(request.c_str());
    unlink(reply.c_str());
    return s;
  }
  std::thread([request, reply] {
    // Blocks until the client opens the other end; the client opens in the same order.
    UniqueFd in(open(request.c_str(), O_RDONLY | O_CLOEXEC));
    UniqueFd out(in ? open(reply.c_str(), O_WRONLY | O_CLOEXEC) : -1);
    unlink(request.c_str());
    unlink(reply.c_str());
    if (in && out) EchoStream(in.release(), out.release());
  }).detach();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EchoClient>> ConnectFifos(const std::string& endpoint) {
  absl::StatusOr<HandOver> got = ReceiveHandOver("fifo", endpoint, 0);
  if (!got.ok()) return got.status();
  UniqueFd out(open((got->bytes + ".req").c_str(), O_WRONLY | O_CLOEXEC));
  if (!out) return Errno("fifo", "open " + got->bytes + ".req");
  UniqueFd in(open((got->bytes + ".rep").c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return Errno("fifo", "open " + got->bytes + ".rep");
  const int out_fd = out.release();
  return NewStreamClient(in.release(), out_fd);
}

absl::Status ServeFifos(const std::function<void(const std::string&)>& ready) {
  char directory[] = "/tmp/courier-bench-fifo-XXXXXX";
  if (mkdtemp(directory) == nullptr) return Errno("fifo", "mkdtemp");
  fifo_directory = new std::string(directory);
  SetServerCleanup([] { rmdir(fifo_directory->c_str()); });
  return ServeHandOvers("fifo", ready, HandOverFifos);
}

// --- datagrams (udp, mq) ---

// The client's two ends of a datagram mechanism, both non-blocking and pollable: one socket for
// UDP, a request and a reply queue for mq.
struct DatagramEnds {
  std::string_view transport;
  UniqueFd in, out;    // `out` unset: `in` both ways (UDP)
  UniqueFd hand_over;  // mq: held open while the client lives
  bool mq = false;
  size_t max_chunk = 0;
  size_t window = 0;  // most bytes sent and not yet echoed; 0: no limit but the mechanism's
  int wait_ms = kIoTimeoutMs;

  int out_fd() const { return out ? out.get() : in.get(); }

  // False if it would block.
  absl::StatusOr<bool> TrySend(const char* data, size_t size) {
    int rc = mq ? mq_send(out_fd(), data, size, 0)
                : static_cast<int>(send(out_fd(), data, size, MSG_DONTWAIT | MSG_NOSIGNAL));
    if (rc >= 0) return true;
    if (errno == EAGAIN || errno == EINTR) return false;
    return Errno(transport, "send");
  }
  // 0 if nothing is there.
  absl::StatusOr<size_t> TryReceive(char* into, size_t size) {
    ssize_t n =
        mq ? mq_receive(in.get(), into, size, nullptr) : recv(in.get(), into, size, MSG_DONTWAIT);
    if (n >= 0) return static_cast<size_t>(n);
    if (errno == EAGAIN || errno == EINTR) return size_t{0};
    return Errno(transport, "receive");
  }
  absl::Status Wait(bool for_send) {
    const short send_events = for_send ? POLLOUT : 0;
    pollfd p[2] = {{in.get(), static_cast<short>(POLLIN | (out ? 0 : send_events)), 0},
                   {out.get(), send_events, 0}};
    int ready = poll(p, out ? 2 : 1, wait_ms);
    if (ready < 0 && errno != EINTR) return Errno(transport, "poll");
    if (ready == 0) {
      return absl::DeadlineExceededError(
          mq ? std::string("raw mq: no progress for 30 s")
             : absl::StrCat("raw udp: no reply for ", wait_ms / 1000,
                            " s: a datagram was lost (the raw floor does not retransmit)"));
    }
    return absl::OkStatus();
  }
};

class DatagramClient final : public EchoClient {
 public:
  explicit DatagramClient(DatagramEnds ends)
      : ends_(std::move(ends)), buffer_(std::max<size_t>(ends_.max_chunk, kMaxUdpPayload)) {}

  absl::Status PingPong(size_t payload, int count, std::vector<int64_t>& round_trips) override {
    Prepare(payload);
    CallCounters unused;
    for (int i = 0; i < count; ++i) {
      auto start = Clock::now();
      if (absl::Status s = Exchange(1, /*refill=*/false, unused); !s.ok()) return s;
      round_trips.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    }
    return absl::OkStatus();
  }

  absl::Status Saturate(size_t payload, int in_flight, CallCounters& counters) override {
    Prepare(payload);
    return Exchange(std::max(in_flight, 1), /*refill=*/true, counters);
  }

 private:
  void Prepare(size_t payload) {
    if (message_.size() == kLengthSize + payload) return;
    message_ = std::string(kLengthSize, '\0') + MakePayload(payload);
    PutLength(message_.data(), static_cast<uint32_t>(payload));
  }

  // Sends `in_flight` requests chunk by chunk and reads the echoed chunks; with `refill`, sends
  // one more request for each reply until counters.stop (counting replies), else stops once the
  // first `in_flight` are back. Every request is the same bytes, so the send queue is a count
  // and an offset.
  absl::Status Exchange(int in_flight, bool refill, CallCounters& counters) {
    const size_t message_size = message_.size();
    size_t unsent = static_cast<size_t>(in_flight);  // requests not yet fully sent
    size_t sent_offset = 0;                          // bytes of the first unsent one sent
    size_t outstanding = unsent;                     // requests whose reply is not complete
    size_t reply_offset = 0;                         // bytes of the current reply received
    size_t unanswered = 0;                           // bytes sent and not yet echoed
    while (outstanding > 0) {
      bool progressed = false;
      bool window_full = false;
      while (unsent > 0) {
        const size_t chunk = std::min(ends_.max_chunk, message_size - sent_offset);
        if (ends_.window > 0 && unanswered > 0 && unanswered + chunk > ends_.window) {
          window_full = true;
          break;
        }
        absl::StatusOr<bool> sent = ends_.TrySend(message_.data() + sent_offset, chunk);
        if (!sent.ok()) return sent.status();
        if (!*sent) break;
        progressed = true;
        unanswered += chunk;
        sent_offset += chunk;
        if (sent_offset == message_size) {
          sent_offset = 0;
          --unsent;
        }
      }
      while (true) {
        absl::StatusOr<size_t> got = ends_.TryReceive(buffer_.data(), buffer_.size());
        if (!got.ok()) return got.status();
        if (*got == 0) break;
        progressed = true;
        unanswered -= std::min(unanswered, *got);
        if (reply_offset == 0 &&
            (*got < kLengthSize || GetLength(buffer_.data()) + kLengthSize != message_size)) {
          return absl::DataLossError(
              absl::StrCat("raw ", std::string(ends_.transport), ": reply of the wrong size"));
        }
        reply_offset += *got;
        if (reply_offset > message_size) {
          return absl::DataLossError(
              absl::StrCat("raw ", std::string(ends_.transport), ": reply of the wrong size"));
        }
        if (reply_offset == message_size) {
          reply_offset = 0;
          --outstanding;
          if (refill) {
            counters.completed.fetch_add(1, std::memory_order_relaxed);
            if (!counters.stop.load(std::memory_order_relaxed)) {
              ++unsent;
              ++outstanding;
            }
          }
        }
      }
      if (!progressed && outstanding > 0) {
        if (absl::Status s = ends_.Wait(/*for_send=*/unsent > 0 && !window_full); !s.ok()) {
          return s;
        }
      }
    }
    return absl::OkStatus();
  }

  DatagramEnds ends_;
  std::string message_;
  std::vector<char> buffer_;
};

void SetBuffers(int fd) {
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &kUdpBufferBytes, sizeof(kUdpBufferBytes));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &kUdpBufferBytes, sizeof(kUdpBufferBytes));
}

absl::Status ServeUdp(const std::function<void(const std::string&)>& ready) {
  UniqueFd fd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return Errno("udp", "socket");
  SetBuffers(fd.get());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno("udp", "bind");
  }
  socklen_t len = sizeof(addr);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len);
  ready(absl::StrCat(kUdpPrefix, ntohs(addr.sin_port)));
  std::vector<char> buffer(65536);
  while (true) {
    sockaddr_in from{};
    socklen_t from_len = sizeof(from);
    ssize_t n = recvfrom(fd.get(), buffer.data(), buffer.size(), 0,
                         reinterpret_cast<sockaddr*>(&from), &from_len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("udp", "recvfrom");
    }
    // A full receive buffer at the client loses the datagram; its window keeps that from
    // happening.
    sendto(fd.get(), buffer.data(), static_cast<size_t>(n), MSG_NOSIGNAL,
           reinterpret_cast<sockaddr*>(&from), from_len);
  }
}

absl::StatusOr<std::unique_ptr<EchoClient>> ConnectUdp(const std::string& endpoint) {
  uint32_t port = 0;
  if (!endpoint.starts_with(kUdpPrefix) ||
      !absl::SimpleAtoi(endpoint.substr(sizeof(kUdpPrefix) - 1), &port) || port > 65535) {
    return absl::InvalidArgumentError("raw udp: bad endpoint " + endpoint);
  }
  DatagramEnds ends{.transport = "udp", .max_chunk = kMaxUdpPayload, .wait_ms = kUdpLossTimeoutMs};
  ends.in = UniqueFd(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!ends.in) return Errno("udp", "socket");
  SetBuffers(ends.in.get());
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(ends.in.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return Errno("udp", "connect");
  }
  // The kernel reports twice what it grants (the rest is its bookkeeping); a quarter of that
  // leaves room for each datagram's overhead. The server's buffers are the same size.
  int granted = 0;
  socklen_t len = sizeof(granted);
  getsockopt(ends.in.get(), SOL_SOCKET, SO_RCVBUF, &granted, &len);
  ends.window = std::max<size_t>(static_cast<size_t>(granted) / 4, 1);
  return std::make_unique<DatagramClient>(std::move(ends));
}

size_t MqMessageSize() { return static_cast<size_t>(MqueueLimit("msgsize_max", 8192)); }

// Server side of one client's queues: echoes every chunk until the client's hand-over socket
// hangs up (checked whenever a second passes without a request).
void EchoMq(UniqueFd requests, UniqueFd replies, UniqueFd socket, std::string base) {
  struct Unlink {  // in case the client died before it did
    ~Unlink() {
      mq_unlink((base + "-req").c_str());
      mq_unlink((base + "-rep").c_str());
    }
    const std::string& base;
  } unlink_on_return{base};
  std::vector<char> buffer(MqMessageSize());
  while (true) {
    timespec until{};
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    ssize_t n = mq_timedreceive(requests.get(), buffer.data(), buffer.size(), nullptr, &until);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != ETIMEDOUT) return;
      pollfd p{socket.get(), POLLIN, 0};
      if (poll(&p, 1, 0) != 0) return;  // closed (or wrote, which it never does)
      continue;
    }
    if (mq_send(replies.get(), buffer.data(), static_cast<size_t>(n), 0) != 0) return;
  }
}

absl::Status HandOverQueues(int socket) {
  static std::atomic<int> next{0};
  mq_attr attr{};
  attr.mq_maxmsg = MqueueLimit("msg_max", 10);
  attr.mq_msgsize = static_cast<long>(MqMessageSize());
  const std::string base = absl::StrCat("/courier-bench-raw-mq-", getpid(), "-", next++);
  UniqueFd queues[2];
  for (int i = 0; i < 2; ++i) {
    const std::string name = base + (i == 0 ? "-req" : "-rep");
    queues[i] = UniqueFd(mq_open(name.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600, &attr));
    if (!queues[i]) {
      if (i == 1) mq_unlink((base + "-req").c_str());
      return Errno("mq", "mq_open " + name);
    }
  }
  UniqueFd kept(dup(socket));
  absl::Status sent = kept ? SendHandOver(socket, base, {}) : Errno("mq", "dup");
  if (!sent.ok()) {
    mq_unlink((base + "-req").c_str());
    mq_unlink((base + "-rep").c_str());
    return sent;
  }
  std::thread(EchoMq, std::move(queues[0]), std::move(queues[1]), std::move(kept), base).detach();
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<EchoClient>> ConnectQueues(const std::string& endpoint) {
  absl::StatusOr<HandOver> got = ReceiveHandOver("mq", endpoint, 0);
  if (!got.ok()) return got.status();
  const std::string request = got->bytes + "-req", reply = got->bytes + "-rep";
  UniqueFd out(mq_open(request.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC));
  UniqueFd in(mq_open(reply.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  mq_unlink(request.c_str());  // the descriptors keep them
  mq_unlink(reply.c_str());
  if (!out || !in) return Errno("mq", "mq_open " + got->bytes);
  mq_attr attr{};
  if (mq_getattr(in.get(), &attr) != 0) return Errno("mq", "mq_getattr");
  DatagramEnds ends{
      .transport = "mq", .mq = true, .max_chunk = static_cast<size_t>(attr.mq_msgsize)};
  ends.out = std::move(out);
  ends.in = std::move(in);
  ends.hand_over = std::move(got->socket);
  return std::make_unique<DatagramClient>(std::move(ends));
}

}  // namespace

std::span<const std::string_view> RawIpcTransports() { return kTransports; }

bool IsRawIpcTransport(std::string_view transport) {
  return std::find(std::begin(kTransports), std::end(kTransports), transport) !=
         std::end(kTransports);
}

absl::Status ServeRawIpc(std::string_view transport,
                         const std::function<void(const std::string&)>& ready) {
  if (transport == "pipe") return ServeHandOvers("pipe", ready, HandOverPipes);
  if (transport == "fifo") return ServeFifos(ready);
  if (transport == "udp") return ServeUdp(ready);
  if (transport == "mq") return ServeHandOvers("mq", ready, HandOverQueues);
  return absl::InvalidArgumentError(absl::StrCat("raw: no transport ", std::string(transport)));
}

absl::StatusOr<std::unique_ptr<EchoClient>> ConnectRawIpc(std::string_view transport,
                                                          const std::string& endpoint) {
  if (transport == "pipe") return ConnectPipes(endpoint);
  if (transport == "fifo") return ConnectFifos(endpoint);
  if (transport == "udp") return ConnectUdp(endpoint);
  if (transport == "mq") return ConnectQueues(endpoint);
  return absl::InvalidArgumentError(absl::StrCat("raw: no transport ", std::string(transport)));
}

}  // namespace courier::bench
