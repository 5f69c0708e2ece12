#!/usr/bin/env bash
# P2V and V2P against the tools that do the same copy, in one run:
#   P2V  `berth image import --vm --allow-device /dev/loopN` (into the image store, digest
#        included) vs `qemu-img convert -f raw -O qcow2 /dev/loopN` of the same device
#   V2P  `berth vm export --format raw --to /dev/loopM` vs `dd conv=fsync` of the same raw
#        bytes to it (both flushed to the device before they return)
#   boot the imported Debian system (tests/fixtures/debian-disk.sh bios) to its console marker
# on a 2 GiB disk that is mostly empty (the Debian system, ~560 MiB used) and on one that is
# full (2 GiB of random data). Each copy ROUNDS times, medians. VMs run under TCG here.
# Usage: bench/p2v.sh [ROUNDS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
loops=()
cleanup() {
  for l in "${loops[@]}"; do losetup -d "$l" 2>/dev/null || true; done
  bench_cleanup
}
trap cleanup EXIT
bench_setup

debian=$(tests/fixtures/debian-disk.sh bios 2>/dev/null | tail -n 1)
dd if=/dev/urandom of="$work/full.raw" bs=4M count=512 status=none
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
now() { date +%s%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.3f", (b - a) / 1e9}'; }
minimum() { printf '%s\n' "$@" | sort -n | head -n 1; }
ratio() { python3 -c "import sys; print(f'{float(sys.argv[1])/float(sys.argv[2]):.2f}')" "$1" "$2"; }

printf '%-12s %-6s %10s %10s %10s %10s %7s\n' "disk" "copy" "berth s" "(min)" "peer s" "(min)" "ratio"
report() {
  local case=$1 copy=$2; shift 2
  local -a ours=() theirs=()
  while [ "$1" != -- ]; do ours+=("$1"); shift; done; shift
  theirs=("$@")
  local a b
  a=$(median "${ours[@]}"); b=$(median "${theirs[@]}")
  printf '%-12s %-6s %10.2f %10.2f %10.2f %10.2f %7s\n' "$case" "$copy" "$a" "$(minimum "${ours[@]}")" \
    "$b" "$(minimum "${theirs[@]}")" "$(ratio "$a" "$b")"
}
for case in empty full; do
  source_file=$debian
  [ "$case" = full ] && source_file=$work/full.raw
  src=$(losetup --find --show --read-only "$source_file"); loops+=("$src")
  truncate -s 3G "$work/target.img"
  dst=$(losetup --find --show "$work/target.img"); loops+=("$dst")
  p2v=() qimg=() v2p=() ddt=()
  for round in $(seq "$rounds"); do
    # Each copy starts with nothing dirty: neither pays for the other's writeback. The import
    # is a fresh one each round (the previous round's stored copy removed), as the peer's is.
    "$BERTH" image rm "p2v-$case-$((round - 1))" >/dev/null 2>&1 || true
    sync; t=$(now); "$BERTH" image import --vm --allow-device --tag "p2v-$case-$round" "$src" >/dev/null 2>&1; p2v+=("$(since "$t")")
    sync; t=$(now); qemu-img convert -f raw -O qcow2 "$src" "$work/peer.qcow2"; qimg+=("$(since "$t")")
    rm -f "$work/peer.qcow2"
  done
  "$BERTH" create --vm --name "v2p-$case" "p2v-$case-$rounds" >/dev/null 2>&1
  for round in $(seq "$rounds"); do
    sync; t=$(now); "$BERTH" vm export --format raw --force --to "$dst" "v2p-$case" >/dev/null; v2p+=("$(since "$t")")
    sync; t=$(now); dd if="$source_file" of="$dst" bs=4M conv=fsync status=none; ddt+=("$(since "$t")")
  done
  report "$case" P2V "${p2v[@]}" -- "${qimg[@]}"
  report "$case" V2P "${v2p[@]}" -- "${ddt[@]}"
  losetup -d "$src" "$dst"; loops=()
done

# Boot of the imported Debian system to its marker (the console line berth-marker writes).
t=$(now)
"$BERTH" run --vm -d --name boot --memory 1g p2v-empty-$rounds >/dev/null 2>&1
until "$BERTH" logs boot 2>/dev/null | grep -q BERTH-MARKER; do sleep 0.2; done
printf 'imported Debian to its console marker: %.1f s (%s)\n' "$(since "$t")" \
  "$("$BERTH" inspect boot | python3 -c 'import json,sys; print(json.load(sys.stdin)["vm"]["accel"])')"
