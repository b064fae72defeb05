//! The reconciler's decisions as values, with no I/O: what status to write, which Events to emit,
//! when to look again. [`super::writer`] applies an [`Update`]; the tests assert on it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kube::ResourceExt;
use serde_json::{json, Value};

use super::held;
use crate::engine::TickOutput;
use crate::policy::{
    CanaryPolicy, CanaryPolicyStatus, Condition, Phase, PluginRef, ValidatedPolicy, ValidationError,
};
use mlcanary_core::events::describe;
use mlcanary_core::render::{MeshScope, ScopeError};
use mlcanary_core::rollout::RolloutEvent;
use mlcanary_core::weights::Weights;

/// How long an invalid policy waits before it is looked at again. An edit of the spec triggers a
/// reconcile at once through the watch, so this is only a safety net.
pub const INVALID_RECHECK: Duration = Duration::from_secs(300);
/// First delay after a failed reconcile; doubles per consecutive failure.
pub const BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Longest delay after failed reconciles.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);

/// Normal or Warning, as Kubernetes Events have it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A Kubernetes Event about the policy, as a value (kube's own type is neither `Debug` nor
/// comparable); [`super::writer`] turns it into kube's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub type_: EventType,
    /// CamelCase, fixed per kind of event.
    pub reason: &'static str,
    /// What the controller did, fixed per kind of event.
    pub action: &'static str,
    /// The human-readable detail.
    pub note: String,
}

/// What one reconcile wants written.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// The new status, or `None` when it is unchanged (no write, no watch event).
    pub status: Option<CanaryPolicyStatus>,
    /// Events about the policy, in order.
    pub events: Vec<Event>,
    /// The rollout events behind them (for the controller's metrics).
    pub rollout: Vec<RolloutEvent>,
    /// Look again after this long.
    pub requeue: Duration,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The status a tick starts from. A `Failed` status only ever means "the spec was invalid"; once
/// the spec validates again the rollout starts over from `Pending` at the weight in effect (the
/// invalid spec touched no traffic), keeping the history.
pub fn starting_status(obj: &CanaryPolicy) -> CanaryPolicyStatus {
    let status = obj.status.clone().unwrap_or_default();
    if status.phase != Phase::Failed {
        return status;
    }
    CanaryPolicyStatus {
        phase: Phase::Pending,
        canary_weight_bp: status.canary_weight_bp,
        history: status.history,
        // A command already applied must not run again on the fresh rollout.
        last_command_id: status.last_command_id,
        ..Default::default()
    }
}

/// A new rollout when `spec.target.canaryVersion` differs from the version the status is about
/// (`mlcanary rollout start` patches it): back to `Pending` at 0 % ([`mlcanary_core::rollout::restart`]).
pub fn with_new_canary(
    obj: &CanaryPolicy,
    status: CanaryPolicyStatus,
    now: SystemTime,
) -> CanaryPolicyStatus {
    match &obj.spec.target.canary_version {
        Some(v) if status.canary_version.as_ref() != Some(v) => {
            mlcanary_core::rollout::restart(&status, v, now).status
        }
        _ => status,
    }
}

/// An invalid spec: phase `Failed` with the error (which names the field) as the condition, one
/// Warning Event when that is news, nothing applied.
pub fn plan_invalid(obj: &CanaryPolicy, err: &ValidationError, now: SystemTime) -> Update {
    let old = obj.status.clone().unwrap_or_default();
    let message = err.to_string();
    let mut status = old.clone();
    if status.phase != Phase::Failed {
        status.phase = Phase::Failed;
        status.last_transition_time = Some(rfc3339(now));
    }
    let condition = Condition {
        type_: "Progressing".into(),
        status: "False".into(),
        reason: "InvalidSpec".into(),
        message: message.clone(),
        last_transition_time: Some(rfc3339(now)),
    };
    let same = |c: &Condition| {
        c.type_ == condition.type_ && c.reason == condition.reason && c.message == condition.message
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == "Progressing")
    {
        Some(c) if same(c) => {}
        Some(c) => *c = condition,
        None => status.conditions.push(condition),
    }
    status.observed_generation = obj.metadata.generation;
    // An invalid spec has no schedule: no step to show.
    let status = status_to_write(&old, status, None);
    let changed = status.is_some();
    Update {
        events: if changed {
            vec![Event {
                type_: EventType::Warning,
                reason: "InvalidSpec",
                action: "Validate",
                note: message,
            }]
        } else {
            Vec::new()
        },
        status,
        rollout: Vec::new(),
        requeue: INVALID_RECHECK,
    }
}

/// After a tick: the tick's status (with the generation it judged), an Event per step change,
/// promotion, rollback, failed analysis or pause, one about a hold when it begins and, while it
/// lasts, now and then ([`held`]), and the next look one interval later.
pub fn plan_tick(obj: &CanaryPolicy, policy: &ValidatedPolicy, out: TickOutput) -> Update {
    let old = obj.status.clone().unwrap_or_default();
    let (held, held_event) = held::plan_held(old.held.as_ref(), &out, policy);
    let mut status = out.status;
    status.observed_generation = obj.metadata.generation;
    status.held = held;
    let mut events: Vec<Event> = out.events.iter().filter_map(event_for).collect();
    events.extend(held_event);
    Update {
        events,
        status: status_to_write(&old, status, Some(policy.steps_bp.len())),
        rollout: out.events,
        requeue: policy.interval,
    }
}

/// The status to write, `None` when it is `old` unchanged (no write, no watch event). Every status
/// the reconciler writes passes here, so this is where the `kubectl get` columns are filled from
/// the fields they show ([`CanaryPolicyStatus::with_columns`]; `steps`: the schedule's number of
/// steps).
pub fn status_to_write(
    old: &CanaryPolicyStatus,
    new: CanaryPolicyStatus,
    steps: Option<usize>,
) -> Option<CanaryPolicyStatus> {
    let new = new.with_columns(steps);
    (new != *old).then_some(new)
}

/// The Kubernetes Event for a rollout event; holds are not news (they repeat every interval:
/// [`held`] sends theirs).
pub fn event_for(e: &RolloutEvent) -> Option<Event> {
    let d = describe(e);
    d.kind.is_news().then(|| Event {
        type_: if d.kind.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: d.kind.reason(),
        action: d.kind.action(),
        note: d.message,
    })
}

/// The server-side apply body of the status subresource (a status from [`status_to_write`]).
/// Apply rather than a merge patch: optional fields the status drops (`pausedUntil`, `stepIndex`)
/// are omitted when `None`, and only apply removes a field its manager stops sending; a merge
/// patch would leave the stale value.
pub fn status_patch(status: &CanaryPolicyStatus) -> Value {
    json!({
        "apiVersion": "mlcanary.io/v1alpha1",
        "kind": "CanaryPolicy",
        "status": status,
    })
}

/// Time left before the next analysis of a policy last ticked at `last`, or `None` when it is due.
/// Reconciles also come from watch events (our own status writes, relists); they must not run an
/// extra analysis, which would step the rollout early.
pub fn wait_before_tick(
    last: Option<SystemTime>,
    now: SystemTime,
    interval: Duration,
) -> Option<Duration> {
    let elapsed = now.duration_since(last?).unwrap_or(Duration::ZERO);
    interval.checked_sub(elapsed).filter(|d| !d.is_zero())
}

/// Delay before retrying after `failures` consecutive failed reconciles (1 = the first failure).
pub fn backoff_delay(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    BACKOFF_BASE.saturating_mul(1 << exp).min(BACKOFF_MAX)
}

/// `obj`'s WasmPlugin under the mesh scope, and the other valid policies on the same plugin —
/// from every namespace — at the weights their status records: the plugin's config is one
/// document for all of them. Plugins are assigned oldest policy first ([`MeshScope::assign`]), so
/// a newer policy whose plugin would run the filter twice is the one refused; a policy being
/// deleted has given its place up.
pub fn peers(
    all: &[Arc<CanaryPolicy>],
    obj: &CanaryPolicy,
    scope: &MeshScope,
) -> (
    Result<PluginRef, ScopeError>,
    Vec<(ValidatedPolicy, Weights)>,
) {
    let me = (obj.namespace(), obj.name_any());
    let mut live: Vec<(&CanaryPolicy, ValidatedPolicy)> = all
        .iter()
        .map(Arc::as_ref)
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| (p.namespace(), p.name_any()) != me)
        .chain(std::iter::once(obj))
        .filter_map(|p| Some((p, ValidatedPolicy::try_from(p).ok()?)))
        .collect();
    live.sort_by(|a, b| {
        let created = |p: &CanaryPolicy| p.metadata.creation_timestamp.clone();
        (created(a.0), a.1.key()).cmp(&(created(b.0), b.1.key()))
    });
    let refs: Vec<&ValidatedPolicy> = live.iter().map(|(_, v)| v).collect();
    let assigned = scope.assign(&refs);
    let mine = assigned
        .iter()
        .zip(&live)
        .find(|(_, (p, _))| (p.namespace(), p.name_any()) == me)
        .map(|((_, r), _)| r.clone())
        .unwrap_or(Err(ScopeError::NoMeshPlugin));
    let peers = match &mine {
        Err(_) => Vec::new(),
        Ok(plugin) => assigned
            .iter()
            .zip(&live)
            .filter(|((_, r), (p, _))| {
                r.as_ref() == Ok(plugin) && (p.namespace(), p.name_any()) != me
            })
            .map(|(_, (p, v))| {
                let w = p
                    .status
                    .as_ref()
                    .map_or(Weights::ALL_STABLE, |s| s.weights());
                (v.clone(), w)
            })
            .collect(),
    };
    (mine, peers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::AsResource;
    use mlcanary_core::rollout::Hold;

    #[test]
    fn backoff_doubles_and_caps() {
        let d: Vec<u64> = (1..=10).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(d, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300]);
        assert_eq!(backoff_delay(u32::MAX), BACKOFF_MAX);
    }

    #[test]
    fn a_tick_waits_for_its_interval() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let i = Duration::from_secs(30);
        assert_eq!(wait_before_tick(None, t0, i), None, "never ticked: due");
        assert_eq!(
            wait_before_tick(Some(t0), t0 + Duration::from_secs(10), i),
            Some(Duration::from_secs(20))
        );
        assert_eq!(wait_before_tick(Some(t0), t0 + i, i), None);
        // A clock that went backwards waits the full interval rather than ticking at once.
        assert_eq!(wait_before_tick(Some(t0 + i), t0, i), Some(i));
    }

    #[test]
    fn holds_emit_no_event_and_rollbacks_warn() {
        assert!(event_for(&RolloutEvent::Held(Hold::NoConclusiveData)).is_none());
        let e = event_for(&RolloutEvent::RolledBack {
            from_bp: 2500,
            reason: "2 consecutive failed analyses".into(),
        })
        .unwrap();
        assert_eq!(e.type_, EventType::Warning);
        assert_eq!(
            e.note,
            "rolled back from 25.00%: 2 consecutive failed analyses"
        );
    }

    fn tick_output(status: CanaryPolicyStatus) -> TickOutput {
        TickOutput {
            at: SystemTime::UNIX_EPOCH,
            weights: Weights::with_canary_bp(status.canary_weight_bp),
            status,
            events: Vec::new(),
            verdicts: None,
            no_data: None,
            applied: false,
        }
    }

    #[test]
    fn the_written_status_carries_the_columns_of_its_weight_and_step() {
        let policy = CanaryPolicy::test().steps(&[1, 2, 5, 10]).validated();
        let mut obj = CanaryPolicy::test().steps(&[1, 2, 5, 10]).resource();
        // What the object had: the columns of 1 % at step 1.
        obj.status = Some(
            CanaryPolicyStatus {
                phase: Phase::Progressing,
                canary_weight_bp: 100,
                step_index: Some(0),
                ..Default::default()
            }
            .with_columns(Some(4)),
        );
        // The tick moves to the second step, at 250 bp (not a whole percent, to show the decimal);
        // the engine's status still carries the old columns.
        let mut next = obj.status.clone().unwrap();
        next.canary_weight_bp = 250;
        next.step_index = Some(1);
        let u = plan_tick(&obj, &policy, tick_output(next));
        let s = u.status.expect("a change is written");
        assert_eq!(
            (s.canary_weight_percent, s.step.as_deref()),
            (Some(2.5), Some("2/4"))
        );
        let body = status_patch(&s);
        assert_eq!(body["status"]["canaryWeightBp"], 250);
        assert_eq!(body["status"]["canaryWeightPercent"], 2.5);
        assert_eq!(body["status"]["step"], "2/4");
        // Nothing changed since: nothing to write, the columns included.
        obj.status = Some(s.clone());
        obj.metadata.generation = s.observed_generation;
        assert_eq!(plan_tick(&obj, &policy, tick_output(s)).status, None);
        // A status written before the columns existed gets them on the next tick.
        let mut bare = obj.status.clone().unwrap();
        (bare.canary_weight_percent, bare.step) = (None, None);
        obj.status = Some(bare.clone());
        let s = plan_tick(&obj, &policy, tick_output(bare)).status.unwrap();
        assert_eq!(s.canary_weight_percent, Some(2.5));
    }

    const T0: u64 = 1_800_000_000;

    /// A policy at 5 %, step 1, whose ticks [`Holds::tick`] plans and writes back.
    struct Holds {
        obj: CanaryPolicy,
        policy: ValidatedPolicy,
        /// The verdicts every tick reports.
        verdicts: Option<Vec<mlcanary_core::analysis::Verdict>>,
    }

    impl Holds {
        fn new() -> Self {
            let t = CanaryPolicy::test().only_error_rate(0.01).no_pauses();
            let mut obj = t.resource();
            obj.status = Some(CanaryPolicyStatus {
                phase: Phase::Progressing,
                canary_weight_bp: 500,
                step_index: Some(0),
                ..Default::default()
            });
            Holds {
                obj,
                policy: t.validated(),
                verdicts: None,
            }
        }

        /// A tick `secs` after T0 with `events`, its status unchanged.
        fn tick(&mut self, secs: u64, events: Vec<RolloutEvent>) -> Vec<Event> {
            let status = self.obj.status.clone().unwrap();
            self.tick_to(secs, status, events)
        }

        /// A tick `secs` after T0 that stepped to `status` with `events`; the written status goes
        /// to the API and back as JSON (what a restarted controller or a new leader would read).
        /// Returns the Events to send.
        fn tick_to(
            &mut self,
            secs: u64,
            status: CanaryPolicyStatus,
            events: Vec<RolloutEvent>,
        ) -> Vec<Event> {
            let mut out = tick_output(status);
            out.at = SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs);
            out.events = events;
            out.verdicts = self.verdicts.clone();
            let u = plan_tick(&self.obj, &self.policy, out);
            if let Some(s) = u.status {
                let json = status_patch(&s)["status"].clone();
                self.obj.status = Some(serde_json::from_value(json).unwrap());
            }
            u.events
        }

        fn held(&self) -> Option<&str> {
            let s = self.obj.status.as_ref()?;
            s.held.as_ref().map(|h| h.reason.as_str())
        }
    }

    fn hold(h: Hold) -> Vec<RolloutEvent> {
        vec![RolloutEvent::Held(h)]
    }

    fn notes(events: &[Event]) -> Vec<(&str, &str)> {
        events.iter().map(|e| (e.reason, e.note.as_str())).collect()
    }

    #[test]
    fn a_hold_is_announced_when_it_begins_and_then_once_per_period() {
        let mut p = Holds::new();
        let first = p.tick(0, hold(Hold::NoConclusiveData));
        assert_eq!(first.len(), 1, "{first:?}");
        assert_eq!(
            (first[0].type_, first[0].reason),
            (EventType::Normal, "Held")
        );
        assert_eq!(
            first[0].note,
            "held at 5.00%: no conclusive analysis yet (no metrics, or a check below its minimum \
             sample or still inconclusive): no metrics"
        );
        assert_eq!(p.held(), Some("NoConclusiveData"));
        // The same hold one interval later, and just before the period is over: nothing.
        assert_eq!(p.tick(30, hold(Hold::NoConclusiveData)), []);
        assert_eq!(p.tick(570, hold(Hold::NoConclusiveData)), []);
        // Once the period is over: again, saying how long it has lasted.
        let again = p.tick(600, hold(Hold::NoConclusiveData));
        assert_eq!(notes(&again).len(), 1);
        assert!(
            again[0]
                .note
                .starts_with("held at 5.00% for 10m: no conclusive"),
            "{again:?}"
        );
        assert_eq!(p.tick(630, hold(Hold::NoConclusiveData)), []);
        // Another reason: at once, from its own beginning.
        let other = p.tick(660, hold(Hold::TimedPause));
        assert_eq!(
            notes(&other),
            [(
                "Held",
                "held at 5.00%: a timed pause at this step is not over"
            )]
        );
        assert_eq!(p.held(), Some("TimedPause"));
        // A step ends the hold: the next one is announced at once, even with the old reason.
        let stepped = p.tick(
            690,
            vec![RolloutEvent::Advanced {
                from_bp: 500,
                to_bp: 1000,
            }],
        );
        assert_eq!(notes(&stepped), [("Advanced", "advanced 5.00% -> 10.00%")]);
        assert_eq!(p.held(), None);
        assert_eq!(p.tick(720, hold(Hold::TimedPause)).len(), 1);
    }

    #[test]
    fn an_unhealthy_baseline_warns_when_it_begins_and_while_it_lasts() {
        use mlcanary_core::analysis::{Outcome, Verdict};
        let mut p = Holds::new();
        // The core's step with stable breaking the bound too: it holds and says so.
        let unhealthy = [Verdict {
            check: "errors".into(),
            outcome: Outcome::Inconclusive,
            baseline_unhealthy: true,
            ..Default::default()
        }];
        p.verdicts = Some(unhealthy.to_vec());
        let mut step = |secs: u64| {
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs);
            let s = p.obj.status.clone().unwrap();
            let out = mlcanary_core::rollout::step(&s, Some(&unhealthy), &p.policy, now);
            let rollout = out.events.clone();
            (rollout, p.tick_to(secs, out.status, out.events))
        };
        let (rollout, events) = step(0);
        assert_eq!(
            rollout,
            [
                RolloutEvent::BaselineUnhealthy {
                    checks: vec!["errors".into()]
                },
                RolloutEvent::Held(Hold::BaselineUnhealthy)
            ]
        );
        assert_eq!(
            notes(&events),
            [(
                "BaselineUnhealthy",
                "baseline unhealthy: stable breaks errors as well; holding"
            )],
            "published once, not twice"
        );
        assert_eq!(events[0].type_, EventType::Warning);
        // It lasts: the rollout holds every interval without a new event; so does the plan.
        let (rollout, events) = step(30);
        assert_eq!(rollout, hold(Hold::BaselineUnhealthy));
        assert_eq!(events, []);
        assert_eq!(step(570).1, []);
        let reminder = step(600).1;
        assert_eq!(reminder.len(), 1, "{reminder:?}");
        assert_eq!(
            (reminder[0].type_, reminder[0].reason),
            (EventType::Warning, "BaselineUnhealthy")
        );
        assert!(
            reminder[0]
                .note
                .starts_with("held at 5.00% for 10m: baseline unhealthy"),
            "{}",
            reminder[0].note
        );
        assert!(
            reminder[0]
                .note
                .ends_with("(a shared fault, not the canary's): checks: errors"),
            "{}",
            reminder[0].note
        );
    }

    #[test]
    fn a_fixed_spec_starts_over_at_the_weight_in_effect() {
        let mut p = CanaryPolicy::test().resource();
        p.status = Some(CanaryPolicyStatus {
            phase: Phase::Failed,
            canary_weight_bp: 500,
            step_index: Some(0),
            failed_checks: 1,
            ..Default::default()
        });
        let s = starting_status(&p);
        assert_eq!(
            (s.phase, s.canary_weight_bp, s.step_index, s.failed_checks),
            (Phase::Pending, 500, None, 0)
        );
    }

    /// On the mesh plugin, every namespace's policies share one config; a policy asking for a
    /// plugin of its own next to it is refused and shares nothing.
    #[test]
    fn peers_share_the_mesh_plugin_across_namespaces() {
        let me = CanaryPolicy::test().resource();
        let mut same_plugin = me.clone();
        same_plugin.metadata.name = Some("other".into());
        same_plugin.spec.target.model = Some("other-model".into());
        same_plugin.status = Some(CanaryPolicyStatus {
            canary_weight_bp: 2500,
            ..Default::default()
        });
        let mut other_ns = same_plugin.clone();
        other_ns.metadata.namespace = Some("elsewhere".into());
        let mut other_plugin = same_plugin.clone();
        other_plugin.metadata.name = Some("third".into());
        other_plugin.spec.target.wasm_plugin = Some("another".into());
        let all: Vec<Arc<CanaryPolicy>> = [me.clone(), same_plugin, other_ns, other_plugin]
            .into_iter()
            .map(Arc::new)
            .collect();
        let scope = MeshScope::default();
        let (plugin, peers_of_me) = peers(&all, &me, &scope);
        assert_eq!(plugin.unwrap().to_string(), "istio-system/mlcanary");
        let mut got: Vec<(String, u32)> = peers_of_me
            .into_iter()
            .map(|(v, w)| (v.key().to_string(), w.canary_bp()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                ("elsewhere/other".to_owned(), 2500),
                ("ml/other".to_owned(), 2500)
            ]
        );
        let (refused, none) = peers(&all, &all[3], &scope);
        assert!(
            matches!(refused, Err(ScopeError::Twice { .. })),
            "{refused:?}"
        );
        assert!(none.is_empty());
        // Deleting gives the place up: the remaining policies no longer count it.
        let mut going = me.clone();
        going.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Default::default()),
        );
        let all: Vec<Arc<CanaryPolicy>> = vec![Arc::new(going), all[1].clone()];
        assert!(peers(&all, &all[1], &scope).1.is_empty());
    }
}
