# The transports this build has, as source files; transport/registry.cc is the table that maps a
# scheme to each. Adding a transport adds its folder here and its row there, and nothing else.
set(COURIER_TRANSPORT_SRCS
  transport/internal/fd.cc
  transport/internal/fd_stream.cc
  transport/internal/rendezvous.cc
  transport/internal/unix_socket.cc
  transport/internal/tcp_socket.cc
  transport/tcp/tcp_transport.cc
  transport/tls/dev_cert.cc
  transport/tls/tls_transport.cc
  transport/uds/uds_transport.cc
  transport/shm/ring.cc
  transport/shm/segment.cc
  transport/shm/shm_transport.cc
  transport/pipe/pipe_transport.cc
  transport/fifo/fifo_transport.cc
  transport/udp/udp_wire.cc
  transport/udp/arq.cc
  transport/udp/udp_transport.cc)
# What those sources link beyond Asio and Abseil: OpenSSL 3 for tls://.
find_package(OpenSSL 3 REQUIRED)
set(COURIER_TRANSPORT_LIBS OpenSSL::SSL OpenSSL::Crypto)
