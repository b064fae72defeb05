//! What a [`RolloutEvent`] says, written once: the Kubernetes Event (reason, action, type, note),
//! the status page's event list, the local progress lines and the webhooks' `event` / `message`
//! all read [`describe`].

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::rollout::{Hold, RolloutEvent};

/// The kind of an event: its CamelCase [`Kind::reason`] is the Kubernetes Event reason and the
/// webhook `event`; the page shows it in camelCase (its serde form).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Kind {
    ShadowStarted,
    ShadowPassed,
    Started,
    Advanced,
    Held,
    AnalysisFailed,
    Paused,
    Resumed,
    Promoted,
    Restarted,
    RolledBack,
    BaselineUnhealthy,
}

impl Kind {
    pub fn reason(self) -> &'static str {
        match self {
            Kind::ShadowStarted => "ShadowStarted",
            Kind::ShadowPassed => "ShadowPassed",
            Kind::Started => "Started",
            Kind::Advanced => "Advanced",
            Kind::Held => "Held",
            Kind::AnalysisFailed => "AnalysisFailed",
            Kind::Paused => "Paused",
            Kind::Resumed => "Resumed",
            Kind::Promoted => "Promoted",
            Kind::Restarted => "Restarted",
            Kind::RolledBack => "RolledBack",
            Kind::BaselineUnhealthy => "BaselineUnhealthy",
        }
    }

    /// What the controller did (the Kubernetes Event's `action`).
    pub fn action(self) -> &'static str {
        match self {
            Kind::ShadowStarted
            | Kind::ShadowPassed
            | Kind::Started
            | Kind::Advanced
            | Kind::Held
            | Kind::BaselineUnhealthy => "Progress",
            Kind::AnalysisFailed => "Analyze",
            Kind::Paused => "Pause",
            Kind::Resumed => "Resume",
            Kind::Promoted => "Promote",
            Kind::Restarted => "Start",
            Kind::RolledBack => "Rollback",
        }
    }

    /// A failed analysis or a rollback warns; everything else is normal progress.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            Kind::AnalysisFailed | Kind::RolledBack | Kind::BaselineUnhealthy
        )
    }

    /// Holds repeat every interval while they last: not news, so no page entry and no `event`
    /// webhook (they still show in the progress line). The kube loop sends `Held` Events of its
    /// own, rate-limited (`reconcile::held` in the controller).
    pub fn is_news(self) -> bool {
        self != Kind::Held
    }
}

/// One event, described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub kind: Kind,
    /// One line for a person: `advanced 5.00% -> 10.00%`.
    pub message: String,
}

/// A weight in basis points as a percentage with two decimals (the filter's resolution).
pub fn percent(bp: u32) -> String {
    format!("{:.2}%", f64::from(bp) / 100.0)
}

/// Why a step holds, in words.
pub fn hold_reason(h: Hold) -> &'static str {
    match h {
        Hold::NoConclusiveData => {
            "no conclusive analysis yet (no metrics, or a check below its minimum sample or \
             still inconclusive)"
        }
        Hold::TimedPause => "a timed pause at this step is not over",
        Hold::Paused => "paused until an operator resumes",
        Hold::ManualGate => "the last step passed; waiting at the manual gate for promote",
        Hold::Failing => "failed analyses, fewer than the failure threshold",
        Hold::Marginal => "a check passed only narrowly at the lowest weight",
        Hold::Webhook => "a gate webhook has not answered 2xx",
        Hold::AwaitingEvidence => "the last step passed; harm beyond the margin not yet excluded",
        Hold::Shadow => {
            "in shadow: the analysis passed, but the shadow's duration is not over (or, without \
             one, harm beyond the margin is not yet excluded)"
        }
        Hold::BaselineUnhealthy => {
            "baseline unhealthy: stable breaks a check's bound as well (a shared fault, not the \
             canary's)"
        }
    }
}

/// The note of an Event about a hold that began or lasts (`held_for` since it began): the
/// weight, how long, why, and what the tick knows more (`detail`).
pub fn hold_note(h: Hold, weight_bp: u32, held_for: Duration, detail: Option<&str>) -> String {
    let mut note = format!("held at {}", percent(weight_bp));
    if held_for >= Duration::from_secs(1) {
        let secs = Duration::from_secs(held_for.as_secs());
        let _ = write!(note, " for {}", humantime::format_duration(secs));
    }
    let _ = write!(note, ": {}", hold_reason(h));
    if let Some(d) = detail.filter(|d| !d.is_empty()) {
        let _ = write!(note, ": {d}");
    }
    note
}

/// The one description of `e`.
pub fn describe(e: &RolloutEvent) -> Description {
    let (kind, message) = match e {
        RolloutEvent::ShadowStarted { mirror_bp } => (
            Kind::ShadowStarted,
            format!(
                "shadow started: {} of requests mirrored to the canary, whose answers no user gets",
                percent(*mirror_bp)
            ),
        ),
        RolloutEvent::ShadowPassed { to_bp } => (
            Kind::ShadowPassed,
            format!("shadow passed: live at {}", percent(*to_bp)),
        ),
        RolloutEvent::Started { to_bp } => {
            (Kind::Started, format!("started at {}", percent(*to_bp)))
        }
        RolloutEvent::Advanced { from_bp, to_bp } => (
            Kind::Advanced,
            format!("advanced {} -> {}", percent(*from_bp), percent(*to_bp)),
        ),
        RolloutEvent::Held(h) => (Kind::Held, format!("held ({})", h.name())),
        RolloutEvent::AnalysisFailed {
            consecutive,
            threshold,
            checks,
        } => (
            Kind::AnalysisFailed,
            format!(
                "analysis failed ({consecutive}/{threshold} before rollback): {}",
                checks.join(", ")
            ),
        ),
        RolloutEvent::Paused => (Kind::Paused, "paused".to_owned()),
        RolloutEvent::Resumed => (Kind::Resumed, "resumed".to_owned()),
        RolloutEvent::Promoted { from_bp, reason } => (
            Kind::Promoted,
            format!("promoted from {}: {reason}", percent(*from_bp)),
        ),
        RolloutEvent::Restarted { canary } => (Kind::Restarted, format!("new rollout of {canary}")),
        RolloutEvent::RolledBack { from_bp, reason } => (
            Kind::RolledBack,
            format!("rolled back from {}: {reason}", percent(*from_bp)),
        ),
        RolloutEvent::BaselineUnhealthy { checks } => (
            Kind::BaselineUnhealthy,
            format!(
                "baseline unhealthy: stable breaks {} as well; holding",
                checks.join(", ")
            ),
        ),
    };
    Description { kind, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_one_description() {
        let all = [
            RolloutEvent::ShadowStarted { mirror_bp: 1000 },
            RolloutEvent::Started { to_bp: 500 },
            RolloutEvent::Advanced {
                from_bp: 500,
                to_bp: 1000,
            },
            RolloutEvent::Held(Hold::NoConclusiveData),
            RolloutEvent::AnalysisFailed {
                consecutive: 1,
                threshold: 2,
                checks: vec!["errors".into(), "latency".into()],
            },
            RolloutEvent::Paused,
            RolloutEvent::Resumed,
            RolloutEvent::Promoted {
                from_bp: 5000,
                reason: "every step passed its analysis".into(),
            },
            RolloutEvent::Restarted {
                canary: "v2".into(),
            },
            RolloutEvent::RolledBack {
                from_bp: 2500,
                reason: "2 consecutive failed analyses".into(),
            },
            RolloutEvent::BaselineUnhealthy {
                checks: vec!["errors".into()],
            },
        ];
        let d: Vec<Description> = all.iter().map(describe).collect();
        let reasons: Vec<&str> = d.iter().map(|d| d.kind.reason()).collect();
        assert_eq!(
            reasons,
            [
                "ShadowStarted",
                "Started",
                "Advanced",
                "Held",
                "AnalysisFailed",
                "Paused",
                "Resumed",
                "Promoted",
                "Restarted",
                "RolledBack",
                "BaselineUnhealthy"
            ]
        );
        assert_eq!(
            d[0].message,
            "shadow started: 10.00% of requests mirrored to the canary, whose answers no user gets"
        );
        assert_eq!(d[2].message, "advanced 5.00% -> 10.00%");
        assert_eq!(d[3].message, "held (NoConclusiveData)");
        assert_eq!(
            d[4].message,
            "analysis failed (1/2 before rollback): errors, latency"
        );
        assert_eq!(
            d[7].message,
            "promoted from 50.00%: every step passed its analysis"
        );
        assert_eq!(
            d[9].message,
            "rolled back from 25.00%: 2 consecutive failed analyses"
        );
        assert_eq!(
            d[10].message,
            "baseline unhealthy: stable breaks errors as well; holding"
        );
        // Only holds are not news; only failures, rollbacks and an unhealthy baseline warn.
        let quiet: Vec<Kind> = d.iter().map(|d| d.kind).filter(|k| !k.is_news()).collect();
        assert_eq!(quiet, [Kind::Held]);
        let warn: Vec<Kind> = d
            .iter()
            .map(|d| d.kind)
            .filter(|k| k.is_warning())
            .collect();
        assert_eq!(
            warn,
            [
                Kind::AnalysisFailed,
                Kind::RolledBack,
                Kind::BaselineUnhealthy
            ]
        );
        assert_eq!(
            serde_json::to_value(Kind::RolledBack).unwrap(),
            "rolledBack"
        );
    }

    #[test]
    fn a_hold_note_says_where_how_long_and_why() {
        assert_eq!(
            hold_note(Hold::TimedPause, 500, Duration::ZERO, None),
            "held at 5.00%: a timed pause at this step is not over"
        );
        assert_eq!(
            hold_note(
                Hold::NoConclusiveData,
                250,
                Duration::from_millis(1_230_400),
                Some("errors: 12 canary / 15 stable requests, below minRequests 100")
            ),
            "held at 2.50% for 20m 30s: no conclusive analysis yet (no metrics, or a check below \
             its minimum sample or still inconclusive): errors: 12 canary / 15 stable requests, \
             below minRequests 100"
        );
        // Every hold has its own words.
        let all = [
            Hold::NoConclusiveData,
            Hold::TimedPause,
            Hold::Paused,
            Hold::ManualGate,
            Hold::Failing,
            Hold::Marginal,
            Hold::Webhook,
            Hold::AwaitingEvidence,
            Hold::BaselineUnhealthy,
        ];
        let words: std::collections::BTreeSet<&str> = all.iter().map(|h| hold_reason(*h)).collect();
        let names: std::collections::BTreeSet<&str> = all.iter().map(|h| h.name()).collect();
        assert_eq!((words.len(), names.len()), (all.len(), all.len()));
        assert_eq!(
            Hold::AwaitingEvidence.name(),
            format!("{:?}", Hold::AwaitingEvidence)
        );
    }
}
