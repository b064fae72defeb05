//! `mlcanary local`: the rollout loop without Kubernetes. A policy file in; a file-watching Envoy
//! (started here with `--envoy`, or by the user from `DIR/envoy.yaml`) out; the same
//! [`crate::engine`] as the kube loop in between.
//!
//! Work directory layout: `envoy.yaml` (bootstrap), `ecds/ecds.yaml` (filter config),
//! `rds/rds.yaml` (routes), `status.json` (every policy's status and Envoy's listener address,
//! rewritten after every tick), `envoy.log`. A `status.json` from an earlier run is resumed.
//!
//! Exit: 0 when every policy is Promoted, 1 as soon as every policy has ended and one is
//! RolledBack (or Envoy keeps dying, or a write failed for good), 2 for a bad policy file or
//! arguments — nothing is written then, 5 when another `mlcanary local` holds the work directory's
//! lock ([`lock`]) — nothing is touched then. `--once` ticks every policy once and exits 0 (1
//! if one is RolledBack).
//! `--watch` keeps Envoy serving at the final split after every policy has ended, until a signal,
//! then exits with the code above. Ctrl-C / SIGTERM stop the loop and Envoy with it; before every
//! policy has ended that is exit 130.

pub mod envoy;
pub mod lock;
pub mod report;
pub mod serve;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use clap::Args;
use thiserror::Error;
use tokio::time::Instant;

use crate::engine::{render_all, system_clock, Engine, EngineError, TickInput};
use crate::exit::Exit;
use crate::hooks::HttpSender;
use crate::metrics::{EnvoySource, MetricsError, MetricsSource, PrometheusSource, Reading};
use crate::policy::file::{load, FileError};
use crate::policy::{CanaryPolicyStatus, Phase, PolicyKey, ValidatedPolicy};
use crate::record::Recorder;
use crate::server::ServerState;
use crate::traffic::envoy_files::{EnvoyFilesTarget, FilesError, Upstream, BOOTSTRAP_FILE};
use crate::ui::CommandRequest;
use envoy::{EnvoyChild, EnvoyError};
use mlcanary_core::weights::Weights;
use mlcanary_core::window::Mark;
use report::{progress_line, StatusFile};

/// Arguments of `mlcanary local`.
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// The CanaryPolicy YAML file (one or more documents).
    #[arg(long)]
    pub policy: PathBuf,
    /// `VARIANT=HOST:PORT`, once per variant (subset) name used by the policies.
    #[arg(long = "upstream", value_name = "VARIANT=HOST:PORT", required = true)]
    pub upstreams: Vec<String>,
    /// Where envoy.yaml, the xDS files and status.json go (created if missing).
    #[arg(long)]
    pub workdir: PathBuf,
    /// Start this Envoy binary as a child (killed on exit); without it, run Envoy yourself with
    /// `envoy -c DIR/envoy.yaml`.
    #[arg(long)]
    pub envoy: Option<PathBuf>,
    /// The filter module (default: `$MLCANARY_WASM`, else
    /// `target/wasm32-wasip1/release/mlcanary_filter.wasm`).
    #[arg(long)]
    pub wasm: Option<PathBuf>,
    /// Envoy's listener.
    #[arg(long, default_value = "127.0.0.1:10000")]
    pub listen: SocketAddr,
    /// Envoy's admin port on 127.0.0.1 (0: any free port, only with `--envoy`).
    #[arg(long, default_value_t = 9901)]
    pub admin_port: u16,
    /// Read metrics from this Prometheus (which must scrape Envoy's admin `/stats/prometheus`)
    /// instead of scraping Envoy directly.
    #[arg(long)]
    pub prometheus: Option<String>,
    /// Tick every policy once, then exit.
    #[arg(long)]
    pub once: bool,
    /// Keep Envoy serving at the final split after every policy has ended, until Ctrl-C / SIGTERM
    /// (then exit with the code the rollout earned: 0 promoted, 1 rolled back).
    #[arg(long, conflicts_with = "once")]
    pub watch: bool,
    /// Serve the status page, its JSON API (`/api/policies`) and `/metrics` here. Port 0 (the
    /// default) takes any free port, printed at start and written to `status.json` as `http`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    pub http: SocketAddr,
    /// Where the Secrets of `spec.feedback.secretRef` are, laid out as Kubernetes mounts a Secret:
    /// `DIR/<secret>/key` (and `previousKey` during a rotation). Default: `secrets/` beside the
    /// policy file.
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
}

/// Why `mlcanary local` stopped with an error.
#[derive(Debug, Error)]
pub enum LocalError {
    #[error("{0}")]
    Policy(#[from] FileError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Files(#[from] FilesError),
    #[error("{0}")]
    Engine(#[from] EngineError),
    #[error("{0}")]
    Envoy(#[from] EnvoyError),
    #[error("metrics source: {0}")]
    Metrics(#[from] MetricsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Another `mlcanary local` runs on the same `--workdir` (exit 5; nothing was touched).
    #[error("{0}")]
    Locked(#[from] lock::LockError),
}

impl LocalError {
    /// 2 for input the user must fix (nothing was applied), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            LocalError::Policy(_) | LocalError::Usage(_) => Exit::BadInput.code(),
            LocalError::Locked(lock::LockError::Held { .. }) => Exit::Locked.code(),
            _ => Exit::Failed.code(),
        }
    }
}

/// How the loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every policy Promoted (or `--once` with none rolled back).
    Done,
    /// Some policy RolledBack.
    RolledBack,
    /// Stopped by a signal.
    Interrupted,
}

impl Outcome {
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => Exit::Done.code(),
            Outcome::RolledBack => Exit::RolledBack.code(),
            Outcome::Interrupted => Exit::Interrupted.code(),
        }
    }
}

/// `VARIANT=HOST:PORT`.
pub fn parse_upstream(s: &str) -> Result<Upstream, LocalError> {
    let bad = || LocalError::Usage(format!("--upstream {s:?}: expected VARIANT=HOST:PORT"));
    let (variant, addr) = s.split_once('=').ok_or_else(bad)?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if variant.is_empty() || host.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok(Upstream {
        variant: variant.to_owned(),
        host: host.to_owned(),
        port,
    })
}

/// The metrics source chosen on the command line (an enum: the trait is not object-safe).
enum Source {
    Envoy(EnvoySource),
    Prometheus(PrometheusSource),
}

impl MetricsSource for Source {
    async fn prepare(&mut self, policies: &[&ValidatedPolicy], now: SystemTime) {
        match self {
            Source::Envoy(s) => s.prepare(policies, now).await,
            Source::Prometheus(s) => s.prepare(policies, now).await,
        }
    }

    fn prepared_for(&self, policy: &PolicyKey) -> bool {
        match self {
            Source::Envoy(s) => s.prepared_for(policy),
            Source::Prometheus(s) => s.prepared_for(policy),
        }
    }

    async fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        match self {
            Source::Envoy(s) => s.fetch(policy, since, now).await,
            Source::Prometheus(s) => s.fetch(policy, since, now).await,
        }
    }
}

/// Every policy at the weight its status says: the peers a tick, a command or start-up renders
/// one filter config with.
fn at_current_weights(managed: &[Managed]) -> Vec<(&ValidatedPolicy, Weights)> {
    managed
        .iter()
        .map(|m| (&m.policy, m.status.weights()))
        .collect()
}

/// One policy under the loop.
struct Managed {
    policy: ValidatedPolicy,
    status: CanaryPolicyStatus,
    due: Instant,
}

/// `t` as RFC 3339 to the second, as progress lines and `status.json` show times.
fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Everything checked before anything is written or started.
/// A Secret as a mounted volume holds it: one file per key (unreadable files are absent keys).
fn read_secret_dir(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut data = std::collections::BTreeMap::new();
    for name in [
        mlcanary_core::policy::feedback::SECRET_KEY,
        mlcanary_core::policy::feedback::SECRET_PREVIOUS_KEY,
    ] {
        if let Ok(bytes) = std::fs::read(dir.join(name)) {
            data.insert(name.to_owned(), bytes);
        }
    }
    data
}

struct Plan {
    policies: Vec<ValidatedPolicy>,
    upstreams: Vec<Upstream>,
    wasm: PathBuf,
}

fn plan(args: &LocalArgs) -> Result<Plan, LocalError> {
    let mut policies: Vec<ValidatedPolicy> =
        load(&args.policy)?.into_iter().map(|(_, v)| v).collect();
    let secrets = args.secrets.clone().unwrap_or_else(|| {
        args.policy
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join("secrets")
    });
    for p in &mut policies {
        if let Some(f) = &mut p.feedback {
            let data = read_secret_dir(&secrets.join(&f.secret));
            f.set_keys(&data).map_err(|e| {
                LocalError::Usage(format!(
                    "policy {}: {e} (read from {})",
                    p.name,
                    secrets.join(&f.secret).display()
                ))
            })?;
        }
    }
    let upstreams = args
        .upstreams
        .iter()
        .map(|s| parse_upstream(s))
        .collect::<Result<Vec<_>, _>>()?;
    for p in &policies {
        for subset in [&p.stable_subset, &p.canary_subset] {
            if !upstreams.iter().any(|u| &u.variant == subset) {
                return Err(LocalError::Usage(format!(
                    "policy {}: no --upstream {subset}=HOST:PORT for its variant {subset:?}",
                    p.name
                )));
            }
        }
    }
    if args.envoy.is_none() && args.admin_port == 0 {
        return Err(LocalError::Usage(
            "--admin-port 0 needs --envoy (the port is read back from the Envoy started here)"
                .into(),
        ));
    }
    let wasm = args
        .wasm
        .clone()
        .or_else(|| std::env::var_os("MLCANARY_WASM").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("target/wasm32-wasip1/release/mlcanary_filter.wasm"));
    let wasm = std::fs::canonicalize(&wasm).map_err(|e| {
        LocalError::Usage(format!(
            "--wasm {}: {e} (build it with `cargo build -p mlcanary-filter --target \
             wasm32-wasip1 --release`)",
            wasm.display()
        ))
    })?;
    Ok(Plan {
        policies,
        upstreams,
        wasm,
    })
}

/// Run `mlcanary local` to the end on a fresh runtime; progress lines go to `out`.
pub fn run(args: &LocalArgs, out: &mut impl Write) -> Result<Outcome, LocalError> {
    let plan = plan(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let running = set_up(args, plan, out).await?;
        run_loop(args, running, out).await
    })
}

/// Everything the loop works with once set up.
struct Running {
    managed: Vec<Managed>,
    target: EnvoyFilesTarget,
    child: Option<EnvoyChild>,
    source: Source,
    server: Arc<ServerState>,
    recorder: Recorder,
    commands: tokio::sync::mpsc::Receiver<CommandRequest>,
    status_file: StatusFile,
    status_path: PathBuf,
    engine: Engine,
    /// Held until the process ends.
    _lock: lock::WorkdirLock,
}

/// Lock the work directory, resume `status.json`, write Envoy's files at every policy's current
/// split, start Envoy (with `--envoy`), the metrics source and the status page.
async fn set_up(args: &LocalArgs, plan: Plan, out: &mut impl Write) -> Result<Running, LocalError> {
    let dir = &args.workdir;
    std::fs::create_dir_all(dir)?;
    let dir = std::fs::canonicalize(dir)?;
    // Before anything in the directory is read or written.
    let lock = lock::WorkdirLock::acquire(&dir)?;
    let status_path = dir.join("status.json");
    let previous = StatusFile::read(&status_path).unwrap_or_default();
    // An Envoy a killed mlcanary left running on this directory: replaced by ours (see envoy.rs).
    if let Some(pid) = previous.envoy_pid {
        if envoy::stop_orphan(pid, &dir.join(BOOTSTRAP_FILE)) {
            writeln!(
                out,
                "mlcanary local: stopped envoy {pid} left by a previous run"
            )?;
        }
    }
    let start = Instant::now();
    let managed: Vec<Managed> = plan
        .policies
        .into_iter()
        .map(|policy| Managed {
            status: previous
                .policies
                .get(&policy.key().to_string())
                .cloned()
                .unwrap_or_default(),
            policy,
            due: start,
        })
        .collect();

    // The files Envoy needs at start-up: every policy at its current split, in one write (the
    // engine is told, so the first ticks rewrite nothing that is already in effect).
    let target = EnvoyFilesTarget::in_dir(&dir, plan.wasm)?;
    let desired = render_all(&at_current_weights(&managed))?;
    target.write_all(&desired)?;
    let bootstrap = target.write_bootstrap(args.listen, args.admin_port, &plan.upstreams)?;

    let child = match &args.envoy {
        Some(bin) => Some(EnvoyChild::start(bin, &bootstrap, &dir).await?),
        None => None,
    };
    let admin = child.as_ref().map_or_else(
        || format!("http://127.0.0.1:{}", args.admin_port),
        |c| c.admin.clone(),
    );
    let listener = child
        .as_ref()
        .map_or_else(|| args.listen.to_string(), |c| c.listener.clone());
    let source = match &args.prometheus {
        Some(url) => Source::Prometheus(PrometheusSource::new(url)?),
        None => Source::Envoy(EnvoySource::new(&admin)?),
    };
    let engine = Engine::new(system_clock(), Arc::new(HttpSender::default()));
    for d in &desired {
        engine.assume_written(d);
    }
    let (ui, commands) = crate::ui::Ui::with_commands();
    for m in &managed {
        ui.register(
            m.policy.namespace_or_default(),
            &m.policy,
            &m.status,
            engine.now(),
        );
    }
    let (http, server) = serve::start(args.http, ui).await?;
    server.health.set_ready(true);
    server.health.beat();
    let status_file = StatusFile {
        updated: rfc3339(engine.now()),
        http: Some(format!("http://{http}/")),
        listener: Some(listener.clone()),
        admin: Some(admin.clone()),
        envoy_pid: child.as_ref().map(EnvoyChild::pid),
        metrics: if args.prometheus.is_some() {
            "prometheus".into()
        } else {
            "envoy".into()
        },
        policies: BTreeMap::new(),
    };
    writeln!(
        out,
        "mlcanary local: envoy listening on {listener}, admin {admin}, metrics from {}, workdir {}",
        args.prometheus.as_deref().unwrap_or(&admin),
        dir.display()
    )?;
    writeln!(out, "status page: http://{http}/")?;
    out.flush()?;
    let recorder = Recorder {
        ui: server.ui.clone(),
        metrics: server.metrics.clone(),
    };
    Ok(Running {
        managed,
        target,
        child,
        source,
        server,
        recorder,
        commands,
        status_file,
        status_path,
        engine,
        _lock: lock,
    })
}

impl Running {
    /// Rewrite `status.json` with every policy's status.
    fn write_status(&mut self) -> Result<(), LocalError> {
        self.status_file.updated = rfc3339(self.engine.now());
        self.status_file.policies = self
            .managed
            .iter()
            .map(|m| (m.policy.key().to_string(), m.status.clone()))
            .collect();
        Ok(self.status_file.write(&self.status_path)?)
    }

    fn all_ended(&self) -> bool {
        self.managed.iter().all(|m| m.status.phase.is_terminal())
    }

    /// Tick every policy that is due as one pass: one read of the metrics for all of them, each
    /// decided, one rendering of the shared filter config at the weights they want and one write
    /// of Envoy's files — then each status, only once its split is in effect (a failed write keeps
    /// every status of the pass; the next pass retries, its windows covering this one).
    async fn tick_due(&mut self, out: &mut impl Write) -> Result<(), LocalError> {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.managed.len())
            .filter(|&i| {
                let m = &self.managed[i];
                m.due <= now && !m.status.phase.is_terminal()
            })
            .collect();
        if due.is_empty() {
            return Ok(());
        }
        let policies: Vec<&ValidatedPolicy> =
            due.iter().map(|&i| &self.managed[i].policy).collect();
        self.source.prepare(&policies, self.engine.now()).await;
        let mut decided = Vec::with_capacity(due.len());
        for &i in &due {
            let m = &self.managed[i];
            let input = TickInput {
                policy: &m.policy,
                status: &m.status,
                peers: &[],
            };
            decided.push(self.engine.decide(input, &mut self.source).await);
        }
        let written = {
            let mut at = at_current_weights(&self.managed);
            for (&i, d) in due.iter().zip(&decided) {
                at[i].1 = d.weights();
            }
            match render_all(&at) {
                Ok(all) => {
                    let desired: Vec<_> = due.iter().map(|&i| all[i].clone()).collect();
                    self.engine.write_all(&desired, &self.target).await
                }
                Err(e) => Err(e),
            }
        };
        match written {
            Ok(applied) => {
                for ((&i, d), applied) in due.iter().zip(decided).zip(applied) {
                    let o = self
                        .engine
                        .conclude(&self.managed[i].policy, d, applied)
                        .await;
                    let m = &self.managed[i];
                    writeln!(out, "{}", progress_line(&rfc3339(o.at), &m.policy, &o))?;
                    self.recorder
                        .record(m.policy.namespace_or_default(), &m.policy, &o);
                    self.managed[i].status = o.status;
                }
            }
            // Every status of the pass stays; the next pass retries the write.
            Err(e) => writeln!(out, "{} write failed: {e}", rfc3339(self.engine.now()))?,
        }
        for &i in &due {
            let m = &mut self.managed[i];
            m.due += m.policy.interval;
            if m.due < now {
                // Fell behind (slow scrape): skip missed ticks rather than burst.
                m.due = now + m.policy.interval;
            }
        }
        Ok(())
    }

    /// Restart Envoy if it died: on the same files, so at the same split; its counters start
    /// again from zero, which the next window reads as a reset (counts since the restart).
    async fn keep_envoy_alive(&mut self, out: &mut impl Write) -> Result<(), LocalError> {
        let Some(c) = self.child.as_mut() else {
            return Ok(());
        };
        if c.keep_alive().await? {
            writeln!(
                out,
                "{} envoy exited; restarted (pid {})",
                rfc3339(self.engine.now()),
                c.pid()
            )?;
            self.status_file.envoy_pid = Some(c.pid());
            self.status_file.admin = Some(c.admin.clone());
            self.status_file.listener = Some(c.listener.clone());
            if let Source::Envoy(_) = self.source {
                self.source = Source::Envoy(EnvoySource::new(&c.admin)?);
            }
        }
        Ok(())
    }
}

/// Tick policies when due, apply commands as they come, stop on a signal or when every policy has
/// ended (unless `--watch`).
async fn run_loop(
    args: &LocalArgs,
    mut r: Running,
    out: &mut impl Write,
) -> Result<Outcome, LocalError> {
    let mut signals = Signals::new()?;
    loop {
        let next = r
            .managed
            .iter()
            .filter(|m| !m.status.phase.is_terminal())
            .map(|m| m.due)
            .min()
            // Only with --watch: everything ended, idle until a signal.
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            Some(req) = r.commands.recv() => {
                serve::handle_command(req, &mut r.managed, &r.target, &mut r.engine, &r.recorder, out).await?;
                r.write_status()?;
                if r.all_ended() && !args.watch {
                    return Ok(ended(&r.managed));
                }
                continue;
            }
            _ = signals.recv() => {
                writeln!(out, "mlcanary local: stopping envoy")?;
                out.flush()?;
                return Ok(if r.all_ended() {
                    ended(&r.managed)
                } else {
                    Outcome::Interrupted
                });
            }
        }
        r.keep_envoy_alive(out).await?;
        r.server.health.beat();
        r.tick_due(out).await?;
        out.flush()?;
        r.write_status()?;
        if args.once || (r.all_ended() && !args.watch) {
            return Ok(ended(&r.managed));
        }
    }
}

/// The outcome once the loop stops with policies in their current phases.
fn ended(managed: &[Managed]) -> Outcome {
    if managed.iter().any(|m| m.status.phase == Phase::RolledBack) {
        Outcome::RolledBack
    } else {
        Outcome::Done
    }
}

/// Ctrl-C and SIGTERM as one stream.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

#[cfg(test)]
mod tests;
