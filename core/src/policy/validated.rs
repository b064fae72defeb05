//! The validated policy: every field checked, every default filled, weights in basis points. What
//! [`super::validate`] produces from a spec and what analysis, rollout and rendering read.

use std::time::Duration;

use mlcanary_filter::config::RawPolicy;
pub use mlcanary_filter::stats::PolicyId;
use thiserror::Error;

/// Default consecutive failed analyses before rollback: one, because a sequential check fails only
/// on evidence valid at its level however often it is looked at.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 1;
/// Default requests per variant per window before any verdict.
pub const DEFAULT_MIN_REQUESTS: u64 = 100;
/// Default false-rollback budget of a whole rollout (all checks, all steps).
pub const DEFAULT_ALPHA: f64 = 0.01;
/// Default harm margin: promotion needs the canary shown no worse than 1.5× stable (or within
/// the check's absolute bound).
pub const DEFAULT_HARM_MARGIN: f64 = 1.5;
/// Default progress deadline.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// Default last step with `stepWeight`.
pub const DEFAULT_MAX_WEIGHT: u32 = 50;
/// Default PSI limit of `predictionDrift`: 0.2 is the conventional "significant shift" mark.
pub const DEFAULT_MAX_PSI: f64 = 0.2;
/// Default scored predictions per variant before `predictionDrift` judges: below this the PSI of
/// two samples of one distribution is inflated by sampling noise (about `(bins - 1) / n`).
pub const DEFAULT_DRIFT_MIN_SAMPLES: u64 = 500;
/// Default lower bound of `segmentDisparity`'s ratio: the "four-fifths rule" of disparate impact.
pub const DEFAULT_MIN_RATIO: f64 = 0.8;
/// Default upper bound: the same rule read the other way (1 / 0.8).
pub const DEFAULT_MAX_RATIO: f64 = 1.25;
/// Default share of the scored predictions below which a segment is too rare to judge.
pub const DEFAULT_MIN_SEGMENT_SHARE: f64 = 0.02;
/// Default scored predictions per variant per segment before that segment is judged.
pub const DEFAULT_MIN_SAMPLES_PER_SEGMENT: u64 = 100;

/// A spec the controller refuses, with the path of the field at fault.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct ValidationError {
    pub field: String,
    pub reason: String,
}

/// A hold at one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// Stay at the step at least this long after reaching it.
    For(Duration),
    /// Stay until an operator resumes.
    UntilResumed,
}

/// `value <op> threshold` passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Lt,
    Le,
    Gt,
    Ge,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Lt => value < threshold,
            Comparison::Le => value <= threshold,
            Comparison::Gt => value > threshold,
            Comparison::Ge => value >= threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Lt => "<",
            Comparison::Le => "<=",
            Comparison::Gt => ">",
            Comparison::Ge => ">=",
        }
    }
}

/// The latency bound: absolute, or relative to the stable variant's same quantile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyBound {
    MaxMs(f64),
    RatioToStable(f64),
}

/// How far the canary's positive rate may move from stable's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ShiftBound {
    /// `|canary - stable| / stable` at most this.
    Relative(f64),
    /// `|canary - stable|` at most this (rate points).
    Absolute(f64),
}

/// A validated check kind.
#[derive(Debug, Clone, PartialEq)]
pub enum CheckKind {
    /// Canary error rate at most `max` (a fraction), tested at `alpha` (the check's share of the
    /// policy's budget).
    ErrorRate { max: f64, alpha: f64 },
    /// Canary latency quantile `quantile` (0..1) within `bound`, tested at `alpha`.
    Latency {
        quantile: f64,
        bound: LatencyBound,
        alpha: f64,
    },
    /// A PromQL value compared with a threshold.
    Custom {
        query: String,
        comparison: Comparison,
        threshold: f64,
    },
    /// PSI between the canary's and stable's score histograms at most `max_psi`.
    PredictionDrift {
        max_psi: f64,
        /// Scored predictions per variant before any verdict.
        min_samples: u64,
        /// Significance level of the homogeneity test that must back a failure.
        alpha: f64,
    },
    /// The canary's positive rate within `bound` of stable's.
    PositiveRate {
        bound: ShiftBound,
        alpha: f64,
        min_samples: u64,
    },
    /// Per segment, canary positive rate / stable positive rate within `[min_ratio, max_ratio]`.
    SegmentDisparity {
        min_ratio: f64,
        max_ratio: f64,
        /// Family-wise over the segments judged (Bonferroni).
        alpha: f64,
        min_samples_per_segment: u64,
        /// Segments below this share of the scored predictions are reported, not judged.
        min_segment_share: f64,
        /// The within-canary floor between a segment and the rest, if set.
        min_ratio_between_segments: Option<f64>,
    },
    /// CPU per request or memory per pod of the canary's pods at most `max_ratio` × stable's.
    Resource(ResourceCheck),
    /// A rate read off the labels within `bound` of stable's, overall and per segment.
    LabelRate {
        metric: super::feedback::LabelMetric,
        bound: super::feedback::LabelBound,
        /// Family-wise over overall and the segments judged.
        alpha: f64,
        coverage: super::feedback::Coverage,
    },
    /// Per segment, the canary × segment interaction of the false-positive and miss rates within
    /// `[1 / max_ratio, max_ratio]`.
    EqualizedOdds {
        max_ratio: f64,
        alpha: f64,
        coverage: super::feedback::Coverage,
    },
}

/// What a step does while stable breaks a check's bound as well.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhealthyBaseline {
    /// Hold, however long: a shared fault is not the canary's.
    Hold,
    /// Hold until the progress deadline, then roll back.
    RollBack,
}

/// A named check.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    pub kind: CheckKind,
}

/// A policy the controller can act on: every field checked, defaults filled, weights in basis points.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedPolicy {
    /// The CanaryPolicy's name: the filter policy name and the `policy` metric label.
    pub name: String,
    pub namespace: Option<String>,
    pub virtual_service: String,
    pub destination_host: String,
    pub stable_subset: String,
    pub canary_subset: String,
    /// `spec.target.wasmPlugin` as written (`None`: the mesh plugin); [`ValidatedPolicy::plugin`]
    /// resolves it.
    pub wasm_plugin: Option<PluginName>,
    pub interval: Duration,
    /// Canary weight of each step in basis points: strictly increasing, each in 1..=10000.
    pub steps_bp: Vec<u32>,
    /// One entry per step.
    pub pauses: Vec<Option<Pause>>,
    pub manual_gate: bool,
    pub failure_threshold: u32,
    pub min_requests: u64,
    /// The whole rollout's false-rollback budget; each check carries its share.
    pub alpha: f64,
    pub harm_margin: f64,
    pub unhealthy_baseline: UnhealthyBaseline,
    pub checks: Vec<Check>,
    pub progress_deadline: Duration,
    /// The filter policy with both variants at weight 0; `render` fills the weights.
    pub filter_template: RawPolicy,
    /// The adaptive schedule; `steps_bp` is then `[initial, max]` (the first and last weight).
    pub adaptive: Option<Adaptive>,
    pub webhooks: Vec<Webhook>,
    /// `spec.target.deploymentRef`: the lifecycle's Deployments.
    pub deployment_ref: Option<DeploymentRef>,
    /// `spec.target.canaryVersion`.
    pub canary_version: Option<String>,
    /// `spec.schedule.shadow`.
    pub shadow: Option<Shadow>,
    /// `spec.feedback`, its keys filled in by the adapter that reads the Secret.
    pub feedback: Option<super::feedback::Feedback>,
}

/// `spec.schedule.shadow`, validated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shadow {
    /// The mirrored share asked for, 1..=10000 bp.
    pub mirror_bp: u32,
    /// Least time in shadow; `None`: until the shadow is conclusive.
    pub duration: Option<Duration>,
    /// Cap on mirrored requests per second.
    pub max_rps: Option<f64>,
}

impl ValidatedPolicy {
    /// The policy's namespace, [`DEFAULT_NAMESPACE`](super::DEFAULT_NAMESPACE) when it has none
    /// (a local policy file without `metadata.namespace`).
    pub fn namespace_or_default(&self) -> &str {
        self.namespace
            .as_deref()
            .unwrap_or(super::DEFAULT_NAMESPACE)
    }

    /// The WasmPlugin the policy asks for: the mesh plugin, or its own (a bare name lives in the
    /// policy's namespace).
    pub fn plugin(&self) -> PluginTarget {
        match &self.wasm_plugin {
            None => PluginTarget::Mesh,
            Some(p) => PluginTarget::Plugin(PluginRef {
                namespace: p
                    .namespace
                    .clone()
                    .unwrap_or_else(|| self.namespace_or_default().to_owned()),
                name: p.name.clone(),
            }),
        }
    }

    /// Who the policy is: its namespace and name (a name alone is not unique on a cluster).
    pub fn key(&self) -> PolicyKey {
        PolicyKey::new(self.namespace_or_default(), &self.name)
    }

    /// The policy as the filter's stats name it (`policy_namespace`, `policy` tags).
    pub fn stat_id(&self) -> PolicyId<'_> {
        PolicyId {
            namespace: self.namespace_or_default(),
            name: &self.name,
        }
    }
}

/// The pod label the DestinationRule subsets select by, unless `deploymentRef.subsetLabel` says.
pub const DEFAULT_SUBSET_LABEL: &str = "mlcanary.io/subset";

/// `spec.target.deploymentRef`, defaults filled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentRef {
    pub name: String,
    pub subset_label: String,
}

/// `spec.target.wasmPlugin`, checked: `NAME` or `NAMESPACE/NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginName {
    pub namespace: Option<String>,
    pub name: String,
}

/// A WasmPlugin object: `namespace/name`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PluginRef {
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for PluginRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where a policy's filter config goes: the mesh-wide plugin (which one is the controller's
/// setting) or a plugin of its own.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PluginTarget {
    Mesh,
    Plugin(PluginRef),
}

impl std::fmt::Display for PluginTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PluginTarget::Mesh => f.write_str("the mesh plugin"),
            PluginTarget::Plugin(p) => p.fmt(f),
        }
    }
}

/// A policy's identity everywhere: stats, queries, maps, the API (`namespace/name`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyKey {
    pub namespace: String,
    pub name: String,
}

impl PolicyKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        PolicyKey {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }

    pub fn stat_id(&self) -> PolicyId<'_> {
        PolicyId {
            namespace: &self.namespace,
            name: &self.name,
        }
    }
}

impl std::fmt::Display for PolicyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Default `podSelector`.
pub const DEFAULT_POD_SELECTOR: &str = r#"label_mlcanary_io_subset="{{variant}}""#;

/// Which resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
}

/// A validated resource check.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourceCheck {
    pub resource: Resource,
    pub max_ratio: f64,
    /// `kube_pod_labels` matchers with `{{variant}}`.
    pub pod_selector: String,
}

/// Default growth factor on wide passes.
pub const DEFAULT_GROWTH_FACTOR: f64 = 2.0;
/// Default smallest step, percent.
pub const DEFAULT_MIN_STEP: u32 = 5;
/// Default largest step, percent.
pub const DEFAULT_MAX_STEP: u32 = 25;
/// Default highest weight before promotion, percent.
pub const DEFAULT_ADAPTIVE_MAX_WEIGHT: u32 = 50;
/// Default margin of a wide pass.
pub const DEFAULT_WIDE_MARGIN: f64 = 0.5;
/// Default margin below which a pass is marginal.
pub const DEFAULT_MARGINAL_MARGIN: f64 = 0.1;
/// Default multiple of the minimum sample a wide pass needs.
pub const DEFAULT_SAMPLE_FACTOR: f64 = 2.0;

/// A validated adaptive schedule, weights in basis points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adaptive {
    pub initial_bp: u32,
    pub min_step_bp: u32,
    pub max_step_bp: u32,
    pub max_bp: u32,
    pub growth_factor: f64,
    pub wide_margin: f64,
    pub marginal_margin: f64,
    pub sample_factor: f64,
}

impl Adaptive {
    /// The nominal steps: the first weight and the last (the policy's `steps_bp`, so "step
    /// 1/2" reads "below the cap", "2/2" "at the cap").
    pub fn steps_bp(&self) -> Vec<u32> {
        if self.initial_bp >= self.max_bp {
            vec![self.max_bp]
        } else {
            vec![self.initial_bp, self.max_bp]
        }
    }

    /// The nominal step index of a weight.
    pub fn step_index(&self, bp: u32) -> u32 {
        u32::from(bp >= self.max_bp && self.initial_bp < self.max_bp)
    }
}

/// Default timeout of one attempt.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default extra attempts.
pub const DEFAULT_RETRIES: u32 = 2;
/// Most extra attempts a hook may ask for.
pub const MAX_RETRIES: u32 = 10;

/// When a hook is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    PreRollout,
    Step,
    ConfirmPromotion,
    Rollback,
    Event,
}

impl HookKind {
    /// The spec's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::PreRollout => "preRollout",
            HookKind::Step => "step",
            HookKind::ConfirmPromotion => "confirmPromotion",
            HookKind::Rollback => "rollback",
            HookKind::Event => "event",
        }
    }

    /// The spec's spelling → the kind.
    pub fn parse(s: &str) -> Option<Self> {
        [
            HookKind::PreRollout,
            HookKind::Step,
            HookKind::ConfirmPromotion,
            HookKind::Rollback,
            HookKind::Event,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A validated webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub name: String,
    pub kind: HookKind,
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
}
