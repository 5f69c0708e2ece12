#!/usr/bin/env bash
# Time from `run` to running for COUNT containers spread by the scheduler over three real
# berth nodes on a real 3-member etcd (all on this machine), against `podman run -d` of the
# same count on one host in the same run. Prints totals, per-container medians, placements
# per node and ratios. Containers run `sleep 3600` without networking, each reserving 0.01
# CPU (the default reservation, 0.1, admits 80 per node on two cores at overcommit 4).
# Usage: bench/cluster-run.sh [COUNT]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-300}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
BERTH=${BERTH:-$PWD/target/release/berth}
[ -x "$BERTH" ] || ./scripts/build.sh

source bench/cluster-common.sh

export BERTH_HOST=$work/n1/berth.sock
python3 - "$BERTH" "$count" "${PODMAN[@]}" <<'PY'
import statistics, subprocess, sys, time, json
berth, count, podman = sys.argv[1], int(sys.argv[2]), sys.argv[3:]

def timed(args):
    start = time.monotonic()
    done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(args[:3])} ... failed: {done.stderr.strip()}")
    return time.monotonic() - start

def series(make):
    start = time.monotonic()
    each = [timed(make(i)) for i in range(count)]
    return time.monotonic() - start, statistics.median(each)

b_total, b_median = series(lambda i: [berth, "run", "-d", "--network", "none", "--reserve-cpus", "0.01", "--name", f"c{i}", "busybox", "sleep", "3600"])
listed = json.loads(subprocess.run([berth, "ps", "--json"], check=True, capture_output=True).stdout)
per_node = {}
for instance in listed:
    per_node[instance["node"]] = per_node.get(instance["node"], 0) + 1
p_total, p_median = series(lambda i: podman + ["run", "-d", "--network", "none", "--name", f"p{i}", "localhost/busybox:latest", "sleep", "3600"])
print(f"{count} containers, run to running, one client after another")
print(f"{'':<34} {'total s':>8} {'per s':>7} {'median ms':>10}")
print(f"{'berth, 3 nodes (scheduler, etcd)':<34} {b_total:>8.1f} {count / b_total:>7.1f} {b_median * 1000:>10.1f}")
print(f"{'podman run -d, one host':<34} {p_total:>8.1f} {count / p_total:>7.1f} {p_median * 1000:>10.1f}")
print(f"berth / podman (median): {b_median / p_median:.2f}")
print("placed per node:", ", ".join(f"{k} {v}" for k, v in sorted(per_node.items())))
PY
