//! Events about holds, rate-limited. A step that holds repeats its hold every interval, so the
//! rollout's `Held` events are not news ([`mlcanary_core::events::Kind::is_news`]); on a cluster a
//! hold is still worth an Event when it begins, when its reason changes and, while it lasts, once
//! per [`HELD_EVENT_PERIOD`]. What was last announced is kept in `status.held`, so a restarted
//! controller or a new leader goes on from it instead of announcing every hold again.
//!
//! A hold of an unhealthy baseline is a Warning `BaselineUnhealthy` (the rollout's own event of
//! that kind marks only its beginning); every other hold a Normal `Held`.

use std::time::{Duration, SystemTime};

use super::plan::{Event, EventType};
use crate::engine::TickOutput;
use crate::policy::{HeldStatus, ValidatedPolicy};
use mlcanary_core::analysis::{Outcome, Verdict};
use mlcanary_core::events::{hold_note, Kind};
use mlcanary_core::rollout::{Hold, RolloutEvent};

/// While the same hold lasts, its Event is sent again at most this often.
pub const HELD_EVENT_PERIOD: Duration = Duration::from_secs(600);

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn parse(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s).ok()
}

/// The hold memory after the tick `out` and the Event to send, from the memory before it
/// (`old`: the status the tick started from) and the tick's time `out.at`. No hold in the tick
/// clears the memory, so the next hold is announced at once.
pub fn plan_held(
    old: Option<&HeldStatus>,
    out: &TickOutput,
    policy: &ValidatedPolicy,
) -> (Option<HeldStatus>, Option<Event>) {
    let Some(hold) = out.events.iter().find_map(|e| match e {
        RolloutEvent::Held(h) => Some(*h),
        _ => None,
    }) else {
        return (None, None);
    };
    let now = out.at;
    let same = old.filter(|o| o.reason == hold.name());
    let since = same.and_then(|o| parse(&o.since)).unwrap_or(now);
    if let Some(o) = same {
        // A clock that went backwards waits; an unreadable time announces again.
        let quiet = parse(&o.last_event_time)
            .is_some_and(|t| now.duration_since(t).unwrap_or(Duration::ZERO) < HELD_EVENT_PERIOD);
        if quiet {
            return (Some(o.clone()), None);
        }
    }
    let memory = HeldStatus {
        reason: hold.name().to_owned(),
        since: rfc3339(since),
        last_event_time: rfc3339(now),
    };
    // The rollout's `BaselineUnhealthy` event of this very tick already says it began.
    let announced = hold == Hold::BaselineUnhealthy
        && out
            .events
            .iter()
            .any(|e| matches!(e, RolloutEvent::BaselineUnhealthy { .. }));
    if announced {
        return (Some(memory), None);
    }
    let kind = if hold == Hold::BaselineUnhealthy {
        Kind::BaselineUnhealthy
    } else {
        Kind::Held
    };
    let held_for = now.duration_since(since).unwrap_or(Duration::ZERO);
    let detail = detail(hold, out, policy);
    let event = Event {
        type_: if kind.is_warning() {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: kind.reason(),
        action: kind.action(),
        note: hold_note(
            hold,
            out.status.canary_weight_bp,
            held_for,
            detail.as_deref(),
        ),
    };
    (Some(memory), Some(event))
}

/// What the tick knows about why it holds, beyond the hold's own words.
fn detail(hold: Hold, out: &TickOutput, policy: &ValidatedPolicy) -> Option<String> {
    let s = &out.status;
    let condition = |type_: &str| {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.message.clone())
    };
    match hold {
        Hold::NoConclusiveData => match (&out.verdicts, &out.no_data) {
            (Some(vs), _) => {
                let open: Vec<String> = vs
                    .iter()
                    .filter(|v| v.outcome == Outcome::Inconclusive)
                    .map(|v| format!("{}: {}", v.check, v.message))
                    .collect();
                (!open.is_empty()).then(|| open.join("; "))
            }
            (None, Some(e)) => Some(format!("no metrics: {e}")),
            (None, None) => Some("no metrics".to_owned()),
        },
        Hold::TimedPause => s.paused_until.as_ref().map(|t| format!("until {t}")),
        Hold::Failing => Some(format!(
            "{} of {} before rollback",
            s.failed_checks, policy.failure_threshold
        )),
        Hold::BaselineUnhealthy => checks(out, |v| v.baseline_unhealthy),
        Hold::AwaitingEvidence => checks(out, |v| !v.harm_excluded),
        Hold::Paused | Hold::Webhook | Hold::Shadow => condition("Progressing"),
        Hold::ManualGate | Hold::Marginal => None,
    }
}

/// `checks: a, b`: the checks of this tick's verdicts `which` picks.
fn checks(out: &TickOutput, which: impl Fn(&Verdict) -> bool) -> Option<String> {
    let names: Vec<&str> = out
        .verdicts
        .iter()
        .flatten()
        .filter(|v| which(v))
        .map(|v| v.check.as_str())
        .collect();
    (!names.is_empty()).then(|| format!("checks: {}", names.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{CanaryPolicy, CanaryPolicyStatus};
    use mlcanary_core::weights::Weights;

    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn out(secs: u64, h: Hold) -> TickOutput {
        TickOutput {
            at: at(secs),
            status: CanaryPolicyStatus {
                canary_weight_bp: 1000,
                failed_checks: 1,
                ..Default::default()
            },
            weights: Weights::with_canary_bp(1000),
            events: vec![RolloutEvent::Held(h)],
            verdicts: None,
            no_data: None,
            applied: false,
        }
    }

    fn memory(reason: &str, since: &str, last: &str) -> HeldStatus {
        HeldStatus {
            reason: reason.into(),
            since: since.into(),
            last_event_time: last.into(),
        }
    }

    fn policy() -> ValidatedPolicy {
        CanaryPolicy::test().failure_threshold(3).validated()
    }

    #[test]
    fn the_period_is_the_one_the_status_describes() {
        // `status.held`'s description (core/src/policy/status.rs) says 10 minutes.
        assert_eq!(HELD_EVENT_PERIOD, Duration::from_secs(600));
    }

    #[test]
    fn a_clock_gone_back_stays_quiet_and_an_unreadable_memory_announces() {
        let t = |s| rfc3339(at(s));
        let old = memory("Failing", &t(0), &t(300));
        let (kept, event) = plan_held(Some(&old), &out(100, Hold::Failing), &policy());
        assert_eq!((kept.as_ref(), event), (Some(&old), None));
        let garbled = memory("Failing", "yesterday", "soon");
        let (kept, event) = plan_held(Some(&garbled), &out(100, Hold::Failing), &policy());
        let event = event.expect("announced again");
        assert_eq!(
            event.note,
            "held at 10.00%: failed analyses, fewer than the failure threshold: 1 of 3 before \
             rollback"
        );
        assert_eq!(kept, Some(memory("Failing", &t(100), &t(100))));
    }

    #[test]
    fn the_note_says_what_the_tick_knows() {
        let p = policy();
        let note = |o: TickOutput| plan_held(None, &o, &p).1.unwrap().note;
        // Inconclusive checks, by name, with their own words.
        let mut o = out(0, Hold::NoConclusiveData);
        o.verdicts = Some(vec![
            Verdict {
                check: "errors".into(),
                outcome: Outcome::Inconclusive,
                message: "40 canary / 40 stable requests at this weight, below minRequests 100"
                    .into(),
                ..Default::default()
            },
            Verdict {
                check: "p99".into(),
                outcome: Outcome::Pass,
                message: "fine".into(),
                ..Default::default()
            },
        ]);
        assert!(note(o).ends_with(
            "inconclusive): errors: 40 canary / 40 stable requests at this weight, below \
                 minRequests 100"
        ),);
        // No metrics, and why.
        let mut o = out(0, Hold::NoConclusiveData);
        o.no_data = Some(crate::metrics::MetricsError::NoBaseline {
            policy: "fraud-model".into(),
        });
        let n = note(o);
        assert!(n.contains("inconclusive): no metrics: "), "{n}");
        // A timed pause, until when.
        let mut o = out(0, Hold::TimedPause);
        o.status.paused_until = Some(rfc3339(at(300)));
        assert_eq!(
            note(o),
            "held at 10.00%: a timed pause at this step is not over: until 2027-01-15T08:05:00Z"
        );
        // A refused gate, in the condition's words.
        let mut o = out(0, Hold::Webhook);
        o.status.conditions.push(crate::policy::Condition {
            type_: "Progressing".into(),
            status: "True".into(),
            reason: "AwaitingPromotion".into(),
            message: "confirmPromotion webhook sign-off: 503".into(),
            last_transition_time: None,
        });
        assert_eq!(
            note(o),
            "held at 10.00%: a gate webhook has not answered 2xx: confirmPromotion webhook \
             sign-off: 503"
        );
        // Evidence still missing, by check.
        let mut o = out(0, Hold::AwaitingEvidence);
        o.verdicts = Some(vec![
            Verdict {
                check: "errors".into(),
                harm_excluded: true,
                ..Default::default()
            },
            Verdict {
                check: "p99".into(),
                ..Default::default()
            },
        ]);
        assert_eq!(
            note(o),
            "held at 10.00%: the last step passed; harm beyond the margin not yet excluded: \
             checks: p99"
        );
        // The manual gate needs no more words.
        assert_eq!(
            note(out(0, Hold::ManualGate)),
            "held at 10.00%: the last step passed; waiting at the manual gate for promote"
        );
    }
}
