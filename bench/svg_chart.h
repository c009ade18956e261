// The run as an SVG chart a browser opens directly: grouped bars per transport, one bar per
// system, for p50 latency and for calls/s at 32 in flight, both at 64 B. Hand-written SVG.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "bench/results.h"

namespace courier::bench {

std::string ToSvg(const RunResult& run);
// kUnavailable naming `path` if it cannot be written.
absl::Status WriteSvgFile(const RunResult& run, const std::string& path);

}  // namespace courier::bench
