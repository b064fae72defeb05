//! The local loop's HTTP side: the status page, its JSON API and `/metrics` on `--http`, and the
//! operator commands that arrive through it (`POST /api/policies/{name}/{command}`), applied at
//! once as a tick would: the traffic files are rewritten, then the status (and `status.json`).

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use super::{rfc3339, LocalError, Managed};
use crate::engine::{CommandError, Engine, TickInput};
use crate::record::Recorder;
use crate::server::{serve, ControllerMetrics, Health, ServerState};
use crate::traffic::TrafficTarget;
use crate::ui::{CommandRefused, CommandRequest, Ui};

/// Bind `addr` and serve the page, the API, `/healthz`, `/readyz` and `/metrics` in the background.
/// Returns the bound address (the real port when `addr` has port 0) and the shared state.
pub async fn start(addr: SocketAddr, ui: Ui) -> Result<(SocketAddr, Arc<ServerState>), LocalError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| LocalError::Usage(format!("--http {addr}: cannot listen: {e}")))?;
    let bound = listener.local_addr()?;
    let state = Arc::new(ServerState {
        metrics: Arc::new(ControllerMetrics::new()),
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

/// Apply one operator command to the policy it names and answer the request: refused when no
/// policy has that name, when it does not apply, or when its split cannot be written; otherwise
/// the engine wrote the new split and the policy takes the new status.
pub(super) async fn handle_command<T: TrafficTarget>(
    req: CommandRequest,
    managed: &mut [Managed],
    target: &T,
    engine: &mut Engine,
    recorder: &Recorder,
    out: &mut impl Write,
) -> Result<(), LocalError> {
    let Some(i) = managed.iter().position(|m| m.policy.key() == req.policy) else {
        let _ = req.reply.send(Err(CommandRefused::UnknownPolicy));
        return Ok(());
    };
    let name = req.command.name();
    let peers = super::at_current_weights(managed);
    let policy = &managed[i].policy;
    let input = TickInput {
        policy,
        status: &managed[i].status,
        peers: &peers,
    };
    let done = match engine.command(input, req.command, target).await {
        Ok(done) => done,
        Err(CommandError::NotApplicable(e)) => {
            let _ = req
                .reply
                .send(Err(CommandRefused::NotApplicable(e.to_string())));
            return Ok(());
        }
        Err(CommandError::Engine(why)) => {
            writeln!(
                out,
                "{} {} {name} refused: {why}",
                rfc3339(engine.now()),
                policy.name
            )?;
            let _ = req.reply.send(Err(CommandRefused::Failed(format!(
                "writing the split: {why}"
            ))));
            return Ok(());
        }
    };
    recorder.record(policy.namespace_or_default(), policy, &done);
    writeln!(
        out,
        "{} {} {:?} canary={:.2}% | {name} by operator",
        rfc3339(done.at),
        policy.name,
        done.status.phase,
        f64::from(done.status.canary_weight_bp) / 100.0
    )?;
    out.flush()?;
    managed[i].status = done.status;
    let _ = req.reply.send(Ok(()));
    Ok(())
}
