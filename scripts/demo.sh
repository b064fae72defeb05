#!/usr/bin/env bash
# The local demo: the fraud-detection case study, end to end on this machine. Two TF-Serving-
# compatible model servers, a real Envoy running the mlcanary filter, `mlcanary local` judging and
# stepping the canary, and customers' traffic: v2 is promoted, v3 is rolled back by the per-segment
# fairness check. `scripts/demo.sh filter` shows the filter alone; `scripts/demo.sh ui` a live
# status page during a rollout that is rolled back.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh
bash scripts/build-filter.sh
case "${1:-}" in
  filter)
    exec cargo run --quiet -p mlcanary-e2e --bin filter-demo ;;
  ui)
    # The status page of a live local rollout: prints the page's address, breaks the canary after
    # 12 s so it is rolled back, and keeps the page up for 60 s in all.
    cargo build -p mlcanary-controller --bin mlcanary --quiet
    exec cargo run --quiet -p mlcanary-e2e --bin ui-scenario -- --demo --max-seconds 60 ;;
esac
cargo build --quiet -p mlcanary-controller --bin mlcanary
cargo build --quiet -p mlcanary-fraud-example --bin fraud-demo
exec target/debug/fraud-demo "$@"
