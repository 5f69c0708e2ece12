#!/usr/bin/env bash
# Builds the kernel berth boots VMs made from container images with, from Debian's kernel
# source package (linux-source-6.1) with scripts/guest-kernel.patch (freed init memory is not
# poisoned: 0.2 s under TCG): tinyconfig plus scripts/guest-kernel.config (virtio,
# ext4, FUSE/virtiofs, NVMe, ACPI power-off and hot-add, the PVH entry, all built in; no
# modules, no BTF, no tracing, no speculation mitigations), installed as
# GUEST_DIR/boot/vmlinux-<release> (an ELF kernel QEMU starts by PVH) with its config beside.
# Nothing is done when the installed kernel was built from the same source, patch and config.
# Usage: scripts/build-guest-kernel.sh [GUEST_DIR]   (root; scripts/install-deps.sh runs it)
set -euo pipefail
guest_dir=${1:-/usr/local/lib/berth/guest}
scripts="$(cd "$(dirname "$0")" && pwd)"
fragment="$scripts/guest-kernel.config"
patch_file="$scripts/guest-kernel.patch"
source_package=linux-source-6.1
source_version=$(dpkg-query -W -f='${Version}' "$source_package" 2>/dev/null || true)
if [ -z "$source_version" ]; then
  echo "build-guest-kernel: $source_package is not installed (scripts/install-deps.sh installs it)" >&2
  exit 1
fi
stamp_file="$guest_dir/boot/berth-kernel.stamp"
stamp="$source_package $source_version $(cat "$fragment" "$patch_file" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ] &&
  ls "$guest_dir"/boot/vmlinux-*-berth >/dev/null 2>&1; then
  exit 0
fi

build=$(mktemp -d /var/tmp/berth-guest-kernel-XXXXXX)
trap 'rm -rf "$build"' EXIT
echo "building the guest kernel from $source_package $source_version (a few minutes; once per source and config)"
tar -xJf /usr/src/linux-source-6.1.tar.xz -C "$build"
cd "$build/linux-source-6.1"
patch -s -p1 <"$patch_file"
# Each configuration step's output (override warnings, expected) is shown only if it fails.
quietly() { "$@" >"$build/step.log" 2>&1 || { cat "$build/step.log" >&2; exit 1; }; }
quietly make -s ARCH=x86_64 tinyconfig
quietly scripts/kconfig/merge_config.sh -m .config "$fragment"
quietly make -s ARCH=x86_64 olddefconfig
# Every line of the fragment must have survived olddefconfig (a dependency it lacks drops an
# option silently); a kernel missing one would boot and then fail in the guest.
missing=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$fragment" | while IFS= read -r line; do
  option=${line%%=*}
  value=${line#*=}
  if [ "$value" = n ]; then
    grep -qE "^$option=" .config && echo "$line"
  else
    grep -qxF "$line" .config || echo "$line"
  fi
done || true)
if [ -n "$missing" ]; then
  echo "build-guest-kernel: these options of $fragment did not take (a dependency is missing):" >&2
  echo "$missing" >&2
  exit 1
fi
make -j"$(($(nproc) + 1))" ARCH=x86_64 vmlinux >"$build/make.log" 2>&1 || {
  tail -40 "$build/make.log" >&2
  exit 1
}
release=$(make -s ARCH=x86_64 kernelrelease)
mkdir -p "$guest_dir/boot"
rm -f "$guest_dir"/boot/vmlinux-*-berth "$guest_dir"/boot/config-*-berth
install -m 0644 vmlinux "$guest_dir/boot/vmlinux-$release"
install -m 0644 .config "$guest_dir/boot/config-$release"
echo "$stamp" >"$stamp_file"
echo "guest kernel $release installed in $guest_dir/boot"
