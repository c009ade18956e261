#include "tools/cli/invoke.h"

#include <future>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "asio/co_spawn.hpp"
#include "asio/post.hpp"
#include "asio/use_future.hpp"
#include "google/protobuf/dynamic_message.h"
#include "google/protobuf/message.h"
#include "google/protobuf/util/json_util.h"
#include "rpc/internal/stream.h"

namespace courier::cli {
namespace {

namespace pb = google::protobuf;
using internal::ClientStream;

// --- A streaming call with serialized messages, used from a thread that is not the channel's.
// Each operation is a coroutine run on the channel's executor while the caller waits (the
// typed Blocking* handles of rpc/stream.h do the same for generated messages). Plain coroutine
// functions, not lambdas: GCC 12 miscompiles lambdas awaited through async_initiate.

asio::awaitable<std::shared_ptr<ClientStream>> OpenOp(std::shared_ptr<Channel> channel,
                                                      std::string method, CallOptions options,
                                                      std::optional<std::string> only_request) {
  std::shared_ptr<ClientStream> stream = channel->OpenStream(method, std::move(options));
  if (only_request) {
    // A server-streaming call: its one request, then the half-close. On failure the stream
    // has ended with the status, which Finish returns.
    (void)stream->Enqueue(*std::move(only_request));
    (void)stream->WritesDone();
  }
  co_return stream;
}

asio::awaitable<std::optional<std::string>> ReadOp(std::shared_ptr<ClientStream> stream) {
  co_return co_await stream->Read();
}

asio::awaitable<absl::Status> WriteOp(std::shared_ptr<ClientStream> stream, std::string message) {
  co_return co_await stream->Write(std::move(message));
}

asio::awaitable<absl::Status> WritesDoneOp(std::shared_ptr<ClientStream> stream) {
  co_return stream->WritesDone();
}

asio::awaitable<absl::Status> FinishOp(std::shared_ptr<ClientStream> stream) {
  co_return co_await stream->Finish();
}

asio::awaitable<bool> AbortOp(std::shared_ptr<ClientStream> stream, absl::Status status) {
  stream->Abort(std::move(status));
  co_return true;
}

template <typename T>
T RunOn(const asio::any_io_executor& executor, asio::awaitable<T> op) {
  return asio::co_spawn(executor, std::move(op), asio::use_future).get();
}

class BlockingStream {
 public:
  BlockingStream(const std::shared_ptr<Channel>& channel, std::string method, CallOptions options,
                 std::optional<std::string> only_request)
      : executor_(channel->executor()),
        stream_(RunOn(executor_, OpenOp(channel, std::move(method), std::move(options),
                                        std::move(only_request)))) {}
  BlockingStream(const BlockingStream&) = delete;
  BlockingStream& operator=(const BlockingStream&) = delete;
  // The stream is released on the channel's executor (cancelled if still open), never here.
  ~BlockingStream() {
    asio::post(executor_, [stream = std::move(stream_)] {
      if (!stream->ended()) stream->Cancel();
    });
  }

  // One Read and one Write may wait at once, from two threads.
  std::optional<std::string> Read() { return RunOn(executor_, ReadOp(stream_)); }
  absl::Status Write(std::string message) {
    return RunOn(executor_, WriteOp(stream_, std::move(message)));
  }
  absl::Status WritesDone() { return RunOn(executor_, WritesDoneOp(stream_)); }
  absl::Status Finish() { return RunOn(executor_, FinishOp(stream_)); }
  // Ends the call with `status` (the server is told).
  void Abort(absl::Status status) { (void)RunOn(executor_, AbortOp(stream_, std::move(status))); }

 private:
  asio::any_io_executor executor_;
  std::shared_ptr<ClientStream> stream_;
};

// --- JSON <-> messages, by descriptor.

// protobuf's reason on one line: its JSON parser adds lines that point at the error with "^".
std::string OneLine(const std::string& reason) {
  std::vector<std::string> parts;
  for (absl::string_view line : absl::StrSplit(reason, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (!line.empty() && line != "^") parts.emplace_back(line);
  }
  return absl::StrJoin(parts, " ");
}

class Codec {
 public:
  explicit Codec(const pb::MethodDescriptor& method)
      : method_(method),
        request_prototype_(factory_.GetPrototype(method.input_type())),
        response_prototype_(factory_.GetPrototype(method.output_type())) {}

  // The serialized request; INVALID_ARGUMENT naming what is wrong with the JSON. `where` says
  // which request, for streams ("" for the only one).
  absl::StatusOr<std::string> Request(const std::string& json, const std::string& where) const {
    std::unique_ptr<pb::Message> request(request_prototype_->New());
    const std::string text = absl::StripAsciiWhitespace(json).empty() ? "{}" : json;
    pb::util::Status parsed = pb::util::JsonStringToMessage(text, request.get());
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("request JSON", where, " is not a valid ",
                                                     method_.input_type()->full_name(), ": ",
                                                     OneLine(std::string(parsed.message()))));
    }
    if (!request->IsInitialized()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "request JSON", where, " lacks required fields of ", method_.input_type()->full_name(),
          ": ", request->InitializationErrorString()));
    }
    std::string bytes;
    request->SerializeToString(&bytes);
    return bytes;
  }

  // Prints one response as one line of JSON, flushed at once.
  absl::Status Print(const std::string& bytes, std::FILE* out) const {
    std::unique_ptr<pb::Message> response(response_prototype_->New());
    if (!response->ParseFromString(bytes)) {
      return absl::InternalError(
          absl::StrCat("the response does not parse as ", method_.output_type()->full_name()));
    }
    std::string json;
    pb::util::Status printed = pb::util::MessageToJsonString(*response, &json);
    if (!printed.ok()) {
      return absl::InternalError(
          absl::StrCat("the response cannot be printed as JSON: ", std::string(printed.message())));
    }
    std::fprintf(out, "%s\n", json.c_str());
    std::fflush(out);
    return absl::OkStatus();
  }

 private:
  const pb::MethodDescriptor& method_;
  pb::DynamicMessageFactory factory_;
  const pb::Message* request_prototype_;
  const pb::Message* response_prototype_;
};

std::string LineSuffix(int line_number) { return absl::StrCat(" on line ", line_number); }

// Reads responses until the stream's end, printing each; the first that cannot be printed
// aborts the call.
void PrintAll(BlockingStream& stream, const Codec& codec, std::FILE* out) {
  while (std::optional<std::string> response = stream.Read()) {
    if (absl::Status s = codec.Print(*response, out); !s.ok()) {
      stream.Abort(std::move(s));
      return;
    }
  }
}

// Writes one request per line, then half-closes. A line that does not parse aborts the call
// and is returned; a write that fails means the call ended (Finish says how).
absl::Status WriteAll(BlockingStream& stream, const Codec& codec, RequestSource& requests) {
  int line_number = 0;
  while (std::optional<std::string> line = requests.NextLine(line_number)) {
    absl::StatusOr<std::string> request = codec.Request(*line, LineSuffix(line_number));
    if (!request.ok()) {
      stream.Abort(absl::CancelledError("the client's request did not parse"));
      return request.status();
    }
    if (!stream.Write(*std::move(request)).ok()) return absl::OkStatus();
  }
  (void)stream.WritesDone();
  return absl::OkStatus();
}

}  // namespace

RequestSource RequestSource::FromText(std::string text) {
  RequestSource source;
  source.text_ = std::move(text);
  return source;
}

RequestSource RequestSource::FromFile(std::FILE* in) {
  RequestSource source;
  source.in_ = in;
  return source;
}

std::optional<std::string> RequestSource::RawLine() {
  std::string line;
  if (in_ == nullptr) {
    if (position_ >= text_.size()) return std::nullopt;
    size_t end = text_.find('\n', position_);
    if (end == std::string::npos) end = text_.size();
    line = text_.substr(position_, end - position_);
    position_ = end + 1;
  } else {
    int c;
    bool any = false;
    while ((c = std::fgetc(in_)) != EOF) {
      any = true;
      if (c == '\n') break;
      line.push_back(static_cast<char>(c));
    }
    if (!any) return std::nullopt;
  }
  ++line_number_;
  return line;
}

std::string RequestSource::ReadAll() {
  std::string all;
  while (std::optional<std::string> line = RawLine()) absl::StrAppend(&all, *line, "\n");
  return all;
}

std::optional<std::string> RequestSource::NextLine(int& line_number) {
  while (std::optional<std::string> line = RawLine()) {
    if (absl::StripAsciiWhitespace(*line).empty()) continue;
    line_number = line_number_;
    return line;
  }
  return std::nullopt;
}

absl::Status Invoke(const std::shared_ptr<Channel>& channel, const pb::MethodDescriptor& method,
                    RequestSource& requests, CallOptions options, std::FILE* out) {
  const Codec codec(method);
  const std::string path = absl::StrCat("/", method.service()->full_name(), "/", method.name());

  if (!method.client_streaming()) {
    absl::StatusOr<std::string> request = codec.Request(requests.ReadAll(), "");
    if (!request.ok()) return request.status();
    if (!method.server_streaming()) {
      absl::StatusOr<std::string> response =
          channel->AsyncCall(path, *std::move(request), std::move(options), asio::use_future).get();
      if (!response.ok()) return response.status();
      return codec.Print(*response, out);
    }
    BlockingStream stream(channel, path, std::move(options), *std::move(request));
    PrintAll(stream, codec, out);
    return stream.Finish();
  }

  BlockingStream stream(channel, path, std::move(options), std::nullopt);
  if (!method.server_streaming()) {
    // Client streaming: every request, then the one response.
    absl::Status written = WriteAll(stream, codec, requests);
    if (!written.ok()) return written;
    PrintAll(stream, codec, out);
    return stream.Finish();
  }
  // Bidirectional: responses are printed by a thread of their own as they arrive, while this
  // one writes the requests as they are read.
  std::thread printer([&] { PrintAll(stream, codec, out); });
  absl::Status written = WriteAll(stream, codec, requests);
  printer.join();
  absl::Status finished = stream.Finish();
  return written.ok() ? finished : written;
}

}  // namespace courier::cli
