//! Operator commands on the cluster: `mlcanary promote|abort|pause|resume POLICY` writes two
//! annotations on the CanaryPolicy,
//!
//! ```yaml
//! metadata:
//!   annotations:
//!     mlcanary.io/command: promote
//!     mlcanary.io/command-id: 18a3c2f0e1b2-4f2a   # new for every command
//! ```
//!
//! and the reconciler applies it through the engine ([`crate::engine::Engine::command`]) **once
//! per command id**: the id it handled goes into `status.lastCommandId`, so the annotation can stay
//! on the object (a relist, a restart or a later reconcile see the same id and do nothing). An annotation change is a watch event, so the
//! command runs at once, without waiting for the analysis interval, and it runs no analysis.
//!
//! Annotations rather than a status write by the CLI or a subresource: the user's RBAC needs only
//! `patch` on `canarypolicies`, the controller stays the only writer of the status, and the command
//! is visible in `kubectl get -o yaml`.

use std::sync::Arc;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::plan::{event_for, peers, starting_status, status_to_write, Event, EventType, Update};
use super::{publish, Context, Error};
use crate::engine::{CommandError, TickInput, TickOutput};
use crate::policy::{CanaryPolicy, ValidatedPolicy};
use crate::traffic::TrafficTarget;
use mlcanary_core::rollout::{Command, NotApplicable};
use mlcanary_core::weights::Weights;

/// The command: `promote`, `abort`, `pause` or `resume`.
pub const COMMAND_ANNOTATION: &str = "mlcanary.io/command";
/// A fresh id per command; a command is applied when this differs from `status.lastCommandId`.
pub const COMMAND_ID_ANNOTATION: &str = "mlcanary.io/command-id";
/// With `start`: the new canary (a version label or image).
pub const COMMAND_CANARY_ANNOTATION: &str = "mlcanary.io/command-canary";

/// The JSON merge patch the CLI sends to `.../canarypolicies/{name}`. A `start` also sets its
/// canary; any other command clears a previous `start`'s.
pub fn annotation_patch(cmd: &Command, id: &str) -> Value {
    let canary = match cmd {
        Command::Start { canary } => Value::from(canary.as_str()),
        _ => Value::Null,
    };
    json!({
        "metadata": {
            "annotations": {
                COMMAND_ANNOTATION: cmd.name(),
                COMMAND_ID_ANNOTATION: id,
                COMMAND_CANARY_ANNOTATION: canary,
            }
        }
    })
}

/// A command on the object that has not been handled yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub id: String,
    /// The command, or the annotation's text when it names none.
    pub command: Result<Command, String>,
}

/// The object's command if its id is new (not `status.lastCommandId`).
pub fn pending(obj: &CanaryPolicy) -> Option<Pending> {
    let annotations = obj.metadata.annotations.as_ref()?;
    let id = annotations.get(COMMAND_ID_ANNOTATION)?.trim();
    let last = obj
        .status
        .as_ref()
        .and_then(|s| s.last_command_id.as_deref());
    if id.is_empty() || last == Some(id) {
        return None;
    }
    let raw = annotations
        .get(COMMAND_ANNOTATION)
        .map(String::as_str)
        .unwrap_or_default();
    let canary = annotations
        .get(COMMAND_CANARY_ANNOTATION)
        .map(String::as_str);
    Some(Pending {
        id: id.to_owned(),
        command: Command::parse(raw, canary).ok_or_else(|| raw.to_owned()),
    })
}

/// What became of a pending command.
#[derive(Debug)]
pub enum Handled {
    /// The engine applied it (its split is written).
    Applied(Box<TickOutput>),
    /// It does not apply in the rollout's phase.
    NotApplicable(NotApplicable),
    /// The annotation names no command (its text).
    Unknown(String),
}

/// The update for a handled command, as a value: the new status (or the old one) with the id
/// recorded, the rollout's Events, or one saying why the command was ignored.
pub fn plan_command(
    obj: &CanaryPolicy,
    policy: &ValidatedPolicy,
    pending: &Pending,
    handled: &Handled,
) -> Update {
    let (mut next, rollout_events, extra) = match handled {
        Handled::Applied(out) => (out.status.clone(), out.events.clone(), None),
        Handled::NotApplicable(e) => (
            starting_status(obj),
            Vec::new(),
            Some(Event {
                type_: EventType::Normal,
                reason: "CommandIgnored",
                action: "Command",
                note: format!("{e} (id {})", pending.id),
            }),
        ),
        Handled::Unknown(raw) => (
            starting_status(obj),
            Vec::new(),
            Some(Event {
                type_: EventType::Warning,
                reason: "UnknownCommand",
                action: "Command",
                note: format!(
                    "{COMMAND_ANNOTATION}: {raw:?} (id {}) is not one of promote, abort, pause, \
                     resume, start (with {COMMAND_CANARY_ANNOTATION})",
                    pending.id
                ),
            }),
        ),
    };
    next.last_command_id = Some(pending.id.clone());
    next.observed_generation = obj.metadata.generation.or(next.observed_generation);
    let mut events: Vec<Event> = rollout_events.iter().filter_map(event_for).collect();
    events.extend(extra);
    let old = obj.status.clone().unwrap_or_default();
    Update {
        status: status_to_write(&old, next, Some(policy.steps_bp.len())),
        events,
        rollout: rollout_events,
        requeue: std::time::Duration::ZERO,
    }
}

/// Apply the object's pending command, if any, through the policy's engine (which writes the new
/// split first: the status must never claim a split that is not in effect), then write the status
/// with `lastCommandId` and the Events. `None` when there is no new command.
pub async fn handle<M, T>(
    obj: &CanaryPolicy,
    policy: &ValidatedPolicy,
    ctx: &Arc<Context<M, T>>,
    api: &Api<CanaryPolicy>,
) -> Result<Option<Action>, Error>
where
    T: TrafficTarget,
{
    let Some(pending) = pending(obj) else {
        return Ok(None);
    };
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    tracing::info!(%namespace, policy = %name, id = %pending.id, command = ?pending.command, "operator command");
    let status = starting_status(obj);
    let (_, peers) = peers(&ctx.store.state(), obj, &ctx.scope);
    let peer_refs: Vec<(&ValidatedPolicy, Weights)> = peers.iter().map(|(p, w)| (p, *w)).collect();
    let handled = match &pending.command {
        Ok(cmd) => {
            let input = TickInput {
                policy,
                status: &status,
                peers: &peer_refs,
            };
            let engine = ctx.engine(&ObjectRef::from_obj(obj));
            let mut engine = engine.lock().await;
            match engine.command(input, cmd.clone(), &ctx.target).await {
                Ok(out) => Handled::Applied(Box::new(out)),
                Err(CommandError::NotApplicable(e)) => Handled::NotApplicable(e),
                Err(CommandError::Engine(e)) => return Err(e.into()),
            }
        }
        Err(raw) => Handled::Unknown(raw.clone()),
    };
    let mut update = plan_command(obj, policy, &pending, &handled);
    update.requeue = policy.interval;
    publish(api, ctx, obj, &update).await?;
    if let Handled::Applied(out) = &handled {
        ctx.recorder().record(&namespace, policy, out);
    }
    Ok(Some(Action::requeue(update.requeue)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::AsResource;
    use crate::policy::CanaryPolicyStatus;
    use crate::policy::Phase;
    use mlcanary_core::rollout::{self, applicable};
    use std::collections::BTreeMap;
    use std::time::SystemTime;

    fn with_command(cmd: &str, id: &str, status: CanaryPolicyStatus) -> CanaryPolicy {
        let mut p = CanaryPolicy::test().resource();
        p.metadata.annotations = Some(BTreeMap::from([
            (COMMAND_ANNOTATION.to_owned(), cmd.to_owned()),
            (COMMAND_ID_ANNOTATION.to_owned(), id.to_owned()),
        ]));
        p.status = Some(status);
        p
    }

    fn progressing() -> CanaryPolicyStatus {
        CanaryPolicyStatus {
            phase: Phase::Progressing,
            canary_weight_bp: 1000,
            step_index: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn a_command_is_pending_until_its_id_is_recorded() {
        let p = with_command("pause", "c-1", progressing());
        assert_eq!(
            pending(&p),
            Some(Pending {
                id: "c-1".into(),
                command: Ok(Command::Pause)
            })
        );
        let mut done = progressing();
        done.last_command_id = Some("c-1".into());
        assert_eq!(pending(&with_command("pause", "c-1", done)), None);
        assert_eq!(pending(&with_command("pause", " ", progressing())), None);
        assert_eq!(
            pending(&CanaryPolicy::test().resource()),
            None,
            "no annotations"
        );
    }

    /// What the engine would have done with `p`'s command.
    fn handled(p: &CanaryPolicy) -> Handled {
        let cmd = pending(p).unwrap().command.unwrap();
        match rollout::command(&starting_status(p), cmd, SystemTime::UNIX_EPOCH) {
            Ok(step) => Handled::Applied(Box::new(TickOutput {
                at: SystemTime::UNIX_EPOCH,
                status: step.status,
                weights: step.weights,
                events: step.events,
                verdicts: None,
                no_data: None,
                applied: true,
            })),
            Err(e) => Handled::NotApplicable(e),
        }
    }

    #[test]
    fn abort_rolls_back_and_records_the_id() {
        let p = with_command("abort", "c-2", progressing());
        let u = plan_command(
            &p,
            &ValidatedPolicy::try_from(&p).unwrap(),
            &pending(&p).unwrap(),
            &handled(&p),
        );
        let s = u.status.unwrap();
        assert_eq!(
            (s.phase, s.canary_weight_bp, s.last_command_id.as_deref()),
            (Phase::RolledBack, 0, Some("c-2"))
        );
        assert_eq!(u.events[0].reason, "RolledBack");
    }

    #[test]
    fn ignored_and_unknown_commands_are_recorded_with_an_event() {
        let mut s = progressing();
        s.phase = Phase::Promoted;
        let p = with_command("pause", "c-3", s);
        let u = plan_command(
            &p,
            &ValidatedPolicy::try_from(&p).unwrap(),
            &pending(&p).unwrap(),
            &handled(&p),
        );
        assert_eq!(u.status.unwrap().last_command_id.as_deref(), Some("c-3"));
        assert_eq!(u.events.len(), 1);
        assert_eq!(u.events[0].reason, "CommandIgnored");
        assert!(
            u.events[0].note.contains("Promoted (finished)"),
            "{:?}",
            u.events[0]
        );

        let p = with_command("promte", "c-4", progressing());
        let u = plan_command(
            &p,
            &ValidatedPolicy::try_from(&p).unwrap(),
            &pending(&p).unwrap(),
            &Handled::Unknown("promte".into()),
        );
        assert_eq!(u.events[0].type_, EventType::Warning);
        assert_eq!(u.events[0].reason, "UnknownCommand");
        let s = u.status.unwrap();
        assert_eq!(s.canary_weight_bp, 1000, "the split is untouched");
        assert_eq!(s.last_command_id.as_deref(), Some("c-4"));
    }

    #[test]
    fn applicability_mirrors_the_state_machine() {
        use Command::*;
        for (phase, cmd, ok) in [
            (Phase::Progressing, Promote, true),
            (Phase::Progressing, Pause, true),
            (Phase::Progressing, Resume, false),
            (Phase::Paused, Resume, true),
            (Phase::Paused, Pause, false),
            (Phase::Pending, Abort, true),
            (Phase::Promoted, Abort, false),
            (Phase::RolledBack, Promote, false),
        ] {
            assert_eq!(applicable(phase, &cmd).is_ok(), ok, "{phase:?} {cmd:?}");
            // What applies changes the rollout: it has an event.
            let s = CanaryPolicyStatus {
                phase,
                step_index: Some(0),
                canary_weight_bp: 500,
                ..Default::default()
            };
            let out = rollout::command(&s, cmd.clone(), SystemTime::UNIX_EPOCH);
            assert_eq!(
                out.map(|o| !o.events.is_empty()).unwrap_or(false),
                ok,
                "{phase:?} {cmd:?}"
            );
        }
        for c in [Promote, Abort, Pause, Resume] {
            assert_eq!(Command::parse(c.name(), None), Some(c));
        }
        let start = Start {
            canary: "v8".into(),
        };
        assert_eq!(Command::parse("start", Some("v8")), Some(start.clone()));
        assert_eq!(
            Command::parse("start", None),
            None,
            "start needs its canary"
        );
        assert!(applicable(Phase::Promoted, &start).is_ok());
        let annotations = |c: &Command| annotation_patch(c, "i")["metadata"]["annotations"].clone();
        assert_eq!(annotations(&start)[COMMAND_CANARY_ANNOTATION], "v8");
        assert!(annotations(&Pause)[COMMAND_CANARY_ANNOTATION].is_null());
    }
}
