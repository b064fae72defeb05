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
pub mod rollback;
pub mod upstream;

use std::path::PathBuf;

/// How long tests wait. Every wait is for a condition (a phase reached, a process up, a counter
/// moved) and returns as soon as it holds; these bounds exist only so that a real hang fails
/// instead of running forever. They are far above what an idle machine needs because a loaded
/// 2-core CI machine can be many times slower, and no test may fail merely for being slow. How fast
/// things happen is printed by the benchmarks (`scripts/bench-rollback.sh`), never asserted.
pub mod patience {
    use std::time::Duration;

    /// One phase of a rollout: a step reached, a promotion, a rollback, a restart after an outage.
    pub const ROLLOUT: Duration = Duration::from_secs(300);
    /// A process up and answering: Envoy ready, `status.json` with the listener, Prometheus
    /// ready, a process' exit.
    pub const START: Duration = Duration::from_secs(120);
    /// What follows at once on an idle machine: stats flushed, a config reloaded or refused, a new
    /// split applied by Envoy, one more tick written, one HTTP answer.
    pub const SETTLE: Duration = Duration::from_secs(60);
    /// Background traffic's own time bound: longer than all the waits of any one test, so the
    /// traffic never ends before the condition a test waits for (it is stopped on drop).
    pub const TRAFFIC: Duration = Duration::from_secs(30 * 60);
    /// Background traffic's request bound (far above what [`TRAFFIC`] allows on a fast machine).
    pub const TRAFFIC_REQUESTS: u64 = 20_000_000;
}

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
