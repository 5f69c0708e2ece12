#!/usr/bin/env bash
# Live migration: downtime and total time of `berth migrate` for an idle and a
# memory-dirtying guest of 256 MiB and 1 GiB, between two of three real berth nodes (a real
# 3-member etcd, all on this machine), the VM's disk on a real NFS server (nfs-ganesha), RUNS
# moves each (back and forth). Prints each move, medians, the accelerator, and the ratios to
# QEMU's default downtime limit (300 ms) and the anchors' targets (OpenStack Nova's
# live_migration_downtime 500 ms, vMotion's under 1 s).
# Usage: bench/migrate.sh [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
BERTH=${BERTH:-$PWD/target/release/berth}
[ -x "$BERTH" ] || ./scripts/build.sh
source bench/cluster-common.sh

# NFS: ganesha serving NFSv3 on this machine's loopback (what the nodes advertise).
pgrep -x rpcbind >/dev/null || rpcbind -w
mkdir -p "$work/nfs/export"
cat >"$work/nfs/ganesha.conf" <<EOF
NFS_CORE_PARAM { Protocols = 3; Bind_addr = 127.0.0.1; Enable_NLM = false; Enable_RQUOTA = false; }
EXPORT { Export_Id = 78; Path = $work/nfs/export; Pseudo = $work/nfs/export; Access_Type = RW; Squash = No_Root_Squash;
  Protocols = 3; Transports = TCP; SecType = sys; FSAL { Name = VFS; } }
LOG { Default_Log_Level = WARN; }
EOF
ganesha.nfsd -F -f "$work/nfs/ganesha.conf" -L "$work/nfs/ganesha.log" -p "$work/nfs/ganesha.pid" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 120); do
  qemu-img info "nfs://127.0.0.1$work/nfs/export/probe" 2>&1 | grep -q NOENT && break
  sleep 0.25
done
share="nfs://127.0.0.1$work/nfs/export"
export BERTH_HOST=$work/n1/berth.sock

results=$work/results
: >"$results"
for memory in 256m 1g; do
  for load in idle dirtying; do
    case $load in
      idle) command=(sleep 100000) ;;
      # dd fills a fresh 32 MiB buffer with `yes`'s lines again and again: memory dirtied
      # as fast as one vCPU can under TCG, and not with zeros (QEMU sends zero pages as a flag).
      dirtying) command=(sh -c 'while true; do yes | dd of=/dev/null bs=32M count=2 iflag=fullblock 2>/dev/null; done') ;;
    esac
    name="mig-$memory-$load"
    "$BERTH" run -d --name "$name" --vm --memory "$memory" --network none --node n1 --disk-on "$share" \
      busybox "${command[@]}" >/dev/null
    sleep 3
    for run in $(seq "$runs"); do
      to=$([ $((run % 2)) = 1 ] && echo n2 || echo n1)
      extra=()
      [ "$load" = dirtying ] && extra=(--auto-converge)
      out=$("$BERTH" migrate "$name" --to "$to" --json "${extra[@]}")
      python3 - "$memory" "$load" "$run" "$out" >>"$results" <<'PY'
import json, sys
memory, load, run, out = sys.argv[1:]
r = json.loads(out)["result"]
print(json.dumps({"memory": memory, "load": load, "run": int(run), **r}))
PY
      tail -1 "$results" | python3 -c '
import json, sys
r = json.loads(sys.stdin.read())
print("{} {:9} run {}: downtime {} ms (QEMU {} ms), total {:.2f} s, {:.0f} MiB sent, auto-converge {}, {}".format(
    r["memory"], r["load"], r["run"], r["downtime_ms"], r["qemu_downtime_ms"], r["total_ms"] / 1000,
    r["transferred_bytes"] / 2**20, r["auto_converge"], r["accelerator"]))'
    done
    "$BERTH" rm -f "$name" >/dev/null
  done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print()
print("| guest | downtime (median) | QEMU's downtime | total time | sent | ÷ QEMU default 300 ms | ÷ Nova 500 ms | ÷ vMotion 1 s |")
print("|---|---|---|---|---|---|---|---|")
for memory in ["256m", "1g"]:
    for load in ["idle", "dirtying"]:
        group = [r for r in rows if r["memory"] == memory and r["load"] == load]
        if not group:
            continue
        down = statistics.median(r["downtime_ms"] for r in group)
        qemu = statistics.median(r["qemu_downtime_ms"] for r in group)
        total = statistics.median(r["total_ms"] for r in group) / 1000
        sent = statistics.median(r["transferred_bytes"] for r in group) / 2**20
        print(f"| {memory}, {load}{' (auto-converge)' if load == 'dirtying' else ''} | {down:.0f} ms | {qemu:.0f} ms | {total:.2f} s | {sent:.0f} MiB | {down/300:.2f} | {down/500:.2f} | {down/1000:.2f} |")
print(f"accelerator: {rows[0]['accelerator']}; {len(rows)} moves")
PY
