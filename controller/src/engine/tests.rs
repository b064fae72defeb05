use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use super::fakes::{engine, unreachable, window, FakeSender, FakeSource, FakeTarget, ManualClock};
use super::*;
use crate::policy::{CanaryPolicy, Phase};
use mlcanary_core::analysis::Outcome;
use mlcanary_core::rollout::{Command, Hold};

fn policy() -> ValidatedPolicy {
    CanaryPolicy::test()
        .steps(&[10, 50])
        .only_error_rate(0.01)
        .min_requests(50)
        .failure_threshold(2)
        .deadline("10m")
        .validated()
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
    fn new() -> Self {
        let clock = ManualClock::at(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        Run {
            engine: engine(&clock, Arc::new(FakeSender::default())),
            clock,
            source: FakeSource::default(),
            target: FakeTarget::default(),
            status: CanaryPolicyStatus::default(),
            policy: policy(),
        }
    }

    async fn tick(&mut self) -> Result<TickOutput, EngineError> {
        let input = TickInput {
            policy: &self.policy,
            status: &self.status,
            peers: &[],
        };
        let out = self
            .engine
            .tick(input, &mut self.source, &self.target)
            .await;
        if let Ok(o) = &out {
            self.status = o.status.clone();
        }
        self.clock.advance(self.policy.interval);
        out
    }
}

impl Run {
    /// `cmd` on the run's policy at its status (the status is not taken: the caller decides).
    async fn command(&mut self, cmd: Command) -> Result<TickOutput, CommandError> {
        let input = TickInput {
            policy: &self.policy,
            status: &self.status,
            peers: &[],
        };
        self.engine.command(input, cmd, &self.target).await
    }
}

#[tokio::test]
async fn healthy_canary_advances_step_by_step_and_is_promoted() {
    let mut r = Run::new();
    // Pending → first step needs no window (the source is still asked, for its baseline).
    r.source.push(Err(unreachable()));
    let o = r.tick().await.unwrap();
    assert_eq!(
        (o.status.phase, o.weights.canary_bp()),
        (Phase::Progressing, 1000)
    );
    assert!(o.applied);
    for _ in 0..2 {
        r.source.push(Ok(window(1000, 0, 0)));
    }
    let o = r.tick().await.unwrap();
    assert_eq!(o.weights.canary_bp(), 5000);
    assert_eq!(o.verdicts.as_ref().map(Vec::len), Some(1));
    let o = r.tick().await.unwrap();
    assert_eq!(
        (o.status.phase, o.weights.canary_bp()),
        (Phase::Promoted, 10_000)
    );
    // Terminal: nothing fetched, nothing rewritten.
    let fetches = r.source.fetches;
    let o = r.tick().await.unwrap();
    assert!(!o.applied);
    assert_eq!(r.source.fetches, fetches);
    assert_eq!(r.target.canary_percents(), vec![10, 50, 100]);
    // Each write carries the filter config at the same split as the routes.
    let last = r.target.writes().pop().unwrap();
    let filter = &last.plugin_config.policies[0];
    let canary = filter.variants.iter().find(|v| v.name == "canary").unwrap();
    assert_eq!(canary.weight_bp, 10_000);
    assert_eq!(last.namespace, "ml");
}

#[tokio::test]
async fn failing_canary_rolls_back_after_failure_threshold() {
    let mut r = Run::new();
    r.source.push(Err(unreachable()));
    r.tick().await.unwrap();
    // 20 % errors on the canary, none on stable: significant, above the 1 % limit.
    r.source.push(Ok(window(1000, 0, 200)));
    r.source.push(Ok(window(1000, 0, 200)));
    let o = r.tick().await.unwrap();
    assert_eq!(o.status.failed_checks, 1);
    assert_eq!(o.status.phase, Phase::Progressing);
    assert!(!o.applied, "the split did not change: nothing rewritten");
    let o = r.tick().await.unwrap();
    assert_eq!(
        (o.status.phase, o.weights.canary_bp()),
        (Phase::RolledBack, 0)
    );
    assert!(o.applied);
    assert!(o
        .events
        .iter()
        .any(|e| matches!(e, RolloutEvent::RolledBack { from_bp: 1000, .. })));
    assert_eq!(r.target.canary_percents(), vec![10, 0]);
}

#[tokio::test]
async fn source_error_holds_never_promotes_never_rolls_back() {
    let mut r = Run::new();
    r.tick().await.unwrap();
    // A failing analysis first: errors afterwards must neither reset nor add to the count.
    r.source.push(Ok(window(1000, 0, 200)));
    r.tick().await.unwrap();
    for _ in 0..10 {
        let o = r.tick().await.unwrap();
        assert!(o.no_data.is_some());
        assert!(o.verdicts.is_none());
        assert_eq!(o.status.phase, Phase::Progressing);
        assert_eq!(o.status.failed_checks, 1);
        assert_eq!(o.weights.canary_bp(), 1000);
        assert!(o
            .events
            .contains(&RolloutEvent::Held(Hold::NoConclusiveData)));
        assert!(!o.applied);
    }
    assert_eq!(r.target.canary_percents(), vec![10]);
}

#[tokio::test]
async fn failed_write_keeps_the_old_status_and_is_retried() {
    let mut r = Run::new();
    r.target.fail.store(true, Ordering::SeqCst);
    let e = r.tick().await.unwrap_err();
    assert!(matches!(e, EngineError::Apply { .. }), "{e}");
    assert_eq!(r.status.phase, Phase::Pending, "status not advanced");
    r.target.fail.store(false, Ordering::SeqCst);
    let o = r.tick().await.unwrap();
    assert!(o.applied);
    assert_eq!(o.weights.canary_bp(), 1000);
}

#[tokio::test]
async fn inconclusive_evidence_accumulates_until_it_is_conclusive() {
    let mut r = Run::new();
    r.source.push(Err(unreachable()));
    r.tick().await.unwrap();
    // 30 requests a variant per interval, under minRequests 50: each alone is inconclusive.
    for _ in 0..3 {
        r.source.push(Ok(window(30, 0, 0)));
    }
    let o = r.tick().await.unwrap();
    let v = &o.verdicts.as_ref().unwrap()[0];
    assert_eq!((v.outcome, v.n_canary), (Outcome::Inconclusive, 30));
    assert_eq!(o.weights.canary_bp(), 1000, "holds");
    // The second interval is judged together with the first: 60 ≥ 50, a pass, and the step moves.
    let o = r.tick().await.unwrap();
    let v = &o.verdicts.as_ref().unwrap()[0];
    assert_eq!((v.outcome, v.n_canary), (Outcome::Pass, 60));
    assert_eq!(o.weights.canary_bp(), 5000);
    // The evidence runs over the whole rollout; the minimum sample counts at the new weight.
    let o = r.tick().await.unwrap();
    let v = &o.verdicts.as_ref().unwrap()[0];
    assert_eq!((v.outcome, v.n_canary), (Outcome::Inconclusive, 90));
    let steps = &o.status.evidence.as_ref().unwrap().steps;
    let per_weight: Vec<(u32, u64)> = steps
        .iter()
        .map(|s| (s.weight_bp, s.window.canary.requests))
        .collect();
    assert_eq!(per_weight, [(1000, 60), (5000, 30)]);
}

#[tokio::test]
async fn a_failure_stays_in_the_evidence_until_the_rollout_ends() {
    let mut r = Run::new();
    r.source.push(Err(unreachable()));
    r.tick().await.unwrap();
    r.source.push(Ok(window(1000, 0, 200)));
    r.source.push(Ok(window(1000, 0, 0)));
    let o = r.tick().await.unwrap();
    assert_eq!(o.verdicts.as_ref().unwrap()[0].outcome, Outcome::Fail);
    // A clean interval does not wash out a breach: 200 errors in 2000 requests still fail, and
    // the second consecutive failure (failureThreshold 2) rolls back.
    let o = r.tick().await.unwrap();
    let v = &o.verdicts.as_ref().unwrap()[0];
    assert_eq!((v.outcome, v.n_canary), (Outcome::Fail, 2000));
    assert_eq!(o.status.phase, Phase::RolledBack);
    assert_eq!(
        o.status.evidence, None,
        "an ended rollout carries no evidence"
    );
}

#[tokio::test]
async fn a_command_goes_through_the_engine_once_and_the_next_tick_does_not_rewrite() {
    let mut r = Run::new();
    r.source.push(Err(unreachable()));
    r.tick().await.unwrap(); // Pending -> the first step, written.
    assert_eq!(r.target.canary_percents(), [10]);
    let done = r.command(Command::Pause).await.unwrap();
    assert_eq!(done.status.phase, Phase::Paused);
    assert_eq!(done.at, r.clock.now(), "the engine's clock");
    assert!(!done.applied, "the split did not change: nothing written");
    r.status = done.status;
    // Refused without a write: resume applies, pause does not.
    let again = r.command(Command::Pause).await;
    assert!(
        matches!(again, Err(CommandError::NotApplicable(_))),
        "{again:?}"
    );
    let aborted = r.command(Command::Abort).await.unwrap();
    assert!(aborted.applied);
    assert_eq!(r.target.canary_percents(), [10, 0]);
    r.status = aborted.status;
    // The engine knows what the command wrote: the tick after it writes nothing new.
    r.source.push(Err(unreachable()));
    let o = r.tick().await.unwrap();
    assert!(!o.applied);
    assert_eq!(r.target.canary_percents(), [10, 0]);
}

#[tokio::test]
async fn a_command_whose_split_cannot_be_written_changes_no_status() {
    let mut r = Run::new();
    r.source.push(Err(unreachable()));
    r.tick().await.unwrap();
    r.target.fail.store(true, Ordering::SeqCst);
    let e = r.command(Command::Promote).await;
    assert!(
        matches!(e, Err(CommandError::Engine(EngineError::Apply { .. }))),
        "{e:?}"
    );
    assert_eq!(r.target.canary_percents(), [10]);
}

/// A pass over two policies sharing one config: decided apart, written together — what is already
/// in effect is skipped, and a failed write counts nothing as written, so the next pass retries.
#[tokio::test]
async fn a_pass_writes_once_skips_what_is_in_effect_and_retries_a_failure() {
    let mut run = Run::new();
    let mut other = CanaryPolicy::test()
        .steps(&[10, 50])
        .only_error_rate(0.01)
        .validated();
    other.name = "churn-model".into();
    other.filter_template.name = "churn-model".into();
    other.filter_template.hosts = vec!["churn-model".into()];
    let (a, b) = (policy(), other);
    let status = CanaryPolicyStatus::default();
    let mut decided = Vec::new();
    for p in [&a, &b] {
        run.source.push(Ok(window(100, 0, 0)));
        let input = TickInput {
            policy: p,
            status: &status,
            peers: &[],
        };
        decided.push(run.engine.decide(input, &mut run.source).await);
    }
    let at: Vec<(&ValidatedPolicy, Weights)> =
        vec![(&a, decided[0].weights()), (&b, decided[1].weights())];
    let desired = render_all(&at).unwrap();
    assert!(Arc::ptr_eq(
        &desired[0].plugin_config,
        &desired[1].plugin_config
    ));

    run.target.fail.store(true, Ordering::SeqCst);
    assert!(run.engine.write_all(&desired, &run.target).await.is_err());
    run.target.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        run.engine.write_all(&desired, &run.target).await.unwrap(),
        [true, true],
        "nothing counted as written after the failure"
    );
    assert_eq!(run.target.writes().len(), 2);
    assert_eq!(
        run.engine.write_all(&desired, &run.target).await.unwrap(),
        [false, false],
        "in effect: nothing to write"
    );
    assert_eq!(run.target.writes().len(), 2);
    // Concluded, the tick reports the split the pass wrote for it.
    let out = run.engine.conclude(&a, decided.remove(0), true).await;
    assert_eq!(out.weights, desired_weights(&desired[0], &a));
}

/// The canary weight `policy` has in `d`'s config.
fn desired_weights(d: &DesiredTraffic, policy: &ValidatedPolicy) -> Weights {
    let p = d
        .plugin_config
        .policies
        .iter()
        .find(|p| p.name == policy.name)
        .unwrap();
    let bp = p
        .variants
        .iter()
        .find(|v| v.name == policy.canary_subset)
        .unwrap()
        .weight_bp;
    Weights::with_canary_bp(bp)
}

/// A peer in shadow is in effect with its mirror, as written in its routes: a config rendered from
/// it keeps the shadow instead of undoing it.
#[test]
fn a_shadow_in_effect_keeps_its_mirror() {
    let p = policy();
    let written = Written::default();
    let plugin = p.plugin();
    assert_eq!(written.in_effect(&plugin, &p.key(), &p.canary_subset), None);
    for w in [Weights::shadow(2500), Weights::with_canary_bp(1000)] {
        written.record(&mlcanary_core::render::desired_traffic(&p, w, &[]).unwrap());
        assert_eq!(
            written.in_effect(&plugin, &p.key(), &p.canary_subset),
            Some(w)
        );
    }
}
