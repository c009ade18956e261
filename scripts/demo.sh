#!/usr/bin/env bash
# Builds courier and runs the echo example over every transport: one server listening on
# unix://, tcp://, udp://, shm:// and fifo://, a client call over each and a latency sample with
# --count; then pipe://, where the client starts its own server as a child; then the `courier`
# command-line client lists, describes, calls and health-checks the server through reflection.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DCOURIER_BUILD_TESTS=OFF -DCOURIER_BUILD_BENCH=OFF >/dev/null
cmake --build build-demo -j"$jobs" --target echo_server echo_client courier_cli

out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT
./build-demo/examples/echo_server --listen "unix://$out/echo.sock" --listen tcp://127.0.0.1:0 \
  --listen udp://127.0.0.1:0 --listen "shm://courier-demo-$$" --listen "fifo://$out/echo.fifo" \
  >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  [ "$(grep -c '^listening on' "$out/server.log" || true)" -ge 5 ] && break
  sleep 0.05
done
cat "$out/server.log"
for uri in $(sed -n 's/^listening on //p' "$out/server.log"); do
  echo "--- $uri"
  echo "\$ echo_client --connect $uri 'hello, courier'"
  ./build-demo/examples/echo_client --connect "$uri" 'hello, courier'
  echo "\$ echo_client --connect $uri --count 10000 --size 64 ping"
  ./build-demo/examples/echo_client --connect "$uri" --count 10000 --size 64 ping
done
pipe_uri="pipe://$PWD/build-demo/examples/echo_server --listen pipe://stdio"
echo "--- $pipe_uri"
echo "\$ echo_client --connect '$pipe_uri' 'hello, courier'"
./build-demo/examples/echo_client --connect "$pipe_uri" 'hello, courier' 2>/dev/null
echo "\$ echo_client --connect '$pipe_uri' --count 10000 --size 64 ping"
./build-demo/examples/echo_client --connect "$pipe_uri" --count 10000 --size 64 ping 2>/dev/null
unix_uri=$(sed -n 's/^listening on //p' "$out/server.log" | head -n 1)
courier() {  # prints the command, then runs it
  echo "--- \$ courier $*"
  ./build-demo/tools/cli/courier "$@"
}
courier list "$unix_uri"
courier describe "$unix_uri" courier.examples.Echo
courier call "$unix_uri" courier.examples.Echo/Say '{"text": "hello, courier"}'
courier health "$unix_uri"
kill -TERM "$server"
wait "$server"
cat "$out/server.log" | tail -n 1
