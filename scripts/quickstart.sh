#!/usr/bin/env bash
# The main job on the embedded default (SQLite state, no other services): install what is
# needed, build berth, start its daemon, make a busybox image, run it as a container and as a
# VM, and show every running instance with its host processes.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
./scripts/build.sh
# berth-guest is the guest agent VMs boot into; berth looks for it beside itself.
install -m 0755 target/release/berth target/release/berth-guest /usr/local/bin/

if ! berth info >/dev/null 2>&1; then
  mkdir -p /var/log/berth
  nohup berth daemon >/var/log/berth/daemon.log 2>&1 &
  for _ in $(seq 100); do berth info >/dev/null 2>&1 && break; sleep 0.1; done
fi
berth info

./scripts/make-busybox-rootfs.sh /tmp/busybox-rootfs.tar
berth image import --tag busybox /tmp/busybox-rootfs.tar

berth run --rm busybox echo "hello from a berth container"
berth run --vm --rm busybox sh -c 'echo "hello from a berth VM, kernel $(uname -r)"'
berth rm -f quickstart-web >/dev/null 2>&1 || true
berth run -d --name quickstart-web --memory 64m --cpus 0.5 -p 127.0.0.1:18080:8080 busybox \
  sh -c 'mkdir -p /www && echo "hello from quickstart-web" >/www/index.html && httpd -f -p 8080 -h /www'
berth rm -f quickstart-vm >/dev/null 2>&1 || true
berth run -d --vm --name quickstart-vm --memory 256m busybox sh -c 'while true; do sleep 1; done'
# Reached by name through berth's DNS, and through the published port on the host.
berth run --rm busybox sh -c 'sleep 0.5; wget -qO- http://quickstart-web:8080/'
berth run --rm --network host busybox wget -qO- http://127.0.0.1:18080/
berth types ls
berth ps
berth ps --tree
