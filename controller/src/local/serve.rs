//! The local loop's HTTP side: the status page, its JSON API and `/metrics` on `--http`, and the
//! operator commands that arrive through it (`POST /api/policies/{name}/{command}`), applied at
//! once as a tick would: the traffic files are rewritten, then the status (and `status.json`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::net::TcpListener;

use super::{LocalError, Managed};
use crate::engine::{desired_traffic, Engine, DEFAULT_NAMESPACE};
use crate::policy::ValidatedPolicy;
use crate::server::{serve, Health, Metrics, ServerState};
use crate::traffic::TrafficTarget;
use crate::ui::{self, CommandRefused, CommandRequest, Ui};
use mlcanary_core::weights::Weights;

/// The namespace a local policy is shown under.
pub fn namespace(p: &ValidatedPolicy) -> &str {
    p.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

/// Bind `addr` and serve the page, the API, `/healthz`, `/readyz` and `/metrics` in the background.
/// Returns the bound address (the real port when `addr` has port 0) and the shared state.
pub async fn start(addr: SocketAddr, ui: Ui) -> Result<(SocketAddr, Arc<ServerState>), LocalError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| LocalError::Usage(format!("--http {addr}: cannot listen: {e}")))?;
    let bound = listener.local_addr()?;
    let state = Arc::new(ServerState {
        metrics: Arc::new(Metrics::new()),
        // Local ticks beat at every policy's interval; a loop silent for an hour is wedged.
        health: Arc::new(Health::new(Duration::from_secs(3600))),
        ui: Arc::new(ui),
    });
    let s = state.clone();
    tokio::spawn(async move {
        if let Err(e) = serve(listener, s).await {
            tracing::error!(error = %e, "status page endpoint stopped");
        }
    });
    Ok((bound, state))
}

/// Apply one operator command to the policy it names and answer the request: 404-like when no
/// policy has that name, 409-like when it changes nothing, otherwise write the new split (as a
/// tick would) and then take the new status.
pub(super) async fn handle_command<T: TrafficTarget>(
    req: CommandRequest,
    managed: &mut [Managed],
    target: &T,
    engine: &mut Engine,
    state: &ServerState,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let Some(i) = managed.iter().position(|m| m.policy.name == req.policy) else {
        let _ = req.reply.send(Err(CommandRefused::UnknownPolicy));
        return Ok(());
    };
    let now = SystemTime::now();
    let name = req.command.name();
    let step = match ui::apply_command(&managed[i].status, req.command, now) {
        Ok(step) => step,
        Err(refused) => {
            let _ = req.reply.send(Err(refused));
            return Ok(());
        }
    };
    let peers: Vec<(&ValidatedPolicy, Weights)> = managed
        .iter()
        .map(|m| {
            (
                &m.policy,
                Weights::with_canary_bp(m.status.canary_weight_bp),
            )
        })
        .collect();
    let policy = &managed[i].policy;
    let written = match desired_traffic(policy, step.weights, &peers) {
        Ok(desired) => target.apply(&desired).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(why) = written {
        writeln!(
            out,
            "{} {} {name} refused: {why}",
            super::now_rfc3339(),
            policy.name
        )?;
        let _ = req.reply.send(Err(CommandRefused::Failed(format!(
            "writing the split: {why}"
        ))));
        return Ok(());
    }
    // The engine's memory of the last write is stale now: the next tick writes again.
    engine.forget(&policy.name);
    let ns = namespace(policy).to_owned();
    state
        .ui
        .record(&ns, policy, &step.status, None, &step.events, now);
    state
        .metrics
        .observe_status(&ns, &policy.name, &step.status);
    state
        .metrics
        .observe_events(&ns, &policy.name, &step.events);
    writeln!(
        out,
        "{} {} {:?} canary={:.2}% | {name} by operator",
        super::now_rfc3339(),
        policy.name,
        step.status.phase,
        f64::from(step.status.canary_weight_bp) / 100.0
    )?;
    out.flush()?;
    managed[i].status = step.status;
    let _ = req.reply.send(Ok(()));
    Ok(())
}
