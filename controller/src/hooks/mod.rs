//! The engine's webhook adapter: gates called before the traffic is written, notifications after.
//! Which hooks a step calls and what they are sent is [`mlcanary_core::webhooks`]; the
//! HTTP sender is [`send::Sender`] (per attempt a timeout, then `retries` more attempts with
//! exponential backoff).

pub mod send;

use std::time::SystemTime;

use mlcanary_core::analysis::Verdict;
use mlcanary_core::policy::validated::Webhook;
use mlcanary_core::policy::{CanaryPolicyStatus, ValidatedPolicy, VerdictStatus};
use mlcanary_core::rollout::gates::{refuse, Gate};
use mlcanary_core::rollout::{RolloutEvent, StepOutput};
use mlcanary_core::webhooks::{notifications, payload};
pub use send::{HookError, Sender};

/// The engine's webhook adapter: an HTTP client made on first use (policies without webhooks
/// never build one).
#[derive(Debug, Default)]
pub struct Hooks {
    sender: Option<Sender>,
}

impl Hooks {
    fn sender(&mut self) -> Result<&Sender, HookError> {
        if self.sender.is_none() {
            self.sender = Some(Sender::new()?);
        }
        self.sender
            .as_ref()
            .ok_or(HookError::Client("no client".into()))
    }

    /// If `out` needs a gate, call its hooks in order; the first refusal replaces `out` by the
    /// refused step ([`refuse`]).
    pub async fn gate(
        &mut self,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        verdicts: Option<&[Verdict]>,
        out: StepOutput,
        now: SystemTime,
    ) -> StepOutput {
        let Some(gate) = Gate::needed_by(&out) else {
            return out;
        };
        let kind = gate.hook_kind();
        let hooks: Vec<&Webhook> = policy.webhooks.iter().filter(|h| h.kind == kind).collect();
        if hooks.is_empty() {
            return out;
        }
        let trigger = out
            .events
            .iter()
            .find(|e| {
                matches!(
                    e,
                    RolloutEvent::Started { .. } | RolloutEvent::Promoted { .. }
                )
            })
            .cloned();
        let shown: Vec<VerdictStatus> = verdicts
            .unwrap_or_default()
            .iter()
            .map(Into::into)
            .collect();
        for h in hooks {
            let body = payload(policy, kind, status, trigger.as_ref(), &shown);
            let result = match self.sender() {
                Ok(s) => s.call(h, &body).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(policy = %policy.name, hook = %h.name, error = %e, "gate webhook refused");
                return refuse(status, verdicts, policy, now, gate, &h.name, &e.to_string());
            }
        }
        out
    }

    /// Call the notification hooks for a step that is now in effect. Failures are logged.
    pub async fn notify(
        &mut self,
        policy: &ValidatedPolicy,
        out: &StepOutput,
        verdicts: Option<&[Verdict]>,
    ) {
        let fired = notifications(policy, &out.events);
        if fired.is_empty() {
            return;
        }
        let shown: Vec<VerdictStatus> = verdicts
            .unwrap_or_default()
            .iter()
            .map(Into::into)
            .collect();
        for (h, e) in fired {
            let body = payload(policy, h.kind, &out.status, Some(e), &shown);
            let result = match self.sender() {
                Ok(s) => s.call(h, &body).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                tracing::warn!(policy = %policy.name, hook = %h.name, error = %e, "webhook failed");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
