# A 3-member etcd on loopback ports under $work (Debian's etcd 3.4), for the cluster benches.
# start_etcd [ETCD FLAGS...]: starts it, appends the pids to $pids, sets $endpoints
# (HOST:PORT,...) and $url (etcd://...), and waits until it answers.
start_etcd() {
  local base=$((23000 + RANDOM % 4000)) initial="" m
  etcd_base=$base
  for m in 1 2 3; do initial+="m$m=http://127.0.0.1:$((base + 2 * m + 1)),"; done
  for m in 1 2 3; do
    etcd --name "m$m" --data-dir "$work/etcd$m" \
      --listen-client-urls "http://127.0.0.1:$((base + 2 * m))" --advertise-client-urls "http://127.0.0.1:$((base + 2 * m))" \
      --listen-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((base + 2 * m + 1))" \
      --initial-cluster "${initial%,}" --initial-cluster-state new --pre-vote "$@" >"$work/etcd$m.log" 2>&1 &
    pids+=($!)
  done
  endpoints="127.0.0.1:$((base + 2)),127.0.0.1:$((base + 4)),127.0.0.1:$((base + 6))"
  url="etcd://$endpoints"
  for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health >/dev/null 2>&1 && return
    sleep 0.2
  done
  echo "etcd did not come up: $(tail -3 "$work/etcd1.log")" >&2
  exit 1
}
