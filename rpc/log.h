// courier's one log sink. The library logs only where no caller can receive a Status (a
// connection closed for a protocol error, a handler that threw); replace the sink to route it.
#pragma once

#include <functional>
#include <string_view>

namespace courier {

enum class LogSeverity { kInfo, kWarning, kError };

using LogSink = std::function<void(LogSeverity severity, std::string_view message)>;

// Replaces the sink (thread-safe); an empty function restores the default, one line to stderr.
void SetLogSink(LogSink sink);

// Thread-safe.
void Log(LogSeverity severity, std::string_view message);

}  // namespace courier
