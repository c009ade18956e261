#!/usr/bin/env bash
# Builds and runs the whole test suite twice: a normal build, then one under AddressSanitizer
# and UndefinedBehaviorSanitizer, then the fuzz targets are built with clang 14 and their corpora
# replayed (scripts/fuzz.sh --replay). Long fuzzing, soak and benchmark runs are separate commands.
# scripts/test.sh --tsan instead builds and runs the whole suite under ThreadSanitizer only.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
jobs=$(nproc 2>/dev/null || echo 2)
run() {  # run BUILD_DIR CMAKE_ARGS...
  local dir=$1
  shift
  cmake -S . -B "$dir" "$@" >/dev/null
  cmake --build "$dir" -j"$jobs"
  (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 300)
}
if [[ "${1:-}" == "--tsan" ]]; then
  echo "=== ThreadSanitizer build"
  # GCC 12's TSan runtime cannot map its shadow memory under the high address-space
  # randomisation of recent kernels: run the tests with randomisation off (setarch -R).
  cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOURIER_TSAN=ON \
    -DCOURIER_BUILD_BENCH=OFF >/dev/null
  cmake --build build-tsan -j"$jobs"
  (cd build-tsan && TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    setarch "$(uname -m)" -R ctest --output-on-failure -j"$jobs" --timeout 600)
  exit 0
fi
echo "=== normal build"
run build -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "=== AddressSanitizer + UndefinedBehaviorSanitizer build"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run build-asan -DCMAKE_BUILD_TYPE=Debug -DCOURIER_SANITIZE=ON -DCOURIER_BUILD_BENCH=OFF
echo "=== fuzz targets (clang 14, libFuzzer + ASan + UBSan): build, replay the corpora"
bash scripts/fuzz.sh --replay
