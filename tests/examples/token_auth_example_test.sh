#!/usr/bin/env bash
# examples/token_auth: a call with the bearer token answered, one without credentials refused
# UNAUTHENTICATED, one with a wrong token PERMISSION_DENIED, and credentials refused over plain
# tcp:// before anything is sent; exit 0. The token (a distinctive one, from COURIER_TOKEN) is in
# neither the program's stdout nor its stderr, server log lines included.
set -euo pipefail
bin=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
token="zq7-courier-test-token-$$-$RANDOM-x9"
status=0
COURIER_TOKEN=$token timeout 60 "$bin" >"$dir/out" 2>"$dir/err" || status=$?
[ "$status" = 0 ] || fail "exit $status: $(cat "$dir/out" "$dir/err")"
expect() {
  grep -qE "$1" "$dir/out" || fail "no line matching '$1' in: $(cat "$dir/out")"
}
expect '^listening on unix:@'
expect '^with the token: ok: hello$'
expect '^without credentials: UNAUTHENTICATED: .*no authorization metadata'
expect '^with a wrong token: PERMISSION_DENIED: .*not valid'
expect '^over tcp://: UNAUTHENTICATED: .*call credentials are not sent over tcp://'
expect '^the server refused 2 calls$'
# Nothing of the token anywhere: all but its last character, which the wrong token changes.
if grep -qF "${token%?}" "$dir/out" "$dir/err"; then fail "the token was printed or logged"; fi

# --listen: another confidential transport, shm://, behaves the same.
status=0
COURIER_TOKEN=$token timeout 60 "$bin" --listen "shm://courier-token-$$" >"$dir/out" 2>"$dir/err" ||
  status=$?
[ "$status" = 0 ] || fail "shm:// exit $status: $(cat "$dir/out" "$dir/err")"
expect '^listening on shm://'
expect '^with the token: ok: hello$'
if grep -qF "${token%?}" "$dir/out" "$dir/err"; then fail "the token was printed or logged (shm://)"; fi

# A bad flag is a usage error.
status=0
"$bin" --bogus 2>"$dir/err" || status=$?
[ "$status" = 2 ] || fail "--bogus: exit $status"
grep -q '^usage: token_auth' "$dir/err" || fail "--bogus: $(cat "$dir/err")"
echo PASS
