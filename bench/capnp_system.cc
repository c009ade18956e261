// Cap'n Proto (Debian's libcapnp, 0.9.x) as a second framework peer: the echo of
// proto/examples/echo.proto written as bench/echo.capnp (a Data payload, see there), served by
// capnp::EzRpcServer and called through capnp::EzRpcClient, over an abstract UNIX socket and TCP.
// Both sides run everything on one thread in kj's event loop, like courier's single io_context.
// Built only when CMake found Cap'n Proto; systems.cc says why not otherwise.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/echo.capnp.h"
#include "bench/system.h"
#include "capnp/common.h"
#include "capnp/ez-rpc.h"
#include "kj/async.h"
#include "kj/exception.h"

namespace courier::bench {
namespace {

using ::courier::bench::capnp_echo::Echo;

// Room for `payload` bytes of Data plus the struct and pointer around them, in words: passed as
// the first segment's size so that a message (request or reply) is one segment, allocated once.
capnp::MessageSize SizeHint(size_t payload) { return {payload / sizeof(capnp::word) + 8, 0}; }

absl::Status FromKj(const kj::Exception& e) {
  return absl::UnavailableError(absl::StrCat("capnp: ", e.getDescription().cStr()));
}

class EchoImpl final : public Echo::Server {
 protected:
  kj::Promise<void> say(SayContext context) override {
    capnp::Data::Reader text = context.getParams().getText();
    context.getResults(SizeHint(text.size())).setText(text);
    return kj::READY_NOW;
  }
};

class CapnpClient final : public EchoClient {
 public:
  // EzRpcClient sets up (or shares) this thread's kj event loop: it must be created and used on
  // one thread, which the runner does (Connect, then PingPong and Saturate, on its thread).
  explicit CapnpClient(const std::string& endpoint)
      : client_(endpoint.c_str()), echo_(client_.getMain<Echo>()) {}
  // kj's destructors may throw (noexcept(false)); EchoClient's may not. A throw here terminates.
  ~CapnpClient() noexcept override {}

  // One empty call: the connection is made in the background, and fails only when used.
  absl::Status Probe() {
    try {
      echo_.sayRequest().send().wait(client_.getWaitScope());
      // Made before the connection was up, echo_ forwards through a local promise; once it is
      // up, the bootstrap capability is the connection's own.
      echo_ = client_.getMain<Echo>();
      echo_.sayRequest().send().wait(client_.getWaitScope());
      return absl::OkStatus();
    } catch (const kj::Exception& e) {
      return FromKj(e);
    }
  }

  absl::Status PingPong(size_t payload, int count, std::vector<int64_t>& round_trips) override {
    const std::string data = MakePayload(payload);
    const kj::ArrayPtr<const kj::byte> bytes(reinterpret_cast<const kj::byte*>(data.data()),
                                             data.size());
    kj::WaitScope& wait_scope = client_.getWaitScope();
    try {
      for (int i = 0; i < count; ++i) {
        // Timed from building the request, as courier's and gRPC's calls serialize in theirs.
        auto start = std::chrono::steady_clock::now();
        auto request = echo_.sayRequest(SizeHint(payload));
        request.setText(bytes);
        capnp::Response<Echo::SayResults> reply = request.send().wait(wait_scope);
        auto elapsed = std::chrono::steady_clock::now() - start;
        if (reply.getText().size() != payload) {
          return absl::DataLossError("capnp: reply of the wrong size");
        }
        round_trips.push_back(
            std::chrono::duration_cast<std::chrono::nanoseconds>(elapsed).count());
      }
    } catch (const kj::Exception& e) {
      return FromKj(e);
    }
    return absl::OkStatus();
  }

  absl::Status Saturate(size_t payload, int in_flight, CallCounters& counters) override {
    const std::string data = MakePayload(payload);
    Loop loop{
        *this, payload,
        kj::ArrayPtr<const kj::byte>(reinterpret_cast<const kj::byte*>(data.data()), data.size()),
        counters, absl::OkStatus()};
    try {
      // One promise chain per slot, each issuing its next call from the previous one's `then`.
      auto slots = kj::heapArrayBuilder<kj::Promise<void>>(static_cast<size_t>(in_flight));
      for (int i = 0; i < in_flight; ++i) slots.add(Next(loop));
      kj::joinPromises(slots.finish()).wait(client_.getWaitScope());
    } catch (const kj::Exception& e) {
      return FromKj(e);
    }
    return loop.status;
  }

 private:
  struct Loop {
    CapnpClient& client;
    size_t payload;
    kj::ArrayPtr<const kj::byte> bytes;
    CallCounters& counters;
    absl::Status status;  // the first failure; every slot then winds down
  };

  // The slot's next call, or a resolved promise once the loop is stopping.
  static kj::Promise<void> Next(Loop& loop) {
    if (!loop.status.ok() || loop.counters.stop.load(std::memory_order_relaxed)) {
      return kj::READY_NOW;
    }
    auto request = loop.client.echo_.sayRequest(SizeHint(loop.payload));
    request.setText(loop.bytes);
    return request.send().then(
        [&loop](capnp::Response<Echo::SayResults>&& reply) -> kj::Promise<void> {
          if (reply.getText().size() != loop.payload) {
            if (loop.status.ok())
              loop.status = absl::DataLossError("capnp: reply of the wrong size");
            return kj::READY_NOW;
          }
          loop.counters.completed.fetch_add(1, std::memory_order_relaxed);
          return Next(loop);
        },
        [&loop](kj::Exception&& e) -> kj::Promise<void> {
          if (loop.status.ok()) loop.status = FromKj(e);
          return kj::READY_NOW;
        });
  }

  capnp::EzRpcClient client_;
  Echo::Client echo_;
};

class CapnpSystem final : public System {
 public:
  std::string_view name() const override { return "capnp"; }
  std::vector<std::string> transports() const override { return {"unix", "tcp"}; }

  absl::Status Serve(std::string_view transport,
                     const std::function<void(const std::string&)>& ready) override {
    std::string address;
    if (transport == "unix") {
      // kj 0.9 parses "unix-abstract:NAME" (Linux's abstract namespace: no file to clean up).
      address = absl::StrCat("unix-abstract:courier-bench-capnp-", getpid());
    } else if (transport == "tcp") {
      address = "127.0.0.1:0";
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat("capnp: no transport ", std::string(transport)));
    }
    try {
      capnp::EzRpcServer server(kj::heap<EchoImpl>(), address.c_str());
      kj::WaitScope& wait_scope = server.getWaitScope();
      // Resolves once it listens: the bound port for TCP, 0 for a UNIX socket.
      unsigned port = server.getPort().wait(wait_scope);
      ready(transport == "tcp" ? absl::StrCat("127.0.0.1:", port) : address);
      kj::NEVER_DONE.wait(wait_scope);
    } catch (const kj::Exception& e) {
      return FromKj(e);
    }
    return absl::InternalError("capnp server: stopped");
  }

  absl::StatusOr<std::unique_ptr<EchoClient>> Connect(std::string_view transport,
                                                      const std::string& endpoint) override {
    std::unique_ptr<CapnpClient> client;
    try {
      client = std::make_unique<CapnpClient>(endpoint);
    } catch (const kj::Exception& e) {
      return FromKj(e);
    }
    if (absl::Status s = client->Probe(); !s.ok()) {
      return absl::UnavailableError(
          absl::StrCat("capnp: cannot connect to ", endpoint, ": ", s.message()));
    }
    return client;
  }
};

}  // namespace

std::unique_ptr<System> NewCapnpSystem() { return std::make_unique<CapnpSystem>(); }
std::string CapnpNote() {
  return absl::StrCat("included (capnp ", CAPNP_VERSION_MAJOR, ".", CAPNP_VERSION_MINOR, ".",
                      CAPNP_VERSION_MICRO,
                      ", EzRpcServer/EzRpcClient, Data payload, one kj event loop per process)");
}

}  // namespace courier::bench
