#!/usr/bin/env bash
# `berth run --rm busybox /bin/true`, end to end, against `runc run` and `crun run` of the
# same bundle and `podman run --rm` of the same image, in one hyperfine run. Prints medians
# and ratios. Debian's crun needs the hugetlb controller mounted (as v1 on a hybrid host):
# mounted here for the run if missing, and unmounted after.
# Without networking (berth and podman --network none; runc's default spec: a namespace with
# loopback only), with and without Docker's default seccomp filter (berth and podman install
# it by default; runc and crun get the same profile in a second bundle), and with each one's
# default bridge networking (a veth on a bridge, an address, NAT rules) where podman's works
# on this host.
# Usage: bench/run-latency.sh [RUNS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-40}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
trap bench_cleanup EXIT
bench_setup
mount_hugetlb_for_crun
# The same bundle with Docker's default seccomp profile (containers-common's seccomp.json,
# the one podman uses, turned into the OCI form for runc and crun), so that each runtime
# installs a filter of the same size, as berth does by default.
mkdir -p "$work/bundle-seccomp"
python3 - "$work/bundle/config.json" /usr/share/containers/seccomp.json "$work/bundle-seccomp/config.json" <<'PY'
import json, sys
spec = json.load(open(sys.argv[1]))
profile = json.load(open(sys.argv[2]))
# Docker's default capabilities: the filter's capability-dependent rules follow them.
caps = {"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
        "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE"}
rules = []
for rule in profile["syscalls"]:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if any(c not in caps for c in includes.get("caps") or []):
        continue
    if any(c in caps for c in excludes.get("caps") or []):
        continue
    if includes.get("arches") and "amd64" not in includes["arches"]:
        continue
    if "amd64" in (excludes.get("arches") or []):
        continue
    out = {"names": rule["names"], "action": rule["action"]}
    if rule.get("args"):
        out["args"] = rule["args"]
    if "errnoRet" in rule:
        out["errnoRet"] = rule["errnoRet"]
    rules.append(out)
spec["linux"]["seccomp"] = {
    "defaultAction": profile["defaultAction"],
    "defaultErrnoRet": profile.get("defaultErrnoRet", 1),
    "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
    "syscalls": rules,
}
spec["root"]["path"] = sys.argv[1].rsplit("/", 1)[0] + "/rootfs"  # the same rootfs
json.dump(spec, open(sys.argv[3], "w"))
PY

crun_peers=()
if crun --root "$work/crun" run -b "$work/bundle" bench-probe >/dev/null 2>&1; then
  crun_peers=(-n "crun run" "crun --root $work/crun run -b $work/bundle bench-true"
    -n "crun run, seccomp" "crun --root $work/crun run -b $work/bundle-seccomp bench-true-s")
fi

bridged=()
if "${PODMAN[@]}" run --rm localhost/busybox:latest /bin/true >/dev/null 2>&1; then
  bridged=(-n "podman run --rm, bridge" "${PODMAN[*]} run --rm localhost/busybox:latest /bin/true")
fi
hyperfine --shell=none --warmup 5 --runs "$runs" --export-json "$work/latency.json" \
  -n "berth run --rm, seccomp" "$BERTH run --rm --network none busybox /bin/true" \
  -n "runc run, seccomp" "runc --root $work/runc run -b $work/bundle-seccomp bench-true-s" \
  -n "podman run --rm, seccomp" "${PODMAN[*]} run --rm --network none localhost/busybox:latest /bin/true" \
  -n "berth run --rm" "$BERTH run --rm --network none --security-opt seccomp=unconfined busybox /bin/true" \
  -n "runc run" "runc --root $work/runc run -b $work/bundle bench-true" \
  "${crun_peers[@]}" \
  -n "berth run --rm, bridge" "$BERTH run --rm busybox /bin/true" \
  "${bridged[@]}" \
  >/dev/null

cp "$work/latency.json" /tmp/latency-last.json 2>/dev/null || true
python3 - "$work/latency.json" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
# Ratios within a group, berth's line of the group against each peer: with Docker's default
# seccomp filter and no network; without a filter and no network; with each one's default
# bridge network (berth's and podman's filters on).
def group(command):
    return command.rsplit(", ", 1)[1] if ", " in command else "plain"
print(f"{'command':<28} {'median ms':>10} {'mean ms':>9} {'min ms':>8}   berth / this")
for r in results:
    berth = next(b for b in results if b["command"].startswith("berth") and group(b["command"]) == group(r["command"]))
    print(f"{r['command']:<28} {r['median']*1000:>10.1f} {r['mean']*1000:>9.1f} {r['min']*1000:>8.1f}   {berth['median']/r['median']:>6.2f}")
PY
