#!/usr/bin/env bash
# check_golden.sh PROTOC PLUGIN SOURCE_DIR
# Generates proto/examples/echo.proto (unary) and tests/rpc/streams.proto (the three streaming
# kinds beside a unary method) with the plugin into a temp dir and diffs the output against
# tests/codegen/golden/{echo,streams}.courier.{h,cc}.golden; any difference fails. After an intended change
# to the generated code, run tests/codegen/update_golden.sh PLUGIN and review the diff.
set -euo pipefail
if [ $# -ne 3 ]; then
  echo "usage: $0 PROTOC PLUGIN SOURCE_DIR" >&2
  exit 2
fi
protoc=$1
plugin=$2
src=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$protoc" --plugin=protoc-gen-courier="$plugin" --courier_out="$tmp" -I "$src/proto" \
  "$src/proto/examples/echo.proto"
"$protoc" --plugin=protoc-gen-courier="$plugin" --courier_out="$tmp" -I "$src/tests/rpc" \
  "$src/tests/rpc/streams.proto"
status=0
for ext in h cc; do
  diff -u "$src/tests/codegen/golden/echo.courier.$ext.golden" "$tmp/examples/echo.courier.$ext" ||
    status=1
  diff -u "$src/tests/codegen/golden/streams.courier.$ext.golden" "$tmp/streams.courier.$ext" ||
    status=1
done
if [ "$status" -ne 0 ]; then
  echo "generated code differs from the golden files; if intended, run:"
  echo "  tests/codegen/update_golden.sh $plugin"
  exit 1
fi
echo "golden files match"
