//! The Envoy this process starts with `--envoy`: a child that is killed when the guard drops (normal
//! exit, error, Ctrl-C / SIGTERM handled by the loop), so `mlcanary local` never leaves an Envoy
//! behind. Ports may be 0: the admin address is read back from `--admin-address-path` and the
//! listener's from the admin `/listeners`.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use thiserror::Error;

use super::bootstrap::LISTENER;

/// How long Envoy gets to load the Wasm module and answer `/ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error)]
pub enum EnvoyError {
    #[error("cannot start {bin}: {source}")]
    Spawn { bin: String, source: std::io::Error },
    #[error("envoy exited during start-up ({status}); last log lines:\n{log}")]
    Exited { status: String, log: String },
    #[error("envoy not ready after {0:?}; see {1}")]
    NotReady(Duration, String),
    #[error("envoy exited ({0})")]
    Died(String),
}

/// A running Envoy child.
#[derive(Debug)]
pub struct EnvoyChild {
    child: Child,
    log: PathBuf,
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
        let admin_file = dir.join("admin.txt");
        let _ = fs::remove_file(&admin_file);
        let log = dir.join("envoy.log");
        let spawn_err = |source| EnvoyError::Spawn {
            bin: bin.display().to_string(),
            source,
        };
        let out = File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(config)
            // No shared memory with other Envoys on the machine; two workers are plenty locally.
            .args(["--disable-hot-restart", "--concurrency", "2", "-l", "info"])
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        let mut e = EnvoyChild {
            child,
            log,
            admin: String::new(),
            listener: String::new(),
        };
        e.wait_ready(&admin_file).await?;
        Ok(e)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Err` once the child has exited.
    pub fn check_alive(&mut self) -> Result<(), EnvoyError> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(EnvoyError::Died(status.to_string())),
            _ => Ok(()),
        }
    }

    async fn wait_ready(&mut self, admin_file: &Path) -> Result<(), EnvoyError> {
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
                if let Ok(a) = fs::read_to_string(admin_file) {
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
