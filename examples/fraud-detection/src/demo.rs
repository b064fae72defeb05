//! The case study, run for real on one machine: two TF-Serving-compatible model servers, a real
//! Envoy with the mlcanary filter driven by `mlcanary local`, and customers' traffic. Round one
//! rolls out v2 against v1; round two rolls out v3 against v2 (now stable); round three rolls out
//! v4 against v2. Each round begins with the policy's shadow phase, so a round also counts which
//! model answered each customer. Every round also sends the labels learnt later — analysts'
//! reviews and chargebacks, [`FeedbackPlan::DEMO`] — back with the tickets the filter signed onto
//! the replies, and counts what the filter made of them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::feedback::{FeedbackPlan, FeedbackTally};
use crate::model::Version;
use crate::server::{self, Options};
use crate::traffic::{self, Plan};

/// Where things are and how fast to go.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    pub mlcanary: PathBuf,
    pub envoy: PathBuf,
    pub wasm: PathBuf,
    pub policy: PathBuf,
    pub workdir: PathBuf,
    /// Requests per second the customers send.
    pub rps: f64,
    /// Give up on a round after this long.
    pub round_timeout: Duration,
    /// Print mlcanary's progress lines as they come.
    pub echo: bool,
}

/// How one round ended.
#[derive(Debug, Clone)]
pub struct RoundResult {
    pub stable: Version,
    pub canary: Version,
    /// `mlcanary local`'s exit code (0 promoted, 1 rolled back).
    pub exit_code: Option<i32>,
    /// The policy's final status from `status.json`.
    pub status: Value,
    pub requests_sent: u64,
    /// Customers' answers by the model version that gave them (`v1`, `v2`, ...): a shadow's
    /// answers never reach a customer.
    pub answers: BTreeMap<String, u64>,
    /// The labels sent back through the feedback path and what the filter made of them (all
    /// zero if the policy has no `feedback`: no reply carries a ticket).
    pub feedback: FeedbackTally,
    pub elapsed: Duration,
}

impl RoundResult {
    pub fn phase(&self) -> &str {
        self.status["phase"].as_str().unwrap_or("?")
    }

    /// The round ended before any live step: rolled back in the shadow phase.
    pub fn stopped_in_shadow(&self) -> bool {
        self.phase() == "RolledBack" && self.status.get("stepIndex").is_none()
    }

    /// Answers customers got from the canary's version.
    pub fn canary_answers(&self) -> u64 {
        let v = format!("v{}", self.canary.number());
        self.answers.get(&v).copied().unwrap_or(0)
    }

    /// The verdicts of the last analysis.
    pub fn verdicts(&self) -> Vec<Value> {
        self.status["lastVerdicts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Names of the checks that failed in the last analysis.
    pub fn failed_checks(&self) -> Vec<String> {
        self.verdicts()
            .iter()
            .filter(|v| v["verdict"] == "fail")
            .filter_map(|v| v["name"].as_str().map(str::to_string))
            .collect()
    }
}

/// Kills the child on drop: a failing demo leaves nothing running.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        // SIGTERM first, so mlcanary stops its Envoy; then make sure.
        let _ = Command::new("kill")
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn read_status(path: &Path) -> Option<Value> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// The Secret `policy.yaml`'s `spec.feedback.secretRef` names.
pub const FEEDBACK_SECRET: &str = "fraud-model-feedback";

/// 32 random bytes (the OS's, read from `/dev/urandom`) in `dir/key`, readable by the owner only.
fn write_key(dir: &Path) -> Result<(), String> {
    use std::io::Read;
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .map_err(|e| format!("/dev/urandom: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join("key");
    std::fs::write(&path, key).map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    Ok(())
}

/// Run one rollout of `canary` against `stable` to its end, sending labels per
/// [`FeedbackPlan::DEMO`].
pub fn round(
    cfg: &DemoConfig,
    name: &str,
    stable: Version,
    canary: Version,
) -> Result<RoundResult, String> {
    let opts = |_| Options {
        model_name: "fraud".into(),
        fail_per_mille: 0,
        delay: Duration::ZERO,
    };
    let s = server::serve("127.0.0.1:0", crate::trained(stable), opts(()), 4)
        .map_err(|e| e.to_string())?;
    let c = server::serve("127.0.0.1:0", crate::trained(canary), opts(()), 4)
        .map_err(|e| e.to_string())?;
    let dir = cfg.workdir.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // The ticket key, as a mounted Secret: a fresh random one per round (only the filter signs
    // and verifies; the application never needs it).
    let secrets = dir.join("secrets");
    write_key(&secrets.join(FEEDBACK_SECRET))?;
    let mut cmd = Command::new(&cfg.mlcanary);
    cmd.arg("local")
        .arg("--secrets")
        .arg(&secrets)
        .arg("--policy")
        .arg(&cfg.policy)
        .args(["--upstream", &format!("stable=127.0.0.1:{}", s.port)])
        .args(["--upstream", &format!("canary=127.0.0.1:{}", c.port)])
        .arg("--workdir")
        .arg(&dir)
        .arg("--envoy")
        .arg(&cfg.envoy)
        .arg("--wasm")
        .arg(&cfg.wasm)
        .args(["--listen", "127.0.0.1:0", "--admin-port", "0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Guard(
        cmd.spawn()
            .map_err(|e| format!("starting {}: {e}", cfg.mlcanary.display()))?,
    );
    let echo = cfg.echo;
    let stdout = child.0.stdout.take();
    let printer = std::thread::spawn(move || {
        for line in stdout
            .map(BufReader::new)
            .into_iter()
            .flat_map(|r| r.lines())
            .map_while(Result::ok)
        {
            if echo {
                println!("  | {line}");
            }
        }
    });

    let status_path = dir.join("status.json");
    let start = Instant::now();
    let listener = loop {
        let status = read_status(&status_path);
        if let Some(l) = status.as_ref().and_then(|s| s["listener"].as_str()) {
            if let Some(http) = status.as_ref().and_then(|s| s["http"].as_str()) {
                println!("   status page: {http} (live while this round runs)");
            }
            break l.to_string();
        }
        if let Ok(Some(code)) = child.0.try_wait() {
            return Err(format!(
                "mlcanary local exited early ({code}); see {}",
                dir.display()
            ));
        }
        // Generous: a busy machine may take long to start Envoy and load the filter.
        if start.elapsed() > Duration::from_secs(180) {
            return Err("Envoy did not come up within 180 s".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let stop = Arc::new(AtomicBool::new(false));
    let plan = Plan {
        target: listener,
        host: "fraud-model".into(),
        model: "fraud".into(),
        rps: cfg.rps,
        duration: cfg.round_timeout,
        max_requests: (cfg.rps * cfg.round_timeout.as_secs_f64()) as u64 + 1,
        users: 20_000,
        seed: u64::from(canary.number()),
        workers: 4,
        feedback: Some(FeedbackPlan::DEMO),
    };
    let traffic = {
        let stop = stop.clone();
        std::thread::spawn(move || traffic::run(&plan, &stop))
    };
    let exit_code = loop {
        if let Ok(Some(code)) = child.0.try_wait() {
            break code.code();
        }
        if start.elapsed() > cfg.round_timeout {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    stop.store(true, Ordering::SeqCst);
    let tally = traffic.join().unwrap_or_default();
    drop(child);
    let _ = printer.join();
    let status = read_status(&status_path)
        .and_then(|s| {
            s["policies"]
                .as_object()
                .and_then(|p| p.values().next().cloned())
        })
        .unwrap_or(Value::Null);
    Ok(RoundResult {
        stable,
        canary,
        exit_code,
        status,
        requests_sent: tally.sent,
        answers: tally.by_version,
        feedback: tally.feedback,
        elapsed: start.elapsed(),
    })
}

/// The round's line, its labels' line, and one line per check of the last analysis.
pub fn describe(r: &RoundResult) -> String {
    let answers: Vec<String> = r.answers.iter().map(|(v, n)| format!("{v} {n}")).collect();
    let mut out = format!(
        "v{} vs v{}: {}{} (exit {:?}) after {:.0} s, {} requests; customers' answers: {}\n",
        r.canary.number(),
        r.stable.number(),
        r.phase(),
        if r.stopped_in_shadow() {
            " in the shadow phase"
        } else {
            ""
        },
        r.exit_code,
        r.elapsed.as_secs_f64(),
        r.requests_sent,
        answers.join(", ")
    );
    out.push_str(&describe_feedback(&r.feedback));
    for v in r.verdicts() {
        out.push_str(&format!(
            "    {:<22} {:<12} {}\n",
            v["name"].as_str().unwrap_or("?"),
            v["verdict"].as_str().unwrap_or("?"),
            v["message"].as_str().unwrap_or("")
        ));
    }
    out
}

/// `labels: sent, accepted, rejected (by reason)`, and what went wrong if anything did.
fn describe_feedback(f: &FeedbackTally) -> String {
    let reasons: Vec<String> = f.rejected.iter().map(|(k, n)| format!("{k} {n}")).collect();
    let mut out = format!(
        "    labels: {} sent ({} replies carried a ticket), {} accepted, {} rejected",
        f.sent,
        f.tickets,
        f.accepted,
        f.rejected_total()
    );
    if !reasons.is_empty() {
        out.push_str(&format!(" ({})", reasons.join(", ")));
    }
    out.push_str(&format!(", {} unsent at the end", f.unsent));
    if f.non_200 + f.errors > 0 {
        out.push_str(&format!(
            "; {} requests refused, {} unanswered (last: {})",
            f.non_200,
            f.errors,
            f.last_error.as_deref().unwrap_or("?")
        ));
    }
    out.push('\n');
    out
}
