// The floor: the same echo traffic over the bare mechanism, with no framework. Each message is a
// 4-byte little-endian length and that many bytes; the server echoes every complete message it
// has read with one blocking write. Clients use blocking read/write for one call in flight and a
// poll() loop on a non-blocking socket to keep N outstanding (blocking both ways would deadlock
// once both socket buffers fill with large messages). The shm transports ("shm", "shm-nospin")
// are the same echo over the shm transport's rings, in raw_shm.cc; pipe, fifo, udp and mq (POSIX
// message queues) are in raw_ipc.cc, pipe and fifo with this file's stream echo and client.
#include "bench/raw_system.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "bench/raw_ipc.h"
#include "bench/raw_shm.h"
#include "bench/system.h"

namespace courier::bench {
namespace {

constexpr int kIoTimeoutMs = 30000;

absl::Status Errno(std::string_view what) {
  return absl::ErrnoToStatus(errno, absl::StrCat("raw ", std::string(what)));
}

class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) close(fd_);
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

absl::Status WriteAll(int fd, const char* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("write");
    }
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::Status ReadExact(int fd, char* data, size_t size) {
  while (size > 0) {
    ssize_t n = read(fd, data, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("read");
    }
    if (n == 0) return absl::UnavailableError("raw read: peer closed");
    data += n;
    size -= static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

void SetNonBlocking(int fd, bool on) {
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK));
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

}  // namespace

void PutLength(char* at, uint32_t length) {
  for (int i = 0; i < 4; ++i) at[i] = static_cast<char>((length >> (8 * i)) & 0xff);
}
uint32_t GetLength(const char* at) {
  uint32_t length = 0;
  for (int i = 0; i < 4; ++i)
    length |= static_cast<uint32_t>(static_cast<uint8_t>(at[i])) << (8 * i);
  return length;
}

std::pair<sockaddr_un, socklen_t> AbstractAddress(const std::string& name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), std::min(name.size(), sizeof(addr.sun_path) - 1));
  return {addr, static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size())};
}

namespace {

// The one-way stream: `size`-byte messages, written back to back in batches of whole messages
// (about 64 KiB) with blocking writes, for `duration_ms`; then the end marker.
absl::Status StreamOut(int fd, uint32_t size, uint32_t duration_ms) {
  const size_t message = kLengthSize + size;
  const size_t per_write = std::max<size_t>(1, (64 * 1024) / message);
  std::string batch;
  std::string payload = MakePayload(size);
  for (size_t i = 0; i < per_write; ++i) {
    char header[kLengthSize];
    PutLength(header, size);
    batch.append(header, kLengthSize);
    batch += payload;
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(duration_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (absl::Status s = WriteAll(fd, batch.data(), batch.size()); !s.ok()) return s;
  }
  char marker[kLengthSize];
  PutLength(marker, kStreamMarker);
  return WriteAll(fd, marker, kLengthSize);
}

}  // namespace

void EchoStream(int in_fd, int out_fd) {
  Fd in(in_fd);
  Fd out(out_fd == in_fd ? -1 : out_fd);
  const int write_fd = out_fd;
  std::vector<char> buffer(256 * 1024);
  size_t have = 0;
  while (true) {
    ssize_t n = read(in.get(), buffer.data() + have, buffer.size() - have);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    have += static_cast<size_t>(n);
    bool again = true;
    while (again) {
      again = false;
      size_t complete = 0;  // bytes of whole messages at the front
      size_t needed = 0;    // size of the first incomplete message, once its length is known
      bool stream = false;  // a whole stream request follows them
      while (have - complete >= kLengthSize) {
        const uint32_t length = GetLength(buffer.data() + complete);
        if (length == kStreamMarker) {
          stream = have - complete >= kStreamRequestSize;
          if (!stream) needed = kStreamRequestSize;
          break;
        }
        size_t message = kLengthSize + length;
        if (have - complete < message) {
          needed = message;
          break;
        }
        complete += message;
      }
      if (complete > 0) {
        if (!WriteAll(write_fd, buffer.data(), complete).ok()) return;
        std::memmove(buffer.data(), buffer.data() + complete, have - complete);
        have -= complete;
      }
      if (stream) {
        if (!StreamOut(write_fd, GetLength(buffer.data() + kLengthSize),
                       GetLength(buffer.data() + 2 * kLengthSize))
                 .ok()) {
          return;
        }
        std::memmove(buffer.data(), buffer.data() + kStreamRequestSize, have - kStreamRequestSize);
        have -= kStreamRequestSize;
        again = true;
      }
      if (needed > buffer.size()) buffer.resize(needed);
    }
  }
}

namespace {

// Reads replies from `in` and writes requests to `out`; for a socket they are the same.
class RawClient final : public EchoClient {
 public:
  RawClient(int in, int out) : in_(in), out_(out == in ? -1 : out), write_fd_(out) {}

  absl::Status PingPong(size_t payload, int count, std::vector<int64_t>& round_trips) override {
    Prepare(payload);
    for (int i = 0; i < count; ++i) {
      auto start = std::chrono::steady_clock::now();
      if (absl::Status s = CallOnce(); !s.ok()) return s;
      round_trips.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                std::chrono::steady_clock::now() - start)
                                .count());
    }
    return absl::OkStatus();
  }

  // The one-way stream (EchoStream's kStreamMarker): reads into a 256 KiB buffer and counts
  // the whole messages in each read, until the end marker.
  absl::StatusOr<StreamSample> StreamDownload(size_t payload, double warmup_s,
                                              double measure_s) override {
    char request[kStreamRequestSize];
    PutLength(request, kStreamMarker);
    PutLength(request + kLengthSize, static_cast<uint32_t>(payload));
    PutLength(request + 2 * kLengthSize, static_cast<uint32_t>((warmup_s + measure_s) * 1000));
    if (absl::Status s = WriteAll(write_fd_, request, sizeof(request)); !s.ok()) return s;
    StreamWindow window(warmup_s);
    std::vector<char> buffer(256 * 1024);
    size_t have = 0;
    while (true) {
      ssize_t n = read(in_.get(), buffer.data() + have, buffer.size() - have);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Errno("read");
      if (n == 0) return absl::UnavailableError("raw read: peer closed");
      have += static_cast<size_t>(n);
      size_t offset = 0;
      int64_t messages = 0;
      bool ended = false;
      while (have - offset >= kLengthSize) {
        const uint32_t length = GetLength(buffer.data() + offset);
        if (length == kStreamMarker) {
          ended = true;
          offset += kLengthSize;
          break;
        }
        if (length != payload) return absl::DataLossError("raw: stream message of the wrong size");
        if (have - offset < kLengthSize + length) break;
        offset += kLengthSize + length;
        ++messages;
      }
      window.Received(messages);
      if (ended) {
        window.Close();
        if (offset != have) return absl::DataLossError("raw: bytes after the stream's end");
        return window.Result();
      }
      std::memmove(buffer.data(), buffer.data() + offset, have - offset);
      have -= offset;
    }
  }

  absl::Status Saturate(size_t payload, int in_flight, CallCounters& counters) override {
    Prepare(payload);
    if (in_flight <= 1) {
      while (!counters.stop.load(std::memory_order_relaxed)) {
        if (absl::Status s = CallOnce(); !s.ok()) return s;
        counters.completed.fetch_add(1, std::memory_order_relaxed);
      }
      return absl::OkStatus();
    }
    SetNonBlocking(in_.get(), true);
    SetNonBlocking(write_fd_, true);
    absl::Status status = Pipeline(in_flight, counters);
    SetNonBlocking(in_.get(), false);
    SetNonBlocking(write_fd_, false);
    return status;
  }

 private:
  void Prepare(size_t payload) {
    if (message_.size() == kLengthSize + payload) return;
    message_ = std::string(kLengthSize, '\0') + MakePayload(payload);
    PutLength(message_.data(), static_cast<uint32_t>(payload));
    reply_.resize(message_.size());
  }

  absl::Status CallOnce() {
    if (absl::Status s = WriteAll(write_fd_, message_.data(), message_.size()); !s.ok()) return s;
    if (absl::Status s = ReadExact(in_.get(), reply_.data(), reply_.size()); !s.ok()) return s;
    if (GetLength(reply_.data()) + kLengthSize != reply_.size()) {
      return absl::DataLossError("raw: reply of the wrong size");
    }
    return absl::OkStatus();
  }

  // Writes `in_flight` requests, then writes one more for each reply until told to stop; all
  // requests are the same bytes, so the send queue is a count and an offset into `message_`.
  absl::Status Pipeline(int in_flight, CallCounters& counters) {
    const size_t message_size = message_.size();
    size_t unsent = static_cast<size_t>(in_flight);  // whole requests not yet (fully) written
    size_t sent_offset = 0;                          // bytes of the first unsent one written
    size_t outstanding = unsent;                     // requests whose reply is not complete
    size_t reply_offset = 0;                         // bytes of the current reply read
    char header[kLengthSize];
    std::vector<char> buffer(std::max<size_t>(64 * 1024, std::min<size_t>(message_size, 1 << 20)));
    std::vector<iovec> iov;
    while (outstanding > 0) {
      bool progressed = false;
      if (unsent > 0) {
        iov.clear();
        for (size_t i = 0; i < std::min<size_t>(unsent, 64); ++i) {
          size_t skip = i == 0 ? sent_offset : 0;
          iov.push_back({message_.data() + skip, message_size - skip});
        }
        ssize_t n = writev(write_fd_, iov.data(), static_cast<int>(iov.size()));
        if (n > 0) {
          progressed = true;
          size_t written = sent_offset + static_cast<size_t>(n);
          unsent -= written / message_size;
          sent_offset = written % message_size;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
          return Errno("writev");
        }
      }
      ssize_t n = read(in_.get(), buffer.data(), buffer.size());
      if (n == 0) return absl::UnavailableError("raw read: peer closed");
      if (n < 0 && errno != EAGAIN && errno != EINTR) return Errno("read");
      for (ssize_t i = 0; i < n;) {
        progressed = true;
        if (reply_offset < kLengthSize) {
          header[reply_offset++] = buffer[i++];
          if (reply_offset == kLengthSize && GetLength(header) + kLengthSize != message_size) {
            return absl::DataLossError("raw: reply of the wrong size");
          }
          continue;
        }
        size_t take = std::min(message_size - reply_offset, static_cast<size_t>(n - i));
        reply_offset += take;
        i += static_cast<ssize_t>(take);
        if (reply_offset == message_size) {
          reply_offset = 0;
          --outstanding;
          counters.completed.fetch_add(1, std::memory_order_relaxed);
          if (!counters.stop.load(std::memory_order_relaxed)) {
            ++unsent;
            ++outstanding;
          }
        }
      }
      if (!progressed) {
        const short out_events = unsent > 0 ? POLLOUT : 0;
        const bool two = out_.get() >= 0;
        pollfd p[2] = {{in_.get(), static_cast<short>(POLLIN | (two ? 0 : out_events)), 0},
                       {write_fd_, out_events, 0}};
        int ready = poll(p, two ? 2 : 1, kIoTimeoutMs);
        if (ready == 0) return absl::DeadlineExceededError("raw: no progress for 30 s");
        if (ready < 0 && errno != EINTR) return Errno("poll");
      }
    }
    return absl::OkStatus();
  }

  Fd in_;
  Fd out_;  // none when it is `in_`
  int write_fd_;
  std::string message_;
  std::string reply_;
};

class RawSystem final : public System {
 public:
  std::string_view name() const override { return "raw"; }
  std::vector<std::string> transports() const override {
    std::vector<std::string> transports = {"unix", "tcp", "shm", "shm-nospin"};
    for (std::string_view t : RawIpcTransports()) transports.emplace_back(t);
    return transports;
  }

  absl::Status Serve(std::string_view transport,
                     const std::function<void(const std::string&)>& ready) override {
    if (IsRawShmTransport(transport)) return ServeRawShm(transport, ready);
    if (IsRawIpcTransport(transport)) return ServeRawIpc(transport, ready);
    Fd listener;
    std::string endpoint;
    if (transport == "unix") {
      // An abstract name, as courier's unix loopback endpoint uses: no file to clean up.
      std::string name = absl::StrCat("courier-bench-raw-", getpid());
      auto [addr, len] = AbstractAddress(name);
      listener = Fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (listener.get() < 0) return Errno("socket");
      if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return Errno("bind");
      endpoint = "unix:@" + name;
    } else if (transport == "tcp") {
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      listener = Fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (listener.get() < 0) return Errno("socket");
      if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        return Errno("bind");
      }
      socklen_t len = sizeof(addr);
      getsockname(listener.get(), reinterpret_cast<sockaddr*>(&addr), &len);
      endpoint = absl::StrCat("tcp://127.0.0.1:", ntohs(addr.sin_port));
    } else {
      return absl::InvalidArgumentError(absl::StrCat("raw: no transport ", std::string(transport)));
    }
    if (listen(listener.get(), 16) != 0) return Errno("listen");
    ready(endpoint);
    while (true) {
      int fd = accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        return Errno("accept");
      }
      if (transport == "tcp") SetNoDelay(fd);
      std::thread(EchoStream, fd, fd).detach();
    }
  }

  absl::StatusOr<std::unique_ptr<EchoClient>> Connect(std::string_view transport,
                                                      const std::string& endpoint) override {
    if (IsRawShmTransport(transport)) return ConnectRawShm(transport, endpoint);
    if (IsRawIpcTransport(transport)) return ConnectRawIpc(transport, endpoint);
    Fd fd;
    if (transport == "unix" && endpoint.starts_with("unix:@")) {
      auto [addr, len] = AbstractAddress(endpoint.substr(6));
      fd = Fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return Errno("connect");
    } else if (transport == "tcp" && endpoint.starts_with("tcp://127.0.0.1:")) {
      uint32_t port = 0;
      if (!absl::SimpleAtoi(endpoint.substr(16), &port)) {
        return absl::InvalidArgumentError("raw: bad endpoint " + endpoint);
      }
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<uint16_t>(port));
      fd = Fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        return Errno("connect");
      }
      SetNoDelay(fd.get());
    } else {
      return absl::InvalidArgumentError("raw: bad endpoint " + endpoint);
    }
    timeval timeout{kIoTimeoutMs / 1000, 0};
    setsockopt(fd.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
    return NewStreamClient(fd.release());
  }
};

}  // namespace

std::unique_ptr<EchoClient> NewStreamClient(int in, int out) {
  return std::make_unique<RawClient>(in, out);
}

std::unique_ptr<System> NewRawSystem() { return std::make_unique<RawSystem>(); }

}  // namespace courier::bench
