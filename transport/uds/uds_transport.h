// unix:// — UNIX stream sockets: a path ("unix:///run/svc.sock", "unix:rel/path") or an
// abstract name ("unix:@svc"). A path listener creates its socket file with mode 0600 (widen
// with "?mode=0660" after the path), replaces a stale file nobody answers on, refuses a live
// one (kAlreadyExists) and removes its file on Close(). Peer credentials come from SO_PEERCRED.
#pragma once

#include <memory>

#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::uds {

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// A fresh abstract name, unix:@courier-<pid>-<n>: no file to clean up.
Endpoint LoopbackEndpoint();

}  // namespace courier::transport::uds
