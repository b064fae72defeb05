//! Gates a webhook refused, as pure transitions. The engine runs [`super::step`] first; when that
//! step would start the rollout (a `preRollout` gate) or promote it (a `confirmPromotion` gate) and
//! a gate webhook does not answer 2xx, the step is replaced by [`refuse`]:
//!
//! - **preRollout** refused: nothing moves — the phase stays `Pending` at the weight it had (0 for
//!   a new rollout), the refusal counts as a failed analysis, and at `failureThreshold` refusals
//!   the rollout is rolled back without any traffic having reached the canary;
//! - **confirmPromotion** refused: the rollout holds where the step would have promoted, as at the
//!   manual gate (analyses keep running and can still roll back); the condition names the hook.

use std::time::SystemTime;

use super::{step, Hold, Next, RolloutEvent, StepOutput};
use crate::analysis::Verdict;
use crate::policy::validated::HookKind;
use crate::policy::{CanaryPolicyStatus, Phase, ValidatedPolicy};

/// A gate that must open before the rollout goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookGate {
    /// Before the first step (or the shadow phase, which comes before it).
    PreRollout,
    /// Before promotion.
    ConfirmPromotion,
}

impl WebhookGate {
    /// The gate the step `out` (computed from a status) must pass, if any.
    pub fn needed_by(out: &StepOutput) -> Option<WebhookGate> {
        out.events.iter().find_map(|e| match e {
            // Before the shadow too: mirroring adds load before any live traffic moves.
            RolloutEvent::ShadowStarted { .. } | RolloutEvent::Started { .. } => {
                Some(WebhookGate::PreRollout)
            }
            RolloutEvent::Promoted { .. } => Some(WebhookGate::ConfirmPromotion),
            _ => None,
        })
    }

    /// The webhooks that decide this gate.
    pub fn hook_kind(self) -> HookKind {
        match self {
            WebhookGate::PreRollout => HookKind::PreRollout,
            WebhookGate::ConfirmPromotion => HookKind::ConfirmPromotion,
        }
    }
}

/// The step that replaces one whose `gate` the webhook `hook` refused with `reason`.
pub fn refuse(
    status: &CanaryPolicyStatus,
    verdicts: Option<&[Verdict]>,
    policy: &ValidatedPolicy,
    now: SystemTime,
    gate: WebhookGate,
    hook: &str,
    reason: &str,
) -> StepOutput {
    match gate {
        WebhookGate::PreRollout => {
            let mut n = Next::new(status, now);
            n.s.failed_checks += 1;
            let checks = vec![format!("webhook {hook}")];
            n.events.push(RolloutEvent::AnalysisFailed {
                consecutive: n.s.failed_checks,
                threshold: policy.failure_threshold,
                checks,
            });
            if n.s.failed_checks >= policy.failure_threshold {
                n.roll_back(format!(
                    "preRollout webhook {hook} refused {} times (failureThreshold {}): {reason}",
                    n.s.failed_checks, policy.failure_threshold
                ));
            } else {
                n.phase(
                    Phase::Pending,
                    "PreRolloutWebhookFailed",
                    format!("preRollout webhook {hook}: {reason}"),
                );
                n.events.push(RolloutEvent::Held(Hold::Webhook));
            }
            n.done()
        }
        WebhookGate::ConfirmPromotion => {
            // The same interval, with the promotion held as at a manual gate.
            let mut gated = policy.clone();
            gated.manual_gate = true;
            let out = step(status, verdicts, &gated, now);
            let mut n = Next::new(&out.status, now);
            n.events = out
                .events
                .into_iter()
                .map(|e| match e {
                    RolloutEvent::Held(Hold::ManualGate) => RolloutEvent::Held(Hold::Webhook),
                    e => e,
                })
                .collect();
            if n.events.contains(&RolloutEvent::Held(Hold::Webhook)) {
                n.phase(
                    Phase::Progressing,
                    "AwaitingPromotion",
                    format!("confirmPromotion webhook {hook}: {reason}"),
                );
            }
            n.done()
        }
    }
}
