#!/usr/bin/env bash
# Installs what berth needs on a Debian 12 machine, from Debian's own packages:
#   build:   gcc, pkg-config (C parts of the bundled SQLite and ring)
#   tests:   busybox-static (the test image), docker-registry (a real OCI registry),
#            podman (a real producer of docker-save and OCI archives), zstd
#   bench:   runc and podman (the peers berth is measured against), hyperfine
# Rust itself comes from the machine's rustup toolchain.
set -euo pipefail

packages=(
  gcc pkg-config make
  busybox-static
  docker-registry
  podman uidmap
  runc
  hyperfine
  zstd
  procps iproute2
)

missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done

if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  fi
fi

# The Debian package starts a registry on :5000 through systemd where systemd runs; tests
# start their own on a free port, so nothing else is needed here.
command -v cargo >/dev/null || { echo "cargo not found: install Rust (rustup) first" >&2; exit 1; }
