//! The engine's webhook adapter: webhook gates called before the traffic is written,
//! notifications after.
//! Which hooks a step calls and what they are sent is [`mlcanary_core::webhooks`]; calls go
//! through a [`WebhookSender`], in production [`HttpSender`] over [`send::Sender`] (per attempt a
//! timeout, then `retries` more attempts with exponential backoff).

pub mod send;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde_json::Value;

use mlcanary_core::analysis::Verdict;
use mlcanary_core::policy::validated::Webhook;
use mlcanary_core::policy::{CanaryPolicyStatus, ValidatedPolicy, VerdictStatus};
use mlcanary_core::rollout::webhook_gates::{refuse, WebhookGate};
use mlcanary_core::rollout::{RolloutEvent, StepOutput};
use mlcanary_core::webhooks::{notifications, payload};
pub use send::{HookError, Sender};

/// Where webhook calls go: behind a trait so the engine is given one, as it is given its metrics
/// source and traffic target (tests give a fake that records the calls).
pub trait WebhookSender: Send + Sync {
    /// POST `body` to `hook` (with its timeout and retries); `Ok` on a 2xx answer.
    fn send<'a>(
        &'a self,
        hook: &'a Webhook,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<(), HookError>>;
}

/// The HTTP sender, its client made on first use (policies without webhooks never build one).
#[derive(Debug, Default)]
pub struct HttpSender {
    client: OnceLock<Result<Sender, String>>,
}

impl WebhookSender for HttpSender {
    fn send<'a>(
        &'a self,
        hook: &'a Webhook,
        body: &'a Value,
    ) -> BoxFuture<'a, Result<(), HookError>> {
        Box::pin(async move {
            match self
                .client
                .get_or_init(|| Sender::new().map_err(|e| e.to_string()))
            {
                Ok(s) => s.call(hook, body).await,
                Err(e) => Err(HookError::Client(e.clone())),
            }
        })
    }
}

/// The engine's webhook adapter: gates before the write, notifications after.
#[derive(Clone)]
pub struct Hooks {
    sender: Arc<dyn WebhookSender>,
}

impl Hooks {
    pub fn new(sender: Arc<dyn WebhookSender>) -> Self {
        Hooks { sender }
    }

    /// If `out` needs a gate, call its hooks in order; the first refusal replaces `out` by the
    /// refused step ([`refuse`]).
    pub async fn gate(
        &self,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        verdicts: Option<&[Verdict]>,
        out: StepOutput,
        now: SystemTime,
    ) -> StepOutput {
        let Some(gate) = WebhookGate::needed_by(&out) else {
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
            let result = self.sender.send(h, &body).await;
            if let Err(e) = result {
                tracing::warn!(policy = %policy.name, hook = %h.name, error = %e, "gate webhook refused");
                return refuse(status, verdicts, policy, now, gate, &h.name, &e.to_string());
            }
        }
        out
    }

    /// Call the notification hooks for a step that is now in effect. Failures are logged.
    pub async fn notify(
        &self,
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
            let result = self.sender.send(h, &body).await;
            if let Err(e) = result {
                tracing::warn!(policy = %policy.name, hook = %h.name, error = %e, "webhook failed");
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests;
