use super::*;
use crate::window::{Evidence, VariantWindow, Window};

const RULE: ErrorRateRule = ErrorRateRule {
    max: 0.01,
    alpha: 0.01,
    min_requests: 100,
    harm_margin: 1.5,
};

fn window(nc: u64, ec: u64, ns: u64, es: u64) -> Window {
    let v = |requests, errors| VariantWindow {
        requests,
        errors,
        ..Default::default()
    };
    Window {
        canary: v(nc, ec),
        stable: v(ns, es),
        ..Default::default()
    }
}

/// The verdict after recording `steps` (weight, window) in order; the last is the current one.
fn judge(rule: &ErrorRateRule, steps: &[(u32, Window)]) -> Verdict {
    let mut evidence = Evidence::default();
    for (w, win) in steps {
        evidence.record(*w, win);
    }
    let (weight_bp, latest) = steps.last().unwrap();
    error_rate(
        "errors",
        rule,
        &Observations {
            evidence: &evidence,
            weight_bp: *weight_bp,
            latest,
        },
    )
}

#[test]
fn a_clear_breach_fails_with_its_interval_above_the_bound() {
    // 5 % vs 1 %, max 1 %, one 30 s interval at 10 % of 200 rps (stable's spread not yet
    // measured: the judge assumes φ = 2).
    let v = judge(&RULE, &[(1000, window(600, 30, 5400, 54))]);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    let [lo, hi] = v.interval.unwrap();
    assert!(lo > RULE.max && hi > 0.05, "[{lo}, {hi}]");
    assert!(v.ratio.unwrap()[0] > 1.0);
    assert!(v.p_value.unwrap() <= RULE.alpha);
    assert!(!v.harm_excluded);
}

#[test]
fn evidence_adds_up_across_steps() {
    // Each step alone is not enough to fail a 2× canary; the rollout's evidence is.
    let first = (500, window(300, 6, 5700, 57));
    let second = (1000, window(600, 12, 5400, 54));
    assert_ne!(
        judge(&RULE, std::slice::from_ref(&first)).outcome,
        Outcome::Fail
    );
    assert_ne!(
        judge(&RULE, std::slice::from_ref(&second)).outcome,
        Outcome::Fail
    );
    let third = (2000, window(1200, 24, 4800, 48));
    let v = judge(&RULE, &[first, second, third]);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert_eq!(v.n_canary, 2100);
}

#[test]
fn little_traffic_is_inconclusive_not_failed() {
    let v = judge(&RULE, &[(500, window(50, 1, 950, 9))]);
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
    assert!(v.message.contains("below minRequests 100"), "{}", v.message);
}

#[test]
fn a_healthy_canary_passes_and_is_promotable_once_harm_is_excluded() {
    let one = judge(&RULE, &[(5000, window(3000, 30, 3000, 30))]);
    assert_eq!(one.outcome, Outcome::Pass, "{}", one.message);
    assert!(
        !one.harm_excluded,
        "30 events cannot exclude 1.5×: {}",
        one.message
    );
    let many: Vec<(u32, Window)> = (0..10)
        .map(|_| (5000, window(3000, 30, 3000, 30)))
        .collect();
    let v = judge(&RULE, &many);
    assert_eq!(v.outcome, Outcome::Pass);
    assert!(v.harm_excluded, "{}", v.message);
    assert!(v.ratio.unwrap()[1] < RULE.harm_margin);
}

#[test]
fn headroom_under_max_excludes_harm_on_the_absolute_side() {
    // 0.2 % vs 0.2 % with max 1 %: too few events to bound the ratio, but clearly within max.
    let v = judge(&RULE, &[(2000, window(3000, 6, 12000, 24))]);
    assert_eq!(v.outcome, Outcome::Pass);
    assert!(v.harm_excluded, "{}", v.message);
    assert!(v.interval.unwrap()[1] < RULE.max);
    assert!(v.ratio.unwrap()[1] > RULE.harm_margin);
}

#[test]
fn within_the_slo_but_worse_is_neither_failed_nor_promotable() {
    // 0.9 % vs 0.3 %, max 1 %: clearly worse than stable, not above max.
    let steps: Vec<(u32, Window)> = (0..20).map(|_| (5000, window(3000, 27, 3000, 9))).collect();
    let v = judge(&RULE, &steps);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
    assert!(!v.harm_excluded, "{}", v.message);
    assert!(v.ratio.unwrap()[0] > 1.5);
}

#[test]
fn a_shared_outage_is_a_baseline_problem() {
    // Both at 10 % with max 1 %: the canary is no worse than stable.
    let v = judge(&RULE, &[(500, window(300, 30, 5700, 570))]);
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
    assert!(v.baseline_unhealthy);
    assert!(v.message.contains("baseline unhealthy"), "{}", v.message);
    // A canary clearly worse than an unhealthy stable still fails.
    let v = judge(&RULE, &[(500, window(300, 120, 5700, 570))]);
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!(!v.baseline_unhealthy);
}

#[test]
fn dispersion_from_stable_tempers_the_evidence() {
    // Stable's errors swing far beyond binomial noise from interval to interval (φ ≫ 1): the same
    // canary counts that fail under φ = 1 are not enough.
    let steps: Vec<(u32, Window)> = [30u64, 90, 30, 90, 30, 90, 30, 90]
        .iter()
        .map(|&es| (1000, window(150, 5, 6000, es)))
        .collect();
    let mut evidence = Evidence::default();
    for (w, win) in &steps {
        evidence.record(*w, win);
    }
    assert!(evidence.dispersion.errors.phi() > 10.0);
    let clumped = judge(&RULE, &steps);
    assert_ne!(clumped.outcome, Outcome::Fail, "{}", clumped.message);
    let steady: Vec<(u32, Window)> = (0..8).map(|_| (1000, window(150, 5, 6000, 60))).collect();
    assert_eq!(judge(&RULE, &steady).outcome, Outcome::Fail);
}
