// The list of systems, and what they share.
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bench/system.h"

namespace courier::bench {

#ifndef COURIER_BENCH_HAVE_GRPC
std::unique_ptr<System> NewGrpcSystem() { return nullptr; }
std::string GrpcNote() { return std::string("not built (") + COURIER_BENCH_NO_GRPC_REASON + ")"; }
#endif
#ifndef COURIER_BENCH_HAVE_CAPNP
std::unique_ptr<System> NewCapnpSystem() { return nullptr; }
std::string CapnpNote() { return std::string("not built (") + COURIER_BENCH_NO_CAPNP_REASON + ")"; }
#endif

std::vector<std::unique_ptr<System>> AllSystems() {
  std::vector<std::unique_ptr<System>> systems;
  systems.push_back(NewRawSystem());
  systems.push_back(NewCourierSystem());
  systems.push_back(NewCourierMetricsSystem());
  if (std::unique_ptr<System> grpc = NewGrpcSystem()) systems.push_back(std::move(grpc));
  if (std::unique_ptr<System> capnp = NewCapnpSystem()) systems.push_back(std::move(capnp));
  return systems;
}

std::string MakePayload(size_t size) {
  std::string payload(size, '\0');
  for (size_t i = 0; i < size; ++i) payload[i] = static_cast<char>('a' + i % 26);
  return payload;
}

}  // namespace courier::bench
