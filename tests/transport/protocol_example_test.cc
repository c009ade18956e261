// Keeps PROTOCOL.md honest: its worked example (client kHello, an Echo kRequest and its
// kResponse) is rebuilt here from the real encoder and the generated wire.proto classes, compared
// byte for byte with the hex below, which must also appear verbatim in PROTOCOL.md. The same goes
// for §12.9's udp:// datagrams, built with udp::EncodeHeader and the ARQ's own sender and
// receiver, and decoded back with udp::DecodeDatagram, and for §13.9's streaming call, built both
// with the generic protobuf encoder and with the functions courier's client and server send
// them with.
#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "asio/buffer.hpp"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/descriptor.pb.h"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/util/delimited_message_util.h"
#include "gtest/gtest.h"
#include "rpc/channel.h"
#include "rpc/internal/stream.h"
#include "rpc/internal/wire.h"
#include "rpc/server.h"
#include "rpc/wire.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/stream_example.h"
#include "transport/frame.h"
#include "transport/udp/arq.h"
#include "transport/udp/udp_wire.h"

namespace courier::transport {
namespace {

using ::courier::testing::BytesFromHex;
using ::courier::testing::IsOk;

// The three frames of PROTOCOL.md §9, as printed there (16 bytes a row).
constexpr std::string_view kClientHelloHex = R"(52 50 43 31 01 00 00 00 00 00 00 00 14 00 00 00
08 01 10 80 80 84 20 1a 0b 63 6f 75 72 69 65 72
2f 30 2e 31)";

constexpr std::string_view kRequestHex = R"(52 50 43 31 02 01 00 00 01 00 00 00 25 00 00 00
20 0a 1a 2f 63 6f 75 72 69 65 72 2e 65 78 61 6d
70 6c 65 73 2e 45 63 68 6f 2f 53 61 79 10 c0 84
3d 0a 02 68 69)";

constexpr std::string_view kResponseHex = R"(52 50 43 31 03 01 00 00 01 00 00 00 05 00 00 00
00 0a 02 68 69)";

// §9.3's error example: the payload of a RESPONSE with code 12 and message "unknown method".
constexpr std::string_view kErrorResponsePayloadHex =
    "12 08 0c 12 0e 75 6e 6b 6e 6f 77 6e 20 6d 65 74 68 6f 64";

constexpr char kMethod[] = "/courier.examples.Echo/Say";

// The six udp:// datagrams of PROTOCOL.md §12.9, as printed there.
constexpr std::string_view kUdpHelloHex = R"(43 55 44 31 01 00 00 00 ef cd ab 89 67 45 23 01
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00)";

constexpr std::string_view kUdpCookieHex = R"(43 55 44 31 02 00 00 00 ef cd ab 89 67 45 23 01
10 32 54 76 98 ba dc fe 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 ff ee dd cc bb aa 99 88)";

constexpr std::string_view kUdpOpenHex = R"(43 55 44 31 03 00 00 00 ef cd ab 89 67 45 23 01
10 32 54 76 98 ba dc fe 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 ff ee dd cc bb aa 99 88)";

constexpr std::string_view kUdpOpenAckHex = R"(43 55 44 31 04 00 00 00 ef cd ab 89 67 45 23 01
10 32 54 76 98 ba dc fe 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00)";

constexpr std::string_view kUdpDataHex = R"(43 55 44 31 05 00 00 00 ef cd ab 89 67 45 23 01
10 32 54 76 98 ba dc fe 01 00 00 00 01 00 00 00
00 00 10 00 00 00 00 00 00 00 00 00 00 00 00 00
52 50 43 31 01 00 00 00)";

constexpr std::string_view kUdpAckHex = R"(43 55 44 31 06 00 00 00 ef cd ab 89 67 45 23 01
10 32 54 76 98 ba dc fe 00 00 00 00 02 00 00 00
f8 ff 0f 00 00 00 00 00 00 00 00 00 00 00 00 00)";

constexpr uint64_t kUdpSession = 0x0123456789abcdef;      // the client's random session
constexpr uint64_t kUdpIncarnation = 0xfedcba9876543210;  // the server's, per Listen
constexpr uint64_t kUdpCookie = 0x8899aabbccddeeff;       // opaque to the client
// The DATA's payload: the first 8 bytes of the client's HELLO frame (the stream may be cut
// anywhere).
constexpr std::string_view kUdpDataPayloadHex = "52 50 43 31 01 00 00 00";

// The same layout as the constants above: lowercase, 16 bytes a row.
std::string ToHex(std::string_view bytes) {
  std::string out;
  for (size_t i = 0; i < bytes.size(); ++i) {
    if (i > 0) out += (i % 16 == 0) ? "\n" : " ";
    out += absl::StrFormat("%02x", static_cast<unsigned char>(bytes[i]));
  }
  return out;
}

// courier.examples.EchoRequest / EchoReply { string text = 1; }, built at run time: the real
// protobuf encoder without depending on the examples' generated code.
class EchoMessages {
 public:
  EchoMessages() {
    google::protobuf::FileDescriptorProto file;
    file.set_name("protocol_example_echo.proto");
    file.set_package("courier.examples");
    file.set_syntax("proto3");
    for (const char* name : {"EchoRequest", "EchoReply"}) {
      google::protobuf::DescriptorProto* message = file.add_message_type();
      message->set_name(name);
      google::protobuf::FieldDescriptorProto* text = message->add_field();
      text->set_name("text");
      text->set_number(1);
      text->set_type(google::protobuf::FieldDescriptorProto::TYPE_STRING);
      text->set_label(google::protobuf::FieldDescriptorProto::LABEL_OPTIONAL);
    }
    EXPECT_NE(pool_.BuildFile(file), nullptr);
  }

  std::unique_ptr<google::protobuf::Message> New(std::string_view type) {
    const google::protobuf::Descriptor* d =
        pool_.FindMessageTypeByName("courier.examples." + std::string(type));
    return std::unique_ptr<google::protobuf::Message>(factory_.GetPrototype(d)->New());
  }
  std::string Serialize(std::string_view type, const std::string& text) {
    std::unique_ptr<google::protobuf::Message> m = New(type);
    m->GetReflection()->SetString(m.get(), m->GetDescriptor()->FindFieldByNumber(1), text);
    return m->SerializeAsString();
  }
  // The text field of `bytes` parsed as `type`, or "<unparsable>".
  std::string Text(std::string_view type, const std::string& bytes) {
    std::unique_ptr<google::protobuf::Message> m = New(type);
    if (!m->ParseFromString(bytes)) return "<unparsable>";
    return m->GetReflection()->GetString(*m, m->GetDescriptor()->FindFieldByNumber(1));
  }

 private:
  google::protobuf::DescriptorPool pool_;
  google::protobuf::DynamicMessageFactory factory_;
};

// A kRequest/kResponse payload: varint length of the header, the header, the message bytes.
std::string DelimitedPayload(const google::protobuf::MessageLite& header,
                             const std::string& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    EXPECT_TRUE(google::protobuf::util::SerializeDelimitedToCodedStream(header, &coded));
  }
  return out + message;
}

// Splits a kRequest/kResponse payload into its header (parsed into `header`) and message bytes.
bool ParseDelimitedPayload(const std::string& payload, google::protobuf::MessageLite& header,
                           std::string& message) {
  google::protobuf::io::CodedInputStream coded(reinterpret_cast<const uint8_t*>(payload.data()),
                                               static_cast<int>(payload.size()));
  bool clean_eof = false;
  if (!google::protobuf::util::ParseDelimitedFromCodedStream(&header, &coded, &clean_eof)) {
    return false;
  }
  message = payload.substr(coded.CurrentPosition());
  return true;
}

Frame MakeFrame(FrameType type, uint8_t flags, uint32_t call_id, std::string payload) {
  Frame frame;
  frame.type = type;
  frame.flags = flags;
  frame.call_id = call_id;
  frame.payload = std::move(payload);
  return frame;
}

TEST(ProtocolExample, ClientHelloIsTheDocumentedBytes) {
  courier::wire::Hello hello;
  hello.set_version(1);
  hello.set_max_frame_payload(kDefaultMaxPayload);
  hello.set_agent("courier/0.1");
  Frame frame = MakeFrame(FrameType::kHello, 0, 0, hello.SerializeAsString());
  EXPECT_EQ(ToHex(EncodeFrame(frame)), kClientHelloHex);
}

TEST(ProtocolExample, RequestIsTheDocumentedBytes) {
  EchoMessages echo;
  courier::wire::RequestHeader header;
  header.set_method(kMethod);
  header.set_timeout_us(1000000);
  Frame frame = MakeFrame(FrameType::kRequest, kFlagEndOfStream, 1,
                          DelimitedPayload(header, echo.Serialize("EchoRequest", "hi")));
  EXPECT_EQ(ToHex(EncodeFrame(frame)), kRequestHex);
}

TEST(ProtocolExample, ResponseIsTheDocumentedBytes) {
  EchoMessages echo;
  courier::wire::ResponseHeader header;  // code 0 (OK): every field is a default, so 0 bytes
  header.set_code(static_cast<int>(absl::StatusCode::kOk));
  Frame frame = MakeFrame(FrameType::kResponse, kFlagEndOfStream, 1,
                          DelimitedPayload(header, echo.Serialize("EchoReply", "hi")));
  EXPECT_EQ(ToHex(EncodeFrame(frame)), kResponseHex);
}

TEST(ProtocolExample, ErrorResponsePayloadIsTheDocumentedBytes) {
  courier::wire::ResponseHeader header;
  header.set_code(static_cast<int>(absl::StatusCode::kUnimplemented));
  header.set_message("unknown method");
  std::string hex = ToHex(DelimitedPayload(header, ""));
  std::replace(hex.begin(), hex.end(), '\n', ' ');
  EXPECT_EQ(hex, kErrorResponsePayloadHex);
}

TEST(ProtocolExample, DocumentedBytesDecodeWithTheRealDecoder) {
  EchoMessages echo;
  FrameDecoder decoder;
  decoder.Append(BytesFromHex(kClientHelloHex) + BytesFromHex(kRequestHex) +
                 BytesFromHex(kResponseHex));
  std::vector<Frame> frames;
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    frames.push_back(std::move(**next));
  }
  ASSERT_EQ(frames.size(), 3u);
  EXPECT_FALSE(decoder.mid_frame());

  EXPECT_EQ(frames[0].type, FrameType::kHello);
  EXPECT_EQ(frames[0].call_id, 0u);
  courier::wire::Hello hello;
  ASSERT_TRUE(hello.ParseFromString(frames[0].payload));
  EXPECT_EQ(hello.version(), 1u);
  EXPECT_EQ(hello.max_frame_payload(), 67174400u);
  EXPECT_EQ(hello.agent(), "courier/0.1");

  EXPECT_EQ(frames[1].type, FrameType::kRequest);
  EXPECT_EQ(frames[1].flags, kFlagEndOfStream);
  EXPECT_EQ(frames[1].call_id, 1u);
  courier::wire::RequestHeader request;
  std::string request_message;
  ASSERT_TRUE(ParseDelimitedPayload(frames[1].payload, request, request_message));
  EXPECT_EQ(request.method(), kMethod);
  EXPECT_EQ(request.timeout_us(), 1000000u);
  EXPECT_EQ(request.metadata_size(), 0);
  EXPECT_EQ(echo.Text("EchoRequest", request_message), "hi");

  EXPECT_EQ(frames[2].type, FrameType::kResponse);
  EXPECT_EQ(frames[2].flags, kFlagEndOfStream);
  EXPECT_EQ(frames[2].call_id, 1u);
  courier::wire::ResponseHeader response;
  std::string response_message;
  ASSERT_TRUE(ParseDelimitedPayload(frames[2].payload, response, response_message));
  EXPECT_EQ(response.code(), 0);
  EXPECT_EQ(response.message(), "");
  EXPECT_EQ(echo.Text("EchoReply", response_message), "hi");
}

TEST(ProtocolExample, HeaderConstantsAreTheDocumentedOnes) {
  EXPECT_EQ(kFrameHeaderSize, 16u);
  EXPECT_EQ(kFrameMagic, 0x31435052u);
  EXPECT_EQ(kFlagEndOfStream, 0x01);
  EXPECT_EQ(kReservedFlagsMask, 0xFE);
  EXPECT_EQ(kDefaultMaxPayload, 67174400u);
  EXPECT_EQ(kMaxKnownFrameType, 9);
  const std::pair<FrameType, int> types[] = {
      {FrameType::kHello, 1},  {FrameType::kRequest, 2}, {FrameType::kResponse, 3},
      {FrameType::kCancel, 4}, {FrameType::kPing, 5},    {FrameType::kPong, 6},
      {FrameType::kGoAway, 7}, {FrameType::kMessage, 8}, {FrameType::kWindow, 9}};
  for (auto [type, value] : types) EXPECT_EQ(static_cast<int>(type), value);
}

// PROTOCOL.md §8's table, which is gRPC's numbering as absl::StatusCode spells it.
TEST(ProtocolExample, StatusCodeTableIsAbslAndGrpcNumbering) {
  const std::pair<int, std::string_view> table[] = {
      {0, "OK"},
      {1, "CANCELLED"},
      {2, "UNKNOWN"},
      {3, "INVALID_ARGUMENT"},
      {4, "DEADLINE_EXCEEDED"},
      {5, "NOT_FOUND"},
      {6, "ALREADY_EXISTS"},
      {7, "PERMISSION_DENIED"},
      {8, "RESOURCE_EXHAUSTED"},
      {9, "FAILED_PRECONDITION"},
      {10, "ABORTED"},
      {11, "OUT_OF_RANGE"},
      {12, "UNIMPLEMENTED"},
      {13, "INTERNAL"},
      {14, "UNAVAILABLE"},
      {15, "DATA_LOSS"},
      {16, "UNAUTHENTICATED"},
  };
  for (auto [number, name] : table) {
    EXPECT_EQ(absl::StatusCodeToString(static_cast<absl::StatusCode>(number)), name);
  }
}

// Streaming calls (PROTOCOL.md §13).

using testing::kStreamClientHelloHex;
using testing::kStreamClientMessageHex;
using testing::kStreamHalfCloseHex;
using testing::kStreamRequestHex;
using testing::kStreamServerHelloHex;
using testing::kStreamServerMessageHex;
using testing::kStreamTrailerHex;
using testing::kStreamWindowHex;

courier::wire::Hello StreamHello(uint32_t max_concurrent_calls, uint32_t stream_window) {
  courier::wire::Hello hello;
  hello.set_version(1);
  hello.set_max_frame_payload(kDefaultMaxPayload);
  hello.set_agent("courier/0.1");
  hello.set_max_concurrent_calls(max_concurrent_calls);
  hello.set_stream_window(stream_window);
  return hello;
}

courier::wire::ResponseHeader StreamTrailerHeader() {
  courier::wire::ResponseHeader header;  // code 0 (OK), no message
  courier::wire::MetadataEntry* notes = header.add_metadata();
  notes->set_key("notes");
  notes->set_value("1");
  return header;
}

// A kWindow payload as §13.5 spells it: the increment as a u32, little-endian.
std::string WindowPayload(uint32_t bytes) {
  std::string out;
  for (int i = 0; i < 4; ++i) out.push_back(char((bytes >> (8 * i)) & 0xff));
  return out;
}

// Every frame of §13.9 from the generic encoders: EncodeFrame, the generated wire.proto classes
// and protobuf's own delimited encoding.
TEST(ProtocolExample, StreamFramesAreTheDocumentedBytes) {
  EchoMessages echo;
  const uint32_t id = testing::kStreamExampleCallId;
  EXPECT_EQ(ToHex(EncodeFrame(MakeFrame(
                FrameType::kHello, 0, 0,
                StreamHello(0, testing::kStreamExampleClientWindow).SerializeAsString()))),
            kStreamClientHelloHex);
  EXPECT_EQ(ToHex(EncodeFrame(MakeFrame(FrameType::kHello, 0, 0,
                                        StreamHello(testing::kStreamExampleServerMaxCalls,
                                                    testing::kStreamExampleServerWindow)
                                            .SerializeAsString()))),
            kStreamServerHelloHex);
  courier::wire::RequestHeader request;
  request.set_method(testing::kStreamExampleMethod);
  request.set_timeout_us(testing::kStreamExampleTimeoutUs);
  // No end-of-stream flag and no message bytes: the request opens a stream (§13.2).
  EXPECT_EQ(
      ToHex(EncodeFrame(MakeFrame(FrameType::kRequest, 0, id, DelimitedPayload(request, "")))),
      kStreamRequestHex);
  EXPECT_EQ(ToHex(EncodeFrame(
                MakeFrame(FrameType::kMessage, 0, id, echo.Serialize("EchoRequest", "hi")))),
            kStreamClientMessageHex);
  EXPECT_EQ(ToHex(EncodeFrame(MakeFrame(FrameType::kWindow, 0, id, WindowPayload(4)))),
            kStreamWindowHex);
  EXPECT_EQ(
      ToHex(EncodeFrame(MakeFrame(FrameType::kMessage, 0, id, echo.Serialize("EchoReply", "HI")))),
      kStreamServerMessageHex);
  EXPECT_EQ(ToHex(EncodeFrame(MakeFrame(FrameType::kMessage, kFlagEndOfStream, id, ""))),
            kStreamHalfCloseHex);
  EXPECT_EQ(ToHex(EncodeFrame(MakeFrame(FrameType::kResponse, kFlagEndOfStream, id,
                                        DelimitedPayload(StreamTrailerHeader(), "")))),
            kStreamTrailerHex);
}

// The same frames from the functions courier's channel and server send them with, and the
// defaults the example says are courier's.
TEST(ProtocolExample, StreamFramesAreWhatCourierSends) {
  EXPECT_EQ(ChannelOptions().stream_window, testing::kStreamExampleClientWindow);
  EXPECT_EQ(ServerOptions().stream_window, testing::kStreamExampleClientWindow);
  EXPECT_EQ(ServerOptions().max_concurrent_calls, testing::kStreamExampleServerMaxCalls);
  EXPECT_EQ(::courier::internal::FrameLimitFor(kDefaultMaxMessageSize), kDefaultMaxPayload);
  // A channel's session hello (no concurrency limit of its own) and a server's.
  EXPECT_EQ(ToHex(EncodeFrame(::courier::internal::HelloFrame(
                kDefaultMaxPayload, 0, testing::kStreamExampleClientWindow))),
            kStreamClientHelloHex);
  EXPECT_EQ(ToHex(EncodeFrame(::courier::internal::HelloFrame(
                kDefaultMaxPayload, testing::kStreamExampleServerMaxCalls,
                testing::kStreamExampleServerWindow))),
            kStreamServerHelloHex);
  // Channel::OpenStream's request: EncodeRequest with no message, sent without the flag.
  CallOptions options;
  options.timeout = std::chrono::seconds(1);
  const std::string request =
      ::courier::internal::EncodeRequest(testing::kStreamExampleMethod, options, 0, [](char*) {});
  EXPECT_EQ(
      ToHex(EncodeFrame(MakeFrame(FrameType::kRequest, 0, testing::kStreamExampleCallId, request))),
      kStreamRequestHex);
  EXPECT_EQ(ToHex(EncodeFrame(::courier::internal::WindowFrame(testing::kStreamExampleCallId, 4))),
            kStreamWindowHex);
  EXPECT_EQ(ToHex(EncodeFrame(
                MakeFrame(FrameType::kResponse, kFlagEndOfStream, testing::kStreamExampleCallId,
                          ::courier::internal::EncodePayload(StreamTrailerHeader(), {})))),
            kStreamTrailerHex);
}

TEST(ProtocolExample, StreamDocumentedBytesDecodeWithTheRealDecoder) {
  EchoMessages echo;
  FrameDecoder decoder;
  for (std::string_view hex :
       {kStreamClientHelloHex, kStreamServerHelloHex, kStreamRequestHex, kStreamClientMessageHex,
        kStreamWindowHex, kStreamServerMessageHex, kStreamHalfCloseHex, kStreamTrailerHex}) {
    decoder.Append(BytesFromHex(hex));
  }
  std::vector<Frame> frames;
  for (;;) {
    absl::StatusOr<std::optional<Frame>> next = decoder.Next();
    ASSERT_THAT(next, IsOk());
    if (!next->has_value()) break;
    frames.push_back(std::move(**next));
  }
  ASSERT_EQ(frames.size(), 8u);
  EXPECT_FALSE(decoder.mid_frame());

  for (int i : {0, 1}) {
    EXPECT_EQ(frames[i].type, FrameType::kHello);
    courier::wire::Hello hello;
    ASSERT_TRUE(hello.ParseFromString(frames[i].payload));
    EXPECT_EQ(hello.version(), 1u);
    EXPECT_EQ(hello.max_frame_payload(), kDefaultMaxPayload);
    EXPECT_EQ(hello.stream_window(),
              i == 0 ? testing::kStreamExampleClientWindow : testing::kStreamExampleServerWindow);
    EXPECT_EQ(hello.max_concurrent_calls(), i == 0 ? 0u : testing::kStreamExampleServerMaxCalls);
  }
  for (size_t i = 2; i < frames.size(); ++i) {
    EXPECT_EQ(frames[i].call_id, testing::kStreamExampleCallId) << i;
  }

  EXPECT_EQ(frames[2].type, FrameType::kRequest);
  EXPECT_EQ(frames[2].flags, 0);
  courier::wire::RequestHeader request;
  std::string request_message;
  ASSERT_TRUE(ParseDelimitedPayload(frames[2].payload, request, request_message));
  EXPECT_EQ(request.method(), testing::kStreamExampleMethod);
  EXPECT_EQ(request.timeout_us(), testing::kStreamExampleTimeoutUs);
  EXPECT_EQ(request_message, "");
  // The real decoder of the server agrees: no message bytes after the header.
  absl::StatusOr<::courier::internal::RequestHeaderView> view =
      ::courier::internal::DecodeRequestHeader(frames[2].payload);
  ASSERT_THAT(view, IsOk());
  EXPECT_EQ(view->message_offset, frames[2].payload.size());

  EXPECT_EQ(frames[3].type, FrameType::kMessage);
  EXPECT_EQ(frames[3].flags, 0);
  EXPECT_EQ(echo.Text("EchoRequest", frames[3].payload), "hi");

  EXPECT_EQ(frames[4].type, FrameType::kWindow);
  EXPECT_EQ(frames[4].flags, 0);
  absl::StatusOr<uint32_t> increment = ::courier::internal::DecodeWindow(frames[4].payload);
  ASSERT_THAT(increment, IsOk());
  EXPECT_EQ(*increment, 4u);
  // Half the server's window of 8 read: what courier grants back (§13.5).
  EXPECT_EQ(*increment, frames[3].payload.size());
  EXPECT_GE(frames[3].payload.size(), testing::kStreamExampleServerWindow / 2);

  EXPECT_EQ(frames[5].type, FrameType::kMessage);
  EXPECT_EQ(frames[5].flags, 0);
  EXPECT_EQ(echo.Text("EchoReply", frames[5].payload), "HI");

  EXPECT_EQ(frames[6].type, FrameType::kMessage);
  EXPECT_EQ(frames[6].flags, kFlagEndOfStream);
  EXPECT_EQ(frames[6].payload, "");

  EXPECT_EQ(frames[7].type, FrameType::kResponse);
  EXPECT_EQ(frames[7].flags, kFlagEndOfStream);
  courier::wire::ResponseHeader trailer;
  std::string trailer_message;
  ASSERT_TRUE(ParseDelimitedPayload(frames[7].payload, trailer, trailer_message));
  EXPECT_EQ(trailer.code(), 0);
  EXPECT_EQ(trailer.message(), "");
  ASSERT_EQ(trailer.metadata_size(), 1);
  EXPECT_EQ(trailer.metadata(0).key(), "notes");
  EXPECT_EQ(trailer.metadata(0).value(), "1");
  EXPECT_EQ(trailer_message, "");
}

// §13.5 and §13.1's numbers.
TEST(ProtocolExample, StreamConstantsAreTheDocumentedOnes) {
  EXPECT_EQ(::courier::internal::kMaxStreamCredit, 2147483647);
  EXPECT_EQ(::courier::internal::kDefaultStreamWindow, 262144u);
  EXPECT_EQ(::courier::internal::DecodeWindow(std::string("\0\0\0\0", 4)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(::courier::internal::DecodeWindow(std::string("\1\0\0", 3)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(::courier::internal::DecodeWindow(std::string("\1\0\0\0\0", 5)).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(::courier::internal::DecodeWindow(std::string("\xff\xff\xff\xff", 4)).value_or(0),
            0xffffffffu);
}

// udp:// (PROTOCOL.md §12).

std::string EncodeUdp(const udp::Header& header, std::string_view payload = {}) {
  std::array<std::byte, udp::kHeaderSize> bytes;
  udp::EncodeHeader(header, bytes);
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()) +
         std::string(payload);
}

absl::StatusOr<udp::Datagram> DecodeUdp(const std::string& bytes) {
  return udp::DecodeDatagram(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(bytes.data()), bytes.size()));
}

udp::Header UdpHeader(udp::Type type, uint64_t incarnation = 0, uint64_t aux = 0) {
  return udp::Header{.type = type, .session = kUdpSession, .incarnation = incarnation, .aux = aux};
}

TEST(ProtocolExample, UdpHandshakeIsTheDocumentedBytes) {
  EXPECT_EQ(ToHex(EncodeUdp(UdpHeader(udp::Type::kHello))), kUdpHelloHex);
  EXPECT_EQ(ToHex(EncodeUdp(UdpHeader(udp::Type::kCookie, kUdpIncarnation, kUdpCookie))),
            kUdpCookieHex);
  EXPECT_EQ(ToHex(EncodeUdp(UdpHeader(udp::Type::kOpen, kUdpIncarnation, kUdpCookie))),
            kUdpOpenHex);
  EXPECT_EQ(ToHex(EncodeUdp(UdpHeader(udp::Type::kOpenAck, kUdpIncarnation))), kUdpOpenAckHex);
}

// The DATA and ACK fields come from the ARQ itself: the client's sender numbers its first
// datagram 1, its fresh receiver expects 1 and offers its whole window; the server's receiver,
// having taken seq 1 (8 bytes, not yet read), expects 2 and offers the window less 8.
TEST(ProtocolExample, UdpDataAndAckAreTheDocumentedBytes) {
  const std::string payload = BytesFromHex(kUdpDataPayloadHex);
  udp::Sender client_sender;
  udp::Receiver client_receiver;
  const asio::const_buffer write[] = {asio::buffer(payload)};
  client_sender.Push(write);
  std::vector<const udp::Sender::Segment*> sent = client_sender.Collect(udp::Clock::now());
  ASSERT_EQ(sent.size(), 1u);
  EXPECT_EQ(sent[0]->seq, 1u);
  EXPECT_EQ(sent[0]->payload, payload);

  udp::Header data = UdpHeader(udp::Type::kData, kUdpIncarnation);
  data.seq = static_cast<uint32_t>(sent[0]->seq);
  data.ack = client_receiver.ack();
  data.window = client_receiver.window();
  data.aux = client_receiver.sack();
  EXPECT_EQ(data.window, 1u << 20);
  EXPECT_EQ(ToHex(EncodeUdp(data, sent[0]->payload)), kUdpDataHex);

  udp::Receiver server_receiver;
  ASSERT_EQ(server_receiver.OnData(data.seq, std::as_bytes(std::span(payload)), false),
            udp::Receiver::Result::kAccepted);
  udp::Header ack = UdpHeader(udp::Type::kAck, kUdpIncarnation);
  ack.ack = server_receiver.ack();
  ack.window = server_receiver.window();
  ack.aux = server_receiver.sack();
  EXPECT_EQ(ack.ack, 2u);
  EXPECT_EQ(ack.window, (1u << 20) - 8);
  EXPECT_EQ(ToHex(EncodeUdp(ack)), kUdpAckHex);

  // The ACK acknowledges the DATA: nothing is left to retransmit.
  EXPECT_EQ(client_sender.OnAck(ack.ack, ack.aux, ack.window, udp::Clock::now()), 1u);
  EXPECT_TRUE(client_sender.idle());
  // A retransmitted copy of seq 1 is a duplicate: dropped (the caller re-ACKs), never delivered
  // twice.
  EXPECT_EQ(server_receiver.OnData(data.seq, std::as_bytes(std::span(payload)), false),
            udp::Receiver::Result::kDuplicate);
  EXPECT_EQ(server_receiver.readable(), payload.size());
}

TEST(ProtocolExample, UdpDocumentedBytesDecodeWithTheRealDecoder) {
  struct Expected {
    std::string_view hex;
    udp::Header header;
    std::string_view payload_hex;
  };
  udp::Header data = UdpHeader(udp::Type::kData, kUdpIncarnation);
  data.seq = 1;
  data.ack = 1;
  data.window = 1u << 20;
  udp::Header ack = UdpHeader(udp::Type::kAck, kUdpIncarnation);
  ack.ack = 2;
  ack.window = (1u << 20) - 8;
  const Expected datagrams[] = {
      {kUdpHelloHex, UdpHeader(udp::Type::kHello), ""},
      {kUdpCookieHex, UdpHeader(udp::Type::kCookie, kUdpIncarnation, kUdpCookie), ""},
      {kUdpOpenHex, UdpHeader(udp::Type::kOpen, kUdpIncarnation, kUdpCookie), ""},
      {kUdpOpenAckHex, UdpHeader(udp::Type::kOpenAck, kUdpIncarnation), ""},
      {kUdpDataHex, data, kUdpDataPayloadHex},
      {kUdpAckHex, ack, ""},
  };
  for (const Expected& e : datagrams) {
    SCOPED_TRACE(e.hex);
    const std::string bytes = BytesFromHex(e.hex);
    absl::StatusOr<udp::Datagram> d = DecodeUdp(bytes);
    ASSERT_THAT(d, IsOk());
    EXPECT_EQ(d->header, e.header);
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(d->payload.data()), d->payload.size()),
              BytesFromHex(e.payload_hex));
  }
}

// What §12.2 says DecodeDatagram rejects.
TEST(ProtocolExample, UdpDecoderRejectsWhatTheDocumentSays) {
  const std::string hello = BytesFromHex(kUdpHelloHex);
  const std::string data = BytesFromHex(kUdpDataHex);
  auto with = [](std::string bytes, size_t at, char value) {
    bytes[at] = value;
    return bytes;
  };
  const std::pair<std::string_view, std::string> bad[] = {
      {"shorter than the header", hello.substr(0, 47)},
      {"bad magic", with(hello, 3, '2')},
      {"type 0", with(hello, 4, 0)},
      {"type 10", with(hello, 4, 10)},
      {"flags", with(hello, 5, 1)},
      {"reserved at 6", with(hello, 7, 1)},
      {"reserved at 36", with(hello, 39, 1)},
      {"payload on HELLO", hello + "x"},
      {"DATA without payload", data.substr(0, 48)},
      {"DATA with seq 0", with(data, 24, 0)},
      {"FIN with seq 0", with(hello, 4, 8)},
  };
  for (const auto& [what, bytes] : bad) {
    EXPECT_EQ(DecodeUdp(bytes).status().code(), absl::StatusCode::kDataLoss) << what;
  }
  // Types 1 to 9 are known; every one but DATA carries no payload.
  for (int type = 1; type <= 9; ++type) {
    if (type == 5 || type == 8) continue;
    EXPECT_THAT(DecodeUdp(with(hello, 4, char(type))), IsOk()) << type;
  }
}

TEST(ProtocolExample, UdpConstantsAreTheDocumentedOnes) {
  EXPECT_EQ(udp::kHeaderSize, 48u);
  EXPECT_EQ(udp::kMagic, 0x31445543u);
  EXPECT_EQ(udp::kMaxUdpPayloadV4, 65507u);
  EXPECT_EQ(udp::kMaxUdpPayloadV6, 65527u);
  EXPECT_EQ(udp::kMaxInFlight, 4096u);
  EXPECT_EQ(udp::kSackBits, 64);
  EXPECT_EQ(udp::kFastRetransmitAfter, 3);
  const udp::SenderOptions defaults;
  EXPECT_EQ(defaults.initial_rto, std::chrono::milliseconds(20));
  EXPECT_EQ(defaults.min_rto, std::chrono::milliseconds(2));
  EXPECT_EQ(defaults.max_rto, std::chrono::seconds(1));
  const std::pair<udp::Type, int> types[] = {
      {udp::Type::kHello, 1},   {udp::Type::kCookie, 2}, {udp::Type::kOpen, 3},
      {udp::Type::kOpenAck, 4}, {udp::Type::kData, 5},   {udp::Type::kAck, 6},
      {udp::Type::kProbe, 7},   {udp::Type::kFin, 8},    {udp::Type::kReset, 9}};
  for (auto [type, value] : types) EXPECT_EQ(static_cast<int>(type), value);
  // 32-bit wire seqs widen to the 64-bit position nearest the reference (§12.4).
  EXPECT_EQ(udp::Widen(2, 0xfffffffeull), 0x100000002ull);
  EXPECT_EQ(udp::Widen(0xffffffff, 0x100000001ull), 0xffffffffull);
}

// §12.3: the cookie is SipHash-2-4; this is the reference vector of the SipHash paper (key
// 00..0f, message 00..0e).
TEST(ProtocolExample, UdpSipHashIsTheReferenceSipHash24) {
  const uint64_t key[2] = {0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  std::array<std::byte, 15> message;
  for (size_t i = 0; i < message.size(); ++i) message[i] = std::byte(i);
  EXPECT_EQ(udp::SipHash24(key, message), 0xa129ca6149be45e5ull);
}

// A file of the source tree, found from this file's path (CMake passes absolute source paths);
// nullopt if it is not where that says.
std::optional<std::string> SourceFile(const std::string& relative) {
  std::string path = __FILE__;
  const std::string suffix = "tests/transport/protocol_example_test.cc";
  if (path.size() < suffix.size() ||
      path.compare(path.size() - suffix.size(), suffix.size(), suffix) != 0) {
    return std::nullopt;
  }
  path.replace(path.size() - suffix.size(), suffix.size(), relative);
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The hex above must appear verbatim in PROTOCOL.md.
TEST(ProtocolExample, DocumentContainsTheSameHex) {
  std::optional<std::string> doc = SourceFile("PROTOCOL.md");
  if (!doc) GTEST_SKIP() << "cannot find PROTOCOL.md beside " << __FILE__;
  for (std::string_view hex :
       {kClientHelloHex, kRequestHex, kResponseHex, kErrorResponsePayloadHex, kUdpHelloHex,
        kUdpCookieHex, kUdpOpenHex, kUdpOpenAckHex, kUdpDataHex, kUdpAckHex, kStreamClientHelloHex,
        kStreamServerHelloHex, kStreamRequestHex, kStreamClientMessageHex, kStreamWindowHex,
        kStreamServerMessageHex, kStreamHalfCloseHex, kStreamTrailerHex}) {
    EXPECT_NE(doc->find(hex), std::string::npos) << "PROTOCOL.md lacks:\n" << hex;
  }
}

// PROTOCOL.md §5 quotes proto/rpc/wire.proto whole: the document and the schema agree.
TEST(ProtocolExample, DocumentQuotesWireProtoVerbatim) {
  std::optional<std::string> doc = SourceFile("PROTOCOL.md");
  std::optional<std::string> proto = SourceFile("proto/rpc/wire.proto");
  if (!doc || !proto) GTEST_SKIP() << "cannot find the sources beside " << __FILE__;
  EXPECT_NE(doc->find("```proto\n" + *proto + "```"), std::string::npos)
      << "PROTOCOL.md's quote of wire.proto differs from the file";
}

}  // namespace
}  // namespace courier::transport
