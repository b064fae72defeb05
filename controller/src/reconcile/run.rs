//! `mlcanary controller`: the process around the reconciler. Starts the HTTP endpoint and the lease
//! loop on every replica; only the replica holding the lease runs the Controller, and it exits when
//! it loses the lease (the pod restarts as a follower: simpler and safer than stopping and restarting
//! watches in place).

use std::net::SocketAddr;
use std::sync::Arc;

use clap::Args;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::{watcher, Controller};
use kube::Client;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{error_policy, reconcile, Context};
use crate::leader::{Elector, Timing};
use crate::metrics::{MetricsError, PrometheusSource};
use crate::policy::{CanaryPolicy, PluginRef};
use crate::server::{serve, ControllerMetrics, Health, ServerState};
use crate::traffic::IstioTarget;
use crate::ui::Ui;
use mlcanary_core::render::MeshScope;

/// Options of `mlcanary controller`.
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Watch CanaryPolicies in this namespace only (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Prometheus base URL.
    #[arg(long, default_value = "http://prometheus.istio-system:9090")]
    pub prometheus: String,
    /// Address of /healthz, /readyz, /metrics and the status page (`/`, `/api/policies`).
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else mlcanary-system).
    #[arg(long)]
    pub lease_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "mlcanary-controller")]
    pub lease_name: String,
    /// This replica's identity in the Lease and in Events (default: $POD_NAME, else $HOSTNAME).
    #[arg(long)]
    pub identity: Option<String>,
    /// The mesh-wide WasmPlugin (NAMESPACE/NAME) that carries every policy's filter config unless
    /// a policy names its own; `none` runs without one (each policy then names a plugin of its
    /// namespace).
    #[arg(long, default_value = "istio-system/mlcanary", value_parser = parse_mesh_plugin, value_name = "NS/NAME|none")]
    pub mesh_plugin: MeshPlugin,
    /// Istio's root namespace (meshConfig.rootNamespace): a WasmPlugin there reaches every proxy.
    #[arg(long, default_value = "istio-system", value_name = "NS")]
    pub mesh_root_namespace: String,
}

/// `--mesh-plugin`: a plugin, or none.
#[derive(Debug, Clone)]
pub struct MeshPlugin(pub Option<PluginRef>);

fn parse_mesh_plugin(s: &str) -> Result<MeshPlugin, String> {
    if s == "none" {
        return Ok(MeshPlugin(None));
    }
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok(MeshPlugin(Some(PluginRef {
                namespace: ns.to_owned(),
                name: name.to_owned(),
            })))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME or none")),
    }
}

impl ControllerArgs {
    pub fn scope(&self) -> MeshScope {
        MeshScope {
            root_namespace: self.mesh_root_namespace.clone(),
            mesh_plugin: self.mesh_plugin.0.clone(),
        }
    }
}

/// Why the controller stopped.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot connect to Kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("bad --prometheus: {0}")]
    Prometheus(#[from] MetricsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no identity: pass --identity or set POD_NAME")]
    NoIdentity,
    #[error("lost the leader lease; exiting so the pod restarts as a follower")]
    LostLeadership,
}

fn identity(args: &ControllerArgs) -> Result<String, RunError> {
    args.identity
        .clone()
        .or_else(|| std::env::var("POD_NAME").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .filter(|s| !s.is_empty())
        .ok_or(RunError::NoIdentity)
}

/// Run the controller to completion on a new multi-threaded runtime (the CLI is synchronous).
pub fn run(args: &ControllerArgs) -> Result<(), RunError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(RunError::Runtime)?
        .block_on(run_async(args))
}

async fn run_async(args: &ControllerArgs) -> Result<(), RunError> {
    crate::tls::install_crypto_provider();
    let me = identity(args)?;
    let client = Client::try_default().await?;
    let source = PrometheusSource::new(&args.prometheus)?;
    let metrics = Arc::new(ControllerMetrics::new());
    let timing = Timing::default();
    // Live while the lease loop (every replica) or a reconcile beat within three renew periods.
    let health = Arc::new(Health::new(timing.renew_every * 3 + timing.lease_duration));

    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: args.listen,
            source,
        })?;
    let ui = Arc::new(Ui::new());
    let state = Arc::new(ServerState {
        metrics: metrics.clone(),
        health: health.clone(),
        ui: ui.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = serve(listener, state).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });

    let lease_ns = args
        .lease_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "mlcanary-system".into());
    let (lead_tx, mut lead_rx) = watch::channel(false);
    let elector = Elector::new(client.clone(), &lease_ns, &args.lease_name, &me, timing);
    tokio::spawn(elector.run(lead_tx, health.clone()));
    tracing::info!(identity = %me, lease = %args.lease_name, namespace = %lease_ns, "waiting for the lease");
    if lead_rx.wait_for(|l| *l).await.is_err() {
        return Err(RunError::LostLeadership);
    }
    tracing::info!(identity = %me, "leading: starting the controller");

    let api: Api<CanaryPolicy> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let controller = Controller::new(api, watcher::Config::default());
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "mlcanary".into(),
            instance: Some(me),
        },
    );
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            recorder,
            source,
            IstioTarget::new(client).with_scope(args.scope()),
            controller.store(),
            metrics,
            health,
            lead_rx.clone(),
            crate::engine::system_clock(),
        )
        .with_ui(ui)
        .with_scope(args.scope()),
    );
    let mut lost = lead_rx.clone();
    controller
        .graceful_shutdown_on(async move {
            let _ = lost.wait_for(|l| !*l).await;
        })
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
    Err(RunError::LostLeadership)
}
