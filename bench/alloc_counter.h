// Heap allocations counted by courier-bench's own global operator new (alloc_counter.cc), in
// the driver and in the --serve server process alike (both are this executable), so that the
// runner can report allocations per call on each side.
//
// What is counted: every call of a replaceable global operator new or new[] (plain, nothrow,
// aligned), from any thread and any library that allocates through it (libstdc++, protobuf,
// gRPC, kj/capnp, courier). Direct malloc/calloc/realloc calls are not counted. The cost is one
// relaxed atomic increment per allocation.
//
// Sanitizer builds (ASan, TSan, MSan) keep the runtime's own operator new, which checks
// new/delete pairing: there the counter is compiled out and AllocCounterEnabled() is false.
#pragma once

#include <cstdint>
#include <optional>

namespace courier::bench {

// False when this build does not replace operator new (a sanitizer build).
bool AllocCounterEnabled();

// Allocations so far in this process (all threads), or nullopt when the counter is compiled out.
std::optional<uint64_t> AllocationsSoFar();

// "operator new calls (...)" or "n/a (why)": for the report header.
const char* AllocCounterNote();

}  // namespace courier::bench
