//! The fraud-detection case study, end to end on this machine: v2 (better, fair) is rolled out
//! against v1, passes its shadow phase and is promoted; then v3 (better overall, but flagging
//! customers aged 60+ about four times as often) is rolled out against v2 and stopped in its
//! shadow phase by the per-segment fairness check, before any customer got one of its answers;
//! then v4 (flagging customers aged 60+ as often as v2, but far fewer of their frauds) is rolled
//! out against v2 and must be rolled back too. Every round sends the labels learnt later back
//! through the filter's feedback path.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mlcanary_fraud_example::demo::{describe, round, DemoConfig};
use mlcanary_fraud_example::model::Version;

#[derive(Parser)]
#[command(
    name = "fraud-demo",
    about = "Run the fraud-detection canary case study locally"
)]
struct Args {
    /// The workspace root (where target/, .venv/ and examples/ are).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))]
    root: PathBuf,
    /// Customers' requests per second.
    #[arg(long, default_value_t = 800.0)]
    rps: f64,
    /// Give up on a round after this many seconds.
    #[arg(long, default_value_t = 480)]
    round_timeout: u64,
    /// Print only the summary, not mlcanary's progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() {
    let a = Args::parse();
    let root = a.root.canonicalize().unwrap_or(a.root);
    let cfg = DemoConfig {
        mlcanary: root.join("target/debug/mlcanary"),
        envoy: root.join(".venv/bin/envoy"),
        wasm: root.join("target/wasm32-wasip1/release/mlcanary_filter.wasm"),
        policy: root.join("examples/fraud-detection/policy.yaml"),
        workdir: root.join(".work/fraud-demo"),
        rps: a.rps,
        round_timeout: Duration::from_secs(a.round_timeout),
        echo: !a.quiet,
    };
    let mut ok = true;
    let rounds = [
        ("round1-v2", Version::V1, Version::V2, "Promoted"),
        ("round2-v3", Version::V2, Version::V3, "RolledBack"),
        ("round3-v4", Version::V2, Version::V4, "RolledBack"),
    ];
    let mut summary = Vec::new();
    for (name, stable, canary, want) in rounds {
        println!(
            "\n== {name}: canary v{} against stable v{} ({} rps of customers' transactions)",
            canary.number(),
            stable.number(),
            cfg.rps
        );
        println!(
            "   status: {}/status.json",
            cfg.workdir.join(name).display()
        );
        match round(&cfg, name, stable, canary) {
            Ok(r) => {
                ok &= r.phase() == want;
                summary.push(describe(&r));
            }
            Err(e) => {
                eprintln!("fraud-demo: {e}");
                std::process::exit(2);
            }
        }
    }
    println!("\n== summary");
    for s in &summary {
        print!("{s}");
    }
    if !ok {
        eprintln!(
            "fraud-demo: the rollouts did not end as the case study expects \
             (v2 promoted, v3 and v4 rolled back)"
        );
        std::process::exit(1);
    }
}
