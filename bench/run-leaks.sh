#!/usr/bin/env bash
# `berth run --rm busybox /bin/true` on the default bridge network, RUNS times in a row (1,000
# by default), and what is left on the host afterwards compared with before: network devices,
# network namespaces, mounts, cgroups, instance and runtime directories, iptables rules, the
# daemon's open files and memory. A container's veth pair is deleted by the kernel with its
# namespace shortly after `rm` returns (berth does not wait for it), and the instance's
# directory, moved aside into `instances/.discarded` before `rm` returns, is deleted right after
# it; so the "after" column is read once both have caught up (at most 10 s).
# Usage: bench/run-leaks.sh [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-1000}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
trap bench_cleanup EXIT
bench_setup
daemon_pid=$(cat "$work/daemon.pid")
"$BERTH" run --rm busybox /bin/true # the default network and its bridge exist from here on
bridge=$("$BERTH" network ls --json | python3 -c 'import json,sys; print(next(n["bridge"] for n in json.load(sys.stdin) if n["name"] == "default"))')
# Every instance cgroup of this daemon lives under berth-TAG in each hierarchy.
parent=berth-$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tag"])' "$work/state/node.json")

count() {
  case $1 in
    veths) ip -o link show master "$bridge" 2>/dev/null | wc -l ;;
    netns) find "$work/state/netns" -mindepth 1 2>/dev/null | wc -l ;;
    # Not the daemon's own bind of its instances directory (made once at start-up).
    mounts) grep " $work" /proc/self/mountinfo | grep -vc " $work/state/instances " || true ;;
    cgroups) find /sys/fs/cgroup/*/"${parent:-berth-none}" -mindepth 1 -type d 2>/dev/null | wc -l ;;
    instances) find "$work/state/instances" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l ;;
    runtime) find "$work/state/rt" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l ;;
    rules) iptables-save 2>/dev/null | grep -c -- "${bridge#bb-}" || true ;;
    fds) find "/proc/$daemon_pid/fd" -mindepth 1 | wc -l ;;
    rss_kib) awk '/VmRSS/ {print $2}' "/proc/$daemon_pid/status" ;;
  esac
}
things=(veths netns mounts cgroups instances runtime rules fds rss_kib)
declare -A before
for thing in "${things[@]}"; do before[$thing]=$(count "$thing"); done

began=$(date +%s.%N)
for _ in $(seq "$runs"); do "$BERTH" run --rm busybox /bin/true; done
ended=$(date +%s.%N)
for _ in $(seq 100); do
  [ "$(count veths)" -le "${before[veths]}" ] && [ ! -e "$work/state/instances/.discarded" ] && break
  sleep 0.1
done

printf '%s runs of `berth run --rm busybox /bin/true` (bridge) in %.1f s, %.1f ms each\n' \
  "$runs" "$(echo "$ended - $began" | bc)" "$(echo "($ended - $began) * 1000 / $runs" | bc -l)"
printf '%-10s %8s %8s\n' "" before after
leaked=0
for thing in "${things[@]}"; do
  after=$(count "$thing")
  printf '%-10s %8s %8s\n' "$thing" "${before[$thing]}" "$after"
  case $thing in
    rss_kib | fds) ;;
    *) [ "$after" -gt "${before[$thing]}" ] && leaked=1 ;;
  esac
done
[ "$leaked" = 0 ] && echo "nothing left behind" || echo "LEFT BEHIND: see above"
