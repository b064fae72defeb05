//! Benchmark (not a test): how long `mlcanary local` takes from a canary's breach to its rollback,
//! judging Envoy's stats and judging a real Prometheus — the scenario `controller_e2e` checks the
//! outcome of (`mlcanary_e2e::rollback`). Prints every run, the median and the reference
//! (`failureThreshold` × interval + 2 s), and how many judged windows had no canary requests while
//! the canary had weight. It asserts no time: it exits 1 only if a run did not roll back at all.
//!
//! Usage: `bench-rollback [RUNS]` (default 3 per source, at most 10). Run it on a quiet machine:
//! anything else on the cores stretches the figures.

use std::time::Duration;

use mlcanary_e2e::local::{lost_canary_windows, progress_lines};
use mlcanary_e2e::rollback::{Rig, Source, FAILURE_THRESHOLD, POLICY};

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3)
        .clamp(1, 10);
    println!(
        "breach-to-rollback benchmark: {runs} runs per metrics source; the canary starts failing 20 % \
         of its requests once an analysis has passed on real data"
    );
    let mut failed = 0;
    let mut summary = Vec::new();
    for source in [Source::Envoy, Source::Prometheus] {
        let reference = source.reference();
        println!(
            "\n{} (interval {} s; reference {:.0} s = failureThreshold {FAILURE_THRESHOLD} × \
             interval + 2 s):",
            source.name(),
            source.interval().as_secs(),
            reference.as_secs_f64()
        );
        let mut times = Vec::new();
        for run in 1..=runs {
            let mut rig = Rig::start(source);
            match rig.breach() {
                Ok(b) => {
                    rig.traffic.stop();
                    let (checked, lost) =
                        lost_canary_windows(&progress_lines(&rig.m.output(), POLICY));
                    println!(
                        "  run {run}: {:6.2} s  (canary at {:>4} bp; {} of {checked} judged windows \
                         without canary requests)",
                        b.took.as_secs_f64(),
                        b.before_bp,
                        lost.len()
                    );
                    for l in &lost {
                        println!("      {l}");
                    }
                    times.push(b.took);
                }
                Err(e) => {
                    failed += 1;
                    println!("  run {run}: NO ROLLBACK");
                    eprintln!("{e}");
                }
            }
        }
        summary.push((source, median(times), reference));
    }
    println!(
        "\n{:<14} {:>12} {:>12}",
        "(median)", "rollback s", "reference s"
    );
    for (source, m, reference) in summary {
        let m = m.map_or_else(|| "-".to_string(), |d| format!("{:.2}", d.as_secs_f64()));
        println!(
            "{:<14} {m:>12} {:>12.0}",
            source.name(),
            reference.as_secs_f64()
        );
    }
    if failed > 0 {
        eprintln!("bench-rollback: {failed} run(s) did not roll back");
        std::process::exit(1);
    }
}
