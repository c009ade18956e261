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
void PutLength(char* at, uint32_t length);
uint32_t GetLength(const char* at);

// The abstract UNIX socket address for `name` (truncated to fit), and its length.
std::pair<sockaddr_un, socklen_t> AbstractAddress(const std::string& name);

// Server side of one connection: reads from `in` and writes every complete message back to
// `out` (the same descriptor for a socket) with one blocking write, until `in` ends or fails.
// Takes ownership of both and closes them.
void EchoStream(int in, int out);

// A client of EchoStream that writes requests to `out` and reads replies from `in` (the same
// descriptor for a socket): blocking I/O for one call in flight, a poll() loop for N. Takes
// ownership of both.
std::unique_ptr<EchoClient> NewStreamClient(int in, int out);
inline std::unique_ptr<EchoClient> NewStreamClient(int fd) { return NewStreamClient(fd, fd); }

}  // namespace courier::bench
