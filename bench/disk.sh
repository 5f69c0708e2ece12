#!/usr/bin/env bash
# Disk write throughput on instance storage, for both kinds, against the host file system
# the instance storage lives on (the peer doing the same work: the same busybox dd writing
# the same bytes with conv=fsync, timed by busybox time).
#   host file system                  (a file in berth's state directory)
#   container instance store          (i3.large: ext4 image on a loop device, /mnt/instance-store0)
#   container writable layer --disk   (ext4 image on a loop device)
#   VM instance store                 (i3.large: qcow2 on NVMe, raw device in the guest)
# Each measurement is taken ROUNDS times, interleaved, and the median reported.
# Usage: bench/disk.sh [MiB] [ROUNDS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
rounds=${2:-3}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
trap bench_cleanup EXIT
bench_setup

write="dd if=/dev/zero bs=1M count=$mib conv=fsync"
seconds() { tail -n 1 | tr -d '\r'; }

mkdir -p "$work/state/host-bench"
accel=$("$BERTH" info --json | python3 -c 'import json,sys; print((json.load(sys.stdin).get("accelerators") or ["?"])[0])')
host=() container=() layer=() vm=()
for _ in $(seq "$rounds"); do
  host+=("$(busybox time -f %e busybox $write of="$work/state/host-bench/file" 2>&1 >/dev/null | seconds)")
  rm -f "$work/state/host-bench/file"
  container+=("$("$BERTH" run --rm --type i3.large --memory 1g busybox \
    time -f %e $write of=/mnt/instance-store0/file 2>&1 | seconds)")
  layer+=("$("$BERTH" run --rm --disk 4g busybox time -f %e $write of=/file 2>&1 | seconds)")
  vm+=("$("$BERTH" run --vm --rm --type i3.large --memory 1g busybox \
    time -f %e $write of=/dev/nvme0n1 2>&1 | grep -E '^[0-9.]+$' | seconds)")
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

python3 - "$mib" "$(median "${host[@]}")" "$(median "${container[@]}")" "$(median "${layer[@]}")" \
  "$(median "${vm[@]}")" "$accel" <<'PY'
import sys
mib = int(sys.argv[1])
host, container, layer, vm = (float(v) for v in sys.argv[2:6])
accel = sys.argv[6]
rate = lambda s: mib / s
print(f"{'write ' + str(mib) + ' MiB, dd conv=fsync':<44} {'MiB/s':>8} {'vs host fs':>11}")
for name, s in [
    ("host file system (peer)", host),
    ("berth container, instance store (i3.large)", container),
    ("berth container, writable layer --disk 4g", layer),
    (f"berth VM, instance store NVMe ({accel})", vm),
]:
    print(f"{name:<44} {rate(s):>8.0f} {rate(s) / rate(host):>11.2f}")
PY
