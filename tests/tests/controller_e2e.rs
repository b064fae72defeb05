//! `mlcanary local` end to end: the real binary drives a real Envoy (its own child) running the built
//! filter in front of two test upstreams, judging metrics from Envoy's admin endpoint or from a real
//! Prometheus. Each test owns every process it starts; the guards stop them on drop.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use mlcanary_e2e::http;
use mlcanary_e2e::local::{error_rate_policy, Mlcanary, Traffic};
use mlcanary_e2e::prometheus::Prometheus;
use mlcanary_e2e::upstream::Upstream;
use serde_json::Value;

const HOST: &str = "fraud-model";
const POLICY: &str = "fraud-model";

fn weight(s: &Value) -> Option<u64> {
    s["policies"][POLICY]["canaryWeightBp"].as_u64()
}

fn phase(s: &Value) -> Option<&str> {
    s["policies"][POLICY]["phase"].as_str()
}

/// `n` requests with fresh user ids, counted by the upstream that answered.
fn measure(port: u16, tag: &str, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let user = format!("{tag}-{i}");
        let r = http::get(
            port,
            HOST,
            "/v1/models/fraud:predict",
            &[("x-user-id", &user)],
        )
        .expect("request through envoy");
        let who = r
            .served_by()
            .unwrap_or_else(|| format!("status {}", r.status));
        *out.entry(who).or_default() += 1;
    }
    out
}

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

#[test]
fn healthy_canary_is_promoted_step_by_step_and_traffic_follows() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    // 2 s per step leaves time to measure the split at each weight between two ticks.
    let mut m = Mlcanary::local(
        &error_rate_policy("2s", "[20, 50]", 20),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch"],
    );
    let port = m.listener_port(Duration::from_secs(60));
    let _bg = Traffic::start(port, HOST, 2, 200_000, Duration::from_secs(90));
    let mut seen = Vec::new();
    for want in [2000u64, 5000, 10_000] {
        let got = m.wait_status(Duration::from_secs(30), |s| {
            weight(s).filter(|w| *w >= want).map(|w| (w, s.clone()))
        });
        let (w, _) = got.unwrap_or_else(|| panic!("never reached {want} bp:\n{}", m.output()));
        assert_eq!(w, want, "skipped a step:\n{}", m.output());
        // status.json is written after the files; give Envoy's file watch a moment.
        std::thread::sleep(Duration::from_millis(200));
        let n = 300;
        let counts = measure(port, &format!("w{want}"), n);
        let after = m.status().and_then(|s| weight(&s));
        assert_eq!(after, Some(want), "the weight moved while measuring");
        let got_share = share(&counts, "canary");
        // Distinct users land on the canary with probability w (sticky hash, uniform buckets):
        // binomial sd at n=300 is at most 2.9 pp, so ±10 pp is over 3 sd; 0 % and 100 % are exact.
        let expect = want as f64 / 10_000.0;
        assert!(
            (got_share - expect).abs() <= 0.10,
            "at {want} bp the canary got {got_share}: {counts:?}"
        );
        assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
        seen.push((want, got_share));
    }
    println!("weight (bp) -> measured canary share: {seen:?}");
    let last = m.status().unwrap_or_default();
    assert_eq!(phase(&last), Some("Promoted"), "{last}");
    let history = last["policies"][POLICY]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let steps: Vec<u64> = history
        .iter()
        .filter_map(|h| h["toWeightBp"].as_u64())
        .collect();
    assert_eq!(steps, [2000, 5000, 10_000]);
    // Everything has ended: SIGTERM exits with the rollout's code, 0 for promoted.
    let code = m.terminate().and_then(|s| s.code());
    assert_eq!(code, Some(0), "{}", m.output());
    let out = m.output();
    assert!(out.contains("PROMOTED"), "{out}");
    assert!(out.contains("errors: pass"), "{out}");
}

/// Start a rollout, wait until analyses pass on real data, make the canary fail 20 % of requests and
/// time the rollback; then check all traffic is back on stable.
fn breach_and_roll_back(m: &mut Mlcanary, canary: &Upstream, interval_s: u64, port: u16) {
    let warm = m.wait_status(Duration::from_secs(60), |s| {
        let verdicts = s["policies"][POLICY]["lastVerdicts"].as_array()?;
        let pass = verdicts.iter().any(|v| v["verdict"] == "pass");
        (pass && phase(s) == Some("Progressing")).then_some(())
    });
    assert!(
        warm.is_some(),
        "no passing analysis on real data:\n{}",
        m.output()
    );
    let before = m.status().and_then(|s| weight(&s)).unwrap_or(0);
    assert!(before > 0 && before < 10_000, "{before}");
    let breach = Instant::now();
    canary.set_fail_per_mille(200);
    let bound = Duration::from_secs(2 * interval_s + 2); // failureThreshold × interval + 2 s
    let rolled = m.wait_status(bound + Duration::from_secs(10), |s| {
        (phase(s) == Some("RolledBack")).then(|| weight(s))
    });
    let took = breach.elapsed();
    println!(
        "breach-to-rollback: {:.2} s (bound {:.0} s, canary was at {before} bp)",
        took.as_secs_f64(),
        bound.as_secs_f64()
    );
    assert_eq!(rolled, Some(Some(0)), "not rolled back:\n{}", m.output());
    assert!(
        took <= bound,
        "rollback took {took:?} > {bound:?}:\n{}",
        m.output()
    );
    std::thread::sleep(Duration::from_millis(200));
    let counts = measure(port, "after", 200);
    assert_eq!(counts.get("stable"), Some(&200), "{counts:?}");
    // Ended (and kept serving by --watch): SIGTERM exits with 1 for a rollback.
    let code = m.terminate().and_then(|s| s.code());
    assert_eq!(code, Some(1), "{}", m.output());
    let out = m.output();
    assert!(out.contains("ROLLED BACK"), "{out}");
    assert!(out.contains("errors: fail"), "{out}");
}

#[test]
fn failing_canary_is_rolled_back_within_the_threshold_envoy_metrics() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let mut m = Mlcanary::local(
        &error_rate_policy("1s", "[10, 20, 30, 40, 50, 60, 70, 80]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch"],
    );
    let port = m.listener_port(Duration::from_secs(60));
    let mut bg = Traffic::start(port, HOST, 2, 200_000, Duration::from_secs(60));
    breach_and_roll_back(&mut m, &canary, 1, port);
    bg.stop();
}

#[test]
fn failing_canary_is_rolled_back_within_the_threshold_prometheus_metrics() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    // Prometheus must know the admin port before Envoy starts: pick one.
    let admin = mlcanary_e2e::free_port();
    let prom = Prometheus::start(admin);
    let admin_s = admin.to_string();
    let url = prom.url();
    // Prometheus' first scrape comes seconds after it starts and `increase()` needs two samples in
    // the window: until then windows are empty, read as below minRequests (inconclusive), and the
    // rollout holds at its first step. The breach is made only after an analysis passed on real
    // data, so no window that straddles start-up is judged as the breach.
    let mut m = Mlcanary::local(
        &error_rate_policy("2s", "[10, 20, 30, 40, 50, 60, 70, 80, 90]", 10),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch", "--admin-port", &admin_s, "--prometheus", &url],
    );
    let port = m.listener_port(Duration::from_secs(60));
    let mut bg = Traffic::start(port, HOST, 2, 400_000, Duration::from_secs(120));
    breach_and_roll_back(&mut m, &canary, 2, port);
    bg.stop();
    let seen = prom.query(&format!(
        "sum(mlcanary_requests_total{{policy=\"{POLICY}\",variant=\"canary\"}})"
    ));
    assert!(
        seen.is_some_and(|n| n > 0.0),
        "prometheus saw no canary requests"
    );
}

#[test]
fn a_bad_policy_file_is_refused_with_the_field_named_and_exit_2() {
    let bad = error_rate_policy("2s", "[20, 10]", 20);
    let mut m = Mlcanary::local(&bad, &[("stable", 1), ("canary", 2)], &[]);
    let code = m.wait_exit(Duration::from_secs(30)).and_then(|s| s.code());
    let out = m.output();
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("spec.schedule.steps"), "{out}");
    assert!(
        !m.workdir.exists(),
        "nothing may be written for a refused policy"
    );
}
