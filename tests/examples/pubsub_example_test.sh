#!/usr/bin/env bash
# The pubsub example's contract, with the real binaries over unix, tcp, shm, fifo and udp:
# pubsub_server prints "listening on URI" per endpoint; a background `pubsub_client subscribe
# --count N` prints "subscribed to TOPIC" on stderr once confirmed, then exactly the events
# published after that, one line each, and exits 0; publish prints "sequence=S subscribers=K";
# a subscriber that stops reading (SIGSTOP) is ended with RESOURCE_EXHAUSTED once more than
# --max-queued-events wait for it; SIGTERM ends subscriptions with UNAVAILABLE at once and the
# server prints "shut down". Usage errors exit 2, failed calls 1 with the status code name.
# (pipe:// is left out: there each client starts a server of its own, so nobody would meet.)
#
# Waits block on a line from the process (read -t on a pipe), never on a sleep.
set -euo pipefail
server_bin=$1
client_bin=$2
dir=$(mktemp -d)
pids=()
# shm:// names a socket in the per-user rendezvous directory, so the name carries our pid.
shm_name="courier-example-pubsub-$$"
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

declare -A fd_of pid_of
# spawn NAME OUT CMD...: runs CMD in the background with stdout to file OUT ("-": to the pipe
# below as well). Its stderr, then "exit=N" when it exits, are read with next_line NAME.
spawn() {
  local name=$1 out=$2 fd
  shift 2
  [ "$out" = - ] && out=/dev/stdout
  exec {fd}< <(
    "$@" 2>&1 >"$out" &
    echo "pid=$!"
    status=0
    wait $! || status=$?
    echo "exit=$status"
  )
  fd_of[$name]=$fd
  next_line "$name"
  pid_of[$name]=${line#pid=}
  pids+=("${pid_of[$name]}")
}
next_line() {  # NAME: NAME's next line into $line; fails after 20 s without one
  read -r -t 20 -u "${fd_of[$1]}" line || fail "$1: no line within 20 s"
}
wait_exit() {  # NAME: NAME's remaining lines into $lines, its exit code into $status
  local fd=${fd_of[$1]}
  lines=""
  while next_line "$1" && [[ $line != exit=* ]]; do lines+="$line"$'\n'; done
  status=${line#exit=}
  exec {fd}<&-
}
subscribe() {  # NAME URI TOPIC [--count N]: returns once the server confirmed the subscription
  local name=$1 uri=$2 topic=$3
  shift 3
  spawn "$name" "$dir/$name.out" "$client_bin" --connect "$uri" subscribe "$topic" "$@"
  next_line "$name"
  [ "$line" = "subscribed to $topic" ] || fail "$name: want the confirmation, got '$line'"
}
expect() {  # WANT ARGS...: stdout of pubsub_client --connect $uri ARGS must be WANT
  local want=$1 got
  shift
  got=$("$client_bin" --connect "$uri" "$@") || fail "pubsub_client $uri $* failed"
  [ "$got" = "$want" ] || fail "pubsub_client $uri $*: got '$got', want '$want'"
}
expect_exit() {  # CODE PATTERN ARGS...: pubsub_client ARGS exits CODE, stderr matching PATTERN
  local code=$1 pattern=$2 got=0
  shift 2
  "$client_bin" "$@" >/dev/null 2>"$dir/err" || got=$?
  [ "$got" = "$code" ] || fail "pubsub_client $*: exit $got, want $code"
  grep -q -- "$pattern" "$dir/err" || fail "pubsub_client $*: stderr $(cat "$dir/err")"
}
sequences() {  # FILE: the sequence numbers in FILE's event lines, space-separated
  sed -n 's/^topic=[^ ]* sequence=\([0-9]*\) data=.*/\1/p' "$1" | tr '\n' ' '
}

spawn server - "$server_bin" --listen "unix://$dir/ps.sock" --listen tcp://127.0.0.1:0 \
  --listen "shm://$shm_name" --listen "fifo://$dir/ps.fifo" --listen udp://127.0.0.1:0 \
  --max-queued-events 8
uris=()
while [ ${#uris[@]} -lt 5 ]; do
  next_line server
  [[ $line == "listening on "* ]] || fail "server: '$line'"
  uris+=("${line#listening on }")
done
[ "${uris[2]}" = "shm://$shm_name" ] || fail "no shm listening line: ${uris[*]}"

big=$(head -c 32768 /dev/zero | tr '\0' x)
i=0
for uri in "${uris[@]}"; do
  i=$((i + 1))
  topic="topic-$i"
  # Events before a subscription are not delivered; both subscribers get every event after it.
  expect "sequence=1 subscribers=0" publish "$topic" "before anyone listens"
  subscribe "a$i" "$uri" "$topic" --count 3
  subscribe "b$i" "$uri" "$topic" --count 2
  expect "sequence=2 subscribers=2" publish "$topic" "hello world"
  expect "sequence=3 subscribers=2" publish "$topic" $'two\nlines'
  wait_exit "b$i"
  [ "$status" = 0 ] || fail "b$i: exit $status: $lines"
  [ "$(cat "$dir/b$i.out")" = "topic=$topic sequence=2 data=hello world
topic=$topic sequence=3 data=two\\nlines" ] || fail "b$i: $(cat "$dir/b$i.out")"
  # b has cancelled; whether the server has seen that yet depends on the transport's timing
  # (pubsub_test pins the clean-up down).
  got=$("$client_bin" --connect "$uri" publish "$topic" last)
  [[ $got =~ ^sequence=4\ subscribers=[12]$ ]] || fail "$uri: publish last: '$got'"
  wait_exit "a$i"
  [ "$status" = 0 ] || fail "a$i: exit $status: $lines"
  [ "$(sequences "$dir/a$i.out")" = "2 3 4 " ] || fail "a$i: $(cat "$dir/a$i.out")"
  grep -qx "topic=$topic sequence=4 data=last" "$dir/a$i.out" || fail "a$i: $(cat "$dir/a$i.out")"

  # A subscriber that stops reading: flow control holds its events back a window (256 KiB)
  # behind, then 8 queue, and the next publish drops it; publishes never wait for it.
  subscribe "s$i" "$uri" "slow-$i"
  kill -STOP "${pid_of[s$i]}"
  dropped=""
  for n in $(seq 100); do
    got=$("$client_bin" --connect "$uri" publish "slow-$i" "$big")
    if [ "$got" = "sequence=$n subscribers=0" ]; then
      dropped=$n
      break
    fi
    [ "$got" = "sequence=$n subscribers=1" ] || fail "$uri: slow publish $n: '$got'"
  done
  [ -n "$dropped" ] || fail "$uri: the stopped subscriber was never dropped"
  [ "$dropped" -gt 9 ] || fail "$uri: dropped at publish $dropped, before 8 could queue"
  kill -CONT "${pid_of[s$i]}"
  wait_exit "s$i"
  [ "$status" = 1 ] || fail "s$i: exit $status: $lines"
  grep -q "^RESOURCE_EXHAUSTED: subscriber fell 8 events behind on topic 'slow-$i'" <<<"$lines" ||
    fail "s$i: stderr '$lines'"
  # What reached it before it was dropped: the first events, without a gap.
  got=$(sequences "$dir/s$i.out")
  [ "$got" = "$(seq -s ' ' 1 "$(wc -l <"$dir/s$i.out")") " ] || fail "s$i: sequences $got"
  [ "$(wc -l <"$dir/s$i.out")" -lt $((dropped - 8)) ] || fail "s$i: got $(wc -l <"$dir/s$i.out")"
done

uri=${uris[0]}
expect_exit 2 usage
expect_exit 2 usage --connect "$uri" subscribe t --count 0
expect_exit 2 usage --connect "$uri" publish t
expect_exit 2 usage --connect "$uri" publish t data --count 1
expect_exit 1 "^INVALID_ARGUMENT: .*topic name is empty" --connect "$uri" publish "" data
expect_exit 1 "^INVALID_ARGUMENT: .*topic name is empty" --connect "$uri" subscribe ""
expect_exit 1 "^UNAVAILABLE: " --connect "unix://$dir/nobody.sock" publish t data
expect_exit 1 "^UNAVAILABLE: " --connect "unix://$dir/nobody.sock" subscribe t
status=0
"$server_bin" --listen "unix://$dir/other.sock" --max-queued-events 0 2>"$dir/err" || status=$?
[ "$status" = 2 ] && grep -q usage "$dir/err" || fail "--max-queued-events 0: exit $status"

# SIGTERM: the subscriptions end at once with the broker's UNAVAILABLE (not the drain's, 5 s
# later), then the server shuts down.
subscribe z "$uri" forever
kill -TERM "${pid_of[server]}"
wait_exit z
[ "$status" = 1 ] || fail "z: exit $status"
grep -q "^UNAVAILABLE: the server is shutting down" <<<"$lines" || fail "z: stderr '$lines'"
wait_exit server
[ "$status" = 0 ] || fail "server: exit $status: $lines"
grep -qx "shut down" <<<"$lines" || fail "server: no 'shut down' line: $lines"
echo "pubsub example: all checks passed"
