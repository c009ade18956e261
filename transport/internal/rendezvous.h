// The per-user rendezvous directory where same-host transports put the files peers meet at
// (shm/ its sockets, fifo/ its loopback FIFOs). Transport-layer internals.
#pragma once

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"

namespace courier::transport::internal {

// The rendezvous directory for this user: $XDG_RUNTIME_DIR/courier when XDG_RUNTIME_DIR is set
// and names a directory we own, else /tmp/courier-<uid>. Created with mode 0700 if missing
// (`create`), else kUnavailable if missing; refused (kPermissionDenied, naming the problem) if
// it is a symlink, not a directory, not owned by us, or has any group/other permission bits.
absl::StatusOr<std::string> RendezvousDirectory(bool create);

// Permission bits as four octal digits ("0600"), for error messages.
std::string OctalMode(mode_t mode);

}  // namespace courier::transport::internal
