#!/usr/bin/env bash
# Installs what berth needs on a Debian 12 machine, from Debian's own packages:
#   build:   gcc, pkg-config, make (C parts of the bundled SQLite, ring and libbpf),
#            libseccomp-dev, libelf-dev, zlib1g-dev (linked statically),
#            protobuf-compiler + libprotobuf-dev (protoc and its well-known types: the
#            etcd-client crate compiles etcd's gRPC definitions)
#   cluster: etcd-server, etcd-client (the cluster store; tests start real 3-member clusters,
#            openssl makes the certificates of the TLS ones)
#   tests:   busybox-static (the test image), libc6-dev (gcc -static builds the seccomp test's
#            system-call probe), docker-registry (a real OCI registry),
#            podman (a real producer of docker-save and OCI archives), zstd,
#            nfs-ganesha + nfs-ganesha-vfs + rpcbind (a real NFSv3 server for nfs volumes),
#            socat (relays the API's unix socket to TCP for schemathesis, from PyPI, below),
#            python3-prometheus-client (its strict OpenMetrics parser reads /metrics),
#            docker.io (only its `docker` client is used), docker-compose and python3-docker:
#            real Docker clients for the Docker Engine API gateway (no dockerd is started),
#            chromium (the dashboard's end-to-end test drives it with playwright-core),
#            the Common OVF Tool (PyPI `cot`, below: an OVF reader and writer berth shares no
#            code with, and descriptors VMware and VirtualBox wrote, in its test data)
#   dashboard: from the npm registry (dashboard/package.json, exact versions in its lock):
#            xterm.js, copied to /usr/local/lib/berth/dashboard, and playwright-core
#   bench:   runc, crun and podman (the peers berth is measured against), hyperfine, iperf3
#   VMs:     QEMU (qemu-system-x86, qemu-utils, qemu-block-extra for nfs://), e2fsprogs,
#            virt-xml-validate (libvirt-clients, libxml2-utils) to check exported XML, and
#            Debian's cloud kernel, extracted (not installed) to /usr/local/lib/berth/guest,
#            and the kernel berth's own VMs boot, built from Debian's kernel source
#            (linux-source-6.1, with bc, flex and bison) by scripts/build-guest-kernel.sh,
#            debootstrap and fdisk (sfdisk) for tests/fixtures/debian-disk.sh's bootable disks,
#            dosfstools and mtools (the tests' hand-made NoCloud seeds; berth writes its own with
#            the fatfs crate), ovmf (UEFI firmware for disks with an EFI System Partition)
# Rust itself comes from the machine's rustup toolchain.
set -euo pipefail
. "$(dirname "$0")/as-root.sh"

packages=(
  gcc pkg-config make libseccomp-dev libelf-dev zlib1g-dev libc6-dev
  protobuf-compiler libprotobuf-dev
  etcd-server etcd-client openssl
  busybox-static
  docker-registry
  podman uidmap
  runc crun
  hyperfine iperf3
  zstd
  procps iproute2 iptables
  e2fsprogs
  debootstrap fdisk dosfstools mtools ovmf
  libvirt-clients libxml2-utils
  linux-source-6.1 bc flex bison xz-utils patch
  nfs-ganesha nfs-ganesha-vfs rpcbind
  socat
  python3-prometheus-client
  docker.io docker-compose python3-docker
  chromium
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # docker.io would start dockerd (and containerd) where an init system runs: a policy-rc.d
  # that answers 101 keeps every package's service from starting during the install.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

# QEMU: this image ships a backported qemu-utils that conflicts with bookworm's QEMU; pin
# every QEMU package to the version of qemu-system-x86 that apt offers.
if ! command -v qemu-system-x86_64 >/dev/null || ! dpkg-query -W qemu-block-extra >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
  if [ -z "$qemu_version" ] || [ "$qemu_version" = "(none)" ]; then
    apt-get update
    qemu_version=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/{print $2}')
  fi
  apt-get install -y --no-install-recommends --allow-downgrades \
    "qemu-system-x86=$qemu_version" "qemu-utils=$qemu_version" "qemu-block-extra=$qemu_version"
fi

# The guest kernel for VMs made from container images: Debian's cloud kernel, unpacked from
# its package into berth's own directory (the host's /boot and initramfs are not touched).
guest_dir=/usr/local/lib/berth/guest
if ! ls "$guest_dir"/boot/vmlinuz-* >/dev/null 2>&1; then
  kernel_package=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  if [ -z "$kernel_package" ]; then
    apt-get update
    kernel_package=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  fi
  download=$(mktemp -d)
  (cd "$download" && chmod 777 . && apt-get download "$kernel_package")
  mkdir -p "$guest_dir"
  dpkg-deb -x "$download"/"$kernel_package"_*.deb "$guest_dir"
  rm -rf "$download"
fi
# The kernel berth's VMs made from container images boot (Debian's stays for `guest_kernel =
# "debian"`): built once per source version and config, a few minutes on two cores.
"$(dirname "$0")/build-guest-kernel.sh" "$guest_dir"

# The dashboard's console is xterm.js; the daemon serves it from here (--dashboard-assets).
# playwright-core (same lock) drives chromium in tests/dashboard.rs.
repo=$(cd "$(dirname "$0")/.." && pwd)
dashboard_assets=/usr/local/lib/berth/dashboard
# Node.js and npm from Debian unless the machine has them already (a nodesource build here).
command -v npm >/dev/null || apt-get install -y --no-install-recommends nodejs npm
if [ ! -d "$repo/dashboard/node_modules/@xterm/xterm" ] || [ ! -d "$repo/dashboard/node_modules/playwright-core" ]; then
  (cd "$repo/dashboard" && npm ci --no-audit --no-fund --loglevel=error)
fi
mkdir -p "$dashboard_assets"
install -m 0644 "$repo/dashboard/node_modules/@xterm/xterm/lib/xterm.js" \
  "$repo/dashboard/node_modules/@xterm/xterm/css/xterm.css" "$dashboard_assets/"

# schemathesis checks the API against its OpenAPI description (tests/api_schema.rs). Pinned:
# its checks and defaults change between versions, and tests/schemathesis.toml is written for
# this one.
schemathesis_version=4.32.5
if ! st --version 2>/dev/null | grep -qx "st, version $schemathesis_version"; then
  python3 -m pip install --quiet "schemathesis==$schemathesis_version" ||
    python3 -m pip install --quiet --break-system-packages "schemathesis==$schemathesis_version"
  # pyenv's shims learn of new commands on a rehash.
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# The Common OVF Tool reads and rewrites OVF/OVA packages with code of its own: tests/ovf.rs
# checks berth's exports against it and imports the VMware and VirtualBox descriptors its test
# data holds. Pinned, as its readings are compared exactly.
cot_version=2.2.1
if ! python3 -c "import COT, sys; sys.exit(COT.__version__ != '$cot_version')" 2>/dev/null; then
  python3 -m pip install --quiet "cot==$cot_version" ||
    python3 -m pip install --quiet --break-system-packages "cot==$cot_version"
  if command -v pyenv >/dev/null; then pyenv rehash; fi
fi

# The Debian package starts a registry on :5000 through systemd where systemd runs; tests
# start their own on a free port, so nothing else is needed here. The same goes for etcd
# (2379): tests start their own clusters on free ports.
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
