// PROTOCOL.md §13.9's worked example of a streaming call, as printed there (16 bytes a row), for
// the tests that check it: tests/transport/protocol_example_test.cc against the encoders and the
// document, tests/rpc/stream_wire_test.cc against a real server and a real client.
#pragma once

#include <cctype>
#include <cstdint>
#include <string>
#include <string_view>

namespace courier::testing {

// The example's call: method, call id, deadline, windows, messages and trailing metadata.
inline constexpr char kStreamExampleMethod[] = "/courier.examples.Chat/Shout";
inline constexpr uint32_t kStreamExampleCallId = 1;
inline constexpr uint64_t kStreamExampleTimeoutUs = 1'000'000;
inline constexpr uint32_t kStreamExampleClientWindow = 262144;  // courier's default
inline constexpr uint32_t kStreamExampleServerWindow = 8;
inline constexpr uint32_t kStreamExampleServerMaxCalls = 256;  // courier's default

// Client HELLO: version 1, max_frame_payload 67174400, agent "courier/0.1", stream_window 262144.
inline constexpr std::string_view kStreamClientHelloHex =
    R"(52 50 43 31 01 00 00 00 00 00 00 00 18 00 00 00
08 01 10 80 80 84 20 1a 0b 63 6f 75 72 69 65 72
2f 30 2e 31 28 80 80 10)";

// Server HELLO: the same, with max_concurrent_calls 256 and stream_window 8.
inline constexpr std::string_view kStreamServerHelloHex =
    R"(52 50 43 31 01 00 00 00 00 00 00 00 19 00 00 00
08 01 10 80 80 84 20 1a 0b 63 6f 75 72 69 65 72
2f 30 2e 31 20 80 02 28 08)";

// REQUEST without end of stream: the RequestHeader and no message bytes.
inline constexpr std::string_view kStreamRequestHex =
    R"(52 50 43 31 02 00 00 00 01 00 00 00 23 00 00 00
22 0a 1c 2f 63 6f 75 72 69 65 72 2e 65 78 61 6d
70 6c 65 73 2e 43 68 61 74 2f 53 68 6f 75 74 10
c0 84 3d)";

// MESSAGE client -> server: EchoRequest{text: "hi"}.
inline constexpr std::string_view kStreamClientMessageHex =
    R"(52 50 43 31 08 00 00 00 01 00 00 00 04 00 00 00
0a 02 68 69)";

// WINDOW server -> client: 4 bytes.
inline constexpr std::string_view kStreamWindowHex =
    R"(52 50 43 31 09 00 00 00 01 00 00 00 04 00 00 00
04 00 00 00)";

// MESSAGE server -> client: EchoReply{text: "HI"}.
inline constexpr std::string_view kStreamServerMessageHex =
    R"(52 50 43 31 08 00 00 00 01 00 00 00 04 00 00 00
0a 02 48 49)";

// The client's half-close: MESSAGE with end of stream and no payload.
inline constexpr std::string_view kStreamHalfCloseHex =
    R"(52 50 43 31 08 01 00 00 01 00 00 00 00 00 00 00)";

// The trailer: RESPONSE, end of stream, ResponseHeader{metadata: [notes: "1"]}, no message.
inline constexpr std::string_view kStreamTrailerHex =
    R"(52 50 43 31 03 01 00 00 01 00 00 00 0d 00 00 00
0c 1a 0a 0a 05 6e 6f 74 65 73 12 01 31)";

// The bytes a hex dump like the ones above stands for (whitespace ignored; lowercase digits).
inline std::string BytesFromHex(std::string_view hex) {
  std::string out;
  int nibbles = 0, value = 0;
  for (char c : hex) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    value = value * 16 + (std::isdigit(static_cast<unsigned char>(c)) ? c - '0' : c - 'a' + 10);
    if (++nibbles == 2) {
      out.push_back(char(value));
      nibbles = value = 0;
    }
  }
  return out;
}

}  // namespace courier::testing
