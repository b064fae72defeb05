//! The status the controller writes back: phase, weight, verdicts, conditions, history and the
//! evidence the next tick judges from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where the rollout is: Pending, Progressing, Paused, Promoted, RolledBack or Failed.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, no traffic moved yet.
    #[default]
    Pending,
    /// Stepping the canary weight up.
    Progressing,
    /// Held by an operator (or an open-ended pause); analyses still run and can roll back.
    Paused,
    /// The canary passed. With `deploymentRef` the lifecycle then copies it to stable and ends at
    /// 0 % (stable runs the new model); in the two-Deployments mode all traffic stays on the
    /// canary subset and the operator rolls the stable Deployment forward.
    Promoted,
    /// Canary weight 0 after failed analyses, the progress deadline or an abort.
    RolledBack,
    /// The policy is invalid; nothing is touched.
    Failed,
}

impl Phase {
    /// Promoted, RolledBack and Failed end the rollout: no step changes them.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Promoted | Phase::RolledBack | Phase::Failed)
    }
}

/// The rollout's state, written by the controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryPolicyStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Canary weight in basis points (10000 = 100 %); stable gets the rest.
    #[serde(default)]
    pub canary_weight_bp: u32,
    /// Canary weight in percent (2.5 = 2.5 %): `canaryWeightBp` / 100, written with it for the
    /// `kubectl get` column.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight_percent: Option<f64>,
    /// 0-based index of the current step (the last one reached, once the rollout has ended);
    /// absent before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_index: Option<u32>,
    /// The current step and the number of steps, 1-based, e.g. `2/4`, written with `stepIndex`
    /// for the `kubectl get` column. An adaptive schedule counts two steps: `1/2` below its
    /// highest weight, `2/2` at it. Absent before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Consecutive failed analyses (reset by a passing one).
    #[serde(default)]
    pub failed_checks: u32,
    /// An operator's promote arrived while waiting at the manual gate (or before).
    #[serde(default)]
    pub gate_open: bool,
    /// RFC 3339 time until which a timed pause at the current step lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
    /// Each check's verdict in the last analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_verdicts: Vec<VerdictStatus>,
    /// `Progressing` (why the rollout is where it is) and, while stable breaks a check's bound,
    /// `BaselineUnhealthy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The latest weight changes, oldest first (at most 32).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// RFC 3339 time of the last phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// RFC 3339 time of the last step or conclusive passing analysis (the deadline's origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<String>,
    /// The `metadata.generation` of the spec the last analysis judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `mlcanary.io/command-id` annotation of the last operator command applied (or refused),
    /// so each command runs once however often the policy is reconciled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_id: Option<String>,
    /// `spec.target.canaryVersion` this rollout is about (set when it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    /// The hold the rollout is in, while a step holds (absent once it moves): the controller
    /// sends an Event when a hold begins or its reason changes and, while it lasts, again every
    /// 10 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<HeldStatus>,
    /// The model's lifecycle (with `spec.target.deploymentRef`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleStatus>,
    /// While the rollout is in its shadow phase (`spec.schedule.shadow`): the mirrored share in
    /// force and when the phase began. Absent before it and once the live steps begin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowStatus>,
    /// What the analysis carries between intervals (where the next window starts, an inconclusive
    /// window still held), so a restarted or `--once` controller judges as an uninterrupted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::window::Evidence>,
}

impl CanaryPolicyStatus {
    /// The status with the fields only `kubectl get` reads filled from the ones they show:
    /// `canaryWeightPercent` from `canaryWeightBp` and `step` from `stepIndex` and `steps` (the
    /// schedule's number of steps; `None` for an invalid spec, which has no schedule). JSONPath can
    /// neither divide nor format, so they are stored; filled on every status write, they cannot
    /// disagree with what they show.
    pub fn with_columns(mut self, steps: Option<usize>) -> Self {
        self.canary_weight_percent = Some(f64::from(self.canary_weight_bp) / 100.0);
        self.step = match (self.step_index, steps) {
            _ if self.shadow.is_some() => Some("shadow".to_owned()),
            // A spec edited to fewer steps mid-rollout: the rollout treats the index as the last.
            (Some(i), Some(n)) if n > 0 => Some(format!("{}/{n}", (i as usize + 1).min(n))),
            _ => None,
        };
        self
    }
}

/// The shadow phase in progress.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowStatus {
    /// The share of requests mirrored to the canary now, in basis points (`maxRps` may hold it
    /// below `spec.schedule.shadow.percent`).
    pub mirror_bp: u32,
    /// RFC 3339 time the shadow phase began.
    pub since: String,
}

impl CanaryPolicyStatus {
    /// The split the status says is in effect: the shadow's mirror, else the canary weight.
    pub fn weights(&self) -> crate::weights::Weights {
        match &self.shadow {
            Some(s) => crate::weights::Weights::shadow(s.mirror_bp),
            None => crate::weights::Weights::with_canary_bp(self.canary_weight_bp),
        }
    }
}

/// A hold that lasts, as the controller's Events last described it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HeldStatus {
    /// Why the step holds, e.g. `NoConclusiveData`, `TimedPause`, `ManualGate`,
    /// `BaselineUnhealthy`.
    pub reason: String,
    /// RFC 3339 time the hold began (or its reason last changed).
    pub since: String,
    /// RFC 3339 time of the last Event about it.
    pub last_event_time: String,
}

/// One check's verdict in the last analysis.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerdictStatus {
    /// The check's name (`spec.analysis.checks[].name`).
    pub name: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    /// The canary's value, in the check's unit (e.g. a fraction for rates, milliseconds for
    /// latency).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    /// Stable's value, in the same unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<f64>,
    /// The bound the canary's value is judged against, in the same unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The canary's sample behind the verdict (requests or scored predictions).
    pub n_canary: u64,
    /// Stable's sample behind the verdict.
    pub n_stable: u64,
    /// The test's p-value, when the check runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The verdict in words, with its numbers.
    pub message: String,
    /// The canary's value as an anytime-valid interval `[low, high]` (same scale as `threshold`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<[f64; 2]>,
    /// The canary / stable ratio as an anytime-valid interval `[low, high]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<[f64; 2]>,
    /// Harm beyond the policy's margin is excluded (what promotion needs of every check).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub harm_excluded: bool,
    /// Stable breaks the bound as well: the step holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baseline_unhealthy: bool,
}

/// A Kubernetes-style condition: a type, its status, and why.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about, e.g. `Progressing`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// Why, in one CamelCase word.
    pub reason: String,
    /// Why, in words.
    #[serde(default)]
    pub message: String,
    /// RFC 3339 time the condition last changed its status or reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// One weight change.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// RFC 3339 time of the change.
    pub time: String,
    /// Canary weight before, in basis points.
    pub from_weight_bp: u32,
    /// Canary weight after, in basis points.
    pub to_weight_bp: u32,
    /// Why the weight changed.
    pub reason: String,
}

/// Where the model's lifecycle is (`spec.target.deploymentRef`).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum LifecycleStage {
    /// Making `<name>-stable` from the first pod template seen and waiting until it is ready.
    #[default]
    Initializing,
    /// Stable runs the model; the canary is scaled to zero until its pod template changes.
    Idle,
    /// A rollout of the canary's pod template runs.
    Rolling,
    /// The rollout passed: the canary's pod template is being copied to stable.
    Promoting,
}

/// What the lifecycle remembers between reconciles.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleStatus {
    #[serde(default)]
    pub stage: LifecycleStage,
    /// Hash of the pod template stable runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_hash: Option<String>,
    /// Hash of the pod template the current (or last) rollout is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_hash: Option<String>,
    /// Hash of a pod template that was rolled back: not rolled out again until the next change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_hash: Option<String>,
}
