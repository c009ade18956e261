#!/usr/bin/env bash
# expect_refusal.sh PROTOC PLUGIN PROTO_DIR FILE SUBSTRING... [-- FILE SUBSTRING...]...
# For each FILE (relative to PROTO_DIR): protoc with protoc-gen-courier must fail, with an error
# line naming FILE and every SUBSTRING (the service and the method), and write no courier code.
set -euo pipefail
if [ $# -lt 4 ]; then
  echo "usage: $0 PROTOC PLUGIN PROTO_DIR FILE SUBSTRING... [-- FILE SUBSTRING...]..." >&2
  exit 2
fi
protoc=$1
plugin=$2
dir=$3
shift 3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failures=0

check() {  # check FILE SUBSTRING...
  local file=$1
  shift
  local out="$tmp/${file%.proto}"
  local log="$out.log"
  local before=$failures
  mkdir -p "$out"
  if "$protoc" --plugin=protoc-gen-courier="$plugin" --courier_out="$out" -I "$dir" \
    "$dir/$file" >"$log" 2>&1; then
    echo "FAIL: $file: protoc succeeded; a streaming method must be refused"
    failures=$((failures + 1))
    return
  fi
  # One line names them all, so the message reads on its own.
  local lines
  lines=$(grep -F -- "$file" "$log" || true)
  for want in "$@"; do
    lines=$(grep -F -- "$want" <<<"$lines" || true)
  done
  if [ -z "$lines" ]; then
    echo "FAIL: $file: no error line names all of: $file $*; protoc said:"
    sed 's/^/  /' "$log"
    failures=$((failures + 1))
  fi
  if [ -n "$(find "$out" -type f)" ]; then
    echo "FAIL: $file: files written despite the refusal: $(find "$out" -type f)"
    failures=$((failures + 1))
  fi
  if [ "$failures" -eq "$before" ]; then echo "refused $file: $(head -n 1 "$log")"; fi
}

args=()
for arg in "$@" --; do
  if [ "$arg" = "--" ]; then
    if [ ${#args[@]} -gt 0 ]; then check "${args[@]}"; fi
    args=()
  else
    args+=("$arg")
  fi
done
if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all streaming methods refused"
