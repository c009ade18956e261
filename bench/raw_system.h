// What the raw floors share (raw_system.cc): the message layout, abstract UNIX addresses, and
// the byte-stream echo, which raw_ipc.cc also carries over pipes and FIFOs. Each message is a
// 4-byte little-endian length and that many bytes.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "bench/system.h"

namespace courier::bench {

inline constexpr size_t kLengthSize = 4;
// The one-way stream (issue #11's floor): a request is this length value, then the 4-byte
// message size and the 4-byte duration in milliseconds; the server answers with messages of that
// size back to back (written in batches of about 64 KiB), then this length value alone, and goes
// back to echoing.
inline constexpr uint32_t kStreamMarker = 0xffffffff;
inline constexpr size_t kStreamRequestSize = 3 * kLengthSize;
void PutLength(char* at, uint32_t length);
uint32_t GetLength(const char* at);

// The abstract UNIX socket address for `name` (truncated to fit), and its length.
std::pair<sockaddr_un, socklen_t> AbstractAddress(const std::string& name);

// Server side of one connection: reads from `in` and writes every complete message back to
// `out` (the same descriptor for a socket) with one blocking write, until `in` ends or fails;
// a one-way stream request (kStreamMarker) is answered with its stream.
// Takes ownership of both and closes them.
void EchoStream(int in, int out);

// A client of EchoStream that writes requests to `out` and reads replies from `in` (the same
// descriptor for a socket): blocking I/O for one call in flight, a poll() loop for N. Takes
// ownership of both.
std::unique_ptr<EchoClient> NewStreamClient(int in, int out);
inline std::unique_ptr<EchoClient> NewStreamClient(int fd) { return NewStreamClient(fd, fd); }

}  // namespace courier::bench
