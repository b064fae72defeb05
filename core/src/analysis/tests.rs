use proptest::prelude::*;

use super::quantile::Bucket;
use super::test_support::Once;
use super::*;
use crate::fixtures::TestPolicy;
use crate::policy::validated::LatencyBound;

fn hist(pairs: &[(f64, f64)]) -> VariantWindow {
    let duration = crate::fixtures::buckets(pairs);
    let n = pairs.last().map_or(0.0, |p| p.1) as u64;
    VariantWindow {
        requests: n,
        duration,
        ..Default::default()
    }
}

const INF: f64 = f64::INFINITY;

/// The latency check on `canary` / `stable` as the rollout's only window.
fn latency_once(
    q: f64,
    bound: LatencyBound,
    min: u64,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let rule = latency::LatencyRule {
        quantile: q,
        bound,
        alpha: 0.05,
        min_requests: min,
    };
    latency::latency("l", &rule, &Once::new(canary, stable).obs())
}

/// The error-rate check on `canary` / `stable` as the rollout's only window.
fn errors_once(
    max: f64,
    min: u64,
    alpha: f64,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let rule = error_rate::ErrorRateRule {
        max,
        alpha,
        min_requests: min,
        harm_margin: 1.5,
    };
    error_rate::error_rate("e", &rule, &Once::new(canary, stable).obs())
}

#[test]
fn evaluate_runs_every_check_and_custom_needs_a_value() {
    let p = TestPolicy::fraud_model().min_requests(100).validated();
    let canary = hist(&[
        (10.0, 10.0),
        (50.0, 60.0),
        (100.0, 90.0),
        (500.0, 100.0),
        (INF, 100.0),
    ]);
    let stable = canary.clone();
    let mut window = Window {
        stable,
        canary,
        ..Default::default()
    };
    let v = evaluate_window(&p, &window);
    let names: Vec<&str> = v.iter().map(|v| v.check.as_str()).collect();
    assert_eq!(names, ["errors", "p99", "p50", "positive-rate"]);
    assert_eq!(v[0].outcome, Outcome::Pass);
    assert_eq!(v[1].outcome, Outcome::Pass);
    assert_eq!(v[2].outcome, Outcome::Pass);
    assert_eq!(
        v[3].outcome,
        Outcome::Inconclusive,
        "no custom value from the source"
    );
    window.canary.custom.insert("positive-rate".into(), 0.4);
    assert_eq!(evaluate_window(&p, &window)[3].outcome, Outcome::Fail);
    window.canary.custom.insert("positive-rate".into(), 0.2);
    assert_eq!(evaluate_window(&p, &window)[3].outcome, Outcome::Pass);
    let status = crate::policy::VerdictStatus::from(&evaluate_window(&p, &window)[3]);
    assert_eq!(
        (status.verdict.as_str(), status.canary),
        ("pass", Some(0.2))
    );
}

fn variant(max_n: u64) -> impl Strategy<Value = VariantWindow> {
    (0..=max_n).prop_flat_map(|n| {
        (Just(n), 0..=n, prop::collection::vec(0..=n, 4)).prop_map(|(n, e, mut b)| {
            b.sort();
            let les = [10.0, 50.0, 100.0, 500.0];
            let mut duration: Vec<Bucket> = les
                .iter()
                .zip(&b)
                .map(|(&le, &c)| Bucket {
                    le,
                    count: c as f64,
                })
                .collect();
            duration.push(Bucket {
                le: INF,
                count: n as f64,
            });
            VariantWindow {
                requests: n,
                errors: e,
                duration,
                ..Default::default()
            }
        })
    })
}

proptest! {
    /// Below minRequests on either side no check lets a step advance, and the error rate fails
    /// only on evidence: never while the canary's own rate is within `max`.
    #[test]
    fn low_traffic_never_fails(
        canary in variant(99), stable in variant(5000), swap in any::<bool>(),
        max in 0.0..0.5f64, q in 0.5..0.999f64,
    ) {
        let (canary, stable) = if swap { (stable, canary) } else { (canary, stable) };
        let min = 100;
        let v = errors_once(max, min, 0.05, &canary, &stable);
        if canary.errors as f64 <= max * canary.requests as f64 {
            prop_assert_ne!(v.outcome, Outcome::Fail, "{}", v.message);
        }
        if canary.requests < min || stable.requests < min {
            prop_assert_ne!(v.outcome, Outcome::Pass);
        }
        for b in [LatencyBound::MaxMs(1.0), LatencyBound::RatioToStable(1.0)] {
            let v = latency_once(q, b, min, &canary, &stable);
            if canary.requests < min || (b != LatencyBound::MaxMs(1.0) && stable.requests < min) {
                prop_assert_ne!(v.outcome, Outcome::Pass);
            }
        }
    }

    /// A canary that behaves exactly like stable never fails.
    #[test]
    fn identical_never_fails(x in variant(20_000), max in 0.0..0.5f64, q in 0.01..0.999f64,
                             ratio in 1.0..3.0f64, alpha in 0.001..0.5f64) {
        prop_assert_ne!(errors_once(max, 1, alpha, &x, &x).outcome, Outcome::Fail);
        prop_assert_ne!(
            latency_once(q, LatencyBound::RatioToStable(ratio), 1, &x, &x).outcome,
            Outcome::Fail
        );
    }
}
