//! Ground truth in the policy: `spec.feedback` (tickets on replies, labels sent back through the
//! mesh) and the checks judged on those labels. Spec types, their validated forms and validation.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::{duration, invalid, non_empty};
use super::validated::ValidationError;

/// Sign a ticket onto each model reply and count the labels the application sends back with it
/// (`POST /v1/models/<model>:feedback`). Needs `spec.predictions`: a ticket records what the
/// model predicted.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FeedbackSpec {
    /// The Secret (in the policy's namespace) with the ticket keys, base64 as Secrets hold them:
    /// `key` signs and verifies; `previousKey`, while a rotation is under way, only verifies.
    /// Locally: a directory of that name under `mlcanary local --secrets`, one file per key.
    pub secret_ref: SecretRefSpec,
    /// Tickets older than this are refused: the longest a label may take to arrive (default
    /// `7d`). Keep a rotated-out key as `previousKey` at least this long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// How long the slowest usual label takes to arrive (e.g. `4s` in the demo; a chargeback's
    /// days in life). The labels counted in this long after each weight change are left out of
    /// the checks: they mix the weight before's predictions, fast labels first, which would bias
    /// them (default: none left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_delay: Option<String>,
    /// Hold the last step — no promotion — until every ground-truth check has its labels.
    /// Without it, a ground-truth check short of labels holds every step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bake: bool,
}

/// A Secret by name.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretRefSpec {
    /// The Secret's name, in the policy's namespace.
    pub name: String,
}

/// A rate read off the labels, relative to stable. Exactly one bound.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LabelRateSpec {
    /// Largest acceptable worsening in rate points: accuracy, detection rate or precision this
    /// much lower than stable's, the false-positive rate this much higher (0.02 = two points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delta: Option<f64>,
    /// Largest acceptable ratio of the canary's error-side rate to stable's (≥ 1): the
    /// false-positive rate itself, the miss rate (1 − detection rate), the error rate
    /// (1 − accuracy) or the false-discovery rate (1 − precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// This check's share of `spec.analysis.alpha`, split over overall and each segment judged
    /// (default: an equal split of the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Labelled predictions per variant in the rate's denominator (negatives for the
    /// false-positive rate, positives for the detection rate, …) before any verdict, overall and
    /// per segment (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_labels: Option<u64>,
    /// Share of each variant's scored predictions that must have a label before any verdict
    /// (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_coverage: Option<f64>,
}

/// Equalized odds between segments: per segment, the canary's false-positive rate and miss rate
/// in the segment against the rest's, divided by the same ratio of stable (the canary × segment
/// interaction), within `[1 / maxRatio, maxRatio]`. Needs `spec.routing.segment`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EqualizedOddsSpec {
    /// Largest acceptable interaction (default 1.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// This check's share of `spec.analysis.alpha`, split over the segments and both rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Labelled predictions per variant in a segment's denominator before it is judged
    /// (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_labels: Option<u64>,
    /// As for the rate checks (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_coverage: Option<f64>,
}

/// Validated `spec.feedback`; `keys` are filled by the adapter that can read the Secret.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub secret: String,
    pub max_age: Duration,
    pub label_delay: Duration,
    pub bake: bool,
    /// Base64 keys, signing key first; empty until resolved (the filter config then refuses it).
    pub keys: Vec<String>,
}

/// The Secret's key that signs (and verifies).
pub const SECRET_KEY: &str = "key";
/// The Secret's key that only verifies, while a rotation is under way.
pub const SECRET_PREVIOUS_KEY: &str = "previousKey";

/// Why a policy's ticket keys could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("Secret {secret:?}: {reason}")]
    Bad { secret: String, reason: String },
}

impl Feedback {
    /// Windows (of `interval`) whose labels are left out at each weight: `labelDelay` rounded up.
    pub fn settle_windows(&self, interval: Duration) -> u32 {
        if interval.is_zero() {
            return 0;
        }
        self.label_delay
            .as_nanos()
            .div_ceil(interval.as_nanos())
            .min(u128::from(u32::MAX)) as u32
    }

    /// Take the keys from the Secret's `data` (raw bytes, as a Secret decodes or a mounted
    /// Secret volume holds them): `key`, then `previousKey` if present. Any bytes are a key —
    /// only the filter signs and verifies, the application never needs it — but at least 16.
    pub fn set_keys(
        &mut self,
        data: &std::collections::BTreeMap<String, Vec<u8>>,
    ) -> Result<(), KeyError> {
        let bad = |reason: String| KeyError::Bad {
            secret: self.secret.clone(),
            reason,
        };
        let mut keys = Vec::new();
        for (name, required) in [(SECRET_KEY, true), (SECRET_PREVIOUS_KEY, false)] {
            let Some(k) = data.get(name) else {
                if required {
                    return Err(bad(format!("has no `{name}`")));
                }
                continue;
            };
            let k = trim_newline(k);
            if k.len() < mlcanary_filter::ticket::MIN_KEY_BYTES {
                return Err(bad(format!(
                    "`{name}` is {} bytes; at least {} (e.g. `openssl rand -base64 32`)",
                    k.len(),
                    mlcanary_filter::ticket::MIN_KEY_BYTES
                )));
            }
            keys.push(mlcanary_filter::b64::encode_std(k));
        }
        self.keys = keys;
        Ok(())
    }
}

/// A key file written with `echo` ends in a newline that is not part of the key.
fn trim_newline(k: &[u8]) -> &[u8] {
    let k = k.strip_suffix(b"\n").unwrap_or(k);
    k.strip_suffix(b"\r").unwrap_or(k)
}

/// Default `maxAge`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Default `minLabels`.
pub const DEFAULT_MIN_LABELS: u64 = 100;
/// Default `minCoverage`.
pub const DEFAULT_MIN_COVERAGE: f64 = 0.25;
/// Default equalized-odds band.
pub const DEFAULT_MAX_INTERACTION: f64 = 1.5;

/// Which rate a ground-truth check judges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelMetric {
    Accuracy,
    FalsePositiveRate,
    TruePositiveRate,
    Precision,
}

impl LabelMetric {
    pub fn field(self) -> &'static str {
        match self {
            LabelMetric::Accuracy => "accuracy",
            LabelMetric::FalsePositiveRate => "falsePositiveRate",
            LabelMetric::TruePositiveRate => "truePositiveRate",
            LabelMetric::Precision => "precision",
        }
    }
}

/// How far the canary's error-side rate may be from stable's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LabelBound {
    /// In rate points.
    Delta(f64),
    /// As a ratio (≥ 1).
    Ratio(f64),
}

/// What every label check needs before a verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coverage {
    pub min_labels: u64,
    pub min_coverage: f64,
}

pub(super) fn feedback(
    f: &FeedbackSpec,
    has_predictions: bool,
) -> Result<Feedback, ValidationError> {
    if !has_predictions {
        return Err(invalid(
            "spec.feedback",
            "needs `spec.predictions`: a ticket records what the model predicted",
        ));
    }
    non_empty("spec.feedback.secretRef.name", &f.secret_ref.name)?;
    let max_age = match &f.max_age {
        None => DEFAULT_MAX_AGE,
        Some(s) => duration("spec.feedback.maxAge", s)?,
    };
    if max_age < Duration::from_secs(1) {
        return Err(invalid("spec.feedback.maxAge", "must be at least 1s"));
    }
    let label_delay = match &f.label_delay {
        None => Duration::ZERO,
        Some(s) => duration("spec.feedback.labelDelay", s)?,
    };
    Ok(Feedback {
        secret: f.secret_ref.name.clone(),
        max_age,
        label_delay,
        bake: f.bake,
        keys: Vec::new(),
    })
}

fn coverage(
    f: &str,
    min_labels: Option<u64>,
    min_coverage: Option<f64>,
) -> Result<Coverage, ValidationError> {
    let min_coverage = min_coverage.unwrap_or(DEFAULT_MIN_COVERAGE);
    if !(0.0..=1.0).contains(&min_coverage) {
        return Err(invalid(
            format!("{f}.minCoverage"),
            format!("{min_coverage} is not a share in [0, 1]"),
        ));
    }
    Ok(Coverage {
        min_labels: min_labels.unwrap_or(DEFAULT_MIN_LABELS).max(1),
        min_coverage,
    })
}

/// A label-rate check's bound and coverage.
pub(super) fn label_rate(
    f: &str,
    s: &LabelRateSpec,
) -> Result<(LabelBound, Coverage), ValidationError> {
    let bound = match (s.max_delta, s.max_ratio) {
        (Some(d), None) if d.is_finite() && (0.0..1.0).contains(&d) => LabelBound::Delta(d),
        (Some(d), None) => {
            return Err(invalid(
                format!("{f}.maxDelta"),
                format!("{d} is not in rate points [0, 1)"),
            ))
        }
        (None, Some(r)) if r.is_finite() && r >= 1.0 => LabelBound::Ratio(r),
        (None, Some(r)) => {
            return Err(invalid(
                format!("{f}.maxRatio"),
                format!("{r} is not ≥ 1 (1.5 = half as many errors again as stable)"),
            ))
        }
        _ => return Err(invalid(f, "needs exactly one of `maxDelta`, `maxRatio`")),
    };
    Ok((bound, coverage(f, s.min_labels, s.min_coverage)?))
}

/// The equalized-odds band and coverage.
pub(super) fn equalized_odds(
    f: &str,
    s: &EqualizedOddsSpec,
) -> Result<(f64, Coverage), ValidationError> {
    let r = s.max_ratio.unwrap_or(DEFAULT_MAX_INTERACTION);
    if !(r.is_finite() && r > 1.0) {
        return Err(invalid(format!("{f}.maxRatio"), format!("{r} is not > 1")));
    }
    Ok((r, coverage(f, s.min_labels, s.min_coverage)?))
}
