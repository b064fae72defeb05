//! The engine with webhooks: gates before the write, notifications after, against a real HTTP
//! receiver on 127.0.0.1.

use std::time::{Duration, SystemTime};

use super::fakes::{window, FakeSource, FakeTarget};
use super::*;
use crate::hooks::tests::HookServer;
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
    source: FakeSource,
    target: FakeTarget,
    status: CanaryPolicyStatus,
    now: SystemTime,
    policy: ValidatedPolicy,
}

impl Run {
    fn new(policy: ValidatedPolicy) -> Self {
        Run {
            engine: Engine::new(),
            source: FakeSource::default(),
            target: FakeTarget::default(),
            status: CanaryPolicyStatus::default(),
            now: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
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
            now: self.now,
        };
        let out = self
            .engine
            .tick(input, &mut self.source, &self.target)
            .await
            .expect("tick");
        self.status = out.status.clone();
        self.now += self.policy.interval;
        out
    }
}

#[tokio::test]
async fn a_refusing_pre_rollout_hook_stops_the_rollout_before_any_traffic_moves() {
    let server = HookServer::start(vec![(500, 0)]);
    let mut run = Run::new(policy(vec![hook(
        "smoke-test",
        "preRollout",
        &format!("{}/pre", server.base),
    )]));
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
    let got = server.bodies();
    assert_eq!(got.len(), 4, "two ticks × (1 + 1 retry)");
    for (path, body) in &got {
        assert_eq!(path, "/pre");
        assert_eq!(body["type"], "preRollout");
        assert_eq!(body["name"], "fraud-model");
        assert_eq!(body["phase"], "Pending");
        assert_eq!(body["event"], "Started");
    }
}

#[tokio::test]
async fn gates_that_answer_2xx_let_the_rollout_through_and_notifications_follow_it() {
    let server = HookServer::start(vec![(200, 0)]);
    let url = |p: &str| format!("{}/{p}", server.base);
    let mut run = Run::new(policy(vec![
        hook("pre", "preRollout", &url("pre")),
        hook("step", "step", &url("step")),
        hook("confirm", "confirmPromotion", &url("confirm")),
        hook("events", "event", &url("event")),
    ]));
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
    let calls: Vec<(String, String)> = server
        .bodies()
        .into_iter()
        .map(|(p, b)| (p, b["event"].as_str().unwrap_or("").to_owned()))
        .collect();
    let want: Vec<(String, String)> = [
        ("/pre", "Started"),
        ("/step", "Started"),
        ("/event", "Started"),
        ("/step", "Advanced"),
        ("/event", "Advanced"),
        ("/confirm", "Promoted"),
        ("/event", "Promoted"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(calls, want);
    // The step notification carries the verdicts of the interval that earned it.
    let advanced = &server.bodies()[3].1;
    assert_eq!(advanced["canaryWeightBp"], 5000);
    assert_eq!(advanced["verdicts"][0]["verdict"], "pass");
}

#[tokio::test]
async fn a_refusing_confirm_promotion_hook_holds_until_it_answers_2xx() {
    // Two attempts refused (one tick), then 200.
    let server = HookServer::start(vec![(403, 0), (403, 0), (200, 0)]);
    let mut run = Run::new(policy(vec![hook(
        "approve",
        "confirmPromotion",
        &server.base,
    )]));
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
    assert_eq!(server.bodies().len(), 3);
    assert_eq!(server.bodies()[0].1["type"], "confirmPromotion");
}
