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
//! - the desired traffic is written only when the policy's routes or its plugin's config differ from
//!   what was last written ([`Written`], shared by every engine writing to the same targets): a
//!   config shared by a hundred policies is rewritten when it changes, not once per policy per
//!   interval. Nothing is known written at start (so the first tick writes, unless the loop wrote
//!   everything itself and said so, [`Engine::assume_written`]), and a failed write is retried
//!   next tick;
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
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use mlcanary_filter::ConfigError;
use thiserror::Error;

use crate::hooks::{Hooks, WebhookSender};
use crate::metrics::{MetricsError, MetricsSource};
use crate::policy::{CanaryPolicyStatus, PluginTarget, PolicyKey, ValidatedPolicy};
use crate::traffic::{DesiredTraffic, TrafficError, TrafficTarget};
use mlcanary_core::analysis::{evaluate, Observations, Verdict};
use mlcanary_core::render::{desired_all, desired_traffic, HttpRoute};
use mlcanary_core::rollout::{self, Command, NotApplicable, RolloutEvent, StepOutput};
use mlcanary_core::weights::Weights;
use mlcanary_core::window::{Evidence, Window};
use mlcanary_filter::config::RawConfig;

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

/// What was last written: each policy's routes and each plugin's config, keyed
/// `namespace/name`. Clones share it: the kube loop gives every policy's engine the same one.
#[derive(Debug, Clone, Default)]
pub struct Written(Arc<Mutex<WrittenState>>);

#[derive(Debug, Default)]
struct WrittenState {
    routes: HashMap<String, Vec<HttpRoute>>,
    plugins: HashMap<String, Arc<RawConfig>>,
}

impl Written {
    fn keys(d: &DesiredTraffic) -> (String, String) {
        (
            format!("{}/{}", d.namespace, d.policy),
            d.wasm_plugin.to_string(),
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, WrittenState> {
        // A poisoned lock only means a panic elsewhere; the maps are still sound.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `d`'s routes, and its plugin's config, are what was last written.
    fn held(&self, d: &DesiredTraffic) -> (bool, bool) {
        let (route_key, plugin_key) = Self::keys(d);
        let st = self.state();
        let routes = st.routes.get(&route_key) == Some(&d.routes);
        let plugin = st
            .plugins
            .get(&plugin_key)
            .is_some_and(|c| Arc::ptr_eq(c, &d.plugin_config) || c == &d.plugin_config);
        (routes, plugin)
    }

    /// The split of `policy` (canary variant `canary`) in the config last written to `plugin`:
    /// what is in effect, which a peer's status may not show yet. A policy in shadow: its
    /// mirrored share as last written in its routes (`None` if they were not).
    pub fn in_effect(
        &self,
        plugin: &PluginTarget,
        policy: &PolicyKey,
        canary: &str,
    ) -> Option<Weights> {
        let st = self.state();
        let config = st.plugins.get(&plugin.to_string())?;
        let p = config.policies.iter().find(|p| {
            p.name == policy.name && p.namespace.as_deref() == Some(policy.namespace.as_str())
        })?;
        if p.shadow.is_some() {
            // The mirrored share is in the policy's routes, not in the filter config.
            let key = format!("{}/{}", policy.namespace, policy.name);
            let share = st
                .routes
                .get(&key)?
                .iter()
                .find_map(|r| r.mirror_percentage)?;
            return Some(Weights::shadow(share.bp()));
        }
        let v = p.variants.iter().find(|v| v.name == canary)?;
        Some(Weights::with_canary_bp(v.weight_bp))
    }

    /// Forget everything: what another writer (a new leader) wrote since is unknown.
    pub fn clear(&self) {
        let mut st = self.state();
        st.routes.clear();
        st.plugins.clear();
    }

    fn record(&self, d: &DesiredTraffic) {
        let (route_key, plugin_key) = Self::keys(d);
        let mut st = self.state();
        st.routes.insert(route_key, d.routes.clone());
        st.plugins.insert(plugin_key, d.plugin_config.clone());
    }
}

/// Steps policies and writes their traffic, skipping writes of what is already in effect
/// ([`Written`]); every write of a policy's traffic — tick or command — goes through it.
pub struct Engine {
    written: Written,
    /// `spec.webhooks`: gates before the write, notifications after (see [`crate::hooks`]).
    hooks: Hooks,
    clock: Clock,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

impl Engine {
    pub fn new(clock: Clock, webhooks: Arc<dyn WebhookSender>) -> Self {
        Engine {
            written: Written::default(),
            hooks: Hooks::new(webhooks),
            clock,
        }
    }

    /// Share `written` with the other engines writing to the same targets.
    pub fn sharing(mut self, written: Written) -> Self {
        self.written = written;
        self
    }

    /// `desired` was written by the loop itself (local start-up writes every policy's split in one
    /// go): a tick that wants the same writes nothing.
    pub fn assume_written(&self, desired: &DesiredTraffic) {
        self.written.record(desired);
    }

    /// The engine's clock, for the loops' own times (progress lines, schedules).
    pub fn now(&self) -> SystemTime {
        (self.clock)()
    }

    /// [`Engine::write_all`] for one; `true` when anything was written.
    async fn write<T: TrafficTarget>(
        &mut self,
        desired: DesiredTraffic,
        target: &T,
    ) -> Result<bool, EngineError> {
        let written = self
            .write_all(std::slice::from_ref(&desired), target)
            .await?;
        Ok(written.contains(&true))
    }

    /// Write `input.policy` at `weights`, outside a tick (the lifecycle's "everything to stable"
    /// once stable runs the promoted model); `true` when anything was written.
    pub async fn route<T: TrafficTarget>(
        &mut self,
        input: TickInput<'_>,
        weights: Weights,
        target: &T,
    ) -> Result<bool, EngineError> {
        let desired = render(input.policy, weights, input.peers)?;
        self.write(desired, target).await
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

    /// One analysis interval of `input.policy`: [`Engine::decide`], write, [`Engine::conclude`].
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
        let decided = self.decide(input, source).await;
        let desired = render(input.policy, decided.weights(), input.peers)?;
        let applied = self.write(desired, target).await?;
        Ok(self.conclude(input.policy, decided, applied).await)
    }

    /// A tick up to the write: fetch the window, judge all the evidence, step the rollout, ask
    /// the gates. Nothing is written and no status changes until [`Engine::conclude`].
    pub async fn decide<S: MetricsSource>(
        &mut self,
        input: TickInput<'_>,
        source: &mut S,
    ) -> Decided {
        let policy = input.policy;
        let now = self.now();
        let mut evidence = input.status.evidence.clone().unwrap_or_default();
        let in_shadow = input.status.shadow.is_some();
        let mut stable_rps = None;
        // Terminal phases need no window; Pending reads anyway so the first step's window has its
        // start mark.
        let (verdicts, no_data) = if input.status.phase.is_terminal() {
            (None, None)
        } else {
            match source.fetch(policy, evidence.mark.as_ref(), now).await {
                Ok(reading) => {
                    let since_ms = evidence.mark.as_ref().map(|m| m.at_ms);
                    let secs = since_ms.map(|s| (reading.mark.at_ms - s) as f64 / 1000.0);
                    evidence.mark = Some(reading.mark);
                    match reading.window {
                        Some(window) => {
                            stable_rps = secs
                                .filter(|s| *s > 0.0)
                                .map(|s| window.stable.requests as f64 / s);
                            let weight = input.status.canary_weight_bp;
                            let judged = window.judged(in_shadow);
                            (Some(judge(policy, weight, &mut evidence, &judged)), None)
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
        let step = rollout::step(input.status, verdicts.as_deref(), policy, now);
        // `maxRps`: the shadow's mirrored share follows stable's observed rate.
        let mut step = rollout::shadow::capped(step, policy, stable_rps);
        if !policy.webhooks.is_empty() {
            step = (self.hooks)
                .gate(policy, input.status, verdicts.as_deref(), step, now)
                .await;
        }
        Decided {
            at: now,
            step,
            verdicts,
            no_data,
            evidence,
        }
    }

    /// Write what of `desired` is not what was last written: nothing; only the policies' routes
    /// when their plugin already holds this config (another policy's tick wrote it); else all of
    /// it in one [`TrafficTarget::apply_all`]. Returns, per entry, whether it was written; on an
    /// error nothing counts as written.
    pub async fn write_all<T: TrafficTarget>(
        &mut self,
        desired: &[DesiredTraffic],
        target: &T,
    ) -> Result<Vec<bool>, EngineError> {
        let held: Vec<(bool, bool)> = desired.iter().map(|d| self.written.held(d)).collect();
        let needed: Vec<bool> = held.iter().map(|h| *h != (true, true)).collect();
        let changed: Vec<DesiredTraffic> = desired
            .iter()
            .zip(&needed)
            .filter(|(_, n)| **n)
            .map(|(d, _)| d.clone())
            .collect();
        if changed.is_empty() {
            return Ok(needed);
        }
        let plugins_held = held.iter().zip(&needed).all(|((_, p), n)| *p || !n);
        let written = if plugins_held {
            async {
                for d in &changed {
                    target.apply_routes_only(d).await?;
                }
                Ok::<(), TrafficError>(())
            }
            .await
        } else {
            target.apply_all(&changed).await
        };
        written.map_err(|source| EngineError::Apply {
            policy: changed
                .iter()
                .map(|d| d.policy.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            source,
        })?;
        for d in &changed {
            self.written.record(d);
        }
        Ok(needed)
    }

    /// The rest of a tick once its split is in effect (`applied`: it was written now): the
    /// notifications, and the status with the rollout's evidence.
    pub async fn conclude(
        &mut self,
        policy: &ValidatedPolicy,
        decided: Decided,
        applied: bool,
    ) -> TickOutput {
        let Decided {
            at,
            step,
            verdicts,
            no_data,
            evidence,
        } = decided;
        if !policy.webhooks.is_empty() {
            self.hooks.notify(policy, &step, verdicts.as_deref()).await;
        }
        let mut status = step.status;
        // The evidence runs over the whole rollout; an ended one carries nothing.
        status.evidence = (!status.phase.is_terminal() && !evidence.is_empty()).then_some(evidence);
        TickOutput {
            at,
            status,
            weights: step.weights,
            events: step.events,
            verdicts,
            no_data,
            applied,
        }
    }
}

/// A tick decided, not yet written ([`Engine::decide`]).
#[derive(Debug)]
pub struct Decided {
    at: SystemTime,
    step: StepOutput,
    verdicts: Option<Vec<Verdict>>,
    no_data: Option<MetricsError>,
    evidence: Evidence,
}

impl Decided {
    /// The split this tick wants.
    pub fn weights(&self) -> Weights {
        self.step.weights
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

/// The desired traffic of every policy sharing one plugin at its weights, from one rendering of
/// the shared config ([`desired_all`]); a refusal is named by the first policy.
pub fn render_all(
    policies: &[(&ValidatedPolicy, Weights)],
) -> Result<Vec<DesiredTraffic>, EngineError> {
    desired_all(policies).map_err(|source| EngineError::Render {
        policy: policies
            .first()
            .map(|(p, _)| p.name.clone())
            .unwrap_or_default(),
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
    let settle = policy
        .feedback
        .as_ref()
        .map_or(0, |f| f.settle_windows(policy.interval));
    evidence.record_settling(weight_bp, window, settle);
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
