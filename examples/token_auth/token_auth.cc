// token_auth [--listen URI]
// Call credentials and call authorization in one program. It serves courier.examples.Echo on URI
// (default: a fresh unix:@ endpoint; any transport a token may cross: unix, shm, fifo, tls) with
// ServerOptions::authorize requiring the metadata entry "authorization: Bearer <token>" (the token
// from $COURIER_TOKEN, or a default), then calls it:
//   1. with ChannelOptions::call_credentials adding the token: prints "ok: <reply>";
//   2. from a channel without credentials: prints "UNAUTHENTICATED: <message>";
//   3. with a wrong token: prints "PERMISSION_DENIED: <message>";
//   4. over tcp:// with credentials: the channel refuses to send a token in the clear and prints
//      "UNAUTHENTICATED: <message>" (the call never leaves the process);
// then "the server refused 2 calls" (ServerStats::calls_not_authorized).
// Exits 0 if each outcome was the expected one, 1 otherwise. Neither side logs or prints the
// token: courier logs no metadata, and the messages below name no credential.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "examples/echo.courier.h"
#include "examples/echo/echo_service.h"
#include "openssl/crypto.h"
#include "rpc/channel.h"
#include "rpc/server.h"

namespace {

using courier::examples::EchoReply;
using courier::examples::EchoRequest;

constexpr std::string_view kBearer = "Bearer ";

// The server's check: runs on the reactor before every call's handler, so it only compares.
// CRYPTO_memcmp takes the same time wherever the bytes differ; only the length can leak, and
// the length of a random token is no secret.
absl::Status CheckToken(const std::string& expected, const courier::AuthorizationContext& context) {
  const std::string* authorization = nullptr;
  for (const auto& [key, value] : context.metadata) {
    if (key != "authorization") continue;
    if (authorization != nullptr) {
      return absl::UnauthenticatedError("more than one authorization entry");
    }
    authorization = &value;
  }
  if (authorization == nullptr) return absl::UnauthenticatedError("no authorization metadata");
  std::string_view value = *authorization;
  if (!value.starts_with(kBearer) || value.size() == kBearer.size()) {
    return absl::UnauthenticatedError("authorization is not \"Bearer <token>\"");
  }
  value.remove_prefix(kBearer.size());
  if (value.size() != expected.size() ||
      CRYPTO_memcmp(value.data(), expected.data(), expected.size()) != 0) {
    return absl::PermissionDeniedError("the bearer token is not valid for this server");
  }
  return absl::OkStatus();
}

// The client's side: adds the token to every call the channel starts.
courier::CallCredentials BearerToken(std::string token) {
  return [token = std::move(token)](const courier::CallCredentialsContext&,
                                    courier::Metadata& metadata) {
    metadata.emplace_back("authorization", std::string(kBearer) + token);
    return absl::OkStatus();
  };
}

std::string Describe(const absl::Status& status) {
  return absl::StrCat(absl::StatusCodeToString(status.code()), ": ", status.message());
}

// One call over `channel`; prints its outcome and returns whether its code was `expected`.
asio::awaitable<bool> Try(std::string_view what, std::shared_ptr<courier::Channel> channel,
                          absl::StatusCode expected) {
  courier::examples::EchoStub stub(channel);
  EchoRequest request;
  request.set_text("hello");
  courier::CallOptions options;
  options.timeout = std::chrono::seconds(10);
  absl::StatusOr<EchoReply> reply = co_await stub.Say(request, options);
  std::printf("%s: ", std::string(what).c_str());
  if (reply.ok()) {
    std::printf("ok: %s\n", reply->text().c_str());
  } else {
    std::printf("%s\n", Describe(reply.status()).c_str());
  }
  std::fflush(stdout);
  absl::StatusCode got = reply.ok() ? absl::StatusCode::kOk : reply.status().code();
  co_return got == expected;
}

asio::awaitable<int> Run(asio::io_context& io, courier::Server& server, std::string uri,
                         std::string token) {
  int failures = 0;
  auto channel = [&](courier::CallCredentials credentials,
                     std::string_view target) -> std::shared_ptr<courier::Channel> {
    courier::ChannelOptions options;
    options.call_credentials = std::move(credentials);
    absl::StatusOr<std::shared_ptr<courier::Channel>> made =
        courier::Channel::Create(io.get_executor(), target, options);
    if (!made.ok()) {
      std::fprintf(stderr, "%s\n", Describe(made.status()).c_str());
      std::exit(1);
    }
    return *std::move(made);
  };
  if (!co_await Try("with the token", channel(BearerToken(token), uri), absl::StatusCode::kOk)) {
    ++failures;
  }
  if (!co_await Try("without credentials", channel(nullptr, uri),
                    absl::StatusCode::kUnauthenticated)) {
    ++failures;
  }
  // As long as the right one (CRYPTO_memcmp runs), its last character changed.
  std::string wrong = token;
  wrong.back() = wrong.back() == 'x' ? 'y' : 'x';
  if (!co_await Try("with a wrong token", channel(BearerToken(wrong), uri),
                    absl::StatusCode::kPermissionDenied)) {
    ++failures;
  }
  // Nothing listens there: the channel refuses before it dials, as tcp:// is not confidential.
  if (!co_await Try("over tcp://", channel(BearerToken(token), "tcp://127.0.0.1:1"),
                    absl::StatusCode::kUnauthenticated)) {
    ++failures;
  }
  // The two refused calls reached the server; the tcp:// one never left this process.
  const uint64_t refused = server.stats().calls_not_authorized;
  std::printf("the server refused %llu calls\n", static_cast<unsigned long long>(refused));
  if (refused != 2) ++failures;
  co_await server.Shutdown(std::chrono::seconds(1));
  co_return failures == 0 ? 0 : 1;
}

int Usage() {
  std::fprintf(stderr, "usage: token_auth [--listen URI]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    if (arg == "--listen" && i + 1 < argc) {
      listen = argv[++i];
    } else {
      return Usage();
    }
  }
  if (listen.empty()) listen = absl::StrCat("unix:@courier-token-auth-", ::getpid());
  const char* from_env = std::getenv("COURIER_TOKEN");
  std::string token = from_env != nullptr && *from_env != '\0' ? from_env : "courier-example-token";

  asio::io_context io(1);
  courier::examples::EchoServer echo;
  courier::ServerOptions options;
  options.authorize = [token](const courier::AuthorizationContext& context) {
    return CheckToken(token, context);
  };
  courier::Server server(io.get_executor(), options);
  if (absl::Status s = server.AddService(echo); !s.ok()) {
    std::fprintf(stderr, "%s\n", Describe(s).c_str());
    return 1;
  }
  absl::StatusOr<courier::Endpoint> endpoint = server.Listen(listen);
  if (!endpoint.ok()) {
    std::fprintf(stderr, "%s\n", Describe(endpoint.status()).c_str());
    return 1;
  }
  std::printf("listening on %s\n", endpoint->ToString().c_str());
  std::fflush(stdout);

  int exit_code = 1;
  asio::co_spawn(io, Run(io, server, endpoint->ToString(), std::move(token)),
                 [&](std::exception_ptr e, int code) { exit_code = e ? 1 : code; });
  io.run();
  return exit_code;
}
