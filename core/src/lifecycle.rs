//! The model's lifecycle on a cluster (`spec.target.deploymentRef`), Flagger-style, as a function
//! over values. The user's Deployment is the canary — its pod template carries the model version,
//! committed to git — and the controller owns `<name>-stable`:
//!
//! ```text
//! Initializing  create <name>-stable from the first template seen; wait until it is ready;
//!               route 100 % to stable; scale the canary to 0                     → Idle
//! Idle          a template stable does not run (and that was not just rolled back): scale the
//!               canary up to stable's replicas, wait until it is ready           → Rolling
//! Rolling       the rollout runs (steps, analysis) on the canary's version; a new template
//!               restarts it. Promoted                                            → Promoting
//!               RolledBack (already all on stable): scale the canary to 0       → Idle
//! Promoting     copy the canary's template to stable; wait until it is rolled out and ready;
//!               route 100 % to stable; scale the canary to 0                    → Idle
//! ```
//!
//! [`plan`] reads what the adapter observed and the status, and says what to do now: the actions
//! (create, copy, scale), whether to route everything to stable first, whether the rollout ticks,
//! and the next lifecycle status. The adapter (`controller::deployments`) does the I/O.

use crate::policy::status::{LifecycleStage, LifecycleStatus};
use crate::policy::{CanaryPolicyStatus, Phase};

pub use crate::policy::validated::DEFAULT_SUBSET_LABEL;
/// Annotation on `<name>-stable`: the template hash the controller last copied into it.
pub const TEMPLATE_HASH_ANNOTATION: &str = "mlcanary.io/template-hash";

/// What the adapter read of one Deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeploymentView {
    /// The pod template's hash, its subset label left out: what makes a model version.
    pub template_hash: String,
    /// The containers' images, comma-joined: the version shown, recorded and waited on.
    pub images: String,
    /// `spec.replicas`.
    pub replicas: i32,
    /// Rolled out and available: the controller saw the latest spec, and every replica is updated
    /// and available.
    pub ready: bool,
    /// The template's subset label value, if any.
    pub subset_label: Option<String>,
    /// The [`TEMPLATE_HASH_ANNOTATION`] (stable only).
    pub copied_hash: Option<String>,
}

/// The two Deployments, as found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// The user's Deployment (the canary).
    pub canary: Option<DeploymentView>,
    /// `<name>-stable`.
    pub stable: Option<DeploymentView>,
}

/// A change to make on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create `<name>-stable` from the canary's template (subset label set to stable's), at the
    /// canary's replicas.
    CreateStable { replicas: i32 },
    /// Copy the canary's template into `<name>-stable` (a rolling update of stable).
    CopyToStable,
    /// Set the canary's replicas.
    ScaleCanary(i32),
}

/// What the rollout does this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Tick the rollout of this version (the canary's images); `restart`: a new template, so a
    /// new rollout from `Pending` first (even when the images are the same: an env or args change
    /// is a new model too).
    Rollout { version: String, restart: bool },
    /// No tick: the lifecycle waits or acts, for this reason (said in the status and an Event).
    Hold(String),
    /// Nothing to do: stable runs the canary's template.
    Idle,
}

/// One reconcile's lifecycle decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Route 100 % to stable before the actions (promotion's and initialization's end).
    pub route_all_stable: bool,
    pub actions: Vec<Action>,
    pub gate: Gate,
    pub next: LifecycleStatus,
    /// A stage ended: what happened (an Event).
    pub news: Option<String>,
}

impl Plan {
    /// `gate` with nothing to do first.
    fn new(next: LifecycleStatus, gate: Gate) -> Plan {
        Plan {
            route_all_stable: false,
            actions: Vec::new(),
            gate,
            next,
            news: None,
        }
    }

    fn hold(next: LifecycleStatus, why: String) -> Plan {
        Plan::new(next, Gate::Hold(why))
    }
}

/// The names the plan speaks of.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// The user's Deployment.
    pub deployment: &'a str,
    pub subset_label: &'a str,
    pub canary_subset: &'a str,
}

/// The lifecycle step for this reconcile; `status` is the rollout's, `observed` what the adapter
/// read now.
pub fn plan(names: Names<'_>, status: &CanaryPolicyStatus, observed: &Observed) -> Plan {
    let l = status.lifecycle.clone().unwrap_or_default();
    let stable_name = format!("{}-stable", names.deployment);
    let Some(canary) = &observed.canary else {
        return Plan::hold(l, format!("Deployment {} not found", names.deployment));
    };
    if canary.subset_label.as_deref() != Some(names.canary_subset) {
        return Plan::hold(
            l,
            format!(
                "the pod template of Deployment {} must carry the label {}: {} (its pods are the canary subset)",
                names.deployment, names.subset_label, names.canary_subset
            ),
        );
    }
    let stage = |stage, l: &LifecycleStatus| LifecycleStatus { stage, ..l.clone() };
    match (l.stage, &observed.stable) {
        // Stable gone (deleted by hand) or never made: (re)create it from the canary.
        (_, None) => {
            let mut next = stage(LifecycleStage::Initializing, &l);
            next.stable_hash = Some(canary.template_hash.clone());
            Plan {
                actions: vec![Action::CreateStable {
                    replicas: canary.replicas.max(1),
                }],
                ..Plan::hold(
                    next,
                    format!("creating {stable_name} from {}", canary.images),
                )
            }
        }
        (LifecycleStage::Initializing, Some(stable)) if !stable.ready => Plan::hold(
            l.clone(),
            format!("waiting for {stable_name} ({}) to be ready", stable.images),
        ),
        (LifecycleStage::Initializing, Some(stable)) => {
            let mut next = stage(LifecycleStage::Idle, &l);
            next.stable_hash = stable.copied_hash.clone().or(next.stable_hash);
            Plan {
                route_all_stable: true,
                actions: vec![Action::ScaleCanary(0)],
                gate: Gate::Idle,
                news: Some(format!(
                    "initialized: {stable_name} runs {}, all traffic on stable, {} scaled to 0",
                    stable.images, names.deployment
                )),
                next,
            }
        }
        (LifecycleStage::Idle, Some(stable)) => {
            let new = Some(&canary.template_hash) != l.stable_hash.as_ref()
                && Some(&canary.template_hash) != l.rejected_hash.as_ref();
            if !new {
                // Stable runs it, or it was just rolled back: a new commit starts the next one.
                let mut p = Plan::new(l.clone(), Gate::Idle);
                // Between rollouts the canary runs no pods: replicas a GitOps sync put back are
                // scaled down again.
                if canary.replicas > 0 {
                    p.actions.push(Action::ScaleCanary(0));
                }
                return p;
            }
            if canary.replicas == 0 {
                return Plan {
                    actions: vec![Action::ScaleCanary(stable.replicas.max(1))],
                    ..Plan::hold(
                        l.clone(),
                        format!(
                            "new version {}: scaling {} up to {} replicas",
                            canary.images,
                            names.deployment,
                            stable.replicas.max(1)
                        ),
                    )
                };
            }
            if !canary.ready {
                return Plan::hold(
                    l.clone(),
                    format!(
                        "waiting for {} ({}) to be ready",
                        names.deployment, canary.images
                    ),
                );
            }
            let mut next = stage(LifecycleStage::Rolling, &l);
            next.canary_hash = Some(canary.template_hash.clone());
            next.rejected_hash = None;
            Plan::new(
                next,
                Gate::Rollout {
                    version: canary.images.clone(),
                    restart: true,
                },
            )
        }
        (LifecycleStage::Rolling, Some(_)) if status.phase == Phase::Promoted => {
            let next = stage(LifecycleStage::Promoting, &l);
            Plan {
                actions: vec![Action::CopyToStable],
                ..Plan::hold(
                    next,
                    format!(
                        "promoting: copying {}'s template to {stable_name}",
                        names.deployment
                    ),
                )
            }
        }
        (LifecycleStage::Rolling, Some(_)) if status.phase == Phase::RolledBack => {
            let mut next = stage(LifecycleStage::Idle, &l);
            next.rejected_hash = l.canary_hash.clone();
            Plan {
                actions: vec![Action::ScaleCanary(0)],
                news: Some(format!(
                    "rolled back: all traffic on {stable_name}, {} ({}) scaled to 0",
                    names.deployment, canary.images
                )),
                ..Plan::new(next, Gate::Idle)
            }
        }
        (LifecycleStage::Rolling, Some(_)) => {
            let mut next = l.clone();
            // A commit mid-rollout: the rollout starts over on the new version.
            let restart = l.canary_hash.as_ref() != Some(&canary.template_hash);
            next.canary_hash = Some(canary.template_hash.clone());
            if !canary.ready {
                return Plan::hold(
                    next,
                    format!(
                        "waiting for {} ({}) to be ready",
                        names.deployment, canary.images
                    ),
                );
            }
            Plan::new(
                next,
                Gate::Rollout {
                    version: canary.images.clone(),
                    restart,
                },
            )
        }
        (LifecycleStage::Promoting, Some(stable)) => {
            if stable.copied_hash != l.canary_hash {
                return Plan {
                    actions: vec![Action::CopyToStable],
                    ..Plan::hold(l.clone(), format!("promoting: copying to {stable_name}"))
                };
            }
            if !stable.ready {
                return Plan::hold(
                    l.clone(),
                    format!(
                        "promoting: waiting for {stable_name} to roll out {}",
                        stable.images
                    ),
                );
            }
            let mut next = stage(LifecycleStage::Idle, &l);
            next.stable_hash = l.canary_hash.clone();
            Plan {
                route_all_stable: true,
                actions: vec![Action::ScaleCanary(0)],
                gate: Gate::Idle,
                news: Some(format!(
                    "promoted: {stable_name} runs {}, all traffic on stable, {} scaled to 0",
                    stable.images, names.deployment
                )),
                next,
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The hash of a pod template (JSON), the subset label left out — the canary's and the stable
/// copy of it hash the same. FNV-1a over the canonical JSON (keys sorted), hex: a fixed function,
/// so a restarted controller compares what an earlier one recorded.
pub fn template_hash(template: &serde_json::Value, subset_label: &str) -> String {
    let mut t = template.clone();
    if let Some(labels) = t
        .pointer_mut("/metadata/labels")
        .and_then(serde_json::Value::as_object_mut)
    {
        labels.remove(subset_label);
    }
    let mut text = String::new();
    canonical(&t, &mut text);
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The canary's pod template as `<name>-stable` runs it: the subset label set to stable's.
pub fn stable_template(
    template: &serde_json::Value,
    subset_label: &str,
    stable_subset: &str,
) -> serde_json::Value {
    let mut t = template.clone();
    if !t.get("metadata").is_some_and(serde_json::Value::is_object) {
        t["metadata"] = serde_json::json!({});
    }
    if !t["metadata"]
        .get("labels")
        .is_some_and(serde_json::Value::is_object)
    {
        t["metadata"]["labels"] = serde_json::json!({});
    }
    t["metadata"]["labels"][subset_label] = serde_json::Value::String(stable_subset.to_owned());
    t
}
