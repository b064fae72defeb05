//! Judging the canary: the rollout's evidence in, one [`Verdict`] per check out. Pure: no I/O,
//! no clock.
//!
//! The rules, chosen so that looking at every interval is safe and thin evidence reads
//! *inconclusive* (or, with nothing shown, *pass*), never *failed* — though a breach shown on
//! little traffic does fail:
//! - **error rate** (limit `max`): anytime-valid tests over the whole rollout's counts (see
//!   [`error_rate`] and [`sequential`]): *fail* only when the canary is shown above `max` **and**
//!   worse than stable; *pass* (the step may advance) when nothing failed and both variants have
//!   `minRequests` at this weight; promotion needs harm excluded (ratio to stable below the
//!   policy's `harmMargin`, or the rate shown below `max`). Stable breaking `max` too is a
//!   *baseline unhealthy* hold, never the canary's failure.
//! - **positive rate** and **segment disparity**: the same anytime-valid ratio test against their
//!   band (see [`positive_rate`], [`disparity`]);
//! - **latency quantile**: the share of requests slower than the bound, an anytime-valid rate
//!   test on the histogram's buckets (see [`latency`]);
//! - **prediction drift**: PSI on the score histograms the filter read from the replies, failing
//!   only when every distribution the anytime-valid bin bounds allow is beyond `maxPsi` (see
//!   [`drift`]).
//! - the point-value checks judge the windows summed at the current weight:
//! - **custom**: the value the metrics source computed for the check; none (e.g. the Envoy source,
//!   which cannot run PromQL) is inconclusive.
//! - **cpu**, **memory**: the canary's pods against stable's, from container metrics (PromQL
//!   only; see [`resources`]).

pub mod disparity;
pub mod drift;
pub mod error_rate;
pub mod ground_truth;
pub mod latency;
pub mod positive_rate;
pub mod quantile;
pub mod resources;
pub mod sequential;

use crate::policy::validated::{Check, CheckKind, ValidatedPolicy};
use crate::policy::VerdictStatus;

pub use crate::window::{Evidence, Labels, SegmentCounts, VariantWindow, Window};

/// A check's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing failed and the check has its minimum sample at this step: the step may advance.
    Pass,
    Fail,
    /// Not enough evidence either way: the rollout holds.
    #[default]
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
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verdict {
    pub check: String,
    pub outcome: Outcome,
    pub canary: Option<f64>,
    pub stable: Option<f64>,
    pub threshold: Option<f64>,
    pub n_canary: u64,
    pub n_stable: u64,
    /// For a sequential check the always-valid p-value (`1/E`) of its failure test.
    pub p_value: Option<f64>,
    pub message: String,
    /// The canary's value (on the threshold's scale) as an anytime-valid interval, when the check
    /// has one.
    pub interval: Option<[f64; 2]>,
    /// The canary / stable ratio as an anytime-valid interval, when the check compares the two.
    pub ratio: Option<[f64; 2]>,
    /// Harm beyond the policy's margin is excluded: this check lets the canary be promoted.
    pub harm_excluded: bool,
    /// Stable breaks the bound as well (a shared fault): the step holds, it is not the canary's.
    pub baseline_unhealthy: bool,
}

impl From<&Verdict> for VerdictStatus {
    fn from(v: &Verdict) -> Self {
        // JSON has no NaN / ∞: drop non-finite numbers rather than write `null` for a number.
        let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
        let pair = |x: Option<[f64; 2]>| x.filter(|[a, b]| a.is_finite() && b.is_finite());
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
            interval: pair(v.interval),
            ratio: pair(v.ratio),
            harm_excluded: v.harm_excluded,
            baseline_unhealthy: v.baseline_unhealthy,
        }
    }
}

/// What one look at the evidence sees: the whole rollout's evidence (this interval recorded), the
/// weight now, and this interval's window alone.
#[derive(Debug, Clone, Copy)]
pub struct Observations<'a> {
    pub evidence: &'a Evidence,
    pub weight_bp: u32,
    pub latest: &'a Window,
}

impl<'a> Observations<'a> {
    /// The windows summed at the current weight: where minimum samples are counted, and what the
    /// checks without a sequential test judge.
    pub fn current(&self) -> &'a Window {
        self.evidence
            .at_weight(self.weight_bp)
            .unwrap_or(self.latest)
    }
}

/// Judge every check of `policy` on `obs`, in the policy's order.
pub fn evaluate(policy: &ValidatedPolicy, obs: &Observations<'_>) -> Vec<Verdict> {
    policy
        .checks
        .iter()
        .map(|c| evaluate_check(c, policy, obs))
        .collect()
}

/// `window` as a rollout's whole evidence: one look at one step.
pub fn evaluate_window(policy: &ValidatedPolicy, window: &Window) -> Vec<Verdict> {
    let mut evidence = Evidence::default();
    evidence.record(0, window);
    evaluate(
        policy,
        &Observations {
            evidence: &evidence,
            weight_bp: 0,
            latest: window,
        },
    )
}

/// Judge one check.
pub fn evaluate_check(check: &Check, policy: &ValidatedPolicy, obs: &Observations<'_>) -> Verdict {
    let w = obs.current();
    let mut v = match &check.kind {
        CheckKind::ErrorRate { max, alpha } => {
            let rule = error_rate::ErrorRateRule {
                max: *max,
                alpha: *alpha,
                min_requests: policy.min_requests,
                harm_margin: policy.harm_margin,
            };
            return error_rate::error_rate(&check.name, &rule, obs);
        }
        CheckKind::Latency {
            quantile,
            bound,
            alpha,
        } => {
            let rule = latency::LatencyRule {
                quantile: *quantile,
                bound: *bound,
                alpha: *alpha,
                min_requests: policy.min_requests,
            };
            return latency::latency(&check.name, &rule, obs);
        }
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
                ..Default::default()
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
        } => {
            let rule = drift::DriftRule {
                max_psi: *max_psi,
                min_samples: *min_samples,
                alpha: *alpha,
            };
            return drift::prediction_drift(&check.name, &rule, obs);
        }
        CheckKind::PositiveRate {
            bound,
            alpha,
            min_samples,
        } => {
            let rule = positive_rate::PositiveRateRule {
                bound: *bound,
                alpha: *alpha,
                min_samples: *min_samples,
            };
            return positive_rate::positive_rate(&check.name, &rule, obs);
        }
        CheckKind::SegmentDisparity {
            min_ratio,
            max_ratio,
            alpha,
            min_samples_per_segment,
            min_segment_share,
            min_ratio_between_segments,
        } => {
            let rule = disparity::DisparityRule {
                min_ratio: *min_ratio,
                max_ratio: *max_ratio,
                alpha: *alpha,
                min_samples: *min_samples_per_segment,
                min_share: *min_segment_share,
                min_ratio_between: *min_ratio_between_segments,
            };
            return disparity::segment_disparity(&check.name, &rule, obs).verdict;
        }
        CheckKind::Resource(r) => resources::resource(&check.name, r, policy, &w.canary, &w.stable),
        CheckKind::LabelRate {
            metric,
            bound,
            alpha,
            coverage,
        } => {
            let rule = ground_truth::LabelRateRule {
                metric: *metric,
                bound: *bound,
                alpha: *alpha,
                coverage: *coverage,
                bake: policy.feedback.as_ref().is_some_and(|f| f.bake),
            };
            return ground_truth::label_rate(&check.name, &rule, obs);
        }
        CheckKind::EqualizedOdds {
            max_ratio,
            alpha,
            coverage,
        } => {
            let rule = ground_truth::EqualizedOddsRule {
                max_ratio: *max_ratio,
                alpha: *alpha,
                coverage: *coverage,
                bake: policy.feedback.as_ref().is_some_and(|f| f.bake),
            };
            return ground_truth::equalized_odds(&check.name, &rule, obs);
        }
    };
    // Checks without an interval judge the step's point value: a pass is all they can say.
    v.harm_excluded = v.outcome == Outcome::Pass;
    v
}

pub(crate) fn rate(errors: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| errors.min(n) as f64 / n as f64)
}

#[cfg(test)]
mod prediction_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
