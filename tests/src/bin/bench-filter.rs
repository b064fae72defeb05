//! Benchmark (not a test): the same Envoy with the mlcanary filter vs routing on a fixed header
//! without it. Prints qps, p50 / p99 latency and the proxy's CPU per request for both, and ratios.
//!
//! One proxy worker (`--concurrency 1`), an upstream Envoy answering directly, and `wrk` as the
//! load, all on 127.0.0.1. Run it on a quiet machine: anything else on the cores skews the figures. Usage: `bench-filter [SECONDS] [CONNECTIONS] [ROUNDS]` (defaults 10, 16, 3).

use std::process::Command;

use mlcanary_e2e::envoy::{Envoy, EnvoySetup};
use serde_json::json;

struct Run {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us_per_rq: f64,
    requests: u64,
}

fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

fn clock_ticks_per_s() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok();
    out.and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
        .unwrap_or(100.0)
}

fn ms(v: &str) -> f64 {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => f64::NAN,
    }
}

/// Pin every thread of `pid` to `cpu`: the proxy and the upstream share one core and saturate it,
/// `wrk` has the other, which makes CPU per request repeatable on a small machine.
fn pin(pid: u32, cpu: &str) {
    let _ = Command::new("taskset")
        .args(["-a", "-p", "-c", cpu, &pid.to_string()])
        .output();
}

fn wrk(port: u16, script: &std::path::Path, seconds: u32, conns: u32) -> (f64, f64, f64) {
    let out = Command::new("taskset")
        .args([
            "-c",
            LOAD_CPU,
            "wrk",
            "-t1",
            &format!("-c{conns}"),
            &format!("-d{seconds}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://127.0.0.1:{port}/v1/models/fraud:predict"))
        .output()
        .expect("run wrk (scripts/setup.sh installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let find = |prefix: &str| {
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(prefix)
                    .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
            })
            .unwrap_or_default()
    };
    let qps = find("Requests/sec:").parse().unwrap_or(0.0);
    (qps, ms(&find("50%")), ms(&find("99%")))
}

const PROXY_CPU: &str = "0";
const LOAD_CPU: &str = "1";

fn measure(mut proxy: Envoy, script: &std::path::Path, seconds: u32, conns: u32) -> Run {
    let pid = proxy.pid().expect("proxy running");
    pin(pid, PROXY_CPU);
    let _ = wrk(proxy.port, script, 2, conns); // warm-up: JIT, connections, stats
    let rq = |e: &Envoy| e.stat("http.main.downstream_rq_total").unwrap_or(0);
    let (t0, r0) = (cpu_ticks(pid), rq(&proxy));
    let (qps, p50_ms, p99_ms) = wrk(proxy.port, script, seconds, conns);
    let (t1, r1) = (cpu_ticks(pid), rq(&proxy));
    let requests = r1.saturating_sub(r0).max(1);
    let cpu_s = (t1 - t0) as f64 / clock_ticks_per_s();
    Run {
        qps,
        p50_ms,
        p99_ms,
        cpu_us_per_rq: cpu_s * 1e6 / requests as f64,
        requests,
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let conns: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    // Both runs send the same headers: a user id and a tag; only the filter run has a filter to
    // replace the tag with its own decision.
    let script = dir.path().join("req.lua");
    std::fs::write(
        &script,
        r#"math.randomseed(42)
request = function()
  return wrk.format("GET", nil, {["Host"] = "fraud-model", ["x-user-id"] = "user-" .. math.random(1, 1000000),
                                 ["x-mlcanary-variant"] = "stable"})
end
"#,
    )
    .expect("write wrk script");

    let mut upstream = Envoy::start(EnvoySetup {
        variants: vec![],
        filter_config: None,
        concurrency: 1,
        direct_response: Some(r#"{"predictions": [[0.12]]}"#.into()),
    });
    pin(upstream.pid().expect("upstream running"), PROXY_CPU);
    let variants = vec![
        ("stable".to_string(), upstream.port),
        ("canary".to_string(), upstream.port),
    ];
    let filter_config = json!({"policies": [{
        "name": "fraud-model", "hosts": ["fraud-model"],
        "variants": [{"name": "stable", "weight_bp": 9500}, {"name": "canary", "weight_bp": 500}],
        "sticky": {"header": "x-user-id", "cookie": "mlcanary-uid", "salt": "fraud-model"},
        "rules": [{"match": {"header": "x-user-segment", "exact": "beta"}, "variant": "canary"}]
    }]});
    let setup = |fc| EnvoySetup {
        variants: variants.clone(),
        filter_config: fc,
        concurrency: 1,
        direct_response: None,
    };

    println!(
        "mlcanary filter benchmark: {rounds} rounds of {seconds} s per mode, {conns} connections, \
         the proxy (1 worker) and the upstream Envoy pinned to CPU {PROXY_CPU}, wrk to CPU {LOAD_CPU}"
    );
    let (mut base, mut with) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        base.push(measure(Envoy::start(setup(None)), &script, seconds, conns));
        with.push(measure(
            Envoy::start(setup(Some(filter_config.clone()))),
            &script,
            seconds,
            conns,
        ));
    }
    let (base, with) = (median(base), median(with));

    println!(
        "\n{:<28} {:>10} {:>9} {:>9} {:>16} {:>10}",
        "(median of rounds)", "qps", "p50 ms", "p99 ms", "CPU µs/request", "requests"
    );
    for (name, r) in [
        ("baseline (fixed header)", &base),
        ("with mlcanary filter", &with),
    ] {
        println!(
            "{name:<28} {:>10.0} {:>9.3} {:>9.3} {:>16.2} {:>10}",
            r.qps, r.p50_ms, r.p99_ms, r.cpu_us_per_rq, r.requests
        );
    }
    println!(
        "\nqps ratio {:.3}   p50 ratio {:.3}   p99 ratio {:.3}   added CPU per request {:.2} µs",
        with.qps / base.qps,
        with.p50_ms / base.p50_ms,
        with.p99_ms / base.p99_ms,
        with.cpu_us_per_rq - base.cpu_us_per_rq
    );
}

/// Field-wise median over rounds (each figure on its own, as benchmark tables usually do).
fn median(runs: Vec<Run>) -> Run {
    let med = |f: &dyn Fn(&Run) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Run {
        qps: med(&|r| r.qps),
        p50_ms: med(&|r| r.p50_ms),
        p99_ms: med(&|r| r.p99_ms),
        cpu_us_per_rq: med(&|r| r.cpu_us_per_rq),
        requests: med(&|r| r.requests as f64) as u64,
    }
}
