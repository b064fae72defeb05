//! Benchmark (not a test): what the mlcanary filter costs Envoy, against no filter and against a
//! hand-written Envoy Lua filter doing the same sticky routing, for a canaried request and for a
//! request to a host no policy names (the filter on every route, as a mesh-wide WasmPlugin attaches
//! it, and enabled per host, as `mlcanary local` and the Istio EnvoyFilter attachment do).
//!
//! One proxy worker (`--concurrency 1`), an upstream Envoy answering directly, and `wrk` as the
//! load, all on 127.0.0.1. Modes are interleaved round by round and each is compared with the first
//! mode of the same round (this machine's speed drifts); the table gives medians of those paired
//! figures with their range. Usage: `bench-filter [SECONDS] [CONNECTIONS] [ROUNDS]` (defaults 10,
//! 16, 3); `BENCH_FILTER_MODES=0,4` picks rows; `MLCANARY_WASM` picks the module.

use std::process::Command;

use mlcanary_e2e::envoy::{Envoy, EnvoySetup};
use serde_json::json;

struct Run {
    qps: f64,
    p99_ms: f64,
    cpu_us_per_rq: f64,
    /// Share of upstream requests that went to the `canary` cluster: shows each router routed.
    canary_share: f64,
    /// Requests the filter counted (`mlcanary_requests_total` over every series): shows which
    /// mode's requests entered the filter.
    counted: u64,
}

fn counted(proxy: &Envoy) -> u64 {
    let page = proxy.prometheus();
    page.lines()
        .filter(|l| l.starts_with(mlcanary_filter::stats::REQUESTS))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum::<f64>() as u64
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

fn wrk(port: u16, script: &std::path::Path, seconds: u32, conns: u32) -> (f64, f64) {
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
    (qps, ms(&find("99%")))
}

const PROXY_CPU: &str = "0";
const LOAD_CPU: &str = "1";

fn measure(mut proxy: Envoy, script: &std::path::Path, seconds: u32, conns: u32) -> Run {
    let pid = proxy.pid().expect("proxy running");
    pin(pid, PROXY_CPU);
    let _ = wrk(proxy.port, script, 2, conns); // warm-up: JIT, connections, stats
    let rq = |e: &Envoy| e.stat("http.main.downstream_rq_total").unwrap_or(0);
    let to = |e: &Envoy, c: &str| {
        e.stat(&format!("cluster.{c}.upstream_rq_total"))
            .unwrap_or(0)
    };
    let (c0, s0) = (to(&proxy, "canary"), to(&proxy, "stable"));
    let (t0, r0) = (cpu_ticks(pid), rq(&proxy));
    let (qps, p99_ms) = wrk(proxy.port, script, seconds, conns);
    let (t1, r1) = (cpu_ticks(pid), rq(&proxy));
    let canary = to(&proxy, "canary").saturating_sub(c0) as f64;
    let stable = to(&proxy, "stable").saturating_sub(s0) as f64;
    let requests = r1.saturating_sub(r0).max(1);
    let cpu_s = (t1 - t0) as f64 / clock_ticks_per_s();
    Run {
        qps,
        p99_ms,
        cpu_us_per_rq: cpu_s * 1e6 / requests as f64,
        canary_share: canary / (canary + stable).max(1.0),
        counted: counted(&proxy),
    }
}

/// The benchmark's peer: an Envoy Lua filter routing the same host by the same kind of sticky hash
/// (djb2 of the user id → bucket of 10 000 → the variant header), without stats.
const LUA_ROUTER: &str = r#"
function envoy_on_request(h)
  local headers = h:headers()
  if headers:get(":authority") ~= "fraud-model" then return end
  local id = headers:get("x-user-id")
  local variant = "stable"
  if id then
    local x = 5381
    for i = 1, #id do x = (x * 33 + id:byte(i)) % 4294967296 end
    if x % 10000 < 500 then variant = "canary" end
  end
  headers:replace("x-mlcanary-variant", variant)
end
"#;

/// One proxy set-up measured in each round.
struct Mode {
    name: String,
    host: &'static str,
    filter: bool,
    /// The filter enabled only on the policy's virtual host (`mlcanary local`'s attachment).
    per_host: bool,
    lua: bool,
    /// Another filter module than `MLCANARY_WASM` (`BENCH_FILTER_COMPARE`).
    wasm: Option<String>,
    /// The policy reads the reply's scores (`predictions`), and with `feedback` signs a ticket
    /// into it too (the reply is held whole, then goes out chunked).
    scores: Scores,
}

#[derive(Clone, Copy, PartialEq)]
enum Scores {
    Off,
    Read,
    Ticket,
}

fn mode(name: &str, host: &'static str, filter: bool, per_host: bool, lua: bool) -> Mode {
    Mode {
        name: name.to_string(),
        host,
        filter,
        per_host,
        lua,
        wasm: None,
        scores: Scores::Off,
    }
}

/// The rows: `BENCH_FILTER_COMPARE=label=path,…` adds a canaried row per other module (an older
/// build, a variant cut short), measured in the same rounds.
fn modes() -> Vec<Mode> {
    let mut m = vec![
        mode(
            "no filter (fixed header)",
            "fraud-model",
            false,
            false,
            false,
        ),
        mode("Lua sticky router", "fraud-model", false, false, true),
        mode(
            "mlcanary, other host, on every route",
            "other-service",
            true,
            false,
            false,
        ),
        mode(
            "mlcanary, other host, per-host",
            "other-service",
            true,
            true,
            false,
        ),
        mode(
            "mlcanary, canaried request",
            "fraud-model",
            true,
            true,
            false,
        ),
        Mode {
            scores: Scores::Read,
            ..mode(
                "mlcanary, canaried, scores read",
                "fraud-model",
                true,
                true,
                false,
            )
        },
        Mode {
            scores: Scores::Ticket,
            ..mode(
                "mlcanary, canaried, scores + ticket",
                "fraud-model",
                true,
                true,
                false,
            )
        },
    ];
    for pair in std::env::var("BENCH_FILTER_COMPARE")
        .unwrap_or_default()
        .split(',')
    {
        if let Some((label, path)) = pair.split_once('=') {
            let mut c = mode(
                &format!("canaried, {label}"),
                "fraud-model",
                true,
                true,
                false,
            );
            c.wasm = Some(path.to_string());
            m.push(c);
        }
    }
    m
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let conns: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3).max(1);
    let dir = tempfile::tempdir().expect("temp dir");
    // Every mode sends the same headers: a user id and a tag; a router replaces the tag with its
    // own decision, and without one the tag routes.
    let script = |host: &str| {
        let path = dir.path().join(format!("{host}.lua"));
        std::fs::write(
            &path,
            format!(
                r#"math.randomseed(42)
request = function()
  return wrk.format("GET", nil, {{["Host"] = "{host}", ["x-user-id"] = "user-" .. math.random(1, 1000000),
                                 ["x-mlcanary-variant"] = "stable"}})
end
"#
            ),
        )
        .expect("write wrk script");
        path
    };

    let mut upstream = Envoy::start(EnvoySetup {
        variants: vec![],
        filter_config: None,
        concurrency: 1,
        direct_response: Some(r#"{"predictions": [[0.12]]}"#.into()),
        filter_hosts: None,
        lua: None,
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
    let config_for = |scores: Scores| {
        let mut c = filter_config.clone();
        let p = &mut c["policies"][0];
        if scores != Scores::Off {
            p["predictions"] = json!({"format": "tfserving", "class_index": 0});
        }
        if scores == Scores::Ticket {
            p["feedback"] = json!({"keys": ["YmVuY2gta2V5LWJlbmNoLWtleS1iZW5jaC1rZXk="]});
        }
        c
    };
    let setup = |m: &Mode| EnvoySetup {
        variants: variants.clone(),
        filter_config: m.filter.then(|| config_for(m.scores)),
        concurrency: 1,
        direct_response: None,
        filter_hosts: m.per_host.then(|| vec!["fraud-model".to_string()]),
        lua: m.lua.then(|| LUA_ROUTER.to_string()),
    };

    println!(
        "mlcanary filter benchmark: {rounds} rounds of {seconds} s per mode, {conns} connections, \
         the proxy (1 worker) and the upstream Envoy pinned to CPU {PROXY_CPU}, wrk to CPU {LOAD_CPU}"
    );
    // BENCH_FILTER_MODES=0,4 measures only those rows (the first one given is the ratios' base).
    let all = modes();
    let picked: Vec<&Mode> = match std::env::var("BENCH_FILTER_MODES") {
        Ok(list) => list
            .split(',')
            .filter_map(|i| all.get(i.trim().parse::<usize>().ok()?))
            .collect(),
        Err(_) => all.iter().collect(),
    };
    if picked.is_empty() {
        eprintln!("BENCH_FILTER_MODES picked no mode (0..{})", all.len());
        std::process::exit(2);
    }
    let default_wasm = mlcanary_e2e::wasm_path();
    let mut runs: Vec<Vec<Run>> = picked.iter().map(|_| Vec::new()).collect();
    for round in 1..=rounds {
        // Interleaved, so a drift of the machine's speed touches every mode alike.
        for (m, out) in picked.iter().zip(&mut runs) {
            // Envoy::start renders the module path from MLCANARY_WASM.
            std::env::set_var(
                "MLCANARY_WASM",
                m.wasm
                    .as_deref()
                    .map_or(default_wasm.as_os_str(), std::ffi::OsStr::new),
            );
            let r = measure(Envoy::start(setup(m)), &script(m.host), seconds, conns);
            println!(
                "  round {round}: {:<38} {:>8.0} qps {:>8.2} µs/request",
                m.name, r.qps, r.cpu_us_per_rq
            );
            out.push(r);
        }
    }

    // This machine's speed drifts (shared host): each mode is compared with the first mode *of the
    // same round*, and the table gives the median of those paired figures with their range.
    println!(
        "\n{:<38} {:>9} {:>8} {:>8} {:>10} {:>9} {:>17} {:>8} {:>9}",
        "(median of rounds)",
        "qps",
        "ratio",
        "p99 ms",
        "CPU µs/rq",
        "added µs",
        "added, min..max",
        "canary",
        "counted"
    );
    let base = &runs[0];
    for (m, mode_runs) in picked.iter().zip(&runs) {
        let paired = |f: &dyn Fn(&Run, &Run) -> f64| {
            sorted(mode_runs.iter().zip(base).map(|(r, b)| f(r, b)))
        };
        let ratio = paired(&|r, b| r.qps / b.qps);
        let added = paired(&|r, b| r.cpu_us_per_rq - b.cpu_us_per_rq);
        let r = median(mode_runs);
        println!(
            "{:<38} {:>9.0} {:>7.3}× {:>8.3} {:>10.2} {:>+9.2} {:>+8.1}..{:<+7.1} {:>7.1}% {:>9}",
            m.name,
            r.qps,
            mid(&ratio),
            r.p99_ms,
            r.cpu_us_per_rq,
            mid(&added),
            added[0],
            added[added.len() - 1],
            r.canary_share * 100.0,
            r.counted
        );
    }
}

fn sorted(v: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = v.collect();
    v.sort_by(f64::total_cmp);
    v
}

/// The median of sorted, non-empty `v`.
fn mid(v: &[f64]) -> f64 {
    v[v.len() / 2]
}

/// Field-wise median over rounds (each figure on its own, as benchmark tables usually do).
fn median(runs: &[Run]) -> Run {
    let med = |f: &dyn Fn(&Run) -> f64| mid(&sorted(runs.iter().map(f)));
    Run {
        qps: med(&|r| r.qps),
        p99_ms: med(&|r| r.p99_ms),
        cpu_us_per_rq: med(&|r| r.cpu_us_per_rq),
        canary_share: med(&|r| r.canary_share),
        counted: med(&|r| r.counted as f64) as u64,
    }
}
