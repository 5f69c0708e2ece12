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
cargo build --release --example placement_bench -p berth-daemon --features placement-bench 2>&1 | tail -1

source bench/etcd.sh
start_etcd --quota-backend-bytes 4294967296
./target/release/examples/placement_bench --etcd "$endpoints" --nodes "$nodes" --placements "$placements" --writers "${WRITERS:-32}"
