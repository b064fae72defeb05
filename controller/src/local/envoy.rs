//! The Envoy this process starts with `--envoy`: a child that is killed when the guard drops (normal
//! exit, error, Ctrl-C / SIGTERM handled by the loop), so `mlcanary local` never leaves an Envoy
//! behind. Ports may be 0: the admin address is read back from `--admin-address-path` and the
//! listener's from the admin `/listeners`.
//!
//! Supervision: an Envoy that exits while the loop runs is started again on the same bootstrap —
//! the xDS files on disk already hold the current split, so the new Envoy serves exactly what the
//! dead one did — unless it keeps dying: more than [`MAX_QUICK_RESTARTS`] deaths in a row, each
//! within [`MIN_UPTIME`] of its start, is an error (exit 1). With fixed ports it comes back on the
//! same addresses; with port 0 on new ones (written to `status.json`).
//!
//! An Envoy left behind by a previous `mlcanary local` that was killed (SIGKILL gives it no chance
//! to stop its child) is stopped by the next one on the same work directory before it starts its
//! own: see [`stop_orphan`].

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::traffic::envoy_files::bootstrap::LISTENER;

/// How long Envoy gets to load the Wasm module and answer `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// An Envoy that ran at least this long before exiting is restarted without counting against
/// [`MAX_QUICK_RESTARTS`].
pub const MIN_UPTIME: Duration = Duration::from_secs(30);
/// Quick deaths in a row tolerated before giving up.
pub const MAX_QUICK_RESTARTS: u32 = 3;

#[derive(Debug, Error)]
pub enum EnvoyError {
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("envoy exited during start-up ({status}); last log lines:\n{log}")]
    Exited { status: String, log: String },
    #[error("envoy not ready after {0:?}; see {1}")]
    NotReady(Duration, String),
    #[error("envoy exited ({status}) {deaths} times in a row within {MIN_UPTIME:?} of its start; giving up")]
    CrashLoop { status: String, deaths: u32 },
}

/// A running Envoy child.
#[derive(Debug)]
pub struct EnvoyChild {
    child: Child,
    log: PathBuf,
    bin: PathBuf,
    config: PathBuf,
    admin_file: PathBuf,
    started: Instant,
    quick_deaths: u32,
    /// `http://127.0.0.1:PORT`.
    pub admin: String,
    /// `127.0.0.1:PORT` of the listener.
    pub listener: String,
}

fn log_tail(log: &Path) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

impl EnvoyChild {
    /// Start `bin -c config` with its log in `dir/envoy.log` and wait until it is ready.
    pub async fn start(bin: &Path, config: &Path, dir: &Path) -> Result<EnvoyChild, EnvoyError> {
        let log = dir.join("envoy.log");
        let admin_file = dir.join("admin.txt");
        let out = File::create(&log).map_err(|source| EnvoyError::Spawn {
            bin: bin.display().to_string(),
            source,
        })?;
        let child = spawn(bin, config, &admin_file, out)?;
        let mut e = EnvoyChild {
            child,
            log,
            bin: bin.to_path_buf(),
            config: config.to_path_buf(),
            admin_file,
            started: Instant::now(),
            quick_deaths: 0,
            admin: String::new(),
            listener: String::new(),
        };
        e.wait_ready().await?;
        Ok(e)
    }

    /// Start Envoy again if it has exited: `Ok(true)` when it was restarted (new pid; with port 0,
    /// new addresses), `Ok(false)` when it is running, an error when it is crash-looping or will
    /// not come back.
    pub async fn keep_alive(&mut self) -> Result<bool, EnvoyError> {
        let status = match self.child.try_wait() {
            Ok(Some(status)) => status.to_string(),
            _ => return Ok(false),
        };
        if self.started.elapsed() < MIN_UPTIME {
            self.quick_deaths += 1;
        } else {
            self.quick_deaths = 1;
        }
        if self.quick_deaths > MAX_QUICK_RESTARTS {
            return Err(EnvoyError::CrashLoop {
                status,
                deaths: self.quick_deaths,
            });
        }
        tracing::warn!(%status, "envoy exited; starting it again");
        // Appended: the dead Envoy's last words stay in the log.
        let out = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&self.log)
            .map_err(|source| EnvoyError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        self.child = spawn(&self.bin, &self.config, &self.admin_file, out)?;
        self.started = Instant::now();
        self.admin.clear();
        self.listener.clear();
        self.wait_ready().await?;
        Ok(true)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self) -> Result<(), EnvoyError> {
        let admin_file = self.admin_file.clone();
        crate::tls::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| EnvoyError::NotReady(Duration::ZERO, e.to_string()))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(EnvoyError::Exited {
                    status: status.to_string(),
                    log: log_tail(&self.log),
                });
            }
            if self.admin.is_empty() {
                if let Ok(a) = fs::read_to_string(&admin_file) {
                    if !a.trim().is_empty() {
                        self.admin = format!("http://{}", a.trim());
                    }
                }
            }
            if !self.admin.is_empty() {
                if self.listener.is_empty() {
                    if let Some(l) = listener_address(&client, &self.admin).await {
                        self.listener = l;
                    }
                }
                let ready = client
                    .get(format!("{}/ready", self.admin))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready && !self.listener.is_empty() {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(EnvoyError::NotReady(
            READY_TIMEOUT,
            self.log.display().to_string(),
        ))
    }
}

/// `bin -c config`, its output to `out`; the admin address is written to `admin_file`.
fn spawn(bin: &Path, config: &Path, admin_file: &Path, out: File) -> Result<Child, EnvoyError> {
    let spawn_err = |source| EnvoyError::Spawn {
        bin: bin.display().to_string(),
        source,
    };
    let _ = fs::remove_file(admin_file);
    let err = out.try_clone().map_err(spawn_err)?;
    Command::new(bin)
        .arg("-c")
        .arg(config)
        // No shared memory with other Envoys on the machine; two workers are plenty locally.
        .args(["--disable-hot-restart", "--concurrency", "2", "-l", "info"])
        .arg("--admin-address-path")
        .arg(admin_file)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(spawn_err)
}

/// Stop the Envoy `pid` if it is one started on `config` (this work directory's bootstrap) — an
/// orphan of an `mlcanary local` that was killed — and wait until it is gone, so that the Envoy
/// started next can take its ports. SIGTERM, then SIGKILL after 5 s. Returns whether it was one.
///
/// Replacing rather than adopting it: the new Envoy is a real child again (supervised, stopped on
/// exit) and runs the bootstrap rendered from the current arguments. It loads the split from the
/// same files, so no weight changes; the listener is down for the second or two Envoy needs to
/// start.
pub fn stop_orphan(pid: u32, config: &Path) -> bool {
    if !started_on(pid, config) {
        return false;
    }
    let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
        return false;
    };
    for signal in [rustix::process::Signal::TERM, rustix::process::Signal::KILL] {
        let _ = rustix::process::kill_process(p, signal);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if gone(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    gone(pid)
}

/// `pid` is a live process whose command line is `... -c <config> ...`.
fn started_on(pid: u32, config: &Path) -> bool {
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
    let want = config.as_os_str().as_encoded_bytes();
    !gone(pid) && args.windows(2).any(|w| w[0] == b"-c" && w[1] == want)
}

/// Exited: no such process, or a zombie no one has reaped yet (its sockets are closed).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        Err(_) => true,
    }
}

/// The bound address of our listener, from `/listeners?format=json`.
async fn listener_address(client: &reqwest::Client, admin: &str) -> Option<String> {
    let body = client
        .get(format!("{admin}/listeners?format=json"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let l = v["listener_statuses"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == LISTENER)?;
    let sa = &l["local_address"]["socket_address"];
    let port = sa["port_value"].as_u64().filter(|&p| p != 0)?;
    Some(format!("{}:{port}", sa["address"].as_str()?))
}

impl Drop for EnvoyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
