// Collects courier's log lines (SetLogSink) while it lives, from any thread.
#pragma once

#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "rpc/log.h"

namespace courier::testing {

class LogCapture {
 public:
  LogCapture() {
    SetLogSink([this](LogSeverity, std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    });
  }
  ~LogCapture() { SetLogSink(nullptr); }
  LogCapture(const LogCapture&) = delete;
  LogCapture& operator=(const LogCapture&) = delete;

  std::vector<std::string> Lines() {
    std::lock_guard lock(mutex_);
    return lines_;
  }
  // The lines that contain `needle`.
  std::vector<std::string> Matching(std::string_view needle) {
    std::vector<std::string> out;
    for (const std::string& line : Lines()) {
      if (line.find(needle) != std::string::npos) out.push_back(line);
    }
    return out;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

}  // namespace courier::testing
