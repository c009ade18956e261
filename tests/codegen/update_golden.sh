#!/usr/bin/env bash
# update_golden.sh PLUGIN
# Rewrites tests/codegen/golden/{echo,streams}.courier.{h,cc}.golden from
# proto/examples/echo.proto and tests/rpc/streams.proto with
# protoc-gen-courier at PLUGIN (e.g. build/protoc-gen-courier) and protoc from PATH, the same
# invocation check_golden.sh (ctest codegen_golden) diffs against. Review the diff, then commit.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 PLUGIN" >&2
  exit 2
fi
plugin=$(realpath "$1")
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protoc --plugin=protoc-gen-courier="$plugin" --courier_out="$tmp" -I proto proto/examples/echo.proto
protoc --plugin=protoc-gen-courier="$plugin" --courier_out="$tmp" -I tests/rpc tests/rpc/streams.proto
mkdir -p tests/codegen/golden
for ext in h cc; do
  cp "$tmp/examples/echo.courier.$ext" "tests/codegen/golden/echo.courier.$ext.golden"
  cp "$tmp/streams.courier.$ext" "tests/codegen/golden/streams.courier.$ext.golden"
done
git diff --stat -- tests/codegen/golden 2>/dev/null || true
echo "updated tests/codegen/golden/{echo,streams}.courier.{h,cc}.golden"
