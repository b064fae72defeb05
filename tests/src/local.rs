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

    /// One policy's status, by its key `namespace/name` (`default/…` for a file without one).
    pub fn policy(&self, key: &str) -> Option<Value> {
        self.status().map(|s| s["policies"][key].clone())
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

    /// SIGTERM, then wait for the exit (SIGKILL after [`crate::patience::SETTLE`]).
    pub fn terminate(&mut self) -> Option<ExitStatus> {
        if self.try_exit().is_none() {
            signal(self.child.id(), "-TERM");
            if self.wait_exit(crate::patience::SETTLE).is_none() {
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
    /// What a test runs behind a rollout: two threads, bounded by [`crate::patience::TRAFFIC`]
    /// (longer than any test waits) and [`crate::patience::TRAFFIC_REQUESTS`].
    pub fn background(port: u16, host: &str) -> Traffic {
        Traffic::start(
            port,
            host,
            2,
            crate::patience::TRAFFIC_REQUESTS,
            crate::patience::TRAFFIC,
        )
    }

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
/// `x-user-id`, one error-rate check (at most 1 %), `failureThreshold` 2. `steps` is YAML, e.g.
/// `"[20, 50]"`. `progressDeadline` is 30 minutes, beyond any test's waits: a test that holds for
/// want of data (an outage, a slow machine) must not turn into a deadline rollback.
pub fn error_rate_policy(interval: &str, steps: &str, min_requests: u32) -> String {
    policy_yaml(
        &format!("interval: {interval}, steps: {steps}"),
        min_requests,
    )
}

/// [`error_rate_policy`] with `manualGate`: after the last step it waits for a `promote` instead of
/// promoting, still judging (so it can be rolled back or aborted there). For tests that break or
/// abort the canary mid-rollout: however slow the machine, the rollout cannot end Promoted before
/// the test acts.
pub fn error_rate_policy_gated(interval: &str, steps: &str, min_requests: u32) -> String {
    policy_yaml(
        &format!("interval: {interval}, steps: {steps}, manualGate: true"),
        min_requests,
    )
}

/// [`error_rate_policy`] with an open-ended pause at every step (`pauses[].step` without a
/// duration): the weight holds until a `resume` (the `--http` API), so a test can measure at a
/// step for as long as the machine needs.
pub fn error_rate_policy_paused(interval: &str, steps: &str, min_requests: u32) -> String {
    let n = steps.split(',').count();
    let pauses: Vec<String> = (0..n).map(|i| format!("{{step: {i}}}")).collect();
    policy_yaml(
        &format!(
            "interval: {interval}, steps: {steps}, pauses: [{}]",
            pauses.join(", ")
        ),
        min_requests,
    )
}

fn policy_yaml(schedule: &str, min_requests: u32) -> String {
    format!(
        "apiVersion: mlcanary.io/v1alpha1
kind: CanaryPolicy
metadata: {{name: fraud-model}}
spec:
  target: {{virtualService: fraud-model, hosts: [fraud-model], wasmPlugin: mlcanary}}
  routing:
    sticky: {{header: x-user-id}}
  schedule: {{{schedule}}}
  analysis:
    failureThreshold: 2
    minRequests: {min_requests}
    checks:
    - name: errors
      errorRate: {{max: 0.01}}
  progressDeadline: 30m
"
    )
}

/// `n` requests through Envoy with fresh user ids (`{tag}-{i}`), counted by the upstream that
/// answered (`status N` when no upstream's body came back, e.g. Envoy's own 503).
pub fn served_by(port: u16, host: &str, tag: &str, n: usize) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let user = format!("{tag}-{i}");
        let who = match http::get(
            port,
            host,
            "/v1/models/fraud:predict",
            &[("x-user-id", &user)],
        ) {
            Ok(r) => r
                .served_by()
                .unwrap_or_else(|| format!("status {}", r.status)),
            Err(e) => format!("error {}", e.kind()),
        };
        *out.entry(who).or_default() += 1;
    }
    out
}

/// Wait (up to [`crate::patience::SETTLE`]) until [`served_by`] finds `n` fresh users all served
/// by `variant` — Envoy applies a new split when its file watch fires, a moment after
/// `status.json` says so. `Err` with the last counts if it never does.
pub fn wait_all_served_by(
    port: u16,
    host: &str,
    variant: &str,
    n: usize,
) -> Result<HashMap<String, usize>, HashMap<String, usize>> {
    let mut last = HashMap::new();
    let mut round = 0;
    let ok = wait_for(crate::patience::SETTLE, || {
        round += 1;
        last = served_by(port, host, &format!("all-{variant}-{round}"), n);
        (last.get(variant) == Some(&n)).then_some(())
    });
    ok.map(|()| last.clone()).ok_or(last)
}

/// One progress line of `mlcanary local` (`controller/src/local/report.rs`): `TIME POLICY PHASE
/// canary=W% [step=i/n] failed=f/t | CHECK: OUTCOME canary=.. stable=.. limit=.. n=NC/NS | ...
/// | EVENT ...`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressLine {
    pub phase: String,
    /// The canary weight after this tick, in basis points.
    pub canary_bp: u64,
    /// The verdicts of the window judged at this tick (empty for `no data`).
    pub checks: Vec<CheckLine>,
    pub line: String,
}

/// One verdict on a progress line.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckLine {
    pub name: String,
    pub outcome: String,
    pub n_canary: u64,
    pub n_stable: u64,
}

/// The progress lines of `policy` in `output` (e.g. [`Mlcanary::output`]), in order.
pub fn progress_lines(output: &str, policy: &str) -> Vec<ProgressLine> {
    output
        .lines()
        .filter_map(|l| parse_progress_line(l, policy))
        .collect()
}

fn parse_progress_line(line: &str, policy: &str) -> Option<ProgressLine> {
    let mut parts = line.split(" | ");
    let head: Vec<&str> = parts.next()?.split_whitespace().collect();
    if head.get(1) != Some(&policy) {
        return None;
    }
    let phase = head.get(2)?.to_string();
    let pct: f64 = head
        .get(3)?
        .strip_prefix("canary=")?
        .strip_suffix('%')?
        .parse()
        .ok()?;
    let checks = parts
        .filter_map(|p| {
            let (name, rest) = p.split_once(": ")?;
            let mut words = rest.split_whitespace();
            let outcome = words.next()?.to_string();
            let (nc, ns) = words.find_map(|w| w.strip_prefix("n="))?.split_once('/')?;
            Some(CheckLine {
                name: name.to_string(),
                outcome,
                n_canary: nc.parse().ok()?,
                n_stable: ns.parse().ok()?,
            })
        })
        .collect();
    Some(ProgressLine {
        phase,
        canary_bp: (pct * 100.0).round() as u64,
        checks,
        line: line.to_string(),
    })
}

/// Judged windows in which the canary had weight but no requests were counted for it — windows
/// lost by the metrics source. The weight during a window is the one the previous tick left
/// (a tick judges the interval behind it, then moves the weight). Counted from the first window
/// with canary requests on: before it, a fresh Prometheus may not have scraped the canary's series
/// twice yet. Returns (windows checked, the lost windows' lines).
pub fn lost_canary_windows(lines: &[ProgressLine]) -> (usize, Vec<String>) {
    let first = lines
        .iter()
        .position(|l| l.checks.iter().any(|c| c.n_canary > 0));
    let Some(first) = first else {
        return (0, Vec::new());
    };
    let mut checked = 0;
    let mut lost = Vec::new();
    for w in lines[first.max(1) - 1..].windows(2) {
        let (before, tick) = (&w[0], &w[1]);
        if before.canary_bp == 0 || tick.checks.is_empty() {
            continue;
        }
        checked += 1;
        if tick.checks.iter().any(|c| c.n_canary == 0) {
            lost.push(tick.line.clone());
        }
    }
    (checked, lost)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_lines_are_parsed_and_lost_windows_found() {
        // As `controller/src/local/report.rs` writes them.
        let out = "\
mlcanary local: envoy listening on 127.0.0.1:1, admin http://127.0.0.1:2, metrics from x, workdir w
T fraud-model Progressing canary=10.00% step=1/9 failed=0/2 | started at 10.00%
T fraud-model Progressing canary=10.00% step=1/9 failed=0/2 | errors: inconclusive canary=- stable=- limit=0.0100 n=0/0 | held (NoConclusiveData)
T other Progressing canary=50.00% step=1/2 failed=0/2 | errors: inconclusive canary=- stable=0.0000 limit=0.0100 n=0/90
T fraud-model Progressing canary=20.00% step=2/9 failed=0/2 | errors: pass canary=0.0000 stable=0.0000 limit=0.0100 n=40/400 | advanced 10.00% -> 20.00%
T fraud-model Progressing canary=20.00% step=2/9 failed=0/2 | no data (query: failed to send request)
T fraud-model Progressing canary=40.00% step=4/9 failed=0/2 | errors: inconclusive canary=- stable=0.0000 limit=0.0100 n=0/1490 | held (NoConclusiveData)
T fraud-model RolledBack canary=0.00% failed=2/2 | errors: fail canary=0.2000 stable=0.0000 limit=0.0100 n=50/300 | rolled back from 40.00%: 2 consecutive failed analyses (failureThreshold 2): errors
";
        let lines = progress_lines(out, "fraud-model");
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[2].canary_bp, 2000);
        assert_eq!(lines[5].phase, "RolledBack");
        assert_eq!(
            lines[5].checks,
            [CheckLine {
                name: "errors".into(),
                outcome: "fail".into(),
                n_canary: 50,
                n_stable: 300
            }]
        );
        assert!(lines[3].checks.is_empty(), "no data is no verdict");
        // Start-up (n=0/0 before the first canary data) is not counted; the 40 % window is lost.
        let (checked, lost) = lost_canary_windows(&lines);
        assert_eq!(checked, 3);
        assert_eq!(lost.len(), 1);
        assert!(lost[0].contains("n=0/1490"), "{lost:?}");
    }
}
