//! Judging the canary: per-variant window snapshots in, one [`Verdict`] per check out. Pure: no I/O,
//! no clock.
//!
//! The rules, chosen so that little traffic reads *inconclusive*, never *failed*:
//! - **below `minRequests`** on either variant (for latency: observations in the histogram) every
//!   built-in check is inconclusive;
//! - **error rate** (limit `max`): with `pc` / `ps` the canary / stable rates,
//!   *fail* iff `pc > max` and either (a) the canary is significantly worse than stable (one-sided
//!   pooled two-proportion z-test, p < alpha), or (b) stable itself is within the limit (`ps ≤ max`)
//!   and the canary is significantly above `max` (one-sided one-proportion z-test against `max`).
//!   Rule (b) does not fire when stable breaks the limit too: then the fault is shared (a downstream
//!   outage) and rolling back would not help; only (a) can fail the canary. So identical canary and
//!   stable never fail. *Pass* iff `pc ≤ max`; otherwise (above the limit, not yet significant)
//!   *inconclusive*: the rollout holds until the evidence is in.
//! - **latency quantile**: PromQL's `histogram_quantile` per variant; absolute (`≤ maxMs`) or
//!   relative (`canary ≤ ratio × stable`). When the rank falls in the `+Inf` bucket the value is only
//!   a lower bound: that fails an absolute bound it already exceeds, else reads inconclusive.
//! - **custom**: the value the metrics source computed for the check; none (e.g. the Envoy source,
//!   which cannot run PromQL) is inconclusive.
//! - **cpu**, **memory**: the canary's pods against stable's, from container metrics (PromQL
//!   only; see [`resources`]).
//! - **prediction drift**, **positive-rate shift**, **segment disparity**: on the scores the filter
//!   read from the replies; see [`drift`], [`positive_rate`] and [`disparity`] for each rule. All
//!   three have a minimum sample and fail only on a significant difference, like the error rate.

pub mod disparity;
pub mod drift;
mod merge;
pub mod positive_rate;
pub mod quantile;
pub mod resources;
pub mod stats;

use crate::policy::validated::{Check, CheckKind, LatencyBound, ValidatedPolicy};
use crate::policy::VerdictStatus;
use quantile::{histogram_quantile, Bucket};

pub use crate::window::{SegmentCounts, VariantWindow, Window};

/// A check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    /// Not enough evidence either way: the rollout holds.
    Inconclusive,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

/// One check's verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub check: String,
    pub outcome: Outcome,
    pub canary: Option<f64>,
    pub stable: Option<f64>,
    pub threshold: Option<f64>,
    pub n_canary: u64,
    pub n_stable: u64,
    pub p_value: Option<f64>,
    pub message: String,
}

impl From<&Verdict> for VerdictStatus {
    fn from(v: &Verdict) -> Self {
        // JSON has no NaN / ∞: drop non-finite numbers rather than write `null` for a number.
        let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
        VerdictStatus {
            name: v.check.clone(),
            verdict: v.outcome.as_str().to_owned(),
            canary: finite(v.canary),
            stable: finite(v.stable),
            threshold: finite(v.threshold),
            n_canary: v.n_canary,
            n_stable: v.n_stable,
            p_value: finite(v.p_value),
            message: v.message.clone(),
        }
    }
}

/// Judge every check of `policy` on `window`, in the policy's order.
pub fn evaluate(policy: &ValidatedPolicy, window: &Window) -> Vec<Verdict> {
    policy
        .checks
        .iter()
        .map(|c| evaluate_check(c, policy, window))
        .collect()
}

/// Judge one check.
pub fn evaluate_check(check: &Check, policy: &ValidatedPolicy, w: &Window) -> Verdict {
    match &check.kind {
        CheckKind::ErrorRate { max } => error_rate(
            &check.name,
            *max,
            policy.min_requests,
            policy.alpha,
            &w.canary,
            &w.stable,
        ),
        CheckKind::Latency { quantile, bound } => latency(
            &check.name,
            *quantile,
            *bound,
            policy.min_requests,
            &w.canary,
            &w.stable,
        ),
        CheckKind::Custom {
            comparison,
            threshold,
            ..
        } => {
            let c = w.canary.custom.get(&check.name).copied();
            let s = w.stable.custom.get(&check.name).copied();
            let base = Verdict {
                check: check.name.clone(),
                outcome: Outcome::Inconclusive,
                canary: c,
                stable: s,
                threshold: Some(*threshold),
                n_canary: w.canary.requests,
                n_stable: w.stable.requests,
                p_value: None,
                message: String::new(),
            };
            match c {
                Some(v) if v.is_finite() => {
                    let ok = comparison.holds(v, *threshold);
                    Verdict {
                        outcome: if ok { Outcome::Pass } else { Outcome::Fail },
                        message: format!(
                            "canary {v} {} {threshold}: {}",
                            comparison.as_str(),
                            if ok { "holds" } else { "does not hold" }
                        ),
                        ..base
                    }
                }
                _ => Verdict {
                    message: "no value for the query (custom checks need the Prometheus source)"
                        .into(),
                    ..base
                },
            }
        }
        CheckKind::PredictionDrift {
            max_psi,
            min_samples,
            alpha,
        } => drift::prediction_drift(
            &check.name,
            *max_psi,
            *min_samples,
            *alpha,
            &w.canary,
            &w.stable,
        ),
        CheckKind::PositiveRate {
            bound,
            alpha,
            min_samples,
        } => positive_rate::positive_rate(
            &check.name,
            *bound,
            *alpha,
            *min_samples,
            &w.canary,
            &w.stable,
        ),
        CheckKind::SegmentDisparity {
            min_ratio,
            max_ratio,
            alpha,
            min_samples_per_segment,
        } => {
            let rule = disparity::DisparityRule {
                min_ratio: *min_ratio,
                max_ratio: *max_ratio,
                alpha: *alpha,
                min_samples: *min_samples_per_segment,
            };
            disparity::segment_disparity(&check.name, &rule, &w.canary, &w.stable).verdict
        }
        CheckKind::Resource(r) => resources::resource(&check.name, r, policy, &w.canary, &w.stable),
    }
}

pub(crate) fn rate(errors: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| errors.min(n) as f64 / n as f64)
}

/// The error-rate rule (see the module doc).
pub fn error_rate(
    name: &str,
    max: f64,
    min_requests: u64,
    alpha: f64,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let (nc, ns) = (canary.requests, stable.requests);
    let (ec, es) = (canary.errors.min(nc), stable.errors.min(ns));
    let mut v = Verdict {
        check: name.to_owned(),
        outcome: Outcome::Inconclusive,
        canary: rate(ec, nc),
        stable: rate(es, ns),
        threshold: Some(max),
        n_canary: nc,
        n_stable: ns,
        p_value: None,
        message: String::new(),
    };
    if nc < min_requests || ns < min_requests {
        v.message = format!("{nc} canary / {ns} stable requests: below minRequests {min_requests}");
        return v;
    }
    let pc = ec as f64 / nc as f64;
    let ps = es as f64 / ns as f64;
    if pc <= max {
        v.outcome = Outcome::Pass;
        v.message = format!("canary error rate {pc:.4} within {max}");
        return v;
    }
    let p_vs_stable = stats::two_proportion_greater(ec, nc, es, ns);
    let p_vs_max = stats::one_proportion_greater(ec, nc, max);
    if p_vs_stable < alpha {
        v.outcome = Outcome::Fail;
        v.p_value = Some(p_vs_stable);
        v.message = format!(
            "canary error rate {pc:.4} above {max} and worse than stable {ps:.4} (p={p_vs_stable:.2e})"
        );
    } else if ps <= max && p_vs_max < alpha {
        v.outcome = Outcome::Fail;
        v.p_value = Some(p_vs_max);
        v.message = format!(
            "canary error rate {pc:.4} significantly above {max} while stable {ps:.4} is within it \
             (p={p_vs_max:.2e})"
        );
    } else {
        v.p_value = Some(if ps <= max {
            p_vs_max.min(p_vs_stable)
        } else {
            p_vs_stable
        });
        v.message = format!(
            "canary error rate {pc:.4} above {max}, not significantly (stable {ps:.4}, alpha {alpha})"
        );
    }
    v
}

fn observations(b: &[Bucket]) -> u64 {
    b.iter()
        .filter(|b| b.le == f64::INFINITY)
        .map(|b| b.count)
        .fold(0.0, f64::max) as u64
}

/// The latency-quantile rule (see the module doc).
pub fn latency(
    name: &str,
    q: f64,
    bound: LatencyBound,
    min_requests: u64,
    canary: &VariantWindow,
    stable: &VariantWindow,
) -> Verdict {
    let (nc, ns) = (
        observations(&canary.duration),
        observations(&stable.duration),
    );
    let qc = histogram_quantile(q, &canary.duration);
    let qs = histogram_quantile(q, &stable.duration);
    let mut v = Verdict {
        check: name.to_owned(),
        outcome: Outcome::Inconclusive,
        canary: qc.map(|x| x.value),
        stable: qs.map(|x| x.value),
        threshold: None,
        n_canary: nc,
        n_stable: ns,
        p_value: None,
        message: String::new(),
    };
    let needs_stable = matches!(bound, LatencyBound::RatioToStable(_));
    if nc < min_requests || (needs_stable && ns < min_requests) {
        v.message =
            format!("{nc} canary / {ns} stable observations: below minRequests {min_requests}");
        return v;
    }
    let Some(qc) = qc else {
        v.message = "canary histogram has no +Inf bucket or no observations".into();
        return v;
    };
    let limit = match bound {
        LatencyBound::MaxMs(ms) => ms,
        LatencyBound::RatioToStable(r) => match qs {
            Some(qs) if !qs.in_inf_bucket => r * qs.value,
            _ => {
                v.message = "stable quantile unknown (above the highest bucket)".into();
                return v;
            }
        },
    };
    v.threshold = Some(limit);
    let shown = format!("p{}", q * 100.0);
    if qc.in_inf_bucket {
        // The true quantile is above `qc.value`: at or past the limit means past it.
        if qc.value >= limit {
            v.outcome = Outcome::Fail;
            v.message = format!(
                "canary {shown} above {} ms, beyond limit {limit} ms",
                qc.value
            );
        } else {
            v.message = format!("canary {shown} above the highest bucket {} ms", qc.value);
        }
        return v;
    }
    if qc.value <= limit {
        v.outcome = Outcome::Pass;
        v.message = format!("canary {shown} {:.1} ms within {limit:.1} ms", qc.value);
    } else {
        v.outcome = Outcome::Fail;
        v.message = format!("canary {shown} {:.1} ms above {limit:.1} ms", qc.value);
    }
    v
}

#[cfg(test)]
mod prediction_tests;
#[cfg(test)]
mod tests;
