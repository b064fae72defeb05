//! The error-rate check, anytime-valid over the whole rollout.
//!
//! With `p_c`, `p_s` the canary's and stable's error rates, `θ = p_c / p_s`, and the check's
//! level `α` (its share of the policy's budget), on every weight's summed counts:
//! - **fail** iff both e-processes reach `1/α`: "`p_c ≤ max`" is rejected (the canary's own
//!   counts) **and** "`θ ≤ 1`" is rejected (conditional on the split). An intersection–union test:
//!   a healthy canary — within `max`, or no worse than stable — is failed with probability ≤ α at
//!   any time in the rollout, however often it is looked at.
//! - **baseline unhealthy** (hold, not a failure) iff the canary is not failing, is not shown within
//!   `max`, and this interval's stable counts alone reject "`p_s ≤ max`": a shared fault (an
//!   outage, a bad dependency) that rolling the canary back would not cure.
//! - **pass** (the step may advance) iff neither of the above and both variants have
//!   `minRequests` requests at the current weight; else **inconclusive**.
//! - **harm excluded** (what promotion needs) iff "`θ ≥ harmMargin`" is rejected, or
//!   "`p_c ≥ max`" is: the canary is shown no worse than the margin allows.
//!
//! Assumptions: events are Poisson / Bernoulli given the split, up to the dispersion factor `φ`
//! estimated from stable's interval-to-interval spread ([`crate::window::Dispersion`]), which
//! tempers every likelihood ratio.

use super::sequential::{self, RateRow, Side};
use super::{rate, Observations, Outcome, Verdict};

/// The check's parameters, as validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRateRule {
    pub max: f64,
    /// The check's share of the policy's budget.
    pub alpha: f64,
    pub min_requests: u64,
    pub harm_margin: f64,
}

/// The rule above, on `obs`.
pub fn error_rate(name: &str, rule: &ErrorRateRule, obs: &Observations<'_>) -> Verdict {
    let rows = sequential::rows(&obs.evidence.steps, |v| {
        (v.requests as f64, v.errors as f64)
    });
    let total = RateRow::sum(&rows);
    let phi = obs.evidence.dispersion.errors.phi();
    let level = sequential::threshold(rule.alpha);
    let max = rule.max;

    let above_max = sequential::rate_log_e(total.n_c, total.x_c, max, Side::Above, phi);
    let worse = sequential::ratio_log_e(&rows, 1.0, Side::Above, phi);
    let within_max = sequential::rate_log_e(total.n_c, total.x_c, max, Side::Below, phi);
    let below_margin = sequential::ratio_log_e(&rows, rule.harm_margin, Side::Below, phi);
    let latest = &obs.latest.stable;
    let stable_now = sequential::rate_log_e(
        latest.requests as f64,
        latest.errors as f64,
        max,
        Side::Above,
        phi,
    );

    let interval = sequential::rate_interval(total.n_c, total.x_c, rule.alpha, phi);
    let ratio = sequential::ratio_interval(&rows, rule.alpha, phi);
    let (n_c, n_s) = (total.n_c as u64, total.n_s as u64);
    let current = obs.current();
    let sampled = current.canary.requests >= rule.min_requests
        && current.stable.requests >= rule.min_requests;

    let failed = above_max >= level && worse >= level;
    let baseline_unhealthy = !failed && within_max < level && stable_now >= level;
    let outcome = if failed {
        Outcome::Fail
    } else if sampled && !baseline_unhealthy {
        Outcome::Pass
    } else {
        Outcome::Inconclusive
    };
    let harm_excluded = !failed && (below_margin >= level || within_max >= level);

    let (pc, ps) = (
        total.x_c / total.n_c.max(1.0),
        total.x_s / total.n_s.max(1.0),
    );
    let shown = format!(
        "canary error rate {pc:.4} in [{:.4}, {:.4}] (max {max}), stable {ps:.4}, ratio in [{:.2}, {}]",
        interval.0,
        interval.1,
        ratio.0,
        sequential::show_upper(ratio.1, 2),
    );
    let message = if failed {
        format!("{shown}: above max and worse than stable")
    } else if baseline_unhealthy {
        format!(
            "{shown}: stable breaks max as well ({:.4} this interval): baseline unhealthy",
            latest.errors as f64 / latest.requests.max(1) as f64
        )
    } else if !sampled {
        format!(
            "{shown}: {} canary / {} stable requests at this weight, below minRequests {}",
            current.canary.requests, current.stable.requests, rule.min_requests
        )
    } else if within_max >= level {
        format!("{shown}: shown below max")
    } else if harm_excluded {
        format!("{shown}: shown below {}× stable", rule.harm_margin)
    } else {
        format!(
            "{shown}: nothing failed; not yet shown within max or below {}× stable",
            rule.harm_margin
        )
    };
    Verdict {
        check: name.to_owned(),
        outcome,
        canary: rate(total.x_c as u64, n_c),
        stable: rate(total.x_s as u64, n_s),
        threshold: Some(max),
        n_canary: n_c,
        n_stable: n_s,
        p_value: Some(sequential::p_value(above_max.min(worse))),
        message,
        interval: Some([interval.0, interval.1]),
        ratio: Some([ratio.0, ratio.1]),
        harm_excluded,
        baseline_unhealthy,
    }
}

#[cfg(test)]
mod tests;
