// Owned descriptors and descriptor passing over UNIX sockets (SCM_RIGHTS), shared by the
// transports that hand descriptors to a peer (shm/ passes its segment and doorbells, pipe/ its
// pipes). Transport-layer internals.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

namespace courier::transport::internal {

// An owned file descriptor (closed on destruction; -1: none).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  ~UniqueFd();
  int get() const { return fd_; }
  int release();
  explicit operator bool() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// One sendmsg of `bytes` (not empty, else kInvalidArgument) with `fds` as SCM_RIGHTS on a
// connected UNIX stream socket (MSG_NOSIGNAL | MSG_DONTWAIT). Returns the bytes sent; 0 if it
// would block (nothing sent); kUnavailable if the peer is gone.
absl::StatusOr<size_t> SendWithFds(int socket, std::span<const std::byte> bytes,
                                   std::span<const int> fds);
struct Received {
  size_t bytes = 0;  // 0 with eof: the peer closed
  bool eof = false;
  bool would_block = false;    // nothing there yet
  std::vector<UniqueFd> fds;   // in the order sent
  bool fds_truncated = false;  // more fds (or control data) came than we take: refuse
};
// One recvmsg (MSG_CMSG_CLOEXEC | MSG_DONTWAIT) into `into` (not empty, else kInvalidArgument),
// taking at most `max_fds` descriptors. When more came, or other control data, every descriptor
// that arrived is closed, `fds` is empty and fds_truncated set. kUnavailable on a reset.
absl::StatusOr<Received> ReceiveWithFds(int socket, std::span<std::byte> into, size_t max_fds);

}  // namespace courier::transport::internal
