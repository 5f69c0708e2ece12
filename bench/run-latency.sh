#!/usr/bin/env bash
# `berth run --rm busybox /bin/true`, end to end, against `runc run` and `crun run` of the
# same bundle and `podman run --rm` of the same image, in one hyperfine run. Prints medians
# and ratios. Debian's crun needs the hugetlb controller mounted (as v1 on a hybrid host):
# mounted here for the run if missing, and unmounted after.
# Without networking (berth and podman --network none; runc's default spec: a namespace with
# loopback only), and with each one's default bridge networking (a veth on a bridge, an
# address, NAT rules) where podman's works on this host.
# Usage: bench/run-latency.sh [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
hugetlb_mounted=""
cleanup() {
  [ -n "$hugetlb_mounted" ] && umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb
  bench_cleanup
}
trap cleanup EXIT
bench_setup
if [ ! -e /sys/fs/cgroup/hugetlb ] && [ -d /sys/fs/cgroup/unified ]; then
  mkdir /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb && hugetlb_mounted=1
fi
crun_peer=()
if crun --root "$work/crun" run -b "$work/bundle" bench-probe >/dev/null 2>&1; then
  crun_peer=(-n "crun run" "crun --root $work/crun run -b $work/bundle bench-true")
fi

bridged=()
if "${PODMAN[@]}" run --rm localhost/busybox:latest /bin/true >/dev/null 2>&1; then
  bridged=(-n "podman run --rm, bridge" "${PODMAN[*]} run --rm localhost/busybox:latest /bin/true")
fi
hyperfine --shell=none --warmup 5 --runs "$runs" --export-json "$work/latency.json" \
  -n "berth run --rm" "$BERTH run --rm --network none busybox /bin/true" \
  -n "runc run" "runc --root $work/runc run -b $work/bundle bench-true" \
  "${crun_peer[@]}" \
  -n "podman run --rm" "${PODMAN[*]} run --rm --network none localhost/busybox:latest /bin/true" \
  -n "berth run --rm, bridge" "$BERTH run --rm busybox /bin/true" \
  "${bridged[@]}" \
  >/dev/null

cp "$work/latency.json" /tmp/latency-last.json 2>/dev/null || true
python3 - "$work/latency.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
# Ratios within a group: berth's own line of the same kind of networking against each peer.
print(f"{'command':<26} {'median ms':>10} {'mean ms':>9} {'min ms':>8}   berth / this")
for r in results:
    bridged = r["command"].endswith("bridge")
    berth = next(b for b in results if b["command"].startswith("berth") and b["command"].endswith("bridge") == bridged)
    print(f"{r['command']:<26} {r['median']*1000:>10.1f} {r['mean']*1000:>9.1f} {r['min']*1000:>8.1f}   {berth['median']/r['median']:>6.2f}")
PY
