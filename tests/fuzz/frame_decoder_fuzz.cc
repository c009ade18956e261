// libFuzzer target for FrameDecoder. Input: one mode byte, then the byte stream to decode.
//   mode bits 0-5: chunk size index (1..40 bytes, then 64 B .. 4 MiB, FramedConnection's window)
//   mode bit 6:    feed payloads through the zero-copy PayloadBuffer/CommitPayload path
//   mode bit 7:    default limit (64 MiB + 64 KiB) instead of 4096, to reach the large-length path
// Checks: the decoder agrees with a reference parser written from the wire layout in frame.h;
// each frame re-encodes to exactly the bytes it came from; errors are sticky; the decoder's
// largest allocation follows the bytes fed, never a length prefix.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tests/fuzz/fuzz_check.h"
#include "transport/frame.h"

// With ASan (and the header, which clang ships and GCC does not) allocations are observed through
// the sanitizer allocator's hook; otherwise by replacing operator new.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && __has_include(<sanitizer/allocator_interface.h>)
#define COURIER_FUZZ_MALLOC_HOOK 1
#include <sanitizer/allocator_interface.h>
#endif
#endif

namespace courier::transport {
namespace {

// The largest single allocation while `g_probing` is set.
bool g_probing = false;
size_t g_largest_allocation = 0;

void NoteAllocation(size_t size) {
  if (g_probing && size > g_largest_allocation) g_largest_allocation = size;
}

#ifdef COURIER_FUZZ_MALLOC_HOOK
void MallocHook(const volatile void*, size_t size) { NoteAllocation(size); }
void FreeHook(const volatile void*) {}
const bool g_hooks_installed = [] {
  __sanitizer_install_malloc_and_free_hooks(&MallocHook, &FreeHook);
  return true;
}();
#endif

}  // namespace
}  // namespace courier::transport

#ifndef COURIER_FUZZ_MALLOC_HOOK
// The default operator new[], nothrow new and delete[] forward to these, so malloc/free pair up.
[[gnu::noinline]] void* operator new(std::size_t size) {
  courier::transport::NoteAllocation(size);
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
[[gnu::noinline]] void operator delete(void* p) noexcept { std::free(p); }
[[gnu::noinline]] void operator delete(void* p, std::size_t) noexcept { std::free(p); }
#endif

namespace courier::transport {
namespace {

// The wire layout of frame.h, written independently: what the decoder must produce from
// `stream` once all of it has been fed.
struct Expected {
  std::vector<size_t> frame_offsets;  // where each complete frame starts
  absl::StatusCode error = absl::StatusCode::kOk;
  size_t end = 0;  // offset of the first byte not part of a complete frame (or of the error)
};

uint32_t LoadU32(std::string_view s, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= uint32_t(uint8_t(s[at + i])) << (8 * i);
  return v;
}

Expected ReferenceParse(std::string_view stream, uint32_t max_payload) {
  Expected out;
  size_t at = 0;
  for (;;) {
    out.end = at;
    const size_t left = stream.size() - at;
    if (left >= 4 && LoadU32(stream, at) != 0x31435052) {
      out.error = absl::StatusCode::kDataLoss;
      return out;
    }
    if (left < 16) return out;
    const uint8_t type = uint8_t(stream[at + 4]), flags = uint8_t(stream[at + 5]);
    if (type == 0 || (flags & 0xFE) != 0 || stream[at + 6] != 0 || stream[at + 7] != 0) {
      out.error = absl::StatusCode::kDataLoss;
      return out;
    }
    const uint32_t length = LoadU32(stream, at + 12);
    if (length > max_payload) {
      out.error = absl::StatusCode::kResourceExhausted;
      return out;
    }
    if (left - 16 < length) return out;
    out.frame_offsets.push_back(at);
    at += 16 + size_t(length);
  }
}

size_t ChunkSize(uint8_t mode) {
  const unsigned index = mode & 0x3F;
  return index < 40 ? index + 1 : size_t{64} << std::min(index - 40, 16u);
}

void Run(const uint8_t* data, size_t size) {
  if (size == 0) return;
  const uint8_t mode = data[0];
  const size_t chunk = ChunkSize(mode);
  const bool zero_copy = (mode & 0x40) != 0;
  const FrameLimits limits{.max_payload = (mode & 0x80) ? kDefaultMaxPayload : 4096u};
  const std::string_view stream(reinterpret_cast<const char*>(data) + 1, size - 1);
  const Expected expected = ReferenceParse(stream, limits.max_payload);

  FrameDecoder decoder(limits);
  size_t fed = 0;      // bytes given to the decoder so far
  size_t decoded = 0;  // offset just past the last frame returned
  size_t frames = 0;
  std::optional<absl::Status> error;
  g_largest_allocation = 0;

  // Takes every frame the decoder has; checks each against the bytes it came from.
  auto drain = [&] {
    while (!error) {
      g_probing = true;
      absl::StatusOr<std::optional<Frame>> next = decoder.Next();
      g_probing = false;
      if (!next.ok()) {
        error = next.status();
        break;
      }
      if (!next->has_value()) break;
      const Frame& frame = **next;
      const size_t frame_size = kFrameHeaderSize + frame.payload.size();
      FUZZ_CHECK(frame.payload.size() <= limits.max_payload);
      FUZZ_CHECK(decoded + frame_size <= fed);
      FUZZ_CHECK(frames < expected.frame_offsets.size());
      FUZZ_CHECK(expected.frame_offsets[frames] == decoded);
      FUZZ_CHECK(EncodeFrame(frame) == stream.substr(decoded, frame_size));
      decoded += frame_size;
      ++frames;
    }
  };

  while (fed < stream.size() && !error) {
    const size_t n = std::min(chunk, stream.size() - fed);
    const size_t remaining = decoder.payload_remaining();
    g_probing = true;
    if (zero_copy && remaining > 0) {
      std::span<std::byte> window = decoder.PayloadBuffer(chunk);
      g_probing = false;
      FUZZ_CHECK(!window.empty());
      FUZZ_CHECK(window.size() <= std::min(chunk, remaining));
      const size_t take = std::min(window.size(), stream.size() - fed);
      std::memcpy(window.data(), stream.data() + fed, take);
      decoder.CommitPayload(take);
      FUZZ_CHECK(decoder.payload_remaining() == remaining - take);
      fed += take;
    } else {
      decoder.Append(stream.substr(fed, n));
      g_probing = false;
      fed += n;
    }
    drain();
    // Memory follows the bytes fed (and a zero-copy window the caller asked for), never a length
    // prefix: at most twice them, plus the decoder's 2 MiB eager payload.
    const size_t window = zero_copy ? chunk : 0;
    FUZZ_CHECK(g_largest_allocation <= 2 * (fed + window) + 2 * 1024 * 1024 + 4096);
  }
  drain();

  FUZZ_CHECK(frames == expected.frame_offsets.size());
  FUZZ_CHECK(decoded == expected.end);
  if (error) {
    FUZZ_CHECK(error->code() == expected.error);
    for (int i = 0; i < 2; ++i) FUZZ_CHECK(decoder.Next().status() == *error);
    FUZZ_CHECK(!decoder.mid_frame());
  } else {
    FUZZ_CHECK(expected.error == absl::StatusCode::kOk);
    FUZZ_CHECK(decoder.mid_frame() == (decoded < stream.size()));
  }
}

}  // namespace
}  // namespace courier::transport

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  courier::transport::Run(data, size);
  return 0;
}
