//! Webhooks (`spec.webhooks`), as Flagger has them: a POST of a JSON [`payload`] to each hook's URL.
//!
//! - gates — `preRollout` (before the first step: nothing moves until every one answers 2xx) and
//!   `confirmPromotion` (before promotion: the rollout holds until every one answers 2xx); what a
//!   refusal does to the rollout is [`crate::rollout::webhook_gates`];
//! - notifications — `step` (after each weight change, including steps back), `rollback` (after a
//!   rollback) and `event` (after every rollout event but holds); a failing notification is logged
//!   and changes nothing.
//!
//! Pure: which hooks a step calls ([`notifications`], [`WebhookGate::hook_kind`]) and what they are sent
//! ([`payload`], its `event` and `message` from [`crate::events`]). The sender is the controller's.

use serde_json::{json, Value};

use crate::events::describe;
use crate::policy::validated::{HookKind, Webhook};
use crate::policy::{CanaryPolicyStatus, ValidatedPolicy, VerdictStatus};
#[cfg(doc)]
use crate::rollout::webhook_gates::WebhookGate;
use crate::rollout::RolloutEvent;

/// Which notification hooks fire for one tick's events, in order, each with the event that fired
/// it. `step` on every weight change, `rollback` on a rollback, `event` on every event but holds.
pub fn notifications<'a>(
    policy: &'a ValidatedPolicy,
    events: &'a [RolloutEvent],
) -> Vec<(&'a Webhook, &'a RolloutEvent)> {
    let mut out = Vec::new();
    for e in events {
        for h in &policy.webhooks {
            let fires = match h.kind {
                HookKind::Step => {
                    matches!(
                        e,
                        RolloutEvent::Started { .. } | RolloutEvent::Advanced { .. }
                    )
                }
                HookKind::Rollback => matches!(e, RolloutEvent::RolledBack { .. }),
                HookKind::Event => !matches!(e, RolloutEvent::Held(_)),
                HookKind::PreRollout | HookKind::ConfirmPromotion => false,
            };
            if fires {
                out.push((h, e));
            }
        }
    }
    out
}

/// The JSON body of a call: `{name, namespace, type, phase, canaryWeightBp, stepIndex, stepsBp,
/// canaryVersion, event, message, verdicts}`. For a gate, `phase` / weight are the status before
/// the gated step and `event` is the step the gate would allow (`Started` / `Promoted`).
pub fn payload(
    policy: &ValidatedPolicy,
    kind: HookKind,
    status: &CanaryPolicyStatus,
    event: Option<&RolloutEvent>,
    verdicts: &[VerdictStatus],
) -> Value {
    let described = event.map(describe);
    json!({
        "name": policy.name,
        "namespace": policy.namespace_or_default(),
        "type": kind.as_str(),
        "phase": status.phase,
        "canaryWeightBp": status.canary_weight_bp,
        "stepIndex": status.step_index,
        "stepsBp": policy.steps_bp,
        "canaryVersion": status.canary_version.as_deref().or(policy.canary_version.as_deref()),
        "event": described.as_ref().map(|d| d.kind.reason()),
        "message": described.as_ref().map_or("", |d| d.message.as_str()),
        "verdicts": verdicts,
    })
}

#[cfg(test)]
mod tests;
