//! Ground truth: the canary judged on whether it was *right*, from the labels the application sent
//! back with its tickets (`mlcanary_feedback_total`, a confusion matrix per variant and segment).
//!
//! Every rate is read on its error side, where a worse model has *more* events: the
//! false-positive rate `fp / (fp + tn)`, the miss rate `fn / (tp + fn)` (1 − detection rate), the
//! error rate `(fp + fn) / labelled` (1 − accuracy) and the false-discovery rate `fp / (tp + fp)`
//! (1 − precision).
//!
//! **Label rates** (`accuracy`, `falsePositiveRate`, `truePositiveRate`, `precision`), overall and
//! per segment, at `α / (1 + m)` each (Bonferroni over overall and the `m` segments judged):
//! - `maxRatio r`: null "canary's error-side rate ≤ r × stable's", the anytime-valid ratio test
//!   conditional on the split ([`sequential::ratio_log_e`]): given the labelled events of a row,
//!   the canary's share is binomial in `θ n_c / (θ n_c + n_s)`; rows are the rollout's weights;
//! - `maxDelta d`: null "canary's error-side rate ≤ stable's + d", each variant's own
//!   anytime-valid rate interval (at `α / 4`), failing when their difference's lower end
//!   exceeds `d` — exact for Bernoulli labels, no Poisson approximation, less power.
//!
//! **Equalized odds**: per segment, the canary × segment interaction ψ (the canary's rate in the
//! segment over the rest's, divided by stable's) for the false-positive rate and the detection
//! rate (TPR), failing when ψ's interval lies wholly outside `[1 / r, r]`; `α / 2` per rate,
//! split over the segments. ψ's interval is θ_in / θ_out: the canary/stable ratio inside the
//! segment over the one in the rest, each from the ratio test conditional on the split. A gap
//! stable already has cancels; one the canary opens fails. The detection rate is read as itself, not as the miss rate: at the low
//! precision of fraud models a canary that keeps its flag rate can move its false-positive rate
//! only a little (most flags are false already) while its detection rate collapses — the miss
//! rate's ratio (0.66 → 0.91) would hide what the hit rate's (0.34 → 0.09) shows.
//!
//! **Coverage** before any verdict: both variants with `minLabels` in the rate's denominator
//! (overall; a segment is judged once it has them too) and `minCoverage` of their scored
//! predictions labelled. Short of it the check says so: *inconclusive* (the step holds), or
//! with `spec.feedback.bake` *pass* without harm excluded (the steps go on, the last one holds
//! until the labels are in).
//!
//! What the tests assume: the conditional binomial law of the ratio test is exact for Poisson
//! counts and approximate for Bernoulli labels at rates that are not small (the detection rate);
//! labels are Bernoulli given the predictions they label, independent
//! across tickets up to the dispersion of stable's positives (used as `φ`, since labels come
//! from the same predictions); a label's delay does not depend on the variant (a row is the
//! labels *counted* at a weight, whichever weight served the prediction — the split the test
//! conditions on is the labelled counts, not the traffic share).

use super::disparity::between::{self, Between};
use super::sequential::{self, RateRow, Side};
use super::{Observations, Outcome, Verdict};
use crate::policy::feedback::{Coverage, LabelBound, LabelMetric};
use crate::window::{Labels, SegmentCounts, StepWindow, VariantWindow};

/// What an equalized-odds comparison counts in a segment: `(trials, events)`.
type Measure = fn(&SegmentCounts) -> (f64, f64);

/// Canary against stable inside a segment and in the rest, one row per weight.
type InOut = (Vec<RateRow>, Vec<RateRow>);

/// A label-rate check's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelRateRule {
    pub metric: LabelMetric,
    pub bound: LabelBound,
    pub alpha: f64,
    pub coverage: Coverage,
    pub bake: bool,
}

/// The equalized-odds check's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EqualizedOddsRule {
    pub max_ratio: f64,
    pub alpha: f64,
    pub coverage: Coverage,
    pub bake: bool,
}

/// `(trials, events)` of `metric`'s error side.
pub fn error_side(metric: LabelMetric, l: &Labels) -> (u64, u64) {
    match metric {
        LabelMetric::Accuracy => (l.total(), l.fp + l.fn_),
        LabelMetric::FalsePositiveRate => (l.fp + l.tn, l.fp),
        LabelMetric::TruePositiveRate => (l.tp + l.fn_, l.fn_),
        LabelMetric::Precision => (l.tp + l.fp, l.fp),
    }
}

/// The metric as people read it, from its error side.
fn shown(metric: LabelMetric, bad_rate: f64) -> f64 {
    match metric {
        LabelMetric::FalsePositiveRate => bad_rate,
        _ => 1.0 - bad_rate,
    }
}

fn short(metric: LabelMetric) -> &'static str {
    match metric {
        LabelMetric::Accuracy => "accuracy",
        LabelMetric::FalsePositiveRate => "FPR",
        LabelMetric::TruePositiveRate => "TPR",
        LabelMetric::Precision => "precision",
    }
}

fn rows(
    steps: &[StepWindow],
    of: impl Fn(&VariantWindow) -> Labels,
    metric: LabelMetric,
) -> Vec<RateRow> {
    sequential::rows(steps, |v| {
        let (n, x) = error_side(metric, &of(v));
        (n as f64, x as f64)
    })
}

fn rate(x: f64, n: f64) -> f64 {
    if n > 0.0 {
        x / n
    } else {
        0.0
    }
}

/// Whether the labels are in: `None` if so, else what is short.
fn short_of(obs: &Observations<'_>, cov: &Coverage, total: &RateRow, what: &str) -> Option<String> {
    let sum = |f: fn(&StepWindow) -> &VariantWindow| {
        obs.evidence.steps.iter().fold((0u64, 0u64), |(l, s), st| {
            let v = f(st);
            (l + v.labels.total(), s + v.scored)
        })
    };
    let (lc, sc) = sum(|s| &s.window.canary);
    let (ls, ss) = sum(|s| &s.window.stable);
    let share = |l: u64, s: u64| if s == 0 { 0.0 } else { l as f64 / s as f64 };
    let (cc, cs) = (share(lc, sc), share(ls, ss));
    let min = cov.min_labels as f64;
    if total.n_c >= min && total.n_s >= min && cc >= cov.min_coverage && cs >= cov.min_coverage {
        return None;
    }
    Some(format!(
        "awaiting labels: {} canary / {} stable {what} labelled (minLabels {}), {:.0} % / {:.0} % \
         of scored predictions labelled (minCoverage {:.0} %)",
        total.n_c,
        total.n_s,
        cov.min_labels,
        100.0 * cc,
        100.0 * cs,
        100.0 * cov.min_coverage
    ))
}

fn denominator(metric: LabelMetric) -> &'static str {
    match metric {
        LabelMetric::Accuracy => "predictions",
        LabelMetric::FalsePositiveRate => "negatives",
        LabelMetric::TruePositiveRate => "positives",
        LabelMetric::Precision => "flags",
    }
}

/// One comparison (overall or a segment): failed, harm excluded, what to say.
struct Judged {
    failed: bool,
    within: bool,
    evidence: f64,
    text: String,
    interval: [f64; 2],
    p_value: Option<f64>,
}

fn judge(scope: String, rows: &[RateRow], rule: &LabelRateRule, alpha: f64, phi: f64) -> Judged {
    let t = RateRow::sum(rows);
    let (bc, bs) = (rate(t.x_c, t.n_c), rate(t.x_s, t.n_s));
    let m = short(rule.metric);
    let head = format!(
        "{scope}: canary {m} {:.4} vs stable {:.4} ({} / {} labelled)",
        shown(rule.metric, bc),
        shown(rule.metric, bs),
        t.n_c,
        t.n_s
    );
    match rule.bound {
        LabelBound::Ratio(r) => {
            let log_e = sequential::ratio_log_e(rows, r, Side::Above, phi);
            let (lo, hi) = sequential::ratio_interval(rows, alpha, phi);
            let point = super::disparity::point_ratio(t.x_c, t.n_c, t.x_s, t.n_s);
            let failed = log_e >= sequential::threshold(alpha);
            Judged {
                failed,
                within: point <= r,
                evidence: log_e,
                text: format!(
                    "{head}, error-side ratio {point:.2} in [{lo:.2}, {}] against {r}",
                    sequential::show_upper(hi, 2)
                ),
                interval: [lo, hi],
                p_value: Some(sequential::p_value(log_e)),
            }
        }
        LabelBound::Delta(d) => {
            let (lc, hc) = sequential::rate_interval(t.n_c, t.x_c, alpha / 4.0, phi);
            let (ls, hs) = sequential::rate_interval(t.n_s, t.x_s, alpha / 4.0, phi);
            let (lo, hi) = (lc - hs, hc - ls);
            Judged {
                failed: lo > d,
                within: bc - bs <= d,
                evidence: lo - d,
                text: format!(
                    "{head}, worse by {:.4} in [{lo:.4}, {hi:.4}] against {d}",
                    bc - bs
                ),
                interval: [lo, hi],
                p_value: None,
            }
        }
    }
}

/// Segment labels with labels in both variants, in order.
fn labelled_segments(steps: &[StepWindow]) -> Vec<String> {
    let mut out: Vec<String> = steps
        .iter()
        .flat_map(|s| {
            s.window
                .canary
                .segments
                .iter()
                .chain(s.window.stable.segments.iter())
                .filter(|(_, c)| !c.labels.is_empty())
                .map(|(l, _)| l.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn segment_labels(label: &str) -> impl Fn(&VariantWindow) -> Labels + '_ {
    move |v| v.segments.get(label).map(|c| c.labels).unwrap_or_default()
}

/// The label-rate rule (see the module doc).
pub fn label_rate(name: &str, rule: &LabelRateRule, obs: &Observations<'_>) -> Verdict {
    let steps = &obs.evidence.steps;
    let phi = obs.evidence.dispersion.positives.phi();
    let overall = rows(steps, |v| v.labels, rule.metric);
    let total = RateRow::sum(&overall);
    let threshold = match rule.bound {
        LabelBound::Ratio(r) | LabelBound::Delta(r) => r,
    };
    let base = Verdict {
        check: name.to_owned(),
        canary: Some(shown(rule.metric, rate(total.x_c, total.n_c))),
        stable: Some(shown(rule.metric, rate(total.x_s, total.n_s))),
        threshold: Some(threshold),
        n_canary: total.n_c as u64,
        n_stable: total.n_s as u64,
        ..Default::default()
    };
    if let Some(why) = short_of(obs, &rule.coverage, &total, denominator(rule.metric)) {
        return awaiting(base, why, rule.bake);
    }
    let min = rule.coverage.min_labels as f64;
    let all = total.n_c + total.n_s;
    let mut scopes = vec![("overall".to_owned(), overall)];
    let mut waiting = Vec::new();
    // Harm is excluded only once every segment that matters has been judged.
    let mut blocking = false;
    for label in labelled_segments(steps) {
        let r = rows(steps, segment_labels(&label), rule.metric);
        let t = RateRow::sum(&r);
        if t.n_c >= min && t.n_s >= min {
            scopes.push((format!("segment {label:?}"), r));
        } else {
            blocking |= (t.n_c + t.n_s) >= MIN_SEGMENT_SHARE * all;
            waiting.push(label);
        }
    }
    let alpha = rule.alpha / scopes.len() as f64;
    let judged: Vec<Judged> = scopes
        .into_iter()
        .map(|(scope, r)| judge(scope, &r, rule, alpha, phi))
        .collect();
    let worst = judged
        .iter()
        .filter(|j| j.failed)
        .max_by(|a, b| a.evidence.total_cmp(&b.evidence));
    let pending = if waiting.is_empty() {
        String::new()
    } else {
        format!(
            "; segments short of {} labels: {}",
            rule.coverage.min_labels,
            waiting.join(", ")
        )
    };
    let overall = &judged[0];
    match worst {
        Some(w) => Verdict {
            outcome: Outcome::Fail,
            message: format!("{} — shown worse than allowed", w.text),
            interval: Some(w.interval),
            p_value: w.p_value,
            ..base
        },
        None => Verdict {
            outcome: Outcome::Pass,
            message: format!("{}{pending}", overall.text),
            interval: Some(overall.interval),
            p_value: overall.p_value,
            harm_excluded: !blocking && judged.iter().all(|j| j.within),
            ..base
        },
    }
}

/// Segments with less than this share of the rollout's labelled predictions (in a rate's
/// denominator) need not be judged before harm is excluded: a rare segment would hold the bake
/// for ever. They are still judged — and can fail — once they have their labels.
pub const MIN_SEGMENT_SHARE: f64 = 0.02;

fn awaiting(base: Verdict, why: String, bake: bool) -> Verdict {
    Verdict {
        outcome: if bake {
            Outcome::Pass
        } else {
            Outcome::Inconclusive
        },
        message: if bake {
            format!("{why} (bake: the last step holds until they are in)")
        } else {
            why
        },
        harm_excluded: false,
        ..base
    }
}

fn negatives(c: &SegmentCounts) -> (f64, f64) {
    ((c.labels.fp + c.labels.tn) as f64, c.labels.fp as f64)
}

fn hits(c: &SegmentCounts) -> (f64, f64) {
    ((c.labels.tp + c.labels.fn_) as f64, c.labels.tp as f64)
}

/// Canary against stable on `measure` inside segment `label` (`inside`) or in the rest.
fn versus(steps: &[StepWindow], label: &str, inside: bool, measure: Measure) -> Vec<RateRow> {
    sequential::rows(steps, |v| {
        v.segments
            .iter()
            .filter(|(l, _)| (l.as_str() == label) == inside)
            .fold((0.0, 0.0), |(n, x), (_, c)| {
                let (cn, cx) = measure(c);
                (n + cn, x + cx)
            })
    })
}

/// ψ for one segment as θ_in / θ_out: the canary/stable ratio inside the segment (conditional on
/// the split of the segment's events between the variants) over the same ratio in the rest, each
/// a confidence sequence at `alpha / 2` (a union bound: ψ's interval covers at `1 − alpha`).
/// The same ψ as [`between::interaction`], split the other way: the rest's ratio rests on most of
/// the traffic, so almost all of the width is the segment's own — about half the width of the
/// within-variant split when the segment is small.
fn interaction(
    label: &str,
    (inside, outside): &InOut,
    band: (f64, f64),
    alpha: f64,
    phi: f64,
) -> Between {
    // Each two-sided interval at alpha / 4 a side: alpha / 2 for each, alpha for both.
    let (li, hi) = sequential::ratio_interval(inside, alpha / 4.0, phi);
    let (lo, ho) = sequential::ratio_interval(outside, alpha / 4.0, phi);
    let point = |r: &[RateRow]| {
        let t = RateRow::sum(r);
        super::disparity::point_ratio(t.x_c, t.n_c, t.x_s, t.n_s)
    };
    let interval = (li / ho, hi / lo);
    Between {
        segment: label.to_owned(),
        kind: between::Kind::Interaction,
        failed: interval.0 > band.1 || interval.1 < band.0,
        point: point(inside) / point(outside),
        interval,
        band,
    }
}

/// The labelled segments with at least [`MIN_SEGMENT_SHARE`] of `measure`'s denominator.
fn significant(steps: &[StepWindow], measure: Measure) -> Vec<String> {
    let mut per: std::collections::BTreeMap<String, f64> = Default::default();
    for st in steps {
        for v in [&st.window.canary, &st.window.stable] {
            for (l, c) in &v.segments {
                *per.entry(l.clone()).or_default() += measure(c).0;
            }
        }
    }
    let all: f64 = per.values().sum();
    per.into_iter()
        .filter(|(_, n)| *n > 0.0 && *n >= MIN_SEGMENT_SHARE * all)
        .map(|(l, _)| l)
        .collect()
}

/// The equalized-odds rule (see the module doc).
pub fn equalized_odds(name: &str, rule: &EqualizedOddsRule, obs: &Observations<'_>) -> Verdict {
    let steps = &obs.evidence.steps;
    let phi = obs.evidence.dispersion.positives.phi();
    let overall = rows(steps, |v| v.labels, LabelMetric::FalsePositiveRate);
    let total = RateRow::sum(&overall);
    let band = (1.0 / rule.max_ratio, rule.max_ratio);
    let base = Verdict {
        check: name.to_owned(),
        threshold: Some(rule.max_ratio),
        n_canary: total.n_c as u64,
        n_stable: total.n_s as u64,
        ..Default::default()
    };
    if let Some(why) = short_of(obs, &rule.coverage, &total, "negatives") {
        return awaiting(base, why, rule.bake);
    }
    let min = rule.coverage.min_labels as f64;
    let mut results: Vec<(&str, Between)> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for (what, measure) in [
        ("false-positive rate", negatives as Measure),
        ("detection rate", hits),
    ] {
        // A segment is judged on a rate once both variants have its labels, in it and in the rest.
        let ready: Vec<(String, InOut)> = labelled_segments(steps)
            .into_iter()
            .map(|l| {
                let rows = (
                    versus(steps, &l, true, measure),
                    versus(steps, &l, false, measure),
                );
                (l, rows)
            })
            .filter(|(_, (inside, outside))| {
                [RateRow::sum(inside), RateRow::sum(outside)]
                    .iter()
                    .all(|t| t.n_c >= min && t.n_s >= min)
            })
            .collect();
        missing.extend(
            significant(steps, measure)
                .into_iter()
                .filter(|l| !ready.iter().any(|(r, _)| r == l))
                .map(|l| format!("{what} in {l:?}")),
        );
        if ready.len() < 2 {
            continue;
        }
        let per = rule.alpha / 2.0 / ready.len() as f64;
        results.extend(
            ready
                .iter()
                .map(|(l, rows)| (what, interaction(l, rows, band, per, phi))),
        );
    }
    if results.is_empty() {
        return awaiting(
            base,
            format!(
                "awaiting labels: no two segments with {} labelled negatives or positives each",
                rule.coverage.min_labels
            ),
            rule.bake,
        );
    }
    let failed = results.iter().filter(|(_, b)| b.failed).max_by(|a, b| {
        let out = |b: &Between| (b.interval.0 / b.band.1).max(b.band.0 / b.interval.1);
        out(&a.1).total_cmp(&out(&b.1))
    });
    let describe = |(what, b): &(&str, Between)| {
        format!(
            "{what} in segment {:?} vs the rest, canary over stable {:.2} in [{:.2}, {}], band [{:.2}, {:.2}]",
            b.segment,
            b.point,
            b.interval.0,
            sequential::show_upper(b.interval.1, 2),
            b.band.0,
            b.band.1
        )
    };
    match failed {
        Some(f) => Verdict {
            outcome: Outcome::Fail,
            canary: Some(f.1.point),
            message: format!(
                "{} — the canary opens a gap stable does not have",
                describe(f)
            ),
            ratio: Some([f.1.interval.0, f.1.interval.1]),
            ..base
        },
        None => {
            let widest = results
                .iter()
                .max_by(|a, b| (a.1.point.ln().abs()).total_cmp(&b.1.point.ln().abs()));
            Verdict {
                outcome: Outcome::Pass,
                canary: widest.map(|w| w.1.point),
                message: format!(
                    "{}{}",
                    widest.map_or_else(String::new, |w| format!("widest: {}", describe(w))),
                    if missing.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; still short of {} labels: {}",
                            rule.coverage.min_labels,
                            missing.join(", ")
                        )
                    }
                ),
                harm_excluded: missing.is_empty() && results.iter().all(|(_, b)| b.inside()),
                ..base
            }
        }
    }
}

#[cfg(test)]
#[path = "ground_truth_tests.rs"]
mod tests;
