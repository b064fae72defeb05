#!/usr/bin/env bash
# Fuzz the filter's parsers with libFuzzer (cargo fuzz): config, rules + decision, cookie / query,
# prediction bodies, host header maps, feedback bodies and tickets. Prints the executions each target ran; exits non-zero on a
# crash (the input is left in filter/fuzz/artifacts/<target>/: make it a regression test).
#
#   scripts/fuzz.sh [--seconds N | --runs N] [TARGET ...]     default: --seconds 10, all targets
#
# The stable toolchain builds it with RUSTC_BOOTSTRAP=1 and no sanitizer (Rust is memory-safe here;
# what is hunted is panics, which trap the Wasm VM in production).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
limit=(-max_total_time=10)
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) limit=(-max_total_time="$2"); shift 2 ;;
    --runs) limit=(-runs="$2"); shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(config rules cookie predictions headers feedback)
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --quiet cargo-fuzz
cd "$root/filter"
export RUSTC_BOOTSTRAP=1
cargo fuzz build --sanitizer none --release
for t in "${targets[@]}"; do
  corpus="$root/.work/fuzz-corpus/$t"
  mkdir -p "$corpus"
  log=$(mktemp)
  if ! cargo fuzz run --sanitizer none --release "$t" "$corpus" "fuzz/seeds/$t" -- \
      "${limit[@]}" -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log"
    echo "fuzz: target $t crashed; the input is in filter/fuzz/artifacts/$t/" >&2
    exit 1
  fi
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  printf 'fuzz %-12s %12s executions, no crash\n' "$t" "$runs"
  rm -f "$log"
done
