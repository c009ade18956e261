# Sourced by the shell tests: a scratch directory $dir, removed at exit with the server process
# $server (set it to the pid of whatever the test starts in the background), and fail MESSAGE
# (prints FAIL: MESSAGE on stderr and exits 1).
dir=$(mktemp -d)
server=""
cleanup() {
  [ -n "$server" ] && kill -9 "$server" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
