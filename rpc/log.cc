#include "rpc/log.h"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>

namespace courier {
namespace {

std::mutex& SinkMutex() {
  static std::mutex mu;
  return mu;
}
LogSink& Sink() {
  static LogSink sink;
  return sink;
}

struct Limiter {
  double tokens = kLogBurst;
  std::chrono::steady_clock::time_point last = std::chrono::steady_clock::now();
  uint64_t suppressed = 0;
};
Limiter& TheLimiter() {  // guarded by SinkMutex()
  static Limiter limiter;
  return limiter;
}

void WriteLocked(LogSeverity severity, std::string_view message) {
  if (Sink()) {
    Sink()(severity, message);
    return;
  }
  const char* tag = severity == LogSeverity::kError     ? "E"
                    : severity == LogSeverity::kWarning ? "W"
                                                        : "I";
  std::fprintf(stderr, "courier %s %.*s\n", tag, static_cast<int>(message.size()), message.data());
}

}  // namespace

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  Sink() = std::move(sink);
  TheLimiter() = Limiter();
}

void Log(LogSeverity severity, std::string_view message) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  WriteLocked(severity, message);
}

void LogRateLimited(LogSeverity severity, std::string_view message) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  Limiter& limiter = TheLimiter();
  const auto now = std::chrono::steady_clock::now();
  limiter.tokens = std::min<double>(
      kLogBurst, limiter.tokens + kLogLinesPerSecond *
                                      std::chrono::duration<double>(now - limiter.last).count());
  limiter.last = now;
  if (limiter.tokens < 1) {
    ++limiter.suppressed;
    return;
  }
  limiter.tokens -= 1;
  if (limiter.suppressed == 0) {
    WriteLocked(severity, message);
    return;
  }
  std::string line(message);
  line += " (" + std::to_string(limiter.suppressed) + " similar lines suppressed before this)";
  limiter.suppressed = 0;
  WriteLocked(severity, line);
}

}  // namespace courier
