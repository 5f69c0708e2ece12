#!/usr/bin/env bash
# Network throughput (iperf3, TCP, one stream) through berth's networking against the peer
# doing the same work: a raw veth pair between two network namespaces on this host.
#   container -> container   (both on berth's default bridge)
#   container -> host        (to the bridge's gateway address)
#   VM -> container          (the VM's tap and the container's veth on one bridge)
#   container --bandwidth 100mbit (the limit, measured)
# Prints Gbit/s per path and the ratio to the raw veth pair.
# Usage: bench/network.sh [SECONDS]   (root; after scripts/install-deps.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-5}
work=$(mktemp -d /tmp/bb-XXXXXX)
source bench/common.sh
ns_a=bbn-a-$$
ns_b=bbn-b-$$
cleanup() {
  ip netns del "$ns_a" 2>/dev/null || true
  ip netns del "$ns_b" 2>/dev/null || true
  [ -f "$work/host-iperf.pid" ] && kill "$(cat "$work/host-iperf.pid")" 2>/dev/null || true
  bench_cleanup
}
trap cleanup EXIT
bench_setup

# An image with iperf3: busybox plus Debian's iperf3 and the libraries it links.
mkdir -p "$work/iperf-root"
tar -C "$work/iperf-root" -xf "$work/busybox.tar"
for file in /usr/bin/iperf3 $(ldd /usr/bin/iperf3 | grep -o '/[^ ]*'); do
  mkdir -p "$work/iperf-root$(dirname "$file")"
  cp -L "$file" "$work/iperf-root$file"
done
tar --numeric-owner --owner=0 --group=0 -C "$work/iperf-root" -cf "$work/iperf.tar" .
"$BERTH" image import --tag iperf "$work/iperf.tar" >/dev/null 2>&1

bits() { python3 -c 'import json,sys; print(json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"])'; }

# The peer: two namespaces joined by a veth pair, nothing else in the path.
ip netns add "$ns_a"
ip netns add "$ns_b"
ip link add bbn-va-$$ netns "$ns_a" type veth peer name bbn-vb-$$ netns "$ns_b"
ip -n "$ns_a" addr add 198.18.99.1/24 dev bbn-va-$$
ip -n "$ns_b" addr add 198.18.99.2/24 dev bbn-vb-$$
ip -n "$ns_a" link set bbn-va-$$ up
ip -n "$ns_a" link set lo up
ip -n "$ns_b" link set bbn-vb-$$ up
ip netns exec "$ns_a" iperf3 -s -D -1 >/dev/null
sleep 0.5
raw=$(ip netns exec "$ns_b" iperf3 -c 198.18.99.1 -t "$seconds" -J | bits)

# berth: a server container on the default bridge.
"$BERTH" run -d --name srv iperf iperf3 -s >/dev/null
srv=$("$BERTH" inspect srv | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"]["address"])')
gateway=$("$BERTH" inspect srv | python3 -c 'import json,sys; print(json.load(sys.stdin)["address"]["gateway"])')
sleep 0.5
c2c=$("$BERTH" run --rm iperf iperf3 -c "$srv" -t "$seconds" -J | bits)

iperf3 -s -B "$gateway" -D -I "$work/host-iperf.pid" >/dev/null
sleep 0.5
c2h=$("$BERTH" run --rm iperf iperf3 -c "$gateway" -t "$seconds" -J | bits)

limited=$("$BERTH" run --rm --bandwidth 100mbit iperf iperf3 -c "$srv" -t "$seconds" -J | bits)

accel=$("$BERTH" info --json | python3 -c 'import json,sys; print((json.load(sys.stdin).get("accelerators") or ["?"])[0])')
v2c=$("$BERTH" run --vm --rm --memory 512m iperf iperf3 -c "$srv" -t "$seconds" -J | sed -n '/^{/,$p' | bits)

python3 - "$raw" "$c2c" "$c2h" "$v2c" "$limited" "$accel" <<'PY'
import sys
raw, c2c, c2h, v2c, limited = (float(v) for v in sys.argv[1:6])
accel = sys.argv[6]
print(f"{'path (iperf3, 1 TCP stream)':<44} {'Gbit/s':>8} {'vs raw veth':>12}")
for name, value in [
    ("raw veth between two netns (peer)", raw),
    ("berth container -> container (bridge)", c2c),
    ("berth container -> host (gateway)", c2h),
    (f"berth VM -> container (tap, {accel})", v2c),
]:
    print(f"{name:<44} {value / 1e9:>8.2f} {value / raw:>12.2f}")
print(f"{'berth container, --bandwidth 100mbit':<44} {limited / 1e6:>7.1f}M {'(limit 100M)':>12}")
PY
