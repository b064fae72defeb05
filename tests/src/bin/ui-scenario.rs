//! A live rollout to look at: two model upstreams, `mlcanary local` with its own Envoy and the
//! status page on a free 127.0.0.1 port, and background traffic. The browser test
//! (`tests/browser/`) drives it over stdin/stdout; `--demo` runs it by itself for people.
//!
//! Protocol (one JSON object per stdout line): first `{"url": "http://127.0.0.1:P/", "workdir":
//! ...}` once the page is up; then, for each stdin line, `traffic` (start the background traffic:
//! until then the rollout holds at its first step for want of data, so a slow browser start misses
//! nothing) → `{"ok": "traffic"}`, `fail` (the canary answers 30 % of requests with 500 from now on)
//! → `{"ok": "fail"}`, `status` → the `status.json` contents, `quit` (or end of input) → stop
//! everything and exit. Bounded: it stops by itself after `--max-seconds` (default 180).
//!
//! The policy waits at its last step for a `promote` (`manualGate`), so the rollout is still live
//! whenever the driver gets to `fail`, however slow the machine.
//!
//! `--demo`: print the page's address, start the traffic, let the rollout advance for
//! `--fail-after` seconds (default 12), break the canary so it is rolled back, keep the page up
//! until `--max-seconds`, then stop.

use std::io::{BufRead, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlcanary_e2e::local::{Mlcanary, Traffic};
use mlcanary_e2e::patience;
use mlcanary_e2e::upstream::Upstream;

const HOST: &str = "fraud-model";

/// One-second steps of 5 %, judged on errors, p99 latency and the drift of the model's scores; a
/// manual gate at 95 %. The latency limit (1 s) and the deadline (30 min) are far beyond what a
/// loaded machine reaches, so only the broken canary's errors can end the rollout.
const POLICY: &str = "apiVersion: mlcanary.io/v1alpha1
kind: CanaryPolicy
metadata: {name: fraud-model}
spec:
  target: {virtualService: fraud-model, hosts: [fraud-model], wasmPlugin: mlcanary}
  routing:
    sticky: {header: x-user-id}
  predictions: {format: tfserving}
  schedule: {interval: 1s, stepWeight: 5, maxWeight: 95, manualGate: true}
  analysis:
    failureThreshold: 2
    minRequests: 10
    checks:
    - name: errors
      errorRate: {max: 0.01}
    - name: latency-p99
      latency: {quantile: 0.99, maxMs: 1000}
    - name: score-drift
      predictionDrift: {maxPsi: 0.2, minSamples: 10}
  progressDeadline: 30m
";

struct Args {
    demo: bool,
    fail_after: u64,
    max_seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        demo: false,
        fail_after: 12,
        max_seconds: 180,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number of seconds"))
        };
        match arg.as_str() {
            "--demo" => a.demo = true,
            "--fail-after" => a.fail_after = num("--fail-after")?,
            "--max-seconds" => a.max_seconds = num("--max-seconds")?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn say(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!(
                "ui-scenario: {e}\nusage: ui-scenario [--demo] [--fail-after S] [--max-seconds S]"
            );
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.max_seconds);
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    // Both model versions score alike, so the drift check passes until the canary breaks.
    stable.set_body(Some(r#"{"predictions": [[0.72, 0.28]]}"#));
    canary.set_body(Some(r#"{"predictions": [[0.71, 0.29]]}"#));
    let mut m = Mlcanary::local(
        POLICY,
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch", "--http", "127.0.0.1:0"],
    );
    let port = m.listener_port(patience::START);
    let url = m
        .wait_status(patience::START, |s| s["http"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no status page address in status.json:\n{}", m.output()));
    let start_traffic = || {
        let left = deadline.saturating_duration_since(Instant::now());
        Traffic::start(port, HOST, 2, patience::TRAFFIC_REQUESTS, left)
    };

    if args.demo {
        let mut traffic = start_traffic();
        println!("status page: {url}");
        println!(
            "a canary rollout in 5 % steps every second; the canary breaks after {} s and is rolled \
             back; the page stays up for {} s in all (Ctrl-C to stop earlier)",
            args.fail_after, args.max_seconds
        );
        std::thread::sleep(Duration::from_secs(args.fail_after));
        canary.set_fail_per_mille(300);
        println!("the canary now fails 30 % of requests: watch the rollback on the page");
        let phase = m.wait_status(patience::ROLLOUT, |s| {
            let p = s["policies"]["default/fraud-model"]["phase"].as_str()?;
            (p == "RolledBack" || p == "Promoted").then(|| p.to_string())
        });
        println!("phase: {}", phase.as_deref().unwrap_or("still running"));
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
        traffic.stop();
        return;
    }

    say(serde_json::json!({"url": url, "workdir": m.workdir.display().to_string()}));
    let mut traffic: Option<Traffic> = None;
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            eprintln!("ui-scenario: --max-seconds reached, stopping");
            break;
        }
        match rx.recv_timeout(left.min(Duration::from_secs(1))) {
            Ok(cmd) => match cmd.trim() {
                "traffic" => {
                    traffic.get_or_insert_with(start_traffic);
                    say(serde_json::json!({"ok": "traffic"}));
                }
                "fail" => {
                    canary.set_fail_per_mille(300);
                    say(serde_json::json!({"ok": "fail"}));
                }
                "status" => say(m.status().unwrap_or_default()),
                "quit" => break,
                other => say(serde_json::json!({"error": format!("unknown command {other:?}")})),
            },
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // End of input: whoever drove us has gone.
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(mut t) = traffic {
        t.stop();
    }
    // The guards stop mlcanary (and its Envoy) and the upstreams on drop.
}
