#!/usr/bin/env bash
# Builds the libFuzzer targets (clang 14, -DCOURIER_FUZZ=ON, ASan + UBSan, in build-fuzz/) and
# runs them. Installs clang-14 and libclang-rt-14-dev (the fuzzer runtime) when missing.
# Usage: scripts/fuzz.sh [--parallel] SECONDS
#          every fuzzer for SECONDS (one after the other; --parallel: all at once), each into a
#          scratch corpus seeded from tests/fuzz/corpus/<name>/, which is only read. FUZZ_OUT=dir
#          chooses the scratch directory (default: a new /tmp/courier-fuzz.XXXXXX).
#        scripts/fuzz.sh --replay
#          only builds the fuzz targets and runs their corpora through ctest (-R _corpus), as
#          scripts/test.sh does; skipped, with a notice, on a machine without clang 14 or apt-get.
# Exit status 1 if any fuzzer found a crash, leak or timeout: its report is printed with the
# input's path. Such an input, renamed for what it shows, joins tests/fuzz/corpus/<name>/.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  sed -n '4,12p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
replay=0 parallel=0 seconds=""
for arg in "$@"; do
  case "$arg" in
    --replay) replay=1 ;;
    --parallel) parallel=1 ;;
    *[!0-9]* | "") usage ;;
    *) seconds=$arg ;;
  esac
done
if [[ $replay == 1 && -n "$seconds" ]] || [[ $replay == 0 && -z "$seconds" ]]; then usage; fi

# clang 14 and its fuzzer runtime, installed the way scripts/setup.sh installs its packages.
have_toolchain() {
  command -v clang++-14 >/dev/null || return 1
  [[ -f "$(clang++-14 -print-file-name="libclang_rt.fuzzer-$(uname -m).a")" ]]
}
if ! have_toolchain; then
  if ! command -v apt-get >/dev/null; then
    echo "fuzz: clang++-14 with libFuzzer not found, and no apt-get to install it" >&2
    if ((replay)); then
      echo "fuzz: SKIPPED the fuzz build check" >&2
      exit 0
    fi
    exit 1
  fi
  pkgs=(clang-14 libclang-rt-14-dev)
  echo "fuzz: installing ${pkgs[*]}"
  sudo=""
  if [[ $(id -u) -ne 0 ]]; then sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}"
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++-14 -DCOURIER_FUZZ=ON >/dev/null
cmake --build build-fuzz -j"$jobs" --target courier_fuzz_targets

# Report UBSan findings with their stack; libFuzzer sets up ASan and LeakSanitizer itself.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

if ((replay)); then
  (cd build-fuzz && ctest --output-on-failure -j"$jobs" --timeout 300 -R _corpus)
  exit 0
fi

out=${FUZZ_OUT:-$(mktemp -d /tmp/courier-fuzz.XXXXXX)}
names=()
for bin in build-fuzz/tests/fuzz/*_fuzz; do
  name=$(basename "$bin" _fuzz)
  [[ -d tests/fuzz/corpus/$name ]] && names+=("$name")
done

# fuzz NAME: runs build-fuzz/tests/fuzz/NAME_fuzz; its log, corpus and crashes go to $out/NAME/.
fuzz() {
  local name=$1 dir=$out/$1
  mkdir -p "$dir/corpus" "$dir/crashes"
  local args=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1
              -artifact_prefix="$dir/crashes/")
  if [[ -f tests/fuzz/$name.dict ]]; then args+=(-dict="tests/fuzz/$name.dict"); fi
  # The first directory receives what libFuzzer finds; ours only seeds it.
  "build-fuzz/tests/fuzz/${name}_fuzz" "${args[@]}" "$dir/corpus" "tests/fuzz/corpus/$name" \
    >"$dir/log" 2>&1
}

echo "fuzz: ${names[*]} for ${seconds} s each, into $out"
declare -A status
if ((parallel)); then
  declare -A pids
  for name in "${names[@]}"; do
    fuzz "$name" &
    pids[$name]=$!
  done
  for name in "${names[@]}"; do
    status[$name]=0
    wait "${pids[$name]}" || status[$name]=$?
  done
else
  for name in "${names[@]}"; do
    status[$name]=0
    fuzz "$name" || status[$name]=$?
  done
fi

failed=0
printf '%-15s %9s %8s %6s %6s  %s\n' fuzzer runs execs/s cov new result
for name in "${names[@]}"; do
  log=$out/$name/log
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)
  corpus=$(find "$out/$name/corpus" -type f | wc -l)
  result=ok
  if ((status[$name] != 0)); then
    result="FAILED (exit ${status[$name]})"
    failed=1
  fi
  printf '%-15s %9s %8s %6s %6s  %s\n' "$name" "${runs:-?}" "${speed:-?}" "${cov:-?}" \
    "$corpus" "$result"
done
for name in "${names[@]}"; do
  ((status[$name] != 0)) || continue
  echo
  echo "=== $name: $out/$name/log"
  grep -v '^#[0-9]' "$out/$name/log" | tail -60
  for input in "$out/$name/crashes"/*; do
    [[ -e "$input" ]] && echo "fuzz: $name: failing input $input"
  done
done
exit "$failed"
