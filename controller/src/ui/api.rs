//! The JSON views of `/api/policies` and `/api/policies/{name}`: the contract the status page and
//! the CLI client both read. camelCase; the status parts are the CanaryPolicy status types as they
//! appear in `status.json` and on the resource.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::policy::{Condition, HistoryEntry, Phase, VerdictStatus};
use crate::ui::history::{Event, PolicyRecord};

/// One policy as `/api/policies` lists it. The CLI client reads it back: unknown fields (the
/// detail view's `series`) are ignored, missing ones take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicyView {
    pub name: String,
    pub namespace: String,
    pub phase: Phase,
    pub canary_weight_bp: u32,
    /// Index into `stepsBp`; `null` before the first step.
    pub step_index: Option<u32>,
    pub steps_bp: Vec<u32>,
    /// The version the status is about (`status.canaryVersion`): for a `deploymentRef` target the
    /// canary pod template's images, comma-joined; `null` before any rollout named one. `wait
    /// --canary` compares it so a finished earlier rollout is not taken for the one it waits for.
    pub canary_version: Option<String>,
    pub failed_checks: u32,
    pub failure_threshold: u32,
    /// The share mirrored to the canary while the rollout is in its shadow phase (basis points);
    /// `null` otherwise.
    #[serde(default)]
    pub shadow_mirror_bp: Option<u32>,
    pub last_verdicts: Vec<VerdictStatus>,
    pub history: Vec<HistoryEntry>,
    pub conditions: Vec<Condition>,
    /// RFC 3339 time of the last tick or command.
    pub updated: String,
}

/// One point of the weight chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightPoint {
    pub t: u64,
    pub bp: u32,
}

/// One point of a check's chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckPoint {
    pub t: u64,
    pub canary: Option<f64>,
    pub stable: Option<f64>,
    pub threshold: Option<f64>,
    pub verdict: &'static str,
}

/// The time series behind the charts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    pub weight: Vec<WeightPoint>,
    /// By check name, oldest first.
    pub checks: BTreeMap<String, Vec<CheckPoint>>,
    pub events: Vec<Event>,
}

/// `/api/policies/{name}`: the list view plus the series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PolicyDetail {
    #[serde(flatten)]
    pub policy: PolicyView,
    pub series: Series,
}

impl From<&PolicyRecord> for PolicyView {
    fn from(r: &PolicyRecord) -> Self {
        let s = &r.status;
        PolicyView {
            name: r.name.clone(),
            namespace: r.namespace.clone(),
            phase: s.phase,
            canary_weight_bp: s.canary_weight_bp,
            step_index: s.step_index,
            steps_bp: r.steps_bp.clone(),
            canary_version: s.canary_version.clone(),
            failed_checks: s.failed_checks,
            failure_threshold: r.failure_threshold,
            shadow_mirror_bp: s.shadow.as_ref().map(|sh| sh.mirror_bp),
            last_verdicts: s.last_verdicts.clone(),
            history: s.history.clone(),
            conditions: s.conditions.clone(),
            updated: r.updated.clone(),
        }
    }
}

impl From<&PolicyRecord> for PolicyDetail {
    fn from(r: &PolicyRecord) -> Self {
        let weight = r
            .samples
            .iter()
            .map(|s| WeightPoint {
                t: s.t_ms,
                bp: s.canary_weight_bp,
            })
            .collect();
        let mut checks: BTreeMap<String, Vec<CheckPoint>> = BTreeMap::new();
        for s in &r.samples {
            for v in &s.verdicts {
                checks.entry(v.name.clone()).or_default().push(CheckPoint {
                    t: s.t_ms,
                    canary: v.canary,
                    stable: v.stable,
                    threshold: v.threshold,
                    verdict: v.verdict,
                });
            }
        }
        PolicyDetail {
            policy: r.into(),
            series: Series {
                weight,
                checks,
                events: r.events.iter().cloned().collect(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::policy::{CanaryPolicy, CanaryPolicyStatus};
    use crate::ui::history::HistoryStore;
    use mlcanary_core::analysis::{Outcome, Verdict};
    use mlcanary_core::rollout::RolloutEvent;

    #[test]
    fn the_views_follow_the_contract() {
        let p = CanaryPolicy::test().validated();
        let mut store = HistoryStore::new();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let status = CanaryPolicyStatus {
            phase: Phase::Progressing,
            canary_weight_bp: 500,
            step_index: Some(0),
            canary_version: Some("ghcr.io/acme/fraud-model:v2".into()),
            ..Default::default()
        };
        store.record(
            "ml",
            &p,
            &status,
            None,
            &[RolloutEvent::Started { to_bp: 500 }],
            t0,
        );
        let v = Verdict {
            check: "errors".into(),
            outcome: Outcome::Fail,
            canary: Some(0.2),
            stable: Some(0.0),
            threshold: Some(0.01),
            n_canary: 50,
            n_stable: 950,
            p_value: None,
            message: String::new(),
            ..Default::default()
        };
        let status = CanaryPolicyStatus {
            last_verdicts: vec![(&v).into()],
            failed_checks: 1,
            ..status
        };
        store.record(
            "ml",
            &p,
            &status,
            Some(&[v]),
            &[],
            t0 + Duration::from_secs(1),
        );
        let r = store.find(None, "fraud-model").expect("recorded");

        let list = serde_json::to_value(PolicyView::from(r)).expect("json");
        assert_eq!(list["name"], "fraud-model");
        assert_eq!(list["namespace"], "ml");
        assert_eq!(list["phase"], "Progressing");
        assert_eq!(list["canaryWeightBp"], 500);
        assert_eq!(list["stepIndex"], 0);
        assert_eq!(list["stepsBp"], json!(p.steps_bp));
        assert_eq!(list["canaryVersion"], "ghcr.io/acme/fraud-model:v2");
        assert_eq!(list["failedChecks"], 1);
        assert_eq!(list["failureThreshold"], json!(p.failure_threshold));
        assert_eq!(list["lastVerdicts"][0]["verdict"], "fail");
        assert_eq!(list["lastVerdicts"][0]["nCanary"], 50);
        assert_eq!(list["history"], json!([]));
        assert_eq!(list["conditions"], json!([]));
        assert_eq!(list["updated"], "2023-11-14T22:13:21Z");
        assert!(list.get("series").is_none());

        let detail = serde_json::to_value(PolicyDetail::from(r)).expect("json");
        assert_eq!(detail["name"], "fraud-model", "flattened");
        assert_eq!(
            detail["series"]["weight"],
            json!([{"t": 1_700_000_000_000u64, "bp": 500}, {"t": 1_700_000_001_000u64, "bp": 500}])
        );
        assert_eq!(
            detail["series"]["checks"]["errors"],
            json!([{"t": 1_700_000_001_000u64, "canary": 0.2, "stable": 0.0, "threshold": 0.01,
                    "verdict": "fail"}])
        );
        assert_eq!(
            detail["series"]["events"],
            json!([{"t": 1_700_000_000_000u64, "kind": "started", "message": "started at 5.00%"}])
        );
    }

    #[test]
    fn step_index_is_null_before_the_first_step() {
        let p = CanaryPolicy::test().validated();
        let mut store = HistoryStore::new();
        store.register("default", &p, &CanaryPolicyStatus::default(), UNIX_EPOCH);
        let r = store.find(None, "fraud-model").expect("registered");
        let v = serde_json::to_value(PolicyView::from(r)).expect("json");
        assert_eq!(v["stepIndex"], serde_json::Value::Null);
        assert_eq!(v["canaryVersion"], serde_json::Value::Null);
        assert_eq!(v["phase"], "Pending");
        let d = serde_json::to_value(PolicyDetail::from(r)).expect("json");
        assert_eq!(
            d["series"],
            json!({"weight": [], "checks": {}, "events": []})
        );
    }
}
