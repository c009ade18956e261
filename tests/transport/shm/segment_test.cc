// shm:// segment pieces: the sealed memfd and its checks on adoption, doorbells, handshake
// messages, descriptor passing, and the rendezvous directory and socket checks.
#include "transport/shm/segment.h"

#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/scoped_env.h"
#include "tests/testing/status_matchers.h"
#include "transport/shm/ring.h"

namespace courier::transport::shm {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t kCapacity = 64 << 10;

// Descriptors open in this process, from /proc/self/fd (the directory's own fd excluded).
size_t OpenFdCount() {
  size_t count = 0;
  for (const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) {
    (void)entry;
    ++count;
  }
  return count - 1;
}

bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) >= 0; }

UniqueFd Dup(int fd) { return UniqueFd(::fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

UniqueFd NewEventfd() { return UniqueFd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)); }

// A memfd of `bytes` with `seals` added (none if 0).
UniqueFd NewMemfd(size_t bytes, unsigned seals) {
  UniqueFd fd(::memfd_create("segment-test", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  EXPECT_TRUE(fd);
  EXPECT_EQ(::ftruncate(fd.get(), static_cast<off_t>(bytes)), 0);
  if (seals != 0) {
    EXPECT_EQ(::fcntl(fd.get(), F_ADD_SEALS, seals), 0) << std::strerror(errno);
  }
  return fd;
}

constexpr unsigned kSeals = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL;

struct SocketPair {
  UniqueFd a, b;
};
SocketPair NewSocketPair() {
  int fds[2];
  EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds), 0);
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// A per-test directory under the system temp dir, removed afterwards.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::temp_directory_path() / "segment-test-XXXXXX");
    char* made = ::mkdtemp(pattern.data());
    EXPECT_NE(made, nullptr);
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

using ::courier::testing::ScopedEnv;

// Binds a UNIX socket file at `path` with `mode`; the socket stays open while the result lives.
UniqueFd BindSocket(const std::string& path, mode_t mode) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0)
      << std::strerror(errno);
  EXPECT_EQ(::chmod(path.c_str(), mode), 0);
  return fd;
}

absl::StatusOr<Segment> AdoptDups(const Segment& segment, size_t capacity = kCapacity) {
  return Segment::Adopt(Dup(segment.memfd()), Dup(segment.server_bell()),
                        Dup(segment.client_bell()), capacity);
}

TEST(Segment, CreateGivesSealedMemfdOfTheRightSize) {
  absl::StatusOr<Segment> segment = Segment::Create(kCapacity);
  ASSERT_THAT(segment, IsOk());
  EXPECT_EQ(segment->ring_capacity(), kCapacity);
  int fd = segment->memfd();
  struct stat st;
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), SegmentBytes(kCapacity));
  int seals = ::fcntl(fd, F_GET_SEALS);
  // vm.memfd_noexec may add F_SEAL_EXEC (0x20); nothing else.
  EXPECT_EQ(seals & ~0x20, static_cast<int>(kSeals));
  EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0);

  EXPECT_EQ(::ftruncate(fd, static_cast<off_t>(SegmentBytes(kCapacity) * 2)), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::ftruncate(fd, 4096), -1);
  EXPECT_EQ(errno, EPERM);
  EXPECT_EQ(::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE), -1);  // F_SEAL_SEAL: no more seals
  EXPECT_EQ(errno, EPERM);
  ASSERT_EQ(::fstat(fd, &st), 0);
  EXPECT_EQ(static_cast<size_t>(st.st_size), SegmentBytes(kCapacity));

  // The layout of segment.h.
  std::byte* base =
      reinterpret_cast<std::byte*>(segment->client_to_server_control()) - kClientToServerControl;
  uint64_t magic;
  std::memcpy(&magic, base, sizeof(magic));
  EXPECT_EQ(magic, kSegmentMagic);
  EXPECT_EQ(reinterpret_cast<std::byte*>(segment->server_to_client_control()),
            base + kServerToClientControl);
  EXPECT_EQ(segment->client_to_server_data(), base + kRingDataOffset);
  EXPECT_EQ(segment->server_to_client_data(), base + kRingDataOffset + kCapacity);
  EXPECT_EQ(segment->client_to_server_control()->tail.load(), 0u);
  EXPECT_EQ(segment->server_to_client_control()->head.load(), 0u);

  for (int bell : {segment->server_bell(), segment->client_bell()}) {
    EXPECT_NE(::fcntl(bell, F_GETFL) & O_NONBLOCK, 0);
    EXPECT_NE(::fcntl(bell, F_GETFD) & FD_CLOEXEC, 0);
  }
  EXPECT_NE(segment->server_bell(), segment->client_bell());
}

TEST(Segment, CreateRejectsInvalidCapacity) {
  EXPECT_THAT(Segment::Create(0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Segment::Create(kMinRingCapacity / 2), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Segment::Create(kCapacity + 8), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(Segment::Create(kMaxRingCapacity * 2), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Segment, AdoptAcceptsGenuineSegmentAndSharesItsMemory) {
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  absl::StatusOr<Segment> client = AdoptDups(*server);
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ(client->ring_capacity(), kCapacity);

  server->server_to_client_data()[kCapacity - 1] = std::byte{0x5a};
  EXPECT_EQ(client->server_to_client_data()[kCapacity - 1], std::byte{0x5a});
  client->client_to_server_data()[0] = std::byte{0xa5};
  EXPECT_EQ(server->client_to_server_data()[0], std::byte{0xa5});
  client->client_to_server_control()->tail.store(24);
  EXPECT_EQ(server->client_to_server_control()->tail.load(), 24u);

  Ring(client->server_bell());
  EXPECT_TRUE(Drain(server->server_bell()));
  EXPECT_FALSE(Drain(server->client_bell()));
}

TEST(Segment, AdoptMakesBlockingBellsNonBlocking) {
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  UniqueFd server_bell(::eventfd(0, EFD_CLOEXEC));
  UniqueFd client_bell(::eventfd(0, EFD_CLOEXEC));
  int server_fd = server_bell.get();
  absl::StatusOr<Segment> client = Segment::Adopt(Dup(server->memfd()), std::move(server_bell),
                                                  std::move(client_bell), kCapacity);
  ASSERT_THAT(client, IsOk());
  EXPECT_EQ(client->server_bell(), server_fd);
  EXPECT_NE(::fcntl(client->server_bell(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_NE(::fcntl(client->client_bell(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_FALSE(Drain(client->client_bell()));  // would hang if it still blocked
}

TEST(Segment, AdoptRefusesMemfdWithoutSeals) {
  EXPECT_THAT(
      Segment::Adopt(NewMemfd(SegmentBytes(kCapacity), 0), NewEventfd(), NewEventfd(), kCapacity),
      StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("seals")));
  // Some seals but not all of them.
  EXPECT_THAT(Segment::Adopt(NewMemfd(SegmentBytes(kCapacity), F_SEAL_SHRINK | F_SEAL_SEAL),
                             NewEventfd(), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("seals")));
  EXPECT_THAT(Segment::Adopt(NewMemfd(SegmentBytes(kCapacity), F_SEAL_SHRINK | F_SEAL_GROW),
                             NewEventfd(), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("seals")));
}

TEST(Segment, AdoptRefusesWriteSeals) {
  // The server could still map it writable only if it sealed after mapping; either way our
  // mapping would fail or be read-only: refused.
  EXPECT_THAT(Segment::Adopt(NewMemfd(SegmentBytes(kCapacity), kSeals | F_SEAL_WRITE), NewEventfd(),
                             NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("seals")));
  EXPECT_THAT(Segment::Adopt(NewMemfd(SegmentBytes(kCapacity), kSeals | F_SEAL_FUTURE_WRITE),
                             NewEventfd(), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("seals")));
}

TEST(Segment, AdoptRefusesWrongSize) {
  EXPECT_THAT(Segment::Adopt(NewMemfd(SegmentBytes(kCapacity) - 4096, kSeals), NewEventfd(),
                             NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("size")));
  // A genuine segment, but the capacity claimed is larger than what it was made for.
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  EXPECT_THAT(AdoptDups(*server, kCapacity * 2), StatusIs(absl::StatusCode::kDataLoss));
  EXPECT_THAT(AdoptDups(*server, kCapacity / 2), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(Segment, AdoptRefusesRegularFile) {
  TempDir dir;
  std::string path = dir.path() + "/segment";
  UniqueFd file(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(file);
  ASSERT_EQ(::ftruncate(file.get(), static_cast<off_t>(SegmentBytes(kCapacity))), 0);
  EXPECT_THAT(Segment::Adopt(std::move(file), NewEventfd(), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not a sealable memfd")));
  EXPECT_THAT(Segment::Adopt(NewEventfd(), NewEventfd(), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not a sealable memfd")));
  EXPECT_THAT(Segment::Adopt(UniqueFd(), NewEventfd(), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(Segment, AdoptRefusesBellsThatAreNotEventfds) {
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  int pipe_fds[2];
  ASSERT_EQ(::pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd pipe_read(pipe_fds[0]), pipe_write(pipe_fds[1]);
  EXPECT_THAT(Segment::Adopt(Dup(server->memfd()), std::move(pipe_read), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not an eventfd")));
  SocketPair sockets = NewSocketPair();
  EXPECT_THAT(Segment::Adopt(Dup(server->memfd()), NewEventfd(), std::move(sockets.a), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not an eventfd")));
  EXPECT_THAT(Segment::Adopt(Dup(server->memfd()), Dup(server->memfd()), NewEventfd(), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not an eventfd")));
  UniqueFd semaphore(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC | EFD_SEMAPHORE));
  EXPECT_THAT(Segment::Adopt(Dup(server->memfd()), NewEventfd(), std::move(semaphore), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(Segment, AdoptRefusesOneEventfdAsBothBells) {
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  // Two descriptors for one eventfd, as a peer sending the same fd twice would give us.
  EXPECT_THAT(Segment::Adopt(Dup(server->memfd()), Dup(server->server_bell()),
                             Dup(server->server_bell()), kCapacity),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("same eventfd")));
}

TEST(Segment, AdoptRefusesInvalidCapacity) {
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  EXPECT_THAT(AdoptDups(*server, 0), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(AdoptDups(*server, kCapacity + 8), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(AdoptDups(*server, kMaxRingCapacity * 2),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(Segment, AdoptRefusesMemfdWithoutHeader) {
  EXPECT_THAT(Segment::Adopt(NewMemfd(SegmentBytes(kCapacity), kSeals), NewEventfd(), NewEventfd(),
                             kCapacity),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("header")));
}

TEST(Segment, AdoptClosesEveryDescriptorWhenRefused) {
  size_t before = OpenFdCount();
  UniqueFd memfd = NewMemfd(SegmentBytes(kCapacity), 0);
  UniqueFd server_bell = NewEventfd();
  UniqueFd client_bell = NewEventfd();
  int fds[] = {memfd.get(), server_bell.get(), client_bell.get()};
  EXPECT_THAT(
      Segment::Adopt(std::move(memfd), std::move(server_bell), std::move(client_bell), kCapacity),
      StatusIs(absl::StatusCode::kPermissionDenied));
  for (int fd : fds) EXPECT_FALSE(IsOpen(fd)) << fd;
  EXPECT_EQ(OpenFdCount(), before);
}

TEST(Segment, MoveTransfersMappingAndDescriptors) {
  size_t before = OpenFdCount();
  {
    absl::StatusOr<Segment> created = Segment::Create(kCapacity);
    ASSERT_THAT(created, IsOk());
    int memfd = created->memfd();
    std::byte* data = created->client_to_server_data();
    Segment moved(*std::move(created));
    EXPECT_EQ(moved.memfd(), memfd);
    EXPECT_EQ(moved.client_to_server_data(), data);
    data[0] = std::byte{1};  // still mapped
    absl::StatusOr<Segment> other = Segment::Create(kCapacity);
    ASSERT_THAT(other, IsOk());
    int other_memfd = other->memfd();
    moved = *std::move(other);
    EXPECT_FALSE(IsOpen(memfd));
    EXPECT_EQ(moved.memfd(), other_memfd);
    EXPECT_EQ(moved.ring_capacity(), kCapacity);
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST(UniqueFd, ClosesOnDestructionAndMoves) {
  int raw = ::eventfd(0, EFD_CLOEXEC);
  {
    UniqueFd fd(raw);
    UniqueFd moved(std::move(fd));
    EXPECT_FALSE(fd);  // NOLINT(bugprone-use-after-move): moved-from is empty
    EXPECT_EQ(moved.get(), raw);
    UniqueFd assigned;
    assigned = std::move(moved);
    EXPECT_EQ(assigned.get(), raw);
    EXPECT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
  UniqueFd released(::eventfd(0, EFD_CLOEXEC));
  int fd = released.release();
  EXPECT_FALSE(released);
  EXPECT_TRUE(IsOpen(fd));
  ::close(fd);
}

TEST(Bell, RingThenDrain) {
  UniqueFd bell = NewEventfd();
  EXPECT_FALSE(Drain(bell.get()));
  Ring(bell.get());
  Ring(bell.get());
  EXPECT_TRUE(Drain(bell.get()));
  EXPECT_FALSE(Drain(bell.get()));  // drained to 0 by one read
}

TEST(Bell, RingAtTheCounterLimitIsFine) {
  UniqueFd bell = NewEventfd();
  const uint64_t max = 0xfffffffffffffffe;  // the largest value an eventfd holds
  ASSERT_EQ(::write(bell.get(), &max, sizeof(max)), 8);
  Ring(bell.get());  // EAGAIN: already rung
  EXPECT_TRUE(Drain(bell.get()));
  EXPECT_FALSE(Drain(bell.get()));
}

TEST(Hello, RoundTrip) {
  std::array<std::byte, 16> client = Encode(ClientHello{.requested_ring_capacity = 1 << 20});
  absl::StatusOr<ClientHello> client_back = DecodeClientHello(client);
  ASSERT_THAT(client_back, IsOk());
  EXPECT_EQ(client_back->requested_ring_capacity, 1u << 20);

  std::array<std::byte, 16> server = Encode(ServerHello{.ring_capacity = 0});
  absl::StatusOr<ServerHello> server_back = DecodeServerHello(server);
  ASSERT_THAT(server_back, IsOk());
  EXPECT_EQ(server_back->ring_capacity, 0u);

  // The wire layout: u64 magic, u32 version, u32 capacity, host order.
  uint64_t magic;
  uint32_t version, capacity;
  std::memcpy(&magic, client.data(), 8);
  std::memcpy(&version, client.data() + 8, 4);
  std::memcpy(&capacity, client.data() + 12, 4);
  EXPECT_EQ(magic, kSegmentMagic);
  EXPECT_EQ(version, kSegmentVersion);
  EXPECT_EQ(capacity, 1u << 20);
}

TEST(Hello, RejectsBadInput) {
  std::array<std::byte, 16> good = Encode(ServerHello{.ring_capacity = 4096});
  EXPECT_THAT(DecodeServerHello(std::span<const std::byte>(good).first(15)),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("15 bytes")));
  EXPECT_THAT(DecodeServerHello({}), StatusIs(absl::StatusCode::kDataLoss));
  std::array<std::byte, 17> longer{};
  std::memcpy(longer.data(), good.data(), good.size());
  EXPECT_THAT(DecodeServerHello(longer), StatusIs(absl::StatusCode::kDataLoss));

  std::array<std::byte, 16> bad_magic = good;
  bad_magic[0] ^= std::byte{1};
  EXPECT_THAT(DecodeServerHello(bad_magic),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("magic")));
  EXPECT_THAT(DecodeClientHello(bad_magic), StatusIs(absl::StatusCode::kDataLoss));

  std::array<std::byte, 16> bad_version = good;
  bad_version[8] = std::byte{2};
  EXPECT_THAT(DecodeServerHello(bad_version),
              StatusIs(absl::StatusCode::kDataLoss, HasSubstr("version")));
  EXPECT_THAT(DecodeClientHello(bad_version), StatusIs(absl::StatusCode::kDataLoss));
}

TEST(SendWithFds, PassesThreeDescriptorsThatWork) {
  SocketPair sockets = NewSocketPair();
  absl::StatusOr<Segment> server = Segment::Create(kCapacity);
  ASSERT_THAT(server, IsOk());
  std::array<std::byte, 16> hello = Encode(ServerHello{.ring_capacity = kCapacity});
  const int fds[] = {server->memfd(), server->server_bell(), server->client_bell()};
  absl::StatusOr<size_t> sent = SendWithFds(sockets.a.get(), hello, fds);
  ASSERT_THAT(sent, IsOk());
  EXPECT_EQ(*sent, hello.size());

  std::array<std::byte, 16> into{};
  absl::StatusOr<Received> got = ReceiveWithFds(sockets.b.get(), into, 3);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->bytes, 16u);
  EXPECT_FALSE(got->eof);
  EXPECT_FALSE(got->would_block);
  EXPECT_FALSE(got->fds_truncated);
  ASSERT_EQ(got->fds.size(), 3u);
  EXPECT_EQ(into, hello);
  for (const UniqueFd& fd : got->fds) {
    EXPECT_NE(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC, 0);  // MSG_CMSG_CLOEXEC
    for (int original : fds) EXPECT_NE(fd.get(), original);
  }

  absl::StatusOr<ServerHello> decoded = DecodeServerHello(into);
  ASSERT_THAT(decoded, IsOk());
  absl::StatusOr<Segment> client = Segment::Adopt(std::move(got->fds[0]), std::move(got->fds[1]),
                                                  std::move(got->fds[2]), decoded->ring_capacity);
  ASSERT_THAT(client, IsOk());
  // The client rings the server's bell; the server hears it, and the other way round.
  Ring(client->server_bell());
  EXPECT_TRUE(Drain(server->server_bell()));
  Ring(server->client_bell());
  EXPECT_TRUE(Drain(client->client_bell()));
  client->client_to_server_data()[7] = std::byte{42};
  EXPECT_EQ(server->client_to_server_data()[7], std::byte{42});
}

TEST(SendWithFds, BytesWithoutDescriptors) {
  SocketPair sockets = NewSocketPair();
  std::array<std::byte, 16> hello = Encode(ClientHello{});
  absl::StatusOr<size_t> sent = SendWithFds(sockets.a.get(), hello, {});
  ASSERT_THAT(sent, IsOk());
  EXPECT_EQ(*sent, 16u);
  std::array<std::byte, 16> into{};
  absl::StatusOr<Received> got = ReceiveWithFds(sockets.b.get(), into, 3);
  ASSERT_THAT(got, IsOk());
  EXPECT_EQ(got->bytes, 16u);
  EXPECT_TRUE(got->fds.empty());
  EXPECT_FALSE(got->fds_truncated);
}

TEST(SendWithFds, RejectsEmptyMessage) {
  SocketPair sockets = NewSocketPair();
  EXPECT_THAT(SendWithFds(sockets.a.get(), {}, {}), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(SendWithFds, PeerGoneIsUnavailable) {
  SocketPair sockets = NewSocketPair();
  sockets.b = UniqueFd();
  std::array<std::byte, 16> hello = Encode(ClientHello{});
  EXPECT_THAT(SendWithFds(sockets.a.get(), hello, {}),
              StatusIs(absl::StatusCode::kUnavailable));  // EPIPE, and no SIGPIPE
}

TEST(SendWithFds, FullSocketWouldBlock) {
  SocketPair sockets = NewSocketPair();
  std::vector<std::byte> chunk(64 << 10);
  size_t sent_total = 0;
  for (int i = 0; i < 10000; ++i) {
    absl::StatusOr<size_t> sent = SendWithFds(sockets.a.get(), chunk, {});
    ASSERT_THAT(sent, IsOk());
    if (*sent == 0) break;
    sent_total += *sent;
  }
  EXPECT_GT(sent_total, 0u);
  absl::StatusOr<size_t> sent = SendWithFds(sockets.a.get(), chunk, {});
  ASSERT_THAT(sent, IsOk());
  EXPECT_EQ(*sent, 0u);
}

TEST(ReceiveWithFds, TooManyDescriptorsAreAllClosed) {
  size_t before = OpenFdCount();
  {
    SocketPair sockets = NewSocketPair();
    std::vector<UniqueFd> owned;
    std::vector<int> fds;
    for (int i = 0; i < 8; ++i) {
      owned.push_back(NewEventfd());
      fds.push_back(owned.back().get());
    }
    std::array<std::byte, 16> hello = Encode(ServerHello{.ring_capacity = kCapacity});
    // 4 fits in the control buffer for 3 (CMSG_SPACE rounds up); 8 does not (MSG_CTRUNC).
    for (size_t count : {size_t{4}, size_t{8}}) {
      SCOPED_TRACE(count);
      size_t with_sent = OpenFdCount();
      ASSERT_THAT(SendWithFds(sockets.a.get(), hello, std::span<const int>(fds).first(count)),
                  IsOk());
      std::array<std::byte, 16> into{};
      absl::StatusOr<Received> got = ReceiveWithFds(sockets.b.get(), into, 3);
      ASSERT_THAT(got, IsOk());
      EXPECT_TRUE(got->fds_truncated);
      EXPECT_TRUE(got->fds.empty());
      EXPECT_EQ(got->bytes, 16u);
      EXPECT_EQ(OpenFdCount(), with_sent);  // every received descriptor is closed
    }
    // With no room at all.
    ASSERT_THAT(SendWithFds(sockets.a.get(), hello, std::span<const int>(fds).first(1)), IsOk());
    std::array<std::byte, 16> into{};
    absl::StatusOr<Received> got = ReceiveWithFds(sockets.b.get(), into, 0);
    ASSERT_THAT(got, IsOk());
    EXPECT_TRUE(got->fds_truncated);
    EXPECT_TRUE(got->fds.empty());
  }
  EXPECT_EQ(OpenFdCount(), before);
}

TEST(ReceiveWithFds, ReportsEof) {
  SocketPair sockets = NewSocketPair();
  sockets.a = UniqueFd();
  std::array<std::byte, 16> into{};
  absl::StatusOr<Received> got = ReceiveWithFds(sockets.b.get(), into, 3);
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->eof);
  EXPECT_EQ(got->bytes, 0u);
  EXPECT_FALSE(got->would_block);
}

TEST(ReceiveWithFds, ReportsWouldBlock) {
  SocketPair sockets = NewSocketPair();
  std::array<std::byte, 16> into{};
  absl::StatusOr<Received> got = ReceiveWithFds(sockets.b.get(), into, 3);
  ASSERT_THAT(got, IsOk());
  EXPECT_TRUE(got->would_block);
  EXPECT_FALSE(got->eof);
  EXPECT_EQ(got->bytes, 0u);
}

TEST(ReceiveWithFds, ResetIsUnavailable) {
  SocketPair sockets = NewSocketPair();
  // Closing with unread data resets the peer's end.
  std::array<std::byte, 16> hello = Encode(ClientHello{});
  ASSERT_THAT(SendWithFds(sockets.b.get(), hello, {}), IsOk());
  sockets.a = UniqueFd();
  std::array<std::byte, 16> into{};
  EXPECT_THAT(ReceiveWithFds(sockets.b.get(), into, 3), StatusIs(absl::StatusCode::kUnavailable));
}

TEST(ReceiveWithFds, RejectsEmptyBuffer) {
  SocketPair sockets = NewSocketPair();
  EXPECT_THAT(ReceiveWithFds(sockets.b.get(), {}, 3), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(RendezvousDirectory, CreatesPrivateDirectoryUnderXdgRuntimeDir) {
  TempDir runtime;
  ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
  std::string want = runtime.path() + "/courier";
  EXPECT_THAT(RendezvousDirectory(/*create=*/false),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(want)));
  absl::StatusOr<std::string> dir = RendezvousDirectory(/*create=*/true);
  ASSERT_THAT(dir, IsOk());
  EXPECT_EQ(*dir, want);
  struct stat st;
  ASSERT_EQ(::lstat(want.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(st.st_uid, ::geteuid());
  // Again, and without creating: the same directory.
  EXPECT_THAT(RendezvousDirectory(true), IsOk());
  absl::StatusOr<std::string> again = RendezvousDirectory(false);
  ASSERT_THAT(again, IsOk());
  EXPECT_EQ(*again, want);
}

TEST(RendezvousDirectory, RefusesOpenMode) {
  TempDir runtime;
  ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
  std::string dir = runtime.path() + "/courier";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chmod(dir.c_str(), 0755), 0);
  EXPECT_THAT(RendezvousDirectory(true),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr(dir + ": mode 0755 lets group/others in (want 0700)")));
  ASSERT_EQ(::chmod(dir.c_str(), 0710), 0);
  EXPECT_THAT(RendezvousDirectory(false), StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST(RendezvousDirectory, RefusesSymlinkAndNonDirectory) {
  TempDir runtime;
  TempDir elsewhere;
  ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
  std::string dir = runtime.path() + "/courier";
  ASSERT_EQ(::symlink(elsewhere.path().c_str(), dir.c_str()), 0);  // a 0700 dir of ours
  EXPECT_THAT(RendezvousDirectory(true),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("symlink")));
  ASSERT_EQ(::unlink(dir.c_str()), 0);
  UniqueFd file(::open(dir.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  EXPECT_THAT(RendezvousDirectory(true),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not a directory")));
}

TEST(RendezvousDirectory, RefusesDirectoryOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  TempDir runtime;
  ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
  std::string dir = runtime.path() + "/courier";
  ASSERT_EQ(::mkdir(dir.c_str(), 0700), 0);
  ASSERT_EQ(::chown(dir.c_str(), 12345, 12345), 0);
  EXPECT_THAT(RendezvousDirectory(true),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("owned by uid 12345")));
}

TEST(RendezvousDirectory, IgnoresUnusableXdgRuntimeDir) {
  std::string fallback = absl::StrCat("/tmp/courier-", ::geteuid());
  // Without create, so that the test leaves nothing behind: either the fallback exists (and is
  // checked) or it is reported missing; both name it.
  auto names_fallback = [&](const absl::StatusOr<std::string>& dir) {
    return dir.ok() ? *dir == fallback : absl::StrContains(dir.status().message(), fallback);
  };
  {
    ScopedEnv env("XDG_RUNTIME_DIR", "relative/dir");
    EXPECT_TRUE(names_fallback(RendezvousDirectory(false)));
  }
  {
    ScopedEnv env("XDG_RUNTIME_DIR", "/nonexistent/run/user");
    EXPECT_TRUE(names_fallback(RendezvousDirectory(false)));
  }
  {
    TempDir runtime;
    std::string file = runtime.path() + "/file";
    UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ScopedEnv env("XDG_RUNTIME_DIR", file);
    EXPECT_TRUE(names_fallback(RendezvousDirectory(false)));
  }
  if (::geteuid() == 0) {
    TempDir runtime;
    ASSERT_EQ(::chown(runtime.path().c_str(), 12345, 12345), 0);
    ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
    EXPECT_TRUE(names_fallback(RendezvousDirectory(false)));
  }
}

TEST(RendezvousPath, ValidatesName) {
  TempDir runtime;
  ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
  for (std::string_view bad :
       {std::string_view(""), std::string_view("a/b"), std::string_view("/abs"),
        std::string_view(".."), std::string_view("."), std::string_view(".hidden"),
        std::string_view("../up"), std::string_view("sp ace"), std::string_view("nul\0x", 5),
        std::string_view("é")}) {
    EXPECT_THAT(RendezvousPath(bad, true), StatusIs(absl::StatusCode::kInvalidArgument)) << bad;
  }
  std::string too_long(65, 'a');
  EXPECT_THAT(RendezvousPath(too_long, true), StatusIs(absl::StatusCode::kInvalidArgument));
  // Nothing was created for the bad names.
  struct stat st;
  EXPECT_NE(::lstat((runtime.path() + "/courier").c_str(), &st), 0);

  for (std::string_view good : {"a", "echo", "courier-123_4.v2", "A.B-c_D", "x.."}) {
    absl::StatusOr<std::string> path = RendezvousPath(good, true);
    ASSERT_THAT(path, IsOk()) << good;
    EXPECT_EQ(*path, runtime.path() + "/courier/" + std::string(good) + ".sock");
  }
  std::string longest(64, 'z');
  EXPECT_THAT(RendezvousPath(longest, true), IsOk());
}

TEST(RendezvousPath, RefusesPathTooLongForASocketAddress) {
  TempDir runtime;
  std::string deep = runtime.path() + "/" + std::string(60, 'd');
  ASSERT_EQ(::mkdir(deep.c_str(), 0700), 0);
  ScopedEnv env("XDG_RUNTIME_DIR", deep);
  EXPECT_THAT(RendezvousPath(std::string(64, 'n'), true),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("UNIX socket address")));
}

TEST(RendezvousPath, MissingDirectoryIsUnavailable) {
  TempDir runtime;
  ScopedEnv env("XDG_RUNTIME_DIR", runtime.path());
  EXPECT_THAT(RendezvousPath("echo", false), StatusIs(absl::StatusCode::kUnavailable));
}

class CheckRendezvousSocketTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(::chmod(dir_.path().c_str(), 0700), 0); }
  std::string Path(const std::string& name) const { return dir_.path() + "/" + name; }
  TempDir dir_;
};

TEST_F(CheckRendezvousSocketTest, AcceptsPrivateSocket) {
  UniqueFd socket = BindSocket(Path("s.sock"), 0600);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")), IsOk());
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0755), 0);  // readable by others is fine for the dir
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")), IsOk());
}

TEST_F(CheckRendezvousSocketTest, RefusesOpenSocket) {
  UniqueFd socket = BindSocket(Path("s.sock"), 0666);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr(Path("s.sock") + ": mode 0666 lets group/others in")));
  ASSERT_EQ(::chmod(Path("s.sock").c_str(), 0640), 0);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")), StatusIs(absl::StatusCode::kPermissionDenied));
}

TEST_F(CheckRendezvousSocketTest, RefusesRegularFile) {
  UniqueFd file(::open(Path("s.sock").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("not a socket")));
}

TEST_F(CheckRendezvousSocketTest, MissingIsUnavailable) {
  EXPECT_THAT(CheckRendezvousSocket(Path("none.sock")),
              StatusIs(absl::StatusCode::kUnavailable, HasSubstr(Path("none.sock"))));
  EXPECT_THAT(CheckRendezvousSocket(Path("gone/none.sock")),
              StatusIs(absl::StatusCode::kUnavailable));
}

TEST_F(CheckRendezvousSocketTest, RefusesSymlinkToSocket) {
  UniqueFd socket = BindSocket(Path("real.sock"), 0600);
  ASSERT_EQ(::symlink(Path("real.sock").c_str(), Path("link.sock").c_str()), 0);
  EXPECT_THAT(CheckRendezvousSocket(Path("link.sock")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("symlink")));
}

TEST_F(CheckRendezvousSocketTest, RefusesWritableOrSymlinkedDirectory) {
  UniqueFd socket = BindSocket(Path("s.sock"), 0600);
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0770), 0);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("write")));
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0703), 0);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")), StatusIs(absl::StatusCode::kPermissionDenied));
  ASSERT_EQ(::chmod(dir_.path().c_str(), 0700), 0);
  TempDir other;
  std::string link = other.path() + "/link";
  ASSERT_EQ(::symlink(dir_.path().c_str(), link.c_str()), 0);
  EXPECT_THAT(CheckRendezvousSocket(link + "/s.sock"),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("symlink")));
}

TEST_F(CheckRendezvousSocketTest, RefusesSocketOfAnotherUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  UniqueFd socket = BindSocket(Path("s.sock"), 0600);
  ASSERT_EQ(::lchown(Path("s.sock").c_str(), 12345, 12345), 0);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("owned by uid 12345")));
  ASSERT_EQ(::lchown(Path("s.sock").c_str(), 0, 0), 0);
  ASSERT_EQ(::chown(dir_.path().c_str(), 12345, 12345), 0);
  EXPECT_THAT(CheckRendezvousSocket(Path("s.sock")),
              StatusIs(absl::StatusCode::kPermissionDenied, HasSubstr("owned by uid 12345")));
}

}  // namespace
}  // namespace courier::transport::shm
