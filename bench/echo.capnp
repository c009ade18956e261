# The echo of proto/examples/echo.proto for the Cap'n Proto peer in courier-bench
# (capnp_system.cc). The payload is Data, not Text: Text would add a NUL terminator to every
# message and a check for it on every read, which protobuf's `string` and courier do not pay.
# (capnp does not validate UTF-8 either way.) The field keeps the .proto's name.
@0xf8a1beadca80660d;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("courier::bench::capnp_echo");

interface Echo {
  say @0 (text :Data) -> (text :Data);
}
