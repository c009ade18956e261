// The hand-written RequestHeader encoder and decoder agree with protobuf's own, byte for byte
// where it matters, and refuse malformed input.
#include "rpc/internal/wire.h"

#include <cstring>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rpc/wire.pb.h"
#include "tests/testing/status_matchers.h"

namespace courier::internal {
namespace {

using ::courier::testing::IsOk;
using ::courier::testing::StatusIs;

std::string Encode(std::string_view method, const CallOptions& options, std::string_view message) {
  return EncodeRequest(method, options, message.size(),
                       [&](char* at) { std::memcpy(at, message.data(), message.size()); });
}

TEST(RequestHeader, HandEncodingParsesWithProtobuf) {
  CallOptions options;
  options.timeout = std::chrono::milliseconds(1500);
  options.metadata = {{"user", "ada"}, {"empty", ""}, {std::string(300, 'k'), "long key"}};
  std::string payload = Encode("/pkg.Svc/Method", options, "message bytes");
  wire::RequestHeader header;
  absl::StatusOr<size_t> offset = DecodePayloadHeader(payload, header);
  ASSERT_THAT(offset, IsOk());
  EXPECT_EQ(header.method(), "/pkg.Svc/Method");
  EXPECT_EQ(header.timeout_us(), 1500000u);
  ASSERT_EQ(header.metadata_size(), 3);
  EXPECT_EQ(header.metadata(0).key(), "user");
  EXPECT_EQ(header.metadata(0).value(), "ada");
  EXPECT_EQ(header.metadata(2).key(), std::string(300, 'k'));
  EXPECT_EQ(payload.substr(*offset), "message bytes");
  // Protobuf's own encoding of the same header is the same bytes.
  std::string reference = EncodePayload(header, "message bytes");
  EXPECT_EQ(payload, reference);
}

TEST(RequestHeader, NoDeadlineLeavesTheFieldOut) {
  CallOptions options;
  options.timeout = Clock::duration::max();
  std::string payload = Encode("/a/b", options, "");
  absl::StatusOr<RequestHeaderView> view = DecodeRequestHeader(payload);
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->timeout_us, 0u);
  EXPECT_EQ(view->method, "/a/b");
  EXPECT_EQ(view->message_offset, payload.size());
}

TEST(RequestHeader, DecodesWhatProtobufEncodesIncludingUnknownFields) {
  wire::RequestHeader header;
  header.set_method("/x.Y/Z");
  header.set_timeout_us(42);
  wire::MetadataEntry* entry = header.add_metadata();
  entry->set_key("k");
  entry->set_value("v");
  std::string bytes = header.SerializeAsString();
  bytes += std::string("\x48\x07", 2);  // field 9, varint 7: unknown, skipped
  bytes += std::string(
      "\x52\x03"
      "abc",
      5);  // field 10, 3 bytes: unknown, skipped
  std::string payload = std::string(1, static_cast<char>(bytes.size())) + bytes + "msg";
  absl::StatusOr<RequestHeaderView> view = DecodeRequestHeader(payload);
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->method, "/x.Y/Z");
  EXPECT_EQ(view->timeout_us, 42u);
  EXPECT_EQ(view->metadata, (Metadata{{"k", "v"}}));
  EXPECT_EQ(payload.substr(view->message_offset), "msg");
}

TEST(RequestHeader, MalformedInputIsInvalidArgument) {
  CallOptions options;
  options.metadata = {{"key", "value"}};
  const std::string good = Encode("/pkg.Svc/Method", options, "m");
  // Every truncation inside the header is refused, never read past.
  absl::StatusOr<RequestHeaderView> full = DecodeRequestHeader(good);
  ASSERT_THAT(full, IsOk());
  for (size_t cut = 0; cut < full->message_offset; ++cut) {
    EXPECT_THAT(DecodeRequestHeader(good.substr(0, cut)),
                StatusIs(absl::StatusCode::kInvalidArgument))
        << cut;
  }
  EXPECT_THAT(DecodeRequestHeader(std::string("\x05\x0a\x10"
                                              "ab",
                                              5)),  // method longer than header
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(DecodeRequestHeader(std::string("\x02\x0f\x00", 3)),  // wire type 7: invalid
              StatusIs(absl::StatusCode::kInvalidArgument));
}

// A proto3 string must be UTF-8, or the peer cannot parse the response header at all.
TEST(WireStatusMessage, CutsAtACharacterBoundaryAndReplacesInvalidBytes) {
  const std::string euro = "\xE2\x82\xAC";  // 3 bytes
  EXPECT_EQ(WireStatusMessage("ab" + euro, 4), "ab");
  EXPECT_EQ(WireStatusMessage("ab" + euro, 5), "ab" + euro);
  EXPECT_EQ(WireStatusMessage("a\xFF\xC0\x80z"), "a???z");  // a stray byte, an overlong NUL
  EXPECT_EQ(WireStatusMessage("\xED\xA0\x80"), "???");      // a surrogate
  EXPECT_EQ(WireStatusMessage(std::string(10000, 'x')).size(), kMaxStatusMessage);
  wire::ResponseHeader header;
  header.set_message(WireStatusMessage("\xF0\x9F\x98\x80" + std::string(5000, '\xFF')));
  wire::ResponseHeader back;
  EXPECT_TRUE(back.ParseFromString(header.SerializeAsString()));
}

TEST(Printable, EscapesAndCuts) {
  EXPECT_EQ(Printable("a\nb"), "a\\nb");
  EXPECT_EQ(Printable(std::string(200, 'm'), 10), std::string(10, 'm') + "... (200 bytes)");
}

TEST(MessageSizeOfPayload, CountsTheBytesAfterTheHeader) {
  wire::ResponseHeader header;
  EXPECT_EQ(MessageSizeOfPayload(EncodePayload(header, "hello")), 5u);
  EXPECT_EQ(MessageSizeOfPayload(EncodePayload(header, "")), 0u);
  // A header of more than 127 bytes takes a two-byte length prefix.
  header.set_message(std::string(300, 'm'));
  EXPECT_EQ(MessageSizeOfPayload(EncodePayload(header, std::string(1000, 'x'))), 1000u);
  // Malformed: an empty payload, a length running past the end, a varint that never ends.
  EXPECT_EQ(MessageSizeOfPayload(""), 0u);
  EXPECT_EQ(MessageSizeOfPayload(std::string("\x05") + "ab"), 0u);
  EXPECT_EQ(MessageSizeOfPayload(std::string(6, '\xff')), 0u);
}

}  // namespace
}  // namespace courier::internal
