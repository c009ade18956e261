#include "abuse/process.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace courier::abuse {

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

namespace {

std::optional<std::string> ReadWhole(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// "VmRSS:     1234 kB" → 1234, or -1.
long KiBField(const std::string& status, std::string_view key) {
  size_t at = status.find(key);
  if (at == std::string::npos) return -1;
  return std::strtol(status.c_str() + at + key.size(), nullptr, 10);
}

// The fields of /proc/PID/stat after "(comm)", which may itself hold spaces and parentheses.
std::optional<std::vector<std::string>> StatFields(pid_t pid) {
  std::optional<std::string> stat = ReadWhole(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat) return std::nullopt;
  size_t close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream rest(stat->substr(close + 1));
  std::vector<std::string> fields;
  for (std::string f; rest >> f;) fields.push_back(f);
  return fields;
}

}  // namespace

std::optional<Memory> ReadMemory(pid_t pid) {
  std::optional<std::string> status = ReadWhole(absl::StrCat("/proc/", pid, "/status"));
  if (!status) return std::nullopt;
  long rss = KiBField(*status, "VmRSS:");
  long anon = KiBField(*status, "RssAnon:");
  if (rss < 0) return std::nullopt;  // a zombie has no VmRSS line
  return Memory{rss / 1024.0, anon < 0 ? 0 : anon / 1024.0};
}

std::optional<double> ReadCpuSeconds(pid_t pid) {
  std::optional<std::vector<std::string>> f = StatFields(pid);
  // After the comm: state is field 3 (index 0), utime 14 (index 11), stime 15 (index 12).
  if (!f || f->size() < 13) return std::nullopt;
  const double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::strtod((*f)[11].c_str(), nullptr) + std::strtod((*f)[12].c_str(), nullptr)) / ticks;
}

char ReadState(pid_t pid) {
  std::optional<std::vector<std::string>> f = StatFields(pid);
  if (!f || f->empty() || (*f)[0].empty()) return 0;
  return (*f)[0][0];
}

bool Exited(pid_t pid) {
  const char state = ReadState(pid);
  return state == 0 || state == 'Z' || state == 'X';
}

int CountOpenFds(pid_t pid) {
  DIR* dir = opendir(absl::StrCat("/proc/", pid, "/fd").c_str());
  if (dir == nullptr) return -1;
  int count = 0;
  while (dirent* entry = readdir(dir)) {
    if (entry->d_name[0] != '.') ++count;
  }
  closedir(dir);
  return count;
}

PeakSampler::PeakSampler(pid_t pid) : pid_(pid) {
  auto sample = [this] {
    if (std::optional<Memory> m = ReadMemory(pid_)) {
      if (m->rss_mib > peak_rss_.load()) peak_rss_.store(m->rss_mib);
      if (m->anon_mib > peak_anon_.load()) peak_anon_.store(m->anon_mib);
    }
  };
  sample();
  thread_ = std::thread([this, sample] {
    while (!stop_.load()) {
      sample();
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    sample();
  });
}

PeakSampler::~PeakSampler() { Stop(); }

void PeakSampler::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

Memory PeakSampler::peak() const { return Memory{peak_rss_.load(), peak_anon_.load()}; }

absl::StatusOr<Spawned> Spawn(const std::vector<std::string>& argv,
                              const std::string& stderr_path) {
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return absl::ErrnoToStatus(errno, "pipe2");
  int err_fd = -1;
  if (!stderr_path.empty()) {
    err_fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err_fd < 0) {
      close(out[0]);
      close(out[1]);
      return absl::ErrnoToStatus(errno, absl::StrCat("open ", stderr_path));
    }
  }
  // Everything exec needs, prepared before fork: the child may only make async-signal-safe calls.
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(out[1], STDOUT_FILENO);
    dup2(err_fd >= 0 ? err_fd : out[1], STDERR_FILENO);
    signal(SIGPIPE, SIG_DFL);
    execv(args[0], args.data());
    _exit(127);
  }
  close(out[1]);
  if (err_fd >= 0) close(err_fd);
  return Spawned{pid, out[0]};
}

absl::StatusOr<std::string> ReadLineWithPrefix(int fd, std::string& buffer, std::string_view prefix,
                                               Clock::time_point deadline) {
  for (;;) {
    size_t start = 0;
    for (size_t nl; (nl = buffer.find('\n', start)) != std::string::npos; start = nl + 1) {
      std::string_view line(buffer.data() + start, nl - start);
      if (line.substr(0, prefix.size()) == prefix) {
        std::string rest(line.substr(prefix.size()));
        buffer.erase(0, nl + 1);
        return rest;
      }
    }
    buffer.erase(0, start);
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return absl::DeadlineExceededError(
          absl::StrCat("no \"", std::string(prefix), "\" line in time"));
    }
    pollfd p{fd, POLLIN, 0};
    int r = poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0)
      return absl::UnavailableError(
          absl::StrCat("EOF before a \"", std::string(prefix), "\" line"));
    buffer.append(chunk, static_cast<size_t>(n));
  }
}

std::optional<int> WaitWithDeadline(pid_t pid, Clock::time_point deadline) {
  for (;;) {
    int status = 0;
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    if (r < 0 && errno != EINTR) return -1;
    if (Clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

std::string DescribeWaitStatus(int status) {
  if (status == -1) return "unknown (waitpid failed)";
  if (WIFEXITED(status)) return absl::StrCat("exit ", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return absl::StrCat("killed by signal ", WTERMSIG(status), " (", strsignal(WTERMSIG(status)),
                        ")");
  }
  return absl::StrCat("status ", status);
}

std::string SelfExe() {
  char path[4096];
  ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "courier-abuse";
  return std::string(path, static_cast<size_t>(n));
}

long RaiseFileLimit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) != 0) return -1;
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_NOFILE, &limit);
  getrlimit(RLIMIT_NOFILE, &limit);
  return static_cast<long>(limit.rlim_cur);
}

}  // namespace courier::abuse
