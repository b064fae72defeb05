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
    /// The command line, for [`Mlcanary::rerun`] and [`Mlcanary::second`].
    args: Vec<String>,
    /// The Envoy in `status.json` is this process' (false for a [`Mlcanary::second`] on someone
    /// else's work directory): only then does drop make sure it is gone.
    owns_envoy: bool,
}

/// Start `mlcanary <args>` with its output appended to `dir/stdout.log` and `dir/stderr.log`.
fn launch(dir: &std::path::Path, args: &[String]) -> Child {
    let open = |f: &str| {
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(f))
            .expect("log file")
    };
    Command::new(mlcanary_bin())
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(open("stdout.log"))
        .stderr(open("stderr.log"))
        .spawn()
        .expect("spawn mlcanary")
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
        let child = launch(tmp.path(), &args);
        Mlcanary {
            child,
            workdir,
            tmp,
            exit: None,
            args,
            owns_envoy: true,
        }
    }

    /// The mlcanary process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL mlcanary alone (no chance to stop its Envoy, which is left running), and reap it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.exit
    }

    /// Run the same command again on the same work directory, once the previous run has exited;
    /// its output is appended to the same logs.
    pub fn rerun(&mut self) {
        assert!(self.try_exit().is_some(), "rerun while still running");
        self.child = launch(self.tmp.path(), &self.args);
        self.exit = None;
    }

    /// A second process with the same command line, on the same work directory, while this one
    /// runs. Its drop stops only itself.
    pub fn second(&self) -> Mlcanary {
        let tmp = tempfile::Builder::new()
            .prefix("mlcanary-second-")
            .tempdir()
            .expect("temp dir");
        let child = launch(tmp.path(), &self.args);
        Mlcanary {
            child,
            workdir: self.workdir.clone(),
            tmp,
            exit: None,
            args: self.args.clone(),
            owns_envoy: false,
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

    /// Like [`Mlcanary::local`], on fixed ports: the listener on 127.0.0.1:`listen` and the admin
    /// on `admin`, so they stay the same across an Envoy restart.
    pub fn local_on_ports(
        policy: &str,
        upstreams: &[(&str, u16)],
        listen: u16,
        admin: u16,
        extra: &[&str],
    ) -> Mlcanary {
        let mut args: Vec<String> = ["local", "--policy", "{policy}", "--workdir", "{workdir}"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for (name, port) in upstreams {
            args.push("--upstream".into());
            args.push(format!("{name}=127.0.0.1:{port}"));
        }
        for (flag, value) in [
            ("--envoy", crate::envoy_path().display().to_string()),
            ("--wasm", crate::wasm_path().display().to_string()),
            ("--listen", format!("127.0.0.1:{listen}")),
            ("--admin-port", admin.to_string()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
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

    /// The status page / API base URL (`--http`) from `status.json`, without the trailing slash
    /// (waits for it).
    pub fn http_base(&mut self, timeout: Duration) -> String {
        let base = self.wait_status(timeout, |s| {
            s["http"]
                .as_str()
                .map(|h| h.trim_end_matches('/').to_string())
        });
        base.unwrap_or_else(|| panic!("no `http` in status.json:\n{}", self.output()))
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
        let envoy = self
            .status()
            .and_then(|s| s["envoyPid"].as_u64())
            .filter(|_| self.owns_envoy);
        self.terminate();
        // mlcanary kills its Envoy on the way out; this only matters if it could not.
        if let Some(pid) = envoy.and_then(|p| u32::try_from(p).ok()) {
            if fs::metadata(format!("/proc/{pid}")).is_ok() {
                signal(pid, "-KILL");
            }
        }
    }
}

/// `pid` is a running process (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// SIGKILL `pid` (a process a test did not start as its own child, e.g. mlcanary's Envoy).
pub fn kill_pid(pid: u32) {
    signal(pid, "-KILL");
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

/// The CanaryPolicy most end-to-end tests run: `fraud-model` on host `fraud-model`, sticky on
/// `x-user-id`, one error-rate check (at most 1 %), `failureThreshold` 2, deadline 5 minutes.
/// `steps` is YAML, e.g. `"[20, 50]"`.
pub fn error_rate_policy(interval: &str, steps: &str, min_requests: u32) -> String {
    format!(
        "apiVersion: mlcanary.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: fraud-model}}
spec:
  target: {{virtualService: fraud-model, hosts: [fraud-model], wasmPlugin: mlcanary}}
  routing:
    sticky: {{header: x-user-id}}
  schedule: {{interval: {interval}, steps: {steps}}}
  analysis:
    failureThreshold: 2
    minRequests: {min_requests}
    checks:
    - name: errors
      errorRate: {{max: 0.01}}
  progressDeadline: 5m
"
    )
}
