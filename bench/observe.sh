#!/usr/bin/env bash
# Seeing many instances: with COUNT idle containers running, `berth stats --no-stream`
# (every instance's cgroup figures, CPU over a 100 ms window), `berth ps --tree` (every
# instance with its processes) and `berth ps`, in one hyperfine run; podman's `stats
# --no-stream` and `ps` over the same number as the peer. Prints medians and ratios.
# Usage: bench/observe.sh [RUNS] [COUNT]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
count=${2:-200}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
export BERTH_DAEMON_ARGS=""
small_reservations
trap bench_cleanup EXIT
bench_setup

echo "starting $count idle containers on each..." >&2
for i in $(seq "$count"); do
  "$BERTH" run -d --network none --name "idle$i" busybox sleep 100000 >/dev/null
  "${PODMAN[@]}" run -d --network none --name "idle$i" localhost/busybox:latest sleep 100000 >/dev/null
done
podman_cmd="${PODMAN[*]}"
hyperfine --shell=none --warmup 2 --runs "$runs" --export-json "$work/observe.json" \
  -n "berth stats --no-stream" "$BERTH stats --no-stream" \
  -n "podman stats --no-stream" "$podman_cmd stats --no-stream" \
  -n "berth ps --tree" "$BERTH ps --tree" \
  -n "berth ps" "$BERTH ps" \
  -n "podman ps" "$podman_cmd ps" \
  >/dev/null

python3 - "$work/observe.json" "$count" <<'PY'
import json, sys
results = {r["command"]: r for r in json.load(open(sys.argv[1]))["results"]}
count = sys.argv[2]
print(f"{'with ' + count + ' running':<28} {'median ms':>10} {'min ms':>8}   ratio")
pairs = {"berth stats --no-stream": "podman stats --no-stream", "berth ps": "podman ps"}
for name, r in results.items():
    median = sorted(r["times"])[len(r["times"]) // 2] * 1000
    ratio = ""
    if name in pairs and pairs[name] in results:
        peer = sorted(results[pairs[name]]["times"])[len(results[pairs[name]]["times"]) // 2] * 1000
        ratio = f"berth / podman {median / peer:.2f}"
    print(f"{name:<28} {median:>10.1f} {r['min'] * 1000:>8.1f}   {ratio}")
PY
