//! Fairness between segments, beyond "canary vs stable in each segment":
//! - the **canary × segment interaction**: ψ = (canary's rate in the segment / in the rest) ÷
//!   (stable's rate in the segment / in the rest). Bias already in stable cancels, so it neither
//!   passes as the canary's nor counts against it twice. Each variant's between-segment ratio has an
//!   anytime-valid interval from the ratio test conditional on that variant's own split (segment vs
//!   rest); ψ's interval is their quotient, each of the four ends at `α / 4` (a union bound, so the
//!   interval covers ψ with probability ≥ 1 − α at all times). It fails when that interval lies
//!   wholly outside the check's band;
//! - the optional **within-canary floor** (`minRatioBetweenSegments` r, the four-fifths rule): the
//!   canary's rate in a segment against the rest shown outside `[r, 1/r]`.
//!
//! Segments are compared with the rest of the traffic (one comparison per segment, Bonferroni
//! over them), not pairwise.

use super::point_ratio;
use crate::analysis::sequential::{self, RateRow};
use crate::window::{StepWindow, VariantWindow};

/// Which comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Interaction,
    Floor,
}

/// One segment's comparison with the rest.
#[derive(Debug, Clone, PartialEq)]
pub struct Between {
    pub segment: String,
    pub kind: Kind,
    pub failed: bool,
    /// The point value (ψ, or the canary's segment / rest ratio).
    pub point: f64,
    pub interval: (f64, f64),
    /// The band it is judged against.
    pub band: (f64, f64),
}

impl Between {
    pub fn inside(&self) -> bool {
        (self.band.0..=self.band.1).contains(&self.point)
    }

    pub fn describe(&self) -> String {
        let what = match self.kind {
            Kind::Interaction => "canary × segment interaction",
            Kind::Floor => "within-canary floor",
        };
        format!(
            "{what}: segment {:?} vs the rest {:.3} in [{:.3}, {}], band [{}, {}]",
            self.segment,
            self.point,
            self.interval.0,
            sequential::show_upper(self.interval.1, 3),
            self.band.0,
            self.band.1
        )
    }
}

/// `label`'s scored predictions and positives against the rest's, within one variant.
fn against_rest(
    steps: &[StepWindow],
    label: &str,
    of: fn(&StepWindow) -> &VariantWindow,
) -> Vec<RateRow> {
    steps
        .iter()
        .map(|s| {
            let v = of(s);
            let mine = v.segments.get(label).copied().unwrap_or_default();
            let (n, x) = v
                .segments
                .iter()
                .filter(|(l, _)| l.as_str() != label)
                .fold((0.0, 0.0), |(n, x), (_, c)| {
                    (n + c.scored as f64, x + c.positives as f64)
                });
            RateRow {
                n_c: mine.scored as f64,
                x_c: (mine.positives as f64).min(mine.scored as f64),
                n_s: n,
                x_s: x.min(n),
            }
        })
        .collect()
}

fn canary(s: &StepWindow) -> &VariantWindow {
    &s.window.canary
}

fn stable(s: &StepWindow) -> &VariantWindow {
    &s.window.stable
}

fn point(rows: &[RateRow]) -> f64 {
    let t = RateRow::sum(rows);
    point_ratio(t.x_c, t.n_c, t.x_s, t.n_s)
}

/// The interaction of each of `labels` (at least two) with the rest, at `alpha` over them all.
pub fn interaction(
    steps: &[StepWindow],
    labels: &[&String],
    band: (f64, f64),
    alpha: f64,
    phi: f64,
) -> Vec<Between> {
    if labels.len() < 2 {
        return Vec::new();
    }
    let per = alpha / labels.len() as f64;
    labels
        .iter()
        .map(|l| {
            let (c, s) = (
                against_rest(steps, l, canary),
                against_rest(steps, l, stable),
            );
            let (lc, hc) = sequential::ratio_interval(&c, per / 4.0, phi);
            let (ls, hs) = sequential::ratio_interval(&s, per / 4.0, phi);
            let interval = (lc / hs, hc / ls);
            Between {
                segment: (*l).clone(),
                kind: Kind::Interaction,
                failed: interval.0 > band.1 || interval.1 < band.0,
                point: point(&c) / point(&s),
                interval,
                band,
            }
        })
        .collect()
}

/// The within-canary floor `r` for each of `labels` (at least two), at `alpha` over them all.
pub fn floor(
    steps: &[StepWindow],
    labels: &[&String],
    r: f64,
    alpha: f64,
    phi: f64,
) -> Vec<Between> {
    if labels.len() < 2 {
        return Vec::new();
    }
    let per = alpha / labels.len() as f64;
    let band = (r, 1.0 / r);
    labels
        .iter()
        .map(|l| {
            let c = against_rest(steps, l, canary);
            let test = sequential::ratio_band(&c, band.0, band.1, per, phi);
            Between {
                segment: (*l).clone(),
                kind: Kind::Floor,
                failed: test.outside(),
                point: point(&c),
                interval: test.interval,
                band,
            }
        })
        .collect()
}
