#include "tests/testing/resource_ledger.h"

#include <dirent.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "asio/steady_timer.hpp"

namespace courier::testing {

using Clock = std::chrono::steady_clock;

std::map<int, std::string> ResourceLedger::OpenFds() {
  std::map<int, std::string> fds;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return fds;
  const int own = ::dirfd(dir);
  while (const dirent* entry = ::readdir(dir)) {
    int fd = 0;
    if (!absl::SimpleAtoi(entry->d_name, &fd) || fd == own) continue;
    char target[256];
    const std::string path = absl::StrCat("/proc/self/fd/", fd);
    const ssize_t n = ::readlink(path.c_str(), target, sizeof(target) - 1);
    fds.emplace(fd, n > 0 ? std::string(target, static_cast<size_t>(n)) : std::string("?"));
  }
  ::closedir(dir);
  return fds;
}

size_t ResourceLedger::Threads() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Threads:", 0) != 0) continue;
    size_t threads = 0;
    return absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(8)), &threads) ? threads : 0;
  }
  return 0;
}

ResourceLedger::ResourceLedger(const Server* server) : fds_(OpenFds()) {
  Track("threads", [] { return Threads(); });
  if (server != nullptr) {
    Track("server connections", [server] { return server->connections(); });
    Track("server active calls", [server] { return server->active_calls(); });
  }
}

void ResourceLedger::Track(std::string name, std::function<size_t()> count) {
  const size_t baseline = count();
  counters_.push_back(Counter{std::move(name), std::move(count), baseline});
}

std::string ResourceLedger::Excess() const {
  std::vector<std::string> excess;
  const std::map<int, std::string> fds = OpenFds();
  if (fds.size() > fds_.size()) {
    std::vector<std::string> added;
    for (const auto& [fd, target] : fds) {
      auto before = fds_.find(fd);
      if (before == fds_.end() || before->second != target) {
        added.push_back(absl::StrCat(fd, " ", target));
      }
    }
    excess.push_back(absl::StrCat("fds: ", fds_.size(), " -> ", fds.size(),
                                  " (new: ", absl::StrJoin(added, ", "), ")"));
  }
  for (const Counter& counter : counters_) {
    const size_t now = counter.count();
    if (now > counter.baseline) {
      excess.push_back(absl::StrCat(counter.name, ": ", counter.baseline, " -> ", now));
    }
  }
  return absl::StrJoin(excess, ", ");
}

::testing::AssertionResult ResourceLedger::ExpectBackToBaseline(asio::io_context& io,
                                                                std::chrono::milliseconds bound) {
  const Clock::time_point until = Clock::now() + bound;
  // A pending tick keeps run_one_until waiting (instead of returning at once when `io` has no
  // work) and bounds how long a change made outside `io` (a thread ending) goes unseen.
  asio::steady_timer tick(io);
  bool ticking = false;
  std::string excess = Excess();
  while (!excess.empty() && Clock::now() < until) {
    if (!ticking) {
      ticking = true;
      tick.expires_after(std::chrono::milliseconds(5));
      tick.async_wait([&ticking](std::error_code) { ticking = false; });
    }
    io.restart();
    io.run_one_until(until);
    excess = Excess();
  }
  if (ticking) {  // the handler refers to this frame: let it run before we return
    tick.cancel();
    while (ticking) {
      io.restart();
      io.run_one();
    }
  }
  if (excess.empty()) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "not back to baseline: " << excess << " after " << bound.count() << " ms";
}

}  // namespace courier::testing
