#!/usr/bin/env bash
# Placements per second through berth's scheduler and a real 3-member etcd (Debian's etcd
# 3.4, on this machine) against NODES simulated nodes that register, heartbeat (a lease each,
# renewed every 3 s) and acknowledge each placement, running nothing
# (crates/berth-daemon/examples/placement_bench.rs). Prints the rate, etcd writes per
# placement and the ratios to Nomad's C1M/C2M and Kubernetes' published figures.
# Usage: bench/placement.sh [NODES] [PLACEMENTS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
nodes=${1:-5000}
placements=${2:-50000}
work=$(mktemp -d /tmp/bb-XXXXXX)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
cargo build --release --example placement_bench -p berth-daemon 2>&1 | tail -1

base=$((25000 + RANDOM % 2000))
initial=""
for m in 1 2 3; do initial+="m$m=http://127.0.0.1:$((base + 2 * m + 1)),"; done
for m in 1 2 3; do
  etcd --name "m$m" --data-dir "$work/etcd$m" \
    --listen-client-urls "http://127.0.0.1:$((base + 2 * m))" --advertise-client-urls "http://127.0.0.1:$((base + 2 * m))" \
    --listen-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" \
    --initial-cluster "${initial%,}" --initial-cluster-state new --quota-backend-bytes 4294967296 >"$work/etcd$m.log" 2>&1 &
  pids+=($!)
done
endpoints="127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4)),127.0.0.1:$((base + 6))"
for _ in $(seq 100); do
  ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
./target/release/examples/placement_bench --etcd "$endpoints" --nodes "$nodes" --placements "$placements" --writers "${WRITERS:-32}"
