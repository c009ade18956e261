// The floor of shm://: raw_system.cc's echo (a 4-byte little-endian length and that many bytes;
// the server echoes every complete message it has read) carried by the shm transport's own ring
// and segment code, with no framework on top.
//
// Per connection the server creates a Segment (two rings of the transport's default capacity, an
// eventfd doorbell per side) and passes its memfd and both eventfds to the client over the UNIX
// socket the client connected to (segment.h's ServerHello and SendWithFds), which then stays open
// only so that either side sees the other's death as a hang-up. From then on a message is a
// RingWriter::Write into one ring, and the peer's RingReader::Read copies it out; a message
// larger than the ring goes in pieces as the reader frees space.
//
// Waiting, for data or for space: "shm" polls the ring (HasData/HasSpace) for the transport's
// default spin (shm::kDefaultSpin), as a courier connection does, then sleeps; "shm-nospin"
// sleeps at once: the eventfd floor. Sleeping is ring.h's protocol: PrepareToSleep (announce,
// fence, re-check), poll() on our eventfd (and the socket), Drain, StopSleeping; the other side,
// after each Write or Read, takes the flag (TakeConsumerSleeping/TakeProducerSleeping) and rings
// our eventfd if it was set.
//
// Clients: for one call in flight, write the whole request (waiting for space as needed), then
// read the whole reply; for N in flight, a loop that writes what fits and reads what is there,
// and waits for either when neither progressed (as raw_system.cc's poll() loop).
#include "bench/raw_shm.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "asio/buffer.hpp"
#include "bench/raw_system.h"
#include "transport/shm/ring.h"
#include "transport/shm/segment.h"
#include "transport/shm/shm_transport.h"

namespace courier::bench {
namespace {

namespace shm = ::courier::transport::shm;
using Clock = std::chrono::steady_clock;

constexpr int kIoTimeoutMs = 30000;
constexpr char kEndpointPrefix[] = "unix:@";

absl::Status Errno(std::string_view what) {
  return absl::ErrnoToStatus(errno, absl::StrCat("raw shm ", std::string(what)));
}

std::chrono::microseconds SpinOf(std::string_view transport) {
  return transport == "shm" ? shm::kDefaultSpin : std::chrono::microseconds(0);
}

// One side of a connection: its writer and reader on the segment's two rings, its own doorbell
// and the peer's, and the socket whose hang-up is the peer's death.
class Side {
 public:
  Side(shm::Segment segment, bool is_server, shm::UniqueFd socket, std::chrono::microseconds spin)
      : segment_(std::move(segment)),
        writer_(segment_.WriterFor(is_server)),
        reader_(segment_.ReaderFor(is_server)),
        bell_(is_server ? segment_.server_bell() : segment_.client_bell()),
        peer_bell_(is_server ? segment_.client_bell() : segment_.server_bell()),
        socket_(std::move(socket)),
        spin_(spin) {}

  // Copies what fits of `buffers` into the ring (0: full) and rings the peer if it sleeps.
  absl::StatusOr<size_t> WriteSome(std::span<const asio::const_buffer> buffers) {
    absl::StatusOr<size_t> n = writer_.Write(buffers);
    if (n.ok() && *n > 0 && writer_.TakeConsumerSleeping()) shm::Ring(peer_bell_);
    return n;
  }

  // Copies what is there, up to `size` bytes (0: nothing yet), and rings the peer if it waits
  // for space.
  absl::StatusOr<size_t> ReadSome(char* into, size_t size) {
    absl::StatusOr<size_t> n = reader_.Read(std::span(reinterpret_cast<std::byte*>(into), size));
    if (n.ok() && *n > 0 && reader_.TakeProducerSleeping()) shm::Ring(peer_bell_);
    return n;
  }

  absl::Status WriteAll(const char* data, size_t size) {
    while (size > 0) {
      asio::const_buffer buffer(data, size);
      absl::StatusOr<size_t> n = WriteSome(std::span(&buffer, 1));
      if (!n.ok()) return n.status();
      data += *n;
      size -= *n;
      if (*n == 0) {
        if (absl::Status s = Wait(/*data=*/false, /*space=*/true); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  absl::Status ReadExact(char* into, size_t size) {
    while (size > 0) {
      absl::StatusOr<size_t> n = ReadSome(into, size);
      if (!n.ok()) return n.status();
      into += *n;
      size -= *n;
      if (*n == 0) {
        if (absl::Status s = Wait(/*data=*/true, /*space=*/false); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  // Returns once there is data to read (`data`) or space to write (`space`): polls for spin_,
  // then sleeps on our doorbell. kUnavailable once the peer has hung up, kDeadlineExceeded
  // after 30 s without a wake-up.
  absl::Status Wait(bool data, bool space) {
    auto ready = [&] { return (data && reader_.HasData()) || (space && writer_.HasSpace()); };
    if (ready()) return absl::OkStatus();
    if (spin_.count() > 0) {
      const Clock::time_point until = Clock::now() + spin_;
      do {
        for (int i = 0; i < 32; ++i) {
          if (ready()) return absl::OkStatus();
          shm::CpuRelax();
        }
      } while (Clock::now() < until);
    }
    while (true) {
      bool sleep = true;
      if (data && !reader_.PrepareToSleep()) sleep = false;
      if (sleep && space && !writer_.PrepareToSleep()) sleep = false;
      if (sleep) {
        // The socket carries nothing after the hello: anything on it is the peer going away.
        pollfd fds[2] = {{bell_, POLLIN, 0}, {socket_.get(), POLLIN, 0}};
        int n = poll(fds, 2, kIoTimeoutMs);
        if (n < 0 && errno != EINTR) return Errno("poll");
        if (n == 0) return absl::DeadlineExceededError("raw shm: no wake-up for 30 s");
        if (n > 0 && fds[1].revents != 0) return absl::UnavailableError("raw shm: peer closed");
        if (n > 0 && (fds[0].revents & POLLIN) != 0) shm::Drain(bell_);
      }
      if (data) reader_.StopSleeping();
      if (space) writer_.StopSleeping();
      if (ready()) return absl::OkStatus();
    }
  }

 private:
  shm::Segment segment_;
  shm::RingWriter writer_;
  shm::RingReader reader_;
  int bell_, peer_bell_;
  shm::UniqueFd socket_;
  std::chrono::microseconds spin_;
};

// Server side of one connection: creates and hands over the segment, then echoes every complete
// message as soon as it is complete, until the client hangs up.
void EchoConnection(int raw_fd, std::chrono::microseconds spin) {
  shm::UniqueFd socket(raw_fd);
  absl::StatusOr<shm::Segment> segment = shm::Segment::Create(shm::kDefaultRingCapacity);
  if (!segment.ok()) return;  // the client sees the hang-up
  std::array<std::byte, 16> hello =
      shm::Encode(shm::ServerHello{static_cast<uint32_t>(segment->ring_capacity())});
  const int fds[3] = {segment->memfd(), segment->server_bell(), segment->client_bell()};
  absl::StatusOr<size_t> sent = shm::SendWithFds(socket.get(), hello, fds);
  if (!sent.ok() || *sent != hello.size()) return;
  Side side(*std::move(segment), /*is_server=*/true, std::move(socket), spin);
  std::vector<char> buffer(256 * 1024);
  size_t have = 0;
  while (true) {
    absl::StatusOr<size_t> n = side.ReadSome(buffer.data() + have, buffer.size() - have);
    if (!n.ok()) return;
    if (*n == 0) {
      if (!side.Wait(/*data=*/true, /*space=*/false).ok()) return;
      continue;
    }
    have += *n;
    size_t complete = 0;  // bytes of whole messages at the front
    size_t needed = 0;    // size of the first incomplete message, once its length is known
    while (have - complete >= kLengthSize) {
      size_t message = kLengthSize + GetLength(buffer.data() + complete);
      if (have - complete < message) {
        needed = message;
        break;
      }
      complete += message;
    }
    if (complete > 0) {
      if (!side.WriteAll(buffer.data(), complete).ok()) return;
      std::memmove(buffer.data(), buffer.data() + complete, have - complete);
      have -= complete;
    }
    if (needed > buffer.size()) buffer.resize(needed);
  }
}

class RawShmClient final : public EchoClient {
 public:
  explicit RawShmClient(Side side) : side_(std::move(side)) {}

  absl::Status PingPong(size_t payload, int count, std::vector<int64_t>& round_trips) override {
    Prepare(payload);
    for (int i = 0; i < count; ++i) {
      auto start = Clock::now();
      if (absl::Status s = CallOnce(); !s.ok()) return s;
      round_trips.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count());
    }
    return absl::OkStatus();
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
    return Pipeline(in_flight, counters);
  }

 private:
  void Prepare(size_t payload) {
    if (message_.size() == kLengthSize + payload) return;
    message_ = std::string(kLengthSize, '\0') + MakePayload(payload);
    PutLength(message_.data(), static_cast<uint32_t>(payload));
    reply_.resize(message_.size());
  }

  absl::Status CallOnce() {
    if (absl::Status s = side_.WriteAll(message_.data(), message_.size()); !s.ok()) return s;
    if (absl::Status s = side_.ReadExact(reply_.data(), reply_.size()); !s.ok()) return s;
    if (GetLength(reply_.data()) + kLengthSize != reply_.size()) {
      return absl::DataLossError("raw shm: reply of the wrong size");
    }
    return absl::OkStatus();
  }

  // raw_system.cc's pipeline on the rings: `in_flight` requests, then one more for each reply
  // until told to stop; the send queue is a count and an offset into `message_`.
  absl::Status Pipeline(int in_flight, CallCounters& counters) {
    const size_t message_size = message_.size();
    size_t unsent = static_cast<size_t>(in_flight);  // whole requests not yet (fully) written
    size_t sent_offset = 0;                          // bytes of the first unsent one written
    size_t outstanding = unsent;                     // requests whose reply is not complete
    size_t reply_offset = 0;                         // bytes of the current reply read
    char header[kLengthSize];
    std::vector<char> buffer(std::max<size_t>(64 * 1024, std::min<size_t>(message_size, 1 << 20)));
    std::vector<asio::const_buffer> iov;
    while (outstanding > 0) {
      bool progressed = false;
      if (unsent > 0) {
        iov.clear();
        for (size_t i = 0; i < std::min<size_t>(unsent, 64); ++i) {
          size_t skip = i == 0 ? sent_offset : 0;
          iov.emplace_back(message_.data() + skip, message_size - skip);
        }
        absl::StatusOr<size_t> n = side_.WriteSome(iov);
        if (!n.ok()) return n.status();
        if (*n > 0) {
          progressed = true;
          size_t written = sent_offset + *n;
          unsent -= written / message_size;
          sent_offset = written % message_size;
        }
      }
      absl::StatusOr<size_t> got = side_.ReadSome(buffer.data(), buffer.size());
      if (!got.ok()) return got.status();
      const size_t n = *got;
      for (size_t i = 0; i < n;) {
        progressed = true;
        if (reply_offset < kLengthSize) {
          header[reply_offset++] = buffer[i++];
          if (reply_offset == kLengthSize && GetLength(header) + kLengthSize != message_size) {
            return absl::DataLossError("raw shm: reply of the wrong size");
          }
          continue;
        }
        size_t take = std::min(message_size - reply_offset, n - i);
        reply_offset += take;
        i += take;
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
      if (!progressed && outstanding > 0) {
        if (absl::Status s = side_.Wait(/*data=*/true, /*space=*/unsent > 0); !s.ok()) return s;
      }
    }
    return absl::OkStatus();
  }

  Side side_;
  std::string message_;
  std::string reply_;
};

}  // namespace

bool IsRawShmTransport(std::string_view transport) {
  return transport == "shm" || transport == "shm-nospin";
}

absl::Status ServeRawShm(std::string_view transport,
                         const std::function<void(const std::string&)>& ready) {
  const std::chrono::microseconds spin = SpinOf(transport);
  std::string name = absl::StrCat("courier-bench-raw-", std::string(transport), "-", getpid());
  auto [addr, len] = AbstractAddress(name);
  shm::UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!listener) return Errno("socket");
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return Errno("bind");
  if (listen(listener.get(), 16) != 0) return Errno("listen");
  ready(absl::StrCat(kEndpointPrefix, name));
  while (true) {
    int fd = accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      return Errno("accept");
    }
    std::thread(EchoConnection, fd, spin).detach();
  }
}

absl::StatusOr<std::unique_ptr<EchoClient>> ConnectRawShm(std::string_view transport,
                                                          const std::string& endpoint) {
  if (!IsRawShmTransport(transport) || !endpoint.starts_with(kEndpointPrefix)) {
    return absl::InvalidArgumentError("raw shm: bad endpoint " + endpoint);
  }
  auto [addr, len] = AbstractAddress(endpoint.substr(sizeof(kEndpointPrefix) - 1));
  shm::UniqueFd socket(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!socket) return Errno("socket");
  if (connect(socket.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return Errno("connect");
  pollfd p{socket.get(), POLLIN, 0};
  int ready = poll(&p, 1, kIoTimeoutMs);
  if (ready < 0) return Errno("poll");
  if (ready == 0) return absl::DeadlineExceededError("raw shm: no hello from the server");
  std::array<std::byte, 16> hello_bytes;
  absl::StatusOr<shm::Received> got = shm::ReceiveWithFds(socket.get(), hello_bytes, 3);
  if (!got.ok()) return got.status();
  if (got->bytes != hello_bytes.size() || got->fds.size() != 3) {
    return absl::UnavailableError("raw shm: the server sent no segment");
  }
  absl::StatusOr<shm::ServerHello> hello = shm::DecodeServerHello(hello_bytes);
  if (!hello.ok()) return hello.status();
  absl::StatusOr<shm::Segment> segment = shm::Segment::Adopt(
      std::move(got->fds[0]), std::move(got->fds[1]), std::move(got->fds[2]), hello->ring_capacity);
  if (!segment.ok()) return segment.status();
  return std::make_unique<RawShmClient>(
      Side(*std::move(segment), /*is_server=*/false, std::move(socket), SpinOf(transport)));
}

}  // namespace courier::bench
