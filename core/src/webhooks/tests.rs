use std::time::{Duration, SystemTime};

use super::*;
use crate::fixtures::{webhook as hook, with_webhooks as policy_with, TestPolicy};
use crate::policy::{Phase, WebhookSpec};
use crate::rollout::webhook_gates::{refuse, WebhookGate};

#[test]
fn webhooks_validate_with_field_names() {
    let p = policy_with(vec![hook("gate", "preRollout", "http://127.0.0.1:1/x")]);
    assert_eq!(p.webhooks[0].kind, HookKind::PreRollout);
    assert_eq!(p.webhooks[0].timeout, Duration::from_millis(300));
    let err = |h: Vec<WebhookSpec>| {
        TestPolicy::fraud_model()
            .only_error_rate(0.01)
            .no_pauses()
            .webhooks(h)
            .validate()
            .unwrap_err()
            .field
    };
    assert_eq!(
        err(vec![hook("a", "preDeploy", "http://x")]),
        "spec.webhooks[0].type"
    );
    assert_eq!(
        err(vec![hook("a", "step", "ftp://x")]),
        "spec.webhooks[0].url"
    );
    assert_eq!(
        err(vec![
            hook("a", "step", "http://x"),
            hook("a", "event", "http://y")
        ]),
        "spec.webhooks[1].name"
    );
    let mut slow = hook("a", "step", "http://x");
    slow.retries = Some(11);
    assert_eq!(err(vec![slow]), "spec.webhooks[0].retries");
    let mut t = hook("a", "step", "http://x");
    t.timeout = Some("soon".into());
    assert_eq!(err(vec![t]), "spec.webhooks[0].timeout");
}

#[test]
fn the_planner_fires_step_rollback_and_event_hooks() {
    let p = policy_with(vec![
        hook("s", "step", "http://h/s"),
        hook("r", "rollback", "http://h/r"),
        hook("e", "event", "http://h/e"),
        hook("g", "confirmPromotion", "http://h/g"),
    ]);
    let names = |events: &[RolloutEvent]| -> Vec<String> {
        notifications(&p, events)
            .iter()
            .map(|(h, e)| format!("{}:{}", h.name, describe(e).kind.reason()))
            .collect()
    };
    assert_eq!(
        names(&[RolloutEvent::Advanced {
            from_bp: 500,
            to_bp: 1000
        }]),
        ["s:Advanced", "e:Advanced"]
    );
    assert_eq!(
        names(&[
            RolloutEvent::AnalysisFailed {
                consecutive: 2,
                threshold: 2,
                checks: vec!["errors".into()]
            },
            RolloutEvent::RolledBack {
                from_bp: 1000,
                reason: "x".into()
            }
        ]),
        ["e:AnalysisFailed", "r:RolledBack", "e:RolledBack"]
    );
    assert!(names(&[RolloutEvent::Held(crate::rollout::Hold::NoConclusiveData)]).is_empty());
    assert_eq!(
        names(&[RolloutEvent::Promoted {
            from_bp: 5000,
            reason: "promoted by operator".into()
        }]),
        ["e:Promoted"]
    );
}

#[test]
fn payload_carries_policy_step_and_verdicts() {
    let p = policy_with(vec![hook("s", "step", "http://h/s")]);
    let status = CanaryPolicyStatus {
        phase: Phase::Progressing,
        canary_weight_bp: 1000,
        step_index: Some(1),
        canary_version: Some("v2".into()),
        ..Default::default()
    };
    let v = VerdictStatus {
        name: "errors".into(),
        verdict: "pass".into(),
        n_canary: 120,
        n_stable: 2000,
        message: "ok".into(),
        ..Default::default()
    };
    let body = payload(
        &p,
        HookKind::Step,
        &status,
        Some(&RolloutEvent::Advanced {
            from_bp: 500,
            to_bp: 1000,
        }),
        &[v],
    );
    assert_eq!(body["name"], "fraud-model");
    assert_eq!(body["namespace"], "ml");
    assert_eq!(body["type"], "step");
    assert_eq!(body["phase"], "Progressing");
    assert_eq!(body["canaryWeightBp"], 1000);
    assert_eq!(body["stepIndex"], 1);
    assert_eq!(body["canaryVersion"], "v2");
    assert_eq!(body["event"], "Advanced");
    assert_eq!(body["message"], "advanced 5.00% -> 10.00%");
    assert_eq!(body["verdicts"][0]["name"], "errors");
    assert_eq!(body["verdicts"][0]["nCanary"], 120);
    assert!(body["stepsBp"].is_array());
}

#[test]
fn pure_gate_refusals() {
    let p = policy_with(vec![]);
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let pending = CanaryPolicyStatus::default();
    let once = refuse(
        &pending,
        None,
        &p,
        t,
        WebhookGate::PreRollout,
        "smoke",
        "answered 500",
    );
    assert_eq!(once.status.phase, Phase::Pending);
    assert_eq!(once.status.canary_weight_bp, 0);
    assert_eq!(once.status.failed_checks, 1);
    let c = &once.status.conditions[0];
    assert_eq!(c.reason, "PreRolloutWebhookFailed");
    assert!(c.message.contains("smoke"), "{}", c.message);
    let twice = refuse(
        &once.status,
        None,
        &p,
        t,
        WebhookGate::PreRollout,
        "smoke",
        "answered 500",
    );
    assert_eq!(twice.status.phase, Phase::RolledBack);
    assert_eq!(twice.status.canary_weight_bp, 0);
    assert!(twice.status.history.is_empty(), "no traffic ever moved");
}
