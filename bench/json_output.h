// The run as JSON: every figure, the ratios, the targets and the machine. Hand-written (no JSON
// library dependency); the layout is documented in bench/README.md.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "bench/results.h"

namespace courier::bench {

std::string ToJson(const RunResult& run);
// kUnavailable naming `path` if it cannot be written.
absl::Status WriteJsonFile(const RunResult& run, const std::string& path);

}  // namespace courier::bench
