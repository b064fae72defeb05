//! Per-segment disparity: does the canary treat one group of users differently from how stable
//! treats the same group? The case this exists for: a fraud model that is better overall but flags
//! elderly customers' transactions far more often than the model it replaces.
//!
//! For each segment (the filter's `segment` label, `other` included) with scored predictions:
//! `pc`, `ps` = the canary's / stable's positive rate in that segment, `r = pc / ps` the
//! disparate-impact ratio between the two model versions. The acceptable band is
//! `[minRatio, maxRatio]` (default `[0.8, 1.25]`, the four-fifths rule read both ways).
//!
//! **Rule**, per segment:
//! - *inconclusive* below `minSamplesPerSegment` scored predictions on either side;
//! - *pass* when `r` is inside the band (both rates 0 is `r = 1`);
//! - *fail* when `r` is outside the band **and** a one-sided z-test on the log ratio shows it is
//!   beyond the bound it crossed: `z = (ln r̂ − ln maxRatio) / se` (or `(ln minRatio − ln r̂) / se`),
//!   `se = √(1/x_c − 1/n_c + 1/x_s − 1/n_s)` (Katz's log relative-risk interval), `p < alpha / m`.
//!   Testing against the *bound* rather than against `r = 1` means a failure says "the ratio is
//!   outside the band", not merely "the ratio differs from 1". `m` is the number of segments
//!   judged (Bonferroni): each interval makes `m` comparisons, and a family-wise `alpha` keeps a
//!   healthy canary from failing on one segment by chance. When a segment has no positives on one
//!   side, `ln 0` is undefined: then 0.5 is added to every cell (Haldane–Anscombe), so
//!   `x → x + 0.5`, `n → n + 1`, for that segment's test only;
//! - otherwise (outside, not significant) *inconclusive*.
//!
//! The check fails if any segment fails (the verdict names the one with the smallest p-value),
//! is inconclusive if any segment is and none fails, and passes when every segment passes.
//! Segments with no scored predictions on either side are not judged at all.

use std::collections::BTreeSet;

use super::stats::upper_tail;
use super::{Outcome, SegmentCounts, VariantWindow, Verdict};

/// The check's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisparityRule {
    pub min_ratio: f64,
    pub max_ratio: f64,
    /// Family-wise over the segments judged.
    pub alpha: f64,
    pub min_samples: u64,
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
    pub n_canary: u64,
    pub n_stable: u64,
    pub positives_canary: u64,
    pub positives_stable: u64,
    /// The one-sided p-value against the bound crossed (before the Bonferroni division).
    pub p_value: Option<f64>,
    /// The bound `ratio` is outside of, if any.
    pub bound: Option<f64>,
}

/// The verdict and every segment behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct DisparityReport {
    pub verdict: Verdict,
    pub segments: Vec<SegmentResult>,
}

/// `ln r̂` and its standard error, with the Haldane–Anscombe correction when a side has no
/// positives.
pub fn log_ratio(xc: u64, nc: u64, xs: u64, ns: u64) -> (f64, f64) {
    let (mut xc, mut nc, mut xs, mut ns) = (xc as f64, nc as f64, xs as f64, ns as f64);
    if xc == 0.0 || xs == 0.0 {
        xc += 0.5;
        xs += 0.5;
        nc += 1.0;
        ns += 1.0;
    }
    let log_r = (xc / nc).ln() - (xs / ns).ln();
    let se = (1.0 / xc - 1.0 / nc + 1.0 / xs - 1.0 / ns).max(0.0).sqrt();
    (log_r, se)
}

fn judge_segment(
    segment: &str,
    c: SegmentCounts,
    s: SegmentCounts,
    rule: &DisparityRule,
) -> SegmentResult {
    let (nc, ns) = (c.scored, s.scored);
    let (xc, xs) = (c.positives.min(nc), s.positives.min(ns));
    let share = |x: u64, n: u64| if n == 0 { 0.0 } else { x as f64 / n as f64 };
    let (pc, ps) = (share(xc, nc), share(xs, ns));
    let ratio = match (xc, xs) {
        (0, 0) => 1.0,
        (_, 0) => f64::INFINITY,
        _ => pc / ps,
    };
    let mut r = SegmentResult {
        segment: segment.to_owned(),
        outcome: Outcome::Inconclusive,
        canary_rate: pc,
        stable_rate: ps,
        ratio,
        n_canary: nc,
        n_stable: ns,
        positives_canary: xc,
        positives_stable: xs,
        p_value: None,
        bound: None,
    };
    if nc < rule.min_samples || ns < rule.min_samples {
        return r;
    }
    if (rule.min_ratio..=rule.max_ratio).contains(&ratio) {
        r.outcome = Outcome::Pass;
        return r;
    }
    let (log_r, se) = log_ratio(xc, nc, xs, ns);
    let (bound, excess) = if ratio > rule.max_ratio {
        (rule.max_ratio, log_r - rule.max_ratio.ln())
    } else {
        (rule.min_ratio, rule.min_ratio.ln() - log_r)
    };
    r.bound = Some(bound);
    r.p_value = Some(if se > 0.0 {
        upper_tail(excess / se)
    } else if excess > 0.0 {
        0.0
    } else {
        1.0
    });
    r
}

/// The segment-disparity rule (see the module doc).
pub fn segment_disparity(
    name: &str,
    rule: &DisparityRule,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> DisparityReport {
    let labels: BTreeSet<&String> = canary
        .segments
        .keys()
        .chain(stable.segments.keys())
        .collect();
    let mut segments: Vec<SegmentResult> = labels
        .into_iter()
        .filter_map(|l| {
            let c = canary.segments.get(l).copied().unwrap_or_default();
            let s = stable.segments.get(l).copied().unwrap_or_default();
            (c.scored > 0 || s.scored > 0).then(|| judge_segment(l, c, s, rule))
        })
        .collect();
    let judged = segments
        .iter()
        .filter(|s| s.n_canary >= rule.min_samples && s.n_stable >= rule.min_samples)
        .count();
    let per_segment_alpha = rule.alpha / judged.max(1) as f64;
    for s in &mut segments {
        if let Some(p) = s.p_value {
            if p < per_segment_alpha {
                s.outcome = Outcome::Fail;
            }
        }
    }
    let verdict = summarize(name, rule, &segments, judged, per_segment_alpha);
    DisparityReport { verdict, segments }
}

fn describe(s: &SegmentResult) -> String {
    format!(
        "segment {:?}: canary positive rate {:.4} ({}/{}) vs stable {:.4} ({}/{}), ratio {:.3}",
        s.segment,
        s.canary_rate,
        s.positives_canary,
        s.n_canary,
        s.stable_rate,
        s.positives_stable,
        s.n_stable,
        s.ratio
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
                "{}, outside {band} (p={p:.2e} < {per_segment_alpha:.2e} = alpha/{judged})",
                describe(s)
            ),
        );
    }
    if let Some(s) = segments.iter().find(|s| s.outcome == Outcome::Inconclusive) {
        let why = if s.n_canary < rule.min_samples || s.n_stable < rule.min_samples {
            format!("below minSamplesPerSegment {}", rule.min_samples)
        } else {
            format!(
                "outside {band}, not significantly (p={:.2e}, alpha/{judged})",
                s.p_value.unwrap_or(1.0)
            )
        };
        return of(s, Outcome::Inconclusive, format!("{}: {why}", describe(s)));
    }
    let extreme = segments
        .iter()
        .max_by(|a, b| a.ratio.ln().abs().total_cmp(&b.ratio.ln().abs()));
    match extreme {
        Some(s) => of(
            s,
            Outcome::Pass,
            format!(
                "all {} segments within {band}; farthest from 1: {}",
                segments.len(),
                describe(s)
            ),
        ),
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
