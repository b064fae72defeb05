//! The CI/CD gate against local mode: the command sequence of `examples/ci/` — `mlcanary rollout
//! start`, then `mlcanary wait` and act on its exit code — with a real Envoy, the filter and
//! `mlcanary local --watch` serving its API. A healthy canary waits to 0 (promoted); a canary that
//! fails 30 % of requests waits to 1 (rolled back).

use std::process::Command;

use mlcanary_e2e::local::{mlcanary_bin, Mlcanary, Traffic};
use mlcanary_e2e::patience;
use mlcanary_e2e::upstream::Upstream;

const POLICY: &str = "apiVersion: mlcanary.io/v1alpha1
kind: CanaryPolicy
metadata: {name: fraud-model}
spec:
  target: {virtualService: fraud-model, hosts: [fraud-model], wasmPlugin: mlcanary}
  routing:
    sticky: {header: x-user-id}
  schedule: {interval: 1s, steps: [25, 50]}
  analysis:
    failureThreshold: 2
    minRequests: 20
    checks:
    - name: errors
      errorRate: {max: 0.01}
  progressDeadline: 30m
";

/// Run `mlcanary ARGS` to its end (bounded) and return its exit code and output.
fn mlcanary(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(mlcanary_bin())
        .args(args)
        .output()
        .expect("run mlcanary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn rollout_start_then_wait_exits_0_on_promotion_and_1_on_rollback() {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let mut m = Mlcanary::local(
        POLICY,
        &[("stable", stable.port), ("canary", canary.port)],
        &["--watch", "--http", "127.0.0.1:0"],
    );
    let port = m.listener_port(patience::START);
    let server = m.http_base(patience::START);
    let mut traffic = Traffic::background(port, "fraud-model");
    // `wait`'s own bound is only there against a hang: a whole rollout, however slow the machine.
    let timeout = format!("{}s", patience::ROLLOUT.as_secs());
    let wait = [
        "wait",
        "--server",
        &server,
        "--timeout",
        &timeout,
        "--poll",
        "200ms",
        "fraud-model",
    ];

    // The rollout the policy file started: promoted, so the gate passes.
    let (code, out) = mlcanary(&wait);
    assert_eq!(code, Some(0), "first rollout: {out}\n{}", m.output());

    // The pipeline deploys v2 and starts its rollout; wait follows it to promotion.
    let start = |v: &str| {
        mlcanary(&[
            "rollout",
            "start",
            "--server",
            &server,
            "--canary",
            v,
            "fraud-model",
        ])
    };
    let (code, out) = start("v2");
    assert_eq!(code, Some(0), "rollout start v2: {out}");
    let (code, out) = mlcanary(&wait);
    assert_eq!(code, Some(0), "v2 must be promoted: {out}\n{}", m.output());
    let v2 = m.policy("default/fraud-model").expect("status");
    assert_eq!(v2["phase"], "Promoted");
    assert_eq!(v2["canaryWeightBp"], 10_000);

    // v3 fails 30 % of its requests: the gate reports the rollback with exit 1.
    canary.set_fail_per_mille(300);
    let (code, out) = start("v3");
    assert_eq!(code, Some(0), "rollout start v3: {out}");
    let (code, out) = mlcanary(&wait);
    assert_eq!(
        code,
        Some(1),
        "v3 must be rolled back: {out}\n{}",
        m.output()
    );
    let v3 = m.policy("default/fraud-model").expect("status");
    assert_eq!(
        (v3["phase"].as_str(), v3["canaryWeightBp"].as_u64()),
        (Some("RolledBack"), Some(0))
    );
    // History kept across the three rollouts, each begun by its own start.
    let history = v3["history"].to_string();
    assert!(
        history.contains("v2") && history.contains("v3"),
        "{history}"
    );
    traffic.stop();
    m.terminate();
}
