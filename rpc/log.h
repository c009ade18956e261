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

// Log() for lines a peer can cause (a connection closed for a protocol error, say): at most
// kLogBurst lines at once and kLogLinesPerSecond after that, process-wide; the next line that
// gets through says how many were suppressed. SetLogSink resets the budget. Thread-safe.
inline constexpr int kLogBurst = 100;
inline constexpr int kLogLinesPerSecond = 10;
void LogRateLimited(LogSeverity severity, std::string_view message);

}  // namespace courier
