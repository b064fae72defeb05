#!/usr/bin/env bash
# CI on a busy machine: clone this repository afresh (committed HEAD, as CI does, with ../shared
# beside the clone) and run `.ci/run` while a CPU hog keeps one core busy; repeat. Prints each
# run's time and result; exits non-zero on the first failure.
#
#   scripts/ci-under-load.sh [--runs N] [--fresh-target]
#
# Run 1 builds everything from nothing, like CI. Later runs clone afresh too but start from a copy
# of run 1's target/ (dependencies already built; the workspace itself is rebuilt), unless
# --fresh-target. The hog is a busy loop this script starts and stops itself (no install needed).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
runs=3
fresh_target=0
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs=$2; shift 2 ;;
    --fresh-target) fresh_target=1; shift ;;
    *) echo "usage: $0 [--runs N] [--fresh-target]" >&2; exit 2 ;;
  esac
done
shared=$(cd "$root/../shared" && pwd) || { echo "no ../shared beside $root" >&2; exit 2; }
work=$(mktemp -d /tmp/mlcanary-ci-load.XXXXXX)
hog_pid=
cleanup() {
  [ -n "$hog_pid" ] && kill "$hog_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  # Build output is gigabytes; the logs are what is worth keeping.
  chmod -R u+w "$work/shared" 2>/dev/null || true
  rm -rf "$work"/run*/main/target "$work"/run*/main/filter/fuzz/target "$work/shared" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# One core kept busy for as long as the runs last.
( while :; do :; done ) &
hog_pid=$!
echo "ci-under-load: CPU hog pid $hog_pid on one of $(nproc) cores; work dir $work" >&2

cp -a "$shared" "$work/shared"
chmod -R a-w "$work/shared"
declare -a times=()
for i in $(seq 1 "$runs"); do
  dir="$work/run$i"
  rm -rf "$dir"
  mkdir -p "$dir"
  git clone --quiet "$root" "$dir/main"
  ln -s "$work/shared" "$dir/shared"
  if [ "$i" -gt 1 ] && [ "$fresh_target" -eq 0 ] && [ -d "$work/run1/main/target" ]; then
    cp -a "$work/run1/main/target" "$dir/main/target"
  fi
  start=$(date +%s)
  set +e
  (cd "$dir/main" && CI=true bash .ci/run </dev/null) >"$dir/ci.log" 2>&1
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  # CI's disk is not ours to size: what a clean run leaves is a figure worth watching.
  size=$(du -sh "$dir/main" 2>/dev/null | cut -f1)
  times+=("run $i: ${took} s, exit $rc, clone with build output ${size}")
  echo "ci-under-load: run $i of $runs: exit $rc after ${took} s (log $dir/ci.log)" >&2
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$dir/ci.log" >&2
    printf '%s\n' "${times[@]}"
    exit "$rc"
  fi
  # Keep run 1 (its target/ seeds the next runs); later ones only take disk.
  [ "$i" -gt 1 ] && rm -rf "$dir/main/target"
done
printf '%s\n' "${times[@]}"
echo "ci-under-load: $runs of $runs passed under load"
