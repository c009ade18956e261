// fifo:// — two processes of one user on one host talk over a pair of named pipes (FIFOs).
//
// Address: "fifo:///dir/NAME", an absolute path; NAME is 1 to 128 bytes of [A-Za-z0-9._-] not
// starting with '.'. No options. The server owns the request FIFO at that path; every
// connection is a private pair of FIFOs the client creates next to it, in the same directory
// (so the client must be able to create files there):
//   <NAME>.<pid>.<16 hex digits>.c2s   client → server bytes
//   <NAME>.<pid>.<16 hex digits>.s2c   server → client bytes
//
// Listen: the FIFO is made under a temporary name (mkfifo 0600), the server opens its read end
// (O_RDONLY|O_NONBLOCK) and one write end of its own (so it never reads end-of-file as clients
// come and go), then links it to the path, which fails if the path exists: so the path names a
// FIFO only once somebody reads it. An existing path is refused with kAlreadyExists if it is not
// a FIFO, is a FIFO of another uid, or is read by a live server (opening it O_WRONLY|O_NONBLOCK
// succeeds); a FIFO of ours that nobody reads (ENXIO) is stale and replaced. Close() removes the
// request FIFO if the path still names the one we made (dev/ino).
//
// Connect (the client; each step bounded by one 2 s deadline, kHandshakeTimeout):
//   1. lstat the request FIFO: a FIFO of ours with no group/other bits (else kPermissionDenied),
//      open it O_WRONLY|O_NONBLOCK|O_NOFOLLOW (ENOENT, ENXIO: nobody serves it, kUnavailable);
//   2. mkfifo the pair 0600 (EEXIST: another random, at most 8 tries), open .s2c O_RDONLY;
//   3. write the connect record to the request FIFO in one write() of at most PIPE_BUF bytes,
//      so that concurrent clients' records never interleave (EAGAIN: the FIFO is full, retried):
//        "CFIFO1 <pid> <NAME>.<pid>.<hex>.c2s <NAME>.<pid>.<hex>.s2c\n"
//   4. wait until .s2c is readable and read one byte, which must be kAcceptByte ('A'; end of
//      file: the server refused). Meanwhile, every 50 ms, a request FIFO without readers (the
//      server died) is kUnavailable at once;
//   5. open .c2s O_WRONLY|O_NONBLOCK (the server holds its read end), write kReadyByte ('R'),
//      and unlink both FIFO files: from now on both sides hold both ends, and nothing remains
//      in the directory whoever dies later.
//   Any failure removes the pair and is kUnavailable naming the endpoint; cancelling the
//   awaiting coroutine stops the attempt (kCancelled) and removes the pair too.
//
// Serve (the listener, on its executor, from the first Accept on, whether or not an Accept is
// waiting; before that clients wait, as they would in a socket's backlog):
//   reads the request FIFO into a PIPE_BUF buffer and splits it on '\n'. A record is dropped if
//   it is longer than PIPE_BUF, malformed (not exactly the format above: the tag, a decimal pid,
//   and basenames built from NAME, that pid and 16 lowercase hex digits; so no '/', no "..",
//   nothing outside this directory), or names files that are not FIFOs (lstat; opened with
//   O_NOFOLLOW and fstat'ed again after the open, same dev/ino), are another uid's, or have
//   group/other permission bits. For a good record it opens .c2s O_RDONLY|O_NONBLOCK and .s2c
//   O_WRONLY|O_NONBLOCK (ENXIO: the client is gone), writes kAcceptByte, waits (the same 2 s
//   from the record) for kReadyByte on .c2s, unlinks both files (also, so that a client killed
//   between its byte and its unlink leaves nothing) and queues the connection for Accept: reads
//   from .c2s, writes to .s2c. A handshake that fails removes the pair's FIFOs it checked.
//   Dropped records are counted (StatsOf) and reported through Accept, at most once a second,
//   with the count (the server logs what Accept returns and goes on accepting).
//
// The peer's end: end of stream when it closed .c2s/.s2c (read returns 0), kUnavailable for a
// write after it closed its read end (EPIPE; SIGPIPE is ignored, see internal::IgnoreSigpipe).
// Peer info: on the server "fifo:pid=<pid>" with the pid from the record, which nobody
// verifies, and the credentials' uid/gid from the .c2s FIFO's owner (the kernel vouches for
// that, and it is always ours); on the client "fifo://<request path>" and the request FIFO's
// owner. The pid in the credentials is 0 (unknown).
//
// Bounds: one record is at most PIPE_BUF (4096) bytes, and the listener buffers at most one;
// handshakes in progress plus connections not yet accepted are at most kMaxPending (64), more
// records are dropped; a handshake lasts at most kHandshakeTimeout on either side. Only this
// user reaches a server: the request FIFO is 0600 and the pair must be ours.
// Not covered: a client killed between creating its pair and writing its record leaves the pair
// behind (nobody else knows of it).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::fifo {

inline constexpr char kRecordTag[] = "CFIFO1";
inline constexpr char kAcceptByte = 'A';
inline constexpr char kReadyByte = 'R';
inline constexpr std::chrono::seconds kHandshakeTimeout{2};
inline constexpr size_t kMaxPending = 64;
inline constexpr size_t kMaxName = 128;

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// A fresh path in the per-user rendezvous directory (internal/rendezvous.h, created if
// missing): fifo://<dir>/courier-<pid>-<n>-<salt>.
Endpoint LoopbackEndpoint();

// What a fifo listener has done so far, for tests and tools.
struct ListenerStats {
  uint64_t dropped_records = 0;  // connect records (or handshakes) refused, for any reason
  uint64_t accepted = 0;         // connections handed out by Accept
};
// nullopt for a listener of another transport.
std::optional<ListenerStats> StatsOf(const Listener& listener);

}  // namespace courier::transport::fifo
