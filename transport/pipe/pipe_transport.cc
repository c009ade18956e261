#include "transport/pipe/pipe_transport.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/error.hpp"
#include "asio/experimental/awaitable_operators.hpp"
#include "asio/local/stream_protocol.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/post.hpp"
#include "asio/steady_timer.hpp"
#include "transport/internal/fd.h"
#include "transport/internal/fd_stream.h"
#include "transport/internal/socket_connection.h"
#include "transport/internal/unix_socket.h"
#include "transport/status.h"

extern char** environ;

namespace courier::transport::pipe {
namespace {

using asio::local::stream_protocol;
using Clock = std::chrono::steady_clock;
using internal::FdStreamParts;
using internal::UniqueFd;

constexpr std::array<char, 8> kHello = {'C', 'O', 'R', 'P', 'I', 'P', 'E', '1'};
constexpr std::chrono::seconds kHandshakeTimeout{2};
constexpr size_t kMaxHandshakes = 64;
constexpr std::chrono::milliseconds kFirstAcceptRetry{10};
constexpr std::chrono::milliseconds kMaxAcceptRetry{1000};
// After our pipe ends close: how long a child may take to exit before SIGTERM (short: a server
// on pipe://stdio keeps running after its one peer left, and SIGTERM asks it to shut down
// gracefully), then how long after SIGTERM before SIGKILL.
constexpr std::chrono::milliseconds kTermAfter{100};
constexpr std::chrono::seconds kKillAfter{2};
// When a child's stdout ends, how long a read waits for it to exit to say how it ended.
constexpr std::chrono::milliseconds kExitWait{200};
// Without a pidfd, how often the reaper asks waitpid.
constexpr std::chrono::milliseconds kReapPoll{10};
// sun_path (108) less the leading NUL and "courier-pipe-", less the NUL Asio keeps.
constexpr size_t kMaxName = 93;

Traits PipeTraits(Reach reach) {
  return Traits{.message_boundaries = false,
                .reliable = true,
                .max_message = 0,
                .duplex = false,
                .reach = reach};
}

absl::Status BadAddress(std::string_view address, std::string_view problem) {
  return absl::InvalidArgumentError(
      absl::StrCat("pipe address '", AsAbsl(address), "': ", AsAbsl(problem)));
}

// ---- pipe://stdio ----------------------------------------------------------------------------

std::atomic<bool> stdio_taken{false};

struct FdPair {
  UniqueFd read;
  UniqueFd write;
};

// This process's stdin and stdout as close-on-exec copies; fd 0 then reads /dev/null and fd 1
// writes to stderr.
absl::StatusOr<FdPair> TakeStdio() {
  if (stdio_taken.exchange(true)) {
    return absl::AlreadyExistsError("pipe://stdio: this process's stdio is already in use");
  }
  FdPair fds{UniqueFd(::fcntl(0, F_DUPFD_CLOEXEC, 3)), UniqueFd(::fcntl(1, F_DUPFD_CLOEXEC, 3))};
  if (!fds.read || !fds.write) {
    const int error = errno;
    stdio_taken = false;
    return ErrnoStatus(error, "pipe://stdio: copying stdin and stdout");
  }
  UniqueFd null(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!null || ::dup2(null.get(), 0) < 0 || ::dup2(2, 1) < 0) {
    const int error = errno;
    stdio_taken = false;
    return ErrnoStatus(error, "pipe://stdio: redirecting fds 0 and 1");
  }
  return fds;
}

FdStreamParts StdioParts(FdPair fds) {
  return FdStreamParts{.read_fd = std::move(fds.read),
                       .write_fd = std::move(fds.write),
                       .scheme = "pipe",
                       .peer = PeerInfo{.address = "pipe://stdio", .credentials = std::nullopt},
                       .traits = PipeTraits(Reach::kParentChild),
                       .on_close = nullptr};
}

// ---- spawned children ------------------------------------------------------------------------

// A child we spawned: says how it ended, and reaps it after the connection closes.
class Child : public std::enable_shared_from_this<Child> {
 public:
  Child(asio::any_io_executor executor, pid_t pid, std::string program)
      : pid_(pid),
        program_(std::move(program)),
        pidfd_(executor),
        wait_timer_(executor),
        reap_timer_(executor) {
    const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (fd >= 0) {
      internal::SetCloseOnExec(fd);
      asio::error_code ec;
      pidfd_.assign(fd, ec);
      if (ec) ::close(fd);
    }
  }
  // Last resort (the reactor went away before the reaper finished): no zombie.
  ~Child() {
    if (reaped_) return;
    if (!Collect()) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
    }
  }

  pid_t pid() const { return pid_; }
  const std::string& program() const { return program_; }
  bool closed() const { return closed_; }
  asio::any_io_executor Executor() { return wait_timer_.get_executor(); }

  // The read result for the end of the child's stdout: 0 if it exited with status 0 (or still
  // runs), else kUnavailable saying how it ended. Remembered.
  absl::StatusOr<size_t> EndOfStream() {
    if (!end_) end_ = Describe();
    return *end_;
  }
  const std::optional<absl::StatusOr<size_t>>& end() const { return end_; }

  // Waits (at most kExitWait) for the child to exit, for EndOfStream to say how.
  asio::awaitable<void> WaitForExit() {
    using namespace asio::experimental::awaitable_operators;
    std::shared_ptr<Child> self = shared_from_this();
    if (Exited()) co_return;
    asio::steady_timer timer(wait_timer_.get_executor(), kExitWait);
    if (pidfd_.is_open()) {
      co_await (
          pidfd_.async_wait(asio::posix::stream_descriptor::wait_read, internal::use_nothrow) ||
          timer.async_wait(internal::use_nothrow));
      co_return;
    }
    // No pidfd: poll.
    while (!closed_ && !Exited() && Clock::now() < timer.expiry()) {
      wait_timer_.expires_after(kReapPoll);
      auto [ec] = co_await wait_timer_.async_wait(internal::use_nothrow);
      if (ec) break;
    }
  }

  // Our pipe ends are closed: reap the child, SIGTERM after kTermAfter, SIGKILL kKillAfter later.
  void Reap() {
    closed_ = true;
    asio::error_code ignored;
    wait_timer_.cancel();
    pidfd_.cancel(ignored);  // ends a WaitForExit
    if (Collect()) return;
    reap_deadline_ = Clock::now() + kTermAfter;
    WatchReap();
  }

 private:
  // waitpid(WNOHANG): true once the child is reaped.
  bool Collect() {
    if (reaped_) return true;
    int status = 0;
    pid_t got;
    do {
      got = ::waitpid(pid_, &status, WNOHANG);
    } while (got < 0 && errno == EINTR);
    if (got == pid_ || (got < 0 && errno == ECHILD)) {
      reaped_ = true;
      if (got == pid_) status_ = status;
      asio::error_code ignored;
      pidfd_.close(ignored);
      reap_timer_.cancel();
      return true;
    }
    return false;
  }

  void WatchReap() {
    if (Collect()) return;
    const Clock::time_point now = Clock::now();
    if (now >= reap_deadline_) {
      ::kill(pid_, signals_sent_ == 0 ? SIGTERM : SIGKILL);
      ++signals_sent_;
      reap_deadline_ = now + kKillAfter;
    }
    // After SIGKILL, keep watching until the kernel lets us reap it.
    reap_timer_.expires_at(pidfd_.is_open() ? reap_deadline_
                                            : std::min(reap_deadline_, now + kReapPoll));
    reap_timer_.async_wait([self = shared_from_this()](asio::error_code ec) {
      if (ec == asio::error::operation_aborted && self->reaped_) return;
      self->WatchReap();
    });
    if (pidfd_.is_open() && !pidfd_waiting_) {
      pidfd_waiting_ = true;
      pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                        [self = shared_from_this()](asio::error_code ec) {
                          self->pidfd_waiting_ = false;
                          if (self->reaped_) return;
                          if (self->Collect()) return;
                          if (!ec) self->WatchReap();
                        });
    }
  }

  // Whether the child has exited (without reaping it), recording how.
  bool Exited() {
    if (reaped_) return true;
    siginfo_t info{};
    if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      return false;
    }
    if (info.si_pid != pid_) return false;
    if (info.si_code == CLD_EXITED) {
      status_ = W_EXITCODE(info.si_status, 0);
    } else {
      status_ = info.si_status;  // the signal, as WTERMSIG reads it
    }
    return true;
  }

  absl::StatusOr<size_t> Describe() {
    Exited();
    const std::string who = absl::StrCat("pipe child '", program_, "' (pid ", pid_, ")");
    if (!status_) return size_t{0};
    if (WIFEXITED(*status_)) {
      if (WEXITSTATUS(*status_) == 0) return size_t{0};
      return absl::UnavailableError(
          absl::StrCat(who, " exited with status ", WEXITSTATUS(*status_)));
    }
    if (WIFSIGNALED(*status_)) {
      return absl::UnavailableError(absl::StrCat(who, " was killed by signal ", WTERMSIG(*status_),
                                                 " (", ::strsignal(WTERMSIG(*status_)), ")"));
    }
    return absl::UnavailableError(absl::StrCat(who, " ended"));
  }

  pid_t pid_;
  std::string program_;
  asio::posix::stream_descriptor pidfd_;  // readable once the child exits; may be closed
  asio::steady_timer wait_timer_;
  asio::steady_timer reap_timer_;
  Clock::time_point reap_deadline_;
  int signals_sent_ = 0;
  std::optional<int> status_;  // wait status, once known
  std::optional<absl::StatusOr<size_t>> end_;
  bool pidfd_waiting_ = false;
  bool reaped_ = false;
  bool closed_ = false;
};

// The fd stream to and from a child, whose end of stream says how the child ended.
class SpawnConnection final : public Connection {
 public:
  SpawnConnection(std::unique_ptr<Connection> inner, std::shared_ptr<Child> child)
      : inner_(std::move(inner)), child_(std::move(child)) {}
  ~SpawnConnection() override { Close(); }

  void AsyncRead(asio::mutable_buffer into, ReadHandler done) override {
    if (!child_->closed() && child_->end()) {
      asio::post(inner_->executor(), [result = *child_->end(), done = std::move(done)]() mutable {
        done(std::move(result));
      });
      return;
    }
    inner_->AsyncRead(
        into, [child = child_, done = std::move(done)](absl::StatusOr<size_t> result) mutable {
          if (!result.ok() || *result != 0 || child->closed()) return done(std::move(result));
          asio::co_spawn(child->Executor(), child->WaitForExit(),
                         [child, done = std::move(done)](std::exception_ptr) mutable {
                           if (child->closed())
                             return done(absl::CancelledError("pipe read: cancelled"));
                           done(child->EndOfStream());
                         });
        });
  }

  asio::awaitable<absl::StatusOr<size_t>> Read(asio::mutable_buffer into) override {
    std::shared_ptr<Child> child = child_;
    if (!child->closed() && child->end()) co_return *child->end();
    absl::StatusOr<size_t> result = co_await inner_->Read(into);
    if (!result.ok() || *result != 0 || child->closed()) co_return result;
    co_await child->WaitForExit();
    if (child->closed()) co_return absl::CancelledError("pipe read: cancelled");
    co_return child->EndOfStream();
  }

  void AsyncWrite(std::span<const asio::const_buffer> data, WriteHandler done) override {
    inner_->AsyncWrite(data, std::move(done));
  }
  asio::awaitable<absl::Status> Write(std::span<const asio::const_buffer> data) override {
    return inner_->Write(data);
  }
  absl::StatusOr<size_t> TryWrite(std::span<const asio::const_buffer> data) override {
    return inner_->TryWrite(data);
  }
  // The inner connection's on_close reaps the child.
  void Close() override { inner_->Close(); }
  Traits traits() const override { return inner_->traits(); }
  PeerInfo peer() const override { return inner_->peer(); }
  asio::any_io_executor executor() const override { return inner_->executor(); }

 private:
  std::unique_ptr<Connection> inner_;
  std::shared_ptr<Child> child_;
};

absl::StatusOr<std::unique_ptr<Connection>> Spawn(asio::any_io_executor executor,
                                                  std::string_view address) {
  absl::StatusOr<std::vector<std::string>> words = SplitCommandLine(address);
  if (!words.ok()) return words.status();
  const std::string& program = words->front();
  int to_child[2];
  int from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe spawn: pipe2");
  UniqueFd child_stdin(to_child[0]), our_write(to_child[1]);
  if (::pipe2(from_child, O_CLOEXEC) != 0) return ErrnoStatus(errno, "pipe spawn: pipe2");
  UniqueFd our_read(from_child[0]), child_stdout(from_child[1]);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, child_stdin.get(), 0);
  posix_spawn_file_actions_adddup2(&actions, child_stdout.get(), 1);
  posix_spawn_file_actions_addclosefrom_np(&actions, 3);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t defaults, empty;
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigemptyset(&empty);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setsigmask(&attributes, &empty);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<char*> argv;
  for (std::string& word : *words) argv.push_back(word.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int error =
      ::posix_spawnp(&pid, program.c_str(), &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) {
    return absl::UnavailableError(
        absl::StrCat("pipe spawn '", program, "': ", std::strerror(error)));
  }
  child_stdin = UniqueFd();
  child_stdout = UniqueFd();

  auto child = std::make_shared<Child>(executor, pid, program);
  FdStreamParts parts{
      .read_fd = std::move(our_read),
      .write_fd = std::move(our_write),
      .scheme = "pipe",
      .peer = PeerInfo{.address = absl::StrCat("pipe://", program, " (pid ", pid, ")"),
                       .credentials =
                           PeerCredentials{.pid = pid, .uid = ::getuid(), .gid = ::getgid()}},
      .traits = PipeTraits(Reach::kParentChild),
      .on_close = [child] { child->Reap(); }};
  return std::unique_ptr<Connection>(std::make_unique<SpawnConnection>(
      internal::NewFdStreamConnection(executor, std::move(parts)), std::move(child)));
}

// ---- listeners -------------------------------------------------------------------------------

struct Ready {
  FdPair fds;
  PeerInfo peer;
  Reach reach;
};

// What a listener shares with its accept loop and handshakes.
struct ListenerState {
  explicit ListenerState(asio::any_io_executor ex) : signal(ex, Clock::time_point::max()) {}
  std::deque<absl::StatusOr<Ready>> ready;
  asio::steady_timer signal;  // cancelled when `ready` grows or on Close
  bool closed = false;
  bool loop_running = false;
  size_t handshakes = 0;
  void Report(absl::Status error) {
    if (!ready.empty() && !ready.back().ok()) return;
    ready.push_back(std::move(error));
    signal.cancel();
  }
  void Push(Ready entry) {
    ready.push_back(std::move(entry));
    signal.cancel();
  }
};

// Is `fd` a pipe or FIFO open for `mode` (O_RDONLY or O_WRONLY)?
bool IsPipeEnd(int fd, int mode) {
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISFIFO(st.st_mode)) return false;
  const int flags = ::fcntl(fd, F_GETFL);
  return flags >= 0 && (flags & O_ACCMODE) == mode;
}

asio::awaitable<bool> WaitReadable(stream_protocol::socket& socket, Clock::time_point deadline) {
  using namespace asio::experimental::awaitable_operators;
  asio::steady_timer timer(socket.get_executor(), deadline);
  auto result =
      co_await (socket.async_wait(stream_protocol::socket::wait_read, internal::use_nothrow) ||
                timer.async_wait(internal::use_nothrow));
  if (result.index() != 0) co_return false;
  auto [ec] = std::get<0>(result);
  co_return !ec;
}

class PipeListener final : public Listener {
 public:
  // `acceptor`: the rendezvous socket of a @NAME listener; nullopt for stdio (whose one
  // connection is already in the queue).
  PipeListener(asio::any_io_executor executor, std::optional<stream_protocol::acceptor> acceptor,
               Endpoint local)
      : executor_(std::move(executor)),
        local_(std::move(local)),
        state_(std::make_shared<ListenerState>(executor_)) {
    if (acceptor) acceptor_ = std::make_shared<stream_protocol::acceptor>(*std::move(acceptor));
  }
  ~PipeListener() override { Close(); }

  void Offer(Ready ready) { state_->Push(std::move(ready)); }

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Accept(
      asio::any_io_executor connection_executor) override {
    std::shared_ptr<ListenerState> state = state_;
    const absl::Status cancelled =
        absl::CancelledError(absl::StrCat("pipe accept on ", local_.address, ": cancelled"));
    if (acceptor_ && !state->loop_running && !state->closed) {
      state->loop_running = true;
      asio::co_spawn(executor_, AcceptLoop(acceptor_, state), asio::detached);
    }
    for (;;) {
      if (state->closed) co_return cancelled;
      if (!state->ready.empty()) {
        absl::StatusOr<Ready> next = std::move(state->ready.front());
        state->ready.pop_front();
        if (!next.ok()) co_return next.status();
        co_return internal::NewFdStreamConnection(
            connection_executor, FdStreamParts{.read_fd = std::move(next->fds.read),
                                               .write_fd = std::move(next->fds.write),
                                               .scheme = "pipe",
                                               .peer = std::move(next->peer),
                                               .traits = PipeTraits(next->reach),
                                               .on_close = nullptr});
      }
      state->signal.expires_at(Clock::time_point::max());
      co_await state->signal.async_wait(internal::use_nothrow);
    }
  }

  Endpoint local_endpoint() const override { return local_; }

  void Close() override {
    if (state_->closed) return;
    state_->closed = true;
    state_->ready.clear();
    if (acceptor_) {
      asio::error_code ignored;
      acceptor_->close(ignored);
    }
    state_->signal.cancel();
  }

 private:
  static asio::awaitable<void> AcceptLoop(std::shared_ptr<stream_protocol::acceptor> acceptor,
                                          std::shared_ptr<ListenerState> state) {
    const asio::any_io_executor ex = acceptor->get_executor();
    asio::steady_timer backoff(ex);
    std::chrono::milliseconds delay = kFirstAcceptRetry;
    while (!state->closed) {
      auto [ec, socket] = co_await acceptor->async_accept(internal::use_nothrow);
      if (state->closed) break;
      if (ec == asio::error::connection_aborted) continue;
      if (ec) {
        state->Report(absl::ResourceExhaustedError(absl::StrCat("pipe accept: ", ec.message())));
        backoff.expires_after(delay);
        co_await backoff.async_wait(internal::use_nothrow);
        delay = std::min(delay * 2, kMaxAcceptRetry);
        continue;
      }
      delay = kFirstAcceptRetry;
      if (state->handshakes + state->ready.size() >= kMaxHandshakes) continue;
      ++state->handshakes;
      asio::co_spawn(ex, Handshake(std::move(socket), state), asio::detached);
    }
    state->loop_running = false;
  }

  static asio::awaitable<void> Handshake(stream_protocol::socket socket,
                                         std::shared_ptr<ListenerState> state) {
    std::optional<Ready> ready = co_await ReceivePipes(socket);
    --state->handshakes;
    if (state->closed || !ready) co_return;
    state->Push(*std::move(ready));
  }

  // The client's hello and pipe ends; nullopt (the client is dropped) for anything else.
  static asio::awaitable<std::optional<Ready>> ReceivePipes(stream_protocol::socket& socket) {
    internal::SetCloseOnExec(socket.native_handle());
    std::optional<PeerCredentials> peer = internal::ReadPeerCredentials(socket.native_handle());
    if (!peer || peer->uid != ::geteuid()) co_return std::nullopt;
    const Clock::time_point deadline = Clock::now() + kHandshakeTimeout;
    std::array<std::byte, kHello.size() + 1> hello{};
    for (;;) {
      absl::StatusOr<internal::Received> got =
          internal::ReceiveWithFds(socket.native_handle(), hello, 2);
      if (!got.ok() || got->eof) co_return std::nullopt;
      if (got->would_block) {
        if (!co_await WaitReadable(socket, deadline)) co_return std::nullopt;
        continue;
      }
      if (got->fds_truncated || got->fds.size() != 2 || got->bytes != kHello.size() ||
          std::memcmp(hello.data(), kHello.data(), kHello.size()) != 0 ||
          !IsPipeEnd(got->fds[0].get(), O_RDONLY) || !IsPipeEnd(got->fds[1].get(), O_WRONLY)) {
        co_return std::nullopt;
      }
      co_return Ready{.fds = FdPair{std::move(got->fds[0]), std::move(got->fds[1])},
                      .peer = PeerInfo{.address = absl::StrCat("pipe:pid=", peer->pid, ",uid=",
                                                               peer->uid, ",gid=", peer->gid),
                                       .credentials = peer},
                      .reach = Reach::kSameHost};
    }
  }

  asio::any_io_executor executor_;
  std::shared_ptr<stream_protocol::acceptor> acceptor_;
  Endpoint local_;
  std::shared_ptr<ListenerState> state_;
};

// ---- the transport ---------------------------------------------------------------------------

enum class Form { kStdio, kNamed, kSpawn };

Form FormOf(std::string_view address) {
  if (address == "stdio") return Form::kStdio;
  if (!address.empty() && address[0] == '@') return Form::kNamed;
  return Form::kSpawn;
}

// "@NAME" → the abstract socket's sun_path, or kInvalidArgument.
absl::StatusOr<std::string> RendezvousName(std::string_view address) {
  std::string_view name = address.substr(1);
  if (name.empty()) return BadAddress(address, "empty name after '@'");
  if (name.size() > kMaxName) {
    return BadAddress(address, absl::StrCat("name longer than ", kMaxName, " bytes"));
  }
  if (name.find('\0') != std::string_view::npos) return BadAddress(address, "NUL in the name");
  return absl::StrCat(absl::string_view("\0", 1), "courier-pipe-", AsAbsl(name));
}

class PipeTransport final : public Transport {
 public:
  explicit PipeTransport(asio::any_io_executor executor) : executor_(std::move(executor)) {}

  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> Connect(Endpoint to) override {
    switch (FormOf(to.address)) {
      case Form::kStdio: {
        absl::StatusOr<FdPair> fds = TakeStdio();
        if (!fds.ok()) co_return fds.status();
        co_return internal::NewFdStreamConnection(executor_, StdioParts(*std::move(fds)));
      }
      case Form::kSpawn:
        co_return Spawn(executor_, to.address);
      case Form::kNamed:
        break;
    }
    co_return co_await ConnectNamed(to.address);
  }

  absl::StatusOr<std::unique_ptr<Listener>> Listen(const Endpoint& at) override {
    switch (FormOf(at.address)) {
      case Form::kStdio: {
        absl::StatusOr<FdPair> fds = TakeStdio();
        if (!fds.ok()) return fds.status();
        auto listener =
            std::make_unique<PipeListener>(executor_, std::nullopt, Endpoint{"pipe", "stdio"});
        listener->Offer(Ready{.fds = *std::move(fds),
                              .peer = PeerInfo{.address = "pipe://stdio"},
                              .reach = Reach::kParentChild});
        return listener;
      }
      case Form::kSpawn:
        return BadAddress(at.address,
                          "a command line is for Connect; listen on pipe://stdio or pipe://@NAME");
      case Form::kNamed:
        break;
    }
    absl::StatusOr<std::string> sun_path = RendezvousName(at.address);
    if (!sun_path.ok()) return sun_path.status();
    stream_protocol::acceptor acceptor(executor_);
    absl::StatusOr<std::optional<internal::FileId>> listening =
        internal::ListenUnix(acceptor, stream_protocol::endpoint(*sun_path), nullptr, 0600,
                             absl::StrCat("pipe listen ", at.address));
    if (!listening.ok()) return listening.status();
    return std::make_unique<PipeListener>(executor_, std::move(acceptor), at);
  }

 private:
  asio::awaitable<absl::StatusOr<std::unique_ptr<Connection>>> ConnectNamed(std::string address) {
    const std::string what = absl::StrCat("pipe connect ", address);
    absl::StatusOr<std::string> sun_path = RendezvousName(address);
    if (!sun_path.ok()) co_return sun_path.status();
    absl::StatusOr<stream_protocol::socket> connected =
        co_await internal::ConnectUnix(executor_, stream_protocol::endpoint(*sun_path), what);
    if (!connected.ok()) co_return connected.status();
    stream_protocol::socket socket = *std::move(connected);
    internal::SetCloseOnExec(socket.native_handle());
    std::optional<PeerCredentials> server = internal::ReadPeerCredentials(socket.native_handle());
    if (!server || server->uid != ::geteuid()) {
      co_return absl::PermissionDeniedError(
          absl::StrCat(what, ": the server runs as another user"));
    }
    int to_server[2];
    int from_server[2];
    if (::pipe2(to_server, O_CLOEXEC) != 0) co_return ErrnoStatus(errno, what);
    UniqueFd server_read(to_server[0]), our_write(to_server[1]);
    if (::pipe2(from_server, O_CLOEXEC) != 0) co_return ErrnoStatus(errno, what);
    UniqueFd our_read(from_server[0]), server_write(from_server[1]);
    const int fds[] = {server_read.get(), server_write.get()};
    absl::StatusOr<size_t> sent = internal::SendWithFds(
        socket.native_handle(), std::as_bytes(std::span<const char>(kHello)), fds);
    if (!sent.ok()) {
      co_return absl::UnavailableError(absl::StrCat(what, ": ", sent.status().message()));
    }
    if (*sent != kHello.size()) {
      co_return absl::UnavailableError(absl::StrCat(what, ": the server is not reading"));
    }
    co_return internal::NewFdStreamConnection(
        executor_, FdStreamParts{.read_fd = std::move(our_read),
                                 .write_fd = std::move(our_write),
                                 .scheme = "pipe",
                                 .peer = PeerInfo{.address = absl::StrCat("pipe://", address),
                                                  .credentials = server},
                                 .traits = PipeTraits(Reach::kSameHost),
                                 .on_close = nullptr});
  }

  asio::any_io_executor executor_;
};

}  // namespace

absl::StatusOr<std::vector<std::string>> SplitCommandLine(std::string_view command) {
  std::vector<std::string> words;
  std::string word;
  bool in_word = false;
  for (size_t i = 0; i < command.size(); ++i) {
    const char c = command[i];
    if (c == ' ' || c == '\t') {
      if (in_word) words.push_back(std::move(word));
      word.clear();
      in_word = false;
      continue;
    }
    in_word = true;
    if (c == '\\') {
      if (++i == command.size()) return BadAddress(command, "a trailing backslash");
      word += command[i];
    } else if (c == '\'') {
      const size_t close = command.find('\'', i + 1);
      if (close == std::string_view::npos) {
        return BadAddress(command, absl::StrCat("unterminated ' at offset ", i));
      }
      word.append(command.substr(i + 1, close - i - 1));
      i = close;
    } else if (c == '"') {
      const size_t open = i;
      for (++i;; ++i) {
        if (i == command.size()) {
          return BadAddress(command, absl::StrCat("unterminated \" at offset ", open));
        }
        if (command[i] == '"') break;
        if (command[i] == '\\' && i + 1 < command.size() &&
            (command[i + 1] == '"' || command[i + 1] == '\\')) {
          ++i;
        }
        word += command[i];
      }
    } else {
      word += c;
    }
  }
  if (in_word) words.push_back(std::move(word));
  if (words.empty()) return BadAddress(command, "empty command");
  return words;
}

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& /*options*/) {
  internal::IgnoreSigpipe();
  return std::make_unique<PipeTransport>(std::move(executor));
}

Endpoint LoopbackEndpoint() {
  static std::atomic<uint64_t> counter{0};
  return Endpoint{"pipe", absl::StrFormat("@courier-%d-%d", ::getpid(),
                                          counter.fetch_add(1, std::memory_order_relaxed))};
}

}  // namespace courier::transport::pipe
