//! `mlcanary local` end to end: the real binary drives a real Envoy (its own child) running the built
//! filter in front of two test upstreams, judging metrics from Envoy's admin endpoint or from a real
//! Prometheus. Each test owns every process it starts; the guards stop them on drop.

use std::collections::HashMap;

use mlcanary_e2e::envoy::wait_for;
use mlcanary_e2e::http;
use mlcanary_e2e::local::{
    error_rate_policy, error_rate_policy_paused, lost_canary_windows, progress_lines, served_by,
    wait_all_served_by, Mlcanary, Traffic,
};
use mlcanary_e2e::patience;
use mlcanary_e2e::rollback::{phase, weight, Rig, Source, HOST, POLICY, POLICY_KEY};
use mlcanary_e2e::upstream::Upstream;

fn share(counts: &HashMap<String, usize>, name: &str) -> f64 {
    let total: usize = counts.values().sum();
    counts.get(name).copied().unwrap_or(0) as f64 / total.max(1) as f64
}

#[test]
fn healthy_canary_is_promoted_step_by_step_and_traffic_follows() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    // Each step pauses until resumed: the split is measured at leisure, however slow the machine,
    // and cannot move while it is.
    let mut m = Mlcanary::local(
        &error_rate_policy_paused("1s", "[20, 50]", 20),
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch", "--http", "127.0.0.1:0"],
    );
    let port = m.listener_port(patience::START);
    let api = m.http_base(patience::START);
    let api_port: u16 = api
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad API address {api}"));
    let _bg = Traffic::background(port, HOST);
    let mut seen = Vec::new();
    for want in [2000u64, 5000, 10_000] {
        let terminal = if want == 10_000 { "Promoted" } else { "Paused" };
        let got = m.wait_status(patience::ROLLOUT, |s| {
            let w = weight(s)?;
            (w > want || (w == want && phase(s) == Some(terminal))).then_some(w)
        });
        let w = got.unwrap_or_else(|| panic!("never held at {want} bp:\n{}", m.output()));
        assert_eq!(w, want, "skipped a step:\n{}", m.output());
        // Distinct users land on the canary with probability w (sticky hash, uniform buckets):
        // binomial sd at n=300 is at most 2.9 pp, so ±10 pp is over 3 sd; 0 % and 100 % are exact.
        // The same 300 users each round: once Envoy's file watch has applied the new split (a
        // moment after status.json says so) every round gives the same counts.
        let n = 300;
        let expect = want as f64 / 10_000.0;
        let mut counts = HashMap::new();
        let applied = wait_for(patience::SETTLE, || {
            counts = served_by(port, HOST, &format!("w{want}"), n);
            ((share(&counts, "canary") - expect).abs() <= 0.10).then_some(())
        });
        let got_share = share(&counts, "canary");
        assert!(
            applied.is_some(),
            "at {want} bp the canary got {got_share}: {counts:?}"
        );
        assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
        let after = m.status().and_then(|s| weight(&s));
        assert_eq!(after, Some(want), "the weight moved while paused");
        seen.push((want, got_share));
        if want < 10_000 {
            let r = http::post(api_port, "x", "/api/policies/fraud-model/resume", &[], b"")
                .expect("POST resume");
            assert_eq!(r.status, 202, "{r:?}");
        }
    }
    println!("weight (bp) -> measured canary share: {seen:?}");
    let last = m.status().unwrap_or_default();
    assert_eq!(phase(&last), Some("Promoted"), "{last}");
    let history = last["policies"][POLICY_KEY]["history"]
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
    assert!(out.contains("promoted from"), "{out}");
    assert!(out.contains("errors: pass"), "{out}");
}

/// Start a rollout, wait until analyses pass on real data, make the canary fail 20 % of requests:
/// it must be rolled back, all traffic back on stable, exit 1. The time it took is printed, not
/// asserted (`scripts/bench-rollback.sh` measures it).
fn breach_and_roll_back(rig: &mut Rig) {
    let b = rig.breach().unwrap_or_else(|e| panic!("{e}"));
    println!(
        "breach-to-rollback ({}): {:.2} s (reference {:.0} s, canary was at {} bp)",
        rig.source.name(),
        b.took.as_secs_f64(),
        rig.source.reference().as_secs_f64(),
        b.before_bp
    );
    let m = &mut rig.m;
    let counts = wait_all_served_by(rig.port, HOST, "stable", 200);
    assert!(counts.is_ok(), "not all on stable: {counts:?}");
    // Ended (and kept serving by --watch): SIGTERM exits with 1 for a rollback.
    let code = m.terminate().and_then(|s| s.code());
    assert_eq!(code, Some(1), "{}", m.output());
    let out = m.output();
    assert!(out.contains("rolled back from"), "{out}");
    assert!(out.contains("errors: fail"), "{out}");
}

#[test]
fn failing_canary_is_rolled_back_envoy_metrics() {
    let mut rig = Rig::start(Source::Envoy);
    breach_and_roll_back(&mut rig);
    rig.traffic.stop();
}

#[test]
fn failing_canary_is_rolled_back_prometheus_metrics() {
    let mut rig = Rig::start(Source::Prometheus);
    breach_and_roll_back(&mut rig);
    rig.traffic.stop();
    // Over a range: mlcanary (and its Envoy) has stopped, so Prometheus has marked the series
    // stale and an instant query would find nothing, depending on when its next scrape came.
    let seen = rig.prometheus.as_ref().and_then(|p| {
        p.query(&format!(
            "sum(max_over_time(mlcanary_requests_total{{policy=\"{POLICY}\",variant=\"canary\"}}[1h]))"
        ))
    });
    assert!(
        seen.is_some_and(|n| n > 0.0),
        "prometheus saw no canary requests"
    );
    // No window lost: every window judged while the canary had weight counted canary requests
    // (e.g. not `errors: inconclusive canary=- ... n=0/1490` at 40 %).
    let lines = progress_lines(&rig.m.output(), POLICY);
    let (checked, lost) = lost_canary_windows(&lines);
    println!(
        "windows judged with the canary at weight > 0: {checked}, without canary data: {}",
        lost.len()
    );
    assert!(checked > 0, "no judged window:\n{}", rig.m.output());
    assert!(
        lost.is_empty(),
        "windows without canary requests while the canary had weight:\n{}\n\n{}",
        lost.join("\n"),
        rig.m.output()
    );
}

#[test]
fn a_bad_policy_file_is_refused_with_the_field_named_and_exit_2() {
    let bad = error_rate_policy("2s", "[20, 10]", 20);
    let mut m = Mlcanary::local(&bad, &[("stable", 1), ("canary", 2)], &[]);
    let code = m.wait_exit(patience::START).and_then(|s| s.code());
    let out = m.output();
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("spec.schedule.steps"), "{out}");
    assert!(
        !m.workdir.exists(),
        "nothing may be written for a refused policy"
    );
}
