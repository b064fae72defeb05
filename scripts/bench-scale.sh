#!/usr/bin/env bash
# Benchmark: N CanaryPolicies in one `mlcanary local` (release build) and one Envoy, traffic to a
# few: controller CPU per interval, ticks made of those due, peak RSS, Envoy's RSS and stats size,
# series exported for the models called versus all. Prints figures; asserts nothing.
# Usage: scripts/bench-scale.sh [N ...] [--seconds S]   (default 10 100 1000, 30 s each)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup-test.sh
bash scripts/build-filter.sh
cargo build -p mlcanary-controller --bin mlcanary --release --quiet
cargo build -p mlcanary-e2e --bin bench-scale --quiet
target=${CARGO_TARGET_DIR:-target}
if [ -z "${MLCANARY_WASM:-}" ]; then
  export MLCANARY_WASM="$target/wasm32-wasip1/release/mlcanary_filter.wasm"
fi
if [ -z "${MLCANARY_BIN:-}" ]; then
  export MLCANARY_BIN="$target/release/mlcanary"
fi
exec "$target/debug/bench-scale" "$@"
