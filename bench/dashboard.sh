#!/usr/bin/env bash
# The dashboard in Debian's chromium (playwright-core): first paint and the time until the
# instance table is filled with COUNT instances on a fresh page load, and how long a state
# change made with the CLI (pause, unpause) takes to appear in an open page. No peer's
# dashboard is installable here (Incus UI, Cockpit's podman page): the figures stand alone.
# Usage: bench/dashboard.sh [RUNS] [COUNT]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
count=${2:-50}
work=$(mktemp -d /tmp/bb-XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
source bench/common.sh
export BERTH_DAEMON_ARGS="--listen 127.0.0.1:$port"
small_reservations
trap bench_cleanup EXIT
bench_setup

echo "starting $count idle containers..." >&2
for i in $(seq "$count"); do
  "$BERTH" run -d --network none --name "idle$i" busybox sleep 100000 >/dev/null
done
token=$("$BERTH" trust add bench-browser --token 2>/dev/null)
(cd dashboard && BERTH_URL="https://127.0.0.1:$port" BERTH_TOKEN="$token" BERTH="$BERTH" RUNS="$runs" \
  COUNT="$count" node bench/dashboard.mjs) >"$work/results.jsonl"
python3 - "$work/results.jsonl" <<'PY'
import json, sys
print(f"{'what':<48} {'median ms':>10} {'min ms':>8}")
for line in open(sys.argv[1]):
    row = json.loads(line)
    print(f"{row['what']:<48} {row['median_ms']:>10.1f} {row['min_ms']:>8.1f}")
PY
