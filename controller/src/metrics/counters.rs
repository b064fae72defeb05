//! Windows as differences of cumulative counters read at fixed instants — the one way both sources
//! make a window, so that no sample is lost or counted twice: the window of a tick is
//! `counters(now) − counters(mark)`, and the next one starts at `now`. Telescoping: the windows of a
//! rollout add up to the counters' growth over it, however late or irregular the reads.
//!
//! Counter resets are found per *instance* (one Envoy process: all labels but the policy, variant,
//! segment and bucket ones). Any of its series going backwards, or its `envoy_server_uptime`, means
//! the process restarted, and its window is then its counts since the restart, as Prometheus'
//! `increase()` treats a reset. A series that appears between two reads counts from zero; one that
//! disappears (a pod gone) adds nothing. Both variants of a policy come from the same read, so a
//! missed scrape is less data for both, never an empty window for one of them.
//!
//! `mlcanary_feedback_total` (labels sent back through the feedback path) goes to each variant's
//! and segment's `labels`, by its `outcome` (`tp`, `fp`, `tn`, `fn`).
//!
//! A series labelled `phase="shadow"` counts the canary's shadow (requests Envoy mirrored to it,
//! measured at its inbound side) and goes to the window's `shadow`; series without `phase` are live.

use std::collections::{BTreeMap, HashMap};

use mlcanary_filter::stats::{
    DURATION, ERRORS, FEEDBACK, POSITIVES, PREDICTIONS, PREDICTION_SCORE, REQUESTS, SHADOW_PHASE,
};

use super::exposition::{parse, Sample};
use mlcanary_core::policy::PolicyId;
use mlcanary_core::window::{Bucket, Labels, SegmentCounts, VariantWindow, Window};

/// Envoy's own uptime gauge: it only falls when the process restarts.
pub const UPTIME: &str = "envoy_server_uptime";

/// Whether `name` is one of [`families`], without building them (called for every sample of a
/// scrape, most of which are Envoy's own stats).
fn is_family(name: &str) -> bool {
    matches!(name, REQUESTS | ERRORS | PREDICTIONS | POSITIVES | FEEDBACK)
        || name
            .strip_suffix("_bucket")
            .is_some_and(|h| h == DURATION || h == PREDICTION_SCORE)
}

/// The counter families a policy's window is made of (histograms by their `_bucket` series).
pub fn families() -> [String; 7] {
    [
        REQUESTS.to_owned(),
        ERRORS.to_owned(),
        PREDICTIONS.to_owned(),
        POSITIVES.to_owned(),
        FEEDBACK.to_owned(),
        format!("{DURATION}_bucket"),
        format!("{PREDICTION_SCORE}_bucket"),
    ]
}

/// Labels that say *what* a series counts; every other label says *where* (the instance).
const SERIES_LABELS: [&str; 8] = [
    "__name__",
    "policy_namespace",
    "policy",
    "variant",
    "segment",
    "le",
    "phase",
    "outcome",
];

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct SeriesId {
    /// The instance labels, canonical (`k="v",...` sorted): one Envoy process.
    instance: String,
    name: String,
    /// Empty for the instance's uptime.
    variant: String,
    segment: Option<String>,
    le: Option<String>,
    /// A label's cell (`outcome="tp"`, …) for [`FEEDBACK`].
    outcome: Option<String>,
    /// A shadow's series (`phase="shadow"`).
    shadow: bool,
}

/// One policy's cumulative counters at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    series: BTreeMap<SeriesId, f64>,
}

impl Counters {
    /// Add one sample (`name`, its labels, its value) if it is one of `policy`'s series for one of
    /// `variants`, or an instance's uptime.
    pub fn add<'a>(
        &mut self,
        name: &str,
        labels: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
        value: f64,
        policy: PolicyId<'_>,
        variants: [&str; 2],
    ) {
        if !value.is_finite() {
            return;
        }
        let get = |key: &str| {
            labels
                .clone()
                .into_iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v)
        };
        // Decide first whether the sample is ours: the instance key is built only for those.
        let (variant, segment, le, outcome, shadow) = if name == UPTIME {
            (String::new(), None, None, None, false)
        } else {
            let variant = get("variant").filter(|v| variants.contains(v));
            let ours = get("policy") == Some(policy.name)
                && get("policy_namespace") == Some(policy.namespace);
            let (true, true, Some(variant)) = (is_family(name), ours, variant) else {
                return;
            };
            (
                variant.to_owned(),
                get("segment").map(str::to_owned),
                get("le").map(str::to_owned),
                get("outcome").map(str::to_owned),
                get("phase") == Some(SHADOW_PHASE),
            )
        };
        let mut instance: Vec<(&str, &str)> = labels
            .clone()
            .into_iter()
            .filter(|(k, _)| !SERIES_LABELS.contains(k))
            .collect();
        instance.sort_unstable();
        let instance = instance
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect::<Vec<_>>()
            .join(",");
        let id = SeriesId {
            instance,
            name: name.to_owned(),
            variant,
            segment,
            le,
            outcome,
            shadow,
        };
        // The same series twice (never in one scrape) keeps the larger value.
        let v = self.series.entry(id).or_insert(value);
        *v = v.max(value);
    }

    /// `policy`'s counters among `samples` (of one scrape).
    pub fn from_samples<'s>(
        samples: impl IntoIterator<Item = &'s Sample>,
        policy: PolicyId<'_>,
        variants: [&str; 2],
    ) -> Self {
        let mut c = Counters::default();
        for s in samples {
            let labels = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            c.add(&s.name, labels, s.value, policy, variants);
        }
        c
    }

    /// As persisted in a [`mlcanary_core::window::Mark`]: exposition keys, zero series left out (an
    /// absent series reads 0).
    pub fn to_map(&self) -> BTreeMap<String, f64> {
        self.series
            .iter()
            .filter(|(_, v)| **v != 0.0)
            .map(|(id, v)| (id.key(), *v))
            .collect()
    }

    /// Back from [`Counters::to_map`]: every key is a sample line's name and labels.
    pub fn from_map(
        map: &BTreeMap<String, f64>,
        policy: PolicyId<'_>,
        variants: [&str; 2],
    ) -> Self {
        let mut c = Counters::default();
        for (key, v) in map {
            for s in &parse(&format!("{key} {v}")).samples {
                let labels = s.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
                // The policy's labels are implied by the map's owner.
                let labels = labels.chain([
                    ("policy", policy.name),
                    ("policy_namespace", policy.namespace),
                ]);
                c.add(&s.name, labels, s.value, policy, variants);
            }
        }
        c
    }

    /// The window from `prev` to `self` for the policy's `stable` and `canary` variants, and the
    /// canary's shadow.
    pub fn window_since(&self, prev: &Counters, stable: &str, canary: &str) -> Window {
        let mut restarted: HashMap<&str, bool> = HashMap::new();
        for (id, v) in &self.series {
            let back = prev.series.get(id).is_some_and(|p| v < p);
            *restarted.entry(id.instance.as_str()).or_default() |= back;
        }
        let mut acc = [Acc::default(), Acc::default(), Acc::default()];
        for (id, cur) in &self.series {
            let slot = match (id.variant == stable, id.variant == canary, id.shadow) {
                (true, _, false) => 0,
                (_, true, false) => 1,
                (_, true, true) => 2,
                _ => continue,
            };
            let base = if restarted[id.instance.as_str()] {
                0.0
            } else {
                prev.series.get(id).copied().unwrap_or(0.0)
            };
            acc[slot].add(id, (cur - base).max(0.0));
        }
        let [s, c, sh] = acc;
        Window {
            stable: s.finish(),
            canary: c.finish(),
            shadow: sh.finish(),
        }
    }
}

impl SeriesId {
    /// `name{variant="…",segment="…",le="…",<instance labels>}` (policy implied).
    fn key(&self) -> String {
        let mut labels = Vec::new();
        if !self.variant.is_empty() {
            labels.push(format!("variant=\"{}\"", escape(&self.variant)));
        }
        if let Some(s) = &self.segment {
            labels.push(format!("segment=\"{}\"", escape(s)));
        }
        if let Some(le) = &self.le {
            labels.push(format!("le=\"{}\"", escape(le)));
        }
        if let Some(o) = &self.outcome {
            labels.push(format!("outcome=\"{}\"", escape(o)));
        }
        if self.shadow {
            labels.push(format!("phase=\"{SHADOW_PHASE}\""));
        }
        if !self.instance.is_empty() {
            labels.push(self.instance.clone());
        }
        if labels.is_empty() {
            self.name.clone()
        } else {
            format!("{}{{{}}}", self.name, labels.join(","))
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// One variant's window being summed up from series differences.
#[derive(Default)]
struct Acc {
    w: VariantWindow,
    duration: BTreeMap<u64, (f64, f64)>,
    scores: BTreeMap<u64, (f64, f64)>,
}

impl Acc {
    fn add(&mut self, id: &SeriesId, d: f64) {
        let name = id.name.as_str();
        let hist = match name.strip_suffix("_bucket") {
            Some(DURATION) => Some(&mut self.duration),
            Some(PREDICTION_SCORE) => Some(&mut self.scores),
            _ => None,
        };
        if let Some(h) = hist {
            let le = match id.le.as_deref() {
                Some("+Inf" | "Inf") => f64::INFINITY,
                Some(l) => match l.parse::<f64>() {
                    Ok(x) if !x.is_nan() => x,
                    _ => return,
                },
                None => return,
            };
            // Ordered by value: the bit pattern of a non-negative float sorts like the float.
            let e = h.entry(le.max(0.0).to_bits()).or_insert((le, 0.0));
            e.1 += d;
            return;
        }
        let n = d.round() as u64;
        if name == FEEDBACK {
            let cell: fn(&mut Labels) -> &mut u64 = match id.outcome.as_deref() {
                Some("tp") => |l| &mut l.tp,
                Some("fp") => |l| &mut l.fp,
                Some("tn") => |l| &mut l.tn,
                Some("fn") => |l| &mut l.fn_,
                _ => return,
            };
            *cell(&mut self.w.labels) += n;
            if let Some(s) = &id.segment {
                *cell(&mut self.w.segments.entry(s.clone()).or_default().labels) += n;
            }
            return;
        }
        let seg = id
            .segment
            .as_ref()
            .map(|s| self.w.segments.entry(s.clone()).or_default());
        let (total, field): (&mut u64, fn(&mut SegmentCounts) -> &mut u64) = match name {
            REQUESTS => (&mut self.w.requests, |c| &mut c.requests),
            ERRORS => (&mut self.w.errors, |c| &mut c.errors),
            PREDICTIONS => (&mut self.w.scored, |c| &mut c.scored),
            POSITIVES => (&mut self.w.positives, |c| &mut c.positives),
            _ => return,
        };
        *total += n;
        if let Some(c) = seg {
            *field(c) += n;
        }
    }

    fn finish(mut self) -> VariantWindow {
        let buckets = |h: BTreeMap<u64, (f64, f64)>| {
            h.into_values()
                .map(|(le, count)| Bucket { le, count })
                .collect()
        };
        self.w.duration = buckets(self.duration);
        self.w.scores = buckets(self.scores);
        self.w
    }
}

#[cfg(test)]
mod tests;
