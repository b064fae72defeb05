//! `mlcanary local` as a child process (it starts its own Envoy), and a bounded background traffic
//! generator. The guard stops mlcanary with SIGTERM (so it stops its Envoy), then SIGKILLs both if
//! they are still there.

use std::collections::HashMap;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::envoy::wait_for;
use crate::http;

/// The `mlcanary` binary (`MLCANARY_BIN` overrides; `scripts/test.sh` builds it).
pub fn mlcanary_bin() -> PathBuf {
    let p = std::env::var_os("MLCANARY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/debug/mlcanary"));
    assert!(
        p.exists(),
        "{} is missing: `cargo build -p mlcanary-controller --bin mlcanary` (scripts/test.sh does)",
        p.display()
    );
    p
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// A running `mlcanary local`.
pub struct Mlcanary {
    child: Child,
    pub workdir: PathBuf,
    tmp: tempfile::TempDir,
    exit: Option<ExitStatus>,
}

impl Mlcanary {
    /// Run `mlcanary <args...>` with `policy` written to a file; `{policy}` and `{workdir}` in
    /// `args` are replaced by their paths.
    pub fn spawn(policy: &str, args: &[String]) -> Mlcanary {
        let tmp = tempfile::Builder::new()
            .prefix("mlcanary-local-")
            .tempdir()
            .expect("temp dir");
        let policy_file = tmp.path().join("policy.yaml");
        fs::write(&policy_file, policy).expect("write policy");
        let workdir = tmp.path().join("work");
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                a.replace("{policy}", &policy_file.display().to_string())
                    .replace("{workdir}", &workdir.display().to_string())
            })
            .collect();
        let out = fs::File::create(tmp.path().join("stdout.log")).expect("stdout log");
        let err = fs::File::create(tmp.path().join("stderr.log")).expect("stderr log");
        let child = Command::new(mlcanary_bin())
            .args(&args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn mlcanary");
        Mlcanary {
            child,
            workdir,
            tmp,
            exit: None,
        }
    }

    /// `mlcanary local` in front of the given upstreams, with its own Envoy on free ports.
    pub fn local(policy: &str, upstreams: &[(&str, u16)], extra: &[&str]) -> Mlcanary {
        let mut args: Vec<String> = ["local", "--policy", "{policy}", "--workdir", "{workdir}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (name, port) in upstreams {
            args.push("--upstream".into());
            args.push(format!("{name}=127.0.0.1:{port}"));
        }
        args.push("--envoy".into());
        args.push(crate::envoy_path().display().to_string());
        args.push("--wasm".into());
        args.push(crate::wasm_path().display().to_string());
        args.push("--listen".into());
        args.push("127.0.0.1:0".into());
        args.extend(extra.iter().map(|s| s.to_string()));
        if !extra.contains(&"--admin-port") {
            args.push("--admin-port".into());
            args.push("0".into());
        }
        Mlcanary::spawn(policy, &args)
    }

    /// The parsed `status.json`, once it exists.
    pub fn status(&self) -> Option<Value> {
        let text = fs::read_to_string(self.workdir.join("status.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// One policy's status.
    pub fn policy(&self, name: &str) -> Option<Value> {
        self.status().map(|s| s["policies"][name].clone())
    }

    /// The listener port from `status.json` (waits for it).
    pub fn listener_port(&mut self, timeout: Duration) -> u16 {
        let port = wait_for(timeout, || {
            self.status()?["listener"]
                .as_str()?
                .rsplit(':')
                .next()?
                .parse::<u16>()
                .ok()
        });
        port.unwrap_or_else(|| panic!("no listener in status.json:\n{}", self.output()))
    }

    /// Poll `status.json` every 20 ms until `f` holds; `None` on timeout or exit.
    pub fn wait_status<T>(
        &mut self,
        timeout: Duration,
        mut f: impl FnMut(&Value) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(v) = self.status().as_ref().and_then(&mut f) {
                return Some(v);
            }
            if self.try_exit().is_some() {
                return self.status().as_ref().and_then(&mut f);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Wait for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        wait_for(timeout, || self.try_exit())
    }

    /// SIGTERM, then wait for the exit (SIGKILL after 10 s).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            signal(self.child.id(), "-TERM");
            if self.wait_exit(Duration::from_secs(10)).is_none() {
                let _ = self.child.kill();
                self.exit = self.child.wait().ok();
            }
        }
        self.exit
    }

    /// stdout and stderr so far.
    pub fn output(&self) -> String {
        let read = |f: &str| fs::read_to_string(self.tmp.path().join(f)).unwrap_or_default();
        format!(
            "--- stdout\n{}--- stderr\n{}--- envoy.log (tail)\n{}",
            read("stdout.log"),
            read("stderr.log"),
            fs::read_to_string(self.workdir.join("envoy.log"))
                .unwrap_or_default()
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }
}

impl Drop for Mlcanary {
    fn drop(&mut self) {
        let envoy = self.status().and_then(|s| s["envoyPid"].as_u64());
        self.terminate();
        // mlcanary kills its Envoy on the way out; this only matters if it could not.
        if let Some(pid) = envoy.and_then(|p| u32::try_from(p).ok()) {
            if fs::metadata(format!("/proc/{pid}")).is_ok() {
                signal(pid, "-KILL");
            }
        }
    }
}

/// Background requests through Envoy with a fresh user id each, counted by upstream. Bounded by a
/// request count and a duration; stopped on drop.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    pub by_upstream: Arc<Mutex<HashMap<String, u64>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Traffic {
    pub fn start(
        port: u16,
        host: &str,
        threads: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let by_upstream = Arc::new(Mutex::new(HashMap::new()));
        let started = Instant::now();
        let threads = (0..threads)
            .map(|t| {
                let (stop, sent, by, host) = (
                    stop.clone(),
                    sent.clone(),
                    by_upstream.clone(),
                    host.to_string(),
                );
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::SeqCst)
                        && sent.load(Ordering::SeqCst) < max_requests
                        && started.elapsed() < max_time
                    {
                        let user = format!("bg{t}-{i}");
                        i += 1;
                        sent.fetch_add(1, Ordering::SeqCst);
                        if let Ok(r) = http::get(
                            port,
                            &host,
                            "/v1/models/fraud:predict",
                            &[("x-user-id", &user)],
                        ) {
                            let who = r
                                .served_by()
                                .unwrap_or_else(|| format!("status {}", r.status));
                            *by.lock().expect("lock").entry(who).or_default() += 1;
                        }
                        // Leave CPU for Envoy and the controller on small machines.
                        std::thread::sleep(Duration::from_millis(1));
                    }
                })
            })
            .collect();
        Traffic {
            stop,
            sent,
            by_upstream,
            threads,
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}
