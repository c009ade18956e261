#!/usr/bin/env bash
# The uid/gid allow-lists across real users: echo_server (as root) with allow_uid=/allow_gid= in
# its URI, echo_client run as root and, through setpriv, as nobody (uid and gid 65534, no
# supplementary groups). A refused client fails PERMISSION_DENIED naming its uid and gid, and the
# server logs the refusal. Needs root and setpriv (util-linux): exits 77 (skipped) otherwise.
#
# unix:// uses an abstract socket (@name), which has no file permissions, so the allow-list is the
# only thing between nobody and the server. shm:// and fifo:// cannot be reached across users at
# all: shm's rendezvous directory is per user (/tmp/courier-<euid> or $XDG_RUNTIME_DIR/courier,
# 0700, and nobody looks in its own), its server refuses clients of another uid except root, and
# fifo's FIFOs are 0600 with owners checked. So over those two only the root client is meaningful:
# admitted by allow_uid=0, refused by an allow-list that names only nobody. That nobody cannot
# reach them at all is the transports' own rule (tests/transport/), not the allow-list's.
set -euo pipefail
server_src=$1
client_src=$2
if [ "$(id -u)" != 0 ]; then
  echo "SKIP: not root"
  exit 77
fi
if ! command -v setpriv >/dev/null; then
  echo "SKIP: no setpriv"
  exit 77
fi
# $dir, $server, cleanup at exit, fail
source "$(dirname "$0")/../testing/script_lib.sh"
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
# Whether nobody can run $1: with no arguments echo_client exits 2 (usage), not 126 or 127.
nobody_runs() {
  local status=0
  as_nobody "$1" >/dev/null 2>&1 || status=$?
  [ "$status" = 2 ]
}
server_bin=$server_src
client_bin=$client_src
# A build tree nobody cannot enter (a 0700 home, say): run copies from a 0755 directory.
if ! nobody_runs "$client_bin"; then
  chmod 0755 "$dir"
  mkdir -m 0755 "$dir/bin"
  cp "$server_src" "$dir/bin/echo_server"
  cp "$client_src" "$dir/bin/echo_client"
  chmod 0755 "$dir/bin/echo_server" "$dir/bin/echo_client"
  server_bin=$dir/bin/echo_server
  client_bin=$dir/bin/echo_client
  nobody_runs "$client_bin" || fail "nobody cannot run $client_bin, even copied to $dir/bin"
fi

# Starts echo_server on $1 and sets $uri to the endpoint it prints (without the allow-list).
start_server() {
  stop_server
  "$server_bin" --listen "$1" >"$dir/out" 2>&1 &
  server=$!
  for _ in $(seq 200); do
    grep -q '^listening on' "$dir/out" && break
    sleep 0.05
  done
  uri=$(sed -n 's/^listening on //p' "$dir/out")
  [ -n "$uri" ] || fail "server did not listen on $1: $(cat "$dir/out")"
  case $uri in *allow_*) fail "the printed endpoint keeps the allow-list: $uri" ;; esac
}
stop_server() {
  if [ -n "$server" ]; then
    kill "$server" 2>/dev/null || true
    wait "$server" 2>/dev/null || true
    server=""
  fi
}
# admitted WHO: echo_client run by WHO ("root" or "nobody") gets its text back.
admitted() {
  local run=()
  [ "$1" = nobody ] && run=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  local reply
  reply=$(timeout 20 "${run[@]}" "$client_bin" --connect "$uri" "hello $1" 2>"$dir/err") ||
    fail "$1 refused by $uri: $(cat "$dir/err")"
  [ "$reply" = "hello $1" ] || fail "$1 over $uri: '$reply'"
}
# refused WHO UID GID: echo_client run by WHO fails PERMISSION_DENIED naming UID and GID, at
# once (the server answers the hello with the refusal), and the server logged it.
refused() {
  local run=()
  [ "$1" = nobody ] && run=(setpriv --reuid=65534 --regid=65534 --clear-groups)
  local start=$SECONDS status=0
  timeout 20 "${run[@]}" "$client_bin" --connect "$uri" "hello $1" >/dev/null 2>"$dir/err" ||
    status=$?
  [ "$status" = 1 ] || fail "$1 over $uri: exit $status, want 1: $(cat "$dir/err")"
  [ $((SECONDS - start)) -le 5 ] || fail "$1 over $uri: the refusal took $((SECONDS - start)) s"
  grep -q "^PERMISSION_DENIED: .*refused the connection: uid $2 (gid $3) may not connect" \
    "$dir/err" || fail "$1 over $uri: $(cat "$dir/err")"
  for _ in $(seq 40); do
    grep -q "refused a connection from .*uid $2 (gid $3) may not connect to this server" \
      "$dir/out" && return 0
    sleep 0.05
  done
  fail "the server did not log refusing $1: $(cat "$dir/out")"
}

# unix://, abstract: by uid, then by gid.
start_server "unix:@courier-allow-$$?allow_uid=0"
[ "$uri" = "unix:@courier-allow-$$" ] || fail "printed endpoint: $uri"
admitted root
refused nobody 65534 65534
start_server "unix:@courier-allow-$$?allow_gid=65534"
admitted nobody
refused root 0 0
# Both lists: a peer in either is admitted.
start_server "unix:@courier-allow-$$?allow_uid=0&allow_gid=65534"
admitted root
admitted nobody
# Without a list, anyone who can reach it.
start_server "unix:@courier-allow-$$"
admitted nobody

# shm:// and fifo://: root only (see the top).
start_server "shm://courier-allow-$$?allow_uid=0"
[ "$uri" = "shm://courier-allow-$$" ] || fail "printed endpoint: $uri"
admitted root
start_server "shm://courier-allow-$$?allow_uid=65534"
refused root 0 0
start_server "fifo://$dir/allow.fifo?allow_uid=0"
admitted root
start_server "fifo://$dir/allow.fifo?allow_gid=65534"
refused root 0 0

# A transport without kernel credentials: Listen fails INVALID_ARGUMENT.
status=0
timeout 20 "$server_bin" --listen "tcp://127.0.0.1:0?allow_uid=0" >"$dir/out" 2>&1 || status=$?
[ "$status" = 1 ] || fail "allow_uid on tcp://: exit $status: $(cat "$dir/out")"
grep -q '^INVALID_ARGUMENT: ' "$dir/out" || fail "allow_uid on tcp://: $(cat "$dir/out")"
stop_server
echo PASS
