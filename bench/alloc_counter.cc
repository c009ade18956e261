// courier-bench's replacement of the global operator new and delete: every overload the standard
// lets a program replace, each allocation counted with one relaxed atomic increment, memory from
// malloc/posix_memalign and returned with free. Linked into courier-bench itself (not a library),
// so the replacement is always in, and shared libraries (libstdc++, protobuf, gRPC, kj) resolve
// their operator new to it too.
#include "bench/alloc_counter.h"

#include <stdlib.h>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

// Sanitizer runtimes replace operator new themselves to check new/delete pairing; keep theirs.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COURIER_BENCH_COUNT_ALLOCS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
    __has_feature(memory_sanitizer)
#define COURIER_BENCH_COUNT_ALLOCS 0
#endif
#endif
#ifndef COURIER_BENCH_COUNT_ALLOCS
#define COURIER_BENCH_COUNT_ALLOCS 1
#endif

namespace courier::bench {

#if COURIER_BENCH_COUNT_ALLOCS

namespace {

// Constant-initialized: operator new may run in other libraries' static constructors.
constinit std::atomic<uint64_t> allocations{0};

void* Allocate(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  if (size == 0) size = 1;
  while (true) {
    if (void* p = std::malloc(size)) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

void* AllocateAligned(std::size_t size, std::align_val_t alignment) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  std::size_t align = static_cast<std::size_t>(alignment);
  if (align < sizeof(void*)) align = sizeof(void*);
  if (size == 0) size = 1;
  while (true) {
    void* p = nullptr;
    if (posix_memalign(&p, align, size) == 0) return p;
    std::new_handler handler = std::get_new_handler();
    if (handler == nullptr) throw std::bad_alloc();
    handler();
  }
}

void* AllocateNoThrow(std::size_t size) noexcept {
  try {
    return Allocate(size);
  } catch (...) {
    return nullptr;
  }
}

void* AllocateAlignedNoThrow(std::size_t size, std::align_val_t alignment) noexcept {
  try {
    return AllocateAligned(size, alignment);
  } catch (...) {
    return nullptr;
  }
}

}  // namespace

bool AllocCounterEnabled() { return true; }
std::optional<uint64_t> AllocationsSoFar() { return allocations.load(std::memory_order_relaxed); }
const char* AllocCounterNote() {
  return "counted (calls of the global operator new/new[], all overloads, every thread; "
         "direct malloc not counted)";
}

#else

bool AllocCounterEnabled() { return false; }
std::optional<uint64_t> AllocationsSoFar() { return std::nullopt; }
const char* AllocCounterNote() {
  return "n/a (a sanitizer build: its runtime's operator new is kept, nothing is counted)";
}

#endif

}  // namespace courier::bench

#if COURIER_BENCH_COUNT_ALLOCS

using courier::bench::Allocate;
using courier::bench::AllocateAligned;
using courier::bench::AllocateAlignedNoThrow;
using courier::bench::AllocateNoThrow;

void* operator new(std::size_t size) { return Allocate(size); }
void* operator new[](std::size_t size) { return Allocate(size); }
void* operator new(std::size_t size, const std::nothrow_t&) noexcept {
  return AllocateNoThrow(size);
}
void* operator new[](std::size_t size, const std::nothrow_t&) noexcept {
  return AllocateNoThrow(size);
}
void* operator new(std::size_t size, std::align_val_t alignment) {
  return AllocateAligned(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment) {
  return AllocateAligned(size, alignment);
}
void* operator new(std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return AllocateAlignedNoThrow(size, alignment);
}
void* operator new[](std::size_t size, std::align_val_t alignment, const std::nothrow_t&) noexcept {
  return AllocateAlignedNoThrow(size, alignment);
}

void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { std::free(p); }

#endif
