// tcp:// — TCP over IPv4, IPv6 or a DNS name ("tcp://127.0.0.1:7000", "tcp://[::1]:0",
// "tcp://localhost:7000"). TCP_NODELAY on every connection; port 0 reports the real port.
#pragma once

#include <memory>

#include "asio/any_io_executor.hpp"
#include "transport/endpoint.h"
#include "transport/transport.h"

namespace courier::transport::tcp {

std::unique_ptr<Transport> NewTransport(asio::any_io_executor executor,
                                        const TransportOptions& options = {});
// tcp://127.0.0.1:0
Endpoint LoopbackEndpoint();

}  // namespace courier::transport::tcp
