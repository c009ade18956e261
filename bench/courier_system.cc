// courier over every transport in transport::BuiltInTransports(): the echo service of
// proto/examples/echo.proto through its generated EchoService and EchoStub, served in the server
// process and called from the driver, on one single-threaded io_context per side (the default
// shape: no thread hop on a call's path). Besides each scheme, "shm-nospin": shm:// with
// `?spin_us=0` on both the listener's and the client's URI, so that every wait sleeps on the
// eventfd at once (the plain "shm" case keeps the transport's default spin). The streaming
// figures (issue #11) come from bench/stream_echo.proto's StreamEcho, served beside Echo.
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "asio/co_spawn.hpp"
#include "asio/io_context.hpp"
#include "bench/server_process.h"
#include "bench/stream_echo.courier.h"
#include "bench/stream_echo.pb.h"
#include "bench/system.h"
#include "examples/echo.courier.h"
#include "examples/echo.pb.h"
#include "examples/echo/echo_service.h"
#include "prometheus/registry.h"
#include "rpc/channel.h"
#include "rpc/server.h"
#include "transport/registry.h"
#include "transport/shm/segment.h"

namespace courier::bench {
namespace {

using ::courier::examples::EchoReply;
using ::courier::examples::EchoRequest;
using ::courier::examples::EchoStub;

// Download: `size`-byte messages for `duration_ms` (the clock read every 64th message); Chat: an
// echo of each message until the client half-closes.
class StreamServer final : public StreamEchoService {
 public:
  asio::awaitable<absl::Status> Download(ServerContext&, StreamRequest request,
                                         ServerWriter<StreamChunk>& writer) override {
    StreamChunk chunk;
    chunk.set_body(MakePayload(static_cast<size_t>(request.size())));
    const auto end = std::chrono::steady_clock::now() +
                     std::chrono::milliseconds(request.duration_ms());
    for (uint64_t i = 0;; ++i) {
      if (i % 64 == 0 && std::chrono::steady_clock::now() >= end) break;
      if (absl::Status s = co_await writer.Write(chunk); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }

  asio::awaitable<absl::Status> Chat(ServerContext&,
                                     ServerReaderWriter<StreamChunk, StreamChunk>& stream) override {
    while (std::optional<StreamChunk> message = co_await stream.Read()) {
      if (absl::Status s = co_await stream.Write(*message); !s.ok()) co_return s;
    }
    co_return absl::OkStatus();
  }
};

class CourierClient final : public EchoClient {
 public:
  // `metrics`: the channel records client metrics (ChannelOptions::metrics_registry).
  static absl::StatusOr<std::unique_ptr<EchoClient>> Create(const std::string& endpoint,
                                                            bool metrics) {
    auto client = std::make_unique<CourierClient>();
    ChannelOptions options;
    if (metrics) options.metrics_registry = std::make_shared<prometheus::Registry>();
    absl::StatusOr<std::shared_ptr<Channel>> channel =
        Channel::Create(client->io_.get_executor(), endpoint, options);
    if (!channel.ok()) return channel.status();
    client->channel_ = *std::move(channel);
    client->stub_ = std::make_unique<EchoStub>(client->channel_);
    client->stream_stub_ = std::make_unique<StreamEchoStub>(client->channel_);
    return client;
  }

  ~CourierClient() override {
    channel_->Close();
    io_.restart();
    io_.poll();  // let the channel's loops see the close and unwind
  }

  absl::Status PingPong(size_t payload, int count, std::vector<int64_t>& round_trips) override {
    EchoRequest request;
    request.set_text(MakePayload(payload));
    return RunToCompletion(1, [&, payload, count]() -> asio::awaitable<absl::Status> {
      for (int i = 0; i < count; ++i) {
        auto start = std::chrono::steady_clock::now();
        absl::StatusOr<EchoReply> reply = co_await stub_->Say(request);
        auto elapsed = std::chrono::steady_clock::now() - start;
        if (absl::Status s = Check(reply, payload); !s.ok()) co_return s;
        round_trips.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
      }
      co_return absl::OkStatus();
    });
  }

  absl::Status Saturate(size_t payload, int in_flight, CallCounters& counters) override {
    EchoRequest request;
    request.set_text(MakePayload(payload));
    return RunToCompletion(in_flight, [&, payload]() -> asio::awaitable<absl::Status> {
      while (!counters.stop.load(std::memory_order_relaxed)) {
        absl::StatusOr<EchoReply> reply = co_await stub_->Say(request);
        if (absl::Status s = Check(reply, payload); !s.ok()) co_return s;
        counters.completed.fetch_add(1, std::memory_order_relaxed);
      }
      co_return absl::OkStatus();
    });
  }

  absl::StatusOr<StreamSample> StreamDownload(size_t payload, double warmup_s,
                                              double measure_s) override {
    StreamRequest request;
    request.set_size(static_cast<int32_t>(payload));
    request.set_duration_ms(static_cast<int64_t>((warmup_s + measure_s) * 1000));
    absl::StatusOr<StreamSample> sample = absl::InternalError("courier: stream did not run");
    absl::Status status = RunToCompletion(1, [&]() -> asio::awaitable<absl::Status> {
      StreamWindow window(warmup_s);
      ClientReader<StreamChunk> call = stream_stub_->Download(request);
      while (std::optional<StreamChunk> message = co_await call.Read()) {
        if (message->body().size() != payload) {
          call.Cancel();
          co_return absl::DataLossError("stream message of the wrong size");
        }
        window.Received();
      }
      window.Close();
      if (absl::Status s = co_await call.Finish(); !s.ok()) co_return s;
      sample = window.Result();
      co_return sample.status();
    });
    if (!status.ok()) return status;
    return sample;
  }

  absl::Status BidiPingPong(size_t payload, int count, std::vector<int64_t>& round_trips) override {
    StreamChunk message;
    message.set_body(MakePayload(payload));
    return RunToCompletion(1, [&, payload, count]() -> asio::awaitable<absl::Status> {
      ClientReaderWriter<StreamChunk, StreamChunk> call = stream_stub_->Chat();
      for (int i = 0; i < count; ++i) {
        auto start = std::chrono::steady_clock::now();
        if (absl::Status s = co_await call.Write(message); !s.ok()) co_return s;
        std::optional<StreamChunk> echo = co_await call.Read();
        auto elapsed = std::chrono::steady_clock::now() - start;
        if (!echo) {
          absl::Status s = co_await call.Finish();
          co_return s.ok() ? absl::DataLossError("the bidi stream ended early") : s;
        }
        if (echo->body().size() != payload) {
          call.Cancel();
          co_return absl::DataLossError("stream echo of the wrong size");
        }
        round_trips.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
      }
      if (absl::Status s = call.WritesDone(); !s.ok()) co_return s;
      if (co_await call.Read()) co_return absl::DataLossError("an echo nobody asked for");
      co_return co_await call.Finish();
    });
  }

 private:
  static absl::Status Check(const absl::StatusOr<EchoReply>& reply, size_t payload) {
    if (!reply.ok()) return reply.status();
    if (reply->text().size() != payload) return absl::DataLossError("reply of the wrong size");
    return absl::OkStatus();
  }

  // Runs `workers` copies of `worker` on the io_context until all have finished (the channel's
  // own loops never finish, so the last worker stops the context); the first error wins.
  template <typename Worker>
  absl::Status RunToCompletion(int workers, Worker worker) {
    absl::Status status;
    int running = workers;
    for (int i = 0; i < workers; ++i) {
      asio::co_spawn(io_, worker(), [&](std::exception_ptr e, absl::Status s) {
        if (e) s = absl::InternalError("courier client: exception");
        if (!s.ok() && status.ok()) status = s;
        if (--running == 0) io_.stop();
      });
    }
    io_.restart();
    io_.run();
    return status;
  }

  asio::io_context io_{1};
  std::shared_ptr<Channel> channel_;
  std::unique_ptr<EchoStub> stub_;
  std::unique_ptr<StreamEchoStub> stream_stub_;
};

// A bench transport that is a registered scheme with options on its URIs.
struct Variant {
  std::string_view name;     // the bench's transport name
  std::string_view scheme;   // the registry's
  std::string_view options;  // appended after '?' to the listener's and the client's address
};
constexpr Variant kVariants[] = {{"shm-nospin", "shm", "spin_us=0"}};

const Variant* FindVariant(std::string_view transport) {
  for (const Variant& v : kVariants) {
    if (v.name == transport) return &v;
  }
  return nullptr;
}

// The server process ends with _exit (server_process.h), so a shm:// listener cannot remove its
// rendezvous socket file itself: this does, when the driver says quit.
void RemoveOnQuit(const Endpoint& endpoint) {
  static std::string* path = nullptr;
  std::string name = endpoint.address.substr(0, endpoint.address.find('?'));
  absl::StatusOr<std::string> socket_path =
      name.starts_with('/') ? absl::StatusOr<std::string>(name)
                            : transport::shm::RendezvousPath(name, /*create_directory=*/false);
  if (!socket_path.ok() || path) return;
  path = new std::string(*std::move(socket_path));
  SetServerCleanup([] { ::unlink(path->c_str()); });
}

// tls: the listener's URI without its cert= and key=, so that the client presents no
// certificate (the server asks for none), like gRPC's SslCredentials client with only the root
// CA; dialled as it is, the listener's URI would have every new channel read and decode the
// server's key as a client certificate it never sends.
std::string TlsClientUri(const Endpoint& endpoint) {
  size_t query = endpoint.address.find('?');
  if (query == std::string::npos) return endpoint.ToString();
  std::vector<std::string> kept;
  for (absl::string_view option :
       absl::StrSplit(absl::string_view(endpoint.address).substr(query + 1), '&')) {
    if (!absl::StartsWith(option, "cert=") && !absl::StartsWith(option, "key=")) {
      kept.emplace_back(option);
    }
  }
  Endpoint client{endpoint.scheme, endpoint.address.substr(0, query)};
  if (!kept.empty()) absl::StrAppend(&client.address, "?", absl::StrJoin(kept, "&"));
  return client.ToString();
}

// "courier+metrics" (`metrics`): the same with Prometheus metrics recorded on both sides, the
// server's also served over HTTP (ServerOptions::metrics_listen; nobody scrapes it during the
// run), so the two systems' ratio is the cost of recording.
class CourierSystem final : public System {
 public:
  explicit CourierSystem(bool metrics) : metrics_(metrics) {}
  std::string_view name() const override { return metrics_ ? "courier+metrics" : "courier"; }

  std::vector<std::string> transports() const override {
    std::vector<std::string> schemes;
    for (const transport::TransportInfo& info : transport::BuiltInTransports()) {
      schemes.emplace_back(info.scheme);
      for (const Variant& v : kVariants) {
        if (v.scheme == info.scheme) schemes.emplace_back(v.name);
      }
    }
    return schemes;
  }

  absl::Status Serve(std::string_view transport,
                     const std::function<void(const std::string&)>& ready) override {
    const Variant* variant = FindVariant(transport);
    absl::StatusOr<const transport::TransportInfo*> info =
        transport::FindTransport(variant ? variant->scheme : transport);
    if (!info.ok()) return info.status();
    asio::io_context io(1);
    ::courier::examples::EchoServer echo;
    StreamServer streams;
    ServerOptions server_options;
    if (metrics_) server_options.metrics_listen = "127.0.0.1:0";
    Server server(io.get_executor(), server_options);
    if (absl::Status s = server.AddService(echo); !s.ok()) return s;
    if (absl::Status s = server.AddService(streams); !s.ok()) return s;
    std::string options = variant ? "?" + std::string(variant->options) : "";
    absl::StatusOr<Endpoint> endpoint =
        server.Listen((*info)->loopback_endpoint().ToString() + options);
    if (!endpoint.ok()) return endpoint.status();
    if (endpoint->scheme == "shm") RemoveOnQuit(*endpoint);
    if (endpoint->scheme == "tls") RemoveTlsLoopbackFilesOnQuit();
    // The client's URI carries the options too (the listener's own endpoint may drop them).
    std::string uri = endpoint->scheme == "tls" ? TlsClientUri(*endpoint) : endpoint->ToString();
    ready(uri.find('?') == std::string::npos ? uri + options : uri);
    io.run();
    return absl::InternalError("courier server: io_context ran out of work");
  }

  absl::StatusOr<std::unique_ptr<EchoClient>> Connect(std::string_view transport,
                                                      const std::string& endpoint) override {
    return CourierClient::Create(endpoint, metrics_);
  }

 private:
  bool metrics_;
};

}  // namespace

std::unique_ptr<System> NewCourierSystem() { return std::make_unique<CourierSystem>(false); }
std::unique_ptr<System> NewCourierMetricsSystem() { return std::make_unique<CourierSystem>(true); }

}  // namespace courier::bench
