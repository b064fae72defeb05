//! Outages during a rollout, end to end: the real `mlcanary local` driving its real Envoy (with the
//! built filter) in front of two test upstreams. What each outage must do (README, "Reliability"):
//!
//! - Envoy killed: mlcanary starts it again on the same files (same split, same ports), holds one
//!   interval for want of a baseline, then carries on — no promotion on missing data, no jump;
//! - Envoy admin unreachable (an Envoy the user runs, not up yet): no data, the step holds;
//!   once Envoy answers, the rollout goes on;
//! - Prometheus down: no data, the step holds (no promotion, no rollback before
//!   `progressDeadline`); once it is back, the rollout goes on;
//! - the canary's upstream down: Envoy answers 503 for canary requests, the filter counts them as
//!   canary errors, and the canary is rolled back — the right outcome for a failing variant —
//!   while stable's traffic sees no error.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mlcanary_e2e::envoy::{find_sample, wait_for};
use mlcanary_e2e::local::{
    alive, error_rate_policy, error_rate_policy_gated, kill_pid, wait_all_served_by, Mlcanary,
    Traffic,
};
use mlcanary_e2e::prometheus::Prometheus;
use mlcanary_e2e::upstream::Upstream;
use mlcanary_e2e::{free_port, http, patience};
use serde_json::Value;

const HOST: &str = "fraud-model";
const POLICY: &str = "fraud-model";
const POLICY_KEY: &str = "default/fraud-model";

fn weight(s: &Value) -> Option<u64> {
    s["policies"][POLICY_KEY]["canaryWeightBp"].as_u64()
}

fn phase(s: &Value) -> Option<&str> {
    s["policies"][POLICY_KEY]["phase"].as_str()
}

fn history(s: &Value) -> Vec<Value> {
    s["policies"][POLICY_KEY]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn history_weights(s: &Value) -> Vec<u64> {
    history(s)
        .iter()
        .filter_map(|h| h["toWeightBp"].as_u64())
        .collect()
}

/// The number of lines in `m`'s output that contain `what`.
fn count_lines(m: &Mlcanary, what: &str) -> usize {
    m.output().lines().filter(|l| l.contains(what)).count()
}

/// Wait until an analysis passed on real data while Progressing past the first step.
fn wait_judging(m: &mut Mlcanary, min_weight: u64) -> Value {
    let s = m.wait_status(patience::ROLLOUT, |s| {
        let pass = s["policies"][POLICY_KEY]["lastVerdicts"]
            .as_array()?
            .iter()
            .any(|v| v["verdict"] == "pass");
        let ok = pass && phase(s) == Some("Progressing") && weight(s)? >= min_weight;
        ok.then(|| s.clone())
    });
    s.unwrap_or_else(|| panic!("no passing analysis at {min_weight} bp:\n{}", m.output()))
}

/// Watch `status.json` for `d`: the weight and phase must not move and no history may be added.
/// An outcome check (nothing may change, however fast or slow the ticks come), not a timing one.
fn assert_holds(m: &mut Mlcanary, d: Duration, weight_bp: u64, history_len: usize, what: &str) {
    let until = Instant::now() + d;
    let mut reads = 0;
    while Instant::now() < until {
        if let Some(s) = m.status() {
            reads += 1;
            assert_eq!(
                weight(&s),
                Some(weight_bp),
                "{what}: weight moved:\n{}",
                m.output()
            );
            assert_eq!(phase(&s), Some("Progressing"), "{what}:\n{}", m.output());
            assert_eq!(history(&s).len(), history_len, "{what}:\n{}", m.output());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(reads > 0, "{what}: no status read");
}

/// The history of a healthy rollout that ended Promoted: every step once, in order, then 100 %.
fn assert_promoted_step_by_step(m: &mut Mlcanary, steps: &[u64]) {
    let end = m.wait_status(patience::ROLLOUT, |s| {
        (phase(s) == Some("Promoted")).then(|| s.clone())
    });
    let end = end.unwrap_or_else(|| panic!("not promoted:\n{}", m.output()));
    let mut want: Vec<u64> = steps.to_vec();
    want.push(10_000);
    assert_eq!(history_weights(&end), want, "{}", m.output());
}

fn all_ok_through(port: u16, tag: &str, n: usize) -> Vec<(u16, Option<String>)> {
    (0..n)
        .map(|i| {
            let user = format!("{tag}-{i}");
            match http::get(
                port,
                HOST,
                "/v1/models/fraud:predict",
                &[("x-user-id", &user)],
            ) {
                Ok(r) => (r.status, r.served_by()),
                Err(_) => (0, None),
            }
        })
        .collect()
}

#[test]
fn envoy_killed_mid_rollout_is_restarted_at_the_same_split_and_the_rollout_goes_on() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let (listen, admin) = (free_port(), free_port());
    let steps = [1000, 2000, 3000, 4000, 5000, 6000];
    let mut m = Mlcanary::local_on_ports(
        &error_rate_policy("1s", "[10, 20, 30, 40, 50, 60]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        listen,
        admin,
        &["--watch"],
    );
    let _bg = Traffic::background(listen, HOST);
    let before = wait_judging(&mut m, 2000);
    let old_pid = before["envoyPid"].as_u64().expect("envoyPid") as u32;

    kill_pid(old_pid);
    let killed = Instant::now();
    // The split at the kill, read right after it: however long the test took to get here, no tick
    // can advance on a dead Envoy (no data) or on its replacement's first scrape (a baseline).
    let w0 = m.status().as_ref().and_then(weight).unwrap_or(0);
    // Until the restart shows in status.json the split may not move, and afterwards it is the same.
    let restarted = m.wait_status(patience::ROLLOUT, |s| {
        let pid = s["envoyPid"].as_u64()? as u32;
        (pid != old_pid).then(|| s.clone())
    });
    let restarted = restarted.unwrap_or_else(|| panic!("envoy not restarted:\n{}", m.output()));
    println!(
        "envoy {old_pid} killed at {w0} bp; restarted as {} after {:.2} s",
        restarted["envoyPid"],
        killed.elapsed().as_secs_f64()
    );
    let at_restart = weight(&restarted).unwrap_or(0);
    // At most the one tick that may have been judging (on data read before the kill) as it died.
    assert!(
        at_restart == w0 || at_restart == w0 + 1000,
        "weight jumped {w0} -> {at_restart}:\n{}",
        m.output()
    );
    assert_eq!(phase(&restarted), Some("Progressing"));
    assert!(!alive(old_pid));
    assert_eq!(
        restarted["listener"].as_str(),
        Some(format!("127.0.0.1:{listen}").as_str()),
        "fixed ports are kept"
    );
    // The new Envoy serves on the same address, both variants healthy (its listener may take a
    // moment after status.json names its pid).
    let mut got = Vec::new();
    let served = wait_for(patience::SETTLE, || {
        got = all_ok_through(listen, "after-restart", 100);
        got.iter().all(|(s, _)| *s == 200).then_some(())
    });
    assert!(served.is_some(), "{got:?}");
    let out = m.output();
    assert!(out.contains("envoy exited; restarted (pid"), "{out}");
    assert_promoted_step_by_step(&mut m, &steps);
    let out = m.output();
    assert!(!out.contains("rolled back from"), "{out}");
    // The restarted Envoy's counters start from zero: the first tick on it reads that as a reset
    // and judges the requests since the restart (a window, never a failure or a negative count).
    let after = &out[out.find("envoy exited; restarted").unwrap_or(0)..];
    let first_tick = after.lines().nth(1).unwrap_or_default();
    assert!(
        first_tick.contains("errors: pass") || first_tick.contains("errors: inconclusive"),
        "{first_tick}\n{out}"
    );
    assert_eq!(m.terminate().and_then(|s| s.code()), Some(0), "{out}");
}

/// An Envoy this test runs itself from mlcanary's `envoy.yaml` (mlcanary without `--envoy`).
struct OwnEnvoy(Child);

impl Drop for OwnEnvoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn envoy_admin_unreachable_holds_with_no_data_until_envoy_answers() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let (listen, admin) = (free_port(), free_port());
    let listen_s = format!("127.0.0.1:{listen}");
    let admin_s = admin.to_string();
    // No --envoy: the user runs Envoy. It is not up yet, so its admin refuses connections.
    let mut m = Mlcanary::spawn(
        &error_rate_policy("1s", "[20, 50]", 10),
        &[
            "local",
            "--policy",
            "{policy}",
            "--workdir",
            "{workdir}",
            "--upstream",
            &format!("stable=127.0.0.1:{}", stable.port),
            "--upstream",
            &format!("canary=127.0.0.1:{}", canary.port),
            "--wasm",
            &mlcanary_e2e::wasm_path().display().to_string(),
            "--listen",
            &listen_s,
            "--admin-port",
            &admin_s,
            "--watch",
        ]
        .map(String::from),
    );
    let first = m.wait_status(patience::START, |s| (weight(s)? == 2000).then(|| s.clone()));
    let first = first.unwrap_or_else(|| panic!("did not start:\n{}", m.output()));
    assert_eq!(history_weights(&first), [2000]);
    assert_holds(&mut m, Duration::from_secs(4), 2000, 1, "admin unreachable");
    let out = m.output();
    assert!(out.contains("no data (unreachable"), "{out}");
    assert!(
        !out.contains("promoted from") && !out.contains("rolled back from"),
        "{out}"
    );

    // Now the user's Envoy comes up on mlcanary's files: judging resumes, the canary is promoted.
    let envoy = Command::new(mlcanary_e2e::envoy_path())
        .arg("-c")
        .arg(m.workdir.join("envoy.yaml"))
        .args(["--disable-hot-restart", "--concurrency", "1", "-l", "warn"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn envoy");
    let _envoy = OwnEnvoy(envoy);
    let _bg = Traffic::background(listen, HOST);
    assert_promoted_step_by_step(&mut m, &[2000, 5000]);
    assert_eq!(m.terminate().and_then(|s| s.code()), Some(0));
}

#[test]
fn prometheus_down_holds_without_promotion_or_rollback_and_resumes_when_back() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let (listen, admin) = (free_port(), free_port());
    let mut prom = Prometheus::start(admin);
    let url = prom.url();
    let steps: Vec<u64> = (1..=8).map(|i| i * 1000).collect();
    let mut m = Mlcanary::local_on_ports(
        &error_rate_policy("2s", "[10, 20, 30, 40, 50, 60, 70, 80]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        listen,
        admin,
        &["--watch", "--prometheus", &url],
    );
    let _bg = Traffic::background(listen, HOST);
    wait_judging(&mut m, 2000);

    let refused = "no data (query";
    let refused_before = count_lines(&m, refused);
    prom.stop();
    let stopped = Instant::now();
    // The tick that may be running as it stops is allowed to finish: wait for the first tick that
    // found Prometheus gone (ticks run one after the other); from then on nothing moves.
    let noticed = wait_for(patience::SETTLE, || {
        (count_lines(&m, refused) > refused_before).then_some(())
    });
    assert!(
        noticed.is_some(),
        "no tick saw prometheus gone:\n{}",
        m.output()
    );
    let held = m.status().unwrap_or_default();
    let (w0, h0) = (weight(&held).unwrap_or(0), history(&held).len());
    assert!(w0 > 0 && w0 < 10_000, "{held}");
    assert_holds(&mut m, Duration::from_secs(10), w0, h0, "prometheus down");
    let out = m.output();
    // (The Prometheus source labels a refused connection `query`, not `unreachable`.)
    assert!(
        out.contains("no data (query") && out.contains("failed to send request"),
        "{out}"
    );
    println!(
        "prometheus down for {:.1} s: held at {w0} bp",
        stopped.elapsed().as_secs_f64()
    );

    prom.start_again();
    let resumed = m.wait_status(patience::ROLLOUT, |s| (weight(s)? > w0).then(|| weight(s)));
    assert!(
        resumed.is_some(),
        "no progress after prometheus came back:\n{}",
        m.output()
    );
    assert_promoted_step_by_step(&mut m, &steps);
    let out = m.output();
    assert!(!out.contains("rolled back from"), "{out}");
    assert_eq!(m.terminate().and_then(|s| s.code()), Some(0), "{out}");
}

#[test]
fn canary_upstream_down_is_rolled_back_and_stable_sees_no_error() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    // Gated: however slow the machine, it cannot end Promoted before the canary goes down.
    let mut m = Mlcanary::local(
        &error_rate_policy_gated("1s", "[10, 20, 30, 40, 50, 60, 70, 80]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch"],
    );
    let port = m.listener_port(patience::START);
    let bg = Traffic::background(port, HOST);
    let before = wait_judging(&mut m, 1000);
    let w0 = weight(&before).unwrap_or(0);

    let down = Instant::now();
    drop(canary); // its port now refuses connections: Envoy answers 503 for canary requests
    let rolled = m.wait_status(patience::ROLLOUT, |s| {
        (phase(s) == Some("RolledBack")).then(|| s.clone())
    });
    let rolled = rolled.unwrap_or_else(|| panic!("not rolled back:\n{}", m.output()));
    println!(
        "canary upstream down at {w0} bp: rolled back after {:.2} s",
        down.elapsed().as_secs_f64()
    );
    assert_eq!(weight(&rolled), Some(0));
    let out = m.output();
    assert!(
        out.contains("rolled back from") && out.contains("errors: fail"),
        "{out}"
    );
    assert!(
        bg.by_upstream
            .lock()
            .map(|b| b.get("status 503").copied().unwrap_or(0) > 0)
            .unwrap_or(false),
        "the outage never showed as a 503"
    );

    // All traffic on stable now (once Envoy has read the new split), every request answered.
    let got = wait_all_served_by(port, HOST, "stable", 200);
    assert!(got.is_ok(), "{got:?}");
    // And stable saw no error at any point: the filter's own count from Envoy's admin.
    let admin = rolled["admin"].as_str().unwrap_or_default();
    let admin_port: u16 = admin
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    let text = http::get(admin_port, "127.0.0.1", "/stats/prometheus", &[])
        .map(|r| r.body)
        .unwrap_or_default();
    let labels = |v| [("policy", POLICY), ("variant", v)];
    let stable_requests = find_sample(&text, "mlcanary_requests_total", &labels("stable"));
    let stable_errors = find_sample(&text, "mlcanary_errors_total", &labels("stable"));
    let canary_errors = find_sample(&text, "mlcanary_errors_total", &labels("canary"));
    assert!(
        stable_requests.is_some_and(|n| n > 100.0),
        "{stable_requests:?}"
    );
    assert_eq!(stable_errors, Some(0.0));
    assert!(canary_errors.is_some_and(|n| n > 0.0), "{canary_errors:?}");
    assert_eq!(
        m.terminate().and_then(|s| s.code()),
        Some(1),
        "{}",
        m.output()
    );
}
