#!/usr/bin/env bash
# The local demo: the mlcanary filter in a real Envoy in front of two model upstreams.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
cargo build -p mlcanary-filter --target wasm32-wasip1 --release --quiet
cargo run --quiet -p mlcanary-e2e --bin filter-demo
