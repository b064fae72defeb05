//! The lifecycle step of a reconcile (`spec.target.deploymentRef`): read the two Deployments,
//! ask [`mlcanary_core::lifecycle::plan`], carry it out — everything to stable first where the plan
//! says so, then the Deployment changes — and either hand the rollout a status to tick with, or
//! end the reconcile with the lifecycle's status. Decisions are the core's; this is the order of
//! the writes and the status bookkeeping around them.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::Api;
use kube::ResourceExt;

use super::plan::{Event, EventType, Update};
use super::{Context, Error};
use crate::deployments;
use crate::engine::TickInput;
use crate::policy::{CanaryPolicy, CanaryPolicyStatus, Condition, HistoryEntry, ValidatedPolicy};
use crate::traffic::TrafficTarget;
use mlcanary_core::lifecycle::{plan, Gate, Names};
use mlcanary_core::policy::validated::DeploymentRef;
use mlcanary_core::weights::Weights;

/// How soon a lifecycle that waits (a Deployment rolling out, stable being made) looks again.
pub const LIFECYCLE_POLL: Duration = Duration::from_secs(5);

/// What the rest of the reconcile does.
pub enum Next {
    /// Tick the rollout from this status (the lifecycle's memory in it; a new rollout begun).
    Tick(Box<CanaryPolicyStatus>),
    /// No tick: write this.
    Done(Box<Update>),
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The `Lifecycle` condition, replaced in `status`; whether its message changed (news).
fn set_condition(
    status: &mut CanaryPolicyStatus,
    ok: bool,
    reason: &str,
    message: &str,
    now: SystemTime,
) -> bool {
    let c = Condition {
        type_: "Lifecycle".into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: Some(rfc3339(now)),
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Lifecycle")
    {
        Some(old) if old.message == c.message && old.reason == c.reason => false,
        Some(old) => {
            *old = c;
            true
        }
        None => {
            status.conditions.push(c);
            true
        }
    }
}

/// One lifecycle step of `obj` (valid, with `dref`), from `status`.
#[allow(clippy::too_many_arguments)]
pub async fn step<M, T>(
    obj: &CanaryPolicy,
    policy: &ValidatedPolicy,
    dref: &DeploymentRef,
    status: CanaryPolicyStatus,
    peers: &[(&ValidatedPolicy, Weights)],
    ctx: &Context<M, T>,
    now: SystemTime,
) -> Result<Next, Error>
where
    T: TrafficTarget,
{
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &namespace);
    let (observed, canary) = deployments::observe(&api, dref)
        .await
        .map_err(Error::Deployments)?;
    let names = Names {
        deployment: &dref.name,
        subset_label: &dref.subset_label,
        canary_subset: &policy.canary_subset,
    };
    let p = plan(names, &status, &observed);
    let mut next = status.clone();
    next.lifecycle = Some(p.next.clone());
    if p.route_all_stable {
        let engine = ctx.engine(&kube::runtime::reflector::ObjectRef::from_obj(obj));
        let input = TickInput {
            policy,
            status: &next,
            peers,
        };
        engine
            .lock()
            .await
            .route(input, Weights::ALL_STABLE, &ctx.target)
            .await?;
        if next.canary_weight_bp != 0 {
            next.history.push(HistoryEntry {
                time: rfc3339(now),
                from_weight_bp: next.canary_weight_bp,
                to_weight_bp: 0,
                reason: "stable runs the model: all traffic on stable".into(),
            });
            next.canary_weight_bp = 0;
        }
    }
    if let Some(canary) = &canary {
        for a in &p.actions {
            deployments::act(&api, obj, dref, &policy.stable_subset, canary, a)
                .await
                .map_err(Error::Deployments)?;
        }
    }
    let mut events = Vec::new();
    if let Some(news) = &p.news {
        events.push(Event {
            type_: EventType::Normal,
            reason: "Lifecycle",
            action: "Lifecycle",
            note: news.clone(),
        });
    }
    let stage = format!("{:?}", p.next.stage);
    match p.gate {
        Gate::Rollout { version, restart } => {
            if restart {
                let lifecycle = next.lifecycle.take();
                next = mlcanary_core::rollout::restart(&next, &version, now).status;
                next.lifecycle = lifecycle;
            }
            set_condition(
                &mut next,
                true,
                &stage,
                &format!("rolling out {version}"),
                now,
            );
            Ok(Next::Tick(Box::new(next)))
        }
        Gate::Hold(why) => {
            if set_condition(&mut next, false, &stage, &why, now) {
                events.push(Event {
                    type_: EventType::Normal,
                    reason: "LifecycleWaiting",
                    action: "Lifecycle",
                    note: why,
                });
            }
            Ok(Next::Done(Box::new(done(
                obj,
                next,
                events,
                LIFECYCLE_POLL,
            ))))
        }
        Gate::Idle => {
            let message = p.news.clone().unwrap_or_else(|| {
                format!(
                    "{}-stable runs the model; {} is scaled to 0 until its pod template changes",
                    dref.name, dref.name
                )
            });
            let keep = next
                .conditions
                .iter()
                .any(|c| c.type_ == "Lifecycle" && c.reason == stage);
            if !keep || p.news.is_some() {
                set_condition(&mut next, true, &stage, &message, now);
            }
            Ok(Next::Done(Box::new(done(
                obj,
                next,
                events,
                policy.interval,
            ))))
        }
    }
}

fn done(
    obj: &CanaryPolicy,
    mut status: CanaryPolicyStatus,
    events: Vec<Event>,
    requeue: Duration,
) -> Update {
    status.observed_generation = obj.metadata.generation;
    let old = obj.status.clone().unwrap_or_default();
    Update {
        status: (status != old).then_some(status),
        events,
        rollout: Vec::new(),
        requeue,
    }
}
