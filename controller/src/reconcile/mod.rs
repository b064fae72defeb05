//! The Kubernetes loop (`mlcanary controller`): a `kube::runtime::Controller` over CanaryPolicies.
//!
//! One reconcile of one policy:
//! 1. **validate** — a bad spec becomes phase `Failed` with the field at fault in the condition and a
//!    Warning Event; nothing is applied and other policies are unaffected;
//! 2. **command** — a new operator command in the annotations ([`command`]) is applied instead of
//!    a tick, once per command id;
//! 3. **tick** — [`crate::engine::Engine::tick`] (the same step as the local loop): fetch the window
//!    from Prometheus, judge it, step the rollout, write the split through the Istio target;
//! 4. **plan** — [`plan`] turns the result into an [`plan::Update`] value (status, Events, requeue;
//!    Events about holds rate-limited by [`held`]);
//! 5. **write** — [`writer`] applies it: the `/status` subresource, then Events.
//!
//! Reconciles also fire on watch events (our own status writes, relists), so a policy is analysed at
//! most once per `spec.schedule.interval` ([`plan::wait_before_tick`]); failures are retried with a
//! per-policy exponential backoff ([`plan::backoff_delay`]), never a fixed long requeue.
//!
//! [`run`] wires it to a real cluster: leader election ([`crate::leader`]), the HTTP endpoint
//! ([`crate::server`]) and the Controller.

pub mod command;
pub mod held;
pub mod lifecycle;
pub mod plan;
pub mod run;
pub mod secrets;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder as EventRecorder;
use kube::runtime::finalizer::{finalizer, Error as FinalizerError, Event as FinalizerEvent};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::ResourceExt;
use thiserror::Error;
use tokio::sync::watch;

use crate::engine::{Engine, EngineError, TickInput, Written};
use crate::hooks::{HttpSender, WebhookSender};
use crate::metrics::MetricsSource;
use crate::policy::{CanaryPolicy, ValidatedPolicy, ValidationError};
use crate::record::Recorder;
use crate::server::{ControllerMetrics, Health};
use crate::traffic::TrafficTarget;
use crate::ui::Ui;
use mlcanary_core::render::MeshScope;
use mlcanary_core::weights::Weights;
use plan::{backoff_delay, peers, plan_invalid, plan_tick, starting_status, wait_before_tick};

pub use run::{run, ControllerArgs, RunError};

/// Why a reconcile failed (it is retried with backoff).
#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("writing status: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the lifecycle's Deployments: {0}")]
    Deployments(#[source] kube::Error),
    #[error(transparent)]
    Secret(secrets::SecretError),
}

impl Error {
    /// A fixed, low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Engine(EngineError::Render { .. }) => "render",
            Error::Engine(EngineError::Apply { .. }) => "traffic",
            Error::Kube(_) => "status",
            Error::Deployments(_) => "deployments",
            Error::Secret(_) => "secret",
            Error::Finalizer(e) => match e.as_ref() {
                FinalizerError::ApplyFailed(e) | FinalizerError::CleanupFailed(e) => e.label(),
                _ => "finalizer",
            },
        }
    }
}

pub use crate::engine::Clock;

/// Per-policy memory of the loop (never persisted: a restart ticks each policy once at once).
#[derive(Default)]
struct PolicyState {
    /// The policy's engine (what it last wrote is shared, [`Written`]). One per policy: the controller never
    /// reconciles one object twice at once, so the lock is never contended.
    engine: Option<Arc<tokio::sync::Mutex<Engine>>>,
    last_tick: Option<SystemTime>,
    failures: u32,
}

/// The reconciler's only door to the world.
pub struct Context<M, T> {
    pub client: kube::Client,
    pub recorder: EventRecorder,
    /// Cloned per tick: sources are cheap handles (an HTTP client) and a clone needs no lock.
    pub source: M,
    pub target: T,
    /// Every CanaryPolicy, to find the peers sharing a WasmPlugin.
    pub store: Store<CanaryPolicy>,
    pub metrics: Arc<ControllerMetrics>,
    pub health: Arc<Health>,
    /// `true` while this replica holds the lease; a reconcile of a non-leader writes nothing.
    pub leading: watch::Receiver<bool>,
    pub clock: Clock,
    /// The status page's history; fed after every tick.
    pub ui: Arc<Ui>,
    /// Where the engines send `spec.webhooks` calls.
    pub webhooks: Arc<dyn WebhookSender>,
    /// The mesh plugin and root namespace: which WasmPlugin each policy's config goes to.
    pub scope: MeshScope,
    /// What every policy's engine last wrote, shared: a WasmPlugin holding a hundred policies'
    /// config is rewritten when that config changes, not by each policy's tick.
    written: Written,
    /// The ticket keys' Secrets, read at most every [`secrets::FRESH_FOR`] (a hundred policies
    /// sharing a plugin would otherwise read each other's at every reconcile).
    secrets: secrets::SecretCache,
    policies: Mutex<HashMap<ObjectRef<CanaryPolicy>, PolicyState>>,
}

impl<M, T> Context<M, T> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        client: kube::Client,
        recorder: EventRecorder,
        source: M,
        target: T,
        store: Store<CanaryPolicy>,
        metrics: Arc<ControllerMetrics>,
        health: Arc<Health>,
        leading: watch::Receiver<bool>,
        clock: Clock,
    ) -> Self {
        Context {
            client,
            recorder,
            source,
            target,
            store,
            metrics,
            health,
            leading,
            clock,
            ui: Arc::new(Ui::new()),
            webhooks: Arc::new(HttpSender::default()),
            scope: MeshScope::default(),
            written: Written::default(),
            secrets: secrets::SecretCache::default(),
            policies: Mutex::new(HashMap::new()),
        }
    }

    /// Share `ui` with the HTTP endpoint (the status page reads what the reconciles record).
    pub fn with_ui(mut self, ui: Arc<Ui>) -> Self {
        self.ui = ui;
        self
    }

    /// Run with `scope` (`--mesh-plugin`, `--mesh-root-namespace`).
    pub fn with_scope(mut self, scope: MeshScope) -> Self {
        self.scope = scope;
        self
    }

    /// Send webhook calls to `sender` instead of over HTTP.
    pub fn with_webhooks(mut self, sender: Arc<dyn WebhookSender>) -> Self {
        self.webhooks = sender;
        self
    }

    /// The history and metrics both paths feed after a tick or a command.
    fn recorder(&self) -> Recorder {
        Recorder {
            ui: self.ui.clone(),
            metrics: self.metrics.clone(),
        }
    }

    /// Each peer at the split this controller last wrote for it, where it wrote one: a peer's
    /// status reaches the store only after its write, and a plugin config rendered from a stale
    /// status would undo that peer's step.
    fn in_effect(&self, peers: Vec<(ValidatedPolicy, Weights)>) -> Vec<(ValidatedPolicy, Weights)> {
        peers
            .into_iter()
            .map(|(p, w)| {
                let w = self
                    .written
                    .in_effect(&p.plugin(), &p.key(), &p.canary_subset)
                    .unwrap_or(w);
                (p, w)
            })
            .collect()
    }

    /// Every valid, running policy whose tick is due within half an interval of `now`: their
    /// counters are read in one batch when the first of them reconciles, and each reconcile that
    /// follows takes its own ([`MetricsSource::prepare`]).
    fn due_soon(&self, now: SystemTime) -> Vec<ValidatedPolicy> {
        let last_ticks: HashMap<ObjectRef<CanaryPolicy>, Option<SystemTime>> = {
            let map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
            map.iter().map(|(k, s)| (k.clone(), s.last_tick)).collect()
        };
        self.store
            .state()
            .iter()
            .filter(|o| !o.status.as_ref().is_some_and(|s| s.phase.is_terminal()))
            .filter_map(|o| {
                let p = ValidatedPolicy::try_from(o.as_ref()).ok()?;
                let last = last_ticks
                    .get(&ObjectRef::from_obj(o.as_ref()))
                    .copied()
                    .flatten();
                let soon = now + p.interval / 2;
                last.is_none_or(|t| t + p.interval <= soon).then_some(p)
            })
            .collect()
    }

    /// The policy's engine, made on first use with the context's clock and webhook sender.
    fn engine(&self, key: &ObjectRef<CanaryPolicy>) -> Arc<tokio::sync::Mutex<Engine>> {
        self.with_state(key, |s| {
            s.engine
                .get_or_insert_with(|| {
                    let engine = Engine::new(self.clock.clone(), self.webhooks.clone())
                        .sharing(self.written.clone());
                    Arc::new(tokio::sync::Mutex::new(engine))
                })
                .clone()
        })
    }

    fn with_state<R>(
        &self,
        key: &ObjectRef<CanaryPolicy>,
        f: impl FnOnce(&mut PolicyState) -> R,
    ) -> R {
        // A poisoned lock only means another reconcile panicked; the map itself is still sound.
        let mut map = self.policies.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(key.clone()).or_default())
    }
}

/// The finalizer a CanaryPolicy carries while the controller may have traffic of its to revert:
/// added on first sight, removed once a deleted policy's traffic is reverted.
pub const FINALIZER: &str = "mlcanary.io/revert-traffic";

/// Reconcile one CanaryPolicy: through kube's finalizer helper, which adds [`FINALIZER`] first (a
/// patch, then the next reconcile does the work) and on deletion runs [`cleanup`] before it
/// removes it.
pub async fn reconcile<M, T>(
    obj: Arc<CanaryPolicy>,
    ctx: Arc<Context<M, T>>,
) -> Result<Action, Error>
where
    M: MetricsSource + Clone + Send + Sync + 'static,
    T: TrafficTarget + Send + Sync + 'static,
{
    ctx.health.beat();
    if !*ctx.leading.borrow() {
        // While another replica leads, what this one wrote stops being what is in effect: when it
        // leads again, its first ticks write everything.
        ctx.written.clear();
        ctx.target.forget();
        return Ok(Action::await_change());
    }
    let namespace = obj.namespace().unwrap_or_default();
    let api: Api<CanaryPolicy> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(obj) => apply(obj, &ctx, &api).await,
            FinalizerEvent::Cleanup(obj) => cleanup(obj, &ctx, &api).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// A deleted policy: its traffic back to the subset it rests on and out of the filter config
/// ([`mlcanary_core::render::reverted_traffic`]), one Event, the loop's memory of it dropped. A
/// spec that never validated wrote nothing to revert (its peers' writes leave it out of the
/// config), so the deletion goes on; a failed write keeps the finalizer and is retried.
async fn cleanup<M, T>(
    obj: Arc<CanaryPolicy>,
    ctx: &Context<M, T>,
    api: &Api<CanaryPolicy>,
) -> Result<Action, Error>
where
    T: TrafficTarget,
{
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let status = obj.status.clone().unwrap_or_default();
    let note = match ValidatedPolicy::try_from(obj.as_ref()) {
        Ok(policy) => {
            let resting = mlcanary_core::rollout::resting_weights(&status);
            let peers = ctx.in_effect(peers(&ctx.store.state(), &obj, &ctx.scope).1);
            let refs: Vec<(&ValidatedPolicy, Weights)> =
                peers.iter().map(|(p, w)| (p, *w)).collect();
            let desired = mlcanary_core::render::reverted_traffic(&policy, resting, &refs)
                .map_err(|source| EngineError::Render {
                    policy: name.clone(),
                    source,
                })?;
            ctx.target
                .revert(&desired)
                .await
                .map_err(|source| EngineError::Apply {
                    policy: name.clone(),
                    source,
                })?;
            // The plugin config changed under every peer's record of it.
            ctx.written.clear();
            let subset = if resting.canary_bp() > 0 {
                &policy.canary_subset
            } else {
                &policy.stable_subset
            };
            format!("policy deleted: all traffic to {subset}, removed from the filter config")
        }
        Err(e) => format!("policy deleted; its spec never validated ({e}): nothing to revert"),
    };
    tracing::info!(%namespace, policy = %name, "{note}");
    let update = plan::Update {
        status: None,
        events: vec![plan::Event {
            type_: plan::EventType::Normal,
            reason: "TrafficReverted",
            action: "Delete",
            note,
        }],
        rollout: Vec::new(),
        requeue: Duration::ZERO,
    };
    publish(api, ctx, &obj, &update).await?;
    ctx.ui.remove(&namespace, &name);
    ctx.policies
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&ObjectRef::from_obj(obj.as_ref()));
    Ok(Action::await_change())
}

/// Write `update` ([`writer::write`]); an Event that could not be published is counted, not fatal.
async fn publish<M, T>(
    api: &Api<CanaryPolicy>,
    ctx: &Context<M, T>,
    obj: &CanaryPolicy,
    update: &plan::Update,
) -> Result<(), kube::Error> {
    for _ in 0..writer::write(api, &ctx.recorder, obj, update).await? {
        ctx.metrics.error("event");
    }
    Ok(())
}

/// One reconcile of a policy that is not being deleted.
async fn apply<M, T>(
    obj: Arc<CanaryPolicy>,
    ctx: &Arc<Context<M, T>>,
    api: &Api<CanaryPolicy>,
) -> Result<Action, Error>
where
    M: MetricsSource + Clone + Send + Sync + 'static,
    T: TrafficTarget + Send + Sync + 'static,
{
    let now = (ctx.clock)();
    let key = ObjectRef::from_obj(obj.as_ref());
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();

    // A spec that validates but whose plugin would run the filter twice is refused the same way:
    // phase Failed with the reason, nothing written.
    let scoped = ValidatedPolicy::try_from(obj.as_ref()).and_then(|policy| {
        let (plugin, peers) = peers(&ctx.store.state(), &obj, &ctx.scope);
        match plugin {
            Ok(_) => Ok((policy, peers)),
            Err(e) => Err(ValidationError {
                field: "spec.target.wasmPlugin".into(),
                reason: e.to_string(),
            }),
        }
    });
    // The ticket keys (spec.feedback) of the policy and its peers, read from their Secrets.
    let scoped = match scoped {
        Ok((mut policy, mut peers)) => {
            let mut filled = ctx.secrets.fill(&ctx.client, &mut policy, now).await;
            for (p, _) in &mut peers {
                if filled.is_err() {
                    break;
                }
                // A peer's keys are rendered into the same plugin config: its missing Secret
                // holds this policy too, and the reason says whose it is.
                let peer = p.key();
                filled = ctx
                    .secrets
                    .fill(&ctx.client, p, now)
                    .await
                    .map_err(|e| match e {
                        secrets::SecretError::Invalid(r) => secrets::SecretError::Invalid(format!(
                            "peer {peer} on the same plugin: {r}"
                        )),
                        other => other,
                    });
            }
            match filled {
                Ok(()) => Ok((policy, peers)),
                Err(secrets::SecretError::Invalid(reason)) => Err(ValidationError {
                    field: "spec.feedback.secretRef".into(),
                    reason,
                }),
                Err(e @ secrets::SecretError::Api { .. }) => return Err(Error::Secret(e)),
            }
        }
        Err(e) => Err(e),
    };
    let (update, ticked) = match scoped {
        Err(e) => {
            tracing::warn!(%namespace, policy = %name, error = %e, "invalid policy");
            (plan_invalid(&obj, &e, now), false)
        }
        Ok((policy, peers)) => {
            // An operator's command (annotations) runs at once, outside the interval.
            if let Some(action) = command::handle(&obj, &policy, ctx, api).await? {
                return Ok(action);
            }
            let peers = ctx.in_effect(peers);
            let peer_refs: Vec<(&ValidatedPolicy, Weights)> =
                peers.iter().map(|(p, w)| (p, *w)).collect();
            let last = ctx.with_state(&key, |s| s.last_tick);
            let status = match &policy.deployment_ref {
                // The Deployments first, on every reconcile: a stage that waits looks again soon.
                Some(dref) => {
                    let from = starting_status(&obj);
                    let was = from.canary_version.clone();
                    match lifecycle::step(&obj, &policy, dref, from, &peer_refs, ctx, now).await? {
                        lifecycle::Next::Done(update) => {
                            publish(api, ctx, &obj, &update).await?;
                            return Ok(Action::requeue(update.requeue));
                        }
                        // A new rollout ticks at once; a running one at its interval.
                        lifecycle::Next::Tick(s) if s.canary_version != was => *s,
                        lifecycle::Next::Tick(s) => {
                            match wait_before_tick(last, now, policy.interval) {
                                Some(wait) => {
                                    let update = plan::Update {
                                        status: (obj.status.as_ref() != Some(&*s)).then_some(*s),
                                        events: Vec::new(),
                                        rollout: Vec::new(),
                                        requeue: wait,
                                    };
                                    publish(api, ctx, &obj, &update).await?;
                                    return Ok(Action::requeue(wait));
                                }
                                None => *s,
                            }
                        }
                    }
                }
                None => {
                    if let Some(wait) = wait_before_tick(last, now, policy.interval) {
                        return Ok(Action::requeue(wait));
                    }
                    plan::with_new_canary(&obj, starting_status(&obj), now)
                }
            };
            let engine = ctx.engine(&key);
            let mut source = ctx.source.clone();
            if !source.prepared_for(&policy.key()) {
                // The first reconcile of an interval reads for every policy due about now.
                let due = ctx.due_soon(now);
                let refs: Vec<&ValidatedPolicy> = due.iter().collect();
                source.prepare(&refs, now).await;
            }
            let started = Instant::now();
            let out = engine
                .lock()
                .await
                .tick(
                    TickInput {
                        policy: &policy,
                        status: &status,
                        peers: &peer_refs,
                    },
                    &mut source,
                    &ctx.target,
                )
                .await?;
            ctx.metrics
                .observe_analysis(&namespace, &name, started.elapsed());
            if let Some(e) = &out.no_data {
                ctx.metrics.error(e.label());
                tracing::info!(%namespace, policy = %name, error = %e, "no metrics: holding");
            }
            ctx.recorder().record(&namespace, &policy, &out);
            (plan_tick(&obj, &policy, out), true)
        }
    };

    publish(api, ctx, &obj, &update).await?;
    if !ticked {
        // An invalid spec: the tick's recorder did not run, the metrics still show its phase.
        if let Some(status) = update.status.as_ref().or(obj.status.as_ref()) {
            ctx.metrics.observe_status(&namespace, &name, status);
        }
    }
    ctx.with_state(&key, |s| {
        s.failures = 0;
        // Only a tick whose status was written counts: a failed write re-runs the analysis from
        // the recorded status, so the status never lags the split the engine wrote.
        if ticked {
            s.last_tick = Some(now);
        }
    });
    Ok(Action::requeue(update.requeue))
}

/// After a failed reconcile: retry this policy after an exponentially growing delay.
pub fn error_policy<M, T>(obj: Arc<CanaryPolicy>, err: &Error, ctx: Arc<Context<M, T>>) -> Action {
    let key = ObjectRef::from_obj(obj.as_ref());
    let failures = ctx.with_state(&key, |s| {
        s.failures = s.failures.saturating_add(1);
        s.failures
    });
    let delay = backoff_delay(failures);
    ctx.metrics.error(err.label());
    tracing::warn!(policy = %obj.name_any(), error = %err, failures, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

#[cfg(test)]
mod finalizer_tests;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod scale_tests;
#[cfg(test)]
mod tests;
