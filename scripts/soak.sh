#!/usr/bin/env bash
# Soak: steady load through a real Envoy with the mlcanary filter while its config (canary weight,
# rules) changes every 2.5 s; fails on any 5xx or on Envoy memory growth past the bound after
# warm-up. Loopback only, bounded in time. Usage: scripts/soak.sh [SECONDS] (default 120).
# Not part of scripts/test.sh: it is a soak.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
seconds=${1:-120}
bash scripts/setup-test.sh
bash scripts/build-filter.sh
cargo build -p mlcanary-e2e --bin soak --quiet
target=${CARGO_TARGET_DIR:-target}
if [ -z "${MLCANARY_WASM:-}" ]; then
  export MLCANARY_WASM="$target/wasm32-wasip1/release/mlcanary_filter.wasm"
fi
exec "$target/debug/soak" "$seconds"
