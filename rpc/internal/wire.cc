#include "rpc/internal/wire.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "transport/status.h"

namespace courier::internal {

using google::protobuf::internal::WireFormatLite;
using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;

std::string EncodePayload(const google::protobuf::MessageLite& header, std::string_view message) {
  const size_t header_size = header.ByteSizeLong();
  const size_t prefix = CodedOutputStream::VarintSize32(static_cast<uint32_t>(header_size));
  std::string payload;
  payload.resize(prefix + header_size + message.size());
  auto* at = reinterpret_cast<uint8_t*>(payload.data());
  at = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(header_size), at);
  at = header.SerializeWithCachedSizesToArray(at);
  if (!message.empty()) std::copy(message.begin(), message.end(), reinterpret_cast<char*>(at));
  return payload;
}

namespace {

// Protobuf wire format: tag = field << 3 | wire type (0 varint, 2 length-delimited).
constexpr uint8_t kMethodTag = (1 << 3) | 2;
constexpr uint8_t kTimeoutTag = (2 << 3) | 0;
constexpr uint8_t kMetadataTag = (3 << 3) | 2;
constexpr uint8_t kKeyTag = (1 << 3) | 2;
constexpr uint8_t kValueTag = (2 << 3) | 2;

// A length-delimited field of n bytes: tag, length, bytes.
size_t LengthDelimitedSize(size_t n) { return 1 + CodedOutputStream::VarintSize64(n) + n; }
// A string field: proto3 leaves an empty one out, and so do we, producing protobuf's own bytes.
size_t StringFieldSize(size_t n) { return n == 0 ? 0 : LengthDelimitedSize(n); }

char* PutStringField(char* at, uint8_t tag, std::string_view bytes) {
  if (bytes.empty()) return at;
  *at++ = static_cast<char>(tag);
  at = reinterpret_cast<char*>(
      CodedOutputStream::WriteVarint64ToArray(bytes.size(), reinterpret_cast<uint8_t*>(at)));
  std::memcpy(at, bytes.data(), bytes.size());
  return at + bytes.size();
}

}  // namespace

std::string EncodeRequest(std::string_view method, const CallOptions& options, size_t message_size,
                          absl::FunctionRef<void(char*)> write_message) {
  uint64_t timeout_us = 0;
  if (options.timeout != Clock::duration::max()) {
    timeout_us = std::max<int64_t>(
        1, std::chrono::duration_cast<std::chrono::microseconds>(options.timeout).count());
  }
  size_t header = StringFieldSize(method.size());
  if (timeout_us != 0) header += 1 + CodedOutputStream::VarintSize64(timeout_us);
  for (const auto& [key, value] : options.metadata) {
    header += LengthDelimitedSize(StringFieldSize(key.size()) + StringFieldSize(value.size()));
  }
  const size_t prefix = CodedOutputStream::VarintSize64(header);
  std::string payload = transport::TakeBuffer(prefix + header + message_size);
  char* at = payload.data();
  at = reinterpret_cast<char*>(
      CodedOutputStream::WriteVarint64ToArray(header, reinterpret_cast<uint8_t*>(at)));
  at = PutStringField(at, kMethodTag, method);
  if (timeout_us != 0) {
    *at++ = static_cast<char>(kTimeoutTag);
    at = reinterpret_cast<char*>(
        CodedOutputStream::WriteVarint64ToArray(timeout_us, reinterpret_cast<uint8_t*>(at)));
  }
  for (const auto& [key, value] : options.metadata) {
    *at++ = static_cast<char>(kMetadataTag);
    at = reinterpret_cast<char*>(CodedOutputStream::WriteVarint64ToArray(
        StringFieldSize(key.size()) + StringFieldSize(value.size()),
        reinterpret_cast<uint8_t*>(at)));
    at = PutStringField(at, kKeyTag, key);
    at = PutStringField(at, kValueTag, value);
  }
  if (message_size > 0) write_message(at);
  return payload;
}

std::string EncodeOkResponse(const Metadata& metadata,
                             const google::protobuf::MessageLite& message) {
  wire::ResponseHeader header;
  ToWire(metadata, *header.mutable_metadata());
  const size_t header_size = header.ByteSizeLong();
  const size_t message_size = message.ByteSizeLong();
  const size_t prefix = CodedOutputStream::VarintSize32(static_cast<uint32_t>(header_size));
  std::string payload = transport::TakeBuffer(prefix + header_size + message_size);
  auto* at = reinterpret_cast<uint8_t*>(payload.data());
  at = CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(header_size), at);
  at = header.SerializeWithCachedSizesToArray(at);
  message.SerializeWithCachedSizesToArray(at);
  return payload;
}

size_t MessageSizeOfPayload(std::string_view payload) {
  // The header's length prefix, read as DecodePayloadHeader reads it.
  CodedInputStream in(reinterpret_cast<const uint8_t*>(payload.data()),
                      static_cast<int>(std::min<size_t>(payload.size(), INT32_MAX)));
  uint32_t header_size = 0;
  if (!in.ReadVarint32(&header_size)) return 0;
  const size_t rest = payload.size() - static_cast<size_t>(in.CurrentPosition());
  return header_size <= rest ? rest - header_size : 0;
}

absl::StatusOr<size_t> DecodePayloadHeader(std::string_view payload,
                                           google::protobuf::MessageLite& header) {
  CodedInputStream in(reinterpret_cast<const uint8_t*>(payload.data()),
                      static_cast<int>(std::min<size_t>(payload.size(), INT32_MAX)));
  uint32_t size = 0;
  if (!in.ReadVarint32(&size)) {
    return absl::InvalidArgumentError("malformed payload: bad header length varint");
  }
  const size_t start = static_cast<size_t>(in.CurrentPosition());
  if (size > payload.size() - start) {
    return absl::InvalidArgumentError(absl::StrCat("malformed payload: header of ", size,
                                                   " bytes in a payload of ", payload.size()));
  }
  if (!header.ParseFromArray(payload.data() + start, static_cast<int>(size))) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed payload: ", header.GetTypeName(), " does not parse"));
  }
  return start + size;
}

namespace {

// Reads a length-delimited field's bytes as a view into `base` (what `in` reads from).
bool ReadBytes(CodedInputStream& in, const char* base, std::string_view& out) {
  uint32_t size = 0;
  if (!in.ReadVarint32(&size)) return false;
  const int at = in.CurrentPosition();
  if (!in.Skip(static_cast<int>(size))) return false;
  out = std::string_view(base + at, size);
  return true;
}

bool ValidKey(std::string_view key) {
  if (key.empty()) return false;
  for (char c : key) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

absl::Status ValidateMetadata(const Metadata& metadata) {
  if (metadata.size() > kMaxMetadataEntries) {
    return absl::ResourceExhaustedError(absl::StrCat("a call carries ", metadata.size(),
                                                     " metadata entries; the limit is ",
                                                     kMaxMetadataEntries));
  }
  size_t bytes = 0;
  for (const auto& [key, value] : metadata) {
    if (!ValidKey(key)) {
      return absl::InvalidArgumentError(absl::StrCat("metadata key '", Printable(key),
                                                     "' is not lowercase ASCII (a-z 0-9 - _ .)"));
    }
    bytes += key.size() + value.size() + 8;
  }
  if (bytes > kMaxRequestHeader - 1024) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "metadata of ", bytes, " bytes exceeds the limit of ", kMaxRequestHeader - 1024, " bytes"));
  }
  return absl::OkStatus();
}

std::string WireStatusMessage(std::string_view text, size_t max) {
  std::string out;
  out.reserve(std::min(text.size(), max));
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<unsigned char>(text[i]);
    // The length of the UTF-8 sequence c starts, and the smallest code point it may encode.
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool valid = n != 0 && i + n <= text.size();
    uint32_t code = n == 1 ? c : n == 2 ? c & 0x1F : n == 3 ? c & 0x0F : c & 0x07;
    for (size_t k = 1; valid && k < n; ++k) {
      const auto next = static_cast<unsigned char>(text[i + k]);
      valid = (next & 0xC0) == 0x80;
      code = (code << 6) | (next & 0x3F);
    }
    static constexpr uint32_t kMinCode[] = {0, 0, 0x80, 0x800, 0x10000};
    if (valid && (code < kMinCode[n] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))) {
      valid = false;  // overlong, out of range, or a surrogate
    }
    if (!valid) n = 1;
    if (out.size() + n > max) break;
    if (valid) {
      out.append(text.substr(i, n));
    } else {
      out.push_back('?');
    }
    i += n;
  }
  return out;
}

std::string Printable(std::string_view text, size_t max) {
  const bool cut = text.size() > max;
  std::string out = absl::CHexEscape(transport::AsAbsl(text.substr(0, max)));
  if (cut) absl::StrAppend(&out, "... (", text.size(), " bytes)");
  return out;
}

absl::StatusOr<RequestHeaderView> DecodeRequestHeader(std::string_view payload) {
  // Built only when returned: a status with a message allocates, and this runs on every call.
  struct Malformed {
    operator absl::StatusOr<RequestHeaderView>() const {
      return absl::InvalidArgumentError("malformed request header");
    }
  } malformed;
  CodedInputStream outer(reinterpret_cast<const uint8_t*>(payload.data()),
                         static_cast<int>(std::min<size_t>(payload.size(), INT32_MAX)));
  uint32_t size = 0;
  if (!outer.ReadVarint32(&size)) return malformed;
  const size_t start = static_cast<size_t>(outer.CurrentPosition());
  if (size > payload.size() - start) return malformed;
  if (size > kMaxRequestHeader) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "request header of ", size, " bytes exceeds the limit of ", kMaxRequestHeader, " bytes"));
  }
  const char* base = payload.data() + start;
  CodedInputStream in(reinterpret_cast<const uint8_t*>(base), static_cast<int>(size));
  RequestHeaderView header;
  header.message_offset = start + size;
  while (uint32_t tag = in.ReadTag()) {
    switch (tag) {
      case kMethodTag:
        if (!ReadBytes(in, base, header.method)) return malformed;
        break;
      case kTimeoutTag:
        if (!in.ReadVarint64(&header.timeout_us)) return malformed;
        break;
      case kMetadataTag: {
        uint32_t entry_size = 0;
        if (!in.ReadVarint32(&entry_size)) return malformed;
        const auto limit = in.PushLimit(static_cast<int>(entry_size));
        std::string_view key, value;
        while (uint32_t field = in.ReadTag()) {
          bool ok = field == kKeyTag     ? ReadBytes(in, base, key)
                    : field == kValueTag ? ReadBytes(in, base, value)
                                         : WireFormatLite::SkipField(&in, field);
          if (!ok) return malformed;
        }
        if (!in.ConsumedEntireMessage()) return malformed;
        in.PopLimit(limit);
        if (!ValidKey(key)) {
          return absl::InvalidArgumentError(absl::StrCat(
              "metadata key '", Printable(key), "' is not lowercase ASCII (a-z 0-9 - _ .)"));
        }
        if (header.metadata.size() == kMaxMetadataEntries) {
          return absl::ResourceExhaustedError(
              absl::StrCat("request carries more than ", kMaxMetadataEntries, " metadata entries"));
        }
        header.metadata.emplace_back(key, value);
        break;
      }
      default:
        if (!WireFormatLite::SkipField(&in, tag)) return malformed;
    }
  }
  if (!in.ConsumedEntireMessage() || in.CurrentPosition() != static_cast<int>(size)) {
    return malformed;
  }
  return header;
}

void ToWire(const Metadata& metadata,
            google::protobuf::RepeatedPtrField<wire::MetadataEntry>& out) {
  for (const auto& [key, value] : metadata) {
    wire::MetadataEntry* entry = out.Add();
    entry->set_key(key);
    entry->set_value(value);
  }
}

Metadata FromWire(const google::protobuf::RepeatedPtrField<wire::MetadataEntry>& entries) {
  Metadata metadata;
  metadata.reserve(entries.size());
  for (const wire::MetadataEntry& entry : entries) {
    metadata.emplace_back(entry.key(), entry.value());
  }
  return metadata;
}

absl::Status StatusFromWire(int64_t code, std::string_view message) {
  if (code < 0 || code > static_cast<int64_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(
        absl::StrCat("peer sent unknown status code ", code, ": ", transport::AsAbsl(message)));
  }
  return absl::Status(static_cast<absl::StatusCode>(code), transport::AsAbsl(message));
}

absl::Status StatusFromWire(const wire::ResponseHeader& header) {
  return StatusFromWire(header.code(), header.message());
}

transport::Frame HelloFrame(uint32_t max_frame_payload, uint32_t max_concurrent_calls,
                            uint32_t stream_window, const absl::Status& refusal) {
  wire::Hello hello;
  if (!refusal.ok()) {  // PROTOCOL.md §6.1a
    hello.set_refusal_code(static_cast<uint32_t>(refusal.code()));
    hello.set_refusal_message(std::string(refusal.message()));
  }
  hello.set_stream_window(stream_window);
  hello.set_version(kProtocolVersion);
  hello.set_max_frame_payload(max_frame_payload);
  hello.set_max_concurrent_calls(max_concurrent_calls);
  hello.set_agent("courier/0.1");
  return transport::Frame{transport::FrameType::kHello, 0, 0, hello.SerializeAsString()};
}

transport::Frame WindowFrame(uint32_t call_id, uint32_t bytes) {
  std::string payload(4, '\0');
  for (int i = 0; i < 4; ++i) payload[i] = static_cast<char>((bytes >> (8 * i)) & 0xff);
  return transport::Frame{transport::FrameType::kWindow, 0, call_id, std::move(payload)};
}

absl::StatusOr<uint32_t> DecodeWindow(std::string_view payload) {
  if (payload.size() != 4) {
    return absl::DataLossError(
        absl::StrCat("protocol error: window frame of ", payload.size(), " bytes (must be 4)"));
  }
  uint32_t bytes = 0;
  for (int i = 0; i < 4; ++i) bytes |= uint32_t(static_cast<uint8_t>(payload[i])) << (8 * i);
  if (bytes == 0) return absl::DataLossError("protocol error: window frame granting 0 bytes");
  return bytes;
}

uint32_t FrameLimitFor(size_t max_message_size) {
  return static_cast<uint32_t>(std::min<size_t>(max_message_size + kMaxHeaderOverhead,
                                                std::numeric_limits<uint32_t>::max()));
}

}  // namespace courier::internal
