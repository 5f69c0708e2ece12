#!/usr/bin/env bash
# N idle containers on this host (1,000 by default): `berth run -d --network none busybox
# sleep` one after another, each start timed; then, with all of them running: the start time
# of the last ones against the first ones, the daemon's RSS, `berth ps`, `berth ps --tree`
# and `berth stats --no-stream` (hyperfine; `ps --tree` beside procps' `ps auxf` of the same
# host), and the supervisor's PSS per container (podman's conmon: bench/idle-memory.sh
# measures it the same way; 0.45 MiB here).
# The peer's drift in the same run: `crun run` of /bin/true (the fastest runtime here, the
# same rootfs in a bundle) timed on the empty host and again with the N containers running,
# since part of a start's cost at scale is the kernel's (see the README) and any runtime pays
# it. (Not berth's own short-lived runs as well: their removals would leave the file system
# slower for the first starts measured next, ext4 skipping recently freed inodes.) Debian's
# crun needs the hugetlb controller mounted (as v1 on a hybrid host): mounted here for the
# run if missing, and unmounted after.
# Usage: bench/scale.sh [N]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
count=${1:-1000}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
trap bench_cleanup EXIT
small_reservations
bench_setup
daemon_pid=$(cat "$work/daemon.pid")
mount_hugetlb_for_crun

# crun's start of /bin/true timed (hyperfine, 20 runs) into $work/$1, if crun runs here.
time_crun_start() {
  if crun --root "$work/crun" run -b "$work/bundle" scale-probe >/dev/null 2>&1; then
    hyperfine --shell=none --warmup 3 --runs 20 --export-json "$work/$1" \
      -n "crun run" "crun --root $work/crun run -b $work/bundle scale-true" >/dev/null
  else
    echo '{"results": []}' >"$work/$1"
  fi
}
time_crun_start empty.json

: >"$work/starts.txt"
for i in $(seq "$count"); do
  began=$(date +%s%N)
  "$BERTH" run -d --network none busybox sleep 3600 >/dev/null
  echo $(( ($(date +%s%N) - began) / 1000 )) >>"$work/starts.txt"
  if [ $((i % 100)) = 0 ]; then echo "$i running" >&2; fi
done
sleep 2
time_crun_start loaded.json

hyperfine --shell=none --warmup 2 --runs 10 --export-json "$work/views.json" \
  -n "berth ps" "$BERTH ps" \
  -n "berth ps --tree" "$BERTH ps --tree" \
  -n "berth stats --no-stream" "$BERTH stats --no-stream" \
  -n "peer, ps auxf" "ps auxf" >/dev/null

pss_total=0
for pid in $(pgrep -f "berth supervise $work"); do
  pss_total=$((pss_total + $(awk '/^Pss:/{print $2}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)))
done
daemon_rss=$(awk '/^VmRSS:/{print $2}' "/proc/$daemon_pid/status")

python3 - "$count" "$work/starts.txt" "$work/views.json" "$pss_total" "$daemon_rss" "$work/empty.json" "$work/loaded.json" <<'PY'
import json, statistics, sys
n = int(sys.argv[1])
starts = [int(line) / 1000 for line in open(sys.argv[2])]
views = json.load(open(sys.argv[3]))["results"]
pss, rss = int(sys.argv[4]), int(sys.argv[5])
empty = {r["command"]: r["median"] * 1000 for r in json.load(open(sys.argv[6]))["results"]}
loaded = {r["command"]: r["median"] * 1000 for r in json.load(open(sys.argv[7]))["results"]}
# The first few starts warm the daemon up (the seccomp filter is compiled on first use).
k = max(1, min(50, n // 10))
warm = min(5, n - k)
first, last = statistics.median(starts[warm:warm + k]), statistics.median(starts[-k:])
print(f"{n} idle containers (busybox sleep, no network), started one after another")
print(f"start, median of starts {warm + 1}-{warm + k}:  {first:7.1f} ms")
print(f"start, median of the last {k}:   {last:7.1f} ms   (last / first {last / first:.2f}, target <= 1.2)")
for view in views:
    print(f"{view['command'] + ':':<28} {view['median'] * 1000:7.1f} ms median, {view['min'] * 1000:.1f} min")
# `ps --tree` against procps' `ps auxf` over the same host processes (berth's also lists the
# instances' records): the one peer that shows the same tree.
medians = {view["command"]: view["median"] * 1000 for view in views}
if "berth ps --tree" in medians and "peer, ps auxf" in medians:
    print(f"berth ps --tree / ps auxf:    {medians['berth ps --tree'] / medians['peer, ps auxf']:7.2f}")
for command, before in empty.items():
    after = loaded.get(command)
    if after is not None:
        print(f"peer, {command} /bin/true:   {before:7.1f} ms on the empty host, {after:.1f} ms with {n} running"
              f"   ({after / before:.2f}x; berth's last / first {last / first:.2f}x)")
print(f"daemon RSS:                  {rss / 1024:7.1f} MiB   (target <= 64)")
print(f"supervisor PSS per container: {pss / n / 1024:6.2f} MiB   (target <= 0.3; podman's conmon 0.45)")
PY
