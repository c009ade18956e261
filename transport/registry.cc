#include "transport/registry.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "transport/fifo/fifo_transport.h"
#include "transport/pipe/pipe_transport.h"
#include "transport/shm/shm_transport.h"
#include "transport/status.h"
#include "transport/tcp/tcp_transport.h"
#include "transport/tls/tls_transport.h"
#include "transport/udp/udp_transport.h"
#include "transport/uds/uds_transport.h"

namespace courier::transport {
namespace {

const TransportInfo kBuiltInTransports[] = {
    // scheme, factory, fresh same-host endpoint, kernel credentials, confidential[, library
    // set-up per process, and clean-up per thread]
    {"tcp", &tcp::NewTransport, &tcp::LoopbackEndpoint, false, false},  // tcp://127.0.0.1:0
    {"unix", &uds::NewTransport, &uds::LoopbackEndpoint, true, true},   // unix:@courier-<pid>-<n>
    {"shm", &shm::NewTransport, &shm::LoopbackEndpoint, true, true},    // shm://courier-<pid>-<n>
    {"pipe", &pipe::NewTransport, &pipe::LoopbackEndpoint, false,
     true},  // pipe://@courier-<pid>-<n>
    {"fifo", &fifo::NewTransport, &fifo::LoopbackEndpoint, true, true},  // fifo://<dir>/courier-..
    {"udp", &udp::NewTransport, &udp::LoopbackEndpoint, false, false},   // udp://127.0.0.1:0
    {"tls", &tls::NewTransport, &tls::LoopbackEndpoint, false, true, &tls::PrepareProcess,
     &tls::EndThread},  // tls://127.0.0.1:0?..
};

}  // namespace

std::span<const TransportInfo> BuiltInTransports() { return kBuiltInTransports; }

absl::StatusOr<const TransportInfo*> FindTransport(std::string_view scheme,
                                                   std::span<const TransportInfo> table) {
  for (const TransportInfo& info : table) {
    if (info.scheme == scheme) return &info;
  }
  std::vector<std::string> known;
  for (const TransportInfo& info : table) known.emplace_back(info.scheme);
  return absl::InvalidArgumentError(
      absl::StrCat("no transport for scheme '", AsAbsl(scheme),
                   "' in this build (have: ", absl::StrJoin(known, ", "), ")"));
}

absl::StatusOr<std::unique_ptr<Transport>> NewTransport(std::string_view scheme,
                                                        asio::any_io_executor executor,
                                                        std::span<const TransportInfo> table,
                                                        const TransportOptions& options) {
  absl::StatusOr<const TransportInfo*> info = FindTransport(scheme, table);
  if (!info.ok()) return info.status();
  return (*info)->factory(std::move(executor), options);
}

void PrepareProcess(std::span<const TransportInfo> table) {
  for (const TransportInfo& info : table) {
    if (info.prepare_process != nullptr) info.prepare_process();
  }
}

void EndThread(std::span<const TransportInfo> table) {
  for (const TransportInfo& info : table) {
    if (info.end_thread != nullptr) info.end_thread();
  }
}

}  // namespace courier::transport
