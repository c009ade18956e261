// pipe:// — a connection over two anonymous pipes, one per direction (internal/fd_stream.h): a
// reliable byte stream without message boundaries or a size limit of its own. Three forms:
//
//   pipe://stdio     This process's stdin (read) and stdout (write), for a process that was
//                    started by its peer (inetd style, or the spawn form below). Listen returns a
//                    listener whose first Accept yields that one connection; later Accepts wait
//                    until Close() (kCancelled). Connect gives the same connection to a client
//                    that was spawned by a server. The transport takes close-on-exec copies of
//                    fds 0 and 1, then points fd 1 at stderr and fd 0 at /dev/null, so a stray
//                    printf or std::cout (also what was still buffered) goes to stderr instead
//                    of corrupting the stream. Once per process: a second Listen or Connect on
//                    stdio is kAlreadyExists. Reach kParentChild; no credentials.
//
//   pipe://@NAME     For tests and for pipes between unrelated processes of one user. Listen
//                    binds the abstract UNIX socket "@courier-pipe-NAME" (NAME at most 93 bytes).
//                    Connect dials it, makes two pipes, sends the server its ends (the read end
//                    of client→server, the write end of server→client) in one message with the
//                    8-byte hello "CORPIPE1", and closes the socket: from then on the connection
//                    is the pipes alone. The server drops (closes) a rendezvous whose peer is
//                    another user (SO_PEERCRED), that says anything else, or whose descriptors
//                    are not exactly two pipes with those access modes. Peer credentials come
//                    from SO_PEERCRED of the rendezvous socket. Reach kSameHost.
//
//   pipe://PROGRAM ARG...   Any other address is a command line: Connect spawns it (posix_spawnp,
//                    so a PROGRAM without a '/' is searched in PATH) with its stdin and stdout on
//                    the connection's pipes and stderr inherited; no other descriptor reaches the
//                    child, SIGPIPE is reset to its default there and the signal mask cleared.
//                    Words are split on unquoted spaces and tabs; quoting is POSIX sh's without
//                    any expansion: '...' is literal, "..." takes \" and \\ as escapes (any other
//                    backslash is kept), and outside quotes a backslash escapes the next
//                    character. An unterminated quote, a trailing backslash or an empty command
//                    is kInvalidArgument; Listen on a command line is kInvalidArgument. A program
//                    that cannot be started is kUnavailable naming it. The connection owns the
//                    child: Close() (or destruction) closes our pipe ends, and the child is
//                    reaped without blocking the reactor; one still running 100 ms after its
//                    stdin closed gets SIGTERM (a server on pipe://stdio outlives its one peer;
//                    SIGTERM asks it to shut down), and SIGKILL 2 s later. When the child's stdout
//                    ends and it exited other than with status 0, the read is kUnavailable naming
//                    the child and how it ended. Peer "pipe://PROGRAM (pid N)" with credentials
//                    {pid, our uid, our gid}. Reach kParentChild.
//
// Bounds: a @NAME listener has at most 64 rendezvous in progress or waiting for Accept (more are
// closed at once, so those clients read end of stream), each dropped after 2 s without its
// hello; one rendezvous message is 8 bytes and 2 descriptors (more: dropped). A pipe holds what
// the kernel gives it (64 KiB by default); nothing here buffers on a peer's behalf.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::pipe {

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// A fresh name, pipe://@courier-<pid>-<n>.
Endpoint LoopbackEndpoint();

// The words of a spawn-form command line, split and unquoted as described above.
absl::StatusOr<std::vector<std::string>> SplitCommandLine(std::string_view command);

}  // namespace courier::transport::pipe
