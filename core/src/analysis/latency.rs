//! The latency-quantile check, as a rate: "the canary's `q`-quantile is above `L`" is "more than
//! `1 − q` of its requests are slower than `L`", and that share is counted by the duration
//! histogram's buckets — so the anytime-valid rate tests of [`sequential`] apply, on the whole
//! rollout's buckets (summed per weight).
//!
//! With `L` the limit (`maxMs`, or `maxRatioToStable` × stable's quantile over the rollout), `L⁺`
//! the smallest bucket bound ≥ `L` and `L⁻` the largest ≤ `L`, at the check's level `α`:
//! - **fail** iff the canary's share slower than `L⁺` is shown above `1 − q` (so its quantile is
//!   above `L⁺ ≥ L`); for `maxRatioToStable` also that share shown above stable's share slower than
//!   `L⁺` (conditional on the split, as for errors): a slow shared dependency is not the canary's;
//! - **pass** (the step may advance) iff not, with `minRequests` observations at this weight (both
//!   variants for a relative bound); else **inconclusive**;
//! - **harm excluded** (promotion) iff the share slower than `L⁻` is shown below `1 − q`: the
//!   quantile is within `L⁻ ≤ L`.
//!
//! Only bounds the histograms report are used (the canary's; for a relative bound those both
//! variants share), so every count is exact. Simplifications, said plainly: the relative limit uses stable's quantile as measured (a point
//! estimate), and the dispersion factor is the one measured on stable's errors (slow requests
//! cluster like failing ones; no separate series is kept per bound).

use super::quantile::{histogram_quantile, Bucket};
use super::sequential::{self, Side};
use super::{Observations, Outcome, Verdict};
use crate::policy::validated::LatencyBound;

/// The check's parameters, as validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatencyRule {
    pub quantile: f64,
    pub bound: LatencyBound,
    /// The policy's budget share for this check.
    pub alpha: f64,
    pub min_requests: u64,
}

/// Observations in a cumulative histogram (its `+Inf` count).
pub fn observations(b: &[Bucket]) -> u64 {
    b.iter()
        .filter(|b| b.le == f64::INFINITY)
        .map(|b| b.count)
        .fold(0.0, f64::max) as u64
}

/// Observations above `le` (a bound of the histogram, or between two: the step function).
fn slower_than(b: &[Bucket], le: f64) -> f64 {
    let total = observations(b) as f64;
    let at = b
        .iter()
        .filter(|x| x.le <= le)
        .map(|x| x.count)
        .fold(0.0, f64::max);
    (total - at).max(0.0)
}

/// The smallest finite bound ≥ `limit` and the largest ≤ `limit` over `bounds`.
fn around(bounds: &[f64], limit: f64) -> (Option<f64>, Option<f64>) {
    let up = bounds
        .iter()
        .copied()
        .filter(|&b| b >= limit && b.is_finite())
        .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |m| m.min(b))));
    let down = bounds
        .iter()
        .copied()
        .filter(|&b| b <= limit)
        .fold(None, |m: Option<f64>, b| Some(m.map_or(b, |m| m.max(b))));
    (up, down)
}

/// The rule above, on `obs`.
pub fn latency(name: &str, rule: &LatencyRule, obs: &Observations<'_>) -> Verdict {
    let q = rule.quantile;
    let steps = &obs.evidence.steps;
    // The rollout's histograms, for the point quantiles shown and the relative limit.
    let all = obs.evidence.total();
    let (hc, hs) = (&all.canary.duration, &all.stable.duration);
    let qc = histogram_quantile(q, hc);
    let qs = histogram_quantile(q, hs);
    let current = obs.current();
    let (cur_c, cur_s) = (
        observations(&current.canary.duration),
        observations(&current.stable.duration),
    );
    let mut v = Verdict {
        check: name.to_owned(),
        canary: qc.map(|x| x.value),
        stable: qs.map(|x| x.value),
        n_canary: observations(hc),
        n_stable: observations(hs),
        ..Default::default()
    };
    let relative = matches!(rule.bound, LatencyBound::RatioToStable(_));
    let sampled = cur_c >= rule.min_requests && (!relative || cur_s >= rule.min_requests);
    let limit = match rule.bound {
        LatencyBound::MaxMs(ms) => ms,
        LatencyBound::RatioToStable(r) => match qs {
            Some(qs) if !qs.in_inf_bucket => r * qs.value,
            _ => {
                v.message =
                    "stable's quantile unknown (no histogram, or above the highest bucket)".into();
                return v;
            }
        },
    };
    v.threshold = Some(limit);
    // Bounds the tests can count exactly: the canary's (and, for a relative bound, stable's too).
    let bounds: Vec<f64> = hc
        .iter()
        .map(|b| b.le)
        .filter(|le| !relative || hs.iter().any(|s| s.le == *le))
        .collect();
    let (up, down) = around(&bounds, limit);
    let phi = obs.evidence.dispersion.errors.phi();
    let level = sequential::threshold(rule.alpha);
    let tail = 1.0 - q;
    let shown = |le: f64, side: Side| {
        let (n, x) = (observations(hc) as f64, slower_than(hc, le));
        sequential::rate_log_e(n, x, tail, side, phi) >= level
    };
    let worse_than_stable = |le: f64| {
        let rows = sequential::rows(steps, |v| {
            (
                observations(&v.duration) as f64,
                slower_than(&v.duration, le),
            )
        });
        sequential::ratio_log_e(&rows, 1.0, Side::Above, phi) >= level
    };
    let failed =
        up.is_some_and(|le| shown(le, Side::Above) && (!relative || worse_than_stable(le)));
    let within = down.is_some_and(|le| shown(le, Side::Below));
    let tail_at = |le: f64| slower_than(hc, le) / (observations(hc).max(1) as f64);
    let p = format!("p{}", q * 100.0);
    let head = match qc {
        Some(x) if x.in_inf_bucket => format!("canary {p} above {} ms", x.value),
        Some(x) => format!("canary {p} {:.1} ms", x.value),
        None => format!("canary {p} unknown"),
    };
    v.outcome = if failed {
        Outcome::Fail
    } else if sampled {
        Outcome::Pass
    } else {
        Outcome::Inconclusive
    };
    v.harm_excluded = !failed && within;
    v.message = if failed {
        let le = up.unwrap_or(limit);
        format!(
            "{head}: {:.2} % slower than {le} ms, shown above {:.2} % (limit {limit:.1} ms)",
            100.0 * tail_at(le),
            100.0 * tail
        )
    } else if !sampled {
        format!(
            "{head}: {cur_c} canary / {cur_s} stable observations at this weight, below minRequests {}",
            rule.min_requests
        )
    } else if within {
        format!("{head}: shown within {limit:.1} ms")
    } else {
        format!("{head}: nothing failed; not yet shown within {limit:.1} ms")
    };
    v
}

#[cfg(test)]
mod tests;
