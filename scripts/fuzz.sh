#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a bounded time with cargo-fuzz (libFuzzer,
# AddressSanitizer) on its corpus in fuzz/corpus/<target>, and prints the executions run per
# target. A crash fails the run and leaves the input in fuzz/artifacts/<target>/.
#   BERTH_FUZZ_SECONDS   seconds per target (default 20)
#   BERTH_FUZZ_PROFILE   release (default: optimised, about 5x the executions) or dev (builds
#                        in a third of the time: what the test command uses)
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/../fuzz"

seconds=${BERTH_FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
# cargo-fuzz needs a nightly toolchain (sanitizer flags); the machine's rustup has one.
toolchain=nightly
case ${BERTH_FUZZ_PROFILE:-release} in
  release) profile=-O ;;
  dev) profile=--dev ;;
  *) echo "BERTH_FUZZ_PROFILE must be release or dev" >&2; exit 2 ;;
esac
cargo +"$toolchain" fuzz build $profile
mkdir -p corpus
for target in $(cargo +"$toolchain" fuzz list); do
  mkdir -p "corpus/$target"
  log=$(mktemp)
  if ! cargo +"$toolchain" fuzz run $profile "$target" "corpus/$target" -- \
      -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: $target crashed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  runs=$(grep -o 'Done [0-9]* runs' "$log" | awk '{print $2}' | tail -1)
  echo "fuzz: $target: ${runs:-?} executions in ${seconds}s, no crash"
  rm -f "$log"
done
