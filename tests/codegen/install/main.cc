// An outside project's program on an installed courier: serves hello.Greeter with health
// checking, calls it once through the generated stub and asks its health, in one process over a
// UNIX abstract socket, and prints OK.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/detached.hpp"
#include "asio/io_context.hpp"
#include "grpc/health/v1/health.courier.h"
#include "hello.courier.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "services/health.h"
#include "services/reflection.h"

namespace {

class Greeter final : public hello::GreeterService {
 public:
  asio::awaitable<absl::StatusOr<hello::HelloReply>> SayHello(
      courier::ServerContext&, hello::HelloRequest request) override {
    hello::HelloReply reply;
    reply.set_message(absl::StrCat("hello, ", request.name()));
    co_return reply;
  }
};

asio::awaitable<void> CallOnce(
    asio::io_context& io, courier::Server& server, std::shared_ptr<courier::Channel> channel,
    std::optional<absl::StatusOr<hello::HelloReply>>& reply,
    std::optional<absl::StatusOr<grpc::health::v1::HealthCheckResponse>>& health) {
  hello::GreeterStub stub(channel);
  hello::HelloRequest request;
  request.set_name("outside");
  reply = co_await stub.SayHello(request);
  grpc::health::v1::HealthCheckRequest check;
  check.set_service("hello.Greeter");
  health = co_await grpc::health::v1::HealthStub(channel).Check(check);
  channel->Close();
  co_await server.Shutdown();
  io.stop();
}

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "FAIL: %s\n", status.ToString().c_str());
  return 1;
}

}  // namespace

int main() {
  Greeter greeter;  // outlives the server and the io_context
  asio::io_context io;
  courier::Server server(io.get_executor());
  if (absl::Status s = server.AddService(greeter); !s.ok()) return Fail(s);
  if (absl::Status s = courier::EnableReflection(server); !s.ok()) return Fail(s);
  if (auto health = courier::EnableHealth(server); !health.ok()) return Fail(health.status());
  absl::StatusOr<courier::Endpoint> endpoint =
      server.Listen(absl::StrCat("unix:@courier-outside-", getpid()));
  if (!endpoint.ok()) return Fail(endpoint.status());
  absl::StatusOr<std::shared_ptr<courier::Channel>> channel =
      courier::Channel::Create(io.get_executor(), endpoint->ToString());
  if (!channel.ok()) return Fail(channel.status());

  std::optional<absl::StatusOr<hello::HelloReply>> reply;
  std::optional<absl::StatusOr<grpc::health::v1::HealthCheckResponse>> health;
  asio::co_spawn(io, CallOnce(io, server, *channel, reply, health), asio::detached);
  io.run_for(std::chrono::seconds(20));
  if (!reply) return Fail(absl::DeadlineExceededError("no reply within 20 s"));
  if (!reply->ok()) return Fail(reply->status());
  if ((*reply)->message() != "hello, outside") {
    return Fail(absl::InternalError(absl::StrCat("unexpected reply: ", (*reply)->message())));
  }
  if (!health) return Fail(absl::DeadlineExceededError("no health answer within 20 s"));
  if (!health->ok()) return Fail(health->status());
  if ((*health)->status() != grpc::health::v1::HealthCheckResponse::SERVING) {
    return Fail(absl::InternalError("hello.Greeter is not SERVING"));
  }
  std::printf("OK\n");
  return 0;
}
