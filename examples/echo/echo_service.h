// The Echo service the example programs serve (echo_server, token_auth): Say answers with the
// request's text. Header-only, for examples.
#pragma once

#include <utility>

#include "examples/echo.courier.h"

namespace courier::examples {

class EchoServer final : public EchoService {
 public:
  asio::awaitable<absl::StatusOr<EchoReply>> Say(ServerContext&, EchoRequest request) override {
    EchoReply reply;
    reply.set_text(std::move(*request.mutable_text()));
    co_return reply;
  }
};

}  // namespace courier::examples
