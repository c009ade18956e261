// libFuzzer target for what a hostile peer controls on udp://: the datagram decoder and the ARQ
// receiver behind it. Input: datagrams, each a u16 little-endian length then that many bytes (a
// length past the end takes the rest). Checks: a datagram that decodes re-encodes to the same
// header bytes, with the payload after it; errors are kDataLoss with a message; the receiver
// never holds more than its capacity, never offers a window larger than it, and what it delivers
// in order only grows.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "tests/fuzz/fuzz_check.h"
#include "transport/udp/arq.h"
#include "transport/udp/udp_wire.h"

namespace courier::transport::udp {
namespace {

constexpr size_t kCapacity = 64 * 1024;

void CheckDatagram(std::span<const std::byte> bytes, Receiver& receiver, uint64_t& delivered) {
  absl::StatusOr<Datagram> datagram = DecodeDatagram(bytes);
  if (!datagram.ok()) {
    FUZZ_CHECK(datagram.status().code() == absl::StatusCode::kDataLoss);
    FUZZ_CHECK(!datagram.status().message().empty());
    return;
  }
  std::byte header[kHeaderSize];
  EncodeHeader(datagram->header, std::span<std::byte, kHeaderSize>(header));
  FUZZ_CHECK(std::memcmp(header, bytes.data(), kHeaderSize) == 0);
  FUZZ_CHECK(datagram->payload.size() == bytes.size() - kHeaderSize);
  const Type type = datagram->header.type;
  if (type != Type::kData && type != Type::kFin) return;
  const uint64_t next_before = receiver.next();
  receiver.OnData(datagram->header.seq, datagram->payload, type == Type::kFin);
  FUZZ_CHECK(receiver.next() >= next_before);
  FUZZ_CHECK(receiver.readable() + receiver.out_of_order_bytes() <= kCapacity);
  FUZZ_CHECK(receiver.window() <= kCapacity);
  // The reader takes half of what is there, so the window both fills and drains.
  std::vector<std::byte> into(receiver.readable() / 2 + 1);
  const size_t n = receiver.Read(into);
  FUZZ_CHECK(n <= into.size());
  delivered += n;
}

}  // namespace
}  // namespace courier::transport::udp

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace courier::transport::udp;
  Receiver receiver(kCapacity);
  uint64_t delivered = 0;
  size_t at = 0;
  while (at + 2 <= size) {
    size_t length = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    length = std::min(length, size - at);
    CheckDatagram(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data + at), length),
                  receiver, delivered);
    at += length;
  }
  return 0;
}
