// The udp:// datagram header (PROTOCOL.md §12 has the full rules), pure: no I/O, so tests and
// fuzz targets need no sockets. Every datagram is one fixed 48-byte header, then (DATA only) the
// payload; integers little-endian:
//   0 u32 magic 0x31445543 ("CUD1") | 4 u8 type | 5 u8 flags (0) | 6 u16 reserved (0)
//   8 u64 session (client's) | 16 u64 incarnation (server's) | 24 u32 seq | 28 u32 ack
//   32 u32 window (bytes) | 36 u32 reserved (0) | 40 u64 aux: the SACK bitmap (bit i: seq ack+1+i
//   received) in DATA/ACK/PROBE/FIN, the cookie in COOKIE/OPEN, 0 otherwise
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "absl/status/statusor.h"

namespace courier::transport::udp {

inline constexpr uint32_t kMagic = 0x31445543;  // "CUD1" as bytes on the wire
inline constexpr size_t kHeaderSize = 48;
// The largest UDP payload: IPv4 (65535 - 20 - 8), IPv6 (65535 - 8).
inline constexpr size_t kMaxUdpPayloadV4 = 65507;
inline constexpr size_t kMaxUdpPayloadV6 = 65527;

enum class Type : uint8_t {
  kHello = 1,    // client → server: session
  kCookie = 2,   // server → client: incarnation, aux = cookie (the server keeps no state)
  kOpen = 3,     // client → server: echoes incarnation and cookie; the server creates state
  kOpenAck = 4,  // server → client: the connection exists
  kData = 5,     // seq'd payload, with the sender's ack/window/SACK piggybacked
  kAck = 6,      // ack = next seq expected, window, aux = SACK bitmap
  kProbe = 7,    // liveness; answered by an ACK
  kFin = 8,      // clean close, seq'd like DATA, no payload
  kReset = 9,    // "I do not know this session": echoes the session, carries our incarnation
};

struct Header {
  Type type = Type::kAck;
  uint64_t session = 0;
  uint64_t incarnation = 0;
  uint32_t seq = 0;
  uint32_t ack = 0;
  uint32_t window = 0;
  uint64_t aux = 0;
  friend bool operator==(const Header&, const Header&) = default;
};

struct Datagram {
  Header header;
  std::span<const std::byte> payload;  // points into the decoded bytes; non-empty only for DATA
};

void EncodeHeader(const Header& header, std::span<std::byte, kHeaderSize> out);

// kDataLoss naming the problem: shorter than the header, bad magic, unknown type, nonzero flags
// or reserved fields, a payload on anything but DATA, DATA without payload, DATA/FIN with seq 0.
absl::StatusOr<Datagram> DecodeDatagram(std::span<const std::byte> bytes);

// SipHash-2-4 of `data` under a 128-bit key: the stateless cookie's keyed hash.
uint64_t SipHash24(const uint64_t key[2], std::span<const std::byte> data);

}  // namespace courier::transport::udp
