# Three etcd members and three berth nodes on this machine (sourced by the cluster benches).
# Expects $work, $BERTH and bench/common.sh; leaves $url, $pids and cluster_cleanup (the EXIT trap).
pids=()
cluster_cleanup() {
  for n in 1 2 3; do
    sock="$work/n$n/berth.sock"
    [ -S "$sock" ] || continue
    ids=$(BERTH_HOST=$sock "$BERTH" ps -aq 2>/dev/null | tr "\n" " " || true)
    [ -n "$ids" ] && BERTH_HOST=$sock "$BERTH" rm -f $ids >/dev/null 2>&1 || true
  done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for n in 1 2 3; do ip link del "bb-bench$n" 2>/dev/null || true; done
  bench_cleanup
}
trap cluster_cleanup EXIT
bench_setup >/dev/null

source bench/etcd.sh
start_etcd
base=$etcd_base

# start_node N: (re)starts node nN's daemon; node_pid[N] is its pid.
declare -A node_pid
start_node() {
  local n=$1
  mkdir -p "$work/n$n"
  printf 'default_subnet = "10.%d.0.0/24"\ndefault_bridge = "bb-bench%d"\n' $((230 + n)) "$n" >"$work/n$n/config.toml"
  "$BERTH" daemon --state-dir "$work/n$n/state" --socket "$work/n$n/berth.sock" --config "$work/n$n/config.toml" \
    --cluster "$url" --node-name "n$n" --advertise 127.0.0.1 --peer-port $((base + 100 + n)) \
    >>"$work/n$n/daemon.log" 2>&1 &
  node_pid[$n]=$!
  pids+=($!)
  for _ in $(seq 100); do BERTH_HOST=$work/n$n/berth.sock "$BERTH" info >/dev/null 2>&1 && return; sleep 0.2; done
  echo "node n$n did not start: $(tail -3 "$work/n$n/daemon.log")" >&2
  exit 1
}
for n in 1 2 3; do start_node "$n"; done
for n in 1 2 3; do
  BERTH_HOST=$work/n$n/berth.sock "$BERTH" image import --tag busybox "$work/busybox.tar" >/dev/null 2>&1
done
sleep 4 # each node publishes its image within one heartbeat (2 s)
