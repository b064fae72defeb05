//! The engine with webhooks: gates before the write, notifications after, against a fake sender
//! that records each call (the HTTP sender's retries and timeouts are tested in `hooks`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::fakes::{engine, window, FakeSender, FakeSource, FakeTarget, ManualClock};
use super::*;
use crate::policy::{CanaryPolicy, Phase, WebhookSpec};
use mlcanary_core::fixtures::webhook as hook;

fn policy(hooks: Vec<WebhookSpec>) -> ValidatedPolicy {
    let p = CanaryPolicy::test()
        .steps(&[10, 50])
        .only_error_rate(0.01)
        .min_requests(50)
        .failure_threshold(2)
        .deadline("10m")
        .webhooks(hooks);
    p.validated()
}

struct Run {
    engine: Engine,
    clock: ManualClock,
    source: FakeSource,
    target: FakeTarget,
    status: CanaryPolicyStatus,
    policy: ValidatedPolicy,
}

impl Run {
    fn new(policy: ValidatedPolicy, sender: &Arc<FakeSender>) -> Self {
        let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        Run {
            engine: engine(&clock, sender.clone()),
            clock,
            source: FakeSource::default(),
            target: FakeTarget::default(),
            status: CanaryPolicyStatus::default(),
            policy,
        }
    }

    /// One tick on a healthy window.
    async fn tick(&mut self) -> TickOutput {
        self.source.push(Ok(window(1000, 0, 0)));
        let input = TickInput {
            policy: &self.policy,
            status: &self.status,
            peers: &[],
        };
        let out = self
            .engine
            .tick(input, &mut self.source, &self.target)
            .await
            .expect("tick");
        self.status = out.status.clone();
        self.clock.advance(self.policy.interval);
        out
    }
}

#[tokio::test]
async fn a_refusing_pre_rollout_hook_stops_the_rollout_before_any_traffic_moves() {
    let sender = FakeSender::answering(&[500]);
    let mut run = Run::new(
        policy(vec![hook("smoke-test", "preRollout", "http://hooks/pre")]),
        &sender,
    );
    let first = run.tick().await;
    assert_eq!(first.status.phase, Phase::Pending);
    assert_eq!(first.status.canary_weight_bp, 0);
    let c = &first.status.conditions[0];
    assert_eq!(c.reason, "PreRolloutWebhookFailed");
    assert!(
        c.message.contains("smoke-test") && c.message.contains("500"),
        "{}",
        c.message
    );
    let second = run.tick().await;
    assert_eq!(second.status.phase, Phase::RolledBack);
    assert!(second.status.conditions[0]
        .message
        .contains("preRollout webhook smoke-test"));
    assert!(
        run.target.canary_percents().iter().all(|&p| p == 0),
        "the canary never got traffic: {:?}",
        run.target.canary_percents()
    );
    let got = sender.calls();
    assert_eq!(got.len(), 2, "one call a tick");
    for (url, body) in &got {
        assert_eq!(url, "http://hooks/pre");
        assert_eq!(body["type"], "preRollout");
        assert_eq!(body["name"], "fraud-model");
        assert_eq!(body["phase"], "Pending");
        assert_eq!(body["event"], "Started");
    }
}

#[tokio::test]
async fn gates_that_answer_2xx_let_the_rollout_through_and_notifications_follow_it() {
    let sender = FakeSender::answering(&[200]);
    let url = |p: &str| format!("http://hooks/{p}");
    let mut run = Run::new(
        policy(vec![
            hook("pre", "preRollout", &url("pre")),
            hook("step", "step", &url("step")),
            hook("confirm", "confirmPromotion", &url("confirm")),
            hook("events", "event", &url("event")),
        ]),
        &sender,
    );
    let mut phases = Vec::new();
    for _ in 0..4 {
        let out = run.tick().await;
        phases.push((out.status.phase, out.status.canary_weight_bp));
        if out.status.phase.is_terminal() {
            break;
        }
    }
    assert_eq!(
        phases,
        [
            (Phase::Progressing, 1000),
            (Phase::Progressing, 5000),
            (Phase::Promoted, 10000)
        ]
    );
    let calls: Vec<(String, String)> = sender
        .calls()
        .into_iter()
        .map(|(p, b)| (p, b["event"].as_str().unwrap_or("").to_owned()))
        .collect();
    let want: Vec<(String, String)> = [
        ("http://hooks/pre", "Started"),
        ("http://hooks/step", "Started"),
        ("http://hooks/event", "Started"),
        ("http://hooks/step", "Advanced"),
        ("http://hooks/event", "Advanced"),
        ("http://hooks/confirm", "Promoted"),
        ("http://hooks/event", "Promoted"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(calls, want);
    // The step notification carries the verdicts of the interval that earned it.
    let advanced = &sender.calls()[3].1;
    assert_eq!(advanced["canaryWeightBp"], 5000);
    assert_eq!(advanced["verdicts"][0]["verdict"], "pass");
}

#[tokio::test]
async fn a_refusing_confirm_promotion_hook_holds_until_it_answers_2xx() {
    // Refused once (one tick), then 200.
    let sender = FakeSender::answering(&[403, 200]);
    let mut run = Run::new(
        policy(vec![hook("approve", "confirmPromotion", "http://hooks/")]),
        &sender,
    );
    run.tick().await; // 10 %
    run.tick().await; // 50 %, the last step
    let held = run.tick().await;
    assert_eq!(held.status.phase, Phase::Progressing);
    assert_eq!(held.status.canary_weight_bp, 5000);
    assert!(held
        .events
        .contains(&RolloutEvent::Held(mlcanary_core::rollout::Hold::Webhook)));
    let c = &held.status.conditions[0];
    assert_eq!(c.reason, "AwaitingPromotion");
    assert!(
        c.message.contains("approve") && c.message.contains("403"),
        "{}",
        c.message
    );
    let promoted = run.tick().await;
    assert_eq!(promoted.status.phase, Phase::Promoted);
    assert_eq!(sender.calls().len(), 2);
    assert_eq!(sender.calls()[0].1["type"], "confirmPromotion");
}
