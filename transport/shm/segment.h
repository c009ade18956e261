// What a shm:// connection is made of, apart from its rings: the memfd segment that holds them,
// the two eventfds (one doorbell per side), the handshake that passes them over the rendezvous
// UNIX socket with SCM_RIGHTS, and the per-user rendezvous directory. Transport-layer internals
// (transport/shm/ only, and its tests).
//
// Segment layout (all offsets fixed by ring_capacity, never read back from the segment):
//   [0, 4096)              SegmentHeader (magic, version, ring_capacity: for tools; the peer's
//                          copy is what the handshake said, checked against the memfd's size)
//   [4096, 4096+256)       RingControl client→server
//   [4352, 4352+256)       RingControl server→client
//   [8192, 8192+cap)       data, client→server
//   [8192+cap, 8192+2cap)  data, server→client
// The server creates it per connection: memfd_create(MFD_CLOEXEC|MFD_ALLOW_SEALING), ftruncate,
// then seals F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL, so neither side can make the other's mapping
// fault (SIGBUS) by shrinking the file.
//
// Handshake (over the connected rendezvous socket, each message one sendmsg):
//   client → server  ClientHello {u64 magic, u32 version, u32 requested ring capacity (0: the
//                    server's choice)}
//   server → client  ServerHello {u64 magic, u32 version, u32 ring capacity} with SCM_RIGHTS
//                    [memfd, server's eventfd, client's eventfd]. A server that refuses (a
//                    client of another user, too many handshakes at once) closes instead.
// The client checks every received descriptor: the memfd must carry exactly those seals (plus,
// tolerated, F_SEAL_EXEC, which vm.memfd_noexec adds to every memfd) and the expected size, each
// eventfd must be an eventfd (/proc/self/fd says "anon_inode:[eventfd]") and the two distinct;
// anything else is refused (kPermissionDenied / kDataLoss) and every received fd closed.
#pragma once

#include <sys/types.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "transport/internal/fd.h"
#include "transport/internal/rendezvous.h"
#include "transport/shm/ring.h"

namespace courier::transport::shm {

using internal::Received;
using internal::ReceiveWithFds;
using internal::SendWithFds;
using internal::UniqueFd;

inline constexpr uint64_t kSegmentMagic = 0x31524d4853524f43;  // "CORSHMR1", little-endian
inline constexpr uint32_t kSegmentVersion = 1;
inline constexpr size_t kSegmentHeaderBytes = 4096;
inline constexpr size_t kClientToServerControl = 4096;
inline constexpr size_t kServerToClientControl = 4096 + sizeof(RingControl);
inline constexpr size_t kRingDataOffset = 8192;

// Total memfd size for two rings of `ring_capacity` bytes.
constexpr size_t SegmentBytes(size_t ring_capacity) { return kRingDataOffset + 2 * ring_capacity; }

// A mapped segment and its doorbells; owns the mapping and the three descriptors.
class Segment {
 public:
  // Server side: a fresh sealed memfd of SegmentBytes(ring_capacity), mapped, header written,
  // both RingControls initialised, and two fresh non-blocking eventfds. kInvalidArgument if the
  // capacity is not IsValidRingCapacity; kResourceExhausted when the kernel says ENOMEM, EMFILE
  // or ENFILE.
  static absl::StatusOr<Segment> Create(size_t ring_capacity);
  // Client side: checks the descriptors received in the handshake (see above) and maps the
  // memfd. Takes ownership of all three whatever the outcome. kInvalidArgument for a capacity
  // that is not IsValidRingCapacity; kPermissionDenied for a descriptor of the wrong kind or
  // seals, or one eventfd given as both bells; kDataLoss for a memfd whose size is not
  // SegmentBytes(ring_capacity) or that holds no segment header. Makes the bells non-blocking.
  static absl::StatusOr<Segment> Adopt(UniqueFd memfd, UniqueFd server_bell, UniqueFd client_bell,
                                       size_t ring_capacity);

  Segment(Segment&& other) noexcept;
  Segment& operator=(Segment&& other) noexcept;
  ~Segment();  // unmaps and closes

  size_t ring_capacity() const { return ring_capacity_; }
  RingControl* client_to_server_control() const;
  RingControl* server_to_client_control() const;
  std::byte* client_to_server_data() const;
  std::byte* server_to_client_data() const;
  // The ring one side writes (server→client for the server) and the one it reads.
  RingWriter WriterFor(bool server_side) const;
  RingReader ReaderFor(bool server_side) const;
  int memfd() const { return memfd_.get(); }
  // The eventfd the server sleeps on (the client rings it), and the one the client sleeps on.
  int server_bell() const { return server_bell_.get(); }
  int client_bell() const { return client_bell_.get(); }
  // Once the handshake is done a side needs neither the memfd (the mapping stays) nor its own
  // bell in the segment (its reactor takes it): a connection then holds three descriptors, the
  // rendezvous socket and the two bells.
  void CloseMemfd() { memfd_ = UniqueFd(); }
  UniqueFd TakeServerBell() { return std::move(server_bell_); }
  UniqueFd TakeClientBell() { return std::move(client_bell_); }

 private:
  Segment() = default;
  std::byte* base_ = nullptr;
  size_t bytes_ = 0;
  size_t ring_capacity_ = 0;
  UniqueFd memfd_, server_bell_, client_bell_;
};

// Rings `bell` (adds 1 to the eventfd; EAGAIN at the counter's limit is fine: it is rung).
void Ring(int bell);
// Resets `bell` to 0 (non-blocking read); true if it had been rung.
bool Drain(int bell);

// The handshake messages, 16 bytes each on the wire (host byte order: both ends share a host).
struct ClientHello {
  uint32_t requested_ring_capacity = 0;  // 0: the server's choice
};
struct ServerHello {
  uint32_t ring_capacity = 0;  // 0: refused
};
std::array<std::byte, 16> Encode(const ClientHello& hello);
std::array<std::byte, 16> Encode(const ServerHello& hello);
// kDataLoss on a short message, a bad magic or an unknown version.
absl::StatusOr<ClientHello> DecodeClientHello(std::span<const std::byte> bytes);
absl::StatusOr<ServerHello> DecodeServerHello(std::span<const std::byte> bytes);

// The per-user rendezvous directory (transport/internal/rendezvous.h, shared with fifo://).
using internal::RendezvousDirectory;
// Where the socket for `name` lives: RendezvousDirectory()/<name>.sock. `name` is 1 to 64 bytes
// of [A-Za-z0-9._-] not starting with '.', else kInvalidArgument (also for a path too long for
// a UNIX socket address); RendezvousDirectory's errors otherwise.
absl::StatusOr<std::string> RendezvousPath(std::string_view name, bool create_directory);
// A client's check before connecting to an existing socket file: it must be a socket (not a
// symlink) owned by us with no group/other permission bits, in a directory that is ours and not
// writable by group or others. kPermissionDenied naming the problem; kUnavailable if missing.
absl::Status CheckRendezvousSocket(const std::string& path);

}  // namespace courier::transport::shm
