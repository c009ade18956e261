#!/usr/bin/env bash
# echo_server --metrics-listen: prints "metrics on http://HOST:PORT/metrics" with the real port;
# curl scrapes it over HTTP while echo_client calls, and the counters move by the calls made;
# other paths answer 404 and other methods are refused; after a flood of junk HTTP requests
# (python3, raw TCP) the endpoint still serves a scrape and the server still answers calls.
set -euo pipefail
server_bin=$1
client_bin=$2
# $dir, $server, cleanup at exit, fail
source "$(dirname "$0")/../testing/script_lib.sh"

"$server_bin" --listen tcp://127.0.0.1:0 --listen "unix://$dir/echo.sock" \
  --metrics-listen 127.0.0.1:0 >"$dir/out" 2>&1 &
server=$!
for _ in $(seq 200); do
  grep -q '^metrics on' "$dir/out" && break
  sleep 0.05
done
grep -Eqx 'metrics on http://127\.0\.0\.1:[1-9][0-9]*/metrics' "$dir/out" ||
  fail "no metrics line with a real port: $(cat "$dir/out")"
url=$(sed -n 's/^metrics on //p' "$dir/out")
tcp_uri=$(sed -n 's/^listening on \(tcp:.*\)/\1/p' "$dir/out")
unix_uri="unix://$dir/echo.sock"
say='/courier.examples.Echo/Say'

# The value of the sample whose name and labels are exactly $2 in scrape $1 (0 if absent).
value() {
  awk -v key="$2" '$1 == key { v = $2 } END { print (v == "" ? 0 : v) }' "$1"
}
scrape() {
  curl -sS --max-time 5 -o "$1" -w '%{http_code}' "$url"
}

[ "$(scrape "$dir/before")" = 200 ] || fail "first scrape"
grep -q '^# TYPE courier_server_started_total counter$' "$dir/before" || fail "no started family"

# Calls while scraping: a background loop scrapes the whole time.
(
  n=0
  while [ ! -e "$dir/stop" ]; do
    code=$(scrape "$dir/during.$n") || code=failed
    [ "$code" = 200 ] || echo "scrape $n: $code" >>"$dir/scrape_errors"
    n=$((n + 1))
  done
  echo "$n" >"$dir/scrapes"
) &
scraper=$!
summary=$("$client_bin" --connect "$tcp_uri" --count 40 --size 64 x)
[[ "$summary" =~ ^40\ calls, ]] || fail "tcp calls: '$summary'"
summary=$("$client_bin" --connect "$unix_uri" --count 25 --size 64 x)
[[ "$summary" =~ ^25\ calls, ]] || fail "unix calls: '$summary'"
touch "$dir/stop"
wait "$scraper"
[ ! -e "$dir/scrape_errors" ] || fail "scrapes during calls failed: $(cat "$dir/scrape_errors")"
[ "$(cat "$dir/scrapes")" -ge 1 ] || fail "no scrape ran during the calls"

[ "$(scrape "$dir/after")" = 200 ] || fail "scrape after the calls"
ok_key="courier_server_handled_total{code=\"OK\",method=\"$say\"}"
started_key="courier_server_started_total{method=\"$say\"}"
before_ok=$(value "$dir/before" "$ok_key")
after_ok=$(value "$dir/after" "$ok_key")
[ "$((after_ok - before_ok))" -eq 65 ] || fail "handled OK moved from $before_ok to $after_ok, not by 65"
[ "$(value "$dir/after" "$started_key")" -eq 65 ] || fail "started: $(grep started_total "$dir/after")"
[ "$(value "$dir/after" "courier_server_handling_seconds_count{method=\"$say\"}")" -eq 65 ] ||
  fail "histogram count: $(grep handling_seconds_count "$dir/after")"
# 65 requests of 64 + 2 bytes (the text field's tag and length), echoed back.
[ "$(value "$dir/after" "courier_server_received_bytes_total{method=\"$say\"}")" -eq $((65 * 66)) ] ||
  fail "received bytes: $(grep received_bytes "$dir/after")"
[ "$(value "$dir/after" "courier_server_sent_bytes_total{method=\"$say\"}")" -eq $((65 * 66)) ] ||
  fail "sent bytes: $(grep sent_bytes "$dir/after")"
[ "$(value "$dir/after" "courier_server_calls_in_flight{method=\"$say\"}")" -eq 0 ] ||
  fail "calls in flight: $(grep in_flight "$dir/after")"
[ "$(value "$dir/after" 'courier_server_connections_accepted_total{transport="tcp"}')" -eq 1 ] ||
  fail "tcp connections: $(grep connections_accepted "$dir/after")"
[ "$(value "$dir/after" 'courier_server_connections_accepted_total{transport="unix"}')" -eq 1 ] ||
  fail "unix connections: $(grep connections_accepted "$dir/after")"

# Only GET /metrics answers.
for path in / /metricsx /metrics/ /index.html /../etc/passwd; do
  code=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' --path-as-is "${url%/metrics}$path")
  [ "$code" = 404 ] || fail "GET $path answered $code"
done
for method in POST PUT DELETE PATCH; do
  code=$(curl -sS --max-time 5 -o "$dir/body" -w '%{http_code}' -X "$method" "$url")
  [ "$code" != 200 ] && [ "${code:0:1}" = 4 ] || fail "$method /metrics answered $code"
  if grep -q courier_server "$dir/body"; then fail "$method /metrics returned the metrics"; fi
done

# A flood of junk: garbage, oversized heads, bad versions, half requests, instant closes.
port=${url#http://127.0.0.1:}
port=${port%/metrics}
python3 - "$port" <<'EOF' || fail "junk flood script"
import socket, sys
port = int(sys.argv[1])
junk = [b"", b"\r\n\r\n", b"GARBAGE\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n",
        b"A" * 70000 + b"\r\n\r\n", b"GET /" + b"x" * 20000 + b" HTTP/1.1\r\n\r\n",
        bytes(range(256)) * 8, b"GET /metrics HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", b"GET /met"]
# Three clients hold half-sent requests open all along (fewer than the endpoint's 4 threads).
slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
for s in slow:
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x")
for i in range(600):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s.sendall(junk[i % len(junk)])
        if i % 2 == 0:  # half-close and read the answer; else hang up at once
            s.shutdown(socket.SHUT_WR)
            while s.recv(4096):
                pass
    except OSError:
        pass  # the server may close on us mid-request
    s.close()
EOF
[ "$(scrape "$dir/flooded")" = 200 ] || fail "scrape after the junk flood"
grep -q "^$ok_key 65$" "$dir/flooded" || fail "counters after the flood: $(grep handled "$dir/flooded")"
summary=$("$client_bin" --connect "$tcp_uri" --count 5 x)
[[ "$summary" =~ ^5\ calls, ]] || fail "calls after the flood: '$summary'"
[ "$(scrape "$dir/last")" = 200 ] || fail "last scrape"
[ "$(value "$dir/last" "$ok_key")" -eq 70 ] || fail "handled after the flood: $(grep handled "$dir/last")"

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" -eq 0 ] || fail "server exited $status after SIGTERM"
grep -qx "shut down" "$dir/out" || fail "no graceful shutdown line"
echo "metrics example: all checks passed"
