// LowDescriptorLimit: lets a test run a process out of file descriptors, and back.
#pragma once

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

namespace courier::testing {

// Raises the soft descriptor limit back when it goes out of scope.
class LowDescriptorLimit {
 public:
  LowDescriptorLimit() {
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit low = saved_;
    low.rlim_cur = std::min<rlim_t>(saved_.rlim_cur, 256);
    ::setrlimit(RLIMIT_NOFILE, &low);
  }
  ~LowDescriptorLimit() {
    ReleaseDescriptors();
    ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  // Opens descriptors until the process has none left; true if it got there.
  bool UseAllDescriptors() {
    for (int i = 0; i < 4096; ++i) {
      int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (fd < 0) return errno == EMFILE;
      fillers_.push_back(fd);
    }
    return false;
  }
  // Frees one descriptor (for a socket the test opens next).
  void ReleaseOne() {
    if (fillers_.empty()) return;
    ::close(fillers_.back());
    fillers_.pop_back();
  }
  void ReleaseDescriptors() {
    for (int fd : fillers_) ::close(fd);
    fillers_.clear();
  }

 private:
  rlimit saved_{};
  std::vector<int> fillers_;
};

}  // namespace courier::testing
