#!/usr/bin/env bash
# Time from `berth apply` of a SERVICES-service Compose file to every service healthy (each
# runs busybox httpd and checks itself with wget every second), on one host (the embedded
# default) and on three real berth nodes (a real 3-member etcd, all on this machine), RUNS
# times each; against `podman run -d` of the same containers one after another (podman's own
# health checks need systemd timers, which this machine does not run, so the peer is timed to
# running). Prints medians and the ratios.
# Usage: bench/stack-apply.sh [SERVICES] [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
services=${1:-20}
runs=${2:-3}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
BERTH=${BERTH:-$PWD/target/release/berth}
[ -x "$BERTH" ] || ./scripts/build.sh
source bench/cluster-common.sh

compose=$work/compose.yaml
python3 - "$services" >"$compose" <<'PY'
import sys
print("name: bench")
print("services:")
for i in range(int(sys.argv[1])):
    print(f"  s{i}:")
    print("    image: busybox")
    print("    command: sh -c 'echo ok > /tmp/index.html; exec httpd -f -p 8080 -h /tmp'")
    print("    healthcheck: {test: wget -q -O /dev/null http://127.0.0.1:8080/index.html, interval: 1s, retries: 30}")
    print("    deploy: {resources: {reservations: {cpus: '0.01', memory: 8M}}}")
PY

time_apply() {
  local start end
  start=$(date +%s.%N)
  "$BERTH" apply -f "$compose" >/dev/null
  end=$(date +%s.%N)
  python3 -c "print(round($end - $start, 2))"
  "$BERTH" stack rm bench >/dev/null 2>&1
}

results=$work/results
: >"$results"
for run in $(seq "$runs"); do
  BERTH_HOST=$work/berth.sock
  export BERTH_HOST
  echo "{\"where\": \"one host\", \"seconds\": $(time_apply)}" >>"$results"
  BERTH_HOST=$work/n1/berth.sock
  echo "{\"where\": \"three nodes\", \"seconds\": $(time_apply)}" >>"$results"
  start=$(date +%s.%N)
  for i in $(seq 0 $((services - 1))); do
    "${PODMAN[@]}" run -d --name "p$i" localhost/busybox:latest httpd -f -p $((9000 + i)) >/dev/null
  done
  end=$(date +%s.%N)
  echo "{\"where\": \"podman\", \"seconds\": $(python3 -c "print(round($end - $start, 2))")}" >>"$results"
  "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1
done
python3 - "$results" "$services" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
median = {w: statistics.median(r["seconds"] for r in rows if r["where"] == w) for w in ("one host", "three nodes", "podman")}
print(f"apply of a {sys.argv[2]}-service stack")
print(f"{'':<44} {'median s':>9} {'÷ podman':>9}")
print(f"{'berth apply, one host, to all healthy':<44} {median['one host']:>9.1f} {median['one host'] / median['podman']:>9.2f}")
print(f"{'berth apply, three nodes, to all healthy':<44} {median['three nodes']:>9.1f} {median['three nodes'] / median['podman']:>9.2f}")
print(f"{'podman run -d one after another, to running':<44} {median['podman']:>9.1f} {1:>9.2f}")
PY
