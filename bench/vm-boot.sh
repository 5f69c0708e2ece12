#!/usr/bin/env bash
# `berth run --vm --rm busybox /bin/true` end to end against the raw qemu-system-x86_64
# command line that boots the same kernel, initramfs and disks to the same point (the
# guest agent runs /bin/true and powers off). Also qemu's RSS for a 128 MiB guest and
# berth's own memory (supervisor PSS) per running VM.
# Usage: bench/vm-boot.sh [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
trap bench_cleanup EXIT
bench_setup

# One instance started once gives the exact command line berth uses, and its disks.
"$BERTH" run --vm --name raw-reference --memory 256m busybox /bin/true >/dev/null
dir=$(dirname "$(find "$work/state/instances" -name supervisor.json | head -1)")
python3 - "$dir/supervisor.json" "$work/raw-qemu.sh" <<'PY'
import json, shlex, sys
config = json.load(open(sys.argv[1]))
args = config["workload"]["args"]
with open(sys.argv[2], "w") as script:
    # The supervisor hands qemu the console log as fd 3 and the status file as fd 4.
    script.write("#!/bin/sh\nexec " + " ".join(shlex.quote(a) for a in args) + " </dev/null 3>/dev/null 4>/dev/null\n")
PY
chmod +x "$work/raw-qemu.sh"
accel=$("$BERTH" inspect raw-reference | python3 -c 'import json,sys; print(json.load(sys.stdin)["vm"]["accel"])')

hyperfine --shell=none --warmup 2 --runs "$runs" --export-json "$work/vm.json" \
  -n "berth run --vm --rm" "$BERTH run --vm --rm --memory 256m busybox /bin/true" \
  -n "raw qemu (same kernel, initramfs, disks)" "$work/raw-qemu.sh" >/dev/null

# Memory of a running 192 MiB guest: qemu's RSS, the part of it that is guest RAM the guest
# touched (the largest anonymous mapping is the RAM block), and what qemu adds on top
# (translation cache, device state, its own heap).
"$BERTH" run -d --vm --name mem --memory 192m busybox sleep 600 >/dev/null
sleep 3
qemu_pid=$("$BERTH" inspect mem | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
supervisor_pid=$("$BERTH" inspect mem | python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor_pid"])')
qemu_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$qemu_pid/status")
qemu_anon=$(awk '/^RssAnon:/{print $2}' "/proc/$qemu_pid/status")
guest_touched=$(awk '/^[0-9a-f]+-[0-9a-f]+ /{anon = (NF == 5)} /^Size:/{size = $2} /^Rss:/{if (anon && size > best) {best = size; rss = $2}} END{print rss + 0}' "/proc/$qemu_pid/smaps")
supervisor_pss=$(awk '/^Pss:/{print $2}' "/proc/$supervisor_pid/smaps_rollup")

python3 - "$work/vm.json" "$accel" "$qemu_rss" "$supervisor_pss" "$guest_touched" "$qemu_anon" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
accel, qemu_rss, supervisor_pss, touched, anon = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
berth, raw = results[0], results[1]
print(f"accelerator: {accel}")
print(f"{'command':<42} {'median s':>9} {'mean s':>8}")
for r in results:
    print(f"{r['command']:<42} {r['median']:>9.3f} {r['mean']:>8.3f}")
print(f"berth / raw qemu (median): {berth['median'] / raw['median']:.3f}  (+{(berth['median'] / raw['median'] - 1) * 100:.1f}%)")
print(f"qemu RSS, 192 MiB guest running: {qemu_rss / 1024:.1f} MiB: guest RAM touched {touched / 1024:.1f}, "
      f"qemu's own anonymous memory {(anon - touched) / 1024:.1f} (target 64; translation cache, heap, devices), "
      f"file pages {(qemu_rss - anon) / 1024:.1f} (qemu's binary, the guest kernel and initramfs: page cache "
      f"shared by every VM)")
print(f"berth supervisor PSS per running VM: {supervisor_pss / 1024:.2f} MiB")
PY
