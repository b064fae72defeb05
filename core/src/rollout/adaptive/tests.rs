use std::time::{Duration, SystemTime};

use proptest::prelude::*;

use super::*;
use crate::analysis::{Outcome, Verdict};
use crate::fixtures::TestPolicy;
use crate::policy::{AdaptiveSpec, CanaryPolicyStatus, Phase};
use crate::rollout::{step, Hold, RolloutEvent};

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

/// The fixture with only an error-rate check (max 1 %, minRequests 100) on the adaptive schedule.
fn policy(a: AdaptiveSpec, failure_threshold: u32) -> ValidatedPolicy {
    let mut p = TestPolicy::fraud_model()
        .only_error_rate(0.01)
        .no_pauses()
        .min_requests(100)
        .failure_threshold(failure_threshold)
        .deadline("1h");
    let s = &mut p.spec.schedule;
    s.steps = None;
    s.step_weight = None;
    s.max_weight = None;
    s.adaptive = Some(a);
    p.validated()
}

fn defaults() -> ValidatedPolicy {
    policy(AdaptiveSpec::default(), 2)
}

/// An error-rate verdict: `rate` of `n` canary requests (and `n` stable).
fn verdict(outcome: Outcome, rate: f64, n: u64) -> Verdict {
    Verdict {
        check: "errors".into(),
        outcome,
        canary: Some(rate),
        stable: Some(rate),
        threshold: Some(0.01),
        n_canary: n,
        n_stable: n,
        p_value: None,
        message: String::new(),
        harm_excluded: outcome == Outcome::Pass,
        ..Default::default()
    }
}

fn started(p: &ValidatedPolicy) -> CanaryPolicyStatus {
    step(&CanaryPolicyStatus::default(), None, p, t0()).status
}

#[test]
fn defaults_validate_to_a_5_to_50_percent_schedule() {
    let p = defaults();
    let a = p.adaptive.expect("adaptive");
    assert_eq!(
        (a.initial_bp, a.min_step_bp, a.max_step_bp, a.max_bp),
        (500, 500, 2500, 5000)
    );
    assert_eq!(p.steps_bp, vec![500, 5000]);
    assert!(p.pauses.iter().all(Option::is_none));
}

#[test]
fn adaptive_excludes_fixed_steps_and_checks_its_fields() {
    let mut p = TestPolicy::fraud_model().only_error_rate(0.01).no_pauses();
    p.spec.schedule.adaptive = Some(AdaptiveSpec::default());
    let e = p.validate().unwrap_err();
    assert!(e.field.starts_with("spec.schedule."), "{e}");
    assert!(e.reason.contains("adaptive"), "{e}");
    let bad = |a: AdaptiveSpec| {
        let mut p = TestPolicy::fraud_model().only_error_rate(0.01).no_pauses();
        let s = &mut p.spec.schedule;
        s.steps = None;
        s.step_weight = None;
        s.max_weight = None;
        s.adaptive = Some(a);
        p.validate().unwrap_err().field
    };
    let f = "spec.schedule.adaptive";
    assert_eq!(
        bad(AdaptiveSpec {
            growth_factor: Some(1.0),
            ..Default::default()
        }),
        format!("{f}.growthFactor")
    );
    assert_eq!(
        bad(AdaptiveSpec {
            min_step_weight: Some(30),
            max_step_weight: Some(10),
            ..Default::default()
        }),
        format!("{f}.maxStepWeight")
    );
    assert_eq!(
        bad(AdaptiveSpec {
            initial_weight: Some(60),
            ..Default::default()
        }),
        format!("{f}.initialWeight")
    );
    assert_eq!(
        bad(AdaptiveSpec {
            marginal_margin: Some(0.6),
            ..Default::default()
        }),
        format!("{f}.marginalMargin")
    );
    assert_eq!(
        bad(AdaptiveSpec {
            max_weight: Some(101),
            ..Default::default()
        }),
        format!("{f}.maxWeight")
    );
}

#[test]
fn margins_by_kind() {
    let p = defaults();
    let c = &p.checks[0];
    let m = |rate| margin(c, &verdict(Outcome::Pass, rate, 1000)).unwrap();
    assert!((m(0.002) - 0.8).abs() < 1e-9);
    assert!((m(0.0095) - 0.05).abs() < 1e-9);
    assert!(m(0.02) < 0.0);
    // Relative to stable: canary == stable uses none of the allowance.
    assert_eq!(relative(100.0, 100.0, 120.0), 1.0);
    assert!((relative(110.0, 100.0, 120.0) - 0.5).abs() < 1e-9);
    assert!(relative(130.0, 100.0, 120.0) < 0.0);
    assert_eq!(absolute(0.0, 0.0), 1.0);
    assert_eq!(absolute(0.1, 0.0), -1.0);
}

#[test]
fn classification() {
    let p = defaults();
    let a = p.adaptive.unwrap();
    let one = |v: Verdict| classify(Some(&[v]), &p, &a);
    assert_eq!(one(verdict(Outcome::Pass, 0.001, 200)), Evidence::Wide);
    // Wide margin but below sampleFactor × minRequests.
    assert_eq!(one(verdict(Outcome::Pass, 0.001, 199)), Evidence::Pass);
    assert_eq!(one(verdict(Outcome::Pass, 0.007, 1000)), Evidence::Pass);
    assert_eq!(
        one(verdict(Outcome::Pass, 0.0095, 1000)),
        Evidence::Marginal
    );
    assert_eq!(
        one(verdict(Outcome::Inconclusive, 0.0, 10)),
        Evidence::Inconclusive
    );
    assert_eq!(one(verdict(Outcome::Fail, 0.05, 1000)), Evidence::Fail);
    assert_eq!(classify(None, &p, &a), Evidence::Inconclusive);
    assert_eq!(classify(Some(&[]), &p, &a), Evidence::Inconclusive);
}

#[test]
fn a_sequential_check_is_wide_once_harm_is_excluded_and_never_marginal() {
    let p = defaults();
    let a = p.adaptive.unwrap();
    let sequential = |harm_excluded| Verdict {
        interval: Some([0.006, 0.014]),
        harm_excluded,
        // At the limit by its point value: a point check would be marginal.
        ..verdict(Outcome::Pass, 0.0099, 1000)
    };
    assert_eq!(classify(Some(&[sequential(false)]), &p, &a), Evidence::Pass);
    assert_eq!(classify(Some(&[sequential(true)]), &p, &a), Evidence::Wide);
}

#[test]
fn a_wide_canary_doubles_to_the_cap_then_promotes() {
    let p = defaults();
    let mut s = started(&p);
    assert_eq!(s.canary_weight_bp, 500);
    let wide = [verdict(Outcome::Pass, 0.0, 1000)];
    let mut weights = vec![s.canary_weight_bp];
    while s.phase == Phase::Progressing {
        s = step(&s, Some(&wide), &p, t0()).status;
        weights.push(s.canary_weight_bp);
    }
    assert_eq!(weights, vec![500, 1000, 2000, 4000, 5000, 10000]);
    assert_eq!(s.phase, Phase::Promoted);
}

#[test]
fn plain_passes_grow_by_the_smallest_step_and_marginal_ones_step_back() {
    let p = defaults();
    let mut s = started(&p);
    let plain = [verdict(Outcome::Pass, 0.007, 1000)];
    s = step(&s, Some(&plain), &p, t0()).status;
    assert_eq!(s.canary_weight_bp, 1000);
    s = step(&s, Some(&[verdict(Outcome::Pass, 0.0, 1000)]), &p, t0()).status;
    assert_eq!(s.canary_weight_bp, 2000);
    let marginal = [verdict(Outcome::Pass, 0.0099, 1000)];
    let out = step(&s, Some(&marginal), &p, t0());
    assert_eq!(
        out.status.canary_weight_bp, 1000,
        "back by the step that led here"
    );
    assert_eq!(out.status.phase, Phase::Progressing);
    // Marginal at the first weight holds there (0 is only for a rollback).
    let low = started(&p);
    let out = step(&low, Some(&marginal), &p, t0());
    assert_eq!(out.status.canary_weight_bp, 500);
    assert_eq!(out.events, vec![RolloutEvent::Held(Hold::Marginal)]);
}

#[test]
fn one_failure_steps_back_and_the_threshold_rolls_back() {
    let p = defaults();
    let mut s = started(&p);
    let wide = [verdict(Outcome::Pass, 0.0, 1000)];
    s = step(&s, Some(&wide), &p, t0()).status;
    s = step(&s, Some(&wide), &p, t0()).status;
    assert_eq!(s.canary_weight_bp, 2000);
    let fail = [verdict(Outcome::Fail, 0.05, 1000)];
    s = step(&s, Some(&fail), &p, t0()).status;
    assert_eq!(
        (s.phase, s.canary_weight_bp, s.failed_checks),
        (Phase::Progressing, 1000, 1)
    );
    s = step(&s, Some(&fail), &p, t0()).status;
    assert_eq!((s.phase, s.canary_weight_bp), (Phase::RolledBack, 0));
}

#[test]
fn the_manual_gate_holds_at_the_cap() {
    let mut p = defaults();
    p.manual_gate = true;
    let mut s = started(&p);
    let wide = [verdict(Outcome::Pass, 0.0, 1000)];
    for _ in 0..10 {
        s = step(&s, Some(&wide), &p, t0()).status;
    }
    assert_eq!((s.phase, s.canary_weight_bp), (Phase::Progressing, 5000));
    assert_eq!(s.step_index, Some(1), "at the cap: the last nominal step");
}

/// One interval's verdicts, drawn: outcome 0 pass / 1 fail / 2 inconclusive / 3 none.
fn arb_interval() -> impl Strategy<Value = (u8, f64, u64)> {
    (0u8..4, 0.0f64..0.012, 0u64..3000)
}

fn arb_adaptive() -> impl Strategy<Value = AdaptiveSpec> {
    (
        1u32..=20,
        0u32..=40,
        1u32..=100,
        11u32..=40,
        0u32..=60,
        0u32..=9,
    )
        .prop_map(|(min, extra, max_w, g10, wide, marginal)| AdaptiveSpec {
            initial_weight: None,
            min_step_weight: Some(min),
            max_step_weight: Some((min + extra).min(100)),
            max_weight: Some(max_w.max(min)),
            growth_factor: Some(f64::from(g10) / 10.0),
            wide_margin: Some(f64::from(wide.max(10)) / 100.0),
            marginal_margin: Some(f64::from(marginal) / 100.0),
            sample_factor: None,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Never above maxWeight before promotion, never 0 while progressing, never grows on an
    /// inconclusive interval or no data, and never moves more than maxStepWeight in one interval.
    #[test]
    fn adaptive_weights_stay_bounded(
        spec in arb_adaptive(),
        threshold in 1u32..4,
        intervals in proptest::collection::vec(arb_interval(), 1..40),
    ) {
        let p = policy(spec, threshold);
        let a = p.adaptive.unwrap();
        let mut s = started(&p);
        for (k, (o, rate, n)) in intervals.into_iter().enumerate() {
            let now = t0() + Duration::from_secs(30 * (k as u64 + 1));
            let verdicts = match o {
                0 => Some(vec![verdict(Outcome::Pass, rate, n)]),
                1 => Some(vec![verdict(Outcome::Fail, rate, n)]),
                2 => Some(vec![verdict(Outcome::Inconclusive, rate, n)]),
                _ => None,
            };
            let before = s.canary_weight_bp;
            let out = step(&s, verdicts.as_deref(), &p, now);
            let after = out.status.canary_weight_bp;
            match out.status.phase {
                Phase::Promoted => prop_assert_eq!(after, 10000),
                Phase::RolledBack => prop_assert_eq!(after, 0),
                _ => {
                    prop_assert!(after <= a.max_bp, "{} above max {}", after, a.max_bp);
                    prop_assert!(after > 0);
                    prop_assert!(after.abs_diff(before) <= a.max_step_bp);
                }
            }
            if o >= 2 {
                prop_assert!(after <= before, "grew on no evidence: {} -> {}", before, after);
            }
            s = out.status;
            if s.phase.is_terminal() {
                break;
            }
        }
    }

    /// A breach (failureThreshold consecutive failed analyses) always ends at 0, from wherever the
    /// rollout got to.
    #[test]
    fn a_breach_always_ends_at_zero(
        spec in arb_adaptive(),
        threshold in 1u32..4,
        before in proptest::collection::vec(0u8..3, 0..20),
    ) {
        let p = policy(spec, threshold);
        let mut s = started(&p);
        for o in before {
            let v = match o {
                0 => verdict(Outcome::Pass, 0.0, 1000),
                1 => verdict(Outcome::Pass, 0.0099, 1000),
                _ => verdict(Outcome::Inconclusive, 0.0, 10),
            };
            s = step(&s, Some(&[v]), &p, t0()).status;
        }
        prop_assume!(!s.phase.is_terminal());
        let fail = [verdict(Outcome::Fail, 0.05, 1000)];
        for _ in 0..threshold {
            s = step(&s, Some(&fail), &p, t0()).status;
        }
        prop_assert_eq!(s.phase, Phase::RolledBack);
        prop_assert_eq!(s.canary_weight_bp, 0);
    }
}

#[test]
fn the_step_column_reads_below_or_at_the_cap() {
    let p = defaults();
    let steps = Some(p.steps_bp.len());
    let mut s = started(&p);
    let wide = [verdict(Outcome::Pass, 0.0, 1000)];
    let mut shown = Vec::new();
    while s.phase == Phase::Progressing {
        let c = s.clone().with_columns(steps);
        shown.push((c.canary_weight_percent.unwrap(), c.step.unwrap()));
        s = step(&s, Some(&wide), &p, t0()).status;
    }
    let want: Vec<(f64, String)> = [(5.0, "1/2"), (10.0, "1/2"), (20.0, "1/2"), (40.0, "1/2")]
        .into_iter()
        .chain([(50.0, "2/2")])
        .map(|(w, st)| (w, st.to_owned()))
        .collect();
    assert_eq!(shown, want);
}
