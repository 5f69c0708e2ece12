# Shared set-up for the benchmarks: a private berth daemon, the busybox image, a runc
# bundle of the same rootfs and a podman store with the same image, all under $work.
# Sourced by the bench scripts; expects $work to be set.

BERTH=${BERTH:-$PWD/target/release/berth}
export BERTH_HOST="$work/berth.sock"
export CONTAINERS_CONF="$work/containers.conf"
PODMAN=(podman --root "$work/podman/root" --runroot "$work/podman/run")

# Idle containers reserve little (the default reservation, 0.1 CPU, admits 80 on 2 cores):
# writes the daemon's config for many of them; bench_setup's daemon reads it.
small_reservations() {
  cat >"$work/berth.toml" <<'TOML'
[defaults]
reserve_cpus = "0.005"
reserve_memory = "4m"
TOML
  BERTH_DAEMON_ARGS="${BERTH_DAEMON_ARGS:-} --config $work/berth.toml"
}

bench_setup() {
  [ -x "$BERTH" ] || ./scripts/build.sh
  ./scripts/make-busybox-rootfs.sh "$work/busybox.tar"

  # shellcheck disable=SC2086 # extra daemon flags, word-split on purpose
  "$BERTH" daemon --state-dir "$work/state" --socket "$BERTH_HOST" ${BERTH_DAEMON_ARGS:-} >"$work/daemon.log" 2>&1 &
  echo $! >"$work/daemon.pid"
  for _ in $(seq 100); do "$BERTH" info >/dev/null 2>&1 && break; sleep 0.1; done
  "$BERTH" image import --tag busybox "$work/busybox.tar" >/dev/null 2>&1

  mkdir -p "$work/bundle/rootfs" "$work/runc"
  tar -C "$work/bundle/rootfs" -xf "$work/busybox.tar"
  (cd "$work/bundle" && runc spec)
  python3 - "$work/bundle/config.json" <<'PY'
import json, sys
path = sys.argv[1]
spec = json.load(open(path))
spec["process"]["args"] = ["/bin/true"]
spec["process"]["terminal"] = False
json.dump(spec, open(path, "w"))
PY

  # Podman as Debian ships it, told to use runc (crun refuses this host's hybrid cgroups)
  # and the file limits this sandbox allows.
  cat >"$CONTAINERS_CONF" <<'CONF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  "${PODMAN[@]}" import "$work/busybox.tar" localhost/busybox:latest >/dev/null 2>&1
}

# Debian's crun needs the hugetlb controller mounted (as v1 on a hybrid host): mounted for the
# bench's run if missing; bench_cleanup unmounts it again.
hugetlb_mounted=""
mount_hugetlb_for_crun() {
  if [ ! -e /sys/fs/cgroup/hugetlb ] && [ -d /sys/fs/cgroup/unified ]; then
    mkdir /sys/fs/cgroup/hugetlb && mount -t cgroup -o hugetlb cgroup /sys/fs/cgroup/hugetlb && hugetlb_mounted=1
  fi
}

bench_cleanup() {
  if [ -n "$hugetlb_mounted" ]; then
    umount /sys/fs/cgroup/hugetlb && rmdir /sys/fs/cgroup/hugetlb
    hugetlb_mounted=""
  fi
  if [ -f "$work/daemon.pid" ]; then
    for id in $("$BERTH" ps -aq 2>/dev/null); do "$BERTH" rm -f "$id" >/dev/null 2>&1 || true; done
    kill "$(cat "$work/daemon.pid")" 2>/dev/null || true
  fi
  "${PODMAN[@]}" rm -af -t 0 >/dev/null 2>&1 || true
  "${PODMAN[@]}" rmi -af >/dev/null 2>&1 || true
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  # The daemon keeps its default bridge, chains and cgroup parents across restarts, as a host
  # should; a bench's throwaway daemon leaves nothing (left, they pile up run after run).
  local tag table chains chain
  tag=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get("tag") or "")' \
    "$work/state/node.json" 2>/dev/null || true)
  if [ -n "$tag" ]; then
    ip link del "bb-$tag" 2>/dev/null || true
    for table in filter nat; do
      iptables -t "$table" -S 2>/dev/null | grep -- "-j BERTH-$tag-" | sed 's/^-A/-D/' |
        while read -r rule; do read -ra words <<<"$rule"; iptables -t "$table" "${words[@]}" 2>/dev/null || true; done
      chains=$(iptables -t "$table" -S 2>/dev/null | awk -v p="BERTH-$tag-" '$1 == "-N" && index($2, p) == 1 {print $2}')
      for chain in $chains; do iptables -t "$table" -F "$chain" 2>/dev/null || true; done
      for chain in $chains; do iptables -t "$table" -X "$chain" 2>/dev/null || true; done
    done
    for chain in /sys/fs/cgroup/*/"berth-$tag"; do
      [ -d "$chain" ] && find "$chain" -depth -type d -exec rmdir {} \; 2>/dev/null
    done
  fi
  # BENCH_KEEP_LOG=FILE keeps the daemon's log (its phase trace with --log-level debug).
  if [ -n "${BENCH_KEEP_LOG:-}" ] && [ -f "$work/daemon.log" ]; then cp "$work/daemon.log" "$BENCH_KEEP_LOG"; fi
  rm -rf "$work"
}
