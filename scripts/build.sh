#!/usr/bin/env bash
# Builds berth: every binary of the workspace into target/release, then the guest agent
# (berth-guest) once more as a static executable, which takes the place of the dynamically
# linked one beside berth (the daemon packs the agent beside it into VMs' initramfs).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --workspace --bins
# The agent is /init of every VM booted from a container image. Linked statically, the guest
# kernel runs it without the dynamic loader and glibc's relocation of itself, which under TCG
# (every instruction translated on first use) took 55 ms of each boot (bench/vm-boot.sh).
# Only this crate: crt-static for the whole workspace would reach berth itself (glibc's name
# service wants its shared libraries) and proc macros, which cannot be static. An explicit
# --target keeps these artifacts apart from target/release's.
host=$(rustc -vV | sed -n 's/^host: //p')
# Thin LTO for the agent only, as it was built when bench/vm-boot.sh measured its boot (the
# workspace's release profile has none: Cargo.toml says why).
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" CARGO_PROFILE_RELEASE_LTO=thin \
  cargo build --release -p berth-guest --target "$host"
install -m 0755 "target/$host/release/berth-guest" target/release/berth-guest
