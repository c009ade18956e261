// The raw floor of shm:// (raw_shm.cc): the echo of raw_system.cc over the shm transport's own
// ring and segment code (transport/shm/ring.h, segment.h) with no framework, for RawSystem.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/system.h"

namespace courier::bench {

// True for the raw system's shm transports: "shm" (each waiting side polls its ring for the shm
// transport's default spin, then sleeps on its eventfd) and "shm-nospin" (it sleeps at once).
bool IsRawShmTransport(std::string_view transport);
absl::Status ServeRawShm(std::string_view transport,
                         const std::function<void(const std::string&)>& ready);
absl::StatusOr<std::unique_ptr<EchoClient>> ConnectRawShm(std::string_view transport,
                                                          const std::string& endpoint);

}  // namespace courier::bench
