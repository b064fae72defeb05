//! Soak: a steady load through a real Envoy running the built filter while its config changes every
//! 2.5 s (the canary weight cycling 0 → 100 % and back, a routing rule switched on and off), as the
//! controller would deliver it (ECDS file, write-temp-then-rename). Loopback only; bounded in time
//! (`soak [SECONDS]`, default 120) and in requests (4 threads, at most `MAX_REQUESTS`).
//!
//! Every response status is recorded; the upstreams never fail, so any 5xx is the filter's (or the
//! reload's) fault. Envoy's memory is read at start, after warm-up, in the middle and at the end:
//! VmRSS from `/proc/<pid>/status` and `server.memory_allocated` (the heap in use) from the admin.
//!
//! Exit 1 if any request got a 5xx or no answer, if a config reload was refused or not applied, or
//! if memory grew after warm-up by more than the bounds below; 0 otherwise. `scripts/soak.sh` runs it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mlcanary_e2e::envoy::{Envoy, EnvoySetup};
use mlcanary_e2e::upstream::Upstream;
use serde_json::{json, Value};

const THREADS: usize = 4;
const MAX_REQUESTS: u64 = 5_000_000;
const RELOAD_EVERY: Duration = Duration::from_millis(2500);
/// After warm-up, the heap in use (`server.memory_allocated`) may grow by at most this much...
const HEAP_BOUND_BYTES: u64 = 8 << 20;
/// ... and the resident set by at most this much (it also holds allocator free lists and the V8
/// code of each filter config generation, which are returned lazily).
const RSS_BOUND_KB: u64 = 48 << 10;
/// Weights the reloader cycles through, in basis points.
const WEIGHTS: [u32; 10] = [0, 500, 1000, 2500, 5000, 7500, 10_000, 5000, 2000, 100];

fn config(canary_bp: u32, with_rule: bool) -> Value {
    let rules = if with_rule {
        json!([{"match": {"header": "x-user-segment", "exact": "beta"}, "variant": "canary"}])
    } else {
        json!([])
    };
    json!({
        "variant_header": "x-mlcanary-variant",
        "policies": [{
            "name": "fraud-model",
            "hosts": ["fraud-model"],
            "variants": [{"name": "stable", "weight_bp": 10_000 - canary_bp},
                         {"name": "canary", "weight_bp": canary_bp}],
            "sticky": {"header": "x-user-id"},
            "rules": rules,
            "segment": {"header": "x-customer-age-band", "values": ["18-30", "31-60", "60+"]}
        }]
    })
}

/// A keep-alive HTTP/1.1 connection; reconnects after the server closes it.
struct Conn {
    port: u16,
    reader: Option<BufReader<TcpStream>>,
}

impl Conn {
    fn request(&mut self, req: &[u8]) -> std::io::Result<u16> {
        if self.reader.is_none() {
            let s = TcpStream::connect(("127.0.0.1", self.port))?;
            s.set_read_timeout(Some(Duration::from_secs(10)))?;
            s.set_nodelay(true)?;
            self.reader = Some(BufReader::new(s));
        }
        let r = self.exchange(req);
        if !matches!(r, Ok((_, true))) {
            self.reader = None;
        }
        r.map(|(status, _)| status)
    }

    /// Send, read one response; `(status, keep the connection)`.
    fn exchange(&mut self, req: &[u8]) -> std::io::Result<(u16, bool)> {
        let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
        let r = self.reader.as_mut().ok_or_else(|| bad("not connected"))?;
        r.get_mut().write_all(req)?;
        let mut line = String::new();
        r.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad("bad status line"))?;
        let (mut length, mut chunked, mut keep) = (0usize, false, true);
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(bad("eof in headers"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_ascii_lowercase());
            match k.as_str() {
                "content-length" => length = v.parse().map_err(|_| bad("length"))?,
                "transfer-encoding" => chunked = v.contains("chunked"),
                "connection" => keep = v != "close",
                _ => {}
            }
        }
        if chunked {
            loop {
                line.clear();
                r.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim(), 16).map_err(|_| bad("chunk"))?;
                let mut chunk = vec![0; size + 2];
                r.read_exact(&mut chunk)?;
                if size == 0 {
                    break;
                }
            }
        } else {
            let mut body = vec![0; length];
            r.read_exact(&mut body)?;
        }
        Ok((status, keep))
    }
}

/// VmRSS of `pid` in kB.
fn rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[derive(Debug, Clone, Copy)]
struct Memory {
    at_s: f64,
    rss_kb: u64,
    heap: u64,
}

fn sample(envoy: &mut Envoy, started: Instant) -> Memory {
    let pid = envoy.pid().expect("envoy running");
    Memory {
        at_s: started.elapsed().as_secs_f64(),
        rss_kb: rss_kb(pid).unwrap_or(0),
        heap: envoy.stat("server.memory_allocated").unwrap_or(0),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn main() -> ExitCode {
    let seconds: u64 = std::env::args()
        .nth(1)
        .map(|s| s.parse().expect("SECONDS: a whole number"))
        .unwrap_or(120);
    let duration = Duration::from_secs(seconds.max(10));
    let warmup = (duration / 10).max(Duration::from_secs(5));
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let mut envoy = Envoy::start(EnvoySetup::new(
        &[("stable", stable.port), ("canary", canary.port)],
        config(0, false),
    ));
    let reload_stat = "extension_config_discovery.http_filter.mlcanary.config_reload";
    let rejected_stat = "extension_config_discovery.http_filter.mlcanary.update_rejected";
    let reloads_before = envoy.stat(reload_stat).unwrap_or(0);
    let started = Instant::now();
    let mut mem = vec![("start", sample(&mut envoy, started))];

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let statuses: Arc<Mutex<BTreeMap<u16, u64>>> = Arc::default();
    let port = envoy.port;
    let load: Vec<_> = (0..THREADS)
        .map(|t| {
            let (stop, sent, statuses) = (stop.clone(), sent.clone(), statuses.clone());
            std::thread::spawn(move || {
                let mut conn = Conn { port, reader: None };
                let mut mine: BTreeMap<u16, u64> = BTreeMap::new();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed)
                    && sent.fetch_add(1, Ordering::Relaxed) < MAX_REQUESTS
                {
                    i += 1;
                    // 5000 users per thread: sticky keys repeat, as real users do.
                    let user = format!("u{t}-{}", i % 5000);
                    let band = ["18-30", "31-60", "60+", "unknown"][(i % 4) as usize];
                    let beta = if i % 10 == 0 {
                        "x-user-segment: beta\r\n"
                    } else {
                        ""
                    };
                    let req = format!(
                        "GET /v1/models/fraud:predict HTTP/1.1\r\nhost: fraud-model\r\n\
                         x-user-id: {user}\r\nx-customer-age-band: {band}\r\n{beta}\
                         x-mlcanary-variant: canary\r\n\r\n"
                    );
                    // 0: no answer (connection refused / reset / timeout).
                    let status = conn.request(req.as_bytes()).unwrap_or(0);
                    *mine.entry(status).or_default() += 1;
                    if i % 4 == 0 {
                        // A steady load, not a benchmark: leave CPU for Envoy on small machines.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let mut all = statuses.lock().expect("statuses");
                for (s, n) in mine {
                    *all.entry(s).or_default() += n;
                }
            })
        })
        .collect();

    // The reloader (this thread): a new config every RELOAD_EVERY; memory samples on the way.
    let mut writes = 0u64;
    let mut next_reload = Instant::now() + RELOAD_EVERY;
    let (mut warm_done, mut middle_done) = (false, false);
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100));
        if Instant::now() >= next_reload {
            // Never the config in force (Envoy skips an identical one): the start is (0, no
            // rule), the first write (500, rule), and the rule flips on every write.
            let bp = WEIGHTS[(writes as usize + 1) % WEIGHTS.len()];
            envoy.set_filter_config(&config(bp, writes % 2 == 0).to_string());
            writes += 1;
            next_reload += RELOAD_EVERY;
        }
        if !warm_done && started.elapsed() >= warmup {
            mem.push(("warm", sample(&mut envoy, started)));
            warm_done = true;
        }
        if !middle_done && started.elapsed() >= duration / 2 {
            mem.push(("middle", sample(&mut envoy, started)));
            middle_done = true;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        let _ = t.join();
    }
    // Let the last reload land before counting.
    std::thread::sleep(Duration::from_millis(500));
    mem.push(("end", sample(&mut envoy, started)));
    let applied = envoy.stat(reload_stat).unwrap_or(0) - reloads_before;
    let rejected = envoy.stat(rejected_stat).unwrap_or(0);
    let statuses = statuses.lock().expect("statuses").clone();
    let total: u64 = statuses.values().sum();
    let failed: u64 = statuses
        .iter()
        .filter(|(s, _)| **s == 0 || **s >= 500)
        .map(|(_, n)| n)
        .sum();
    let served = stable.served.load(Ordering::Relaxed) + canary.served.load(Ordering::Relaxed);

    println!(
        "soak: {seconds} s, {THREADS} keep-alive client threads, config every {RELOAD_EVERY:?}"
    );
    println!("{:<28} {:>14}", "requests", total);
    println!(
        "{:<28} {:>14.0}",
        "requests/s",
        total as f64 / duration.as_secs_f64()
    );
    for (s, n) in &statuses {
        let name = if *s == 0 {
            "no answer".to_owned()
        } else {
            format!("status {s}")
        };
        println!("{name:<28} {n:>14}");
    }
    println!("{:<28} {:>14}", "5xx or no answer", failed);
    println!("{:<28} {:>14}", "served by upstreams", served);
    println!("{:<28} {:>14}", "config writes", writes);
    println!("{:<28} {:>14}", "config reloads applied", applied);
    println!("{:<28} {:>14}", "config updates rejected", rejected);
    println!(
        "{:<8} {:>8} {:>12} {:>14}",
        "memory", "at", "VmRSS", "heap in use"
    );
    for (name, m) in &mem {
        println!(
            "{name:<8} {:>7.1}s {:>12} {:>14}",
            m.at_s,
            mib(m.rss_kb * 1024),
            mib(m.heap)
        );
    }
    let warm = mem.iter().find(|(n, _)| *n == "warm").map(|(_, m)| *m);
    let end = mem[mem.len() - 1].1;
    let mut ok = true;
    if failed > 0 {
        println!("FAIL: {failed} requests got a 5xx or no answer");
        ok = false;
    }
    if applied < writes || rejected > 0 {
        println!("FAIL: {writes} config writes, {applied} applied, {rejected} rejected");
        ok = false;
    }
    if let Some(w) = warm {
        let heap_growth = end.heap.saturating_sub(w.heap);
        let rss_growth = end.rss_kb.saturating_sub(w.rss_kb);
        println!(
            "growth after warm-up: heap {} (bound {}), VmRSS {} (bound {})",
            mib(heap_growth),
            mib(HEAP_BOUND_BYTES),
            mib(rss_growth * 1024),
            mib(RSS_BOUND_KB * 1024)
        );
        if heap_growth > HEAP_BOUND_BYTES || rss_growth > RSS_BOUND_KB {
            println!("FAIL: memory grew past the bound");
            ok = false;
        }
    }
    println!("{}", if ok { "PASS" } else { "FAIL" });
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
