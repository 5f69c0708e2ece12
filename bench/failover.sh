#!/usr/bin/env bash
# Failover time: a container with --restart always runs on one of three real berth nodes (a
# real 3-member etcd, all on this machine); its node's daemon is killed with -9; the time
# until the container runs on another node, as another node's API reports it. RUNS times,
# rotating the node; prints each, the median, and the published figures of the peers (their
# defaults: this machine cannot run vSphere, and a Kubernetes or Nomad cluster here would be
# measured at their defaults anyway). Exactly one copy runs after each move, or it fails.
# Usage: bench/failover.sh [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
BERTH=${BERTH:-$PWD/target/release/berth}
[ -x "$BERTH" ] || ./scripts/build.sh
source bench/cluster-common.sh

times=()
for run in $(seq "$runs"); do
  victim=$(( (run - 1) % 3 + 1 ))
  watcher=$(( victim % 3 + 1 ))
  export BERTH_HOST=$work/n$watcher/berth.sock
  marker=$((8800 + run))
  "$BERTH" run -d --name "f$run" --node "n$victim" --restart always --network none busybox sleep "$marker" >/dev/null
  kill -9 "${node_pid[$victim]}"
  wait "${node_pid[$victim]}" 2>/dev/null || true
  took=$(python3 - "$BERTH" "f$run" "n$victim" <<'PY'
import json, subprocess, sys, time
berth, name, victim = sys.argv[1:]
start = time.monotonic()
while time.monotonic() - start < 60:
    out = subprocess.run([berth, "inspect", name], capture_output=True, text=True)
    if out.returncode == 0:
        record = json.loads(out.stdout)
        record = record[0] if isinstance(record, list) else record
        if record["node"] != victim and record["state"] == "running":
            print(f"{time.monotonic() - start:.2f}")
            sys.exit(0)
    time.sleep(0.05)
sys.exit(f"{name} did not move off {victim} within 60 s")
PY
)
  copies=$(pgrep -fxc "sleep $marker" || true)
  [ "$copies" = 1 ] || { echo "run $run: $copies copies of f$run run" >&2; exit 1; }
  echo "run $run: n$victim killed, f$run running elsewhere ${took} s later (one copy)"
  times+=("$took")
  start_node "$victim"
  "$BERTH" rm -f "f$run" >/dev/null
  sleep 3 # the restarted node is ready again within a heartbeat
done
python3 - "${times[@]}" <<'PY'
import statistics, sys
times = [float(t) for t in sys.argv[1:]]
median = statistics.median(times)
print(f"failover, kill -9 of a node's daemon to running elsewhere: median {median:.1f} s over {len(times)} runs (min {min(times):.1f}, max {max(times):.1f})")
print("published defaults: Kubernetes evicts after ~350 s (5 min 50 s), Nomad ~20 s (heartbeat TTL + grace), vSphere HA declares a host dead after ~15 s")
for name, figure in [("Kubernetes", 350.0), ("Nomad", 20.0), ("vSphere HA", 15.0)]:
    print(f"berth / {name}: {median / figure:.2f}")
PY
