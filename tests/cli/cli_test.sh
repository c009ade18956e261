#!/usr/bin/env bash
# The `courier` command-line client against echo_server, kv_server and pubsub_server over every
# transport (unix, tcp, shm, fifo, udp, and pipe: pipe://@NAME where state must outlive one
# command, the spawning form pipe://PROGRAM otherwise): list, describe, call (unary, server
# streaming, bidirectional), health; --proto/-I against plain_echo_server (no reflection, and
# its reply shows the request's metadata); and each usage error (exit 2) and failed command
# (exit 1) with its one-line message.
set -euo pipefail
cli=$1
echo_bin=$2
kv_bin=$3
pubsub_bin=$4
plain_bin=$5
src=$6
dir=$(mktemp -d)
pids=()
# shm:// and pipe://@ names live in per-user namespaces, so they carry our pid.
tag="courier-cli-$$"
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$dir"
  # A SIGKILLed server cannot remove its shm socket file.
  for rendezvous in "${XDG_RUNTIME_DIR:-/nonexistent}/courier" "/tmp/courier-$(id -u)"; do
    rm -f "$rendezvous/$tag"-*.sock
  done
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# run CMD...: runs CMD with stdin from $dir/in (if it exists), setting $out, $err and $rc.
run() {
  local in=/dev/null
  [ -e "$dir/in" ] && in="$dir/in"
  rc=0
  "$@" <"$in" >"$dir/out" 2>"$dir/err.all" || rc=$?
  # A server the pipe:// transport spawns shares our stderr: its own two lines are not ours.
  grep -vx -e 'listening on pipe://stdio' -e 'shut down' "$dir/err.all" >"$dir/err" || true
  out=$(cat "$dir/out")
  err=$(cat "$dir/err")
  rm -f "$dir/in"
}
# expect_out WANT CMD...: CMD exits 0, prints exactly WANT on stdout and nothing on stderr.
expect_out() {
  local want=$1
  shift
  run "$@"
  [ "$rc" -eq 0 ] || fail "$*: exit $rc, stderr: $err"
  [ "$out" = "$want" ] || fail "$*: stdout '$out', want '$want'"
  [ -z "$err" ] || fail "$*: stderr '$err'"
}
# expect_err RC PREFIX CMD...: CMD exits RC with exactly one line on stderr, starting PREFIX.
expect_err() {
  local want_rc=$1 prefix=$2
  shift 2
  run "$@"
  [ "$rc" -eq "$want_rc" ] || fail "$*: exit $rc, want $want_rc; stderr: $err"
  [ "$(wc -l <"$dir/err")" -eq 1 ] || fail "$*: stderr is not one line: $err"
  [[ "$err" == "$prefix"* ]] || fail "$*: stderr '$err', want it to start '$prefix'"
}

# start NAME BIN: NAME's server listening on every transport; its URIs (one per line, in the
# order unix tcp shm fifo udp pipe) in $dir/NAME.uris.
start() {
  local name=$1 bin=$2
  "$bin" --listen "unix://$dir/$name.sock" --listen tcp://127.0.0.1:0 \
    --listen "shm://$tag-$name" --listen "fifo://$dir/$name.fifo" --listen "udp://[::1]:0" \
    --listen "pipe://@$tag-$name" >"$dir/$name.out" 2>&1 &
  pids+=($!)
  disown
  for _ in $(seq 200); do
    [ "$(grep -cs "^listening on" "$dir/$name.out" || true)" -ge 6 ] && break
    sleep 0.05
  done
  sed -n 's/^listening on //p' "$dir/$name.out" >"$dir/$name.uris"
  [ "$(wc -l <"$dir/$name.uris")" -eq 6 ] || fail "$name: listening lines: $(cat "$dir/$name.out")"
}
start echo "$echo_bin"
start kv "$kv_bin"
start pubsub "$pubsub_bin"
"$plain_bin" --listen "unix://$dir/plain.sock" >"$dir/plain.out" 2>&1 &
pids+=($!)
disown
for _ in $(seq 200); do grep -qs '^listening on' "$dir/plain.out" && break; sleep 0.05; done
grep -qx "listening on unix://$dir/plain.sock" "$dir/plain.out" ||
  fail "plain_echo_server: $(cat "$dir/plain.out")"
plain="unix://$dir/plain.sock"

# --- Help.
run "$cli" --help
[ "$rc" -eq 0 ] || fail "courier --help: exit $rc"
for verb in list describe call health; do
  grep -q "courier $verb URI" "$dir/out" || fail "courier --help does not list $verb: $out"
done
run "$cli" call --help
[ "$rc" -eq 0 ] || fail "courier call --help: exit $rc"
for flag in "-d JSON|@" "-H KEY:VALUE" "--timeout DURATION" "--proto FILE" "-I DIR" \
  "(default: 30s)"; do
  grep -qF -- "$flag" "$dir/out" || fail "courier call --help does not mention '$flag': $out"
done
run "$cli" health --help
grep -qF -- "--watch" "$dir/out" || fail "courier health --help does not mention --watch"

# --- The echo service: list, describe, call, health on every transport; the spawning pipe://
# form too (each command starts a server of its own).
echo_uris=$(cat "$dir/echo.uris")
echo_uris+=$'\n'"pipe://$echo_bin --listen pipe://stdio"
services=$'courier.examples.Echo\ncourier.reflection.v1.ServerReflection\ngrpc.health.v1.Health'
say_rpc='rpc Say(.courier.examples.EchoRequest) returns (.courier.examples.EchoReply);'
echo_service=$'service Echo {\n  '"$say_rpc"$'\n}'
while IFS= read -r uri; do
  expect_out "$services" "$cli" list "$uri"
  expect_out courier.examples.Echo.Say "$cli" list "$uri" courier.examples.Echo
  expect_out "$echo_service" "$cli" describe "$uri" courier.examples.Echo
  expect_out "$say_rpc" "$cli" describe "$uri" courier.examples.Echo.Say
  expect_out $'message EchoRequest {\n  string text = 1;\n}' \
    "$cli" describe "$uri" courier.examples.EchoRequest
  expect_out '{"text":"hello courier"}' \
    "$cli" call "$uri" courier.examples.Echo/Say '{"text": "hello courier"}'
  expect_out '{"text":"dotted"}' "$cli" call "$uri" courier.examples.Echo.Say -d '{"text":"dotted"}'
  expect_out SERVING "$cli" health "$uri"
  expect_out SERVING "$cli" health "$uri" courier.examples.Echo
  expect_err 1 "NOT_FOUND: unknown service: no.such.Service" "$cli" health "$uri" no.such.Service
done <<<"$echo_uris"

# --- The kv service: every method, over every transport of one server (pipe://@NAME reaches
# the same server, so a Put is seen by the next command's Get).
n=0
while IFS= read -r uri; do
  n=$((n + 1))
  kv=courier.examples.kv.Kv
  expect_out "{}" "$cli" call "$uri" $kv/Put "{\"key\": \"k$n\", \"value\": \"v$n\"}"
  expect_out "{\"value\":\"v$n\"}" "$cli" call "$uri" $kv/Get "{\"key\": \"k$n\"}"
  expect_out '{"value":"5"}' "$cli" call "$uri" $kv/Add "{\"key\": \"c$n\", \"delta\": 5}"
  expect_out '{"value":"-2"}' "$cli" call "$uri" $kv/Add "{\"key\": \"c$n\", \"delta\": \"-7\"}"
  expect_out "{\"entries\":[{\"key\":\"k$n\",\"value\":\"v$n\"}]}" \
    "$cli" call "$uri" $kv/List "{\"prefix\": \"k$n\"}"
  # -d @: the request from stdin.
  echo "{\"key\": \"k$n\"}" >"$dir/in"
  expect_out "{}" "$cli" call "$uri" $kv/Delete -d @
  expect_err 1 "NOT_FOUND: no key 'k$n'" "$cli" call "$uri" $kv/Get "{\"key\": \"k$n\"}"
done <"$dir/kv.uris"
# Every key left: the six counters, none of the deleted keys.
want=""
for i in 1 2 3 4 5 6; do want+="{\"key\":\"c$i\",\"value\":\"-2\"},"; done
expect_out "{\"entries\":[${want%,}]}" "$cli" call "$(head -1 "$dir/kv.uris")" $kv/List
expect_out "{}" "$cli" call "pipe://$kv_bin --listen pipe://stdio" $kv/Put '{"key": "a"}'

# --- Server streaming: a subscription on each transport prints the confirmation as soon as it
# arrives, then the event published after it, then ends at its deadline (the call never ends
# on its own). The six run at once, reading their output as it comes.
pubsub=courier.examples.pubsub.PubSub
declare -A sub_fd
n=0
while IFS= read -r uri; do
  n=$((n + 1))
  exec {fd}< <(
    status=0
    "$cli" call "$uri" $pubsub/Subscribe "{\"name\": \"t$n\"}" --timeout 4s \
      2>"$dir/sub$n.err" || status=$?
    echo "exit=$status"
  )
  sub_fd[$n]=$fd
done <"$dir/pubsub.uris"
for n in 1 2 3 4 5 6; do
  read -r -t 20 -u "${sub_fd[$n]}" line || fail "subscriber $n: no confirmation"
  [ "$line" = "{\"topic\":\"t$n\"}" ] || fail "subscriber $n: confirmation '$line'"
done
n=0
while IFS= read -r uri; do
  n=$((n + 1))
  # "aGk=" is "hi" in base64 (JSON's form of bytes).
  expect_out '{"sequence":"1","subscribers":1}' \
    "$cli" call "$uri" $pubsub/Publish "{\"topic\": \"t$n\", \"data\": \"aGk=\"}"
done <"$dir/pubsub.uris"
for n in 1 2 3 4 5 6; do
  read -r -t 20 -u "${sub_fd[$n]}" line || fail "subscriber $n: no event"
  [ "$line" = "{\"topic\":\"t$n\",\"data\":\"aGk=\",\"sequence\":\"1\"}" ] ||
    fail "subscriber $n: event '$line'"
  read -r -t 20 -u "${sub_fd[$n]}" line || fail "subscriber $n: did not end"
  [ "$line" = "exit=1" ] || fail "subscriber $n: '$line' after the event, want exit=1"
  grep -qx "DEADLINE_EXCEEDED: /$pubsub/Subscribe: deadline exceeded" "$dir/sub$n.err" ||
    fail "subscriber $n: stderr $(cat "$dir/sub$n.err")"
done

# --- Bidirectional streaming: the reflection service itself, one request per line from stdin,
# one response line each.
printf '%s\n' '{"listServices": ""}' '' '{"fileContainingSymbol": "no.Such"}' >"$dir/in"
run "$cli" call "$(head -1 "$dir/echo.uris")" \
  courier.reflection.v1.ServerReflection/ServerReflectionInfo -d @
[ "$rc" -eq 0 ] || fail "reflection over the CLI: exit $rc: $err"
[ "$(wc -l <"$dir/out")" -eq 2 ] || fail "reflection over the CLI: $out"
listed='"listServicesResponse":{"service":\[{"name":"courier.examples.Echo"}'
grep -q '^{"originalRequest":{"listServices":""},'"$listed" \
  "$dir/out" || fail "reflection over the CLI: $out"
grep -q '"errorResponse":{"errorCode":5,"errorMessage":"symbol not found: no.Such"}' \
  "$dir/out" || fail "reflection over the CLI: $out"
# Lines of the argument work as well; a bad line names its number.
reflection_request=courier.reflection.v1.ServerReflectionRequest
expect_err 1 "INVALID_ARGUMENT: request JSON on line 2 is not a valid $reflection_request: " \
  "$cli" call "$(head -1 "$dir/echo.uris")" \
  courier.reflection.v1.ServerReflection/ServerReflectionInfo $'{"listServices": ""}\n{"bogus": 1}'

# --- Health --watch: the status as it is, then the deadline ends the watch.
expect_err 1 "DEADLINE_EXCEEDED: /grpc.health.v1.Health/Watch" \
  "$cli" health "$(head -1 "$dir/echo.uris")" --watch --timeout 300ms
[ "$out" = SERVING ] || fail "health --watch printed '$out'"

# --- Without reflection: --proto and -I.
echo_uri=$(head -1 "$dir/echo.uris")
say=courier.examples.Echo/Say
expect_err 1 "UNIMPLEMENTED: reflection is not available on the server" "$cli" list "$plain"
[[ "$err" == *"--proto"* ]] || fail "no-reflection error does not suggest --proto: $err"
expect_err 1 "UNIMPLEMENTED: reflection is not available on the server" \
  "$cli" call "$plain" $say '{}'
expect_err 1 "UNIMPLEMENTED: reflection is not available on the server" \
  "$cli" describe "$plain" courier.examples.Echo
expect_out courier.examples.Echo "$cli" list "$plain" --proto examples/echo.proto -I "$src/proto"
expect_out courier.examples.Echo.Say \
  "$cli" list "$plain" courier.examples.Echo --proto examples/echo.proto -I "$src/proto"
expect_out "$echo_service" \
  "$cli" describe "$plain" courier.examples.Echo --proto examples/echo.proto -I "$src/proto"
# A disk path inside an import path; a comma list of -I and repeated --proto.
expect_out '{"text":"no reflection"}' "$cli" call "$plain" $say '{"text": "no reflection"}' \
  --proto "$src/proto/examples/echo.proto" -I "$dir,$src/proto"
expect_out courier.examples.Echo "$cli" list "$plain" --proto examples/echo.proto \
  --proto examples/echo.proto -I "$src/proto"
# -H: the metadata arrives (plain_echo_server appends it to the reply), keys lowercased.
expect_out '{"text":"md x-user=ann x-trace=t 1"}' "$cli" call "$plain" $say '{"text": "md"}' \
  --proto examples/echo.proto -I "$src/proto" -H x-user:ann -H 'X-Trace: t 1'
# -d @ with --proto.
echo '{"text": "stdin"}' >"$dir/in"
expect_out '{"text":"stdin"}' "$cli" call "$plain" $say -d @ --proto examples/echo.proto \
  -I "$src/proto"
# Client streaming: one request per line (blank lines skipped), from the argument or stdin.
join=(--proto join.proto -I "$src/tests/cli")
expect_out '{"text":"a b c","parts":3}' "$cli" call "$plain" courier.test.cli.Joiner/Join \
  $'{"text": "a"}\n{"text": "b"}\n\n{"text": "c"}' "${join[@]}"
printf '%s\n' '{"text": "from"}' '{"text": "stdin"}' >"$dir/in"
expect_out '{"text":"from stdin","parts":2}' "$cli" call "$plain" courier.test.cli.Joiner/Join \
  -d @ "${join[@]}"
expect_out '{}' "$cli" call "$plain" courier.test.cli.Joiner/Join "${join[@]}"
printf '%s\n' '{"text": "ok"}' '{"text": "ok"}' '{"txet": "typo"}' >"$dir/in"
expect_err 1 "INVALID_ARGUMENT: request JSON on line 3 is not a valid courier.test.cli.Part: txet" \
  "$cli" call "$plain" courier.test.cli.Joiner/Join -d @ "${join[@]}"
expect_err 1 "NOT_FOUND: --proto no/such.proto: " \
  "$cli" list "$plain" --proto no/such.proto -I "$src/proto"
expect_err 1 \
  "INVALID_ARGUMENT: --proto $src/proto/examples/echo.proto is not under any -I import path" \
  "$cli" list "$plain" --proto "$src/proto/examples/echo.proto" -I "$dir"
printf 'syntax = "proto3";\nmessage Broken {\n  strin text = 1;\n}\n' >"$dir/broken.proto"
expect_err 1 "INVALID_ARGUMENT: --proto broken.proto does not compile: broken.proto:3:" \
  "$cli" list "$plain" --proto broken.proto -I "$dir"
expect_err 1 "NOT_FOUND: service 'courier.examples.Nope' not found in the --proto files" \
  "$cli" call "$plain" courier.examples.Nope/Say --proto examples/echo.proto -I "$src/proto"

# --- Failed commands: exit 1, one line "CODE_NAME: message".
expect_err 1 "INVALID_ARGUMENT: request JSON is not a valid courier.examples.EchoRequest: " \
  "$cli" call "$echo_uri" $say '{"text": "unterminated'
expect_err 1 "INVALID_ARGUMENT: request JSON is not a valid courier.examples.EchoRequest: txt" \
  "$cli" call "$echo_uri" $say '{"txt": "x"}'
expect_err 1 "INVALID_ARGUMENT: request JSON is not a valid courier.examples.EchoRequest: " \
  "$cli" call "$echo_uri" $say '{"text": 5}'
expect_err 1 "NOT_FOUND: method 'Nope' not found in service 'courier.examples.Echo'" \
  "$cli" call "$echo_uri" courier.examples.Echo/Nope '{}'
expect_err 1 "NOT_FOUND: service 'courier.examples.Nope' not found on the server" \
  "$cli" call "$echo_uri" courier.examples.Nope.Say '{}'
expect_err 1 "NOT_FOUND: service 'courier.examples.Nope' not found on the server" \
  "$cli" list "$echo_uri" courier.examples.Nope
expect_err 1 "NOT_FOUND: symbol 'courier.examples.Nope' not found on the server" \
  "$cli" describe "$echo_uri" courier.examples.Nope
expect_err 1 "INVALID_ARGUMENT: method 'Say' is not of the form package.Service/Method" \
  "$cli" call "$echo_uri" Say '{}'
for verb in list describe health; do
  expect_err 1 "UNAVAILABLE: " "$cli" $verb "unix://$dir/nobody.sock"
  [[ "$err" == *"$dir/nobody.sock"* ]] || fail "$verb to nobody: $err"
done
expect_err 1 "UNAVAILABLE: " "$cli" call "unix://$dir/nobody.sock" $say '{}'
expect_err 1 "UNAVAILABLE: " "$cli" call "unix://$dir/nobody.sock" $say '{}' \
  --proto examples/echo.proto -I "$src/proto"
expect_err 1 "UNAVAILABLE: " "$cli" list "pipe://$dir/no-such-program"
expect_err 1 "INVALID_ARGUMENT: " "$cli" list "bogus://x"
# A tiny deadline on a call that never ends on its own: DEADLINE_EXCEEDED, whatever stage it
# reaches (the schema comes from the file, so only the call itself has the deadline).
expect_err 1 "DEADLINE_EXCEEDED: " "$cli" call "$(head -1 "$dir/pubsub.uris")" \
  $pubsub/Subscribe '{"name": "t"}' --timeout 1ms \
  --proto pubsub/pubsub.proto -I "$src/examples"

# No deadline at all, and a long one.
expect_out '{"text":"unbounded"}' "$cli" call "$echo_uri" $say '{"text": "unbounded"}' --timeout inf
expect_out '{"text":"patient"}' \
  "$cli" call "$echo_uri" $say '{"text": "patient"}' --timeout 1000000h

# --- Usage errors: exit 2.
expect_err 2 "ERROR: Illegal value 'no-colon' specified for flag 'H'; expected KEY:VALUE" \
  "$cli" call "$echo_uri" $say '{}' -H no-colon
expect_err 2 "ERROR: Illegal value 'bad key:v' specified for flag 'H'; metadata key 'bad key'" \
  "$cli" call "$echo_uri" $say '{}' -H 'bad key:v'
expect_err 2 "ERROR: Illegal value '5x' specified for flag 'timeout'" \
  "$cli" call "$echo_uri" $say '{}' --timeout 5x
expect_err 2 "INVALID_ARGUMENT: --timeout must be positive, not 0" \
  "$cli" call "$echo_uri" $say '{}' --timeout 0s
expect_err 2 "ERROR: Missing the value for the flag 'd'" "$cli" call "$echo_uri" $say -d
expect_err 2 "ERROR: Unknown command line flag 'bogus'" "$cli" list "$echo_uri" --bogus
expect_err 2 "INVALID_ARGUMENT: --watch does not apply to 'courier call'" \
  "$cli" call "$echo_uri" $say '{}' --watch
expect_err 2 "INVALID_ARGUMENT: -d JSON|@ does not apply to 'courier list'" \
  "$cli" list "$echo_uri" -d '{}'
expect_err 2 "INVALID_ARGUMENT: give the request either as an argument or with -d, not both" \
  "$cli" call "$echo_uri" $say '{}' -d '{}'
expect_err 2 "INVALID_ARGUMENT: usage: courier call URI package.Service/Method [JSON] (got 1" \
  "$cli" call "$echo_uri"
expect_err 2 "INVALID_ARGUMENT: usage: courier list URI [SERVICE] (got 3" \
  "$cli" list "$echo_uri" a b
expect_err 2 "INVALID_ARGUMENT: unknown verb 'frobnicate'" "$cli" frobnicate "$echo_uri"
run "$cli"
[ "$rc" -eq 2 ] || fail "courier without a verb: exit $rc"

# --- A server that begins to shut down goes NOT_SERVING: a watch prints it, then exits 1 with the
# server's reason, and a probe of a server that is gone fails too.
"$echo_bin" --listen "unix://$dir/drain.sock" >"$dir/drain.out" 2>&1 &
drain_pid=$!
pids+=("$drain_pid")
for _ in $(seq 200); do grep -qs '^listening on' "$dir/drain.out" && break; sleep 0.05; done
expect_out SERVING "$cli" health "unix://$dir/drain.sock"
"$cli" health "unix://$dir/drain.sock" --watch >"$dir/watch.out" 2>"$dir/watch.err" &
watch_pid=$!
for _ in $(seq 200); do grep -qs '^SERVING$' "$dir/watch.out" && break; sleep 0.05; done
[ "$(cat "$dir/watch.out")" = SERVING ] || fail "health --watch before the drain: $(cat "$dir/watch.out")"
kill -TERM "$drain_pid"
watch_rc=0
wait "$watch_pid" || watch_rc=$?
[ "$watch_rc" -eq 1 ] || fail "health --watch through a shutdown: exit $watch_rc"
[ "$(cat "$dir/watch.out")" = $'SERVING\nNOT_SERVING' ] ||
  fail "health --watch through a shutdown printed '$(cat "$dir/watch.out")'"
grep -qx "UNAVAILABLE: .*shutting down" "$dir/watch.err" ||
  fail "health --watch through a shutdown: stderr '$(cat "$dir/watch.err")'"
wait "$drain_pid" 2>/dev/null || true
expect_err 1 "UNAVAILABLE: " "$cli" health "unix://$dir/drain.sock"

echo "cli: all checks passed"
