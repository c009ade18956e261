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

// The payload of a request frame: a delimited RequestHeader (method, the timeout from
// `options` unless it is Clock::duration::max(), metadata; encoded by hand, no allocation but
// the result) followed by `message_size` bytes that `write_message` fills in place.
std::string EncodeRequest(std::string_view method, const CallOptions& options, size_t message_size,
                          absl::FunctionRef<void(char*)> write_message);

// `header` varint-delimited, then `message`: the payload of a request or response frame.
std::string EncodePayload(const google::protobuf::MessageLite& header, std::string_view message);

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
// kInvalidArgument if the header is cut short or malformed. Unknown fields are skipped.
absl::StatusOr<RequestHeaderView> DecodeRequestHeader(std::string_view payload);

void ToWire(const Metadata& metadata, google::protobuf::RepeatedPtrField<wire::MetadataEntry>& out);
Metadata FromWire(const google::protobuf::RepeatedPtrField<wire::MetadataEntry>& entries);

// A response header's status; codes outside the canonical 0-16 become kUnknown.
absl::Status StatusFromWire(const wire::ResponseHeader& header);

transport::Frame HelloFrame(uint32_t max_frame_payload);

// The frame payload limit that matches a message size limit.
uint32_t FrameLimitFor(size_t max_message_size);

}  // namespace courier::internal
