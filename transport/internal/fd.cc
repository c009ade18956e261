#include "transport/internal/fd.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "transport/status.h"

namespace courier::transport::internal {
namespace {

// SCM_MAX_FD in the kernel.
constexpr size_t kMaxFdsPerMessage = 253;

}  // namespace

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.release();
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

int UniqueFd::release() { return std::exchange(fd_, -1); }

absl::StatusOr<size_t> SendWithFds(int socket, std::span<const std::byte> bytes,
                                   std::span<const int> fds) {
  if (bytes.empty()) return absl::InvalidArgumentError("fd send: no bytes to send");
  if (fds.size() > kMaxFdsPerMessage) {
    return absl::InvalidArgumentError(
        absl::StrCat("fd send: ", fds.size(), " fds, at most ", kMaxFdsPerMessage));
  }
  iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // std::vector's storage is aligned for any fundamental type, so for cmsghdr too.
  std::vector<char> control;
  if (!fds.empty()) {
    control.resize(CMSG_SPACE(fds.size() * sizeof(int)));
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(fds.size() * sizeof(int));
    std::memcpy(CMSG_DATA(cmsg), fds.data(), fds.size() * sizeof(int));
  }
  ssize_t n;
  do {
    n = ::sendmsg(socket, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) return size_t{0};
    return ErrnoStatus(errno, "fd send");
  }
  return static_cast<size_t>(n);
}

absl::StatusOr<Received> ReceiveWithFds(int socket, std::span<std::byte> into, size_t max_fds) {
  if (into.empty()) return absl::InvalidArgumentError("fd receive: empty buffer");
  if (max_fds > kMaxFdsPerMessage) max_fds = kMaxFdsPerMessage;
  iovec iov{into.data(), into.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(max_fds * sizeof(int)));
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  Received received;
  if (n < 0) {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      received.would_block = true;
      return received;
    }
    return ErrnoStatus(errno, "fd receive");
  }
  received.bytes = static_cast<size_t>(n);
  received.eof = n == 0;
  // Take ownership of every descriptor that arrived before judging any of them, so that none
  // leaks whatever we then refuse.
  received.fds_truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg)) {
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) {
      size_t count = (cmsg->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int fd;
        std::memcpy(&fd, CMSG_DATA(cmsg) + i * sizeof(int), sizeof(int));
        received.fds.emplace_back(fd);
      }
    } else {
      received.fds_truncated = true;  // control data we did not ask for (credentials, …)
    }
  }
  // CMSG_SPACE rounds up, so the buffer may hold more than max_fds without MSG_CTRUNC.
  if (received.fds.size() > max_fds) received.fds_truncated = true;
  if (received.fds_truncated) received.fds.clear();  // closes them
  return received;
}

}  // namespace courier::transport::internal
