//! What the judge's richer verdicts do to a rollout: promotion waits for harm to be excluded, and
//! an unhealthy baseline holds without the deadline turning it into a rollback.

use std::time::{Duration, SystemTime};

use super::*;
use crate::fixtures::TestPolicy;

fn t(i: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + 30 * i)
}

fn verdict(outcome: Outcome, harm_excluded: bool, baseline_unhealthy: bool) -> Vec<Verdict> {
    vec![Verdict {
        check: "errors".into(),
        outcome,
        harm_excluded,
        baseline_unhealthy,
        ..Default::default()
    }]
}

fn policy(unhealthy: &str) -> ValidatedPolicy {
    let mut t = TestPolicy::fraud_model().steps(&[10, 50]).deadline("2m");
    t.spec.analysis.unhealthy_baseline = Some(unhealthy.into());
    t.validated()
}

/// Started at the first step, then one `step` per verdict list, 30 s apart.
fn run(p: &ValidatedPolicy, looks: &[Vec<Verdict>]) -> Vec<StepOutput> {
    let mut s = step(&CanaryPolicyStatus::default(), None, p, t(0)).status;
    looks
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let r = step(&s, Some(v), p, t(i as u64 + 1));
            s = r.status.clone();
            r
        })
        .collect()
}

#[test]
fn the_last_step_holds_until_harm_is_excluded() {
    let p = policy("hold");
    let pass_open = verdict(Outcome::Pass, false, false);
    let mut looks = vec![pass_open.clone(); 8];
    looks.push(verdict(Outcome::Pass, true, false));
    let r = run(&p, &looks);
    assert_eq!(
        r[0].weights.canary_bp(),
        5000,
        "an open pass advances a step"
    );
    for out in &r[1..8] {
        assert_eq!(
            out.status.phase,
            Phase::Progressing,
            "past the 2 m deadline, still held"
        );
        assert_eq!(out.events, [RolloutEvent::Held(Hold::AwaitingEvidence)]);
    }
    let c = r[1]
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Progressing")
        .unwrap();
    assert_eq!(c.reason, "AwaitingEvidence");
    assert!(c.message.contains("errors"), "{}", c.message);
    assert_eq!(r[8].status.phase, Phase::Promoted);
}

#[test]
fn an_unhealthy_baseline_holds_past_the_deadline_and_says_so_once() {
    let p = policy("hold");
    let sick = verdict(Outcome::Inconclusive, false, true);
    let mut looks = vec![sick; 10];
    looks.push(verdict(Outcome::Pass, true, false));
    let r = run(&p, &looks);
    assert_eq!(
        r[0].events,
        [
            RolloutEvent::BaselineUnhealthy {
                checks: vec!["errors".into()]
            },
            RolloutEvent::Held(Hold::BaselineUnhealthy)
        ]
    );
    for out in &r[1..10] {
        assert_eq!(out.events, [RolloutEvent::Held(Hold::BaselineUnhealthy)]);
        assert_eq!(out.weights.canary_bp(), 1000);
    }
    let cond = |o: &StepOutput| {
        o.status
            .conditions
            .iter()
            .find(|c| c.type_ == BASELINE_UNHEALTHY)
            .map(|c| c.status.clone())
    };
    assert_eq!(cond(&r[9]).as_deref(), Some("True"));
    // Recovered: the condition clears and the step advances.
    assert_eq!(cond(&r[10]).as_deref(), Some("False"));
    assert_eq!(r[10].weights.canary_bp(), 5000);
}

#[test]
fn with_roll_back_the_deadline_still_applies_to_an_unhealthy_baseline() {
    let p = policy("rollBack");
    let r = run(&p, &vec![verdict(Outcome::Inconclusive, false, true); 6]);
    assert!(
        r.iter().any(|o| o.status.phase == Phase::RolledBack),
        "{:?}",
        r.last().unwrap().events
    );
}

#[test]
fn a_baseline_that_never_was_unhealthy_adds_no_condition() {
    let r = run(&policy("hold"), &[verdict(Outcome::Pass, true, false)]);
    assert!(r[0]
        .status
        .conditions
        .iter()
        .all(|c| c.type_ != BASELINE_UNHEALTHY));
}
