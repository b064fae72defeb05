//! The `mlcanary` command line. Commands that need no cluster (`validate`, `assign`, `crd`) run here
//! and write to the given writer, so they are tested without a process; `local` runs the local loop
//! ([`crate::local`]) and writes its progress lines there too. The rollout commands (`status`,
//! `promote`, `abort`, `pause`, `resume`) talk to a server or the cluster: [`commands`].

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};
use kube::CustomResourceExt;
use mlcanary_filter::hash::bucket;
use thiserror::Error;

use crate::cli::client::ClientError;
use crate::cli::commands::{run_command, run_status, CommandArgs, StatusArgs};
use crate::exit::Exit;
use crate::local::{LocalArgs, LocalError, Outcome as LocalOutcome};
use crate::pipeline::{run_start, run_wait, PipelineError, RolloutCmd, WaitArgs, WaitOutcome};
use crate::policy::file::{load, FileError};
use crate::policy::CanaryPolicy;
use crate::reconcile::{ControllerArgs, RunError};
use mlcanary_core::render::{per_host_envoy_filter, render_policy, PluginRef};
use mlcanary_core::rollout::Command as RolloutCommand;
use mlcanary_core::weights::Weights;

pub mod client;
pub mod commands;
pub mod status;

/// How scripts tell outcomes apart (shown by `--help`).
/// Canary deployments for ML models on Istio / Envoy.
#[derive(Debug, Parser)]
#[command(name = "mlcanary", version, after_help = crate::exit::help())]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Kubernetes controller over CanaryPolicies.
    Controller(ControllerArgs),
    /// Drive a local Envoy from a policy file (no Kubernetes). Exit 0: every policy promoted;
    /// 1: one rolled back; 2: bad policy file or arguments (nothing applied).
    Local(LocalArgs),
    /// Which variant a user gets under a policy (sticky hash; rules are not consulted).
    Assign {
        #[arg(long)]
        policy: PathBuf,
        /// The user's sticky key (the value of the sticky header or cookie).
        #[arg(long)]
        user: String,
        /// The policy to use when the file holds several.
        #[arg(long)]
        name: Option<String>,
        /// Canary weight in basis points; default: the status in the file, else the first step.
        #[arg(long)]
        canary_bp: Option<u32>,
    },
    /// Validate a policy file; exit 1 with the field at fault.
    Validate { file: PathBuf },
    /// Print the CanaryPolicy CustomResourceDefinition as YAML.
    Crd,
    /// Print the Istio EnvoyFilter that keeps the mesh-wide WasmPlugin's filter disabled except on
    /// the policies' hosts (the per-host attachment: requests to other hosts skip the filter).
    Attachment {
        /// A policy file; every policy in it (repeatable).
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// A model service port (TF Serving REST 8501, KServe 8080; repeatable).
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
        /// The WasmPlugin that carries the filter, `namespace/name`.
        #[arg(long, default_value = "istio-system/mlcanary")]
        plugin: String,
    },
    /// Show rollouts: phase, canary weight, step, failed checks, last verdicts and a progress bar
    /// of the steps. From the cluster, or a running server with --server.
    #[command(after_help = crate::exit::help())]
    Status(StatusArgs),
    /// Send all traffic to the canary now (also the way through a manual gate).
    #[command(after_help = crate::exit::help())]
    Promote(CommandArgs),
    /// Roll back now: all traffic to stable.
    #[command(after_help = crate::exit::help())]
    Abort(CommandArgs),
    /// Hold the rollout at its weight (analyses still run and can still roll it back).
    #[command(after_help = crate::exit::help())]
    Pause(CommandArgs),
    /// Continue a paused rollout.
    #[command(after_help = crate::exit::help())]
    Resume(CommandArgs),
    /// Pipeline gate, two-Deployments mode: begin a rollout (`rollout start POLICY --canary
    /// VERSION`). With a `deploymentRef` target a pod-template change begins it instead.
    Rollout {
        #[command(subcommand)]
        cmd: RolloutCmd,
    },
    /// Pipeline gate: follow a rollout (of `--canary VERSION`) to its end, progress on stderr.
    /// Exit 0 promoted, 1 rolled back, 2 timeout or other.
    #[command(after_help = crate::exit::help())]
    Wait(WaitArgs),
}

/// A command that failed; the message is for the user.
#[derive(Debug, Error)]
pub enum CliError {
    #[error("{0}")]
    File(#[from] FileError),
    #[error("{0}")]
    Usage(String),
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{0}")]
    Controller(#[from] RunError),
    #[error("`mlcanary {0}` is not implemented yet")]
    NotImplemented(&'static str),
    #[error("{0}")]
    Local(#[from] LocalError),
    #[error("a canary was rolled back")]
    RolledBack,
    #[error("interrupted")]
    Interrupted,
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("cannot encode JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{0}")]
    Gate(#[from] PipelineError),
}

impl CliError {
    /// The process exit code, from the one table ([`crate::exit::Exit`]).
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::NotImplemented(_) | CliError::Usage(_) => Exit::BadInput.code(),
            CliError::Client(e) => e.exit_code(),
            CliError::Gate(e) => e.exit_code(),
            CliError::Local(e) => e.exit_code(),
            CliError::Interrupted => Exit::Interrupted.code(),
            _ => Exit::Failed.code(),
        }
    }
}

/// Run a command that needs no runtime.
pub fn run(cmd: &Command, out: &mut impl Write) -> Result<(), CliError> {
    match cmd {
        Command::Validate { file } => validate(file, out),
        Command::Assign {
            policy,
            user,
            name,
            canary_bp,
        } => assign(policy, user, name.as_deref(), *canary_bp, out),
        Command::Crd => {
            out.write_all(crd_yaml()?.as_bytes())?;
            Ok(())
        }
        Command::Attachment {
            policies,
            ports,
            plugin,
        } => {
            out.write_all(attachment_yaml(policies, ports, plugin)?.as_bytes())?;
            Ok(())
        }
        Command::Controller(args) => Ok(crate::reconcile::run(args)?),
        Command::Status(args) => run_status(args, out),
        Command::Promote(args) => run_command(RolloutCommand::Promote, args, out),
        Command::Abort(args) => run_command(RolloutCommand::Abort, args, out),
        Command::Pause(args) => run_command(RolloutCommand::Pause, args, out),
        Command::Resume(args) => run_command(RolloutCommand::Resume, args, out),
        Command::Rollout {
            cmd: RolloutCmd::Start(args),
        } => Ok(run_start(args, out)?),
        Command::Wait(args) => match run_wait(args)? {
            WaitOutcome::Promoted => Ok(()),
            outcome => Err(PipelineError::Ended {
                policy: args.policy.clone(),
                outcome,
            }
            .into()),
        },
        Command::Local(args) => match crate::local::run(args, out)? {
            LocalOutcome::Done => Ok(()),
            LocalOutcome::RolledBack => Err(CliError::RolledBack),
            LocalOutcome::Interrupted => Err(CliError::Interrupted),
        },
    }
}

/// The CanaryPolicy CRD as YAML: what `mlcanary crd` prints and what `istio/crd.yaml` must hold
/// (`controller/tests/crd.rs` compares them).
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    serde_yaml::to_string(&CanaryPolicy::crd())
}

fn validate(file: &Path, out: &mut impl Write) -> Result<(), CliError> {
    let policies = load(file)?;
    for (_, v) in &policies {
        let steps: Vec<String> = v
            .steps_bp
            .iter()
            .map(|bp| format!("{}%", *bp as f64 / 100.0))
            .collect();
        writeln!(out, "{}: ok (steps {})", v.name, steps.join(", "))?;
    }
    Ok(())
}

/// The per-host EnvoyFilter for every policy in `files` (`mlcanary attachment`).
pub fn attachment_yaml(files: &[PathBuf], ports: &[u16], plugin: &str) -> Result<String, CliError> {
    let (namespace, name) = plugin
        .split_once('/')
        .filter(|(ns, n)| !ns.is_empty() && !n.is_empty())
        .ok_or_else(|| CliError::Usage(format!("--plugin {plugin:?} is not namespace/name")))?;
    let mut hosts = Vec::new();
    for f in files {
        for (_, v) in load(f)? {
            hosts.extend(render_policy(&v, Weights::ALL_STABLE).hosts);
        }
    }
    let plugin = PluginRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    let ef = per_host_envoy_filter(&plugin, &hosts, ports)
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(serde_yaml::to_string(&ef)?)
}

fn assign(
    file: &Path,
    user: &str,
    name: Option<&str>,
    canary_bp: Option<u32>,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let policies = load(file)?;
    let (p, v) = match name {
        Some(n) => policies
            .iter()
            .find(|(_, v)| v.name == n)
            .ok_or_else(|| CliError::Usage(format!("no policy named {n:?} in the file")))?,
        None if policies.len() == 1 => &policies[0],
        None => {
            return Err(CliError::Usage(
                "the file holds several policies: pass --name".into(),
            ))
        }
    };
    let bp = canary_bp
        .or_else(|| p.status.as_ref().map(|s| s.canary_weight_bp))
        .unwrap_or(v.steps_bp[0]);
    if bp > Weights::TOTAL_BP {
        return Err(CliError::Usage(format!("--canary-bp {bp} is over 10000")));
    }
    let raw = render_policy(v, Weights::with_canary_bp(bp));
    let config = mlcanary_filter::Config::try_from(mlcanary_filter::RawConfig {
        variant_header: None,
        inbound: false,
        policies: vec![raw],
    })
    .map_err(|e| CliError::Usage(e.to_string()))?;
    let policy = &config.policies[0];
    let Some(sticky) = &policy.sticky else {
        return Err(CliError::Usage(format!(
            "policy {:?} has no sticky key: every request is assigned at random",
            v.name
        )));
    };
    let idx = mlcanary_filter::decide::assign(policy, user)
        .ok_or_else(|| CliError::Usage("policy is not sticky".into()))?;
    writeln!(
        out,
        "{} (bucket {} of 10000, canary at {bp} bp)",
        policy.variants[idx].name,
        bucket(&sticky.salt, user)
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
