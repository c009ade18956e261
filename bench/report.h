// The run as text on stdout: a header (machine, whether gRPC and Cap'n Proto are in, whether
// allocations are counted), one row per case with the absolute figures, the ratio table
// (courier/raw, gRPC/courier, capnp/courier) and the targets.
#pragma once

#include <cstdio>

#include "bench/results.h"

namespace courier::bench {

void PrintReport(const RunResult& run, std::FILE* out);

}  // namespace courier::bench
