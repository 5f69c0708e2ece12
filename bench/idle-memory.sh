#!/usr/bin/env bash
# Host memory berth uses per idle detached container (PSS of its supervisor processes)
# against podman's conmon, with N containers of each running `sleep`; also the idle
# daemon's RSS. Usage: bench/idle-memory.sh [N]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-10}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
trap bench_cleanup EXIT
bench_setup

pss_sum() { # total PSS (KiB) of processes whose command line matches $1
  local total=0 pid
  for pid in $(pgrep -f "$1"); do
    total=$((total + $(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

for _ in $(seq "$count"); do
  # Idle containers: a small CPU share each, so admission (2 cores x 4 overcommit) admits all.
  "$BERTH" run -d --network none --cpus 0.1 busybox sleep 3600 >/dev/null
  "${PODMAN[@]}" run -d --network none localhost/busybox:latest sleep 3600 >/dev/null
done
sleep 2

berth_kib=$(pss_sum "berth supervise $work")
conmon_kib=$(pss_sum "conmon .*$work")
daemon_pid=$(cat "$work/daemon.pid")
daemon_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$daemon_pid/status")
daemon_pss=$(awk '/^Pss:/{print $2}' "/proc/$daemon_pid/smaps_rollup")

python3 - "$count" "$berth_kib" "$conmon_kib" "$daemon_rss" "$daemon_pss" <<'PY'
import sys
n, berth, conmon, rss, pss = (int(x) for x in sys.argv[1:])
print(f"idle containers: {n} each")
print(f"berth supervisor PSS per container: {berth / n / 1024:.2f} MiB")
print(f"podman conmon PSS per container:    {conmon / n / 1024:.2f} MiB")
print(f"ratio berth / conmon:               {berth / max(conmon, 1):.2f}")
print(f"berth daemon with {n} containers: RSS {rss / 1024:.1f} MiB, PSS {pss / 1024:.1f} MiB")
PY
