//! Benchmark (not a test): `mlcanary local` with N CanaryPolicies (4 checks each, 3 segments,
//! predictions read, sticky) in one controller and one Envoy, traffic to a few of them. For each N
//! it prints the controller's CPU per interval, how many of the ticks due were made, its peak RSS,
//! Envoy's RSS and `/stats/prometheus` size, and the series Envoy exports for the models it was
//! called for versus what every model would export.
//!
//! Usage: `bench-scale [N ...] [--seconds S]` (default N = 10 100 1000, S = 30 of measurement after
//! a warm-up of 3 intervals). Run it on a quiet machine with the release build of `mlcanary`
//! (`scripts/bench-scale.sh` builds it): figures of a debug build say little.

use std::time::{Duration, Instant};

use mlcanary_e2e::envoy::wait_for;
use mlcanary_e2e::http;
use mlcanary_e2e::local::{Mlcanary, Traffic};
use mlcanary_e2e::upstream::Upstream;

/// The analysis interval of every policy.
const INTERVAL_S: u64 = 2;
/// Models that get traffic.
const CALLED: usize = 3;
const SEGMENTS: [&str; 4] = ["18-30", "31-60", "60+", "unknown"];

/// N policies like the fraud model's; `minRequests` so high that none advances during the run:
/// every policy is judged every interval for the whole measurement.
fn policies(n: usize) -> String {
    let mut out = String::new();
    for i in 0..n {
        out.push_str(&format!(
            r#"---
apiVersion: mlcanary.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: model-{i}, namespace: ml}}
spec:
  target: {{virtualService: model-{i}, hosts: [model-{i}], wasmPlugin: mlcanary, model: fraud}}
  routing:
    sticky: {{header: x-user-id, salt: model-{i}}}
    segment: {{header: x-customer-age-band, values: ["18-30", "31-60", "60+"]}}
  predictions: {{format: tfserving, classIndex: 1, positiveThreshold: 0.5}}
  schedule: {{interval: {INTERVAL_S}s, steps: [5, 10, 20, 50]}}
  analysis:
    minRequests: 100000000
    checks:
      - name: errors
        errorRate: {{max: 0.02}}
      - name: latency-p99
        latency: {{quantile: 0.99, maxMs: 50}}
      - name: flag-rate
        positiveRate: {{maxRelativeShift: 0.3}}
      - name: fairness
        segmentDisparity: {{minRatio: 0.8, maxRatio: 1.25, minSamplesPerSegment: 50}}
  progressDeadline: 10h
"#
        ));
    }
    out
}

/// (utime + stime) of `pid` in seconds.
fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at state, field 3.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `/proc/PID/status` field in MB (`VmRSS`, `VmHWM`).
fn mem_mb(pid: u32, field: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Progress lines of the benchmark's policies so far.
fn ticks(m: &Mlcanary) -> usize {
    m.output()
        .lines()
        .filter(|l| {
            let mut w = l.split_whitespace().skip(1);
            w.next().is_some_and(|p| p.starts_with("model-"))
                && w.nth(1).is_some_and(|c| c.starts_with("canary="))
        })
        .count()
}

struct Figures {
    n: usize,
    cpu_per_interval_s: f64,
    ticks_made: usize,
    ticks_due: usize,
    peak_rss_mb: f64,
    envoy_rss_mb: f64,
    stats_kb: f64,
    scraped_kb: f64,
    series_called: usize,
    series_all_models: usize,
    /// (ms, kB) of `/api/policies` and of one policy's detail.
    list: (f64, f64),
    detail: (f64, f64),
}

fn run(n: usize, seconds: u64) -> Result<Figures, String> {
    let reply = r#"{"predictions": [[0.9, 0.1]]}"#;
    let stable = Upstream::start("stable");
    stable.set_body(Some(reply));
    let canary = Upstream::start("canary");
    canary.set_body(Some(reply));
    let mut m = Mlcanary::local(
        &policies(n),
        &[("stable", stable.port), ("canary", canary.port)],
        &[],
    );
    let port = m.listener_port(Duration::from_secs(300));
    let status = m.status().ok_or("no status.json")?;
    let envoy_pid = status["envoyPid"].as_u64().ok_or("no envoyPid")? as u32;
    let admin = status["admin"].as_str().ok_or("no admin")?.to_owned();
    let admin_port: u16 = admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or("bad admin address")?;
    let _traffic: Vec<Traffic> = (0..CALLED.min(n))
        .map(|i| {
            Traffic::start(
                port,
                &format!("model-{i}"),
                1,
                200_000,
                Duration::from_secs(600),
            )
        })
        .collect();
    // Warm-up: every policy's first read (which only sets its mark) and two judged intervals.
    std::thread::sleep(Duration::from_secs(3 * INTERVAL_S));
    let pid = m.pid();
    let cpu = |pid| cpu_s(pid).ok_or("no /proc/PID/stat");
    let (t0, cpu0, ticks0) = (Instant::now(), cpu(pid)?, ticks(&m));
    std::thread::sleep(Duration::from_secs(seconds));
    let (elapsed, cpu1, ticks1) = (t0.elapsed().as_secs_f64(), cpu(pid)?, ticks(&m));
    let intervals = elapsed / INTERVAL_S as f64;
    let stats = wait_for(Duration::from_secs(60), || {
        http::get(admin_port, "127.0.0.1", "/stats/prometheus", &[]).ok()
    })
    .ok_or("no /stats/prometheus")?
    .body;
    // What the controller asks for (`mlcanary_controller::metrics::envoy::STATS_QUERY`).
    let filtered = http::get(
        admin_port,
        "127.0.0.1",
        "/stats/prometheus?usedonly&filter=mlcanary_%7Cserver.uptime",
        &[],
    )
    .map_err(|e| format!("filtered stats: {e}"))?
    .body;
    let ours: Vec<&str> = stats
        .lines()
        .filter(|l| l.starts_with("mlcanary_") && l.contains("policy=\""))
        .collect();
    // Every tuple exports the same series; a tuple is (policy, variant, segment).
    let tuples: std::collections::BTreeSet<String> = ours
        .iter()
        .map(|l| {
            let labels = &l[l.find('{').unwrap_or(0)..l.find('}').unwrap_or(0)];
            labels
                .split(',')
                .filter(|kv| !kv.starts_with("le="))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let per_tuple = ours.len() as f64 / tuples.len().max(1) as f64;
    // The status page's two reads: the list of every policy, and one opened policy.
    let http_port: u16 = status["http"]
        .as_str()
        .and_then(|u| u.trim_end_matches('/').rsplit(':').next()?.parse().ok())
        .ok_or("no http address")?;
    let timed = |path: &str| {
        let t = Instant::now();
        let r = http::get(http_port, "127.0.0.1", path, &[]).map_err(|e| format!("{path}: {e}"))?;
        Ok::<_, String>((
            t.elapsed().as_secs_f64() * 1000.0,
            r.body.len() as f64 / 1024.0,
        ))
    };
    let list = timed("/api/policies")?;
    let detail = timed("/api/policies/model-0")?;
    let figures = Figures {
        n,
        cpu_per_interval_s: (cpu1 - cpu0) / intervals,
        ticks_made: ticks1 - ticks0,
        ticks_due: (n as f64 * intervals).floor() as usize,
        peak_rss_mb: mem_mb(pid, "VmHWM").ok_or("no VmHWM")?,
        envoy_rss_mb: mem_mb(envoy_pid, "VmRSS").ok_or("no Envoy VmRSS")?,
        stats_kb: stats.len() as f64 / 1024.0,
        scraped_kb: filtered.len() as f64 / 1024.0,
        series_called: ours.len(),
        series_all_models: (per_tuple * (n * 2 * SEGMENTS.len()) as f64).round() as usize,
        list,
        detail,
    };
    m.terminate();
    Ok(figures)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut seconds = 30;
    let mut ns = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--seconds" {
            seconds = it
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(30)
                .clamp(5, 600);
        } else if let Ok(n) = a.parse::<usize>() {
            ns.push(n.clamp(1, 5000));
        }
    }
    if ns.is_empty() {
        ns = vec![10, 100, 1000];
    }
    println!(
        "scale benchmark: N policies (4 checks, 3 segments, predictions, sticky), interval {INTERVAL_S} s, \
         traffic to {CALLED} of them; {seconds} s measured after a {} s warm-up",
        3 * INTERVAL_S
    );
    println!(
        "{:>5} {:>14} {:>12} {:>9} {:>10} {:>9} {:>9} {:>14} {:>18}",
        "N",
        "CPU/interval",
        "ticks",
        "peak RSS",
        "Envoy RSS",
        "stats",
        "scraped",
        "series(called)",
        "series(all models)"
    );
    let mut failed = false;
    for n in ns {
        match run(n, seconds) {
            Ok(f) => {
                println!(
                "{:>5} {:>12.3} s {:>5}/{:<6} {:>6.1} MB {:>7.1} MB {:>6.0} kB {:>6.1} kB {:>14} {:>18}",
                f.n,
                f.cpu_per_interval_s,
                f.ticks_made,
                f.ticks_due,
                f.peak_rss_mb,
                f.envoy_rss_mb,
                f.stats_kb,
                f.scraped_kb,
                f.series_called,
                f.series_all_models
            );
                println!(
                    "{:>5} status page: /api/policies {:.1} ms ({:.0} kB), one policy {:.1} ms ({:.0} kB)",
                    "",
                    f.list.0,
                    f.list.1,
                    f.detail.0,
                    f.detail.1
                );
            }
            Err(e) => {
                println!("{n:>5} run failed: {e}");
                failed = true;
            }
        }
    }
    println!(
        "\ntargets: 100 policies every interval within 1 s CPU and 30 MB RSS; 1000 within 10 s CPU; \
         series proportional to the models called"
    );
    std::process::exit(i32::from(failed));
}
