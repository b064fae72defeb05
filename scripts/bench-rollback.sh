#!/usr/bin/env bash
# Benchmark: breach-to-rollback time of `mlcanary local`, judging Envoy's stats and a real
# Prometheus (the e2e tests check that the rollback happens; this prints how long it takes).
# Usage: scripts/bench-rollback.sh [RUNS]   (default 3 per metrics source)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup-test.sh
bash scripts/build-filter.sh
cargo build -p mlcanary-controller --bin mlcanary --quiet
cargo build -p mlcanary-e2e --bin bench-rollback --quiet
target=${CARGO_TARGET_DIR:-target}
if [ -z "${MLCANARY_WASM:-}" ]; then
  export MLCANARY_WASM="$target/wasm32-wasip1/release/mlcanary_filter.wasm"
fi
if [ -z "${MLCANARY_BIN:-}" ]; then
  export MLCANARY_BIN="$target/debug/mlcanary"
fi
exec "$target/debug/bench-rollback" "$@"
