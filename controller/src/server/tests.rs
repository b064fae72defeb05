//! The endpoint on a real socket, scraped as Prometheus would.

use std::time::Duration;

use super::api_tests;
use super::*;
use crate::policy::{CanaryPolicyStatus, Phase, VerdictStatus};
use mlcanary_core::rollout::RolloutEvent;

async fn start() -> (std::net::SocketAddr, Arc<ServerState>) {
    api_tests::start(Ui::new()).await
}

/// `(status code, content type, body)` of one GET.
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    api_tests::call(addr, "GET", path).await
}

fn status() -> CanaryPolicyStatus {
    CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 1000,
        last_verdicts: vec![VerdictStatus {
            name: "errors".into(),
            verdict: "pass".into(),
            canary: Some(0.002),
            stable: Some(0.001),
            threshold: Some(0.01),
            n_canary: 500,
            n_stable: 4500,
            p_value: None,
            message: String::new(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn health_and_readiness_follow_the_loops() {
    let (addr, state) = start().await;
    assert_eq!(get(addr, "/healthz").await.0, 503, "no beat yet");
    assert_eq!(get(addr, "/readyz").await.0, 503);
    state.health.beat();
    state.health.set_ready(true);
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/readyz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);
}

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_text_format() {
    let (addr, state) = start().await;
    let m = &state.metrics;
    m.observe_status("ml", "fraud-model", &status());
    m.observe_events(
        "ml",
        "fraud-model",
        &[RolloutEvent::RolledBack {
            from_bp: 1000,
            reason: "x".into(),
        }],
    );
    m.observe_events(
        "ml",
        "churn",
        &[RolloutEvent::Promoted {
            from_bp: 5000,
            reason: "promoted by operator".into(),
        }],
    );
    m.observe_analysis("ml", "fraud-model", Duration::from_millis(30));
    m.error("kube");

    let (code, ctype, body) = get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let has = |line: &str| {
        assert!(
            body.lines().any(|l| l == line),
            "missing {line:?} in:\n{body}"
        )
    };
    has(
        r#"mlcanary_controller_phase{policy_namespace="ml",policy="fraud-model",phase="Progressing"} 1"#,
    );
    has(
        r#"mlcanary_controller_phase{policy_namespace="ml",policy="fraud-model",phase="Pending"} 0"#,
    );
    has(r#"mlcanary_controller_canary_weight_bp{policy_namespace="ml",policy="fraud-model"} 1000"#);
    has(
        r#"mlcanary_controller_check_value{policy_namespace="ml",policy="fraud-model",check="errors",variant="canary"} 0.002"#,
    );
    has(
        r#"mlcanary_controller_check_verdict{policy_namespace="ml",policy="fraud-model",check="errors",verdict="pass"} 1"#,
    );
    has(
        r#"mlcanary_controller_check_verdict{policy_namespace="ml",policy="fraud-model",check="errors",verdict="fail"} 0"#,
    );
    has(r#"mlcanary_controller_rollbacks_total{policy_namespace="ml",policy="fraud-model"} 1"#);
    has(r#"mlcanary_controller_promotions_total{policy_namespace="ml",policy="churn"} 1"#);
    has(
        r#"mlcanary_controller_analysis_duration_seconds_count{policy_namespace="ml",policy="fraud-model"} 1"#,
    );
    has(
        r#"mlcanary_controller_analysis_duration_seconds_bucket{le="0.04",policy_namespace="ml",policy="fraud-model"} 1"#,
    );
    has(
        r#"mlcanary_controller_analysis_duration_seconds_bucket{le="0.02",policy_namespace="ml",policy="fraud-model"} 0"#,
    );
    has(r#"mlcanary_controller_errors_total{reason="kube"} 1"#);
    assert!(body.ends_with("# EOF\n"), "OpenMetrics terminator");

    // A later status moves the one-hot phase.
    let mut s = status();
    s.phase = Phase::RolledBack;
    m.observe_status("ml", "fraud-model", &s);
    let (_, _, body) = get(addr, "/metrics").await;
    assert!(body.contains(
        r#"mlcanary_controller_phase{policy_namespace="ml",policy="fraud-model",phase="RolledBack"} 1"#
    ));
    assert!(body.contains(
        r#"mlcanary_controller_phase{policy_namespace="ml",policy="fraud-model",phase="Progressing"} 0"#
    ));
}

#[test]
fn only_get_and_head_are_served() {
    let state = ServerState {
        metrics: Arc::new(ControllerMetrics::new()),
        health: Arc::new(Health::new(Duration::from_secs(1))),
        ui: Arc::new(Ui::new()),
    };
    assert_eq!(
        respond(&Method::POST, "/metrics", &state).status(),
        StatusCode::METHOD_NOT_ALLOWED
    );
    assert_eq!(
        respond(&Method::GET, "/metrics", &state).status(),
        StatusCode::OK
    );
}
