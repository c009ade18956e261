// The raw floors of the other local mechanisms (raw_ipc.cc), for RawSystem: anonymous pipes
// ("pipe"), FIFOs ("fifo"), UDP over loopback ("udp") and POSIX message queues ("mq"), each the
// raw_system.cc echo over the bare mechanism with no framework.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/system.h"

namespace courier::bench {

// "pipe", "fifo", "udp", "mq", in report order.
std::span<const std::string_view> RawIpcTransports();
bool IsRawIpcTransport(std::string_view transport);
absl::Status ServeRawIpc(std::string_view transport,
                         const std::function<void(const std::string&)>& ready);
absl::StatusOr<std::unique_ptr<EchoClient>> ConnectRawIpc(std::string_view transport,
                                                          const std::string& endpoint);

}  // namespace courier::bench
