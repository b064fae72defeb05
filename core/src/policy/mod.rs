//! A `CanaryPolicy` (`mlcanary.io/v1alpha1`) as plain data: the user-written [`CanaryPolicySpec`],
//! the [`status`] the controller writes back, and [`validate`] into the typed [`ValidatedPolicy`]
//! with every default filled. The kube resource wrapping them is the controller's `policy` module.
//!
//! Units, fixed once for every field below:
//! - user-facing weights (`stepWeight`, `maxWeight`, `steps`) are whole **percent**;
//! - the status weight (`canaryWeightBp`) and everything the controller computes are **basis
//!   points** (1 bp = 0.01 %, 10000 bp = 100 %), the filter's unit, so nothing is lost in rounding
//!   between the controller and the data plane;
//! - durations are humantime strings (`30s`, `5m`, `1h 30m`).

pub mod feedback;
pub mod status;
pub mod validate;
mod validate_checks;
pub mod validate_ext;
pub mod validated;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::{
    CanaryPolicyStatus, Condition, HeldStatus, HistoryEntry, LifecycleStage, LifecycleStatus,
    Phase, ShadowStatus, VerdictStatus,
};
pub use validated::{
    PluginRef, PluginTarget, PolicyId, PolicyKey, ValidatedPolicy, ValidationError,
};

/// Namespace of a policy that has none (a local policy file without `metadata.namespace`).
/// The filter's default: a policy is the same one to both.
pub const DEFAULT_NAMESPACE: &str = mlcanary_filter::config::DEFAULT_NAMESPACE;

/// Spec of a canary rollout of one model behind one VirtualService.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryPolicySpec {
    // Fields without a doc comment take their type's (a field's own would replace it in the CRD).
    pub target: TargetSpec,
    #[serde(default)]
    pub routing: RoutingSpec,
    pub schedule: ScheduleSpec,
    pub analysis: AnalysisSpec,
    /// Read prediction scores from the model's replies (needed by the `predictionDrift`,
    /// `positiveRate` and `segmentDisparity` checks). Rendered into the filter's `predictions`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictions: Option<PredictionsSpec>,
    /// Ground truth: tickets on the replies, labels sent back with them (the `accuracy`,
    /// `falsePositiveRate`, `truePositiveRate`, `precision` and `equalizedOdds` checks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback: Option<feedback::FeedbackSpec>,
    /// With no conclusive analysis for this long (no traffic, no metrics), the rollout is rolled
    /// back. A duration such as `10m` (the default) or `1h 30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// HTTP hooks called around the rollout (Flagger-style): gates (`preRollout`,
    /// `confirmPromotion`) that must answer 2xx, and notifications (`step`, `rollback`, `event`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhookSpec>,
}

/// One webhook: a POST of a JSON body (policy, phase, weight, step, verdicts) to `url`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// Unique among the policy's webhooks; named in conditions and logs.
    pub name: String,
    /// `preRollout` (gate before any traffic moves), `step` (after each weight change),
    /// `confirmPromotion` (gate before promotion), `rollback` (after a rollback) or `event`
    /// (every rollout event).
    #[serde(rename = "type")]
    pub type_: String,
    /// `http://` or `https://` URL.
    pub url: String,
    /// Timeout of one attempt, a duration such as `10s` (the default) or `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Extra attempts after a failed one (timeout, connection error, non-2xx), with exponential
    /// backoff from 200 ms. Default 2, at most 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
}

/// What is rolled out: the VirtualService whose routes the controller owns, the hosts the filter
/// matches, the DestinationRule subsets and the WasmPlugin carrying the filter config.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetSpec {
    /// Name of the VirtualService (same namespace) whose mlcanary routes this policy owns.
    pub virtual_service: String,
    /// Hosts the filter matches requests on (`:authority` without port): short name, FQDN or `*`.
    pub hosts: Vec<String>,
    /// Route destination host; default: the first entry of `hosts` (which must then not be `*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_host: Option<String>,
    /// DestinationRule subset (and filter variant name) of the baseline. Default `stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_subset: Option<String>,
    /// DestinationRule subset (and filter variant name) of the new model. Default `canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_subset: Option<String>,
    /// The WasmPlugin whose `pluginConfig` carries the filter config. Leave it out (the usual
    /// case): the controller's mesh-wide plugin (`--mesh-plugin`, by default
    /// `istio-system/mlcanary`) runs the filter in every sidecar and gateway of the mesh. `NAME` (in
    /// this namespace) or `NAMESPACE/NAME` names a plugin of its own, for the callers of that
    /// namespace, and only where the controller runs without a mesh plugin (`--mesh-plugin none`):
    /// two plugins in one proxy would run the filter twice, and such a policy is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_plugin: Option<String>,
    /// The model's lifecycle, Flagger-style: this Deployment (same namespace) is the canary — a
    /// change of its pod template (a new model version committed to git) starts a rollout by
    /// itself — and the controller creates and owns `<name>-stable` from the first template it
    /// sees. Promotion copies the canary's template to stable, waits until it is ready, routes
    /// everything to stable and scales the canary to zero; a rollback routes everything to stable
    /// and scales the canary to zero. Without it, you run both subsets' Deployments yourself and
    /// start rollouts with `canaryVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_ref: Option<DeploymentRefSpec>,
    /// TF Serving / KServe model name, to tell apart several policies on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The version (label or image) the canary subset runs. Changing it starts a new rollout from
    /// `Pending` (what `mlcanary rollout start --canary` does); recorded in
    /// `status.canaryVersion`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
}

/// The user's Deployment of the model (the canary).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRefSpec {
    /// The Deployment's name (same namespace); the controller's copy is `<name>-stable`.
    pub name: String,
    /// The pod label the DestinationRule subsets select by; the Deployment's selector and pod
    /// template must carry it with the canary subset's name. Default `mlcanary.io/subset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subset_label: Option<String>,
}

/// How the filter picks a variant: rendered into the filter's policy config.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// Sticky assignment: the same key lands on the same variant on every replica. Without it
    /// each request draws its variant at random.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sticky: Option<StickySpec>,
    /// User-attribute rules, first match wins, before the percentage split.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleSpec>,
    /// Split stats by an allow-listed header value (low cardinality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentSpec>,
}

/// Sticky assignment: the same key lands on the same variant on every replica.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StickySpec {
    /// Request header whose value is the sticky key, e.g. `x-user-id` (used when present and
    /// not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Cookie whose value is the sticky key when the header is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Hash salt; defaults to the policy name. Changing it reshuffles every user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub salt: Option<String>,
    /// Give clients without a key a random id in `cookie`.
    #[serde(default)]
    pub assign_cookie: bool,
}

/// One user-attribute rule: a match and the variant (subset name) it sends to.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    #[serde(rename = "match")]
    pub match_: MatchSpec,
    /// The variant a matching request is sent to: the stable or the canary subset's name.
    pub variant: String,
}

/// Exactly one of `header` / `cookie` / `query`, and one of `exact` / `prefix` / `regex` / `oneOf`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MatchSpec {
    /// Match on this request header's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Match on this cookie's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
    /// Match on this query parameter's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The value equals this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// The value starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The whole value matches this regular expression.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// The value equals one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_of: Option<Vec<String>>,
}

/// Per-segment stats: header and its allowed values (others read `other`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentSpec {
    /// Request header whose value names the segment, e.g. `x-customer-age-band`.
    pub header: String,
    /// The values kept as segments; any other value, or none, counts as `other`.
    pub values: Vec<String>,
}

/// How the filter reads a score from each reply: TF Serving REST (`{"predictions": ...}`) or
/// KServe v2 (`{"outputs": [...]}`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionsSpec {
    /// `auto` (default: TF Serving if the reply has `predictions`, else KServe v2), `tfserving` or
    /// `kserve`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Name of the output holding the score (a named TF Serving output or KServe tensor).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    /// Which class's probability is the score when an instance is a list of class scores
    /// (default 1 for two classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_index: Option<u32>,
    /// A score at or above this is a positive prediction (default 0.5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_threshold: Option<f64>,
    /// Replies longer than this are counted, not parsed (default 65536).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
}

/// The weight steps. Either `stepWeight` (+ `maxWeight`, default 50) or explicit `steps`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Analysis interval, e.g. `30s`: one analysis, and at most one step, per interval.
    pub interval: String,
    /// Percent added per step, 1 to 100: the steps are `stepWeight`, 2 × `stepWeight`, ... up to
    /// `maxWeight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_weight: Option<u32>,
    /// Last step's percent with `stepWeight` (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<u32>,
    /// Explicit canary weights in percent, strictly increasing, e.g. 5, 10, 25, 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<u32>>,
    /// Holds at given steps: with a duration the rollout stays there at least that long; without,
    /// it pauses until an operator resumes it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<PauseSpec>,
    /// After the last step passes, wait for an operator's `promote` before sending 100 % to canary.
    #[serde(default)]
    pub manual_gate: bool,
    /// Instead of fixed steps, let the evidence set the next weight (wide passes grow the step,
    /// marginal ones hold it). Excludes `stepWeight`, `maxWeight`, `steps` and `pauses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<AdaptiveSpec>,
    /// A shadow phase before the first live step: the route mirrors a share of requests to the
    /// canary, whose answers are measured (at its inbound side) and thrown away, while every user
    /// keeps getting stable's. The judge compares the shadow with stable as it would a live canary;
    /// a failing shadow is rolled back without any user having seen it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}

/// The shadow phase: how much to mirror, and for how long.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSpec {
    /// Percent of requests mirrored to the canary, above 0 and at most 100 (e.g. 10 or 0.5).
    /// Mirroring adds this share of the model's traffic to the canary's load.
    pub percent: f64,
    /// The shadow lasts at least this long (a duration such as `10m`), then goes live once its
    /// analysis passes. Without it the shadow goes live as soon as its analysis passes and every
    /// check has excluded harm beyond the margin (the shadow is conclusive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// At most this many mirrored requests per second: each interval the controller lowers the
    /// mirrored share so that stable's request rate times the share stays under it (Envoy's mirror
    /// has a share, not a rate limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rps: Option<f64>,
}

/// The adaptive schedule: grow faster while every check passes with a wide margin and enough
/// samples, by the smallest step on a plain pass, hold while inconclusive, step back (never to 0)
/// when a check passes only narrowly or fails below `failureThreshold`, roll back on a breach.
/// Weights are whole percents.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdaptiveSpec {
    /// First weight. Default `minStepWeight`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_weight: Option<u32>,
    /// Smallest change of weight (growth on a plain pass, least step back). Default 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_step_weight: Option<u32>,
    /// Largest growth per interval. Default 25.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_step_weight: Option<u32>,
    /// Highest weight before promotion (the last step). Default 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_weight: Option<u32>,
    /// On wide passes the weight is multiplied by this (within the step bounds). Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub growth_factor: Option<f64>,
    /// A check's margin (headroom to its limit, 1 = nothing used, 0 = at the limit) at or above
    /// which it counts as a wide pass. Default 0.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wide_margin: Option<f64>,
    /// A passing check with a margin below this is marginal: step back. Default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marginal_margin: Option<f64>,
    /// A wide pass also needs this many times the check's minimum sample. Default 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_factor: Option<f64>,
}

/// A hold at one step.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PauseSpec {
    /// The step to hold at, as a 0-based index into the steps (0 = the first weight).
    pub step: u32,
    /// How long to hold, a duration such as `5m`; absent: until an operator resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// How the canary is judged each interval.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Consecutive failed analyses before rollback. Default 1: a failure of a sequential check is
    /// already a decision at the check's share of `alpha` (raise it for `custom` or resource
    /// checks, which compare a point value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    /// Requests per variant in the window below which a check is inconclusive. Default 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// The rollout's false-rollback budget (0 < alpha ≤ 0.5): the probability that a healthy
    /// canary is rolled back by a statistical check at any time in the whole rollout, over all its
    /// steps and checks. Split equally across the checks that do not set their own `alpha` (the
    /// ones that do spend theirs from it). Default 0.01.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Promotion needs harm beyond this ratio to stable excluded (or the canary shown within the
    /// check's absolute bound): e.g. 1.5 = errors no worse than 1.5× stable's. Default 1.5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub harm_margin: Option<f64>,
    /// When stable breaks a check's bound as well (a shared outage, a bad dependency): `hold`
    /// (default: the step holds and the progress deadline does not run) or `rollBack` (the
    /// deadline rolls back as for missing data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_baseline: Option<String>,
    /// The checks; every one must pass for a step to advance.
    pub checks: Vec<CheckSpec>,
}

/// One check: a name and exactly one kind.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckSpec {
    /// The check's name (not empty): it labels the check's verdict in the status, Events and
    /// metrics, so keep it unique within the policy.
    pub name: String,
    // The kinds' descriptions are their types' doc comments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencySpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<CustomSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction_drift: Option<PredictionDriftSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_rate: Option<PositiveRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_disparity: Option<SegmentDisparitySpec>,
    /// CPU seconds per request of the canary's pods against stable's (Prometheus only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<ResourceSpec>,
    /// Mean working-set memory per pod of the canary against stable's (Prometheus only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ResourceSpec>,
    /// Share of labelled predictions the canary got right against stable's, overall and per
    /// segment. Needs `spec.feedback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<feedback::LabelRateSpec>,
    /// Share of truly negative predictions the canary flagged, against stable's, overall and per
    /// segment. Needs `spec.feedback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub false_positive_rate: Option<feedback::LabelRateSpec>,
    /// Detection rate (recall): share of truly positive predictions the canary flagged, against
    /// stable's, overall and per segment. Needs `spec.feedback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_positive_rate: Option<feedback::LabelRateSpec>,
    /// Share of the canary's flags that were truly positive, against stable's, overall and per
    /// segment. Needs `spec.feedback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<feedback::LabelRateSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equalized_odds: Option<feedback::EqualizedOddsSpec>,
}

/// A resource check relative to stable, read from cAdvisor's container metrics joined to
/// kube-state-metrics' `kube_pod_labels` by namespace and pod.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceSpec {
    /// Largest acceptable canary / stable ratio (≥ 1; 1.3 = 30 % more).
    pub max_ratio_to_stable: f64,
    /// Label matchers on `kube_pod_labels` selecting one variant's pods, with `{{variant}}` for
    /// the subset name. Default `label_mlcanary_io_subset="{{variant}}"` (pods labelled
    /// `mlcanary.io/subset: <subset>`, exported by kube-state-metrics'
    /// `--metric-labels-allowlist=pods=[mlcanary.io/subset]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_selector: Option<String>,
}

/// Error rate (errors / requests) of the canary.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateSpec {
    /// Largest acceptable error rate, a fraction (0.01 = 1 %).
    pub max: f64,
    /// This check's share of `spec.analysis.alpha` (default: an equal split).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

/// A latency quantile of the canary, absolute or relative to stable.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LatencySpec {
    /// The quantile, between 0 and 1 (0.99 = p99).
    pub quantile: f64,
    /// Largest acceptable latency at the quantile, in milliseconds. Exactly one of `maxMs` and
    /// `maxRatioToStable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ms: Option<f64>,
    /// Largest acceptable ratio of the canary's quantile to stable's (1.2 = at most 20 % slower).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio_to_stable: Option<f64>,
    /// This check's share of `spec.analysis.alpha` (default: an equal split of the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
}

/// A PromQL query (needs the Prometheus source) compared with a threshold.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CustomSpec {
    /// PromQL with `{{namespace}}`, `{{policy}}` and `{{variant}}` placeholders; must return one number.
    pub query: String,
    /// The canary passes when its value compares so with `threshold`: one of `<`, `<=`, `>`,
    /// `>=`.
    pub comparison: String,
    /// The number the canary's value is compared with, in the query's unit.
    pub threshold: f64,
}

/// The canary's score distribution against stable's: Population Stability Index over the score
/// histogram's bins. Needs `spec.predictions`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionDriftSpec {
    /// Largest acceptable PSI (default 0.2, the usual "significant shift" mark; 0.1 is "some").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_psi: Option<f64>,
    /// Scored predictions per variant in the window below which the check is inconclusive
    /// (default 500: the PSI of two samples of the same distribution is biased upwards by about
    /// bins / n).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
}

/// The canary's positive-prediction rate against stable's. Exactly one bound. Needs
/// `spec.predictions`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PositiveRateSpec {
    /// Largest acceptable `|canary - stable| / stable` (0.2 = 20 % more or fewer positives).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_relative_shift: Option<f64>,
    /// Largest acceptable `|canary - stable|` in rate points (0.02 = two points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_absolute_shift: Option<f64>,
    /// This check's share of `spec.analysis.alpha` (default: an equal split of the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Scored predictions per variant below which the check is inconclusive (default:
    /// `spec.analysis.minRequests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
}

/// Per segment (`spec.routing.segment`), the ratio of the canary's positive rate to stable's
/// (the disparate-impact ratio between model versions) must stay within `[minRatio, maxRatio]`.
/// Needs `spec.predictions` and `spec.routing.segment`.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentDisparitySpec {
    /// Lowest acceptable ratio of the canary's positive rate to stable's in a segment. Default 0.8
    /// (the "four-fifths rule").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ratio: Option<f64>,
    /// Highest acceptable ratio. Default 1.25 (= 1 / 0.8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ratio: Option<f64>,
    /// This check's share of `spec.analysis.alpha`, split over the segments judged (default: an
    /// equal split of the budget).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Scored predictions per variant in a segment, at the current weight, below which the step
    /// holds (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples_per_segment: Option<u64>,
    /// Segments with less than this share of the rollout's scored predictions are reported and
    /// left out of the decision: a rare segment can neither block nor roll back (default 0.02).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_segment_share: Option<f64>,
    /// Optional within-canary floor r (the four-fifths rule, e.g. 0.8): the ratio of the canary's
    /// positive rate in each segment to the rest's must not be shown below r or above 1/r.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_ratio_between_segments: Option<f64>,
}

#[cfg(test)]
mod prediction_tests;
#[cfg(test)]
mod tests;
