//! What the local loop shows: one progress line per policy per tick on stdout, and `status.json`
//! (every policy's status plus where Envoy listens) rewritten atomically after every tick, for
//! scripts and tests to read. Pure formatting; the loop does the writing.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::engine::TickOutput;
use crate::policy::{CanaryPolicyStatus, ValidatedPolicy};
use crate::traffic::envoy_files::{write_atomic, FilesError};
use mlcanary_core::events::{describe, percent};

/// The contents of `status.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusFile {
    /// RFC 3339 time of the last write.
    pub updated: String,
    /// `host:port` of Envoy's listener (where to send traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listener: Option<String>,
    /// Envoy's admin base URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<String>,
    /// The status page (`--http`), e.g. `http://127.0.0.1:40123/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The Envoy this process started (with `--envoy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_pid: Option<u32>,
    /// `envoy` (admin scrape) or `prometheus`.
    pub metrics: String,
    /// Every policy's status by name.
    pub policies: BTreeMap<String, CanaryPolicyStatus>,
}

impl StatusFile {
    pub fn write(&self, path: &Path) -> Result<(), FilesError> {
        let text = serde_json::to_string_pretty(self)?;
        write_atomic(path, &text)
    }

    /// The statuses of a previous run, to resume from; nothing when absent or unreadable.
    pub fn read(path: &Path) -> Option<StatusFile> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }
}

fn num(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{x:.4}"))
}

/// One line: time, policy, phase, canary weight, step, failures, each verdict with its numbers (or
/// "no data" and why), then what changed.
pub fn progress_line(time: &str, policy: &ValidatedPolicy, out: &TickOutput) -> String {
    let s = &out.status;
    let mut line = format!(
        "{time} {} {:?} canary={}",
        policy.name,
        s.phase,
        percent(s.canary_weight_bp)
    );
    if let Some(sh) = &s.shadow {
        let _ = write!(line, " shadow={}", percent(sh.mirror_bp));
    } else if let Some(i) = s.step_index {
        let _ = write!(line, " step={}/{}", i + 1, policy.steps_bp.len());
    }
    let _ = write!(
        line,
        " failed={}/{}",
        s.failed_checks, policy.failure_threshold
    );
    match (&out.verdicts, &out.no_data) {
        (Some(vs), _) => {
            for v in vs {
                let _ = write!(
                    line,
                    " | {}: {} canary={} stable={} limit={} n={}/{}",
                    v.check,
                    v.outcome.as_str(),
                    num(v.canary),
                    num(v.stable),
                    num(v.threshold),
                    v.n_canary,
                    v.n_stable
                );
            }
        }
        (None, Some(e)) => {
            let _ = write!(line, " | no data ({}: {e})", e.label());
        }
        (None, None) => {}
    }
    for e in &out.events {
        let _ = write!(line, " | {}", describe(e).message);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{CanaryPolicy, Phase};
    use mlcanary_core::analysis::{Outcome, Verdict};
    use mlcanary_core::rollout::RolloutEvent;
    use mlcanary_core::weights::Weights;

    #[test]
    fn line_shows_phase_weight_and_verdict_numbers() {
        let p = CanaryPolicy::test().validated();
        let out = TickOutput {
            at: std::time::SystemTime::UNIX_EPOCH,
            status: CanaryPolicyStatus {
                phase: Phase::Progressing,
                canary_weight_bp: 2500,
                step_index: Some(2),
                failed_checks: 1,
                ..Default::default()
            },
            weights: Weights::with_canary_bp(2500),
            events: vec![RolloutEvent::Advanced {
                from_bp: 1000,
                to_bp: 2500,
            }],
            verdicts: Some(vec![Verdict {
                check: "errors".into(),
                outcome: Outcome::Pass,
                canary: Some(0.001),
                stable: Some(0.0),
                threshold: Some(0.01),
                n_canary: 120,
                n_stable: 480,
                p_value: None,
                message: String::new(),
                ..Default::default()
            }]),
            no_data: None,
            applied: true,
        };
        assert_eq!(
            progress_line("T", &p, &out),
            "T fraud-model Progressing canary=25.00% step=3/4 failed=1/2 | errors: pass \
             canary=0.0010 stable=0.0000 limit=0.0100 n=120/480 | advanced 10.00% -> 25.00%"
        );
        let held = TickOutput {
            at: std::time::SystemTime::UNIX_EPOCH,
            verdicts: None,
            no_data: Some(crate::metrics::MetricsError::Unreachable {
                url: "u".into(),
                reason: "refused".into(),
            }),
            events: vec![RolloutEvent::Held(
                mlcanary_core::rollout::Hold::NoConclusiveData,
            )],
            ..out
        };
        let line = progress_line("T", &p, &held);
        assert!(
            line.ends_with(
                "| no data (unreachable: cannot reach u: refused) | held (NoConclusiveData)"
            ),
            "{line}"
        );
        let shadow = TickOutput {
            status: CanaryPolicyStatus {
                phase: Phase::Progressing,
                shadow: Some(mlcanary_core::policy::ShadowStatus {
                    mirror_bp: 5000,
                    since: "T".into(),
                }),
                ..Default::default()
            },
            weights: Weights::shadow(5000),
            events: vec![RolloutEvent::ShadowStarted { mirror_bp: 5000 }],
            ..held
        };
        let line = progress_line("T", &p, &shadow);
        assert!(
            line.starts_with("T fraud-model Progressing canary=0.00% shadow=50.00% failed=0/2"),
            "{line}"
        );
    }

    #[test]
    fn status_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("mlcanary-status-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = StatusFile {
            updated: "T".into(),
            listener: Some("127.0.0.1:1".into()),
            metrics: "envoy".into(),
            policies: BTreeMap::from([("p".into(), CanaryPolicyStatus::default())]),
            ..Default::default()
        };
        f.write(&dir.join("status.json")).unwrap();
        assert_eq!(StatusFile::read(&dir.join("status.json")), Some(f));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
