#include "rpc/log.h"

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

}  // namespace

void SetLogSink(LogSink sink) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  Sink() = std::move(sink);
}

void Log(LogSeverity severity, std::string_view message) {
  std::lock_guard<std::mutex> lock(SinkMutex());
  if (Sink()) {
    Sink()(severity, message);
    return;
  }
  const char* tag = severity == LogSeverity::kError     ? "E"
                    : severity == LogSeverity::kWarning ? "W"
                                                        : "I";
  std::fprintf(stderr, "courier %s %.*s\n", tag, static_cast<int>(message.size()), message.data());
}

}  // namespace courier
