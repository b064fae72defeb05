//! The counts a judgement is made on, and the evidence carried from one tick to the next. A leaf:
//! it imports nothing of the crate, so the status types, the sources and the judge can all use it.
//!
//! Everything here is serialisable because it is persisted in the policy's status (`status.json`
//! locally, the CanaryPolicy's status on a cluster): a restarted, `--once` or newly elected
//! controller judges on the same evidence as one that never stopped.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// One cumulative bucket: observations `≤ le`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(into = "BucketRepr", try_from = "BucketRepr")]
pub struct Bucket {
    pub le: f64,
    pub count: f64,
}

/// A bucket as JSON: `le` as Prometheus writes it (`"+Inf"` has no JSON number).
#[derive(Serialize, Deserialize, JsonSchema)]
struct BucketRepr {
    /// Upper bound, e.g. `"25"` or `"+Inf"`.
    le: String,
    count: f64,
}

impl From<Bucket> for BucketRepr {
    fn from(b: Bucket) -> Self {
        let le = if b.le == f64::INFINITY {
            "+Inf".to_owned()
        } else {
            b.le.to_string()
        };
        BucketRepr { le, count: b.count }
    }
}

impl TryFrom<BucketRepr> for Bucket {
    type Error = String;
    fn try_from(r: BucketRepr) -> Result<Self, String> {
        let le = match r.le.as_str() {
            "+Inf" | "Inf" => f64::INFINITY,
            s => s.parse().map_err(|_| format!("bucket bound {s:?}"))?,
        };
        Ok(Bucket { le, count: r.count })
    }
}

impl JsonSchema for Bucket {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Bucket".into()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        BucketRepr::json_schema(g)
    }
}

/// What one variant did during a window (differences of cumulative counters).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VariantWindow {
    pub requests: u64,
    pub errors: u64,
    /// Cumulative duration buckets (`le` in ms → count), with a `+Inf` bucket.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub duration: Vec<Bucket>,
    /// Values of custom checks by check name (only a PromQL-capable source fills them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, f64>,
    /// Cumulative prediction-score buckets (`le` in per mille of the score → count), with a
    /// `+Inf` bucket; empty when the policy reads no scores.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub scores: Vec<Bucket>,
    /// Scored instances (`mlcanary_predictions_total`): the positive rate's denominator.
    pub scored: u64,
    /// Instances scored at or above the positive threshold.
    pub positives: u64,
    /// The same counts per segment label (`other` included); empty without `routing.segment`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, SegmentCounts>,
}

/// One segment's counts in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SegmentCounts {
    pub requests: u64,
    pub errors: u64,
    pub scored: u64,
    pub positives: u64,
}

/// Both variants' windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Window {
    pub stable: VariantWindow,
    pub canary: VariantWindow,
}

/// Where the next window starts: the instant the last one ended, and — for a source that cannot
/// read the past (Envoy's admin endpoint) — the policy's cumulative counters read then.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Mark {
    /// Unix time in milliseconds.
    pub at_ms: i64,
    /// Cumulative counters at `atMs` in exposition syntax (`name{labels}` → value); absent series
    /// read 0. Empty for Prometheus, which is asked for the value at `atMs` again when needed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub counters: BTreeMap<String, f64>,
}

/// An analysis still inconclusive: its summed window and the canary weight it was gathered at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldWindow {
    pub weight_bp: u32,
    pub window: Window,
}

/// What the engine carries between ticks of one policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldWindow>,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.mark.is_none() && self.held.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_round_trips_through_json_with_its_inf_bucket() {
        let mut w = Window::default();
        w.canary.requests = 7;
        w.canary.duration = vec![
            Bucket {
                le: 0.5,
                count: 1.0,
            },
            Bucket {
                le: f64::INFINITY,
                count: 7.0,
            },
        ];
        w.canary.segments.insert(
            "60+".into(),
            SegmentCounts {
                requests: 3,
                ..Default::default()
            },
        );
        let json = serde_json::to_string(&w).unwrap();
        assert!(json.contains(r#""le":"+Inf""#), "{json}");
        let back: Window = serde_json::from_str(&json).unwrap();
        assert_eq!(back, w);
        let bad = json.replace("+Inf", "lots");
        assert!(serde_json::from_str::<Window>(&bad).is_err());
    }
}
