#!/usr/bin/env bash
# Benchmark: Envoy with the mlcanary filter vs the same Envoy routing on a fixed header without it.
# Usage: scripts/bench-filter.sh [SECONDS] [CONNECTIONS] [ROUNDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup-test.sh
bash scripts/build-filter.sh
ls -l target/wasm32-wasip1/release/mlcanary_filter.wasm | awk '{print "filter .wasm: " $5 " bytes"}'
cargo run --release --quiet -p mlcanary-e2e --bin bench-filter -- "$@"
