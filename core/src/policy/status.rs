//! The status the controller writes back: phase, weight, verdicts, conditions, history and the
//! evidence the next tick judges from.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a rollout is.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Accepted, no traffic moved yet.
    #[default]
    Pending,
    /// Stepping the canary weight up.
    Progressing,
    /// Held by an operator (or an open-ended pause); analyses still run and can roll back.
    Paused,
    /// All traffic on the canary subset. The operator then rolls the stable Deployment forward.
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

/// Status written back by the controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CanaryPolicyStatus {
    #[serde(default)]
    pub phase: Phase,
    /// Canary weight in basis points (10000 = 100 %); stable gets the rest.
    #[serde(default)]
    pub canary_weight_bp: u32,
    /// Index into the steps of the current weight; absent before the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_index: Option<u32>,
    /// Consecutive failed analyses (reset by a passing one).
    #[serde(default)]
    pub failed_checks: u32,
    /// An operator's promote arrived while waiting at the manual gate (or before).
    #[serde(default)]
    pub gate_open: bool,
    /// RFC 3339; a timed pause at the current step lasts until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub last_verdicts: Vec<VerdictStatus>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// RFC 3339 time of the last phase change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// RFC 3339 time of the last step or conclusive passing analysis (the deadline's origin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The `mlcanary.io/command-id` annotation of the last operator command applied (or refused),
    /// so each command runs once (see `reconcile::command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_command_id: Option<String>,
    /// `spec.target.canaryVersion` this rollout is about (set when it started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_version: Option<String>,
    /// What the analysis carries between intervals (where the next window starts, an inconclusive
    /// window still held), so a restarted or `--once` controller judges as an uninterrupted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<crate::window::Evidence>,
}

/// One check's verdict as shown in the status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VerdictStatus {
    pub name: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    pub n_canary: u64,
    pub n_stable: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
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

/// A Kubernetes-style condition (`type` / `status` / `reason` / `message`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
}

/// One weight change.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// RFC 3339.
    pub time: String,
    pub from_weight_bp: u32,
    pub to_weight_bp: u32,
    pub reason: String,
}
