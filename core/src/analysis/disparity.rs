//! Per-segment disparity: does the canary treat one group of users differently from how stable
//! treats the same group? The case this exists for: a fraud model that is better overall but flags
//! elderly customers' transactions far more often than the model it replaces.
//!
//! For each segment (the filter's `segment` label, `other` included) with scored predictions:
//! `pc`, `ps` = the canary's / stable's positive rate in that segment, `r = pc / ps` the
//! disparate-impact ratio between the two model versions. The acceptable band is
//! `[minRatio, maxRatio]` (default `[0.8, 1.25]`, the four-fifths rule read both ways).
//!
//! **Rule**, per segment, on the whole rollout's scored predictions in it (summed per weight): the
//! ratio θ tested against the band with the anytime-valid ratio test conditional on the split
//! ([`sequential::ratio_band`], each side at `alpha / 2m`; `m` = segments judged, Bonferroni;
//! stable's positives dispersion tempers the evidence):
//! - *fail* when θ is shown outside the band (its interval lies wholly above `maxRatio` or below
//!   `minRatio`): a failure says "outside the band", not merely "different from 1";
//! - *inconclusive* below `minSamplesPerSegment` scored predictions on either side at this weight;
//! - otherwise *pass*; promotion (`harm_excluded`) needs every segment's point ratio inside the
//!   band as well (both rates 0 is `r = 1`).
//!
//! The check fails if any segment fails (the verdict names the one with the strongest evidence),
//! is inconclusive if any segment is and none fails, and passes when every segment passes.
//! Segments with no scored predictions on either side are not judged at all, nor are segments with
//! less than `minSegmentShare` of the rollout's scored predictions: those are named in the verdict,
//! so one rare segment can neither block a step nor roll the canary back.

pub mod between;

use std::collections::BTreeSet;

use super::sequential::{self, RateRow};
use super::{Observations, Outcome, SegmentCounts, Verdict};

/// The check's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisparityRule {
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// The check's share of the budget, family-wise over the segments judged.
    pub alpha: f64,
    pub min_samples: u64,
    /// Segments below this share of the rollout's scored predictions are reported, not judged.
    pub min_share: f64,
    /// The within-canary floor (`minRatioBetweenSegments`), if set.
    pub min_ratio_between: Option<f64>,
}

/// One segment's comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentResult {
    pub segment: String,
    pub outcome: Outcome,
    pub canary_rate: f64,
    pub stable_rate: f64,
    /// `canary_rate / stable_rate` (∞ when only stable flags nothing, 1 when neither flags).
    pub ratio: f64,
    /// The ratio's anytime-valid interval.
    pub interval: (f64, f64),
    pub n_canary: u64,
    pub n_stable: u64,
    pub positives_canary: u64,
    pub positives_stable: u64,
    /// The always-valid p-value of "inside the band" (before the Bonferroni division).
    pub p_value: Option<f64>,
    /// The bound the point ratio is outside of, if any.
    pub bound: Option<f64>,
}

/// The verdict and every segment behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct DisparityReport {
    pub verdict: Verdict,
    pub segments: Vec<SegmentResult>,
}

pub(crate) fn point_ratio(xc: f64, nc: f64, xs: f64, ns: f64) -> f64 {
    if xc == 0.0 && xs == 0.0 {
        1.0
    } else if xs == 0.0 {
        f64::INFINITY
    } else {
        (xc / nc) / (xs / ns)
    }
}

fn judge_segment(
    segment: &str,
    rows: &[RateRow],
    current: (SegmentCounts, SegmentCounts),
    rule: &DisparityRule,
    alpha: f64,
    phi: f64,
) -> SegmentResult {
    let t = RateRow::sum(rows);
    let share = |x: f64, n: f64| if n == 0.0 { 0.0 } else { x / n };
    let ratio = point_ratio(t.x_c, t.n_c, t.x_s, t.n_s);
    let band = sequential::ratio_band(rows, rule.min_ratio, rule.max_ratio, alpha, phi);
    let sampled = current.0.scored >= rule.min_samples && current.1.scored >= rule.min_samples;
    let outcome = if band.outside() {
        Outcome::Fail
    } else if sampled {
        Outcome::Pass
    } else {
        Outcome::Inconclusive
    };
    let bound = if ratio > rule.max_ratio {
        Some(rule.max_ratio)
    } else if ratio < rule.min_ratio {
        Some(rule.min_ratio)
    } else {
        None
    };
    SegmentResult {
        segment: segment.to_owned(),
        outcome,
        canary_rate: share(t.x_c, t.n_c),
        stable_rate: share(t.x_s, t.n_s),
        ratio,
        interval: band.interval,
        n_canary: t.n_c as u64,
        n_stable: t.n_s as u64,
        positives_canary: t.x_c as u64,
        positives_stable: t.x_s as u64,
        p_value: Some(sequential::p_value(band.log_e)),
        bound,
    }
}

/// The segment-disparity rule (see the module doc).
pub fn segment_disparity(
    name: &str,
    rule: &DisparityRule,
    obs: &Observations<'_>,
) -> DisparityReport {
    let steps = &obs.evidence.steps;
    let labels: BTreeSet<&String> = steps
        .iter()
        .flat_map(|s| {
            s.window
                .canary
                .segments
                .keys()
                .chain(s.window.stable.segments.keys())
        })
        .collect();
    let rows_of = |label: &String| -> Vec<RateRow> {
        sequential::rows(steps, |v| {
            let c = v.segments.get(label).copied().unwrap_or_default();
            (c.scored as f64, c.positives as f64)
        })
    };
    let scored = |rows: &[RateRow]| {
        let t = RateRow::sum(rows);
        t.n_c + t.n_s
    };
    let all: Vec<(&String, Vec<RateRow>)> = labels
        .into_iter()
        .map(|l| (l, rows_of(l)))
        .filter(|(_, rows)| scored(rows) > 0.0)
        .collect();
    let total: f64 = all.iter().map(|(_, rows)| scored(rows)).sum();
    let (with_rows, rare): (Vec<_>, Vec<_>) = all
        .into_iter()
        .partition(|(_, rows)| scored(rows) >= rule.min_share * total);
    let rare: Vec<String> = rare
        .iter()
        .map(|(l, rows)| format!("{l:?} {:.1} %", 100.0 * scored(rows) / total))
        .collect();
    let judged = with_rows.len().max(1);
    // The check's share, split between the per-segment tests, the interaction and the floor.
    let parts = 2.0 + f64::from(u8::from(rule.min_ratio_between.is_some()));
    let part = rule.alpha / parts;
    let per_segment_alpha = part / judged as f64;
    let phi = obs.evidence.dispersion.positives.phi();
    let current = obs.current();
    let segments: Vec<SegmentResult> = with_rows
        .iter()
        .map(|(l, rows)| {
            let c = current.canary.segments.get(*l).copied().unwrap_or_default();
            let s = current.stable.segments.get(*l).copied().unwrap_or_default();
            judge_segment(l, rows, (c, s), rule, per_segment_alpha, phi)
        })
        .collect();
    let mut verdict = summarize(name, rule, &segments, judged, per_segment_alpha);
    let labels: Vec<&String> = with_rows.iter().map(|(l, _)| *l).collect();
    let band = (rule.min_ratio, rule.max_ratio);
    let mut others = between::interaction(steps, &labels, band, part, phi);
    if let Some(r) = rule.min_ratio_between {
        others.extend(between::floor(steps, &labels, r, part, phi));
    }
    if verdict.outcome != Outcome::Fail {
        if let Some(b) = others.iter().find(|b| b.failed) {
            verdict.outcome = Outcome::Fail;
            verdict.harm_excluded = false;
            verdict.interval = Some([b.interval.0, b.interval.1]);
            verdict.message = format!("{}: shown outside its band", b.describe());
        } else if let Some(b) = others.iter().find(|b| !b.inside()) {
            verdict.harm_excluded = false;
            verdict.message = format!(
                "{}; {}: outside by its point, not shown",
                verdict.message,
                b.describe()
            );
        }
    }
    if !rare.is_empty() {
        verdict.message = format!(
            "{}; not judged, below minSegmentShare {}: {}",
            verdict.message,
            rule.min_share,
            rare.join(", ")
        );
    }
    DisparityReport { verdict, segments }
}

fn describe(s: &SegmentResult) -> String {
    format!(
        "segment {:?}: canary positive rate {:.4} ({}/{}) vs stable {:.4} ({}/{}), ratio {:.3} in \
         [{:.3}, {}]",
        s.segment,
        s.canary_rate,
        s.positives_canary,
        s.n_canary,
        s.stable_rate,
        s.positives_stable,
        s.n_stable,
        s.ratio,
        s.interval.0,
        sequential::show_upper(s.interval.1, 3)
    )
}

fn summarize(
    name: &str,
    rule: &DisparityRule,
    segments: &[SegmentResult],
    judged: usize,
    per_segment_alpha: f64,
) -> Verdict {
    let band = format!("[{}, {}]", rule.min_ratio, rule.max_ratio);
    let of = |s: &SegmentResult, outcome: Outcome, message: String| Verdict {
        check: name.to_owned(),
        outcome,
        canary: Some(s.canary_rate),
        stable: Some(s.stable_rate),
        threshold: s.bound,
        n_canary: s.n_canary,
        n_stable: s.n_stable,
        p_value: s.p_value,
        message,
        interval: Some([s.interval.0, s.interval.1]),
        ..Default::default()
    };
    let worst_fail = segments
        .iter()
        .filter(|s| s.outcome == Outcome::Fail)
        .min_by(|a, b| {
            a.p_value
                .unwrap_or(1.0)
                .total_cmp(&b.p_value.unwrap_or(1.0))
        });
    if let Some(s) = worst_fail {
        let p = s.p_value.unwrap_or(1.0);
        return of(
            s,
            Outcome::Fail,
            format!(
                "{}, shown outside {band} (p={p:.2e} ≤ {:.2e} = alpha/{judged}/2 a side)",
                describe(s),
                per_segment_alpha / 2.0
            ),
        );
    }
    if let Some(s) = segments.iter().find(|s| s.outcome == Outcome::Inconclusive) {
        let why = format!(
            "below minSamplesPerSegment {} at this weight",
            rule.min_samples
        );
        return of(s, Outcome::Inconclusive, format!("{}: {why}", describe(s)));
    }
    let extreme = segments
        .iter()
        .max_by(|a, b| a.ratio.ln().abs().total_cmp(&b.ratio.ln().abs()));
    match extreme {
        Some(s) => {
            let inside = segments.iter().all(|s| s.bound.is_none());
            let mut v = of(
                s,
                Outcome::Pass,
                if inside {
                    format!(
                        "all {} segments within {band}; farthest from 1: {}",
                        segments.len(),
                        describe(s)
                    )
                } else {
                    format!("outside {band}, not shown: {}", describe(s))
                },
            );
            v.harm_excluded = inside;
            v
        }
        None => Verdict {
            check: name.to_owned(),
            outcome: Outcome::Inconclusive,
            canary: None,
            stable: None,
            threshold: None,
            n_canary: 0,
            n_stable: 0,
            p_value: None,
            message: "no scored predictions in any segment".into(),
            ..Default::default()
        },
    }
}
