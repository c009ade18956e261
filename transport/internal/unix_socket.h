// What the transports built on UNIX stream sockets (uds/, and shm/ for its rendezvous) share:
// connecting (with the retry a full backlog needs), listening on a path (replacing a stale
// socket file, setting its mode before anyone can connect) and removing that file again.
// Transport-layer internals.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "asio/awaitable.hpp"
#include "asio/local/stream_protocol.hpp"

namespace courier::transport::internal {

// Identifies the socket file a listener created, so that closing it removes that file and not
// one that replaced it.
struct FileId {
  dev_t dev = 0;
  ino_t ino = 0;
  friend bool operator==(const FileId&, const FileId&) = default;
};
// The identity of whatever `path` names (lstat: a symlink itself, not its target); nullopt if
// nothing. SocketFileId: the same, for a socket only.
std::optional<FileId> FileIdOf(const std::string& path);
std::optional<FileId> SocketFileId(const std::string& path);
// Removes `path` if it still names the file `id` (a socket, a FIFO, …).
void UnlinkIfSame(const std::string& path, const FileId& id);

// A socket connected to `endpoint`, bound to `executor`. A UNIX stream connect completes at once
// or fails; EAGAIN (the listener's backlog is full) is retried with waits of 1 ms doubling to
// 50 ms for up to 2 s, then kUnavailable. ENOENT and ECONNREFUSED (nobody listens) are
// kUnavailable at once. `what` starts error messages.
asio::awaitable<absl::StatusOr<asio::local::stream_protocol::socket>> ConnectUnix(
    asio::any_io_executor executor, asio::local::stream_protocol::endpoint endpoint,
    std::string what);

// Opens `acceptor` (close-on-exec), binds it to `endpoint` and listens. For a path (`path` not
// null; nullptr for an abstract name) the file gets `mode` before listen() (so nobody connects
// while it has the umask's mode), a stale socket file nobody answers on is replaced, and a file
// that is not a socket or a live server's socket is kAlreadyExists. Returns the file's identity
// (nullopt for an abstract name).
absl::StatusOr<std::optional<FileId>> ListenUnix(
    asio::local::stream_protocol::acceptor& acceptor,
    const asio::local::stream_protocol::endpoint& endpoint, const std::string* path, mode_t mode,
    const std::string& what);

}  // namespace courier::transport::internal
