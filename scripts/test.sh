#!/usr/bin/env bash
# Installs what the tests need, checks formatting and lints, then runs every test: unit
# tests and the integration tests, which start real berth daemons, a real registry and
# real containers (root needed).
set -euo pipefail
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
cargo fmt --all -- --check
# The placement benchmark is an example behind a feature (not built by `cargo test`): linted too.
cargo clippy --release --workspace --all-targets --features berth-daemon/placement-bench -- -D warnings
# Every binary, the guest agent (berth-guest, static) included: the daemon packs it beside berth.
./scripts/build.sh
cargo test --release --workspace -- --test-threads 2
# Every parser of untrusted input under libFuzzer for a bounded time (seconds per target),
# built unoptimised: a third of the build time; `scripts/fuzz.sh` alone runs optimised.
BERTH_FUZZ_SECONDS=${BERTH_FUZZ_SECONDS:-15} BERTH_FUZZ_PROFILE=${BERTH_FUZZ_PROFILE:-dev} ./scripts/fuzz.sh
