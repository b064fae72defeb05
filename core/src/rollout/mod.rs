//! The rollout state machine: (status, this interval's verdicts, policy, now) → next status, the
//! desired split and what happened. Pure: the caller owns the clock, the metrics and the writes.
//!
//! Rules:
//! - `Pending` → `Progressing` at the first step (no verdict needed: nothing ran on the canary yet).
//! - Each call is one analysis interval. All verdicts `Pass` → one step forward (a timed pause at the
//!   step holds until it is over; an open-ended pause turns the phase to `Paused` as the step is
//!   entered). After the last step, with the manual gate closed, it waits for `promote`.
//! - Promotion sends **100 % to the canary subset** (Flagger's "promote"): the operator then rolls
//!   the stable Deployment forward to the new model and starts the next rollout from there.
//! - Any `Fail` counts one failed analysis; `failureThreshold` consecutive ones → `RolledBack`,
//!   canary 0 %. A passing analysis resets the count; an inconclusive one leaves it.
//! - Promotion (the last step passing) also needs every verdict's `harm_excluded`; until then the
//!   rollout holds at the last step (`AwaitingEvidence`) — data is flowing and nothing failed, so
//!   the progress deadline does not run.
//! - A verdict with `baseline_unhealthy` (stable breaks the bound too) holds with the
//!   `BaselineUnhealthy` condition (an event when it begins); with `unhealthyBaseline: hold` the
//!   deadline does not run meanwhile.
//! - No data (`None`, an empty list) or any `Inconclusive` holds: never advances, never promotes.
//!   Only when nothing conclusive has passed for `progressDeadline` does it roll back, saying so.
//! - `Paused` keeps the weights and still counts failures (a held canary can still be rolled back);
//!   the deadline does not run while paused.
//!
//! Operator commands ([`command`]): `promote` (override: 100 % now, from any live phase — the way
//! through the manual gate), `abort` (roll back now), `pause`, `resume`, and `start` (a new rollout
//! of another canary version, from any phase: back to `Pending` at 0 %).
//!
//! With `spec.schedule.adaptive` the weights between the first and the last come from
//! [`adaptive`] instead of the fixed list; gates that webhooks refuse are in [`webhook_gates`]; the
//! shadow phase before the first step (`spec.schedule.shadow`) is in [`shadow`].

pub mod adaptive;
mod baseline;
pub mod shadow;
pub mod webhook_gates;

pub use baseline::BASELINE_UNHEALTHY;

use std::time::{Duration, SystemTime};

use crate::analysis::{Outcome, Verdict};
use crate::policy::validated::{Pause, UnhealthyBaseline};
use crate::policy::{CanaryPolicyStatus, Condition, HistoryEntry, Phase, ValidatedPolicy};
use crate::weights::Weights;

/// Most history entries kept in the status.
pub const MAX_HISTORY: usize = 32;

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Promote,
    Abort,
    Pause,
    Resume,
    /// Begin a new rollout of `canary` (a version label or image), whatever the phase.
    Start {
        canary: String,
    },
}

impl Command {
    /// The command's name: in the HTTP API path, the command annotation and the CLI.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Promote => "promote",
            Command::Abort => "abort",
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Start { .. } => "start",
        }
    }

    /// The command `name` names; `start` needs its (non-empty) canary.
    pub fn parse(name: &str, canary: Option<&str>) -> Option<Command> {
        match name.trim() {
            "promote" => Some(Command::Promote),
            "abort" => Some(Command::Abort),
            "pause" => Some(Command::Pause),
            "resume" => Some(Command::Resume),
            "start" => canary
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| Command::Start {
                    canary: c.to_owned(),
                }),
            _ => None,
        }
    }
}

/// Why a step held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// No metrics or some check inconclusive.
    NoConclusiveData,
    /// Analyses passed; a timed pause is not over.
    TimedPause,
    /// Paused by an operator or an open-ended pause.
    Paused,
    /// Last step passed; waiting for `promote`.
    ManualGate,
    /// Failed analyses below the threshold.
    Failing,
    /// Adaptive schedule: a check passed only narrowly at the lowest weight.
    Marginal,
    /// A gate webhook (`preRollout`, `confirmPromotion`) has not answered 2xx.
    Webhook,
    /// Last step passed, but some check has not yet excluded harm beyond the margin.
    AwaitingEvidence,
    /// Stable breaks a check's bound as well: a shared fault, not the canary's.
    BaselineUnhealthy,
    /// In shadow, the analysis passed; the shadow's duration is not over (or it is not yet
    /// conclusive).
    Shadow,
}

impl Hold {
    /// The hold's fixed CamelCase name (`status.held.reason`, the progress line's `held (...)`).
    pub fn name(self) -> &'static str {
        match self {
            Hold::NoConclusiveData => "NoConclusiveData",
            Hold::TimedPause => "TimedPause",
            Hold::Paused => "Paused",
            Hold::ManualGate => "ManualGate",
            Hold::Failing => "Failing",
            Hold::Marginal => "Marginal",
            Hold::Webhook => "Webhook",
            Hold::AwaitingEvidence => "AwaitingEvidence",
            Hold::BaselineUnhealthy => "BaselineUnhealthy",
            Hold::Shadow => "Shadow",
        }
    }
}

/// What a step did, for Events and logs.
#[derive(Debug, Clone, PartialEq)]
pub enum RolloutEvent {
    /// The shadow phase began: `mirror_bp` of requests mirrored to the canary.
    ShadowStarted {
        mirror_bp: u32,
    },
    /// The shadow passed: the first live step, at `to_bp`.
    ShadowPassed {
        to_bp: u32,
    },
    Started {
        to_bp: u32,
    },
    Advanced {
        from_bp: u32,
        to_bp: u32,
    },
    Held(Hold),
    AnalysisFailed {
        consecutive: u32,
        threshold: u32,
        checks: Vec<String>,
    },
    Paused,
    Resumed,
    Promoted {
        from_bp: u32,
        reason: String,
    },
    /// A new rollout of `canary` was requested (`start`): back to `Pending` at 0 %.
    Restarted {
        canary: String,
    },
    RolledBack {
        from_bp: u32,
        reason: String,
    },
    /// Stable began to break these checks' bounds as well (the step holds).
    BaselineUnhealthy {
        checks: Vec<String>,
    },
}

/// The result of a step or command.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    pub status: CanaryPolicyStatus,
    /// The split to apply; always equal to `status.canary_weight_bp`.
    pub weights: Weights,
    pub events: Vec<RolloutEvent>,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse_time(s: Option<&str>) -> Option<SystemTime> {
    s.and_then(|s| humantime::parse_rfc3339_weak(s).ok())
}

/// Builder-ish wrapper so each transition reads as one line.
struct Next {
    s: CanaryPolicyStatus,
    events: Vec<RolloutEvent>,
    now: SystemTime,
}

impl Next {
    fn new(status: &CanaryPolicyStatus, now: SystemTime) -> Self {
        Next {
            s: status.clone(),
            events: Vec::new(),
            now,
        }
    }

    fn done(self) -> StepOutput {
        let weights = self.s.weights();
        StepOutput {
            status: self.s,
            weights,
            events: self.events,
        }
    }

    fn phase(&mut self, phase: Phase, reason: &str, message: String) {
        if self.s.phase != phase {
            self.s.phase = phase;
            self.s.last_transition_time = Some(rfc3339(self.now));
        }
        let status = if phase.is_terminal() { "False" } else { "True" };
        let c = Condition {
            type_: "Progressing".into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: Some(rfc3339(self.now)),
        };
        match self
            .s
            .conditions
            .iter_mut()
            .find(|c| c.type_ == "Progressing")
        {
            Some(old) if old.status == c.status && old.reason == c.reason => {
                old.message = c.message;
            }
            Some(old) => *old = c,
            None => self.s.conditions.push(c),
        }
    }

    fn weight(&mut self, to_bp: u32, reason: &str) {
        let from = self.s.canary_weight_bp;
        if from == to_bp {
            return;
        }
        self.s.history.push(HistoryEntry {
            time: rfc3339(self.now),
            from_weight_bp: from,
            to_weight_bp: to_bp,
            reason: reason.into(),
        });
        if self.s.history.len() > MAX_HISTORY {
            let extra = self.s.history.len() - MAX_HISTORY;
            self.s.history.drain(..extra);
        }
        self.s.canary_weight_bp = to_bp;
    }

    /// Move to step `i` and arm its pause.
    fn enter_step(&mut self, policy: &ValidatedPolicy, i: usize, reason: &str) {
        let from = self.s.canary_weight_bp;
        let to = policy.steps_bp[i];
        self.weight(to, reason);
        self.s.step_index = Some(i as u32);
        self.s.last_progress_time = Some(rfc3339(self.now));
        self.s.paused_until = None;
        if i == 0 && from == 0 {
            self.events.push(RolloutEvent::Started { to_bp: to });
        } else {
            self.events.push(RolloutEvent::Advanced {
                from_bp: from,
                to_bp: to,
            });
        }
        match policy.pauses.get(i).copied().flatten() {
            Some(Pause::For(d)) => self.s.paused_until = Some(rfc3339(self.now + d)),
            Some(Pause::UntilResumed) => {
                self.phase(
                    Phase::Paused,
                    "StepPause",
                    format!("paused at step {i} until resumed"),
                );
                self.events.push(RolloutEvent::Paused);
            }
            None => {}
        }
    }

    /// The last step passed: wait for harm to be excluded, then at the manual gate, or promote.
    fn last_step_passed(&mut self, policy: &ValidatedPolicy, verdicts: Option<&[Verdict]>) {
        let open = harm_not_excluded(verdicts);
        if !open.is_empty() {
            self.phase(
                Phase::Progressing,
                "AwaitingEvidence",
                format!(
                    "last step passed; harm beyond the margin not yet excluded by {}",
                    open.join(", ")
                ),
            );
            self.events.push(RolloutEvent::Held(Hold::AwaitingEvidence));
        } else if policy.manual_gate {
            self.phase(
                Phase::Progressing,
                "AwaitingPromotion",
                "last step passed".into(),
            );
            self.events.push(RolloutEvent::Held(Hold::ManualGate));
        } else {
            self.promote("every step passed its analysis");
        }
    }

    /// Adaptive schedule: move to `to_bp` (up or back), keeping the nominal step index.
    fn adaptive_move(&mut self, a: &crate::policy::validated::Adaptive, to_bp: u32, reason: &str) {
        let from = self.s.canary_weight_bp;
        if from == to_bp {
            return;
        }
        self.weight(to_bp, reason);
        self.s.step_index = Some(a.step_index(to_bp));
        self.s.last_progress_time = Some(rfc3339(self.now));
        self.events.push(RolloutEvent::Advanced {
            from_bp: from,
            to_bp,
        });
    }

    fn roll_back(&mut self, reason: String) {
        let from = self.s.canary_weight_bp;
        self.weight(0, &reason);
        self.s.paused_until = None;
        self.s.shadow = None;
        self.phase(Phase::RolledBack, "RolledBack", reason.clone());
        self.events.push(RolloutEvent::RolledBack {
            from_bp: from,
            reason,
        });
    }

    fn promote(&mut self, reason: &str) {
        let from = self.s.canary_weight_bp;
        self.weight(Weights::TOTAL_BP, reason);
        self.s.paused_until = None;
        self.s.shadow = None;
        self.phase(Phase::Promoted, "Promoted", reason.into());
        self.events.push(RolloutEvent::Promoted {
            from_bp: from,
            reason: reason.into(),
        });
    }
}

/// The checks that have not yet excluded harm beyond the margin.
fn harm_not_excluded(verdicts: Option<&[Verdict]>) -> Vec<&str> {
    verdicts
        .unwrap_or_default()
        .iter()
        .filter(|v| !v.harm_excluded)
        .map(|v| v.check.as_str())
        .collect()
}

/// The summary of one interval's verdicts.
fn summarize(verdicts: Option<&[Verdict]>) -> Option<Outcome> {
    let v = verdicts.filter(|v| !v.is_empty())?;
    if v.iter().any(|v| v.outcome == Outcome::Fail) {
        Some(Outcome::Fail)
    } else if v.iter().any(|v| v.outcome == Outcome::Inconclusive) {
        Some(Outcome::Inconclusive)
    } else {
        Some(Outcome::Pass)
    }
}

/// One analysis interval. `verdicts` is `None` when the metrics source had no data (unreachable,
/// first scrape).
pub fn step(
    status: &CanaryPolicyStatus,
    verdicts: Option<&[Verdict]>,
    policy: &ValidatedPolicy,
    now: SystemTime,
) -> StepOutput {
    let mut n = Next::new(status, now);
    match n.s.phase {
        p if p.is_terminal() => return n.done(),
        Phase::Pending => {
            n.s.failed_checks = 0;
            match &policy.shadow {
                Some(sh) => n.enter_shadow(sh),
                None => {
                    n.phase(Phase::Progressing, "Started", "first step".into());
                    n.enter_step(policy, 0, "rollout started");
                }
            }
            return n.done();
        }
        _ => {}
    }
    n.s.last_verdicts = verdicts
        .unwrap_or_default()
        .iter()
        .map(Into::into)
        .collect();
    let paused = n.s.phase == Phase::Paused;
    let unhealthy = n.baseline(verdicts);
    match summarize(verdicts) {
        Some(Outcome::Fail) => {
            n.s.failed_checks += 1;
            let checks: Vec<String> = verdicts
                .unwrap_or_default()
                .iter()
                .filter(|v| v.outcome == Outcome::Fail)
                .map(|v| v.check.clone())
                .collect();
            n.events.push(RolloutEvent::AnalysisFailed {
                consecutive: n.s.failed_checks,
                threshold: policy.failure_threshold,
                checks: checks.clone(),
            });
            if n.s.failed_checks >= policy.failure_threshold {
                n.roll_back(format!(
                    "{} consecutive failed analyses (failureThreshold {}): {}",
                    n.s.failed_checks,
                    policy.failure_threshold,
                    checks.join(", ")
                ));
            } else {
                n.events.push(RolloutEvent::Held(Hold::Failing));
                let live = n.s.shadow.is_none();
                if let (Some(a), false, true) = (&policy.adaptive, paused, live) {
                    // Less exposure while the evidence comes in; 0 only at the threshold.
                    let to =
                        adaptive::next_weight(n.s.canary_weight_bp, adaptive::Evidence::Fail, a);
                    n.adaptive_move(a, to, "analysis failed: stepping back");
                }
            }
        }
        None | Some(Outcome::Inconclusive)
            if unhealthy && policy.unhealthy_baseline == UnhealthyBaseline::Hold =>
        {
            // A shared fault is not the canary's: the deadline does not run meanwhile.
            n.s.last_progress_time = Some(rfc3339(now));
            n.events.push(RolloutEvent::Held(Hold::BaselineUnhealthy));
        }
        None | Some(Outcome::Inconclusive) => {
            let since = parse_time(n.s.last_progress_time.as_deref()).unwrap_or(now);
            let waited = now.duration_since(since).unwrap_or(Duration::ZERO);
            if !paused && waited >= policy.progress_deadline {
                n.roll_back(format!(
                    "ProgressDeadlineExceeded: no conclusive analysis for {} (progressDeadline {})",
                    humantime::format_duration(waited),
                    humantime::format_duration(policy.progress_deadline)
                ));
            } else {
                n.events.push(RolloutEvent::Held(if paused {
                    Hold::Paused
                } else if unhealthy {
                    Hold::BaselineUnhealthy
                } else {
                    Hold::NoConclusiveData
                }));
            }
        }
        Some(Outcome::Pass) => {
            n.s.failed_checks = 0;
            n.s.last_progress_time = Some(rfc3339(now));
            let i = n.s.step_index.unwrap_or(0) as usize;
            let pause_over = parse_time(n.s.paused_until.as_deref()).is_none_or(|t| now >= t);
            if paused {
                n.events.push(RolloutEvent::Held(Hold::Paused));
            } else if n.s.shadow.is_some() {
                n.shadow_passed(policy, verdicts);
            } else if !pause_over {
                n.events.push(RolloutEvent::Held(Hold::TimedPause));
            } else if let Some(a) = &policy.adaptive {
                let cur = n.s.canary_weight_bp;
                let evidence = adaptive::classify(verdicts, policy, a);
                let to = adaptive::next_weight(cur, evidence, a);
                if cur >= a.max_bp && evidence != adaptive::Evidence::Marginal {
                    n.last_step_passed(policy, verdicts);
                } else if to != cur {
                    let reason = match evidence {
                        adaptive::Evidence::Wide => "every check passed widely",
                        adaptive::Evidence::Marginal => "a check passed narrowly: stepping back",
                        _ => "analysis passed",
                    };
                    n.adaptive_move(a, to, reason);
                } else {
                    n.events.push(RolloutEvent::Held(Hold::Marginal));
                }
            } else if i + 1 < policy.steps_bp.len() {
                n.enter_step(policy, i + 1, "analysis passed");
            } else {
                n.last_step_passed(policy, verdicts);
            }
        }
    }
    n.done()
}

/// Why a command was refused: it would change nothing in the rollout's phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command} does not apply: {reason}")]
pub struct NotApplicable {
    pub command: &'static str,
    pub phase: Phase,
    pub reason: String,
}

/// The one rule for whether `cmd` changes a rollout in `phase`. The CLI checks it before it writes
/// anything, the HTTP API answers 409 with it, the reconciler records it in an Event.
pub fn applicable(phase: Phase, cmd: &Command) -> Result<(), NotApplicable> {
    let refuse = |reason: String| {
        Err(NotApplicable {
            command: cmd.name(),
            phase,
            reason,
        })
    };
    match (phase, cmd) {
        // A new rollout starts from any phase.
        (_, Command::Start { .. }) => Ok(()),
        (Phase::Promoted | Phase::RolledBack | Phase::Failed, _) => {
            refuse(format!("the rollout is {phase:?} (finished)"))
        }
        (Phase::Paused, Command::Pause) => refuse("the rollout is already paused".into()),
        (Phase::Pending | Phase::Progressing, Command::Resume) => {
            refuse(format!("the rollout is {phase:?}, not paused"))
        }
        _ => Ok(()),
    }
}

/// Apply an operator's command, if it [`applicable`].
pub fn command(
    status: &CanaryPolicyStatus,
    cmd: Command,
    now: SystemTime,
) -> Result<StepOutput, NotApplicable> {
    applicable(status.phase, &cmd)?;
    let mut n = Next::new(status, now);
    match cmd {
        Command::Start { canary } => return Ok(restart(status, &canary, now)),
        Command::Promote => n.promote("promoted by operator"),
        Command::Abort => n.roll_back("aborted by operator".into()),
        Command::Pause => {
            n.phase(Phase::Paused, "Paused", "paused by operator".into());
            n.events.push(RolloutEvent::Paused);
        }
        Command::Resume => {
            // Time spent paused does not count against the progress deadline.
            n.s.last_progress_time = Some(rfc3339(now));
            n.s.paused_until = None;
            let next = if n.s.step_index.is_some() || n.s.shadow.is_some() {
                Phase::Progressing
            } else {
                Phase::Pending
            };
            n.phase(next, "Resumed", "resumed by operator".into());
            n.events.push(RolloutEvent::Resumed);
        }
    }
    Ok(n.done())
}

/// A new rollout of `canary` from any phase: `Pending` at 0 % (the first tick then enters the
/// first step, after the `preRollout` webhooks), the history kept, everything else cleared.
pub fn restart(status: &CanaryPolicyStatus, canary: &str, now: SystemTime) -> StepOutput {
    let mut n = Next::new(status, now);
    n.weight(0, &format!("new rollout of {canary}"));
    n.s = CanaryPolicyStatus {
        history: std::mem::take(&mut n.s.history),
        last_command_id: n.s.last_command_id.take(),
        observed_generation: n.s.observed_generation,
        canary_version: Some(canary.to_owned()),
        ..Default::default()
    };
    n.phase(
        Phase::Pending,
        "NewRollout",
        format!("rollout of {canary} requested"),
    );
    n.events.push(RolloutEvent::Restarted {
        canary: canary.to_owned(),
    });
    n.done()
}

#[cfg(test)]
mod evidence_tests;
#[cfg(test)]
mod tests;

/// The split a rollout rests on once its policy goes away: all on the canary a promotion left at
/// 100 % (the two-Deployments mode, where stable may still run the old model), else all on stable —
/// a rollout in flight, held, rolled back or never started is ended on the baseline.
pub fn resting_weights(status: &CanaryPolicyStatus) -> Weights {
    if status.phase == Phase::Promoted && status.canary_weight_bp == Weights::ALL_CANARY.canary_bp()
    {
        Weights::ALL_CANARY
    } else {
        Weights::ALL_STABLE
    }
}
