#!/usr/bin/env bash
# Builds a small rootfs tarball from Debian's busybox-static: /bin/busybox, a symlink per
# applet, /etc/passwd and /etc/group. Usage: make-busybox-rootfs.sh OUT.tar
set -euo pipefail
out=${1:?usage: make-busybox-rootfs.sh OUT.tar}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work"/{bin,etc,tmp,root,home}
chmod 1777 "$work/tmp"
cp /bin/busybox "$work/bin/busybox"
for applet in $("$work/bin/busybox" --list); do
  [ "$applet" = busybox ] || ln -s busybox "$work/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$work/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$work/etc/group"
tar --numeric-owner --owner=0 --group=0 -C "$work" -cf "$out" .
