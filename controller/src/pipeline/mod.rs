//! The pipeline gate, for CI/CD jobs: `mlcanary wait POLICY --canary VERSION [--timeout 30m]`
//! follows the rollout of VERSION to its end; `mlcanary rollout start POLICY --canary VERSION`
//! begins one where nothing else does (the two-Deployments mode).
//!
//! - **lifecycle** (`spec.target.deploymentRef`): the pipeline changes the user's Deployment (e.g.
//!   `kubectl set image`, or a GitOps commit) and the controller starts the rollout by itself,
//!   recording the canary template's images in `status.canaryVersion`. `wait --canary IMAGE`
//!   ignores every status whose `canaryVersion` is not IMAGE: until the controller has noticed the
//!   new template, the status still describes the previous rollout, often already `Promoted`.
//! - **cluster** (default): `start` merge-patches `spec.target.canaryVersion` on the CanaryPolicy;
//!   the reconciler sees the version differ from `status.canaryVersion` and starts a new rollout
//!   from `Pending` ([`crate::reconcile::plan::with_new_canary`]). `wait` without `--canary` reads
//!   the policy until its status is about the spec's version and terminal.
//! - **server** (`--server URL`, e.g. a `mlcanary local --http` API): `start` is
//!   `POST /api/policies/{name}/start` with `{"canary": VERSION}` ([`mlcanary_core::rollout::Command::Start`]),
//!   `wait` polls `GET /api/policies/{name}` (its `canaryVersion` for `--canary`).
//!
//! `wait` prints a progress line on stderr whenever the rollout changes and exits **0** promoted,
//! **1** rolled back, **2** timeout or anything else (policy failed validation, not found,
//! unreachable past the timeout). Transient errors while waiting are printed and retried.

pub mod api;
pub mod cluster;

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use thiserror::Error;

use crate::cli::client::{ClientError, PolicyView};
use crate::cli::commands::Connection;
use crate::exit::Exit;
use crate::policy::Phase;

/// `mlcanary rollout ...`.
#[derive(Debug, Clone, Subcommand)]
pub enum RolloutCmd {
    /// Begin a new rollout of POLICY for the canary version VERSION (a label or image).
    Start(StartArgs),
}

/// Options of `mlcanary rollout start`.
#[derive(Debug, Clone, Args)]
pub struct StartArgs {
    /// The CanaryPolicy's name.
    pub policy: String,
    /// The canary's version label or image (recorded as `spec.target.canaryVersion`).
    #[arg(long, value_name = "VERSION")]
    pub canary: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// Options of `mlcanary wait`.
#[derive(Debug, Clone, Args)]
pub struct WaitArgs {
    /// The CanaryPolicy's name.
    pub policy: String,
    /// Wait for the rollout of this version: a status whose `canaryVersion` differs (an earlier
    /// rollout, possibly Promoted) is not the verdict. For a `deploymentRef` target, the canary pod
    /// template's images comma-joined in container order (one container: its image).
    #[arg(long, value_name = "VERSION")]
    pub canary: Option<String>,
    /// Give up after this long (exit 2).
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// How often to look.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub poll: Duration,
    #[command(flatten)]
    pub connection: Connection,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitOutcome {
    Promoted,
    RolledBack,
    /// The spec failed validation.
    Failed,
}

impl WaitOutcome {
    pub fn exit_code(self) -> u8 {
        match self {
            WaitOutcome::Promoted => Exit::Done.code(),
            WaitOutcome::RolledBack => Exit::RolledBack.code(),
            WaitOutcome::Failed => Exit::NotFinished.code(),
        }
    }

    /// The outcome a phase means, `None` while the rollout runs.
    pub fn of(phase: Phase) -> Option<Self> {
        match phase {
            Phase::Promoted => Some(WaitOutcome::Promoted),
            Phase::RolledBack => Some(WaitOutcome::RolledBack),
            Phase::Failed => Some(WaitOutcome::Failed),
            Phase::Pending | Phase::Progressing | Phase::Paused => None,
        }
    }
}

/// Why a gate command failed.
#[derive(Debug, Error)]
pub enum PipelineError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("timed out after {} waiting for {policy}: {}", humantime::format_duration(*.after), timeout_detail(*.phase, .canary.as_deref()))]
    Timeout {
        policy: String,
        /// The last phase seen of the rollout waited for; `None` if no status was about it.
        phase: Option<Phase>,
        /// `--canary`, if given.
        canary: Option<String>,
        after: Duration,
    },
    #[error("{policy}: the rollout ended {outcome:?}")]
    Ended {
        policy: String,
        outcome: WaitOutcome,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What a timeout saw last: the phase, or that the rollout never began.
fn timeout_detail(phase: Option<Phase>, canary: Option<&str>) -> String {
    match (phase, canary) {
        (Some(p), _) => format!("last phase {p:?}"),
        (None, Some(c)) => {
            format!("no status was about {c} (has the Deployment's pod template changed?)")
        }
        (None, None) => "no status seen".to_owned(),
    }
}

impl PipelineError {
    /// `wait`'s codes; `start` keeps the client's (2 bad input, 3 unreachable, 4 not found).
    pub fn exit_code(&self) -> u8 {
        match self {
            PipelineError::Client(e) => e.exit_code(),
            PipelineError::Ended { outcome, .. } => outcome.exit_code(),
            PipelineError::Timeout { .. } | PipelineError::Io(_) => Exit::NotFinished.code(),
        }
    }
}

/// One line of progress: phase, weight, step, failed checks and each check's verdict.
pub fn progress_line(v: &PolicyView) -> String {
    let mut line = format!(
        "{} {:?} canary={:.2}%",
        v.name,
        v.phase,
        f64::from(v.canary_weight_bp) / 100.0
    );
    if let Some(i) = v.step_index {
        line.push_str(&format!(" step={}/{}", i + 1, v.steps_bp.len()));
    }
    if v.failed_checks > 0 {
        line.push_str(&format!(
            " failed={}/{}",
            v.failed_checks, v.failure_threshold
        ));
    }
    for c in &v.last_verdicts {
        line.push_str(&format!(" | {}: {}", c.name, c.verdict));
    }
    if let Some(c) = v.conditions.iter().find(|c| c.type_ == "Progressing") {
        if !c.message.is_empty() {
            line.push_str(&format!(" ({})", c.message));
        }
    }
    line
}

/// Where `wait` reads the rollout from.
pub trait Watch {
    /// The rollout's view, or `None` while the status is not yet about the requested rollout: with
    /// `canary`, until its `canaryVersion` is that version.
    fn look(
        &mut self,
        policy: &str,
        canary: Option<&str>,
    ) -> impl std::future::Future<Output = Result<Option<PolicyView>, ClientError>>;
}

/// `v` if it is about the rollout of `canary` (or none was asked for), else `None`.
pub fn about(v: PolicyView, canary: Option<&str>) -> Option<PolicyView> {
    match canary {
        Some(c) if v.canary_version.as_deref() != Some(c) => None,
        _ => Some(v),
    }
}

/// Poll `src` until the rollout (of `canary`, if given) ends or `timeout` passes; progress lines
/// go to `progress`.
pub async fn wait_for<W: Watch>(
    src: &mut W,
    policy: &str,
    canary: Option<&str>,
    timeout: Duration,
    poll: Duration,
    progress: &mut impl Write,
) -> Result<WaitOutcome, PipelineError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_line = String::new();
    let mut phase = None;
    loop {
        match src.look(policy, canary).await {
            Ok(Some(v)) => {
                phase = Some(v.phase);
                let line = progress_line(&v);
                if line != last_line {
                    writeln!(progress, "{line}")?;
                    last_line = line;
                }
                if let Some(o) = WaitOutcome::of(v.phase) {
                    return Ok(o);
                }
            }
            Ok(None) => {
                // Said once, so a CI log shows why nothing moves yet.
                if let (Some(c), true) = (canary, last_line.is_empty()) {
                    last_line = format!("{policy}: waiting for the rollout of {c} to begin");
                    writeln!(progress, "{last_line}")?;
                }
            }
            // Nothing to wait for: a wrong name or URL does not get better with time.
            Err(e @ (ClientError::NotFound(_) | ClientError::BadInput(_))) => return Err(e.into()),
            Err(e) => writeln!(progress, "{policy}: {e} (retrying)")?,
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(PipelineError::Timeout {
                policy: policy.to_owned(),
                phase,
                canary: canary.map(str::to_owned),
                after: timeout,
            });
        }
        tokio::time::sleep(poll.min(deadline - now)).await;
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, PipelineError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `mlcanary rollout start`: a line on `out` when the rollout was requested.
pub fn run_start(args: &StartArgs, out: &mut impl Write) -> Result<(), PipelineError> {
    if args.canary.trim().is_empty() {
        return Err(ClientError::BadInput("--canary must not be empty".into()).into());
    }
    runtime()?.block_on(async {
        match &args.connection.server {
            Some(url) => {
                let ns = args.connection.namespace.as_deref();
                api::start(url, ns, &args.policy, &args.canary).await?
            }
            None => {
                let k = cluster::connect(args.connection.namespace.clone()).await?;
                cluster::start(&k, &args.policy, &args.canary).await?;
            }
        }
        writeln!(
            out,
            "rollout of {} requested for {}",
            args.canary, args.policy
        )?;
        Ok(())
    })
}

/// `mlcanary wait`: progress on stderr, the outcome as the result.
pub fn run_wait(args: &WaitArgs) -> Result<WaitOutcome, PipelineError> {
    let canary = args.canary.as_deref();
    if canary.is_some_and(|c| c.trim().is_empty()) {
        // An unset CI variable would otherwise wait for a version no rollout can have.
        return Err(ClientError::BadInput("--canary must not be empty".into()).into());
    }
    let mut err = std::io::stderr();
    let (policy, timeout, poll) = (args.policy.as_str(), args.timeout, args.poll);
    runtime()?.block_on(async {
        match &args.connection.server {
            Some(url) => {
                let mut src = api::HttpWatch::new(url, args.connection.namespace.clone())?;
                wait_for(&mut src, policy, canary, timeout, poll, &mut err).await
            }
            None => {
                let mut src = cluster::connect(args.connection.namespace.clone()).await?;
                wait_for(&mut src, policy, canary, timeout, poll, &mut err).await
            }
        }
    })
}

#[cfg(test)]
mod tests;
