#include "transport/fifo/fifo_transport.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "asio/cancellation_state.hpp"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/steady_timer.hpp"
#include "asio/this_coro.hpp"
#include "transport/internal/fd.h"
#include "transport/internal/fd_stream.h"
#include "transport/internal/rendezvous.h"
#include "transport/internal/unix_socket.h"
#include "transport/status.h"

namespace courier::transport::fifo {
namespace {

using Clock = std::chrono::steady_clock;
using internal::FileId;
using internal::OctalMode;
using internal::UniqueFd;
using stream_descriptor = asio::posix::stream_descriptor;

constexpr Traits kTraits{.message_boundaries = false,
                         .reliable = true,
                         .max_message = 0,
                         .duplex = false,
                         .reach = Reach::kSameHost};
// Dropped records are reported through Accept at most this often.
constexpr std::chrono::seconds kReportInterval{1};
// How often a waiting client checks that the server still reads its request FIFO.
constexpr std::chrono::milliseconds kServerCheck{50};
constexpr int kPairTries = 8;
constexpr size_t kTokenDigits = 16;

struct FifoAddress {
  std::string path;  // the request FIFO
  std::string dir;   // its directory ("/" or without a trailing '/')
  std::string name;  // its basename
};

absl::Status BadAddress(std::string_view address, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("fifo address '", AsAbsl(address), "': ", AsAbsl(problem)));
}

bool NameChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

absl::StatusOr<FifoAddress> ParseAddress(std::string_view address) {
  if (address.empty() || address[0] != '/') return BadAddress(address, "want an absolute path");
  if (address.find('?') != std::string_view::npos) {
    return BadAddress(address, "fifo:// takes no options");
  }
  if (address.find('\0') != std::string_view::npos) return BadAddress(address, "NUL in path");
  // Room for the pair's names next to it.
  if (address.size() + 40 >= PATH_MAX) return BadAddress(address, "path too long");
  const size_t slash = address.rfind('/');
  FifoAddress out;
  out.path = std::string(address);
  out.dir = slash == 0 ? "/" : std::string(address.substr(0, slash));
  out.name = std::string(address.substr(slash + 1));
  if (out.name.empty() || out.name.size() > kMaxName || out.name[0] == '.' ||
      !std::all_of(out.name.begin(), out.name.end(), NameChar)) {
    return BadAddress(address, absl::StrCat("the name must be 1 to ", kMaxName,
                                            " bytes of [A-Za-z0-9._-], not starting with '.'"));
  }
  return out;
}

FileId IdOf(const struct stat& st) { return FileId{st.st_dev, st.st_ino}; }

// A FIFO of ours that only we may open: what both ends of every FIFO here must be.
absl::Status CheckOwnFifo(const struct stat& st, std::string_view what) {
  if (S_ISLNK(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(AsAbsl(what), ": is a symlink"));
  }
  if (!S_ISFIFO(st.st_mode)) {
    return absl::PermissionDeniedError(absl::StrCat(AsAbsl(what), ": is not a FIFO"));
  }
  if (st.st_uid != ::geteuid()) {
    return absl::PermissionDeniedError(absl::StrCat(AsAbsl(what), ": owned by uid ", st.st_uid,
                                                    ", not us (uid ", ::geteuid(), ")"));
  }
  if ((st.st_mode & 077) != 0) {
    return absl::PermissionDeniedError(absl::StrCat(AsAbsl(what), ": mode ", OctalMode(st.st_mode),
                                                    " lets group/others in (want 0600)"));
  }
  return absl::OkStatus();
}

// fstat of a descriptor just opened by name: still the file lstat saw (no swap in between).
absl::Status CheckOpened(int fd, const struct stat& seen, std::string_view what) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return ErrnoStatus(errno, what);
  if (IdOf(st) != IdOf(seen)) {
    return absl::PermissionDeniedError(absl::StrCat(AsAbsl(what), ": replaced while opening it"));
  }
  return CheckOwnFifo(st, what);
}

bool IsFile(int fd, const FileId& id) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && IdOf(st) == id;
}

// Removes `name` in `dir` if it still is the file `id`.
void UnlinkAtIfSame(int dir, const std::string& name, const FileId& id) {
  struct stat st;
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && IdOf(st) == id) {
    ::unlinkat(dir, name.c_str(), 0);
  }
}

std::string RandomToken() {
  uint64_t bits = 0;
  if (::getrandom(&bits, sizeof(bits), 0) != sizeof(bits)) {
    bits = static_cast<uint64_t>(Clock::now().time_since_epoch().count()) ^
           (static_cast<uint64_t>(::getpid()) << 32);
  }
  return absl::StrFormat("%016x", bits);
}

std::string PairBase(std::string_view name, pid_t pid, std::string_view token) {
  return absl::StrCat(AsAbsl(name), ".", pid, ".", AsAbsl(token));
}

struct ConnectRecord {
  pid_t pid = 0;
  std::string c2s;
  std::string s2c;
};

absl::Status BadRecord(std::string_view problem) {
  return absl::InvalidArgumentError(absl::StrCat("malformed connect record: ", AsAbsl(problem)));
}

// One record, without its '\n'. Strict: exactly what a client of ours writes.
absl::StatusOr<ConnectRecord> ParseRecord(std::string_view line, std::string_view name) {
  std::vector<absl::string_view> fields = absl::StrSplit(AsAbsl(line), ' ');
  if (fields.size() != 4) return BadRecord(absl::StrCat(fields.size(), " fields, want 4"));
  if (fields[0] != kRecordTag) return BadRecord("does not start with the tag");
  int32_t pid = 0;
  if (fields[1].empty() || fields[1].size() > 10 || fields[1][0] == '0' ||
      !std::all_of(fields[1].begin(), fields[1].end(),
                   [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(fields[1], &pid) || pid <= 0) {
    return BadRecord("bad pid");
  }
  for (absl::string_view file : {fields[2], fields[3]}) {
    if (file.find('/') != absl::string_view::npos) return BadRecord("a path, not a basename");
    if (!std::all_of(file.begin(), file.end(), NameChar)) return BadRecord("bad characters");
  }
  const std::string prefix = absl::StrCat(AsAbsl(name), ".", pid, ".");
  absl::string_view c2s = fields[2];
  if (!absl::ConsumePrefix(&c2s, prefix) || !absl::ConsumeSuffix(&c2s, ".c2s") ||
      c2s.size() != kTokenDigits || !std::all_of(c2s.begin(), c2s.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return BadRecord("not <name>.<pid>.<16 hex>.c2s in this directory");
  }
  const std::string base = PairBase(name, pid, std::string_view(c2s.data(), c2s.size()));
  if (fields[3] != absl::StrCat(base, ".s2c")) return BadRecord("the .s2c does not match the .c2s");
  return ConnectRecord{pid, absl::StrCat(base, ".c2s"), absl::StrCat(base, ".s2c")};
}

bool Cancelled(const asio::cancellation_state& state) {
  return state.cancelled() != asio::cancellation_type::none;
}

// Waits until `d` is readable, `deadline` passes, `keep_waiting` (asked every kServerCheck)
// says stop, or the awaiting coroutine is cancelled. False unless readable.
template <typename KeepWaiting>
asio::awaitable<bool> WaitReadable(stream_descriptor& d, Clock::time_point deadline,
                                   KeepWaiting keep_waiting) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(d.get_executor());
  for (;;) {
    const Clock::time_point now = Clock::now();
    if (now >= deadline || !keep_waiting()) co_return false;
    timer.expires_at(std::min(deadline, now + kServerCheck));
    auto result = co_await (d.async_wait(stream_descriptor::wait_read, use_nothrow) ||
                            timer.async_wait(use_nothrow));
    if (Cancelled(co_await asio::this_coro::cancellation_state)) co_return false;
    if (result.index() == 0) {
      auto [ec] = std::get<0>(result);
      co_return !ec;
    }
  }
}

// A connection whose handshake finished, waiting for Accept.
struct Pending {
  UniqueFd c2s;
  UniqueFd s2c;
  PeerInfo peer;
};

// What a listener shares with its read loop and its handshakes.
struct ListenerState {
  ListenerState(asio::any_io_executor ex, FifoAddress a, UniqueFd d)
      : executor(ex),
        signal(ex, Clock::time_point::max()),
        address(std::move(a)),
        dir(std::move(d)) {}
  asio::any_io_executor executor;
  std::deque<absl::StatusOr<Pending>> ready;  // errors too (dropped records, read failures)
  asio::steady_timer signal;                  // cancelled when `ready` grows or on Close
  FifoAddress address;
  UniqueFd dir;  // O_PATH descriptor of the directory: the pair is looked up relative to it
  bool closed = false;
  bool loop_started = false;
  size_t handshakes = 0;
  ListenerStats stats;
  uint64_t dropped_unreported = 0;
  std::optional<Clock::time_point> last_report;

  // Hands Accept an error, unless one is already waiting there (as shm:// does).
  void Report(absl::Status error) {
    if (!ready.empty() && !ready.back().ok()) return;
    ready.push_back(std::move(error));
    signal.cancel();
  }
  // Counts a dropped record; reports it (with those dropped silently since) at most once per
  // kReportInterval.
  void Drop(const absl::Status& why) {
    ++stats.dropped_records;
    ++dropped_unreported;
    const Clock::time_point now = Clock::now();
    if (last_report && now - *last_report < kReportInterval) return;
    last_report = now;
    Report(absl::AbortedError(absl::StrCat(
        "fifo listen ", address.path, ": dropped ", dropped_unreported, " connect record(s) (",
        stats.dropped_records, " in all), the last: ", why.message())));
    dropped_unreported = 0;
  }
};

// The server's half of one handshake (see the header). Removes the pair's files, whatever the
// outcome, once it has checked they are the client's FIFOs.
asio::awaitable<absl::StatusOr<Pending>> ServeHandshake(ListenerState& state,
                                                        const ConnectRecord& record,
                                                        Clock::time_point deadline) {
  const int dir = state.dir.get();
  const std::string what = absl::StrCat("fifo pair ", record.c2s, " (pid ", record.pid, ")");
  struct stat c2s_seen, s2c_seen;
  if (::fstatat(dir, record.c2s.c_str(), &c2s_seen, AT_SYMLINK_NOFOLLOW) != 0) {
    co_return ErrnoStatus(errno, what);
  }
  if (absl::Status s = CheckOwnFifo(c2s_seen, record.c2s); !s.ok()) co_return s;
  if (::fstatat(dir, record.s2c.c_str(), &s2c_seen, AT_SYMLINK_NOFOLLOW) != 0) {
    co_return ErrnoStatus(errno, what);
  }
  if (absl::Status s = CheckOwnFifo(s2c_seen, record.s2c); !s.ok()) co_return s;
  absl::Cleanup unlink = [dir, &record, &c2s_seen, &s2c_seen] {
    UnlinkAtIfSame(dir, record.c2s, IdOf(c2s_seen));
    UnlinkAtIfSame(dir, record.s2c, IdOf(s2c_seen));
  };

  UniqueFd c2s(::openat(dir, record.c2s.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!c2s) co_return ErrnoStatus(errno, what);
  if (absl::Status s = CheckOpened(c2s.get(), c2s_seen, record.c2s); !s.ok()) co_return s;
  UniqueFd s2c(::openat(dir, record.s2c.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!s2c) {
    if (errno == ENXIO) co_return absl::UnavailableError(absl::StrCat(what, ": the client left"));
    co_return ErrnoStatus(errno, what);
  }
  if (absl::Status s = CheckOpened(s2c.get(), s2c_seen, record.s2c); !s.ok()) co_return s;
  if (::write(s2c.get(), &kAcceptByte, 1) != 1) {
    co_return absl::UnavailableError(
        absl::StrCat(what, ": cannot write the accept byte (the client left)"));
  }

  // The client's ready byte. Until the client has opened .c2s, read() would say end of file
  // (no writer yet) while poll says nothing: so wait for readable before every read.
  stream_descriptor reader(state.executor);
  asio::error_code ec;
  reader.assign(c2s.release(), ec);
  if (ec) co_return ToStatus(ec, what);
  const ListenerState* watched = &state;
  auto open = [watched] { return !watched->closed; };
  for (;;) {
    const bool readable = co_await WaitReadable(reader, deadline, open);
    if (state.closed) co_return absl::CancelledError(absl::StrCat(what, ": listener closed"));
    if (!readable) {
      co_return absl::DeadlineExceededError(
          absl::StrCat(what, ": no ready byte within ", kHandshakeTimeout.count(), " s"));
    }
    char byte = 0;
    ssize_t n = ::read(reader.native_handle(), &byte, 1);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    if (n < 0) co_return ErrnoStatus(errno, what);
    if (n == 0) co_return absl::UnavailableError(absl::StrCat(what, ": the client left"));
    if (byte != kReadyByte) {
      co_return absl::DataLossError(absl::StrCat(what, ": not the ready byte"));
    }
    break;
  }
  Pending pending{UniqueFd(reader.release()), std::move(s2c), PeerInfo{}};
  pending.peer.address = absl::StrCat("fifo:pid=", record.pid);
  pending.peer.credentials =
      PeerCredentials{.pid = 0, .uid = c2s_seen.st_uid, .gid = c2s_seen.st_gid};
  co_return pending;
}

asio::awaitable<void> Handshake(std::shared_ptr<ListenerState> state, ConnectRecord record) {
  const Clock::time_point deadline = Clock::now() + kHandshakeTimeout;
  absl::StatusOr<Pending> pending = co_await ServeHandshake(*state, record, deadline);
  --state->handshakes;
  if (state->closed) co_return;
  if (!pending.ok()) {
    state->Drop(pending.status());
    co_return;
  }
  state->ready.push_back(*std::move(pending));
  state->signal.cancel();
}

void HandleRecord(const std::shared_ptr<ListenerState>& state, std::string_view line) {
  absl::StatusOr<ConnectRecord> record = ParseRecord(line, state->address.name);
  if (!record.ok()) {
    state->Drop(record.status());
    return;
  }
  size_t waiting = 0;
  for (const absl::StatusOr<Pending>& entry : state->ready) waiting += entry.ok() ? 1 : 0;
  if (state->handshakes + waiting >= kMaxPending) {
    state->Drop(absl::ResourceExhaustedError(
        absl::StrCat("pid ", record->pid, ": ", kMaxPending,
                     " connections already in their handshake or waiting for Accept")));
    return;
  }
  ++state->handshakes;
  asio::co_spawn(state->executor, Handshake(state, *std::move(record)), asio::detached);
}

// Reads connect records for as long as the listener is open. Every wake-up reads until EAGAIN
// (the reactor reports edges); `partial` holds at most PIPE_BUF bytes of an unfinished record.
asio::awaitable<void> ReadLoop(std::shared_ptr<stream_descriptor> request,
                               std::shared_ptr<ListenerState> state) {
  std::string partial;
  bool skipping = false;               // inside a record longer than PIPE_BUF: drop up to its '\n'
  std::vector<char> buffer(PIPE_BUF);  // on the heap: a large coroutine frame trips GCC 12
  while (!state->closed) {
    for (;;) {
      ssize_t n = ::read(request->native_handle(), buffer.data(), buffer.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
      if (n <= 0) {
        // We hold a write end, so end of file cannot happen; an error stops the listener.
        state->Report(n == 0
                          ? absl::InternalError(absl::StrCat("fifo listen ", state->address.path,
                                                             ": end of file on the request FIFO"))
                          : ErrnoStatus(errno, absl::StrCat("fifo listen ", state->address.path)));
        co_return;
      }
      std::string_view chunk(buffer.data(), static_cast<size_t>(n));
      while (!chunk.empty()) {
        size_t newline = chunk.find('\n');
        std::string_view piece = chunk.substr(0, newline);
        if (newline == std::string_view::npos) {
          chunk = {};
        } else {
          chunk.remove_prefix(newline + 1);
        }
        if (skipping) {
          if (newline != std::string_view::npos) skipping = false;
          continue;
        }
        if (partial.size() + piece.size() + 1 > PIPE_BUF) {
          state->Drop(absl::InvalidArgumentError(
              absl::StrCat("a connect record longer than ", PIPE_BUF, " bytes")));
          partial.clear();
          skipping = newline == std::string_view::npos;
          continue;
        }
        partial.append(piece);
        if (newline == std::string_view::npos) continue;
        HandleRecord(state, partial);
        partial.clear();
      }
    }
    auto [ec] = co_await request->async_wait(stream_descriptor::wait_read, use_nothrow);
    if (state->closed) co_return;
    if (ec) {
      state->Report(ToStatus(ec, absl::StrCat("fifo listen ", state->address.path)));
      co_return;
    }
  }
}

class FifoListener final : public Listener {
 public:
  FifoListener(std::shared_ptr<ListenerState> state, std::shared_ptr<stream_descriptor> request,
               UniqueFd own_writer, FileId file)
      : state_(std::move(state)),
        request_(std::move(request)),
        own_writer_(std::move(own_writer)),
        file_(file) {}
  ~FifoListener() override { Close(); }

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    std::shared_ptr<ListenerState> state = state_;
    // Records are read from the first Accept on, as shm:// accepts: until then the listener
    // keeps no work on its executor (a client waits, up to kHandshakeTimeout).
    if (!state->loop_started && !state->closed) {
      state->loop_started = true;
      asio::co_spawn(state->executor, ReadLoop(request_, state), asio::detached);
    }
    for (;;) {
      if (state->closed) {
        co_return absl::CancelledError(
            absl::StrCat("fifo accept on ", state->address.path, ": cancelled"));
      }
      if (!state->ready.empty()) {
        absl::StatusOr<Pending> next = std::move(state->ready.front());
        state->ready.pop_front();
        if (!next.ok()) co_return next.status();
        ++state->stats.accepted;
        internal::FdStreamParts parts{.read_fd = std::move(next->c2s),
                                      .write_fd = std::move(next->s2c),
                                      .scheme = "fifo",
                                      .peer = std::move(next->peer),
                                      .traits = kTraits,
                                      .on_close = {}};
        co_return internal::NewFdStreamConnection(connection_executor, std::move(parts));
      }
      state->signal.expires_at(Clock::time_point::max());
      co_await state->signal.async_wait(use_nothrow);
    }
  }

  Endpoint local_endpoint() const override { return Endpoint{"fifo", state_->address.path}; }

  // Removes the request FIFO first, so that a new server can take the path at once; clients
  // whose handshake is not finished see end of file or time out.
  void Close() override {
    if (state_->closed) return;
    state_->closed = true;
    internal::UnlinkIfSame(state_->address.path, file_);
    asio::error_code ignored;
    request_->close(ignored);
    own_writer_ = UniqueFd();
    state_->ready.clear();
    state_->signal.cancel();
  }

  ListenerStats stats() const { return state_->stats; }

 private:
  std::shared_ptr<ListenerState> state_;
  std::shared_ptr<stream_descriptor> request_;
  UniqueFd own_writer_;
  FileId file_;
};

// The request FIFO: made under a temporary name, opened (our read end and our own write end),
// then linked to the path, which fails if the path exists. A stale FIFO of ours (nobody reads
// it) is removed and the link tried again; anything else at the path is kAlreadyExists.
struct RequestFifo {
  UniqueFd reader;
  UniqueFd writer;
  FileId id;
};
absl::StatusOr<RequestFifo> MakeRequestFifo(int dir, const FifoAddress& address,
                                            const std::string& what) {
  const std::string temporary = absl::StrCat(".", address.name, ".", RandomToken(), ".new");
  if (::mkfifoat(dir, temporary.c_str(), 0600) != 0) {
    return ErrnoStatus(errno, absl::StrCat(what, ": mkfifo in ", address.dir));
  }
  absl::Cleanup remove_temporary = [dir, &temporary] { ::unlinkat(dir, temporary.c_str(), 0); };
  RequestFifo out;
  out.reader =
      UniqueFd(::openat(dir, temporary.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!out.reader) return ErrnoStatus(errno, what);
  // The umask may have narrowed the mode, never widened it; make it exactly 0600.
  if (::fchmod(out.reader.get(), 0600) != 0)
    return ErrnoStatus(errno, absl::StrCat(what, ": fchmod"));
  out.writer =
      UniqueFd(::openat(dir, temporary.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!out.writer) return ErrnoStatus(errno, what);
  struct stat st;
  if (::fstat(out.reader.get(), &st) != 0) return ErrnoStatus(errno, what);
  out.id = IdOf(st);
  struct stat writer_st;
  if (::fstat(out.writer.get(), &writer_st) != 0 || IdOf(writer_st) != out.id) {
    return absl::InternalError(absl::StrCat(what, ": the temporary FIFO was replaced"));
  }
  for (int attempt = 0; attempt < 4; ++attempt) {
    if (::linkat(dir, temporary.c_str(), dir, address.name.c_str(), 0) == 0) return out;
    if (errno != EEXIST) return ErrnoStatus(errno, absl::StrCat(what, ": link"));
    struct stat existing;
    if (::fstatat(dir, address.name.c_str(), &existing, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) continue;  // gone meanwhile: try again
      return ErrnoStatus(errno, what);
    }
    if (!S_ISFIFO(existing.st_mode)) {
      return absl::AlreadyExistsError(absl::StrCat(what, ": the path exists and is not a FIFO"));
    }
    if (existing.st_uid != ::geteuid()) {
      return absl::AlreadyExistsError(
          absl::StrCat(what, ": a FIFO of uid ", existing.st_uid, " is there"));
    }
    UniqueFd probe(
        ::openat(dir, address.name.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (probe) {
      return absl::AlreadyExistsError(absl::StrCat(what, ": a live server reads this FIFO"));
    }
    if (errno != ENXIO && errno != ENOENT) return ErrnoStatus(errno, what);
    // Nobody reads it: a dead server's. Remove it, if it still is that one.
    UnlinkAtIfSame(dir, address.name, IdOf(existing));
  }
  return absl::AlreadyExistsError(absl::StrCat(what, ": the path keeps being taken"));
}

// The client's pair, removed on destruction unless kept.
struct ClientPair {
  std::string c2s_path, s2c_path;
  std::string c2s_name, s2c_name;
  FileId c2s_id, s2c_id;
  bool made = false;
  ~ClientPair() { Remove(); }
  void Remove() {
    if (!made) return;
    internal::UnlinkIfSame(c2s_path, c2s_id);
    internal::UnlinkIfSame(s2c_path, s2c_id);
    made = false;
  }
};

absl::Status MakePair(const FifoAddress& address, ClientPair& pair, const std::string& what) {
  for (int attempt = 0; attempt < kPairTries; ++attempt) {
    const std::string base = PairBase(address.name, ::getpid(), RandomToken());
    pair.c2s_name = base + ".c2s";
    pair.s2c_name = base + ".s2c";
    pair.c2s_path = absl::StrCat(address.dir == "/" ? "" : address.dir, "/", pair.c2s_name);
    pair.s2c_path = absl::StrCat(address.dir == "/" ? "" : address.dir, "/", pair.s2c_name);
    // mkfifo fails with EEXIST on any existing name: O_EXCL for FIFOs.
    if (::mkfifo(pair.c2s_path.c_str(), 0600) != 0) {
      if (errno == EEXIST) continue;
      return ErrnoStatus(errno, absl::StrCat(what, ": mkfifo ", pair.c2s_path));
    }
    std::optional<FileId> c2s = internal::FileIdOf(pair.c2s_path);
    if (::mkfifo(pair.s2c_path.c_str(), 0600) != 0) {
      const int error = errno;
      if (c2s) internal::UnlinkIfSame(pair.c2s_path, *c2s);
      if (error == EEXIST) continue;
      return ErrnoStatus(error, absl::StrCat(what, ": mkfifo ", pair.s2c_path));
    }
    std::optional<FileId> s2c = internal::FileIdOf(pair.s2c_path);
    if (!c2s || !s2c) {
      if (c2s) internal::UnlinkIfSame(pair.c2s_path, *c2s);
      if (s2c) internal::UnlinkIfSame(pair.s2c_path, *s2c);
      return absl::UnavailableError(absl::StrCat(what, ": our FIFOs vanished"));
    }
    pair.c2s_id = *c2s;
    pair.s2c_id = *s2c;
    pair.made = true;
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", kPairTries, " FIFO names taken"));
}

// Does anybody still read the request FIFO we hold a write end of? (No readers: POLLERR.)
bool ServerReads(int request) {
  pollfd p{.fd = request, .events = POLLOUT, .revents = 0};
  if (::poll(&p, 1, 0) < 0) return true;
  return (p.revents & POLLERR) == 0;
}

class FifoTransport final : public Transport {
 public:
  explicit FifoTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    const std::string what = absl::StrCat("fifo connect ", to.address);
    absl::StatusOr<FifoAddress> address = ParseAddress(to.address);
    if (!address.ok()) co_return address.status();
    const Clock::time_point deadline = Clock::now() + kHandshakeTimeout;

    // 1. The request FIFO.
    auto seen_owner = std::make_unique<struct stat>();
    struct stat& seen = *seen_owner;
    if (::lstat(address->path.c_str(), &seen) != 0) {
      if (errno == ENOENT) co_return absl::UnavailableError(absl::StrCat(what, ": no server"));
      co_return ErrnoStatus(errno, what);
    }
    if (absl::Status s = CheckOwnFifo(seen, what); !s.ok()) co_return s;
    UniqueFd request(::open(address->path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!request) {
      if (errno == ENXIO || errno == ENOENT) {
        co_return absl::UnavailableError(absl::StrCat(what, ": nobody serves it"));
      }
      co_return ErrnoStatus(errno, what);
    }
    if (absl::Status s = CheckOpened(request.get(), seen, what); !s.ok()) co_return s;

    // 2. Our pair, and the read end of .s2c (which never blocks).
    auto pair_owner = std::make_unique<ClientPair>();  // heap: keeps the frame small (GCC 12)
    ClientPair& pair = *pair_owner;
    if (absl::Status s = MakePair(*address, pair, what); !s.ok()) co_return s;
    UniqueFd s2c(::open(pair.s2c_path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!s2c) co_return ErrnoStatus(errno, absl::StrCat(what, ": open ", pair.s2c_path));

    // 3. The record, in one write (atomic up to PIPE_BUF); a full FIFO is retried.
    const std::string record =
        absl::StrCat(kRecordTag, " ", ::getpid(), " ", pair.c2s_name, " ", pair.s2c_name, "\n");
    static_assert(kMaxName * 2 + 100 < PIPE_BUF);
    asio::steady_timer timer(executor_);
    std::chrono::milliseconds pause{1};
    for (;;) {
      ssize_t n = ::write(request.get(), record.data(), record.size());
      if (n == static_cast<ssize_t>(record.size())) break;
      if (n >= 0) co_return absl::InternalError(absl::StrCat(what, ": short write of the record"));
      if (errno == EINTR) continue;
      if (errno == EPIPE) co_return absl::UnavailableError(absl::StrCat(what, ": the server left"));
      if (errno != EAGAIN) co_return ErrnoStatus(errno, what);
      if (Clock::now() + pause > deadline) {
        co_return absl::UnavailableError(
            absl::StrCat(what, ": the server's request FIFO stays full"));
      }
      timer.expires_after(pause);
      co_await timer.async_wait(use_nothrow);
      if (Cancelled(co_await asio::this_coro::cancellation_state)) {
        co_return absl::CancelledError(absl::StrCat(what, ": cancelled"));
      }
      pause = std::min(pause * 2, std::chrono::milliseconds(50));
    }

    // 4. The accept byte on .s2c.
    stream_descriptor reader(executor_);
    asio::error_code ec;
    reader.assign(s2c.release(), ec);
    if (ec) co_return ToStatus(ec, what);
    const int request_fd = request.get();
    auto server_reads = [request_fd] { return ServerReads(request_fd); };
    for (;;) {
      const bool readable = co_await WaitReadable(reader, deadline, server_reads);
      if (Cancelled(co_await asio::this_coro::cancellation_state)) {
        co_return absl::CancelledError(absl::StrCat(what, ": cancelled"));
      }
      if (!readable) {
        co_return absl::UnavailableError(
            absl::StrCat(what, ServerReads(request_fd) ? ": the server did not answer within 2 s"
                                                       : ": the server left"));
      }
      char byte = 0;
      ssize_t n = ::read(reader.native_handle(), &byte, 1);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (n < 0) co_return ErrnoStatus(errno, what);
      if (n == 0) {
        co_return absl::UnavailableError(absl::StrCat(what, ": the server refused the connection"));
      }
      if (byte != kAcceptByte) {
        co_return absl::UnavailableError(
            absl::StrCat(what, ": the server's answer is not fifo://'s"));
      }
      break;
    }
    UniqueFd s2c_fd(reader.release());

    // 5. .c2s, our ready byte, and the files go.
    UniqueFd c2s(::open(pair.c2s_path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
    if (!c2s) {
      if (errno == ENXIO) co_return absl::UnavailableError(absl::StrCat(what, ": the server left"));
      co_return ErrnoStatus(errno, absl::StrCat(what, ": open ", pair.c2s_path));
    }
    if (!IsFile(c2s.get(), pair.c2s_id)) {
      co_return absl::PermissionDeniedError(
          absl::StrCat(what, ": ", pair.c2s_path, " was replaced"));
    }
    if (::write(c2s.get(), &kReadyByte, 1) != 1) {
      co_return absl::UnavailableError(absl::StrCat(what, ": the server left"));
    }
    pair.Remove();

    internal::FdStreamParts parts{.read_fd = std::move(s2c_fd),
                                  .write_fd = std::move(c2s),
                                  .scheme = "fifo",
                                  .peer = PeerInfo{},
                                  .traits = kTraits,
                                  .on_close = {}};
    parts.peer.address = absl::StrCat("fifo://", address->path);
    parts.peer.credentials = PeerCredentials{.pid = 0, .uid = seen.st_uid, .gid = seen.st_gid};
    co_return internal::NewFdStreamConnection(executor_, std::move(parts));
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    const std::string what = absl::StrCat("fifo listen ", at.address);
    absl::StatusOr<FifoAddress> address = ParseAddress(at.address);
    if (!address.ok()) return address.status();
    UniqueFd dir(::open(address->dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir) {
      if (errno == ENOENT) {
        return absl::NotFoundError(absl::StrCat(what, ": no directory ", address->dir));
      }
      return ErrnoStatus(errno, absl::StrCat(what, ": directory ", address->dir));
    }
    absl::StatusOr<RequestFifo> fifo = MakeRequestFifo(dir.get(), *address, what);
    if (!fifo.ok()) return fifo.status();
    auto request = std::make_shared<stream_descriptor>(executor_);
    asio::error_code ec;
    request->assign(fifo->reader.release(), ec);
    if (ec) {
      internal::UnlinkIfSame(address->path, fifo->id);
      return ToStatus(ec, what);
    }
    auto state = std::make_shared<ListenerState>(executor_, *std::move(address), std::move(dir));
    return std::make_unique<FifoListener>(std::move(state), std::move(request),
                                          std::move(fifo->writer), fifo->id);
  }

 private:
  asio::any_io_executor executor_;
};

uint32_t ProcessSalt() {
  uint32_t salt = 0;
  if (::getrandom(&salt, sizeof(salt), GRND_NONBLOCK) != sizeof(salt)) {
    salt = static_cast<uint32_t>(Clock::now().time_since_epoch().count());
  }
  return salt;
}

}  // namespace

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  internal::IgnoreSigpipe();
  return std::make_unique<FifoTransport>(std::move(executor));
}

// If the rendezvous directory is unusable, the endpoint names /tmp and Listen says what is
// wrong with it there, if anything.
Endpoint LoopbackEndpoint() {
  static std::atomic<uint64_t> counter{0};
  static const uint32_t salt = ProcessSalt();
  absl::StatusOr<std::string> dir = internal::RendezvousDirectory(/*create=*/true);
  return Endpoint{"fifo",
                  absl::StrFormat("%s/courier-%d-%d-%08x", dir.ok() ? *dir : "/tmp", ::getpid(),
                                  counter.fetch_add(1, std::memory_order_relaxed), salt)};
}

std::optional<ListenerStats> StatsOf(const Listener& listener) {
  const auto* fifo = dynamic_cast<const FifoListener*>(&listener);
  if (fifo == nullptr) return std::nullopt;
  return fifo->stats();
}

}  // namespace courier::transport::fifo
