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
[ -x "$BERTH" ] || cargo build --release

pids=()
cluster_cleanup() {
  for n in 1 2 3; do
    sock="$work/n$n/berth.sock"
    [ -S "$sock" ] || continue
    ids=$(BERTH_HOST=$sock "$BERTH" ps -aq 2>/dev/null | tr '\n' ' ')
    [ -n "$ids" ] && BERTH_HOST=$sock "$BERTH" rm -f $ids >/dev/null 2>&1 || true
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for n in 1 2 3; do ip link del "bb-bench$n" 2>/dev/null || true; done
  bench_cleanup
}
trap cluster_cleanup EXIT
bench_setup >/dev/null

# Three etcd members on loopback ports.
base=$((23000 + RANDOM % 2000))
initial=""
for m in 1 2 3; do initial+="m$m=http://127.0.0.1:$((base + 2 * m + 1)),"; done
for m in 1 2 3; do
  etcd --name "m$m" --data-dir "$work/etcd$m" \
    --listen-client-urls "http://127.0.0.1:$((base + 2 * m))" --advertise-client-urls "http://127.0.0.1:$((base + 2 * m))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" \
    --initial-cluster "${initial%,}" --initial-cluster-state new >"$work/etcd$m.log" 2>&1 &
  pids+=($!)
done
url="etcd://127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4)),127.0.0.1:$((base + 6))"

for n in 1 2 3; do
  mkdir -p "$work/n$n"
  printf 'default_subnet = "10.%d.0.0/24"\ndefault_bridge = "bb-bench%d"\n' $((250 + n)) "$n" >"$work/n$n/config.toml"
  "$BERTH" daemon --state-dir "$work/n$n/state" --socket "$work/n$n/berth.sock" --config "$work/n$n/config.toml" \
    --cluster "$url" --node-name "n$n" --advertise 127.0.0.1 --peer-port $((base + 100 + n)) \
    >"$work/n$n/daemon.log" 2>&1 &
  pids+=($!)
done
for n in 1 2 3; do
  for _ in $(seq 100); do BERTH_HOST=$work/n$n/berth.sock "$BERTH" info >/dev/null 2>&1 && break; sleep 0.2; done
  BERTH_HOST=$work/n$n/berth.sock "$BERTH" image import --tag busybox "$work/busybox.tar" >/dev/null 2>&1
done
sleep 4 # each node publishes its image within one heartbeat (3 s)

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
