//! `mlcanary status [POLICY]` and `mlcanary promote|abort|pause|resume POLICY`, against a running
//! server (`--server URL`) or the cluster (default). Argument types for clap, the backend choice,
//! and the runs themselves, which write to any writer so tests read their output.

use std::io::Write;
use std::time::{Duration, SystemTime};

use clap::{Args, ValueEnum};

use super::client::{new_command_id, ClientError, HttpBackend, KubeBackend, PolicyView};
use super::status::{detail, table};
use super::CliError;
use mlcanary_core::rollout::Command;

/// Where the policies are.
#[derive(Debug, Clone, Default, Args)]
pub struct Connection {
    /// Talk to a running `mlcanary local` or `mlcanary controller` at this base URL (its HTTP API,
    /// e.g. http://127.0.0.1:8080) instead of the cluster.
    #[arg(long, value_name = "URL")]
    pub server: Option<String>,
    /// Namespace of the CanaryPolicy (default: the kubeconfig context's namespace). With --server,
    /// names the policy in this namespace (without it, a name two namespaces use is refused) and
    /// lists only this namespace's policies.
    #[arg(short = 'n', long, value_name = "NS")]
    pub namespace: Option<String>,
}

/// How `status` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table, a progress bar per policy and, for one policy, its checks and history.
    #[default]
    Table,
    /// The policies as JSON (the HTTP API's `PolicyView`s): an array, or one object for POLICY.
    Json,
}

/// Options of `mlcanary status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Show this policy in detail (checks, numbers, history); all policies when absent.
    pub policy: Option<String>,
    #[command(flatten)]
    pub connection: Connection,
    /// List CanaryPolicies in every namespace (cluster only).
    #[arg(short = 'A', long, conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Keep watching: print again whenever something changes; ends when every policy shown has
    /// finished (Promoted, RolledBack or Failed), or on Ctrl-C.
    #[arg(short, long)]
    pub watch: bool,
    /// How often --watch looks again.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub interval: Duration,
}

/// Options of `mlcanary promote|abort|pause|resume`.
#[derive(Debug, Clone, Args)]
pub struct CommandArgs {
    /// The CanaryPolicy's name.
    pub policy: String,
    #[command(flatten)]
    pub connection: Connection,
}

/// A connected backend.
#[derive(Debug)]
pub enum Backend {
    Http(HttpBackend),
    Kube(KubeBackend),
}

impl Backend {
    /// `--server` → HTTP; otherwise the cluster.
    pub async fn connect(c: &Connection, all_namespaces: bool) -> Result<Self, ClientError> {
        match &c.server {
            Some(url) => Ok(Backend::Http(
                HttpBackend::new(url)?.in_namespace(c.namespace.clone()),
            )),
            None => Ok(Backend::Kube(
                KubeBackend::connect(c.namespace.clone(), all_namespaces).await?,
            )),
        }
    }

    async fn list(&self, namespace: Option<&str>) -> Result<Vec<PolicyView>, ClientError> {
        match self {
            Backend::Http(h) => {
                let mut all = h.list().await?;
                if let Some(ns) = namespace {
                    all.retain(|v| v.namespace == ns);
                }
                Ok(all)
            }
            Backend::Kube(k) => k.list().await,
        }
    }

    async fn get(&self, name: &str) -> Result<PolicyView, ClientError> {
        match self {
            Backend::Http(h) => h.get(name).await,
            Backend::Kube(k) => k.get(name).await,
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// `mlcanary status`.
pub fn run_status(args: &StatusArgs, out: &mut impl Write) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let backend = Backend::connect(&args.connection, args.all_namespaces).await?;
        if args.watch {
            tokio::select! {
                r = watch(&backend, args, out) => r,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        } else {
            status_once(&backend, args, out).await.map(|_| ())
        }
    })
}

/// Print the policies once; returns whether every one shown has finished.
pub async fn status_once(
    backend: &Backend,
    args: &StatusArgs,
    out: &mut impl Write,
) -> Result<bool, CliError> {
    let (text, done) = render(backend, args).await?;
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(done)
}

async fn render(backend: &Backend, args: &StatusArgs) -> Result<(String, bool), CliError> {
    let views = match &args.policy {
        Some(name) => vec![backend.get(name).await?],
        None => backend.list(args.connection.namespace.as_deref()).await?,
    };
    let done = views.iter().all(|v| v.phase.is_terminal());
    let text = match (args.output, &args.policy) {
        (Output::Json, Some(_)) => format!("{}\n", serde_json::to_string_pretty(&views[0])?),
        (Output::Json, None) => format!("{}\n", serde_json::to_string_pretty(&views)?),
        (Output::Table, Some(_)) => detail(&views[0]),
        (Output::Table, None) if views.is_empty() => "no CanaryPolicies found\n".to_owned(),
        (Output::Table, None) => table(&views),
    };
    Ok((text, done))
}

/// Print whenever the output changes, until every policy shown has finished.
async fn watch(backend: &Backend, args: &StatusArgs, out: &mut impl Write) -> Result<(), CliError> {
    let mut last = String::new();
    loop {
        let (text, done) = render(backend, args).await?;
        if text != last {
            if !last.is_empty() {
                writeln!(out, "---")?;
            }
            out.write_all(text.as_bytes())?;
            out.flush()?;
            last = text;
        }
        if done {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// `mlcanary promote|abort|pause|resume POLICY`.
pub fn run_command(cmd: Command, args: &CommandArgs, out: &mut impl Write) -> Result<(), CliError> {
    runtime()?.block_on(async {
        let backend = Backend::connect(&args.connection, false).await?;
        send_command(&backend, cmd, &args.policy, SystemTime::now(), out).await
    })
}

/// Send `cmd` for `policy` and say what happens next.
pub async fn send_command(
    backend: &Backend,
    cmd: Command,
    policy: &str,
    now: SystemTime,
    out: &mut impl Write,
) -> Result<(), CliError> {
    let name = cmd.name();
    match backend {
        Backend::Http(h) => {
            h.command(policy, cmd).await?;
            writeln!(out, "{name} accepted for {policy}")?;
        }
        Backend::Kube(k) => {
            let id = new_command_id(now);
            let ns = k.command(policy, cmd, &id).await?;
            writeln!(
                out,
                "{name} requested for {ns}/{policy} (command id {id}); the controller applies it at once"
            )?;
            writeln!(out, "follow it: mlcanary status {policy} -n {ns} --watch")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
