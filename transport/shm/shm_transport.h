// shm:// — two processes on one host talk through a shared-memory segment: per connection a
// sealed memfd holding two single-producer single-consumer rings (ring.h), an eventfd doorbell
// per side, and the rendezvous UNIX socket they were passed over (segment.h), which stays open
// so that a peer's death is seen at once.
//
// Addresses: "shm://NAME" (the socket is <rendezvous directory>/NAME.sock, in a 0700 directory
// of this user: $XDG_RUNTIME_DIR/courier or /tmp/courier-<uid>) or "shm:///abs/path.sock". Options
// after a '?', '&'-separated:
//   ring=BYTES   ring capacity per direction, a power of two from 4k to 256m ("k"/"m" suffixes);
//                on a listener: what it gives and the most a client may ask for (default 1m);
//                on a connect: what the client asks for (default: the server's choice)
//   spin_us=N    how long a waiting side polls its ring before it sleeps on its eventfd (0: never
//                poll; default kDefaultSpin when the peer is another process, 0 when it is this
//                one, whose reactor thread a poll could be holding up)
// Only this user may connect: the socket file is 0600, the directory 0700, and the server also
// checks the client's SO_PEERCRED uid. The connection is a reliable byte stream.
#pragma once

#include <chrono>
#include <memory>

#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::shm {

inline constexpr size_t kDefaultRingCapacity = size_t{1} << 20;
inline constexpr std::chrono::microseconds kDefaultSpin{50};

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// A fresh name, shm://courier-<pid>-<n>-<salt>.
Endpoint LoopbackEndpoint();

}  // namespace courier::transport::shm
