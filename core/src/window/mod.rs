//! The counts a judgement is made on, and the evidence carried from one tick to the next. A leaf:
//! it imports nothing of the crate, so the status types, the sources and the judge can all use it.
//!
//! Everything here is serialisable because it is persisted in the policy's status (`status.json`
//! locally, the CanaryPolicy's status on a cluster): a restarted, `--once` or newly elected
//! controller judges on the same evidence as one that never stopped.

mod merge;

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
    /// Observations at or below the bound.
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
    /// Requests in the window.
    pub requests: u64,
    /// Requests that failed (5xx, gRPC error status or a local reply).
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
    /// Labels counted through the feedback path (`mlcanary_feedback_total`): the predictions
    /// the application later learned the truth about.
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// The same counts per segment label (`other` included); empty without `routing.segment`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub segments: BTreeMap<String, SegmentCounts>,
}

/// A confusion matrix: each labelled prediction by what was predicted and what was true.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Labels {
    /// Predicted positive, truly positive.
    pub tp: u64,
    /// Predicted positive, truly negative.
    pub fp: u64,
    /// Predicted negative, truly negative.
    pub tn: u64,
    /// Predicted negative, truly positive (`fn`).
    #[serde(rename = "fn")]
    pub fn_: u64,
}

impl Labels {
    pub fn is_empty(&self) -> bool {
        *self == Labels::default()
    }

    /// Every labelled prediction.
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Cell by cell.
    pub fn add(&self, o: &Labels) -> Labels {
        Labels {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            tn: self.tn + o.tn,
            fn_: self.fn_ + o.fn_,
        }
    }
}

/// One segment's counts in the window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SegmentCounts {
    pub requests: u64,
    pub errors: u64,
    pub scored: u64,
    pub positives: u64,
    #[serde(skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
}

/// Both variants' windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Window {
    pub stable: VariantWindow,
    pub canary: VariantWindow,
    /// The canary's shadow: the requests Envoy mirrored to it, measured at its inbound side
    /// (`phase="shadow"`). A source reads it next to the live ones; what the judge compares is
    /// [`Window::judged`], whose shadow is empty — so it is never in a status, nor in the CRD.
    #[serde(skip_serializing_if = "VariantWindow::is_empty")]
    #[schemars(skip)]
    pub shadow: VariantWindow,
}

impl Window {
    /// What the judge compares with stable's live requests: in the shadow phase the canary's
    /// shadow (no user gets the canary's answers then), else its live requests. The PromQL values
    /// (custom and resource checks) are the canary pods' either way: in shadow their load is the
    /// shadow's, so CPU per request divides by the shadow's requests.
    pub fn judged(self, in_shadow: bool) -> Window {
        let canary = if in_shadow {
            VariantWindow {
                custom: self.canary.custom,
                ..self.shadow
            }
        } else {
            self.canary
        };
        Window {
            stable: self.stable,
            canary,
            shadow: VariantWindow::default(),
        }
    }
}

impl VariantWindow {
    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        *self == VariantWindow::default()
    }
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

/// The rollout's counts at one canary weight: every window judged at that weight, summed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepWindow {
    /// The canary weight the windows were gathered at, in basis points.
    pub weight_bp: u32,
    pub window: Window,
    /// Windows recorded at this weight.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub windows: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Most step windows kept: a fixed schedule has a handful of weights, an adaptive one may visit
/// more; past this the newest window joins the one at the nearest weight (its share is then an
/// average, which the judge's conditional tests tolerate: they only need each row's split).
pub const MAX_STEP_WINDOWS: usize = 32;

/// How far one of stable's rates spreads beyond binomial noise from interval to interval.
///
/// Each pair of consecutive intervals gives `d = (r₂ − r₁)² / (p (1 − p) (1/n₁ + 1/n₂))` (`r` the
/// rates, `p` the pair's pooled rate): about `φ · χ²₁`, so its mean estimates the dispersion factor
/// `φ`. Differences of *consecutive* intervals, not deviations from the rollout's mean, so a slow
/// drift or one level shift (an outage beginning and ending) does not read as dispersion; values
/// beyond [`OUTLIER_FACTOR`] × their median (the jumps themselves) are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Dispersion {
    /// The last interval's trials and events, for the next difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<[u64; 2]>,
    /// The newest standardised squared differences between consecutive intervals' rates (at
    /// most 64).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<f64>,
}

/// The largest dispersion factor believed: beyond it the data say "not a rate" more than
/// "clustered events", and the tests would learn nothing.
pub const MAX_DISPERSION: f64 = 50.0;
/// Differences kept (a sliding window: clustering can change with the traffic mix).
pub const MAX_DIFFERENCES: usize = 64;
/// Until stable's spread is measured the judge assumes moderate clustering: `PRIOR_PHI`, worth
/// `PRIOR_WEIGHT` differences. A false rollback at the first looks is the cost of assuming none.
pub const PRIOR_PHI: f64 = 2.0;
pub const PRIOR_WEIGHT: f64 = 2.0;
/// A difference this many times the (lower) median is a jump in level, not noise: at `φ · χ²₁`
/// noise passes it with probability 0.07 %.
pub const OUTLIER_FACTOR: f64 = 25.0;
/// With fewer differences than this the median cannot tell a jump from spread: the reference is
/// at most the prior's own median (`PRIOR_PHI` × χ²₁'s median 0.455).
const FEW_DIFFERENCES: usize = 5;

impl Dispersion {
    /// Count one interval's `x` events in `n` trials (intervals without trials are skipped).
    pub fn add(&mut self, n: u64, x: u64) {
        if n == 0 {
            return;
        }
        let x = x.min(n);
        if let Some([n0, x0]) = self.last {
            let (n0f, x0f, nf, xf) = (n0 as f64, x0 as f64, n as f64, x as f64);
            let p = (x0f + xf) / (n0f + nf);
            if p > 0.0 && p < 1.0 {
                let d = (xf / nf - x0f / n0f).powi(2) / (p * (1.0 - p) * (1.0 / nf + 1.0 / n0f));
                self.differences.push(d);
                if self.differences.len() > MAX_DIFFERENCES {
                    self.differences.remove(0);
                }
            }
        }
        self.last = Some([n, x]);
    }

    /// The dispersion factor `φ ≥ 1`: the mean difference (jumps left out), shrunk towards
    /// [`PRIOR_PHI`] while there are few.
    pub fn phi(&self) -> f64 {
        let mut sorted = self.differences.clone();
        sorted.sort_by(f64::total_cmp);
        let mut reference = match sorted.len() {
            0 => 0.0,
            n => sorted[(n - 1) / 2],
        };
        if sorted.len() < FEW_DIFFERENCES {
            reference = reference.min(PRIOR_PHI * 0.455);
        }
        let kept: Vec<f64> = sorted
            .into_iter()
            .filter(|d| reference <= 0.0 || *d <= OUTLIER_FACTOR * reference)
            .collect();
        let sum: f64 = kept.iter().sum();
        ((sum + PRIOR_WEIGHT * PRIOR_PHI) / (kept.len() as f64 + PRIOR_WEIGHT))
            .clamp(1.0, MAX_DISPERSION)
    }
}

/// Stable's dispersion for each rate the judge tests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct Dispersions {
    /// Errors among requests.
    pub errors: Dispersion,
    /// Positives among scored predictions.
    pub positives: Dispersion,
}

/// What the engine carries between ticks of one policy: the judge's evidence for the whole
/// rollout (never reset when a step advances — a weight change alters the split, not the test).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Evidence {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mark: Option<Mark>,
    /// Every window of the rollout, summed per canary weight, in the order the weights came.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepWindow>,
    #[serde(default)]
    pub dispersion: Dispersions,
}

impl Evidence {
    pub fn is_empty(&self) -> bool {
        self.mark.is_none() && self.steps.is_empty()
    }

    /// Add one interval's `window`, gathered at `weight_bp`.
    pub fn record(&mut self, weight_bp: u32, window: &Window) {
        self.record_settling(weight_bp, window, 0);
    }

    /// [`Evidence::record`], leaving out the labels of the first `settle` windows at each weight.
    ///
    /// Labels arrive late, and not all equally late (a flagged prediction's review before an
    /// unflagged one's chargeback): just after the weight changes, the labels counted come from
    /// predictions made at the weight before, in a mix that favours the fast kind — more of the
    /// canary's, whose share just grew. Its false-positive rate would read high for a while on a
    /// healthy canary (measured: `judge-bench --ground-truth-only 1`). Once the slowest label
    /// (`settle` windows) is in, every label counted at the weight is of a prediction made at it.
    pub fn record_settling(&mut self, weight_bp: u32, window: &Window, settle: u32) {
        self.dispersion
            .errors
            .add(window.stable.requests, window.stable.errors);
        self.dispersion
            .positives
            .add(window.stable.scored, window.stable.positives);
        let at = match self.steps.iter().position(|s| s.weight_bp == weight_bp) {
            Some(i) => i,
            None if self.steps.len() < MAX_STEP_WINDOWS => {
                self.steps.push(StepWindow {
                    weight_bp,
                    window: Window::default(),
                    windows: 0,
                });
                self.steps.len() - 1
            }
            None => (0..self.steps.len())
                .min_by_key(|&i| self.steps[i].weight_bp.abs_diff(weight_bp))
                .unwrap_or(0),
        };
        let step = &mut self.steps[at];
        step.windows = step.windows.saturating_add(1);
        if step.windows <= settle {
            let mut w = window.clone();
            for v in [&mut w.stable, &mut w.canary, &mut w.shadow] {
                v.labels = Labels::default();
                for c in v.segments.values_mut() {
                    c.labels = Labels::default();
                }
            }
            step.window.absorb(&w);
        } else {
            step.window.absorb(window);
        }
    }

    /// The whole rollout's window: every step's added up.
    pub fn total(&self) -> Window {
        let mut all = Window::default();
        for s in &self.steps {
            all.absorb(&s.window);
        }
        all
    }

    /// The summed window at `weight_bp` (empty when none was gathered there).
    pub fn at_weight(&self, weight_bp: u32) -> Option<&Window> {
        self.steps
            .iter()
            .find(|s| s.weight_bp == weight_bp)
            .map(|s| &s.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_shadow_the_canary_is_its_shadow_with_its_pods_values() {
        let w = Window {
            stable: VariantWindow {
                requests: 100,
                ..Default::default()
            },
            canary: VariantWindow {
                requests: 3,
                custom: BTreeMap::from([("cpu".to_owned(), 2.5)]),
                ..Default::default()
            },
            shadow: VariantWindow {
                requests: 40,
                errors: 1,
                ..Default::default()
            },
        };
        let s = w.clone().judged(true);
        assert_eq!((s.canary.requests, s.canary.errors), (40, 1));
        assert_eq!(s.canary.custom.get("cpu"), Some(&2.5));
        assert_eq!(s.stable.requests, 100);
        assert!(s.shadow.is_empty());
        let live = w.judged(false);
        assert_eq!(live.canary.requests, 3);
        assert!(live.shadow.is_empty());
    }

    #[test]
    fn dispersion_reads_spread_not_level_shifts() {
        let mut d = Dispersion::default();
        assert_eq!(d.phi(), PRIOR_PHI, "nothing measured: the prior");
        // Binomial-looking stable: 60 ± 8 errors in 6000 requests.
        for x in [60, 52, 68, 57, 63, 55, 66, 60, 58, 62, 61, 59] {
            d.add(6000, x);
        }
        let steady = d.phi();
        assert!(steady < 1.3, "{steady}");
        // A jump right at the start is not read as spread either.
        let mut early = Dispersion::default();
        for x in [60, 62, 600, 610] {
            early.add(6000, x);
        }
        assert!(early.phi() <= PRIOR_PHI, "{}", early.phi());
        // An outage and its end are two jumps, not dispersion.
        for x in [600, 610, 590, 60, 58, 62] {
            d.add(6000, x);
        }
        assert!(d.phi() < 1.6, "{}", d.phi());
        // Spread three times the binomial's, all the time: φ ≈ 3 (wide alternation).
        let mut c = Dispersion::default();
        for i in 0..40 {
            c.add(6000, if i % 2 == 0 { 44 } else { 76 });
        }
        assert!(c.phi() > 4.0, "{}", c.phi());
        assert!(d.differences.len() <= MAX_DIFFERENCES);
    }

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
