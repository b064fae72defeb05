//! Positive-rate shift: does the canary flag a different share of instances than stable?
//!
//! On the whole rollout's scored predictions (`scored`, `positives` per weight), at the check's
//! share `α` of the budget, with stable's positives dispersion `φ`:
//! - `maxRelativeShift δ`: the canary / stable ratio θ against the band `[1 − δ, 1 + δ]`, each side
//!   an anytime-valid test conditional on the split at `α / 2` ([`sequential::ratio_band`]);
//! - `maxAbsoluteShift d`: the difference `p_c − p_s` from the two variants' own rate intervals
//!   (each at `α / 4`, so their difference covers at `α / 2` a side) against `[−d, d]`.
//!
//! **Rule**: *fail* iff the shift is shown beyond the bound (its interval lies wholly outside);
//! *pass* (the step may advance) iff not, with `minSamples` scored predictions on both variants at
//! this weight; else *inconclusive*. Promotion (`harm_excluded`) needs the point shift within the
//! bound as well. Two-sided: a model that suddenly flags far fewer frauds is as wrong as one that
//! flags far more.

use super::sequential::{self, RateRow};
use super::{rate, Observations, Outcome, Verdict};
use crate::policy::validated::ShiftBound;

/// The shift of `pc` from `ps` in the bound's terms.
pub fn shift(bound: ShiftBound, pc: f64, ps: f64) -> f64 {
    let d = (pc - ps).abs();
    match bound {
        ShiftBound::Absolute(_) => d,
        ShiftBound::Relative(_) if ps > 0.0 => d / ps,
        ShiftBound::Relative(_) if d == 0.0 => 0.0,
        ShiftBound::Relative(_) => f64::INFINITY,
    }
}

fn limit(bound: ShiftBound) -> f64 {
    match bound {
        ShiftBound::Absolute(x) | ShiftBound::Relative(x) => x,
    }
}

/// The check's parameters, as validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PositiveRateRule {
    pub bound: ShiftBound,
    /// The check's share of the policy's budget.
    pub alpha: f64,
    pub min_samples: u64,
}

/// The positive-rate rule (see the module doc).
pub fn positive_rate(name: &str, rule: &PositiveRateRule, obs: &Observations<'_>) -> Verdict {
    let rows = sequential::rows(&obs.evidence.steps, |v| {
        (v.scored as f64, v.positives as f64)
    });
    let total = RateRow::sum(&rows);
    let phi = obs.evidence.dispersion.positives.phi();
    let max = limit(rule.bound);
    let (nc, ns) = (total.n_c as u64, total.n_s as u64);
    let (pc, ps) = (
        total.x_c / total.n_c.max(1.0),
        total.x_s / total.n_s.max(1.0),
    );
    let (outside, interval, log_e, shown) = match rule.bound {
        ShiftBound::Relative(d) => {
            let band = sequential::ratio_band(&rows, (1.0 - d).max(0.0), 1.0 + d, rule.alpha, phi);
            let (lo, hi) = band.interval;
            let shown = format!(
                "ratio in [{lo:.3}, {hi:.3}], band [{:.3}, {:.3}]",
                1.0 - d,
                1.0 + d
            );
            (band.outside(), (lo - 1.0, hi - 1.0), band.log_e, shown)
        }
        ShiftBound::Absolute(d) => {
            let (lc, hc) = sequential::rate_interval(total.n_c, total.x_c, rule.alpha / 4.0, phi);
            let (ls, hs) = sequential::rate_interval(total.n_s, total.x_s, rule.alpha / 4.0, phi);
            let (lo, hi) = (lc - hs, hc - ls);
            let shown = format!("difference in [{lo:.4}, {hi:.4}], bound ±{d}");
            (lo > d || hi < -d, (lo, hi), f64::NAN, shown)
        }
    };
    let current = obs.current();
    let sampled =
        current.canary.scored >= rule.min_samples && current.stable.scored >= rule.min_samples;
    let point = shift(rule.bound, pc, ps);
    let kind = match rule.bound {
        ShiftBound::Absolute(_) => "absolute",
        ShiftBound::Relative(_) => "relative",
    };
    let head = format!("canary positive rate {pc:.4} vs stable {ps:.4}: {kind} shift {point:.4}");
    let (outcome, message) = if outside {
        (Outcome::Fail, format!("{head} beyond {max}: {shown}"))
    } else if !sampled {
        (
            Outcome::Inconclusive,
            format!(
                "{head}; {} canary / {} stable scored predictions at this weight, below minSamples {}",
                current.canary.scored, current.stable.scored, rule.min_samples
            ),
        )
    } else if point <= max {
        (Outcome::Pass, format!("{head} within {max}: {shown}"))
    } else {
        (
            Outcome::Pass,
            format!("{head} beyond {max}, not shown: {shown}"),
        )
    };
    Verdict {
        check: name.to_owned(),
        outcome,
        canary: rate(total.x_c as u64, nc),
        stable: rate(total.x_s as u64, ns),
        threshold: Some(max),
        n_canary: nc,
        n_stable: ns,
        p_value: log_e.is_finite().then(|| sequential::p_value(log_e)),
        message,
        interval: Some([interval.0, interval.1]),
        ratio: None,
        harm_excluded: outcome == Outcome::Pass && point <= max,
        baseline_unhealthy: false,
    }
}
