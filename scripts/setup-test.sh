#!/usr/bin/env bash
# Installs what the tests (and benchmarks) need on top of scripts/setup.sh: the wasm32-unknown-unknown
# target and wasm-bindgen-test-runner (hash vectors under Node), Debian's prometheus (started by the
# tests themselves, never as a service), wrk (benchmarks), kubectl (renders istio/), chromium (the
# status page's browser test), cargo-fuzz, and playwright-core from npm. Idempotent.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash scripts/setup.sh

say() { printf '[setup-test] %s\n' "$*" >&2; }

# wasm32-unknown-unknown: the filter's pure code under wasm-bindgen-test in Node.
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "adding rust target wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# Debian packages: Prometheus (started by tests themselves, never as a service) and wrk (benchmark).
need_apt=()
command -v prometheus >/dev/null 2>&1 || need_apt+=(prometheus)
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# kubectl (Debian's kubernetes-client; its built-in kustomize renders istio/ in the tests). Any
# kubectl already on the PATH is kept.
command -v kubectl >/dev/null 2>&1 || need_apt+=(kubernetes-client)
# Chromium: the status page's browser test (tests/browser) drives Debian's build headless.
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # --no-install-recommends keeps exporters and the web UI out; policy-rc.d stops any service start.
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# wasm-bindgen-test-runner, at exactly the wasm-bindgen version the lock file pins.
if [ -f Cargo.lock ]; then
  wbg=$(awk '/^name = "wasm-bindgen"$/ {getline; gsub(/version = |"/, ""); print; exit}' Cargo.lock)
  if [ -n "$wbg" ]; then
    have=$(wasm-bindgen-test-runner --version 2>/dev/null | awk '{print $2}' || true)
    if [ "$have" != "$wbg" ]; then
      say "installing wasm-bindgen-cli $wbg"
      cargo install --quiet wasm-bindgen-cli --version "$wbg"
    fi
  fi
fi
# cargo-fuzz, for the filter's fuzz targets (built on stable with RUSTC_BOOTSTRAP=1).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install --quiet cargo-fuzz
fi
# The browser test's one npm package (playwright-core: the driver only, no browser download).
# The lock file copied in after an install marks node_modules as matching it.
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock.json; then
  say "npm ci in tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.installed-lock.json)
fi
say "test tools ok"
