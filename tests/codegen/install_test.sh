#!/usr/bin/env bash
# install_test.sh BUILD_DIR PROJECT_DIR [CMAKE_ARG...]
# Installs the courier build in BUILD_DIR into a temp prefix, then configures, builds and runs the
# outside project in PROJECT_DIR (tests/codegen/install) against that prefix alone: it must print
# OK, and nothing it builds may refer to the courier build or source tree. $CMAKE picks cmake.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 BUILD_DIR PROJECT_DIR [CMAKE_ARG...]" >&2
  exit 2
fi
build=$(realpath "$1")
project=$(realpath "$2")
shift 2
cmake=${CMAKE:-cmake}
courier_src=$(realpath "$project/../../..")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
step() {  # step NAME COMMAND...: runs COMMAND, showing its output only if it fails
  local name=$1
  shift
  echo "--- $name"
  if ! "$@" >"$tmp/$name.log" 2>&1; then
    cat "$tmp/$name.log"
    fail "$name"
  fi
}

step install "$cmake" --install "$build" --prefix "$prefix"
for f in bin/protoc-gen-courier bin/courier include/courier/rpc/channel.h include/courier/rpc/server.h \
  include/courier/rpc/service.h include/courier/rpc/stub_support.h \
  lib/cmake/courier/courierConfig.cmake; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done

# A copy, so that nothing can find courier relative to the project's place in the tree.
cp -r "$project" "$tmp/src"
step configure "$cmake" -S "$tmp/src" -B "$tmp/build" -DCMAKE_PREFIX_PATH="$prefix" "$@"
step build "$cmake" --build "$tmp/build" -j2

leaks=$(grep -rlF -e "$build" -e "$courier_src/" "$tmp/build" --include='*.json' \
  --include='*.make' --include='*.txt' --include='Makefile' --include='*.ninja' || true)
[ -z "$leaks" ] || fail "the outside build refers to the courier tree ($build, $courier_src): $leaks"

out=$("$tmp/build/hello") || fail "hello exited $?: $out"
[ "$out" = "OK" ] || fail "hello printed '$out', not OK"
echo "installed package: OK"
