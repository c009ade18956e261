#!/usr/bin/env bash
# The echo example's command-line contract: echo_server prints one "listening on URI" line per
# endpoint (the real port for port 0) and stops gracefully on SIGTERM; echo_client prints the
# reply, the --count summary line, and on failure the status code name on stderr, exiting 1.
set -euo pipefail
server_bin=$1
client_bin=$2
# $dir, $server, cleanup at exit, fail
source "$(dirname "$0")/../testing/script_lib.sh"

# shm:// names a socket in the per-user rendezvous directory, so the name carries our pid.
shm_name="courier-example-$$"
"$server_bin" --listen "unix://$dir/echo.sock" --listen tcp://127.0.0.1:0 \
  --listen "shm://$shm_name" --listen "fifo://$dir/echo.fifo" --listen "udp://[::1]:0" \
  >"$dir/out" 2>&1 &
server=$!
for _ in $(seq 200); do
  [ "$(grep -c '^listening on' "$dir/out" || true)" -ge 5 ] && break
  sleep 0.05
done
grep -qx "listening on unix://$dir/echo.sock" "$dir/out" || fail "no unix listening line: $(cat "$dir/out")"
grep -Eqx 'listening on tcp://127\.0\.0\.1:[1-9][0-9]*' "$dir/out" || fail "no tcp line with a real port"
grep -qx "listening on shm://$shm_name" "$dir/out" || fail "no shm listening line: $(cat "$dir/out")"
grep -qx "listening on fifo://$dir/echo.fifo" "$dir/out" || fail "no fifo line: $(cat "$dir/out")"
grep -Eqx 'listening on udp://\[::1\]:[1-9][0-9]*' "$dir/out" || fail "no udp line with a real port"

for uri in $(sed -n 's/^listening on //p' "$dir/out"); do
  reply=$("$client_bin" --connect "$uri" "hello courier")
  [ "$reply" = "hello courier" ] || fail "$uri: reply '$reply'"
  summary=$("$client_bin" --connect "$uri" --count 50 --size 64 x)
  [[ "$summary" =~ ^50\ calls,\ p50\ [0-9.]+\ us,\ p99\ [0-9.]+\ us$ ]] || fail "$uri: '$summary'"
  padded=$("$client_bin" --connect "$uri" --size 10 ab)
  [ "$padded" = "ababababab" ] || fail "$uri: --size gave '$padded'"
done

# pipe://: the client starts its own server as a child, wired to it by two pipes; the server's
# "listening on" and "shut down" lines go to stderr (stdout is the transport).
pipe_uri="pipe://$server_bin --listen pipe://stdio"
reply=$("$client_bin" --connect "$pipe_uri" "over a pipe" 2>"$dir/pipe.err")
[ "$reply" = "over a pipe" ] || fail "pipe: reply '$reply', stderr $(cat "$dir/pipe.err")"
grep -qx "listening on pipe://stdio" "$dir/pipe.err" || fail "pipe: no listening line on stderr"
summary=$("$client_bin" --connect "$pipe_uri" --count 50 --size 64 x 2>/dev/null)
[[ "$summary" =~ ^50\ calls, ]] || fail "pipe: '$summary'"
if "$client_bin" --connect "pipe://$dir/no-such-program" x 2>"$dir/err"; then fail "pipe to nothing"; fi
grep -q "^UNAVAILABLE: .*no-such-program" "$dir/err" || fail "pipe to nothing: $(cat "$dir/err")"

if "$client_bin" --connect "unix://$dir/nobody.sock" x 2>"$dir/err"; then fail "call to nobody succeeded"; fi
grep -q "^UNAVAILABLE: .*$dir/nobody.sock" "$dir/err" || fail "unexpected error: $(cat "$dir/err")"
if "$client_bin" --connect "shm://$shm_name-nobody" x 2>"$dir/err"; then fail "shm call to nobody succeeded"; fi
grep -q "^UNAVAILABLE: .*$shm_name-nobody" "$dir/err" || fail "unexpected shm error: $(cat "$dir/err")"
if "$client_bin" --connect "shm://$shm_name?ring=3000" x 2>"$dir/err"; then fail "bad ring size succeeded"; fi
grep -q "^INVALID_ARGUMENT: .*ring" "$dir/err" || fail "unexpected error: $(cat "$dir/err")"
if "$client_bin" --connect "bogus://x" x 2>"$dir/err"; then fail "bogus scheme succeeded"; fi
grep -q "^INVALID_ARGUMENT: " "$dir/err" || fail "unexpected error: $(cat "$dir/err")"

# A stopped server (SIGSTOP: the kernel still accepts connections, nobody answers): the client
# prints its error at the deadline and exits right after, not when its connection attempt would
# have timed out (20 s).
"$server_bin" --listen "unix://$dir/stopped.sock" >"$dir/stopped.out" 2>&1 &
stopped=$!
for _ in $(seq 200); do grep -q '^listening on' "$dir/stopped.out" && break; sleep 0.05; done
kill -STOP "$stopped"
start=$(date +%s%N)
if "$client_bin" --connect "unix://$dir/stopped.sock" --timeout-ms 500 x 2>"$dir/err"; then
  fail "call to a stopped server succeeded"
fi
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
kill -CONT "$stopped"
kill -9 "$stopped" 2>/dev/null || true
grep -q "^DEADLINE_EXCEEDED: " "$dir/err" || fail "stopped server: $(cat "$dir/err")"
[ "$elapsed_ms" -lt 3000 ] || fail "client took $elapsed_ms ms to exit after a 500 ms deadline"

# A second SIGTERM during a graceful shutdown exits at once. A connection that never says hello
# keeps the first shutdown busy for about a second.
"$server_bin" --listen tcp://127.0.0.1:0 >"$dir/second.out" 2>"$dir/second.err" &
second=$!
for _ in $(seq 200); do grep -q '^listening on' "$dir/second.out" && break; sleep 0.05; done
port=$(sed -n 's/^listening on tcp:\/\/127\.0\.0\.1://p' "$dir/second.out")
exec 3<>"/dev/tcp/127.0.0.1/$port"
sleep 0.2
kill -TERM "$second"
sleep 0.2
kill -TERM "$second"
status=0
wait "$second" || status=$?
exec 3<&-
[ "$status" -ne 0 ] || fail "second SIGTERM: exit status 0, as if the shutdown had finished"
grep -q "second signal" "$dir/second.err" || fail "second SIGTERM: $(cat "$dir/second.err")"

kill -TERM "$server"
status=0
wait "$server" || status=$?
server=""
[ "$status" -eq 0 ] || fail "server exited $status after SIGTERM"
grep -qx "shut down" "$dir/out" || fail "no graceful shutdown line"
[ ! -e "$dir/echo.sock" ] || fail "socket file left behind"
[ ! -e "$dir/echo.fifo" ] || fail "request FIFO left behind"
for rendezvous in "${XDG_RUNTIME_DIR:-/nonexistent}/courier" "/tmp/courier-$(id -u)"; do
  [ ! -e "$rendezvous/$shm_name.sock" ] || fail "shm socket file left behind in $rendezvous"
done
echo "echo example: all checks passed"
