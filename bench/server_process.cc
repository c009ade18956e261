#include "bench/server_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string_view>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/alloc_counter.h"
#include "transport/tls/dev_cert.h"

extern char** environ;

namespace courier::bench {
namespace {

// Writes all of `size` bytes (or gives up on an error); one writer at a time per process.
void WriteAll(int fd, const char* data, size_t size) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    data += n;
    size -= static_cast<size_t>(n);
  }
}

void WriteLine(int fd, const std::string& line) {
  std::string text = line + "\n";
  WriteAll(fd, text.data(), text.size());
}

std::atomic<void (*)()> server_cleanup{nullptr};

[[noreturn]] void Quit() {
  if (void (*cleanup)() = server_cleanup.load()) cleanup();
  _exit(0);
}

// Server side: answers "cpu" and "allocs" until "quit" or EOF, then ends the process. Fixed
// buffers only: the allocation count must not move because it was asked for.
void ControlLoop() {
  char pending[256];
  size_t used = 0;
  while (true) {
    if (used == sizeof(pending)) used = 0;  // an overlong line: drop it
    ssize_t n = read(STDIN_FILENO, pending + used, sizeof(pending) - used);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) Quit();
    used += static_cast<size_t>(n);
    char* line = pending;
    char* end = pending + used;
    char* newline;
    while ((newline = static_cast<char*>(
                std::memchr(line, '\n', static_cast<size_t>(end - line)))) != nullptr) {
      std::string_view command(line, static_cast<size_t>(newline - line));
      line = newline + 1;
      char reply[96];
      int length = -1;
      if (command == "cpu") {
        CpuTimes cpu = ProcessCpu();
        length = std::snprintf(reply, sizeof(reply), "cpu %.6f %.6f\n", cpu.user, cpu.system);
      } else if (command == "allocs") {
        // Read first, so that nothing this answer does is counted.
        std::optional<uint64_t> allocs = AllocationsSoFar();
        length = allocs ? std::snprintf(reply, sizeof(reply), "allocs %llu\n",
                                        static_cast<unsigned long long>(*allocs))
                        : std::snprintf(reply, sizeof(reply), "allocs n/a\n");
      } else if (command == "quit") {
        Quit();
      }
      if (length > 0) WriteAll(STDOUT_FILENO, reply, static_cast<size_t>(length));
    }
    used = static_cast<size_t>(end - line);
    std::memmove(pending, line, used);
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(const std::string& exe,
                                                                    std::string_view system,
                                                                    std::string_view transport,
                                                                    int pin_cpu) {
  int to_child[2];
  int from_child[2];
  if (pipe2(to_child, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  if (pipe2(from_child, O_CLOEXEC) != 0) {
    close(to_child[0]);
    close(to_child[1]);
    return absl::ErrnoToStatus(errno, "pipe2");
  }
  std::vector<std::string> args = {exe, "--serve", std::string(system), std::string(transport)};
  if (pin_cpu >= 0) {
    args.push_back("--pin-cpu");
    args.push_back(std::to_string(pin_cpu));
  }
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  // posix_spawn rather than fork: the driver may already run gRPC's threads.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, to_child[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, from_child[1], STDOUT_FILENO);
  pid_t pid = 0;
  int error = posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(to_child[0]);
  close(from_child[1]);
  if (error != 0) {
    close(to_child[1]);
    close(from_child[0]);
    return absl::ErrnoToStatus(error, absl::StrCat("spawn ", exe));
  }
  std::unique_ptr<ServerProcess> server(new ServerProcess(pid, to_child[1], from_child[0]));
  absl::StatusOr<std::string> endpoint = server->ReadLine("endpoint ", 20000);
  if (!endpoint.ok()) {
    return absl::UnavailableError(absl::StrCat(std::string(system), " server on ",
                                               std::string(transport),
                                               " did not start: ", endpoint.status().message()));
  }
  server->endpoint_ = *endpoint;
  return server;
}

ServerProcess::~ServerProcess() { Stop(); }

absl::StatusOr<CpuTimes> ServerProcess::Cpu() {
  WriteLine(to_child_, "cpu");
  absl::StatusOr<std::string> line = ReadLine("cpu ", 10000);
  if (!line.ok()) return line.status();
  CpuTimes cpu;
  if (std::sscanf(line->c_str(), "%lf %lf", &cpu.user, &cpu.system) != 2) {
    return absl::DataLossError("server sent a bad cpu line: " + *line);
  }
  return cpu;
}

absl::StatusOr<uint64_t> ServerProcess::Allocs() {
  WriteLine(to_child_, "allocs");
  absl::StatusOr<std::string> line = ReadLine("allocs ", 10000);
  if (!line.ok()) return line.status();
  if (*line == "n/a") return absl::UnimplementedError("the server counts no allocations");
  unsigned long long allocs = 0;
  if (std::sscanf(line->c_str(), "%llu", &allocs) != 1) {
    return absl::DataLossError("server sent a bad allocs line: " + *line);
  }
  return static_cast<uint64_t>(allocs);
}

void ServerProcess::Stop() {
  if (pid_ <= 0) return;
  WriteLine(to_child_, "quit");
  close(to_child_);
  close(from_child_);
  int status = 0;
  for (int i = 0; i < 500; ++i) {
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  kill(pid_, SIGKILL);
  waitpid(pid_, &status, 0);
  pid_ = 0;
}

absl::StatusOr<std::string> ServerProcess::ReadLine(std::string_view keyword, int timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    size_t newline;
    while ((newline = buffered_.find('\n')) != std::string::npos) {
      std::string line = buffered_.substr(0, newline);
      buffered_.erase(0, newline + 1);
      if (line.starts_with(keyword)) return line.substr(keyword.size());
      if (line.starts_with("error ")) return absl::UnavailableError(line.substr(6));
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return absl::DeadlineExceededError("server did not answer in time");
    pollfd p{from_child_, POLLIN, 0};
    int ready = poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno != EINTR) return absl::ErrnoToStatus(errno, "poll");
    if (ready <= 0) continue;
    char chunk[512];
    ssize_t n = read(from_child_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return absl::UnavailableError("server exited (see its stderr above)");
    buffered_.append(chunk, static_cast<size_t>(n));
  }
}

void SetServerCleanup(void (*cleanup)()) { server_cleanup.store(cleanup); }

void RemoveTlsLoopbackFilesOnQuit() {
  static std::string* directory = nullptr;
  absl::StatusOr<transport::tls::LoopbackFiles> files = transport::tls::GetLoopbackFiles();
  if (!files.ok() || directory) return;
  directory = new std::string(files->directory);
  SetServerCleanup([] {
    std::error_code ignored;
    std::filesystem::remove_all(*directory, ignored);
  });
}

int ServeMain(System& system, std::string_view transport, int pin_cpu) {
  signal(SIGPIPE, SIG_IGN);
  if (pin_cpu >= 0) {
    if (absl::Status s = PinToCpu(pin_cpu); !s.ok()) {
      std::fprintf(stderr, "courier-bench server: %s\n", s.ToString().c_str());
    }
  }
  std::thread(ControlLoop).detach();
  absl::Status status = system.Serve(transport, [](const std::string& endpoint) {
    WriteLine(STDOUT_FILENO, "endpoint " + endpoint);
  });
  WriteLine(STDOUT_FILENO, "error " + status.ToString());
  return 1;
}

}  // namespace courier::bench
