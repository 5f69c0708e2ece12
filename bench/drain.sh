#!/usr/bin/env bash
# Time to drain a node: COUNT containers (a writable layer each) and VMS VMs (local disks,
# mirrored live) on node n1 of three real berth nodes on a real 3-member etcd (all on this
# machine); `berth node drain n1` until n1 is empty and cordoned, with --parallel 1 and 4,
# RUNS times each. Prints each drain, medians and the time per instance. No peer drains the
# same way on this machine (kubectl drain and `nomad node drain` need their clusters); their
# published defaults are in the README.
# Usage: bench/drain.sh [COUNT] [VMS] [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-20}
vms=${2:-2}
runs=${3:-3}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
BERTH=${BERTH:-$PWD/target/release/berth}
[ -x "$BERTH" ] || ./scripts/build.sh
source bench/cluster-common.sh
export BERTH_HOST=$work/n1/berth.sock

results=$work/results
: >"$results"
for parallel in 1 4; do
  for run in $(seq "$runs"); do
    for i in $(seq "$count"); do
      "$BERTH" run -d --name "c$i" --network none --reserve-cpus 0.01 --node n1 busybox \
        sh -c 'echo layer > /written; trap "exit 0" TERM; while :; do sleep 1; done' >/dev/null
    done
    for i in $(seq "$vms"); do
      "$BERTH" run -d --name "vm$i" --vm --memory 192m --network none --node n1 busybox sleep 100000 >/dev/null
    done
    sleep 4 # the VMs boot (TCG)
    start=$(date +%s.%N)
    "$BERTH" node drain --parallel "$parallel" n1 >/dev/null
    end=$(date +%s.%N)
    left=$("$BERTH" ps --json | python3 -c 'import json,sys; print(sum(1 for i in json.load(sys.stdin) if i["node"] == "n1"))')
    [ "$left" = 0 ] || { echo "n1 still runs $left instances after the drain" >&2; exit 1; }
    took=$(python3 -c "print(round($end - $start, 2))")
    echo "{\"parallel\": $parallel, \"run\": $run, \"seconds\": $took}" >>"$results"
    echo "drain --parallel $parallel, run $run: $took s" >&2
    "$BERTH" node uncordon n1 >/dev/null
    ids=$("$BERTH" ps -aq | tr '\n' ' ')
    [ -n "$ids" ] && "$BERTH" rm -f $ids >/dev/null
  done
done
python3 - "$results" "$count" "$vms" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
count, vms = int(sys.argv[2]), int(sys.argv[3])
print(f"drain of {count} containers and {vms} VMs off one of three nodes (TCG)")
print(f"{'--parallel':<12} {'median s':>9} {'min s':>7} {'per instance s':>15}")
for parallel in sorted({r['parallel'] for r in rows}):
    times = [r['seconds'] for r in rows if r['parallel'] == parallel]
    median = statistics.median(times)
    print(f"{parallel:<12} {median:>9.1f} {min(times):>7.1f} {median / (count + vms):>15.2f}")
PY
