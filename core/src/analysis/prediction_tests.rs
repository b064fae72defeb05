//! The prediction checks against hand-computed values (the arithmetic is in each comment), and
//! the two properties every rate check must have: identical variants never fail, tiny samples
//! never fail.

use std::collections::BTreeMap;

use proptest::prelude::*;

use super::disparity::{log_ratio, segment_disparity, DisparityRule};
use super::drift::{bins, prediction_drift, psi};
use super::positive_rate::positive_rate;
use super::quantile::Bucket;
use super::*;
use crate::policy::validated::ShiftBound;

const INF: f64 = f64::INFINITY;

fn close(a: f64, b: f64, tol: f64) {
    assert!((a - b).abs() < tol, "{a} vs {b}");
}

/// A window with a score histogram from per-bin counts at `les`.
fn scores(les: &[f64], per_bin: &[u64]) -> VariantWindow {
    let mut cum = 0;
    let scores = les
        .iter()
        .zip(per_bin)
        .map(|(&le, &n)| {
            cum += n;
            Bucket {
                le,
                count: cum as f64,
            }
        })
        .collect();
    VariantWindow {
        scores,
        scored: cum,
        ..Default::default()
    }
}

fn rates(scored: u64, positives: u64) -> VariantWindow {
    VariantWindow {
        scored,
        positives,
        ..Default::default()
    }
}

/// Segments from `(label, scored, positives)`.
fn segs(list: &[(&str, u64, u64)]) -> VariantWindow {
    let segments: BTreeMap<String, SegmentCounts> = list
        .iter()
        .map(|&(l, n, x)| {
            let c = SegmentCounts {
                requests: n,
                errors: 0,
                scored: n,
                positives: x,
            };
            (l.to_owned(), c)
        })
        .collect();
    VariantWindow {
        scored: list.iter().map(|s| s.1).sum(),
        positives: list.iter().map(|s| s.2).sum(),
        segments,
        ..Default::default()
    }
}

const LES: [f64; 5] = [250.0, 500.0, 750.0, 1000.0, INF];

#[test]
fn psi_hand_computed() {
    // Canary bins 20/30/30/20/0 %, stable 40/30/20/10/0 % (the last bin empty on both: skipped):
    // PSI = (.2-.4)ln(.5) + 0 + (.3-.2)ln(1.5) + (.2-.1)ln 2 = .138629 + .040547 + .069315 = .248491.
    let c = scores(&LES, &[20, 30, 30, 20, 0]);
    let s = scores(&LES, &[40, 30, 20, 10, 0]);
    let b = bins(&c.scores, &s.scores).unwrap();
    assert_eq!(b.canary, [20.0, 30.0, 30.0, 20.0, 0.0]);
    close(psi(&b).unwrap(), 0.248_491, 1e-6);
    // Identical: 0.
    close(
        psi(&bins(&c.scores, &c.scores).unwrap()).unwrap(),
        0.0,
        1e-12,
    );
    // Empty canary bin where stable has 10 %: its share is EPSILON = 1e-4.
    // (1e-4 - .1) ln(1e-4/.1) + 2 · (.5 - .45) ln(.5/.45) = .690085 + .010536 = .700621.
    let les = [100.0, 500.0, INF];
    let c = scores(&les, &[0, 50, 50]);
    let s = scores(&les, &[10, 45, 45]);
    close(
        psi(&bins(&c.scores, &s.scores).unwrap()).unwrap(),
        0.700_621,
        1e-6,
    );
}

#[test]
fn bins_use_common_bounds_and_need_inf() {
    // Stable also reports 300 (another bucket layout): only 250, 500, +Inf are compared.
    let c = scores(&[250.0, 500.0, INF], &[10, 10, 10]);
    let mut s = scores(&[250.0, 500.0, INF], &[5, 10, 15]);
    s.scores.push(Bucket {
        le: 300.0,
        count: 7.0,
    });
    let b = bins(&c.scores, &s.scores).unwrap();
    assert_eq!(b.le, [250.0, 500.0, INF]);
    assert_eq!(b.stable, [5.0, 10.0, 15.0]);
    let no_inf = scores(&[250.0, 500.0], &[10, 10]);
    assert!(bins(&no_inf.scores, &s.scores).is_none());
}

#[test]
fn drift_table() {
    // The PSI .248491 case; chi-square on the counts: expected 30/30/25/15 per side,
    // X² = 2·(100/30 + 0 + 25/25 + 25/15) = 12.0, df 3, p = 0.007383.
    let c = scores(&LES, &[20, 30, 30, 20, 0]);
    let s = scores(&LES, &[40, 30, 20, 10, 0]);
    let cases = [
        // (maxPsi, minSamples, alpha) → outcome
        (0.2, 100, 0.05, Outcome::Fail),
        (0.25, 100, 0.05, Outcome::Pass),
        (0.2, 100, 0.005, Outcome::Inconclusive), // above the limit, p .0074 not below .005
        (0.2, 101, 0.05, Outcome::Inconclusive),  // 100 scored < minSamples
    ];
    for (i, &(max, min, alpha, want)) in cases.iter().enumerate() {
        let v = prediction_drift("drift", max, min, alpha, &c, &s);
        assert_eq!(v.outcome, want, "case {i}: {}", v.message);
    }
    let v = prediction_drift("drift", 0.2, 100, 0.05, &c, &s);
    close(v.canary.unwrap(), 0.248_491, 1e-6);
    close(v.p_value.unwrap(), 0.007_383, 1e-5);
    assert_eq!((v.n_canary, v.n_stable, v.threshold), (100, 100, Some(0.2)));
    // No score histogram at all (predictions not configured): inconclusive, never fail.
    let v = prediction_drift("drift", 0.2, 1, 0.05, &w0(), &w0());
    assert_eq!(v.outcome, Outcome::Inconclusive);
}

fn w0() -> VariantWindow {
    VariantWindow::default()
}

#[test]
fn positive_rate_table() {
    // Canary 60/400 = .15, stable 50/500 = .10: relative shift .5, absolute .05; two-sided pooled
    // z: pooled 110/900, se .021972, z 2.2756, p .022870.
    let (c, s) = (rates(400, 60), rates(500, 50));
    let cases = [
        (ShiftBound::Relative(0.2), 0.05, 100, Outcome::Fail),
        (ShiftBound::Relative(0.2), 0.01, 100, Outcome::Inconclusive), // p .0229 ≥ .01
        (ShiftBound::Relative(0.6), 0.05, 100, Outcome::Pass),
        (ShiftBound::Absolute(0.04), 0.05, 100, Outcome::Fail),
        (ShiftBound::Absolute(0.06), 0.05, 100, Outcome::Pass),
        (ShiftBound::Relative(0.2), 0.05, 401, Outcome::Inconclusive), // 400 < minSamples
    ];
    for (i, &(bound, alpha, min, want)) in cases.iter().enumerate() {
        let v = positive_rate("pr", bound, alpha, min, &c, &s);
        assert_eq!(v.outcome, want, "case {i}: {}", v.message);
    }
    let v = positive_rate("pr", ShiftBound::Relative(0.2), 0.05, 100, &c, &s);
    assert_eq!((v.canary, v.stable), (Some(0.15), Some(0.1)));
    close(v.p_value.unwrap(), 0.022_870, 5e-5);
    // A model that flags far fewer is as wrong: the same numbers the other way round fail too.
    let v = positive_rate(
        "pr",
        ShiftBound::Absolute(0.04),
        0.05,
        100,
        &rates(500, 50),
        &rates(400, 60),
    );
    assert_eq!(v.outcome, Outcome::Fail);
    // Stable flags nothing, canary 5/400: relative shift infinite; pooled 5/900, se .004986,
    // z 2.5070, p .012177.
    let v = positive_rate(
        "pr",
        ShiftBound::Relative(0.2),
        0.05,
        100,
        &rates(400, 5),
        &rates(500, 0),
    );
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    close(v.p_value.unwrap(), 0.012_177, 5e-5);
}

fn rule(alpha: f64, min: u64) -> DisparityRule {
    DisparityRule {
        min_ratio: 0.8,
        max_ratio: 1.25,
        alpha,
        min_samples: min,
    }
}

/// The case study: better overall, but the 60+ segment is flagged twice as often.
#[test]
fn disparity_names_the_elderly_segment() {
    let canary = segs(&[("18-30", 400, 40), ("60+", 300, 60), ("other", 100, 12)]);
    let stable = segs(&[
        ("18-30", 8000, 800),
        ("60+", 5000, 500),
        ("other", 1000, 100),
    ]);
    let r = segment_disparity("fairness", &rule(0.05, 100), &canary, &stable);
    // 60+: ratio .2/.1 = 2; se = √(1/60 − 1/300 + 1/500 − 1/5000) = .123018;
    // z = (ln 2 − ln 1.25)/se = 3.82062; p = 6.656e-5 < .05/3.
    let v = &r.verdict;
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!(v.message.contains("\"60+\""), "{}", v.message);
    assert!(v.message.contains("ratio 2.000"), "{}", v.message);
    assert_eq!((v.canary, v.stable), (Some(0.2), Some(0.1)));
    assert_eq!(
        (v.n_canary, v.n_stable, v.threshold),
        (300, 5000, Some(1.25))
    );
    close(v.p_value.unwrap(), 6.656e-5, 1e-7);
    let by: BTreeMap<&str, &disparity::SegmentResult> =
        r.segments.iter().map(|s| (s.segment.as_str(), s)).collect();
    assert_eq!(by["18-30"].outcome, Outcome::Pass);
    assert_eq!(by["other"].outcome, Outcome::Pass, "ratio 1.2 is inside");
    assert_eq!(by["60+"].outcome, Outcome::Fail);
    close(by["60+"].ratio, 2.0, 1e-12);
}

#[test]
fn disparity_table() {
    let stable = |l: &str| segs(&[(l, 1000, 100)]);
    let cases = [
        // (canary scored, positives, alpha, minSamples) vs stable 100/1000 in one segment
        // 13/100: ratio 1.3 > 1.25; se = √(1/13 − 1/100 + 1/100 − 1/1000) = .275541,
        // z = (ln 1.3 − ln 1.25)/se = .14234, p = .4434: not significant.
        (100, 13, 0.05, 100, Outcome::Inconclusive),
        // 20/400: ratio .5 < .8; se = √(1/20 − 1/400 + 1/100 − 1/1000) = .237697,
        // z = (ln .8 − ln .5)/se = 1.97732, p = .02400 < .05 (one segment judged).
        (400, 20, 0.05, 100, Outcome::Fail),
        (400, 20, 0.01, 100, Outcome::Inconclusive),
        // Within the band.
        (400, 44, 0.05, 100, Outcome::Pass),
        // Too few canary predictions in the segment: however extreme, inconclusive.
        (99, 99, 0.05, 100, Outcome::Inconclusive),
    ];
    for (i, &(n, x, alpha, min, want)) in cases.iter().enumerate() {
        let v = segment_disparity(
            "f",
            &rule(alpha, min),
            &segs(&[("60+", n, x)]),
            &stable("60+"),
        )
        .verdict;
        assert_eq!(v.outcome, want, "case {i}: {}", v.message);
        assert!(v.message.contains("60+"), "case {i}: {}", v.message);
    }
    let r = segment_disparity(
        "f",
        &rule(0.05, 100),
        &segs(&[("60+", 400, 20)]),
        &stable("60+"),
    );
    close(r.segments[0].p_value.unwrap(), 0.024_003, 1e-5);
    // Bonferroni: the same segment next to two healthy ones is judged at .05/3 = .0167 > .024.
    let canary = segs(&[("60+", 400, 20), ("a", 1000, 100), ("b", 1000, 100)]);
    let stable = segs(&[("60+", 1000, 100), ("a", 1000, 100), ("b", 1000, 100)]);
    let v = segment_disparity("f", &rule(0.05, 100), &canary, &stable).verdict;
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
}

#[test]
fn disparity_zero_positives_use_haldane_correction() {
    // Canary 0/200 vs stable 30/1000: +0.5 to every cell → ln(.5/201) − ln(30.5/1001) = −2.505424,
    // se = √(1/.5 − 1/201 + 1/30.5 − 1/1001) = 1.423662; z = (ln .8 + 2.505424)/se = 1.60311,
    // p = .05446: inconclusive at .05 (no positives in 200 is weak evidence), not fail.
    let (lr, se) = log_ratio(0, 200, 30, 1000);
    close(lr, -2.505_424, 1e-6);
    close(se, 1.423_662, 1e-6);
    let r = segment_disparity(
        "f",
        &rule(0.05, 100),
        &segs(&[("other", 200, 0)]),
        &segs(&[("other", 1000, 30)]),
    );
    assert_eq!(
        r.verdict.outcome,
        Outcome::Inconclusive,
        "{}",
        r.verdict.message
    );
    close(r.segments[0].p_value.unwrap(), 0.054_456, 1e-5);
    assert_eq!(r.segments[0].ratio, 0.0);
    // No positives on either side: ratio 1, pass.
    let r = segment_disparity(
        "f",
        &rule(0.05, 100),
        &segs(&[("x", 500, 0)]),
        &segs(&[("x", 500, 0)]),
    );
    assert_eq!(r.verdict.outcome, Outcome::Pass);
    // No segments at all: inconclusive.
    let r = segment_disparity("f", &rule(0.05, 100), &w0(), &w0());
    assert_eq!(r.verdict.outcome, Outcome::Inconclusive);
}

/// Scores and segments drawn so that `scored` / `positives` are consistent.
fn prediction_window(max_n: u64) -> impl Strategy<Value = VariantWindow> {
    let labels = ["18-30", "31-60", "60+", "other"];
    prop::collection::vec((0..=max_n, 0.0..=1.0f64), 4).prop_flat_map(move |per_segment| {
        let total: u64 = per_segment.iter().map(|s| s.0).sum();
        prop::collection::vec(0..=total.max(1), 5).prop_map(move |mut cuts| {
            cuts.sort();
            let mut w = VariantWindow::default();
            for (l, &(n, share)) in labels.iter().zip(&per_segment) {
                let x = ((n as f64) * share).round() as u64;
                w.segments.insert(
                    (*l).to_owned(),
                    SegmentCounts {
                        requests: n,
                        errors: 0,
                        scored: n,
                        positives: x,
                    },
                );
                w.scored += n;
                w.positives += x;
            }
            let les = [100.0, 300.0, 500.0, 700.0, 900.0];
            w.scores = les
                .iter()
                .zip(&cuts)
                .map(|(&le, &c)| Bucket {
                    le,
                    count: c.min(total) as f64,
                })
                .chain(std::iter::once(Bucket {
                    le: INF,
                    count: total as f64,
                }))
                .collect();
            w
        })
    })
}

proptest! {
    /// A canary that behaves exactly like stable never fails any prediction check.
    #[test]
    fn identical_never_fails(x in prediction_window(3000), alpha in 0.001..0.5f64,
                             rel in 0.01..1.0f64, max_psi in 0.001..0.5f64,
                             lo in 0.5..1.0f64, hi in 1.0..2.0f64) {
        prop_assert_ne!(prediction_drift("d", max_psi, 1, alpha, &x, &x).outcome, Outcome::Fail);
        for b in [ShiftBound::Relative(rel), ShiftBound::Absolute(rel.min(0.99))] {
            prop_assert_ne!(positive_rate("p", b, alpha, 1, &x, &x).outcome, Outcome::Fail);
        }
        let r = DisparityRule { min_ratio: lo, max_ratio: hi, alpha, min_samples: 1 };
        prop_assert_ne!(segment_disparity("s", &r, &x, &x).verdict.outcome, Outcome::Fail);
    }

    /// Below the minimum sample on either side no prediction check ever fails, however different
    /// the variants look.
    #[test]
    fn tiny_samples_never_fail(small in prediction_window(24), big in prediction_window(5000),
                               swap in any::<bool>(), alpha in 0.001..0.5f64) {
        let (c, s) = if swap { (big, small) } else { (small, big) };
        // `small` has at most 4 · 24 = 96 scored predictions in all, 24 per segment.
        prop_assert_ne!(prediction_drift("d", 0.001, 100, alpha, &c, &s).outcome, Outcome::Fail);
        prop_assert_ne!(
            positive_rate("p", ShiftBound::Absolute(0.001), alpha, 100, &c, &s).outcome,
            Outcome::Fail
        );
        let r = DisparityRule { min_ratio: 0.99, max_ratio: 1.01, alpha, min_samples: 25 };
        prop_assert_ne!(segment_disparity("s", &r, &c, &s).verdict.outcome, Outcome::Fail);
    }
}
