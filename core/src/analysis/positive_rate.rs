//! Positive-rate shift: does the canary flag a different share of instances than stable?
//!
//! With `pc = positives / scored` for the canary and `ps` for stable, the shift is `|pc − ps|`
//! (`maxAbsoluteShift`) or `|pc − ps| / ps` (`maxRelativeShift`; infinite when stable flags nothing
//! and the canary does). **Rule**: inconclusive below `minSamples` scored predictions on either
//! side; *pass* iff the shift is within the bound; *fail* iff it is beyond the bound **and** a
//! two-sided pooled two-proportion z-test rejects `pc = ps` at `alpha`; otherwise (beyond the bound,
//! not yet significant) inconclusive, so the rollout holds until the evidence is in. Two-sided:
//! a model that suddenly flags far fewer frauds is as wrong as one that flags far more.

use super::stats::two_proportion_two_sided;
use super::{rate, Outcome, VariantWindow, Verdict};
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

/// The positive-rate rule (see the module doc).
pub fn positive_rate(
    name: &str,
    bound: ShiftBound,
    alpha: f64,
    min_samples: u64,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let (nc, ns) = (canary.scored, stable.scored);
    let (xc, xs) = (canary.positives.min(nc), stable.positives.min(ns));
    let max = limit(bound);
    let mut v = Verdict {
        check: name.to_owned(),
        outcome: Outcome::Inconclusive,
        canary: rate(xc, nc),
        stable: rate(xs, ns),
        threshold: Some(max),
        n_canary: nc,
        n_stable: ns,
        p_value: None,
        message: String::new(),
        ..Default::default()
    };
    if nc < min_samples || ns < min_samples {
        v.message =
            format!("{nc} canary / {ns} stable scored predictions: below minSamples {min_samples}");
        return v;
    }
    let (pc, ps) = (xc as f64 / nc as f64, xs as f64 / ns as f64);
    let kind = match bound {
        ShiftBound::Absolute(_) => "absolute",
        ShiftBound::Relative(_) => "relative",
    };
    let s = shift(bound, pc, ps);
    if s <= max {
        v.outcome = Outcome::Pass;
        v.message = format!(
            "canary positive rate {pc:.4} vs stable {ps:.4}: {kind} shift {s:.4} within {max}"
        );
        return v;
    }
    let p = two_proportion_two_sided(xc, nc, xs, ns);
    v.p_value = Some(p);
    if p < alpha {
        v.outcome = Outcome::Fail;
        v.message = format!(
            "canary positive rate {pc:.4} vs stable {ps:.4}: {kind} shift {s:.4} beyond {max} \
             (p={p:.2e})"
        );
    } else {
        v.message = format!(
            "canary positive rate {pc:.4} vs stable {ps:.4}: {kind} shift {s:.4} beyond {max}, \
             not significantly (p={p:.2e}, alpha {alpha})"
        );
    }
    v
}
