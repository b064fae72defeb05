//! The shadow phase end to end: `mlcanary local` (its own Envoy, the built filter) mirrors a share of
//! real requests to the canary through Envoy's `request_mirror_policies`; the canary's inbound
//! listener runs the filter with the inbound config and counts the copies as `phase="shadow"`; every
//! answer a client gets is stable's; a failing shadow is rolled back without any live step.

use std::sync::atomic::Ordering;

use mlcanary_e2e::envoy::{find_sample, wait_for};
use mlcanary_e2e::http;
use mlcanary_e2e::local::{served_by, Mlcanary, Traffic};
use mlcanary_e2e::patience;
use mlcanary_e2e::rollback::{phase, HOST, POLICY, POLICY_KEY};
use mlcanary_e2e::upstream::Upstream;

/// An error-rate policy with a shadow of `percent` that lasts `duration` (long: the test decides
/// when it ends by breaking the canary, not the clock).
fn shadow_policy(percent: u32, duration: &str) -> String {
    format!(
        "apiVersion: mlcanary.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: {POLICY}}}
spec:
  target: {{virtualService: fraud-model, hosts: [{HOST}], wasmPlugin: mlcanary}}
  routing:
    sticky: {{header: x-user-id}}
  schedule:
    interval: 1s
    steps: [20, 50]
    shadow: {{percent: {percent}, duration: {duration}}}
  analysis:
    failureThreshold: 2
    minRequests: 20
    checks:
    - name: errors
      errorRate: {{max: 0.01}}
  progressDeadline: 30m
"
    )
}

/// Envoy's admin base URL from `status.json`.
fn admin_port(m: &mut Mlcanary) -> u16 {
    m.wait_status(patience::START, |s| {
        s["admin"].as_str()?.rsplit(':').next()?.parse().ok()
    })
    .unwrap_or_else(|| panic!("no admin in status.json:\n{}", m.output()))
}

fn stats(admin: u16) -> String {
    http::get(admin, "localhost", "/stats/prometheus", &[])
        .map(|r| r.body)
        .unwrap_or_default()
}

fn requests(text: &str, variant: &str, shadow: bool) -> f64 {
    let mut labels = vec![("policy", POLICY), ("variant", variant)];
    if shadow {
        labels.push(("phase", "shadow"));
    }
    find_sample(text, "mlcanary_requests_total", &labels).unwrap_or(0.0)
}

#[test]
fn the_shadow_is_measured_at_the_canarys_inbound_side_and_no_client_gets_its_answers() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let mut m = Mlcanary::local(
        &shadow_policy(50, "30m"),
        &[("stable", stable.port), ("canary", canary.port)],
        &[],
    );
    let port = m.listener_port(patience::START);
    let admin = admin_port(&mut m);
    let mirror = m.wait_status(patience::SETTLE, |s| {
        s["policies"][POLICY_KEY]["shadow"]["mirrorBp"].as_u64()
    });
    assert_eq!(mirror, Some(5000), "never in shadow:\n{}", m.output());
    // Envoy applies the mirror when its file watch fires: wait for the first copy.
    let mirrored = wait_for(patience::SETTLE, || {
        served_by(port, HOST, "warm", 20);
        (canary.served.load(Ordering::SeqCst) > 0).then_some(())
    });
    assert!(mirrored.is_some(), "nothing mirrored:\n{}", m.output());

    let before = canary.served.load(Ordering::SeqCst);
    let n = 400;
    let answers = served_by(port, HOST, "shadow", n);
    assert_eq!(
        answers.get("stable"),
        Some(&n),
        "every answer is stable's: {answers:?}"
    );
    // About half the requests were copied to the canary (binomial sd at n=400 is 2.5 pp; ±15 pp).
    // Copies are fire-and-forget: wait until the canary has had them all.
    let copies = wait_for(patience::SETTLE, || {
        let c = canary.served.load(Ordering::SeqCst) - before;
        (c as f64 >= 0.35 * n as f64).then_some(c)
    })
    .unwrap_or_else(|| canary.served.load(Ordering::SeqCst) - before);
    assert!(
        (0.35..=0.65).contains(&(copies as f64 / n as f64)),
        "{copies} of {n} mirrored at 50 %"
    );
    // The inbound filter counted every copy the canary served, as the shadow; no live canary
    // series exists (no user request reached it).
    let counted = wait_for(patience::SETTLE, || {
        let text = stats(admin);
        let shadow = requests(&text, "canary", true);
        (shadow as u64 >= canary.served.load(Ordering::SeqCst)).then_some(text)
    });
    let text = counted.unwrap_or_else(|| stats(admin));
    let served = canary.served.load(Ordering::SeqCst) as f64;
    let shadow = requests(&text, "canary", true);
    assert!(
        shadow >= served && shadow <= served + 60.0,
        "shadow counted {shadow}, canary served {served} (the copies still in flight aside):\n{}",
        text.lines()
            .filter(|l| l.contains("mlcanary_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        requests(&text, "canary", false),
        0.0,
        "no live canary request"
    );
    assert!(requests(&text, "stable", false) >= n as f64);
    println!(
        "{n} requests: {copies} mirrored; the canary's inbound side counted {shadow} copies in \
         all, the canary served {served}"
    );
    assert_eq!(requests(&text, "stable", true), 0.0, "stable has no shadow");

    // On the inbound side only copies count: a request that was not mirrored (on a cluster, a live
    // request reaching the canary's pod, which the caller's filter already counted) is passed to
    // the canary untouched and unmeasured.
    let socket = m.workdir.join("shadow-canary.sock");
    let shadow_before = requests(&stats(admin), "canary", true);
    let served_before = canary.served.load(Ordering::SeqCst);
    for i in 0..20 {
        let r = unix_get(&socket, HOST, &format!("direct-{i}"));
        assert!(r.contains("\"served_by\":\"canary\""), "{r}");
    }
    assert_eq!(canary.served.load(Ordering::SeqCst) - served_before, 20);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let text = stats(admin);
    assert_eq!(
        requests(&text, "canary", true),
        shadow_before,
        "a request that was not mirrored counted as the shadow"
    );
    assert_eq!(requests(&text, "canary", false), 0.0, "nor as a live one");

    // The canary breaks in shadow: rolled back from the shadow, never a live step, and no client
    // ever saw one of its errors.
    canary.set_fail_per_mille(1000);
    let mut bg = Traffic::background(port, HOST);
    let ended = m.wait_status(patience::ROLLOUT, |s| {
        (phase(s) == Some("RolledBack")).then(|| s["policies"][POLICY_KEY].clone())
    });
    bg.stop();
    let p = ended.unwrap_or_else(|| panic!("not rolled back:\n{}", m.output()));
    assert_eq!(p["canaryWeightBp"], 0, "{p}");
    assert!(p.get("stepIndex").is_none(), "a live step was entered: {p}");
    assert!(p.get("shadow").is_none(), "the shadow ended: {p}");
    let by = bg.by_upstream.lock().expect("lock").clone();
    assert!(
        by.keys().all(|k| k == "stable"),
        "every answer during the breach was stable's: {by:?}"
    );
    let reason = p["conditions"].to_string();
    assert!(
        reason.contains("errors"),
        "the reason names the check: {reason}"
    );
    // The mirror is gone: new requests reach stable only.
    let served = canary.served.load(Ordering::SeqCst);
    let quiet = wait_for(patience::SETTLE, || {
        let s0 = canary.served.load(Ordering::SeqCst);
        served_by(port, HOST, "after", 50);
        (canary.served.load(Ordering::SeqCst) == s0).then_some(())
    });
    assert!(
        quiet.is_some(),
        "still mirrored after the rollback ({served} served)"
    );
}

/// One HTTP/1.1 GET through the Unix socket of an inbound listener; the raw reply.
fn unix_get(socket: &std::path::Path, host: &str, user: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::os::unix::net::UnixStream::connect(socket)
        .unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    c.set_read_timeout(Some(patience::SETTLE)).expect("timeout");
    write!(
        c,
        "GET /v1/models/fraud:predict HTTP/1.1\r\nhost: {host}\r\nx-user-id: {user}\r\nconnection: close\r\n\r\n"
    )
    .expect("write");
    let mut out = String::new();
    let _ = c.read_to_string(&mut out);
    out
}
