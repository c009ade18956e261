// Dynamic calls for the `courier` tool: a method known only by its descriptor, each request
// parsed from JSON into a DynamicMessage and each response printed as one line of JSON, over a
// courier Channel. All four kinds of method. Command-line tool, tools/cli.
#pragma once

#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "google/protobuf/descriptor.h"
#include "rpc/call.h"
#include "rpc/channel.h"

namespace courier::cli {

// The request text: an argument, or a stream read as the call needs it (stdin, so that a
// bidirectional call can answer each line as it is typed).
class RequestSource {
 public:
  static RequestSource FromText(std::string text);
  // `in` must stay open while the source is used.
  static RequestSource FromFile(std::FILE* in);

  // Everything that is left (a unary or server-streaming method's one request).
  std::string ReadAll();
  // The next line that is not blank, without its newline; nullopt at the end. `line_number`
  // is set to its number (from 1), for messages.
  std::optional<std::string> NextLine(int& line_number);

 private:
  RequestSource() = default;
  std::optional<std::string> RawLine();

  std::string text_;
  size_t position_ = 0;
  std::FILE* in_ = nullptr;
  int line_number_ = 0;
};

// Calls `method` on `channel` (whose executor runs on another thread: Channel::Create(uri)).
// A unary or server-streaming method takes the whole source as its one request (empty means
// {}); a client- or bidirectional-streaming one takes one JSON object per line. Each response
// is printed to `out` as one line of JSON as soon as it arrives. Returns the call's status, or
// INVALID_ARGUMENT "request JSON ..." for a request that does not parse (protobuf's reason
// names the field that does not exist); a stream is cancelled then.
absl::Status Invoke(const std::shared_ptr<Channel>& channel,
                    const google::protobuf::MethodDescriptor& method, RequestSource& requests,
                    CallOptions options, std::FILE* out);

}  // namespace courier::cli
