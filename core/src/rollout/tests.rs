use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::analysis::{Outcome, Verdict};
use crate::fixtures::TestPolicy;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn verdicts(o: Outcome) -> Vec<Verdict> {
    vec![Verdict {
        check: "errors".into(),
        outcome: o,
        canary: None,
        stable: None,
        threshold: None,
        n_canary: 0,
        n_stable: 0,
        p_value: None,
        message: String::new(),
        harm_excluded: o == Outcome::Pass,
        ..Default::default()
    }]
}

fn policy() -> ValidatedPolicy {
    TestPolicy::fraud_model()
        .steps(&[10, 50])
        .failure_threshold(2)
        .deadline("5m")
        .validated()
}

/// Run `outcomes` one interval (30 s) apart from a fresh status; returns every output.
fn run(p: &ValidatedPolicy, outcomes: &[Option<Outcome>]) -> Vec<StepOutput> {
    let mut s = CanaryPolicyStatus::default();
    let mut out = Vec::new();
    for (i, o) in outcomes.iter().enumerate() {
        let v = o.map(verdicts);
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

const P: Option<Outcome> = Some(Outcome::Pass);
const F: Option<Outcome> = Some(Outcome::Fail);
const I: Option<Outcome> = Some(Outcome::Inconclusive);

#[test]
fn passes_walk_the_steps_then_promote() {
    let r = run(&policy(), &[None, P, P]);
    assert_eq!(r[0].status.phase, Phase::Progressing);
    assert_eq!(r[0].weights.canary_bp(), 1000);
    assert_eq!(r[0].events, vec![RolloutEvent::Started { to_bp: 1000 }]);
    assert_eq!(r[1].weights.canary_bp(), 5000);
    assert_eq!(
        r[1].events,
        vec![RolloutEvent::Advanced {
            from_bp: 1000,
            to_bp: 5000
        }]
    );
    assert_eq!(r[2].status.phase, Phase::Promoted);
    assert_eq!(r[2].weights, Weights::ALL_CANARY);
    let h: Vec<(u32, u32)> = r[2]
        .status
        .history
        .iter()
        .map(|h| (h.from_weight_bp, h.to_weight_bp))
        .collect();
    assert_eq!(h, [(0, 1000), (1000, 5000), (5000, 10000)]);
    // Terminal: nothing moves any more.
    let after = step(
        &r[2].status,
        Some(&verdicts(Outcome::Fail)),
        &policy(),
        t0(),
    );
    assert_eq!(
        (after.status.phase, after.weights),
        (Phase::Promoted, Weights::ALL_CANARY)
    );
}

#[test]
fn failure_threshold_consecutive_failures_roll_back() {
    let r = run(&policy(), &[None, F, P, F, F]);
    assert_eq!(r[1].status.failed_checks, 1);
    assert_eq!(r[1].weights.canary_bp(), 1000, "one failure holds");
    assert_eq!(r[2].status.failed_checks, 0, "a pass resets the count");
    assert_eq!(r[2].weights.canary_bp(), 5000);
    assert_eq!(r[4].status.phase, Phase::RolledBack);
    assert_eq!(r[4].weights, Weights::ALL_STABLE);
    assert!(
        matches!(&r[4].events[1], RolloutEvent::RolledBack { from_bp: 5000, reason }
        if reason.contains("2 consecutive failed analyses"))
    );
}

#[test]
fn no_data_holds_until_the_deadline() {
    // 5 m deadline, 30 s intervals: the 10th no-data interval after the start is 300 s later.
    let mut outcomes = vec![None];
    outcomes.extend([None, I].iter().cycle().take(10).copied());
    let r = run(&policy(), &outcomes);
    for o in &r[1..10] {
        assert_eq!(
            (o.status.phase, o.weights.canary_bp()),
            (Phase::Progressing, 1000)
        );
    }
    let last = &r[10];
    assert_eq!(
        (last.status.phase, last.weights),
        (Phase::RolledBack, Weights::ALL_STABLE)
    );
    let reason = &last.status.history.last().unwrap().reason;
    assert!(reason.starts_with("ProgressDeadlineExceeded"), "{reason}");
}

#[test]
fn manual_gate_waits_for_promote() {
    let p = TestPolicy::fraud_model()
        .steps(&[10, 50])
        .manual_gate(true)
        .validated();
    let r = run(&p, &[None, P, P, P]);
    assert_eq!(
        (r[3].status.phase, r[3].weights.canary_bp()),
        (Phase::Progressing, 5000)
    );
    assert_eq!(r[3].events, vec![RolloutEvent::Held(Hold::ManualGate)]);
    let c = command(&r[3].status, Command::Promote, t0()).unwrap();
    assert_eq!(
        (c.status.phase, c.weights),
        (Phase::Promoted, Weights::ALL_CANARY)
    );
}

#[test]
fn pauses_timed_and_open_ended() {
    let p = TestPolicy::fraud_model()
        .steps(&[10, 20, 50])
        .pause(0, Some("1m"))
        .pause(1, None)
        .validated();
    // Start at t0 (pause until t0+60 s); passes at +30 s hold, at +60 s advance to step 1, which
    // pauses until resumed.
    let r = run(&p, &[None, P, P, P]);
    assert_eq!(r[1].events, vec![RolloutEvent::Held(Hold::TimedPause)]);
    assert_eq!(r[2].weights.canary_bp(), 2000);
    assert_eq!(r[2].status.phase, Phase::Paused);
    assert_eq!(
        r[3].weights.canary_bp(),
        2000,
        "paused: passes do not advance"
    );
    let resumed = command(
        &r[3].status,
        Command::Resume,
        t0() + Duration::from_secs(120),
    )
    .unwrap();
    assert_eq!(resumed.status.phase, Phase::Progressing);
    let next = step(
        &resumed.status,
        Some(&verdicts(Outcome::Pass)),
        &p,
        t0() + Duration::from_secs(150),
    );
    assert_eq!(next.weights.canary_bp(), 5000);
}

#[test]
fn commands() {
    let p = policy();
    let started = step(&CanaryPolicyStatus::default(), None, &p, t0()).status;
    let aborted = command(&started, Command::Abort, t0()).unwrap();
    assert_eq!(
        (aborted.status.phase, aborted.weights),
        (Phase::RolledBack, Weights::ALL_STABLE)
    );
    let refused = command(&aborted.status, Command::Promote, t0()).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "promote does not apply: the rollout is RolledBack (finished)"
    );
    let paused = command(&started, Command::Pause, t0()).unwrap();
    assert!(command(&paused.status, Command::Pause, t0()).is_err());
    assert!(command(&started, Command::Resume, t0()).is_err());
    // A new rollout starts from any phase, finished ones included.
    let again = command(
        &aborted.status,
        Command::Start {
            canary: "v3".into(),
        },
        t0(),
    )
    .unwrap();
    assert_eq!(again.status.phase, Phase::Pending);
    assert_eq!(paused.status.phase, Phase::Paused);
    // Paused: no deadline, but failures still roll back.
    let late = t0() + Duration::from_secs(3600);
    assert_eq!(
        step(&paused.status, None, &p, late).status.phase,
        Phase::Paused
    );
    let f1 = step(&paused.status, Some(&verdicts(Outcome::Fail)), &p, late);
    let f2 = step(&f1.status, Some(&verdicts(Outcome::Fail)), &p, late);
    assert_eq!(f2.status.phase, Phase::RolledBack);
}

fn outcome() -> impl Strategy<Value = Option<Outcome>> {
    prop_oneof![Just(None), Just(P), Just(F), Just(I)]
}

fn arb_policy() -> impl Strategy<Value = ValidatedPolicy> {
    (
        prop::collection::btree_set(1u32..=100, 1..5),
        1u32..4,
        any::<bool>(),
    )
        .prop_map(|(steps, threshold, gate)| {
            let steps: Vec<u32> = steps.into_iter().collect();
            TestPolicy::fraud_model()
                .steps(&steps)
                .failure_threshold(threshold)
                .manual_gate(gate)
                .deadline("3m")
                .validated()
        })
}

proptest! {
    #[test]
    fn invariants(p in arb_policy(), outcomes in prop::collection::vec(outcome(), 1..40)) {
        let r = run(&p, &outcomes);
        let mut advancing_ticks = 0;
        let mut prev_bp = 0;
        for (i, o) in r.iter().enumerate() {
            // The split always sums to 100 % and matches the status.
            prop_assert_eq!(o.weights.canary_bp() + o.weights.stable_bp(), 10_000);
            prop_assert_eq!(o.weights.canary_bp(), o.status.canary_weight_bp);
            // A rollback always leaves the canary at 0.
            if o.status.phase == Phase::RolledBack {
                prop_assert_eq!(o.weights.canary_bp(), 0);
            }
            // Weight only rises on a tick whose analysis passed (or the start).
            if o.weights.canary_bp() > prev_bp && i > 0 {
                prop_assert_eq!(outcomes[i], P);
            }
            prev_bp = o.weights.canary_bp();
            // Every step forward (advance or promotion) happens on a passing analysis.
            let forward = o.events.iter().any(|e| {
                matches!(e, RolloutEvent::Advanced { .. } | RolloutEvent::Promoted { .. })
            });
            if forward {
                prop_assert_eq!(outcomes[i], P);
                advancing_ticks += 1;
            }
        }
        let last = r.last().unwrap();
        if last.status.phase == Phase::Promoted {
            // Promoted only after a passing analysis at every step, and never past a closed gate.
            prop_assert!(!p.manual_gate);
            prop_assert_eq!(advancing_ticks, p.steps_bp.len());
        }
    }

    /// With no conclusive data, a rollback happens exactly when the deadline has passed.
    #[test]
    fn missing_data_rolls_back_only_after_the_deadline(
        p in arb_policy(), outcomes in prop::collection::vec(prop_oneof![Just(None), Just(I)], 1..20)
    ) {
        let mut all = vec![None];
        all.extend(outcomes);
        let r = run(&p, &all);
        for (i, o) in r.iter().enumerate().skip(1) {
            let elapsed = Duration::from_secs(30 * i as u64);
            let rolled = o.status.phase == Phase::RolledBack;
            prop_assert_eq!(rolled, elapsed >= p.progress_deadline, "tick {}", i);
            if rolled { break; }
        }
    }
}

#[test]
fn the_columns_follow_explicit_and_step_weight_schedules() {
    let explicit = TestPolicy::fraud_model()
        .steps(&[5, 10, 25, 50])
        .validated();
    let ladder = TestPolicy::fraud_model()
        .step_weight(30, Some(100))
        .validated();
    for (p, want) in [
        (
            &explicit,
            [(5.0, "1/4"), (10.0, "2/4"), (25.0, "3/4"), (50.0, "4/4")],
        ),
        (
            &ladder,
            [(30.0, "1/4"), (60.0, "2/4"), (90.0, "3/4"), (100.0, "4/4")],
        ),
    ] {
        let shown: Vec<(f64, String)> = run(p, &[P, P, P, P])
            .into_iter()
            .map(|o| o.status.with_columns(Some(p.steps_bp.len())))
            .map(|s| (s.canary_weight_percent.unwrap(), s.step.unwrap()))
            .collect();
        let want: Vec<(f64, String)> = want.iter().map(|(w, s)| (*w, (*s).to_owned())).collect();
        assert_eq!(shown, want, "{:?}", p.steps_bp);
    }
    // Before the first step, and for an invalid spec (no schedule), there is no step to show.
    let pending = CanaryPolicyStatus::default().with_columns(Some(4));
    assert_eq!(
        (pending.canary_weight_percent, pending.step),
        (Some(0.0), None)
    );
    let invalid = CanaryPolicyStatus {
        canary_weight_bp: 250,
        step_index: Some(1),
        ..Default::default()
    }
    .with_columns(None);
    assert_eq!(
        (invalid.canary_weight_percent, invalid.step),
        (Some(2.5), None)
    );
    // A spec edited to fewer steps mid-rollout: the index past the end reads as the last step.
    let shrunk = CanaryPolicyStatus {
        step_index: Some(5),
        ..Default::default()
    }
    .with_columns(Some(2));
    assert_eq!(shrunk.step.as_deref(), Some("2/2"));
}
