#!/usr/bin/env bash
# The kv example's contract: put/get/delete/list/add through kv_client (blocking style) against
# kv_server, status code names on stderr for errors, and echo_client_callback (callback style).
set -euo pipefail
kv_server=$1
kv_client=$2
echo_server=$3
echo_callback=$4
dir=$(mktemp -d)
pids=()
# shm:// names a socket in the per-user rendezvous directory, so the name carries our pid.
shm_name="courier-example-kv-$$"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
  # A SIGKILLed server cannot remove its shm socket file.
  for rendezvous in "${XDG_RUNTIME_DIR:-/nonexistent}/courier" "/tmp/courier-$(id -u)"; do
    rm -f "$rendezvous/$shm_name.sock"
  done
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
wait_listening() {  # FILE COUNT
  for _ in $(seq 200); do
    [ "$(grep -c '^listening on' "$1" || true)" -ge "$2" ] && return 0
    sleep 0.05
  done
  fail "server did not start: $(cat "$1")"
}
expect() {  # EXPECTED ARGS... : stdout of kv_client must equal EXPECTED
  local want=$1
  shift
  local got
  got=$("$kv_client" --connect "$uri" "$@") || fail "kv_client $* failed"
  [ "$got" = "$want" ] || fail "kv_client $*: got '$got', want '$want'"
}
expect_error() {  # CODE ARGS... : kv_client must fail with status CODE
  local code=$1
  shift
  if "$kv_client" --connect "$uri" "$@" >/dev/null 2>"$dir/err"; then fail "kv_client $* succeeded"; fi
  grep -q "^$code: " "$dir/err" || fail "kv_client $*: want $code, got $(cat "$dir/err")"
}

"$kv_server" --listen "unix://$dir/kv.sock" --listen tcp://127.0.0.1:0 --listen "shm://$shm_name" \
  --listen "fifo://$dir/kv.fifo" --listen udp://127.0.0.1:0 >"$dir/kv.out" 2>&1 &
pids+=($!)
wait_listening "$dir/kv.out" 5
grep -qx "listening on shm://$shm_name" "$dir/kv.out" || fail "no shm listening line: $(cat "$dir/kv.out")"
for uri in $(sed -n 's/^listening on //p' "$dir/kv.out"); do
  expect OK put "$uri-a" 1
  expect 1 get "$uri-a"
  expect OK put "$uri-b" two
  expect "$(printf '%s\n%s' "$uri-a=1" "$uri-b=two")" list "$uri-"
  expect 6 add "$uri-a" 5
  expect 4 add "$uri-a" -2
  expect 10 add "$uri-new" 10
  expect_error FAILED_PRECONDITION add "$uri-b" 1
  expect OK delete "$uri-b"
  expect_error NOT_FOUND get "$uri-b"
  expect_error NOT_FOUND delete "$uri-b"
  expect_error INVALID_ARGUMENT add "$uri-a" notanumber
done
uri="unix://$dir/nobody.sock"
expect_error UNAVAILABLE get x

# pipe://: each kv_client starts its own kv_server as a child on two pipes (so state does not
# outlive the call) and reaps it.
uri="pipe://$kv_server --listen pipe://stdio"
expect 10 add counter 10 2>/dev/null
expect_error NOT_FOUND get counter

"$echo_server" --listen "unix://$dir/echo.sock" >"$dir/echo.out" 2>&1 &
pids+=($!)
wait_listening "$dir/echo.out" 1
got=$("$echo_callback" --connect "unix://$dir/echo.sock" --count 20 "by callback")
[ "$got" = "by callback" ] || fail "echo_client_callback: '$got'"
if "$echo_callback" --connect "unix://$dir/nobody.sock" x 2>"$dir/err"; then fail "callback to nobody"; fi
grep -q "^UNAVAILABLE: " "$dir/err" || fail "echo_client_callback error: $(cat "$dir/err")"
echo "kv example: all checks passed"
