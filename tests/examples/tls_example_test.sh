#!/usr/bin/env bash
# The README's tls:// commands, as written there: courier-dev-certs makes a CA and certificates;
# echo_server serves TLS, then mutual TLS; echo_client and the courier CLI call both, and are
# refused (exit 1, UNAVAILABLE and OpenSSL's reason) without the CA or without a client
# certificate. Also the CLI's TLS flag errors (exit 2).
set -euo pipefail
certs_bin=$1
server_bin=$2
client_bin=$3
cli_bin=$4
# $dir, $server, cleanup at exit, fail
source "$(dirname "$0")/../testing/script_lib.sh"
# Starts echo_server on $1 and sets $uri to the endpoint it prints (the real port).
start_server() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true
  "$server_bin" --listen "$1" >"$dir/out" 2>&1 &
  server=$!
  for _ in $(seq 200); do
    grep -q '^listening on' "$dir/out" && break
    sleep 0.05
  done
  uri=$(sed -n 's/^listening on //p' "$dir/out")
  [ -n "$uri" ] || fail "server did not listen: $(cat "$dir/out")"
}

"$certs_bin" "$dir/certs" >/dev/null
for f in ca.pem server.pem server.key client.pem client.key; do
  [ -s "$dir/certs/$f" ] || fail "courier-dev-certs did not write $f"
done
[ "$(stat -c %a "$dir/certs/server.key")" = 600 ] || fail "server.key is not 0600"
c=$dir/certs

# TLS: the server proves who it is.
start_server "tls://127.0.0.1:0?cert=$c/server.pem&key=$c/server.key"
hostport=${uri#tls://}
hostport=${hostport%%\?*}
reply=$("$client_bin" --connect "tls://$hostport?ca=$c/ca.pem" "hello over tls")
[ "$reply" = "hello over tls" ] || fail "echo_client over tls: '$reply'"
out=$("$cli_bin" call "tls://$hostport" --cacert "$c/ca.pem" courier.examples.Echo/Say '{"text": "hi"}')
[ "$out" = '{"text":"hi"}' ] || fail "courier call over tls: '$out'"
"$cli_bin" health "tls://localhost:${hostport##*:}" --cacert "$c/ca.pem" | grep -qx SERVING ||
  fail "courier health over tls by name"
# Without the CA the system store does not know ours: refused, with the reason.
if "$client_bin" --connect "tls://$hostport" x 2>"$dir/err"; then fail "untrusted server accepted"; fi
grep -q UNAVAILABLE "$dir/err" || fail "no UNAVAILABLE: $(cat "$dir/err")"
grep -q "certificate verify failed" "$dir/err" || fail "no reason: $(cat "$dir/err")"
# A name the certificate does not carry.
if "$cli_bin" call "tls://$hostport" --cacert "$c/ca.pem" --servername other.example \
  courier.examples.Echo/Say '{}' 2>"$dir/err"; then fail "wrong name accepted"; fi
grep -q "hostname mismatch" "$dir/err" || fail "no name mismatch: $(cat "$dir/err")"
# Plain tcp:// against the TLS port: a clear failure, no hang.
if timeout 20 "$client_bin" --connect "tcp://$hostport" x 2>"$dir/err"; then fail "plaintext accepted"; fi
grep -q UNAVAILABLE "$dir/err" || fail "plaintext: $(cat "$dir/err")"

# Mutual TLS: the client proves who it is too.
start_server "tls://127.0.0.1:0?cert=$c/server.pem&key=$c/server.key&ca=$c/ca.pem&client_auth=require"
hostport=${uri#tls://}
hostport=${hostport%%\?*}
reply=$("$client_bin" --connect "tls://$hostport?ca=$c/ca.pem&cert=$c/client.pem&key=$c/client.key" "hello over mtls")
[ "$reply" = "hello over mtls" ] || fail "echo_client over mtls: '$reply'"
out=$("$cli_bin" call "tls://$hostport" --cacert "$c/ca.pem" --cert "$c/client.pem" --key "$c/client.key" \
  courier.examples.Echo/Say '{"text": "hi"}')
[ "$out" = '{"text":"hi"}' ] || fail "courier call over mtls: '$out'"
if "$cli_bin" call "tls://$hostport" --cacert "$c/ca.pem" courier.examples.Echo/Say '{}' 2>"$dir/err"; then
  fail "mtls without a client certificate accepted"
fi
grep -q UNAVAILABLE "$dir/err" || fail "mtls without a certificate: $(cat "$dir/err")"
grep -q "handshake with" "$dir/out" || fail "server did not log the refused handshake: $(cat "$dir/out")"

# The CLI's TLS flags: usage errors.
set +e
"$cli_bin" call "tcp://$hostport" --cacert "$c/ca.pem" courier.examples.Echo/Say '{}' 2>"$dir/err"
[ $? = 2 ] || fail "--cacert on tcp:// is not a usage error"
grep -q "apply to tls://" "$dir/err" || fail "--cacert on tcp://: $(cat "$dir/err")"
"$cli_bin" call "tls://$hostport" --cert "$c/client.pem" courier.examples.Echo/Say '{}' 2>"$dir/err"
[ $? = 2 ] || fail "--cert without --key is not a usage error"
set -e
echo PASS
