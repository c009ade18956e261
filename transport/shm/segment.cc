#include "transport/shm/segment.h"

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "asio/error.hpp"
#include "transport/internal/rendezvous.h"
#include "transport/status.h"

namespace courier::transport::shm {
namespace {

using internal::OctalMode;
using internal::RendezvousDirectory;

// What Create writes at offset 0. Nobody reads it back to find the geometry (that comes from
// the handshake); Adopt only checks the magic, for a clearer error than a broken ring.
struct SegmentHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t ring_capacity;
};
static_assert(sizeof(SegmentHeader) <= kSegmentHeaderBytes);
static_assert(kServerToClientControl + sizeof(RingControl) <= kRingDataOffset);

constexpr unsigned kRequiredSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;
// F_SEAL_EXEC (Linux 6.3; glibc 2.36 lacks it) only stops chmod of the exec bits, and the
// kernel adds it to every memfd when vm.memfd_noexec is set: harmless, so tolerated. Any other
// seal (F_SEAL_WRITE, F_SEAL_FUTURE_WRITE, one we do not know) is refused.
constexpr unsigned kSealExec = 0x0020;
constexpr unsigned kAllowedSeals = kRequiredSeals | kSealExec;

// The most descriptors one SCM_RIGHTS message carries (the kernel's SCM_MAX_FD).
// sun_path holds 108 bytes, one of them for the terminating NUL.
constexpr size_t kMaxSunPath = sizeof(sockaddr_un::sun_path) - 1;
constexpr size_t kMaxRendezvousName = 64;

// For allocations: running out of memory or descriptors is kResourceExhausted.
absl::Status AllocationStatus(int error, std::string_view what) {
  if (error == ENOMEM || error == EMFILE || error == ENFILE) {
    return absl::ResourceExhaustedError(absl::StrCat(
        AsAbsl(what), ": ", asio::error_code(error, asio::system_category()).message()));
  }
  return ErrnoStatus(error, what);
}

// What /proc/self/fd says `fd` is ("anon_inode:[eventfd]", "/memfd:courier-shm (deleted)", …);
// empty if it cannot be read.
std::string FdTarget(int fd) {
  char target[256];
  ssize_t n = ::readlink(absl::StrCat("/proc/self/fd/", fd).c_str(), target, sizeof(target));
  if (n <= 0) return "";
  return std::string(target, static_cast<size_t>(n));
}

// The value on the "key:" line of /proc/self/fdinfo/<fd>; nullopt if there is none.
std::optional<std::string> FdInfo(int fd, std::string_view key) {
  UniqueFd info(::open(absl::StrCat("/proc/self/fdinfo/", fd).c_str(), O_RDONLY | O_CLOEXEC));
  if (!info) return std::nullopt;
  std::string text;
  char chunk[1024];
  ssize_t n;
  while ((n = ::read(info.get(), chunk, sizeof(chunk))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) text.append(chunk, static_cast<size_t>(n));
  }
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::ConsumePrefix(&line, AsAbsl(key)) && absl::ConsumePrefix(&line, ":")) {
      return std::string(absl::StripAsciiWhitespace(line));
    }
  }
  return std::nullopt;
}

// True if the two descriptors are the same eventfd (a peer may send one eventfd twice: two
// descriptor numbers, one object). fdinfo's eventfd-id (Linux 5.2) says it; else kcmp, where
// seccomp allows it. When neither can tell we accept: a peer sharing one eventfd between both
// sides can only stall its own connection, which it can do anyway.
bool SameEventfd(int a, int b) {
  std::optional<std::string> id_a = FdInfo(a, "eventfd-id");
  std::optional<std::string> id_b = FdInfo(b, "eventfd-id");
  if (id_a && id_b) return *id_a == *id_b;
  pid_t self = ::getpid();
  return ::syscall(SYS_kcmp, self, self, KCMP_FILE, a, b) == 0;
}

// Checks that `fd` is an eventfd counter (not a semaphore) and makes it non-blocking (the flag
// lives in the open file, shared with the peer, which created it non-blocking already), since
// Ring and Drain must never block.
absl::Status CheckBell(int fd, std::string_view which) {
  std::string what = absl::StrCat("shm segment: ", AsAbsl(which), " bell (fd ", fd, ")");
  std::string target = FdTarget(fd);
  if (target != "anon_inode:[eventfd]") {
    return absl::PermissionDeniedError(absl::StrCat(what, " is not an eventfd (it is ",
                                                    target.empty() ? "unreadable" : target, ")"));
  }
  if (FdInfo(fd, "eventfd-semaphore") == "1") {
    return absl::PermissionDeniedError(absl::StrCat(what, " is a semaphore eventfd"));
  }
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) return ErrnoStatus(errno, what);
  if ((flags & O_NONBLOCK) == 0 && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoStatus(errno, absl::StrCat(what, ": set O_NONBLOCK"));
  }
  return absl::OkStatus();
}

std::array<std::byte, 16> EncodeHello(uint32_t capacity) {
  std::array<std::byte, 16> out;
  std::memcpy(out.data(), &kSegmentMagic, 8);
  std::memcpy(out.data() + 8, &kSegmentVersion, 4);
  std::memcpy(out.data() + 12, &capacity, 4);
  return out;
}

// The capacity field of a hello, after checking its size, magic and version.
absl::StatusOr<uint32_t> DecodeHello(std::span<const std::byte> bytes, std::string_view which) {
  std::string what = absl::StrCat("shm ", AsAbsl(which));
  if (bytes.size() != 16) {
    return absl::DataLossError(absl::StrCat(what, ": ", bytes.size(), " bytes, want 16"));
  }
  uint64_t magic;
  uint32_t version, capacity;
  std::memcpy(&magic, bytes.data(), 8);
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&capacity, bytes.data() + 12, 4);
  if (magic != kSegmentMagic) {
    return absl::DataLossError(absl::StrFormat("%s: bad magic 0x%016x", what, magic));
  }
  if (version != kSegmentVersion) {
    return absl::DataLossError(
        absl::StrCat(what, ": version ", version, ", want ", kSegmentVersion));
  }
  return capacity;
}

bool ValidRendezvousName(std::string_view name) {
  if (name.empty() || name.size() > kMaxRendezvousName || name[0] == '.') return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<Segment> Segment::Create(size_t ring_capacity) {
  if (!IsValidRingCapacity(ring_capacity)) {
    return absl::InvalidArgumentError(absl::StrCat("shm segment: ring capacity ", ring_capacity,
                                                   " is not a power of two in [", kMinRingCapacity,
                                                   ", ", kMaxRingCapacity, "]"));
  }
  const size_t bytes = SegmentBytes(ring_capacity);
  Segment segment;
  segment.ring_capacity_ = ring_capacity;
  segment.memfd_ = UniqueFd(::memfd_create("courier-shm", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!segment.memfd_) return AllocationStatus(errno, "shm segment: memfd_create");
  int fd = segment.memfd_.get();
  if (::ftruncate(fd, static_cast<off_t>(bytes)) != 0) {
    return AllocationStatus(errno, absl::StrCat("shm segment: ftruncate to ", bytes));
  }
  if (::fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return ErrnoStatus(errno, "shm segment: seal memfd");
  }
  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return AllocationStatus(errno, "shm segment: mmap");
  segment.base_ = static_cast<std::byte*>(base);
  segment.bytes_ = bytes;

  SegmentHeader header{kSegmentMagic, kSegmentVersion, static_cast<uint32_t>(ring_capacity)};
  std::memcpy(segment.base_, &header, sizeof(header));
  InitRing(segment.client_to_server_control());
  InitRing(segment.server_to_client_control());

  segment.server_bell_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!segment.server_bell_) return AllocationStatus(errno, "shm segment: eventfd");
  segment.client_bell_ = UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!segment.client_bell_) return AllocationStatus(errno, "shm segment: eventfd");
  return segment;
}

absl::StatusOr<Segment> Segment::Adopt(UniqueFd memfd, UniqueFd server_bell, UniqueFd client_bell,
                                       size_t ring_capacity) {
  if (!IsValidRingCapacity(ring_capacity)) {
    return absl::InvalidArgumentError(absl::StrCat("shm segment: ring capacity ", ring_capacity,
                                                   " is not a power of two in [", kMinRingCapacity,
                                                   ", ", kMaxRingCapacity, "]"));
  }
  const size_t bytes = SegmentBytes(ring_capacity);
  int fd = memfd.get();
  std::string what = absl::StrCat("shm segment: memfd (fd ", fd, ")");
  // Only a memfd (shmem or hugetlbfs) has seals; anything else fails with EINVAL.
  int seals = ::fcntl(fd, F_GET_SEALS);
  if (seals < 0) {
    std::string target = FdTarget(fd);
    return absl::PermissionDeniedError(absl::StrCat(
        what, " is not a sealable memfd (it is ", target.empty() ? "unreadable" : target, ": ",
        asio::error_code(errno, asio::system_category()).message(), ")"));
  }
  unsigned have = static_cast<unsigned>(seals);
  if ((have & kRequiredSeals) != kRequiredSeals || (have & ~kAllowedSeals) != 0) {
    return absl::PermissionDeniedError(
        absl::StrFormat("%s: seals 0x%x, want shrink|grow|seal (0x%x) and no write seal", what,
                        have, kRequiredSeals));
  }
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, what);
  if (!S_ISREG(st.st_mode) || st.st_size < 0 || static_cast<size_t>(st.st_size) != bytes) {
    return absl::DataLossError(absl::StrCat(what, ": size ", st.st_size, ", want ", bytes,
                                            " for ring capacity ", ring_capacity));
  }
  if (absl::Status s = CheckBell(server_bell.get(), "server"); !s.ok()) return s;
  if (absl::Status s = CheckBell(client_bell.get(), "client"); !s.ok()) return s;
  if (SameEventfd(server_bell.get(), client_bell.get())) {
    return absl::PermissionDeniedError(absl::StrCat("shm segment: server bell (fd ",
                                                    server_bell.get(), ") and client bell (fd ",
                                                    client_bell.get(), ") are the same eventfd"));
  }

  void* base = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) return AllocationStatus(errno, absl::StrCat(what, ": mmap"));
  Segment segment;
  segment.base_ = static_cast<std::byte*>(base);
  segment.bytes_ = bytes;
  segment.ring_capacity_ = ring_capacity;
  segment.memfd_ = std::move(memfd);
  segment.server_bell_ = std::move(server_bell);
  segment.client_bell_ = std::move(client_bell);
  uint64_t magic;
  std::memcpy(&magic, segment.base_, sizeof(magic));
  if (magic != kSegmentMagic) {
    return absl::DataLossError(
        absl::StrFormat("%s: no courier segment header (magic 0x%016x)", what, magic));
  }
  return segment;
}

Segment::Segment(Segment&& other) noexcept
    : base_(std::exchange(other.base_, nullptr)),
      bytes_(std::exchange(other.bytes_, 0)),
      ring_capacity_(std::exchange(other.ring_capacity_, 0)),
      memfd_(std::move(other.memfd_)),
      server_bell_(std::move(other.server_bell_)),
      client_bell_(std::move(other.client_bell_)) {}

Segment& Segment::operator=(Segment&& other) noexcept {
  if (this != &other) {
    if (base_ != nullptr) ::munmap(base_, bytes_);
    base_ = std::exchange(other.base_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
    ring_capacity_ = std::exchange(other.ring_capacity_, 0);
    memfd_ = std::move(other.memfd_);
    server_bell_ = std::move(other.server_bell_);
    client_bell_ = std::move(other.client_bell_);
  }
  return *this;
}

Segment::~Segment() {
  if (base_ != nullptr) ::munmap(base_, bytes_);
}

RingControl* Segment::client_to_server_control() const {
  return reinterpret_cast<RingControl*>(base_ + kClientToServerControl);
}
RingControl* Segment::server_to_client_control() const {
  return reinterpret_cast<RingControl*>(base_ + kServerToClientControl);
}
std::byte* Segment::client_to_server_data() const { return base_ + kRingDataOffset; }
std::byte* Segment::server_to_client_data() const {
  return base_ + kRingDataOffset + ring_capacity_;
}

RingWriter Segment::WriterFor(bool server_side) const {
  return server_side
             ? RingWriter(server_to_client_control(), server_to_client_data(), ring_capacity_)
             : RingWriter(client_to_server_control(), client_to_server_data(), ring_capacity_);
}

RingReader Segment::ReaderFor(bool server_side) const {
  return server_side
             ? RingReader(client_to_server_control(), client_to_server_data(), ring_capacity_)
             : RingReader(server_to_client_control(), server_to_client_data(), ring_capacity_);
}

void Ring(int bell) {
  const uint64_t one = 1;
  while (::write(bell, &one, sizeof(one)) < 0 && errno == EINTR) {
  }
}

bool Drain(int bell) {
  uint64_t count = 0;
  ssize_t n;
  do {
    n = ::read(bell, &count, sizeof(count));
  } while (n < 0 && errno == EINTR);
  return n == static_cast<ssize_t>(sizeof(count)) && count > 0;
}

std::array<std::byte, 16> Encode(const ClientHello& hello) {
  return EncodeHello(hello.requested_ring_capacity);
}
std::array<std::byte, 16> Encode(const ServerHello& hello) {
  return EncodeHello(hello.ring_capacity);
}

absl::StatusOr<ClientHello> DecodeClientHello(std::span<const std::byte> bytes) {
  absl::StatusOr<uint32_t> capacity = DecodeHello(bytes, "client hello");
  if (!capacity.ok()) return capacity.status();
  return ClientHello{*capacity};
}

absl::StatusOr<ServerHello> DecodeServerHello(std::span<const std::byte> bytes) {
  absl::StatusOr<uint32_t> capacity = DecodeHello(bytes, "server hello");
  if (!capacity.ok()) return capacity.status();
  return ServerHello{*capacity};
}

absl::StatusOr<std::string> RendezvousPath(std::string_view name, bool create_directory) {
  if (!ValidRendezvousName(name)) {
    return absl::InvalidArgumentError(
        absl::StrCat("shm name '", AsAbsl(name), "': want 1 to ", kMaxRendezvousName,
                     " bytes of [A-Za-z0-9._-], not starting with '.'"));
  }
  absl::StatusOr<std::string> dir = RendezvousDirectory(create_directory);
  if (!dir.ok()) return dir.status();
  std::string path = absl::StrCat(*dir, "/", AsAbsl(name), ".sock");
  if (path.size() > kMaxSunPath) {
    return absl::InvalidArgumentError(absl::StrCat("shm rendezvous socket ", path, ": ",
                                                   path.size(), " bytes is longer than the ",
                                                   kMaxSunPath, " a UNIX socket address holds"));
  }
  return path;
}

absl::Status CheckRendezvousSocket(const std::string& path) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
  std::string dir_what = absl::StrCat("shm rendezvous directory ", dir);
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return absl::UnavailableError(absl::StrCat(dir_what, ": does not exist"));
    return ErrnoStatus(errno, dir_what);
  }
  if (S_ISLNK(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(dir_what, ": is a symlink"));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(dir_what, ": is not a directory"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(
        absl::StrCat(dir_what, ": owned by uid ", st.st_uid, ", not us (uid ", ::geteuid(), ")"));
  }
  if ((st.st_mode & 022) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(dir_what, ": mode ", OctalMode(st.st_mode), " lets group/others write in it"));
  }

  std::string what = absl::StrCat("shm rendezvous socket ", path);
  if (::lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) {
      return absl::UnavailableError(absl::StrCat(what, ": does not exist (no server)"));
    }
    return ErrnoStatus(errno, what);
  }
  if (S_ISLNK(st.st_mode)) return absl::PermissionDeniedError(absl::StrCat(what, ": is a symlink"));
  if (!S_ISSOCK(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(what, ": is not a socket"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, ": owned by uid ", st.st_uid, ", not us (uid ", ::geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(
        absl::StrCat(what, ": mode ", OctalMode(st.st_mode), " lets group/others in (want 0600)"));
  }
  return absl::OkStatus();
}

}  // namespace courier::transport::shm
