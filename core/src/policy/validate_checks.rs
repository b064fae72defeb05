//! `spec.analysis.checks[i]` → [`Check`]: one kind per check, its defaults filled, every error
//! naming the field as written. Part of [`super::validate`].

use super::validate::{invalid, non_empty};
use super::validated::*;
use super::{CheckSpec, PositiveRateSpec, PredictionDriftSpec, SegmentDisparitySpec};

/// What a check's validation needs from the rest of the spec.
pub(super) struct CheckContext {
    /// A check's share of the budget when it sets none ([`budget_share`]).
    pub(super) alpha: f64,
    pub(super) min_requests: u64,
    pub(super) has_predictions: bool,
    pub(super) has_segment: bool,
    pub(super) has_feedback: bool,
}

const CHECK_KINDS: &str = "`errorRate`, `latency`, `custom`, `predictionDrift`, `positiveRate`, \
     `segmentDisparity`, `cpu`, `memory`, `accuracy`, `falsePositiveRate`, `truePositiveRate`, \
     `precision`, `equalizedOdds`";

pub(super) fn check(f: &str, c: &CheckSpec, ctx: &CheckContext) -> Result<Check, ValidationError> {
    non_empty(&format!("{f}.name"), &c.name)?;
    let set = [
        c.error_rate.is_some(),
        c.latency.is_some(),
        c.custom.is_some(),
        c.prediction_drift.is_some(),
        c.positive_rate.is_some(),
        c.segment_disparity.is_some(),
        c.cpu.is_some(),
        c.memory.is_some(),
        c.accuracy.is_some(),
        c.false_positive_rate.is_some(),
        c.true_positive_rate.is_some(),
        c.precision.is_some(),
        c.equalized_odds.is_some(),
    ];
    if set.iter().filter(|&&x| x).count() != 1 {
        return Err(invalid(f, format!("needs exactly one of {CHECK_KINDS}")));
    }
    if let Some(kind) = super::validate_ext::resource_check(f, c)? {
        return Ok(Check {
            name: c.name.clone(),
            kind,
        });
    }
    if let Some(kind) = label_check(f, c, ctx)? {
        return Ok(Check {
            name: c.name.clone(),
            kind,
        });
    }
    if let Some(kind) = prediction_check(f, c, ctx)? {
        return Ok(Check {
            name: c.name.clone(),
            kind,
        });
    }
    let kind = match (&c.error_rate, &c.latency, &c.custom) {
        (Some(e), None, None) => {
            if !(0.0..1.0).contains(&e.max) {
                return Err(invalid(
                    format!("{f}.errorRate.max"),
                    format!("{} is not a fraction in [0, 1)", e.max),
                ));
            }
            CheckKind::ErrorRate {
                max: e.max,
                alpha: check_alpha(format!("{f}.errorRate.alpha"), e.alpha, ctx.alpha)?,
            }
        }
        (None, Some(l), None) => {
            if !(l.quantile > 0.0 && l.quantile < 1.0) {
                return Err(invalid(
                    format!("{f}.latency.quantile"),
                    format!("{} is not in (0, 1), e.g. 0.99", l.quantile),
                ));
            }
            let bound = match (l.max_ms, l.max_ratio_to_stable) {
                (Some(ms), None) if ms.is_finite() && ms > 0.0 => LatencyBound::MaxMs(ms),
                (Some(ms), None) => {
                    return Err(invalid(
                        format!("{f}.latency.maxMs"),
                        format!("{ms} is not > 0"),
                    ))
                }
                (None, Some(r)) if r.is_finite() && r >= 1.0 => LatencyBound::RatioToStable(r),
                (None, Some(r)) => {
                    return Err(invalid(
                        format!("{f}.latency.maxRatioToStable"),
                        format!("{r} is not ≥ 1 (1.2 = 20 % slower than stable)"),
                    ))
                }
                _ => {
                    return Err(invalid(
                        format!("{f}.latency"),
                        "needs exactly one of `maxMs`, `maxRatioToStable`",
                    ))
                }
            };
            CheckKind::Latency {
                quantile: l.quantile,
                bound,
                alpha: check_alpha(format!("{f}.latency.alpha"), l.alpha, ctx.alpha)?,
            }
        }
        (None, None, Some(c)) => {
            non_empty(&format!("{f}.custom.query"), &c.query)?;
            if !c.query.contains("{{variant}}") {
                return Err(invalid(
                    format!("{f}.custom.query"),
                    "must contain {{variant}} (it is evaluated once per variant)",
                ));
            }
            let comparison = match c.comparison.as_str() {
                "<" => Comparison::Lt,
                "<=" => Comparison::Le,
                ">" => Comparison::Gt,
                ">=" => Comparison::Ge,
                other => {
                    return Err(invalid(
                        format!("{f}.custom.comparison"),
                        format!("{other:?} is not one of <, <=, >, >="),
                    ))
                }
            };
            if !c.threshold.is_finite() {
                return Err(invalid(
                    format!("{f}.custom.threshold"),
                    "must be a finite number",
                ));
            }
            CheckKind::Custom {
                query: c.query.clone(),
                comparison,
                threshold: c.threshold,
            }
        }
        _ => return Err(invalid(f, format!("needs exactly one of {CHECK_KINDS}"))),
    };
    Ok(Check {
        name: c.name.clone(),
        kind,
    })
}

/// The ground-truth checks; `None` when `c` is another kind.
fn label_check(
    f: &str,
    c: &CheckSpec,
    ctx: &CheckContext,
) -> Result<Option<CheckKind>, ValidationError> {
    use super::feedback::{equalized_odds, label_rate, LabelMetric};
    let rates = [
        (LabelMetric::Accuracy, &c.accuracy),
        (LabelMetric::FalsePositiveRate, &c.false_positive_rate),
        (LabelMetric::TruePositiveRate, &c.true_positive_rate),
        (LabelMetric::Precision, &c.precision),
    ];
    let (field, kind) = if let Some((metric, Some(s))) = rates.iter().find(|(_, s)| s.is_some()) {
        let field = format!("{f}.{}", metric.field());
        let (bound, coverage) = label_rate(&field, s)?;
        let alpha = check_alpha(format!("{field}.alpha"), s.alpha, ctx.alpha)?;
        let kind = CheckKind::LabelRate {
            metric: *metric,
            bound,
            alpha,
            coverage,
        };
        (field, kind)
    } else if let Some(s) = &c.equalized_odds {
        let field = format!("{f}.equalizedOdds");
        if !ctx.has_segment {
            return Err(invalid(
                field,
                "needs spec.routing.segment (the header whose values split the stats)",
            ));
        }
        let (max_ratio, coverage) = equalized_odds(&field, s)?;
        let alpha = check_alpha(format!("{field}.alpha"), s.alpha, ctx.alpha)?;
        let kind = CheckKind::EqualizedOdds {
            max_ratio,
            alpha,
            coverage,
        };
        (field, kind)
    } else {
        return Ok(None);
    };
    if !ctx.has_feedback {
        return Err(invalid(
            field,
            "needs spec.feedback (labels arrive only through the feedback path)",
        ));
    }
    Ok(Some(kind))
}

/// The three checks on prediction scores; `None` when `c` is another kind.
fn prediction_check(
    f: &str,
    c: &CheckSpec,
    ctx: &CheckContext,
) -> Result<Option<CheckKind>, ValidationError> {
    let (key, kind) = if let Some(d) = &c.prediction_drift {
        let f = format!("{f}.predictionDrift");
        ("predictionDrift", drift(&f, d, ctx)?)
    } else if let Some(p) = &c.positive_rate {
        let f = format!("{f}.positiveRate");
        ("positiveRate", positive_rate(&f, p, ctx)?)
    } else if let Some(s) = &c.segment_disparity {
        let f = format!("{f}.segmentDisparity");
        if !ctx.has_segment {
            return Err(invalid(
                f,
                "needs spec.routing.segment (the header whose values split the stats)",
            ));
        }
        ("segmentDisparity", disparity(&f, s, ctx)?)
    } else {
        return Ok(None);
    };
    if !ctx.has_predictions {
        return Err(invalid(
            format!("{f}.{key}"),
            "needs spec.predictions (the filter reads no scores without it)",
        ));
    }
    Ok(Some(kind))
}

fn check_alpha(field: String, alpha: Option<f64>, default: f64) -> Result<f64, ValidationError> {
    let a = alpha.unwrap_or(default);
    if !(a > 0.0 && a <= 0.5) {
        return Err(invalid(field, format!("{a} is not in (0, 0.5]")));
    }
    Ok(a)
}

fn at_least_one(field: String, n: Option<u64>, default: u64) -> Result<u64, ValidationError> {
    match n.unwrap_or(default) {
        0 => Err(invalid(
            field,
            "must be at least 1 (no verdict without data)",
        )),
        n => Ok(n),
    }
}

fn drift(
    f: &str,
    d: &PredictionDriftSpec,
    ctx: &CheckContext,
) -> Result<CheckKind, ValidationError> {
    let max_psi = d.max_psi.unwrap_or(DEFAULT_MAX_PSI);
    if !(max_psi.is_finite() && max_psi > 0.0) {
        return Err(invalid(
            format!("{f}.maxPsi"),
            format!("{max_psi} is not > 0 (0.1 = some shift, 0.2 = significant)"),
        ));
    }
    Ok(CheckKind::PredictionDrift {
        max_psi,
        min_samples: at_least_one(
            format!("{f}.minSamples"),
            d.min_samples,
            DEFAULT_DRIFT_MIN_SAMPLES,
        )?,
        alpha: ctx.alpha,
    })
}

fn positive_rate(
    f: &str,
    p: &PositiveRateSpec,
    ctx: &CheckContext,
) -> Result<CheckKind, ValidationError> {
    let bound = match (p.max_relative_shift, p.max_absolute_shift) {
        (Some(r), None) if r.is_finite() && r > 0.0 => ShiftBound::Relative(r),
        (Some(r), None) => {
            return Err(invalid(
                format!("{f}.maxRelativeShift"),
                format!("{r} is not > 0 (0.2 = 20 % more or fewer positives)"),
            ))
        }
        (None, Some(a)) if a > 0.0 && a < 1.0 => ShiftBound::Absolute(a),
        (None, Some(a)) => {
            return Err(invalid(
                format!("{f}.maxAbsoluteShift"),
                format!("{a} is not a rate difference in (0, 1)"),
            ))
        }
        _ => {
            return Err(invalid(
                f,
                "needs exactly one of `maxRelativeShift`, `maxAbsoluteShift`",
            ))
        }
    };
    Ok(CheckKind::PositiveRate {
        bound,
        alpha: check_alpha(format!("{f}.alpha"), p.alpha, ctx.alpha)?,
        min_samples: at_least_one(format!("{f}.minSamples"), p.min_samples, ctx.min_requests)?,
    })
}

fn disparity(
    f: &str,
    s: &SegmentDisparitySpec,
    ctx: &CheckContext,
) -> Result<CheckKind, ValidationError> {
    let min_ratio = s.min_ratio.unwrap_or(DEFAULT_MIN_RATIO);
    let max_ratio = s.max_ratio.unwrap_or(DEFAULT_MAX_RATIO);
    if !(min_ratio.is_finite() && min_ratio > 0.0 && min_ratio <= 1.0) {
        return Err(invalid(
            format!("{f}.minRatio"),
            format!("{min_ratio} is not in (0, 1] (0.8 = the four-fifths rule)"),
        ));
    }
    if !(max_ratio.is_finite() && max_ratio >= 1.0) {
        return Err(invalid(
            format!("{f}.maxRatio"),
            format!("{max_ratio} is not ≥ 1 (1.25 = the four-fifths rule read upwards)"),
        ));
    }
    let min_segment_share = s.min_segment_share.unwrap_or(DEFAULT_MIN_SEGMENT_SHARE);
    if !(0.0..1.0).contains(&min_segment_share) {
        return Err(invalid(
            format!("{f}.minSegmentShare"),
            format!("{min_segment_share} is not a share in [0, 1) (0.02 = 2 % of the predictions)"),
        ));
    }
    if let Some(r) = s.min_ratio_between_segments {
        if !(r > 0.0 && r <= 1.0) {
            return Err(invalid(
                format!("{f}.minRatioBetweenSegments"),
                format!("{r} is not in (0, 1] (0.8 = the four-fifths rule)"),
            ));
        }
    }
    Ok(CheckKind::SegmentDisparity {
        min_ratio,
        max_ratio,
        min_segment_share,
        min_ratio_between_segments: s.min_ratio_between_segments,
        alpha: check_alpha(format!("{f}.alpha"), s.alpha, ctx.alpha)?,
        min_samples_per_segment: at_least_one(
            format!("{f}.minSamplesPerSegment"),
            s.min_samples_per_segment,
            DEFAULT_MIN_SAMPLES_PER_SEGMENT,
        )?,
    })
}

/// The `alpha` a check sets for itself, if its kind spends from the budget at all.
fn own_alpha(c: &CheckSpec) -> Option<Option<f64>> {
    if let Some(e) = &c.error_rate {
        Some(e.alpha)
    } else if let Some(p) = &c.positive_rate {
        Some(p.alpha)
    } else if let Some(s) = &c.segment_disparity {
        Some(s.alpha)
    } else if let Some(l) = &c.latency {
        Some(l.alpha)
    } else if let Some(s) = [
        &c.accuracy,
        &c.false_positive_rate,
        &c.true_positive_rate,
        &c.precision,
    ]
    .into_iter()
    .flatten()
    .next()
    {
        Some(s.alpha)
    } else if let Some(s) = &c.equalized_odds {
        Some(s.alpha)
    } else {
        c.prediction_drift.as_ref().map(|_| None)
    }
}

/// One budget: what each check that sets no `alpha` gets of `alpha` after the ones that do
/// (Bonferroni, so the chance that any check ever fails a healthy canary stays ≤ `alpha`).
pub(super) fn budget_share(alpha: f64, checks: &[CheckSpec]) -> Result<f64, ValidationError> {
    // An own alpha out of range is left to that check's validation, which names its field.
    let own: Vec<Option<f64>> = checks
        .iter()
        .filter_map(own_alpha)
        .map(|a| a.filter(|a| *a > 0.0 && *a <= 0.5))
        .collect();
    let spent: f64 = own.iter().flatten().sum();
    let open = own.iter().filter(|a| a.is_none()).count();
    if spent > alpha * (1.0 + 1e-9) || (open > 0 && spent >= alpha) {
        return Err(invalid(
            "spec.analysis.checks",
            format!(
                "the checks' own alphas add up to {spent}, leaving nothing of spec.analysis.alpha \
                 {alpha} for the {open} other(s): one budget covers every check of the rollout"
            ),
        ));
    }
    Ok(if open == 0 {
        alpha
    } else {
        (alpha - spent) / open as f64
    })
}
