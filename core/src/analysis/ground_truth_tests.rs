//! Each test states its null and alternative; counts are expected values of the named rates, so
//! the outcome is the test's, not luck's.

use super::*;
use crate::analysis::test_support::Once;
use crate::analysis::Outcome;
use crate::window::Window;

const BANDS: [&str; 3] = ["18-30", "31-60", "60+"];

/// Labels of `n` transactions at fraud rate `prevalence`, caught with `tpr`, wrongly flagged at
/// `fpr` (expected counts).
fn labels(n: u64, prevalence: f64, tpr: f64, fpr: f64) -> Labels {
    let pos = (n as f64 * prevalence).round();
    let neg = n as f64 - pos;
    let tp = (pos * tpr).round() as u64;
    let fp = (neg * fpr).round() as u64;
    Labels {
        tp,
        fn_: pos as u64 - tp,
        fp,
        tn: neg as u64 - fp,
    }
}

/// A variant whose segments have the given (tpr, fpr), `n` labelled (and scored) per segment.
fn variant(n: u64, per_band: [(f64, f64); 3]) -> VariantWindow {
    let mut v = VariantWindow::default();
    for (band, (tpr, fpr)) in BANDS.iter().zip(per_band) {
        let l = labels(n, 0.1, tpr, fpr);
        v.segments.insert(
            (*band).into(),
            SegmentCounts {
                scored: n,
                positives: l.tp + l.fp,
                labels: l,
                ..Default::default()
            },
        );
        v.labels = v.labels.add(&l);
        v.scored += n;
        v.positives += l.tp + l.fp;
    }
    v
}

fn coverage() -> Coverage {
    Coverage {
        min_labels: 100,
        min_coverage: 0.25,
    }
}

fn fpr_rule(bake: bool) -> LabelRateRule {
    LabelRateRule {
        metric: LabelMetric::FalsePositiveRate,
        bound: LabelBound::Ratio(1.5),
        alpha: 0.01,
        coverage: coverage(),
        bake,
    }
}

fn odds() -> EqualizedOddsRule {
    EqualizedOddsRule {
        max_ratio: 1.5,
        alpha: 0.01,
        coverage: coverage(),
        bake: false,
    }
}

const SAME: [(f64, f64); 3] = [(0.8, 0.02), (0.8, 0.02), (0.8, 0.02)];
/// v4: the same flags in 60+, but catches traded for false alarms (TPR 0.8 → 0.45, FPR 0.02 →
/// 0.06).
const ELDERLY_FP: [(f64, f64); 3] = [(0.8, 0.02), (0.8, 0.02), (0.45, 0.06)];

#[test]
fn a_canary_like_stable_passes_and_excludes_harm() {
    // H0 true (equal rates, at the expected counts): no failure, and with 20 000 labels per band
    // harm beyond 1.5× is excluded.
    let (c, s) = (variant(20_000, SAME), variant(20_000, SAME));
    let once = Once::new(&c, &s);
    for metric in [
        LabelMetric::Accuracy,
        LabelMetric::FalsePositiveRate,
        LabelMetric::TruePositiveRate,
        LabelMetric::Precision,
    ] {
        let v = label_rate(
            "gt",
            &LabelRateRule {
                metric,
                ..fpr_rule(false)
            },
            &once.obs(),
        );
        assert_eq!(v.outcome, Outcome::Pass, "{metric:?}: {}", v.message);
        assert!(v.harm_excluded, "{metric:?}: {}", v.message);
    }
    let v = equalized_odds("eo", &odds(), &once.obs());
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
    assert!(v.harm_excluded, "{}", v.message);
}

#[test]
fn the_elderly_false_positives_fail_both_checks_naming_the_segment() {
    // H1: the canary's FPR in 60+ is 3× stable's, its flag rate there about the same (40 000
    // labels per band: the interaction pays for estimating the rest's ratio too).
    let (c, s) = (variant(40_000, ELDERLY_FP), variant(40_000, SAME));
    let flags = |v: &VariantWindow| v.segments["60+"].positives as f64;
    let shift = flags(&c) / flags(&s);
    assert!(
        (0.8..1.25).contains(&shift),
        "flag rate ratio {shift}: fairness on flags passes"
    );
    let once = Once::new(&c, &s);
    let v = label_rate("fpr", &fpr_rule(false), &once.obs());
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!(v.message.contains("segment \"60+\""), "{}", v.message);
    let v = equalized_odds("eo", &odds(), &once.obs());
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!(
        v.message.contains("false-positive rate in segment \"60+\""),
        "{}",
        v.message
    );
}

#[test]
fn a_gap_stable_already_has_is_not_the_canary_s() {
    // Both variants have the elderly gap: the interaction is 1, equalized odds passes.
    let (c, s) = (variant(20_000, ELDERLY_FP), variant(20_000, ELDERLY_FP));
    let once = Once::new(&c, &s);
    let v = equalized_odds("eo", &odds(), &once.obs());
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
}

#[test]
fn a_collapsed_detection_rate_fails_equalized_odds_at_an_unchanged_fpr() {
    // H1 as the fraud case study's v4 has it: in 60+ the canary flags as often as stable, its
    // FPR barely moves (0.050 → 0.060) but its detection rate falls 0.35 → 0.09.
    let stable = [(0.35, 0.05); 3];
    let canary = [(0.35, 0.05), (0.35, 0.05), (0.09, 0.06)];
    let once = Once::new(&variant(20_000, canary), &variant(20_000, stable));
    let v = equalized_odds("eo", &odds(), &once.obs());
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!(
        v.message.contains("detection rate in segment \"60+\""),
        "{}",
        v.message
    );
}

#[test]
fn no_verdict_before_the_labels_are_in() {
    // A breach on too few labels (50 per band, below minLabels overall is not the case, but the
    // coverage is): scored 10× more than labelled.
    let (mut c, mut s) = (variant(200, ELDERLY_FP), variant(200, SAME));
    c.scored *= 10;
    s.scored *= 10;
    let once = Once::new(&c, &s);
    let v = label_rate("fpr", &fpr_rule(false), &once.obs());
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
    assert!(v.message.contains("awaiting labels"), "{}", v.message);
    // With bake the step may go on, but harm is not excluded: the last step holds.
    let v = label_rate("fpr", &fpr_rule(true), &once.obs());
    assert_eq!(v.outcome, Outcome::Pass, "{}", v.message);
    assert!(!v.harm_excluded);
    let v = equalized_odds("eo", &odds(), &once.obs());
    assert_eq!(v.outcome, Outcome::Inconclusive, "{}", v.message);
}

#[test]
fn an_absolute_bound_on_the_detection_rate() {
    // H1: TPR 0.8 → 0.6 everywhere; maxDelta 0.05 on the miss rate (0.2 → 0.4).
    let worse = [(0.6, 0.02); 3];
    let once = Once::new(&variant(20_000, worse), &variant(20_000, SAME));
    let rule = LabelRateRule {
        metric: LabelMetric::TruePositiveRate,
        bound: LabelBound::Delta(0.05),
        ..fpr_rule(false)
    };
    let v = label_rate("tpr", &rule, &once.obs());
    assert_eq!(v.outcome, Outcome::Fail, "{}", v.message);
    assert!((v.canary.unwrap() - 0.6).abs() < 0.01 && (v.stable.unwrap() - 0.8).abs() < 0.01);
    // The same data against a loose bound (0.3): pass.
    let loose = LabelRateRule {
        bound: LabelBound::Delta(0.3),
        ..rule
    };
    assert_eq!(
        label_rate("tpr", &loose, &once.obs()).outcome,
        Outcome::Pass
    );
}

#[test]
fn error_sides() {
    let l = Labels {
        tp: 8,
        fp: 2,
        tn: 88,
        fn_: 2,
    };
    assert_eq!(error_side(LabelMetric::Accuracy, &l), (100, 4));
    assert_eq!(error_side(LabelMetric::FalsePositiveRate, &l), (90, 2));
    assert_eq!(error_side(LabelMetric::TruePositiveRate, &l), (10, 2));
    assert_eq!(error_side(LabelMetric::Precision, &l), (10, 2));
}

#[test]
fn labels_of_the_first_windows_at_a_weight_are_left_out_when_settling() {
    let mut w = Window::default();
    w.canary.labels = Labels {
        tp: 1,
        fp: 2,
        tn: 3,
        fn_: 4,
    };
    w.canary.scored = 10;
    w.canary.segments.insert(
        "60+".into(),
        SegmentCounts {
            scored: 10,
            labels: w.canary.labels,
            ..Default::default()
        },
    );
    let mut e = crate::window::Evidence::default();
    for _ in 0..3 {
        e.record_settling(500, &w, 2);
    }
    e.record_settling(1000, &w, 2);
    let at = |bp| e.at_weight(bp).unwrap();
    // Two windows settle at 5 %, the third counts; at 10 % the first settles again.
    assert_eq!(at(500).canary.labels.total(), 10);
    assert_eq!(at(500).canary.segments["60+"].labels.total(), 10);
    assert_eq!(at(500).canary.scored, 30, "only the labels are left out");
    assert!(at(1000).canary.labels.is_empty());
}
