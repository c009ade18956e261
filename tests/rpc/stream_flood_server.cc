// The server half of stream_memory_test: a process of its own that serves
// courier.test.streams.Streams/Download by writing as fast as flow control lets it.
//
//   stream_flood_server ENDPOINT
//
// Listens on ENDPOINT, prints the endpoint it got on one line of stdout, and serves until its
// stdin reaches end of file (the test went away). Each Download writes `flood_count` messages of
// `flood_size` bytes; a Write that has to wait is what keeps this process's memory bounded.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "asio/io_context.hpp"
#include "asio/posix/stream_descriptor.hpp"
#include "asio/read.hpp"
#include "rpc/server.h"
#include "streams.courier.h"

namespace courier {
namespace {

using ::courier::test::streams::Payload;
using ::courier::test::streams::StreamRequest;

class Flood final : public test::streams::StreamsService {
 public:
  asio::awaitable<absl::Status> Download(ServerContext&, StreamRequest request,
                                         ServerWriter<Payload>& writer) override {
    Payload message;
    message.set_body(std::string(static_cast<size_t>(request.flood_size()), 'f'));
    for (int i = 0; i < request.flood_count(); ++i) {
      if (absl::Status s = co_await writer.Write(message); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
};

int Main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s ENDPOINT\n", argv[0]);
    return 2;
  }
  asio::io_context io;
  Flood service;
  Server server(io.get_executor());
  if (absl::Status s = server.AddService(service); !s.ok()) {
    std::fprintf(stderr, "%s\n", s.ToString().c_str());
    return 1;
  }
  absl::StatusOr<Endpoint> endpoint = server.Listen(argv[1]);
  if (!endpoint.ok()) {
    std::fprintf(stderr, "listen %s: %s\n", argv[1], endpoint.status().ToString().c_str());
    return 1;
  }
  std::printf("%s\n", endpoint->ToString().c_str());
  std::fflush(stdout);
  // End of file on stdin (or an error reading it) stops the server.
  asio::posix::stream_descriptor input(io, ::dup(STDIN_FILENO));
  char byte;
  input.async_read_some(asio::buffer(&byte, 1), [&](std::error_code, size_t) { io.stop(); });
  io.run();
  return 0;
}

}  // namespace
}  // namespace courier

int main(int argc, char** argv) { return courier::Main(argc, argv); }
