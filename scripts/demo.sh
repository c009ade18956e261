#!/usr/bin/env bash
# Builds courier and runs the echo example over unix:// and tcp://: one server listening on both,
# a client call over each, and a latency sample with --count.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build-demo -DCMAKE_BUILD_TYPE=Release -DCOURIER_BUILD_TESTS=OFF -DCOURIER_BUILD_BENCH=OFF >/dev/null
cmake --build build-demo -j"$jobs" --target echo_server echo_client

out=$(mktemp -d)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$out"' EXIT
./build-demo/examples/echo_server --listen "unix://$out/echo.sock" --listen tcp://127.0.0.1:0 \
  >"$out/server.log" 2>&1 &
server=$!
for _ in $(seq 100); do
  [ "$(grep -c '^listening on' "$out/server.log" || true)" -ge 2 ] && break
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
kill -TERM "$server"
wait "$server"
cat "$out/server.log" | tail -n 1
