//! End-to-end harness: a real Envoy (from the project's `.venv`, installed by `scripts/setup.sh`)
//! running the built `.wasm`, in front of small upstreams this process serves on 127.0.0.1.
//!
//! Every process a test starts is owned by a guard that stops it on drop, so a failing test leaves
//! nothing running.
#![deny(rust_2018_idioms)]

pub mod envoy;
pub mod http;
pub mod local;
pub mod prometheus;
pub mod upstream;

use std::path::PathBuf;

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The filter built for wasm32-wasip1 (`MLCANARY_WASM` overrides). `scripts/test.sh` builds it first.
pub fn wasm_path() -> PathBuf {
    let p = std::env::var_os("MLCANARY_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            workspace_root().join("target/wasm32-wasip1/release/mlcanary_filter.wasm")
        });
    assert!(
        p.exists(),
        "{} is missing: build it with `cargo build -p mlcanary-filter --target wasm32-wasip1 \
         --release` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The Envoy binary (`MLCANARY_ENVOY` overrides); `scripts/setup.sh` installs it into `.venv`.
pub fn envoy_path() -> PathBuf {
    let p = std::env::var_os("MLCANARY_ENVOY")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/envoy"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh",
        p.display()
    );
    p
}

/// A port that was free a moment ago on 127.0.0.1 (for processes whose port must be known before
/// they start, e.g. an Envoy admin that Prometheus scrapes).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}
