#!/usr/bin/env bash
# Builds the filter module every script, test and image uses:
# target/wasm32-wasip1/release/mlcanary_filter.wasm — `cargo build` (release), then Binaryen's
# wasm-opt -O3 over it (dead code and duplicate functions out: 390 → ~286 KB). wasm-opt comes from
# tools/wasm-opt (npm, pinned; scripts/setup.sh installs it); without it the module is left as cargo
# built it, with a warning — same behaviour, larger file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cargo build -p mlcanary-filter --target wasm32-wasip1 --release --quiet
wasm=${CARGO_TARGET_DIR:-target}/wasm32-wasip1/release/mlcanary_filter.wasm
opt=tools/wasm-opt/node_modules/.bin/wasm-opt
if [ -x "$opt" ]; then
  # Written beside and renamed over: cargo's hard link to deps/ keeps the unoptimised copy, so the
  # next cargo build finds its own output intact. Features: what rustc enables for wasm32-wasip1.
  "$opt" -O3 --enable-bulk-memory --enable-sign-ext --enable-nontrapping-float-to-int \
    --enable-mutable-globals --enable-reference-types --enable-multivalue "$wasm" -o "$wasm.opt"
  mv "$wasm.opt" "$wasm"
else
  printf '[build-filter] %s missing (scripts/setup.sh installs it): module left unoptimised\n' "$opt" >&2
fi
printf '[build-filter] %s: %s bytes\n' "$wasm" "$(stat -c %s "$wasm")" >&2
