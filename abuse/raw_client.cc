#include "abuse/raw_client.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstring>
#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "rpc/wire.pb.h"

namespace courier::abuse {

using transport::Frame;
using transport::FrameType;

namespace {

void AppendVarint(std::string& out, uint64_t value) {
  while (value >= 0x80) {
    out.push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out.push_back(static_cast<char>(value));
}

bool ReadVarint(std::string_view bytes, size_t& at, uint64_t& value) {
  value = 0;
  for (int shift = 0; at < bytes.size() && shift < 64; shift += 7) {
    const auto byte = static_cast<uint8_t>(bytes[at++]);
    value |= uint64_t(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

// A varint field of a serialized message, read by hand: the wire.pb.h this was built with may
// predate the field. 0 if absent.
uint64_t VarintField(std::string_view message, uint32_t field) {
  size_t at = 0;
  uint64_t found = 0;
  for (uint64_t tag; at < message.size() && ReadVarint(message, at, tag);) {
    uint64_t value = 0;
    switch (tag & 7) {
      case 0:  // varint
        if (!ReadVarint(message, at, value)) return found;
        if ((tag >> 3) == field) found = value;
        break;
      case 1:  // 64-bit
        at += 8;
        break;
      case 2:  // length-delimited
        if (!ReadVarint(message, at, value)) return found;
        at += value;
        break;
      case 5:  // 32-bit
        at += 4;
        break;
      default:
        return found;
    }
  }
  return found;
}

// The ResponseHeader's code at the front of a RESPONSE payload; 2 (UNKNOWN) if it does not parse.
int ResponseCode(std::string_view payload) {
  uint64_t length = 0;
  size_t i = 0;
  if (!ReadVarint(payload, i, length) || length > payload.size() - i) return 2;
  wire::ResponseHeader header;
  if (!header.ParseFromArray(payload.data() + i, static_cast<int>(length))) return 2;
  return header.code();
}

absl::Status Errno(const std::string& what) { return absl::ErrnoToStatus(errno, what); }

// Waits for a non-blocking connect() to finish.
absl::Status FinishConnect(int fd, Clock::duration timeout) {
  pollfd p{fd, POLLOUT, 0};
  const int ms =
      static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count());
  int r;
  do {
    r = poll(&p, 1, ms);
  } while (r < 0 && errno == EINTR);
  if (r == 0) return absl::DeadlineExceededError("connect timed out");
  int error = 0;
  socklen_t len = sizeof(error);
  getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len);
  if (error != 0) {
    errno = error;
    return Errno("connect");
  }
  return absl::OkStatus();
}

}  // namespace

std::string HelloFrameBytes() {
  wire::Hello hello;
  hello.set_version(1);
  hello.set_max_frame_payload(transport::kDefaultMaxPayload);
  hello.set_agent("courier-abuse");
  return FrameBytes(FrameType::kHello, 0, 0, hello.SerializeAsString());
}

std::string FrameBytes(FrameType type, uint8_t flags, uint32_t call_id, std::string payload) {
  return transport::EncodeFrame(Frame{type, flags, call_id, std::move(payload)});
}

std::string RequestPayload(std::string_view method, uint64_t timeout_us, std::string_view message) {
  wire::RequestHeader header;
  header.set_method(std::string(method));
  header.set_timeout_us(timeout_us);
  std::string bytes = header.SerializeAsString();
  std::string payload;
  AppendVarint(payload, bytes.size());
  payload += bytes;
  payload += message;
  return payload;
}

std::string RequestFrame(uint32_t call_id, std::string_view payload) {
  return FrameBytes(FrameType::kRequest, transport::kFlagEndOfStream, call_id,
                    std::string(payload));
}

std::string CancelFrame(uint32_t call_id) { return FrameBytes(FrameType::kCancel, 0, call_id, {}); }

std::string CodeName(int code) {
  if (code < 0 || code > 16) return absl::StrCat("code ", code);
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(code));
}

std::string Inbound::Summary() const {
  std::vector<std::string> parts;
  std::vector<std::string> by_code;
  for (const auto& [code, n] : codes) by_code.push_back(absl::StrCat(CodeName(code), " ", n));
  parts.push_back(absl::StrCat(responses, " responses",
                               by_code.empty() ? "" : " (" + absl::StrJoin(by_code, ", ") + ")"));
  if (pongs > 0) parts.push_back(absl::StrCat(pongs, " pongs"));
  if (goaways > 0) parts.push_back(absl::StrCat("goaway \"", goaway_reason, "\""));
  if (other > 0) parts.push_back(absl::StrCat(other, " other frames"));
  if (closed) parts.push_back(absl::StrCat("closed (", close_reason, ")"));
  return absl::StrJoin(parts, ", ");
}

absl::StatusOr<std::unique_ptr<RawConnection>> RawConnection::Dial(const Endpoint& endpoint,
                                                                   Clock::duration timeout) {
  if (endpoint.scheme == "unix") {
    std::string name = endpoint.address.substr(0, endpoint.address.find('?'));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    socklen_t len;
    if (!name.empty() && name[0] == '@') {  // abstract: a NUL, then the name
      if (name.size() > sizeof(addr.sun_path)) return absl::InvalidArgumentError("name too long");
      std::memcpy(addr.sun_path + 1, name.data() + 1, name.size() - 1);
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size());
    } else {
      if (name.size() >= sizeof(addr.sun_path)) return absl::InvalidArgumentError("path too long");
      std::memcpy(addr.sun_path, name.data(), name.size());
      len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + name.size() + 1);
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return Errno("socket");
    auto connection = std::make_unique<RawConnection>(fd);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      if (errno != EINPROGRESS && errno != EAGAIN) return Errno("connect " + name);
      if (absl::Status s = FinishConnect(fd, timeout); !s.ok()) return s;
    }
    return connection;
  }
  if (endpoint.scheme == "tcp") {
    absl::StatusOr<HostPort> hp = SplitHostPort(endpoint.address);
    if (!hp.ok()) return hp.status();
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (int r = getaddrinfo(hp->host.c_str(), hp->port.c_str(), &hints, &found); r != 0) {
      return absl::UnavailableError(
          absl::StrCat("resolve ", endpoint.address, ": ", gai_strerror(r)));
    }
    int fd = socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      freeaddrinfo(found);
      return Errno("socket");
    }
    auto connection = std::make_unique<RawConnection>(fd);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int r = connect(fd, found->ai_addr, found->ai_addrlen);
    freeaddrinfo(found);
    if (r != 0) {
      if (errno != EINPROGRESS) return Errno("connect " + endpoint.address);
      if (absl::Status s = FinishConnect(fd, timeout); !s.ok()) return s;
    }
    return connection;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("raw clients speak unix:// and tcp://, not ", endpoint.scheme));
}

RawConnection::RawConnection(int fd) : fd_(fd) {}

RawConnection::~RawConnection() {
  if (fd_ >= 0) close(fd_);
}

void RawConnection::MarkClosed(std::string why) {
  if (inbound_.closed) return;
  inbound_.closed = Clock::now();
  inbound_.close_reason = std::move(why);
}

absl::Status RawConnection::Handshake(Clock::time_point deadline) {
  absl::StatusOr<size_t> sent = WriteAll(HelloFrameBytes(), deadline);
  if (!sent.ok()) return sent.status();
  while (inbound_.hellos == 0) {
    if (!ReadAvailable()) {
      return absl::UnavailableError("closed before the server's hello: " + inbound_.close_reason);
    }
    if (inbound_.hellos > 0) break;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return absl::DeadlineExceededError("no hello from the server in time");
    Wait(POLLIN, static_cast<int>(left));
  }
  return absl::OkStatus();
}

absl::StatusOr<size_t> RawConnection::TryWrite(std::string_view data) {
  if (closed()) return absl::UnavailableError("connection closed: " + inbound_.close_reason);
  size_t written = 0;
  while (written < data.size()) {
    ssize_t n = send(fd_, data.data() + written, data.size() - written, MSG_NOSIGNAL);
    if (n > 0) {
      written += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    MarkClosed(absl::StrCat("write: ", std::strerror(errno)));
    if (written > 0) break;
    return absl::UnavailableError(absl::StrCat("write: ", std::strerror(errno)));
  }
  return written;
}

absl::StatusOr<size_t> RawConnection::WriteAll(std::string_view data, Clock::time_point deadline) {
  size_t written = 0;
  while (written < data.size()) {
    absl::StatusOr<size_t> n = TryWrite(data.substr(written));
    if (!n.ok()) return n.status();
    written += *n;
    if (written == data.size()) break;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    Wait(POLLOUT, static_cast<int>(left));
  }
  return written;
}

bool RawConnection::ReadAvailable() {
  if (closed()) return false;
  char chunk[64 * 1024];
  for (;;) {
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    if (n < 0) {
      MarkClosed(absl::StrCat("read: ", std::strerror(errno)));
      break;
    }
    if (n == 0) {
      MarkClosed("eof");
      break;
    }
    inbound_.bytes += static_cast<size_t>(n);
    decoder_.Append(std::string_view(chunk, static_cast<size_t>(n)));
    for (;;) {
      absl::StatusOr<std::optional<Frame>> frame = decoder_.Next();
      if (!frame.ok()) {
        MarkClosed("undecodable: " + frame.status().ToString());
        return false;
      }
      if (!frame->has_value()) break;
      Frame& f = **frame;
      switch (f.type) {
        case FrameType::kHello:
          if (inbound_.hellos++ == 0) {
            inbound_.max_concurrent_calls = static_cast<uint32_t>(VarintField(f.payload, 4));
          }
          break;
        case FrameType::kResponse: {
          ++inbound_.responses;
          const int code = ResponseCode(f.payload);
          ++inbound_.codes[code];
          if (inbound_.on_response) inbound_.on_response(f.call_id, code);
          break;
        }
        case FrameType::kPong:
          ++inbound_.pongs;
          break;
        case FrameType::kGoAway: {
          ++inbound_.goaways;
          if (!inbound_.first_goaway) {
            inbound_.first_goaway = Clock::now();
            wire::GoAway goaway;
            if (goaway.ParseFromString(f.payload)) inbound_.goaway_reason = goaway.reason();
          }
          break;
        }
        default:
          ++inbound_.other;
          break;
      }
    }
  }
  return !closed();
}

short RawConnection::Wait(short events, int timeout_ms) {
  pollfd p{fd_, events, 0};
  int r = poll(&p, 1, timeout_ms);
  if (r <= 0) return 0;
  return p.revents;
}

StreamResult WriteFrames(RawConnection& connection, size_t count,
                         absl::FunctionRef<void(size_t, std::string&)> make, Clock::duration stall,
                         bool read_replies, Clock::time_point deadline) {
  constexpr size_t kBatch = 256 * 1024;
  const Clock::time_point start = Clock::now();
  StreamResult result;
  std::string pending;      // bytes made but not yet written
  std::deque<size_t> ends;  // end offset (in `pending`) of each frame in it
  size_t next = 0;
  Clock::time_point last_progress = Clock::now();
  for (;;) {
    while (pending.size() < kBatch && next < count) {
      make(next++, pending);
      ends.push_back(pending.size());
    }
    if (pending.empty()) {
      result.done = true;
      break;
    }
    absl::StatusOr<size_t> n = connection.TryWrite(pending);
    if (!n.ok()) {
      result.closed = true;
      break;
    }
    if (*n > 0) {
      last_progress = Clock::now();
      result.bytes += *n;
      pending.erase(0, *n);
      while (!ends.empty() && ends.front() <= *n) {
        ends.pop_front();
        ++result.frames;
      }
      for (size_t& end : ends) end -= *n;
      if (connection.closed()) {
        result.closed = true;
        break;
      }
      continue;
    }
    if (read_replies && !connection.ReadAvailable()) {
      result.closed = true;
      break;
    }
    const Clock::time_point now = Clock::now();
    if (now - last_progress >= stall) {
      result.stalled = true;
      break;
    }
    if (now >= deadline) break;
    const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::min(last_progress + stall, deadline) - now);
    connection.Wait(static_cast<short>(POLLOUT | (read_replies ? POLLIN : 0)),
                    static_cast<int>(wait.count()) + 1);
  }
  if (read_replies) connection.ReadAvailable();
  if (connection.closed()) result.closed = true;
  result.seconds = SecondsSince(start);
  return result;
}

void ReadFor(RawConnection& connection, Clock::duration duration) {
  const Clock::time_point end = Clock::now() + duration;
  while (connection.ReadAvailable()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (left <= 0) break;
    connection.Wait(POLLIN, static_cast<int>(left));
  }
}

}  // namespace courier::abuse
