// Encoding and decoding of the rpc payloads inside frames (PROTOCOL.md "Payloads"): a
// varint-delimited wire.proto header, then the message bytes. Internal to rpc/.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "rpc/call.h"
#include "rpc/service.h"
#include "rpc/wire.pb.h"
#include "transport/frame.h"

namespace courier::internal {

// Protocol version this build speaks.
inline constexpr uint32_t kProtocolVersion = 1;
// Room in a frame for the header beside the largest message.
inline constexpr size_t kMaxHeaderOverhead = 64 * 1024;
// The smallest max_frame_payload a peer may announce in its hello (0 means the default).
inline constexpr uint32_t kMinFramePayload = 16 * 1024;
// Bounds on a request header: its encoded size, and the metadata entries it carries. A server
// answers a request over them RESOURCE_EXHAUSTED; a client refuses to send one.
inline constexpr size_t kMaxRequestHeader = 16 * 1024;
inline constexpr size_t kMaxMetadataEntries = 64;
// Status messages sent in a response are cut to this many bytes.
inline constexpr size_t kMaxStatusMessage = 4 * 1024;

// kInvalidArgument unless every key is lowercase ASCII (a-z, 0-9, '-', '_', '.') and not empty;
// kResourceExhausted over kMaxMetadataEntries entries or kMaxRequestHeader bytes.
absl::Status ValidateMetadata(const Metadata& metadata);

// `text` as a status message for the wire: valid UTF-8 (a proto3 string must be; invalid bytes
// become '?') and at most `max` bytes, cut at a character boundary.
std::string WireStatusMessage(std::string_view text, size_t max = kMaxStatusMessage);

// `text` made safe for a message or a log line: non-printable bytes escaped, and cut after
// `max` bytes (marked with "...").
std::string Printable(std::string_view text, size_t max = 128);

// The payload of a request frame: a delimited RequestHeader (method, the timeout from
// `options` unless it is Clock::duration::max(), metadata; encoded by hand, no allocation but
// the result) followed by `message_size` bytes that `write_message` fills in place.
std::string EncodeRequest(std::string_view method, const CallOptions& options, size_t message_size,
                          absl::FunctionRef<void(char*)> write_message);

// `header` varint-delimited, then `message`: the payload of a request or response frame.
std::string EncodePayload(const google::protobuf::MessageLite& header, std::string_view message);

// The message bytes of a payload built as EncodePayload does: what follows the delimited
// header (0 when the prefix is malformed or runs past the end).
size_t MessageSizeOfPayload(std::string_view payload);

// Parses the delimited header at the front of `payload`; returns where the message starts.
// kInvalidArgument if the header is cut short or does not parse.
absl::StatusOr<size_t> DecodePayloadHeader(std::string_view payload,
                                           google::protobuf::MessageLite& header);

// A RequestHeader decoded without building the message: `method` points into the payload.
struct RequestHeaderView {
  std::string_view method;
  uint64_t timeout_us = 0;
  Metadata metadata;
  size_t message_offset = 0;  // where the request message starts in the payload
};
// kInvalidArgument if the header is cut short or malformed, or a metadata key is not lowercase;
// kResourceExhausted over kMaxRequestHeader bytes or kMaxMetadataEntries entries (checked
// before anything is copied). Unknown fields are skipped.
absl::StatusOr<RequestHeaderView> DecodeRequestHeader(std::string_view payload);

void ToWire(const Metadata& metadata, google::protobuf::RepeatedPtrField<wire::MetadataEntry>& out);
Metadata FromWire(const google::protobuf::RepeatedPtrField<wire::MetadataEntry>& entries);

// A status from a peer's code and message (a response header's, a hello's refusal); codes
// outside the canonical 0-16 become kUnknown.
absl::Status StatusFromWire(int64_t code, std::string_view message);
absl::Status StatusFromWire(const wire::ResponseHeader& header);

transport::Frame HelloFrame(uint32_t max_frame_payload, uint32_t max_concurrent_calls = 0,
                            uint32_t stream_window = 0,
                            const absl::Status& refusal = absl::OkStatus());

// A kWindow frame granting `bytes` (1 .. 2^31-1) more message bytes on stream `call_id`.
transport::Frame WindowFrame(uint32_t call_id, uint32_t bytes);
// The increment a kWindow payload carries; kDataLoss unless it is 4 bytes and not 0.
absl::StatusOr<uint32_t> DecodeWindow(std::string_view payload);

// The frame payload limit that matches a message size limit.
uint32_t FrameLimitFor(size_t max_message_size);

}  // namespace courier::internal
