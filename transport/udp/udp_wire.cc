#include "transport/udp/udp_wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace courier::transport::udp {
namespace {

template <typename T>
void Put(std::byte* at, T value) {
  for (size_t i = 0; i < sizeof(T); ++i) at[i] = static_cast<std::byte>((value >> (8 * i)) & 0xff);
}
template <typename T>
T Get(const std::byte* at) {
  T value = 0;
  for (size_t i = 0; i < sizeof(T); ++i)
    value |= static_cast<T>(std::to_integer<uint8_t>(at[i])) << (8 * i);
  return value;
}

uint64_t Rotl(uint64_t x, int b) { return (x << b) | (x >> (64 - b)); }

}  // namespace

void EncodeHeader(const Header& header, std::span<std::byte, kHeaderSize> out) {
  std::byte* p = out.data();
  std::memset(p, 0, kHeaderSize);
  Put<uint32_t>(p, kMagic);
  Put<uint8_t>(p + 4, static_cast<uint8_t>(header.type));
  Put<uint64_t>(p + 8, header.session);
  Put<uint64_t>(p + 16, header.incarnation);
  Put<uint32_t>(p + 24, header.seq);
  Put<uint32_t>(p + 28, header.ack);
  Put<uint32_t>(p + 32, header.window);
  Put<uint64_t>(p + 40, header.aux);
}

absl::StatusOr<Datagram> DecodeDatagram(std::span<const std::byte> bytes) {
  if (bytes.size() < kHeaderSize) {
    return absl::DataLossError(
        absl::StrCat("udp datagram of ", bytes.size(), " bytes is shorter than the header"));
  }
  const std::byte* p = bytes.data();
  if (uint32_t magic = Get<uint32_t>(p); magic != kMagic) {
    return absl::DataLossError(absl::StrCat("udp datagram: bad magic 0x", absl::Hex(magic)));
  }
  const uint8_t type = Get<uint8_t>(p + 4);
  if (type < static_cast<uint8_t>(Type::kHello) || type > static_cast<uint8_t>(Type::kReset)) {
    return absl::DataLossError(absl::StrCat("udp datagram: unknown type ", type));
  }
  if (Get<uint8_t>(p + 5) != 0 || Get<uint16_t>(p + 6) != 0 || Get<uint32_t>(p + 36) != 0) {
    return absl::DataLossError("udp datagram: nonzero flags or reserved field");
  }
  Datagram d;
  d.header.type = static_cast<Type>(type);
  d.header.session = Get<uint64_t>(p + 8);
  d.header.incarnation = Get<uint64_t>(p + 16);
  d.header.seq = Get<uint32_t>(p + 24);
  d.header.ack = Get<uint32_t>(p + 28);
  d.header.window = Get<uint32_t>(p + 32);
  d.header.aux = Get<uint64_t>(p + 40);
  d.payload = bytes.subspan(kHeaderSize);
  if (d.header.type == Type::kData) {
    if (d.payload.empty()) return absl::DataLossError("udp DATA datagram without payload");
  } else if (!d.payload.empty()) {
    return absl::DataLossError(absl::StrCat("udp datagram of type ", type, " carries ",
                                            d.payload.size(), " payload bytes"));
  }
  if ((d.header.type == Type::kData || d.header.type == Type::kFin) && d.header.seq == 0) {
    return absl::DataLossError("udp DATA/FIN datagram with seq 0");
  }
  return d;
}

uint64_t SipHash24(const uint64_t key[2], std::span<const std::byte> data) {
  uint64_t v0 = 0x736f6d6570736575ULL ^ key[0], v1 = 0x646f72616e646f6dULL ^ key[1];
  uint64_t v2 = 0x6c7967656e657261ULL ^ key[0], v3 = 0x7465646279746573ULL ^ key[1];
  auto round = [&] {
    v0 += v1;
    v1 = Rotl(v1, 13);
    v1 ^= v0;
    v0 = Rotl(v0, 32);
    v2 += v3;
    v3 = Rotl(v3, 16);
    v3 ^= v2;
    v0 += v3;
    v3 = Rotl(v3, 21);
    v3 ^= v0;
    v2 += v1;
    v1 = Rotl(v1, 17);
    v1 ^= v2;
    v2 = Rotl(v2, 32);
  };
  const size_t n = data.size();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t m = Get<uint64_t>(data.data() + i);
    v3 ^= m;
    round();
    round();
    v0 ^= m;
  }
  uint64_t last = static_cast<uint64_t>(n & 0xff) << 56;
  for (size_t j = 0; i + j < n; ++j)
    last |= static_cast<uint64_t>(std::to_integer<uint8_t>(data[i + j])) << (8 * j);
  v3 ^= last;
  round();
  round();
  v0 ^= last;
  v2 ^= 0xff;
  round();
  round();
  round();
  round();
  return v0 ^ v1 ^ v2 ^ v3;
}

}  // namespace courier::transport::udp
