//! One analysis interval of one policy, the same for the kube loop and the local loop: fetch the
//! window, judge it, step the rollout, write the split if it changed — and an operator's command
//! ([`Engine::command`]), written the same way. The loops only decide *when* to tick and where the
//! status goes; everything a rollout does happens here, on the engine's [`Clock`], with its
//! [`WebhookSender`].
//!
//! Rules kept in this one place:
//! - a metrics error is **no data**: `None` verdicts go to [`rollout::step`], which holds (never
//!   promotes, and rolls back only at the progress deadline) — an unreachable Prometheus must never
//!   look like a failing canary;
//! - the desired traffic is written only when it differs from what this engine last wrote for the
//!   policy (so the first tick after a start always writes, and a failed write is retried next tick);
//! - when the write fails the new status is **not** returned: the status must never claim a split
//!   that is not in effect. The caller keeps the old status and ticks again;
//! - every interval's window is added to the rollout's evidence (summed per canary weight, kept
//!   across steps) and the judge looks at all of it: its tests are anytime-valid, so looking every
//!   interval does not inflate their error rates, and low traffic delays a verdict but never
//!   prevents one;
//! - everything carried from one tick to the next — where the next window starts and the
//!   evidence — lives in the status ([`mlcanary_core::window::Evidence`]), not in the engine: a
//!   restarted, `--once` or newly elected controller judges exactly as one that never stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use mlcanary_filter::ConfigError;
use thiserror::Error;

use crate::hooks::{Hooks, WebhookSender};
use crate::metrics::{MetricsError, MetricsSource};
use crate::policy::{CanaryPolicyStatus, ValidatedPolicy};
use crate::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::analysis::{evaluate, Observations, Verdict};
use mlcanary_core::render::desired_traffic;
use mlcanary_core::rollout::{self, Command, NotApplicable, RolloutEvent};
use mlcanary_core::weights::Weights;
use mlcanary_core::window::{Evidence, Window};

/// Why a tick wrote nothing and changed no status.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The filter would refuse the combined config (e.g. two policies claim the same host and model).
    #[error("policy {policy}: the filter config would be refused: {source}")]
    Render { policy: String, source: ConfigError },
    #[error("policy {policy}: writing the traffic split failed: {source}")]
    Apply {
        policy: String,
        source: TrafficError,
    },
}

/// The engine's time, given to it like its adapters: neither loop reads the system clock itself,
/// and tests fix every time written into a status.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(SystemTime::now)
}

/// What one tick or command needs to know besides the I/O adapters.
#[derive(Debug, Clone, Copy)]
pub struct TickInput<'a> {
    pub policy: &'a ValidatedPolicy,
    pub status: &'a CanaryPolicyStatus,
    /// The other policies sharing this policy's WasmPlugin (or, locally, the same Envoy), at their
    /// current weights: the filter config is one document for all of them. An entry named like
    /// `policy` is ignored.
    pub peers: &'a [(&'a ValidatedPolicy, Weights)],
}

/// What one tick or command did.
#[derive(Debug)]
pub struct TickOutput {
    /// The engine's clock when it ran (the time in the status and the history).
    pub at: SystemTime,
    pub status: CanaryPolicyStatus,
    pub weights: Weights,
    pub events: Vec<RolloutEvent>,
    /// This interval's verdicts; `None` when there was no data (or the phase needs none, or it
    /// was a command).
    pub verdicts: Option<Vec<Verdict>>,
    /// Why there was no data, when the source failed.
    pub no_data: Option<MetricsError>,
    /// The target was written.
    pub applied: bool,
}

/// Why an operator command changed nothing.
#[derive(Debug, Error)]
pub enum CommandError {
    /// It does not apply in the rollout's phase (the HTTP API answers 409, kube records an Event).
    #[error(transparent)]
    NotApplicable(#[from] NotApplicable),
    /// Its split could not be written: the status stays as it was.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Steps policies and writes their traffic. Remembers what it last wrote per policy, so unchanged
/// splits are not rewritten; every write of a policy's traffic — tick or command — goes through it.
pub struct Engine {
    applied: HashMap<String, DesiredTraffic>,
    /// `spec.webhooks`: gates before the write, notifications after (see [`crate::hooks`]).
    hooks: Hooks,
    clock: Clock,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("applied", &self.applied.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(clock: Clock, webhooks: Arc<dyn WebhookSender>) -> Self {
        Engine {
            applied: HashMap::new(),
            hooks: Hooks::new(webhooks),
            clock,
        }
    }

    /// The engine's clock, for the loops' own times (progress lines, schedules).
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// Write `desired` unless it is what was last written for its policy; `true` when written.
    async fn write<T: TrafficTarget>(
        &mut self,
        desired: DesiredTraffic,
        target: &T,
    ) -> Result<bool, EngineError> {
        if self.applied.get(&desired.policy) == Some(&desired) {
            return Ok(false);
        }
        target
            .apply(&desired)
            .await
            .map_err(|source| EngineError::Apply {
                policy: desired.policy.clone(),
                source,
            })?;
        self.applied.insert(desired.policy.clone(), desired);
        Ok(true)
    }

    /// An operator's command on `input.policy`, at once and without an analysis: refused when
    /// it does not apply ([`rollout::applicable`]), else its split is written first — the status
    /// must never claim a split that is not in effect — and the new status returned.
    pub async fn command<T: TrafficTarget>(
        &mut self,
        input: TickInput<'_>,
        cmd: Command,
        target: &T,
    ) -> Result<TickOutput, CommandError> {
        let now = self.now();
        let step = rollout::command(input.status, cmd, now)?;
        let desired = render(input.policy, step.weights, input.peers)?;
        let applied = self.write(desired, target).await?;
        let mut status = step.status;
        // As after a tick: an ended rollout carries no evidence.
        if status.phase.is_terminal() {
            status.evidence = None;
        }
        Ok(TickOutput {
            at: now,
            status,
            weights: step.weights,
            events: step.events,
            verdicts: None,
            no_data: None,
            applied,
        })
    }

    /// One analysis interval of `input.policy`.
    pub async fn tick<S, T>(
        &mut self,
        input: TickInput<'_>,
        source: &mut S,
        target: &T,
    ) -> Result<TickOutput, EngineError>
    where
        S: MetricsSource,
        T: TrafficTarget,
    {
        let policy = input.policy;
        let now = self.now();
        let mut evidence = input.status.evidence.clone().unwrap_or_default();
        // Terminal phases need no window; Pending reads anyway so the first step's window has its
        // start mark.
        let (verdicts, no_data) = if input.status.phase.is_terminal() {
            (None, None)
        } else {
            match source.fetch(policy, evidence.mark.as_ref(), now).await {
                Ok(reading) => {
                    evidence.mark = Some(reading.mark);
                    match reading.window {
                        Some(window) => {
                            let weight = input.status.canary_weight_bp;
                            (Some(judge(policy, weight, &mut evidence, &window)), None)
                        }
                        None => {
                            let e = MetricsError::NoBaseline {
                                policy: policy.name.clone(),
                            };
                            (None, Some(e))
                        }
                    }
                }
                // The mark stays: the next window covers this interval too.
                Err(e) => (None, Some(e)),
            }
        };
        let mut step = rollout::step(input.status, verdicts.as_deref(), policy, now);
        if !policy.webhooks.is_empty() {
            step = (self.hooks)
                .gate(policy, input.status, verdicts.as_deref(), step, now)
                .await;
        }
        let desired = render(policy, step.weights, input.peers)?;
        let applied = self.write(desired, target).await?;
        if !policy.webhooks.is_empty() {
            self.hooks.notify(policy, &step, verdicts.as_deref()).await;
        }
        let mut status = step.status;
        // The evidence runs over the whole rollout; an ended one carries nothing.
        status.evidence = (!status.phase.is_terminal() && !evidence.is_empty()).then_some(evidence);
        Ok(TickOutput {
            at: now,
            status,
            weights: step.weights,
            events: step.events,
            verdicts,
            no_data,
            applied,
        })
    }
}

/// The core's rendering ([`desired_traffic`]), its refusal named by policy.
pub fn render(
    policy: &ValidatedPolicy,
    weights: Weights,
    peers: &[(&ValidatedPolicy, Weights)],
) -> Result<DesiredTraffic, EngineError> {
    desired_traffic(policy, weights, peers).map_err(|source| EngineError::Render {
        policy: policy.name.clone(),
        source,
    })
}

/// Add this interval's `window` (gathered at `weight_bp`) to the rollout's evidence and judge
/// all of it.
fn judge(
    policy: &ValidatedPolicy,
    weight_bp: u32,
    evidence: &mut Evidence,
    window: &Window,
) -> Vec<Verdict> {
    evidence.record(weight_bp, window);
    evaluate(
        policy,
        &Observations {
            evidence,
            weight_bp,
            latest: window,
        },
    )
}

#[cfg(test)]
mod fakes;
#[cfg(test)]
mod hooks_tests;
#[cfg(test)]
mod once_tests;
#[cfg(test)]
mod tests;
