#!/usr/bin/env bash
# The Docker Engine API: Debian's docker CLI against berth's gateway (`berth daemon
# --docker-socket`) and against podman's Docker-compatible service (`podman system service`)
# in one hyperfine run: `docker run --rm busybox true` (without a network and with each one's
# default), then `docker ps` with 200 containers running on each. Prints medians and ratios.
# Usage: bench/docker-api.sh [RUNS] [CONTAINERS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-30}
count=${2:-200}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
export BERTH_DAEMON_ARGS="--docker-socket $work/docker.sock"
small_reservations
cleanup() {
  [ -f "$work/podman-service.pid" ] && kill "$(cat "$work/podman-service.pid")" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT
bench_setup

"${PODMAN[@]}" system service --time 0 "unix://$work/podman.sock" >"$work/podman-service.log" 2>&1 &
echo $! >"$work/podman-service.pid"
for _ in $(seq 100); do [ -S "$work/podman.sock" ] && [ -S "$work/docker.sock" ] && break; sleep 0.1; done
export DOCKER_CONFIG="$work/docker-config"
mkdir -p "$DOCKER_CONFIG"
DOCKER=/usr/bin/docker
to_berth="$DOCKER -H unix://$work/docker.sock"
to_podman="$DOCKER -H unix://$work/podman.sock"

bridged=()
if $to_podman run --rm localhost/busybox:latest true >/dev/null 2>&1; then
  bridged=(-n "podman service, bridge" "$to_podman run --rm localhost/busybox:latest true")
fi
hyperfine --shell=none --warmup 3 --runs "$runs" --export-json "$work/run.json" \
  -n "berth gateway" "$to_berth run --rm --network none busybox true" \
  -n "podman service" "$to_podman run --rm --network none localhost/busybox:latest true" \
  -n "berth gateway, bridge" "$to_berth run --rm busybox true" \
  "${bridged[@]}" \
  >/dev/null

echo "starting $count idle containers on each..." >&2
for i in $(seq "$count"); do
  $to_berth run -d --network none --name "idle$i" busybox sleep 100000 >/dev/null
  $to_podman run -d --network none --name "idle$i" localhost/busybox:latest sleep 100000 >/dev/null
done
hyperfine --shell=none --warmup 3 --runs "$runs" --export-json "$work/ps.json" \
  -n "berth gateway: docker ps ($count)" "$to_berth ps" \
  -n "podman service: docker ps ($count)" "$to_podman ps" \
  >/dev/null

python3 - "$work/run.json" "$work/ps.json" <<'PY'
import json, sys
print(f"{'command':<34} {'median ms':>10} {'min ms':>8}   berth / this")
for path in sys.argv[1:]:
    results = json.load(open(path))["results"]
    for r in results:
        bridged = r["command"].endswith("bridge")
        berth = next(b for b in results if b["command"].startswith("berth") and b["command"].endswith("bridge") == bridged)
        print(f"{r['command']:<34} {r['median']*1000:>10.1f} {r['min']*1000:>8.1f}   {berth['median']/r['median']:>6.2f}")
PY
