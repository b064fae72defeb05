use std::time::{Duration, SystemTime};

use super::*;
use crate::analysis::{Outcome, Verdict};
use crate::fixtures::TestPolicy;
use crate::policy::CanaryPolicyStatus;
use crate::rollout::{command, step, Command};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn verdicts(o: Outcome, harm_excluded: bool) -> Vec<Verdict> {
    vec![Verdict {
        check: "errors".into(),
        outcome: o,
        harm_excluded,
        ..Default::default()
    }]
}

fn policy(duration: Option<&str>) -> ValidatedPolicy {
    TestPolicy::fraud_model()
        .steps(&[10, 50])
        .failure_threshold(2)
        .deadline("5m")
        .shadow(10.0, duration)
        .validated()
}

/// Run `outcomes` (outcome, harm excluded) one interval (30 s) apart from a fresh status.
fn run(p: &ValidatedPolicy, outcomes: &[Option<(Outcome, bool)>]) -> Vec<StepOutput> {
    let mut s = CanaryPolicyStatus::default();
    let mut out = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        let v = o.map(|(o, h)| verdicts(o, h));
        let r = step(
            &s,
            v.as_deref(),
            p,
            t0() + Duration::from_secs(30 * i as u64),
        );
        s = r.status.clone();
        out.push(r);
    }
    out
}

const PASS: Option<(Outcome, bool)> = Some((Outcome::Pass, true));
const NARROW: Option<(Outcome, bool)> = Some((Outcome::Pass, false));
const FAIL: Option<(Outcome, bool)> = Some((Outcome::Fail, false));

#[test]
fn pending_enters_the_shadow_with_every_live_request_on_stable() {
    let r = run(&policy(None), &[None]);
    let s = &r[0].status;
    assert_eq!(s.phase, Phase::Progressing);
    assert_eq!(s.canary_weight_bp, 0);
    assert_eq!(s.step_index, None);
    assert_eq!(s.shadow.as_ref().map(|s| s.mirror_bp), Some(1000));
    assert_eq!(r[0].weights, Weights::shadow(1000));
    assert_eq!(
        r[0].events,
        [RolloutEvent::ShadowStarted { mirror_bp: 1000 }]
    );
    assert_eq!(
        s.clone().with_columns(Some(2)).step.as_deref(),
        Some("shadow")
    );
}

#[test]
fn a_conclusive_pass_goes_live_at_the_first_step() {
    let r = run(&policy(None), &[None, NARROW, PASS, PASS]);
    assert_eq!(r[1].events, [RolloutEvent::Held(Hold::Shadow)]);
    assert_eq!(
        r[1].weights,
        Weights::shadow(1000),
        "a narrow pass stays in shadow"
    );
    assert_eq!(r[2].events, [RolloutEvent::ShadowPassed { to_bp: 1000 }]);
    assert_eq!(r[2].status.shadow, None);
    assert_eq!(r[2].weights, Weights::with_canary_bp(1000));
    assert_eq!(r[2].weights.mirror_bp(), 0, "live steps mirror nothing");
    assert_eq!(r[3].weights.canary_bp(), 5000);
}

#[test]
fn a_duration_holds_the_shadow_until_it_is_over() {
    // 30 s intervals, 1 min of shadow: passes at 30 s hold, the one at 60 s goes live.
    let r = run(&policy(Some("1m")), &[None, PASS, PASS]);
    assert_eq!(r[1].events, [RolloutEvent::Held(Hold::Shadow)]);
    assert_eq!(r[2].events, [RolloutEvent::ShadowPassed { to_bp: 1000 }]);
}

#[test]
fn a_failing_shadow_is_rolled_back_before_any_user_saw_the_canary() {
    let r = run(&policy(None), &[None, FAIL, FAIL]);
    assert_eq!(r[1].status.phase, Phase::Progressing);
    assert_eq!(
        r[1].weights,
        Weights::shadow(1000),
        "below the threshold it still mirrors"
    );
    let last = &r[2];
    assert_eq!(last.status.phase, Phase::RolledBack);
    assert_eq!(last.status.shadow, None);
    assert_eq!(last.weights, Weights::ALL_STABLE, "the mirror stops");
    assert!(
        last.status.history.iter().all(|h| h.to_weight_bp == 0),
        "no live weight ever: {:?}",
        last.status.history
    );
}

#[test]
fn no_data_in_shadow_meets_the_progress_deadline() {
    let mut outcomes = vec![None];
    outcomes.extend(std::iter::repeat_n(None, 11));
    let r = run(&policy(None), &outcomes);
    assert_eq!(r[9].status.phase, Phase::Progressing);
    assert_eq!(r[10].status.phase, Phase::RolledBack, "5 min deadline");
}

#[test]
fn commands_in_shadow() {
    let p = policy(None);
    let s = run(&p, &[None])[0].status.clone();
    let paused = command(&s, Command::Pause, t0()).unwrap();
    assert_eq!(
        paused.weights,
        Weights::shadow(1000),
        "a paused shadow still mirrors"
    );
    let resumed = command(&paused.status, Command::Resume, t0()).unwrap();
    assert_eq!(resumed.status.phase, Phase::Progressing);
    let aborted = command(&s, Command::Abort, t0()).unwrap();
    assert_eq!(aborted.weights, Weights::ALL_STABLE);
    assert_eq!(aborted.status.shadow, None);
    let promoted = command(&s, Command::Promote, t0()).unwrap();
    assert_eq!(promoted.weights, Weights::ALL_CANARY);
    assert_eq!(promoted.status.shadow, None);
}

#[test]
fn the_pre_rollout_gate_comes_before_the_shadow() {
    use crate::rollout::webhook_gates::WebhookGate;
    let r = run(&policy(None), &[None, PASS]);
    assert_eq!(WebhookGate::needed_by(&r[0]), Some(WebhookGate::PreRollout));
    assert_eq!(
        WebhookGate::needed_by(&r[1]),
        None,
        "not again when going live"
    );
}

#[test]
fn max_rps_caps_the_mirrored_share() {
    let sh = Shadow {
        mirror_bp: 5000,
        duration: None,
        max_rps: Some(20.0),
    };
    assert_eq!(
        mirror_bp(&sh, None),
        5000,
        "no rate yet: the share asked for"
    );
    assert_eq!(mirror_bp(&sh, Some(10.0)), 5000, "under the cap");
    assert_eq!(mirror_bp(&sh, Some(400.0)), 500, "20 of 400 rps");
    assert_eq!(mirror_bp(&sh, Some(1e9)), 1, "never 0");
    let uncapped = Shadow {
        max_rps: None,
        ..sh
    };
    assert_eq!(mirror_bp(&uncapped, Some(400.0)), 5000);

    let mut p = policy(None);
    p.shadow = Some(sh);
    let out = capped(run(&p, &[None]).remove(0), &p, Some(400.0));
    assert_eq!(out.weights, Weights::shadow(500));
    assert_eq!(out.status.shadow.map(|s| s.mirror_bp), Some(500));
}
