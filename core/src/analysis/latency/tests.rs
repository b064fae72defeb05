use super::*;
use crate::analysis::test_support::Once;
use crate::window::VariantWindow;

const INF: f64 = f64::INFINITY;

/// A cumulative histogram with `n` observations, `share_above[i]` of them above `les[i]`.
fn hist(n: f64, les: &[f64], share_above: &[f64]) -> VariantWindow {
    let mut duration: Vec<Bucket> = les
        .iter()
        .zip(share_above)
        .map(|(&le, &s)| Bucket {
            le,
            count: (n * (1.0 - s)).round(),
        })
        .collect();
    duration.push(Bucket { le: INF, count: n });
    VariantWindow {
        requests: n as u64,
        duration,
        ..Default::default()
    }
}

const LES: [f64; 4] = [10.0, 50.0, 100.0, 500.0];

fn judge(rule: &LatencyRule, canary: VariantWindow, stable: VariantWindow) -> Verdict {
    latency("p99", rule, &Once::new(&canary, &stable).obs())
}

fn rule(bound: LatencyBound) -> LatencyRule {
    LatencyRule {
        quantile: 0.99,
        bound,
        alpha: 0.01,
        min_requests: 100,
    }
}

#[test]
fn a_tail_shown_beyond_the_bound_fails() {
    // 5 % of 2000 canary requests slower than 100 ms: the p99 is shown above 100 ms.
    let canary = hist(2000.0, &LES, &[0.5, 0.2, 0.05, 0.001]);
    let stable = hist(20_000.0, &LES, &[0.5, 0.05, 0.005, 0.0]);
    let v = judge(
        &rule(LatencyBound::MaxMs(100.0)),
        canary.clone(),
        stable.clone(),
    );
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!(v.message.contains("slower than 100 ms"), "{}", v.message);
    // The same canary against 500 ms: 0.1 % slower, shown within.
    let v = judge(&rule(LatencyBound::MaxMs(500.0)), canary, stable);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
    assert!(v.harm_excluded, "{}", v.message);
}

#[test]
fn a_point_just_over_the_bound_is_not_a_failure() {
    // 1.3 % slower than 100 ms on 500 requests: above the p99 bound by its point, not shown.
    let canary = hist(500.0, &LES, &[0.5, 0.1, 0.013, 0.0]);
    let stable = hist(5000.0, &LES, &[0.5, 0.1, 0.01, 0.0]);
    let v = judge(&rule(LatencyBound::MaxMs(100.0)), canary, stable);
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
    assert!(!v.harm_excluded);
}

#[test]
fn relative_bounds_need_the_canary_worse_than_stable_too() {
    // Stable's p99 ≈ 50 ms; 2 × → 100 ms. The canary: 5 % slower than 100 ms.
    let canary = hist(2000.0, &LES, &[0.5, 0.2, 0.05, 0.0]);
    let stable = hist(20_000.0, &LES, &[0.5, 0.01, 0.003, 0.0]);
    let v = judge(
        &rule(LatencyBound::RatioToStable(2.0)),
        canary.clone(),
        stable,
    );
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert_eq!(v.threshold.map(|t| t.round()), Some(100.0));
    // A stable as slow as the canary: nothing is the canary's.
    let v = judge(
        &rule(LatencyBound::RatioToStable(1.0)),
        canary.clone(),
        canary,
    );
    assert_ne!(v.outcome, Outcome::Fail, "{}", v.message);
}

#[test]
fn little_traffic_and_unknown_quantiles_are_inconclusive() {
    let canary = hist(99.0, &LES, &[0.5, 0.2, 0.05, 0.0]);
    let stable = hist(5000.0, &LES, &[0.5, 0.01, 0.0, 0.0]);
    let v = judge(&rule(LatencyBound::MaxMs(500.0)), canary, stable.clone());
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
    // Stable's p99 in the +Inf bucket: no relative limit.
    let slow = hist(5000.0, &LES, &[0.5, 0.1, 0.05, 0.05]);
    let v = judge(&rule(LatencyBound::RatioToStable(1.5)), stable, slow);
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
    assert!(
        v.message.contains("stable's quantile unknown"),
        "{}",
        v.message
    );
}
