//! What the status page charts: per policy, a bounded ring of per-tick samples (weight, phase, each
//! check's numbers) and of rollout events, next to the policy's latest status. Pure: the loops hand
//! in a tick's output and the time; nothing here reads a clock or does I/O.
//!
//! Bounded on purpose: a controller runs for months, so each policy keeps the last
//! [`MAX_SAMPLES`] ticks (at a 30 s interval, about 16 hours) and [`MAX_EVENTS`] events; the
//! oldest fall off. The status itself already carries the full (bounded) history of weight changes.

use std::collections::{BTreeMap, VecDeque};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::policy::{CanaryPolicyStatus, Phase, ValidatedPolicy};
use mlcanary_core::analysis::Verdict;
use mlcanary_core::events::{describe, Kind};
use mlcanary_core::rollout::RolloutEvent;

/// Ticks kept per policy.
pub const MAX_SAMPLES: usize = 2000;
/// Events kept per policy.
pub const MAX_EVENTS: usize = 500;

/// One check's numbers at one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckSample {
    pub name: String,
    /// `pass`, `fail` or `inconclusive`.
    pub verdict: &'static str,
    pub canary: Option<f64>,
    pub stable: Option<f64>,
    pub threshold: Option<f64>,
}

/// One tick of one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub t_ms: u64,
    pub canary_weight_bp: u32,
    pub phase: Phase,
    /// Empty when the tick had no data (the chart shows a gap).
    pub verdicts: Vec<CheckSample>,
}

/// One rollout event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    #[serde(rename = "t")]
    pub t_ms: u64,
    /// Its serde form is the page's `kind` (`started`, `rolledBack`, …).
    pub kind: Kind,
    pub message: String,
}

/// Why [`HistoryStore::find`] found no single policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Unknown,
    /// Policies of that name live in these namespaces: the caller must name one.
    Ambiguous(Vec<String>),
}

impl std::fmt::Display for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lookup::Unknown => f.write_str("no such policy"),
            Lookup::Ambiguous(ns) => write!(
                f,
                "policies of that name are in namespaces {}: name one (NAMESPACE/NAME)",
                ns.join(", ")
            ),
        }
    }
}

/// Everything kept about one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRecord {
    pub name: String,
    pub namespace: String,
    pub steps_bp: Vec<u32>,
    pub failure_threshold: u32,
    pub status: CanaryPolicyStatus,
    /// RFC 3339 time of the last record.
    pub updated: String,
    pub samples: VecDeque<Sample>,
    pub events: VecDeque<Event>,
}

/// Every policy's record, by (namespace, name).
#[derive(Debug, Default)]
pub struct HistoryStore {
    policies: BTreeMap<(String, String), PolicyRecord>,
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn epoch_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl HistoryStore {
    pub fn new() -> Self {
        HistoryStore::default()
    }

    /// Make sure `policy` is listed (before its first tick), at `status`.
    pub fn register(
        &mut self,
        namespace: &str,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        now: SystemTime,
    ) {
        self.entry(namespace, policy, status, now);
    }

    fn entry(
        &mut self,
        namespace: &str,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        now: SystemTime,
    ) -> &mut PolicyRecord {
        let updated = humantime::format_rfc3339_seconds(now).to_string();
        let r = self
            .policies
            .entry((namespace.to_owned(), policy.name.clone()))
            .or_insert_with(|| PolicyRecord {
                name: policy.name.clone(),
                namespace: namespace.to_owned(),
                steps_bp: policy.steps_bp.clone(),
                failure_threshold: policy.failure_threshold,
                status: status.clone(),
                updated: updated.clone(),
                samples: VecDeque::new(),
                events: VecDeque::new(),
            });
        // The spec may have changed (kube): keep the newest.
        r.steps_bp.clone_from(&policy.steps_bp);
        r.failure_threshold = policy.failure_threshold;
        r
    }

    /// Record one tick of `policy` that led to `status` with `events` (or an operator's command:
    /// `verdicts` `None`, so the check charts show a gap there).
    pub fn record(
        &mut self,
        namespace: &str,
        policy: &ValidatedPolicy,
        status: &CanaryPolicyStatus,
        verdicts: Option<&[Verdict]>,
        events: &[RolloutEvent],
        now: SystemTime,
    ) {
        let t_ms = epoch_ms(now);
        let r = self.entry(namespace, policy, status, now);
        r.status = status.clone();
        r.updated = humantime::format_rfc3339_seconds(now).to_string();
        let verdicts = verdicts
            .unwrap_or_default()
            .iter()
            .map(|v| {
                let finite = |x: Option<f64>| x.filter(|x| x.is_finite());
                CheckSample {
                    name: v.check.clone(),
                    verdict: v.outcome.as_str(),
                    canary: finite(v.canary),
                    stable: finite(v.stable),
                    threshold: finite(v.threshold),
                }
            })
            .collect();
        r.samples.push_back(Sample {
            t_ms,
            canary_weight_bp: status.canary_weight_bp,
            phase: status.phase,
            verdicts,
        });
        while r.samples.len() > MAX_SAMPLES {
            r.samples.pop_front();
        }
        for e in events {
            let d = describe(e);
            if d.kind.is_news() {
                r.events.push_back(Event {
                    t_ms,
                    kind: d.kind,
                    message: d.message,
                });
            }
        }
        while r.events.len() > MAX_EVENTS {
            r.events.pop_front();
        }
    }

    /// Drop a policy (deleted).
    pub fn remove(&mut self, namespace: &str, name: &str) {
        self.policies
            .remove(&(namespace.to_owned(), name.to_owned()));
    }

    /// The policy `namespace/name`, or — without a namespace — the one policy called `name`.
    pub fn find(&self, namespace: Option<&str>, name: &str) -> Result<&PolicyRecord, Lookup> {
        if let Some(ns) = namespace {
            return self
                .policies
                .get(&(ns.to_owned(), name.to_owned()))
                .ok_or(Lookup::Unknown);
        }
        let mut found = self.policies.values().filter(|r| r.name == name);
        match (found.next(), found.next()) {
            (None, _) => Err(Lookup::Unknown),
            (Some(r), None) => Ok(r),
            (Some(a), Some(b)) => {
                let mut namespaces = vec![a.namespace.clone(), b.namespace.clone()];
                namespaces.extend(found.map(|r| r.namespace.clone()));
                Err(Lookup::Ambiguous(namespaces))
            }
        }
    }

    /// Every policy, by namespace then name.
    pub fn iter(&self) -> impl Iterator<Item = &PolicyRecord> {
        self.policies.values()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::CanaryPolicy;
    use mlcanary_core::analysis::Outcome;

    fn verdict(outcome: Outcome, canary: f64) -> Verdict {
        Verdict {
            check: "errors".into(),
            outcome,
            canary: Some(canary),
            stable: Some(0.0),
            threshold: Some(0.01),
            n_canary: 100,
            n_stable: 900,
            p_value: Some(f64::NAN),
            message: String::new(),
            ..Default::default()
        }
    }

    fn at(s: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn a_tick_adds_a_sample_and_its_events_but_not_holds() {
        let p = CanaryPolicy::test().validated();
        let mut store = HistoryStore::new();
        let status = CanaryPolicyStatus {
            phase: Phase::Progressing,
            canary_weight_bp: 2500,
            ..Default::default()
        };
        store.record(
            "ml",
            &p,
            &status,
            Some(&[verdict(Outcome::Pass, 0.001)]),
            &[
                RolloutEvent::Advanced {
                    from_bp: 1000,
                    to_bp: 2500,
                },
                RolloutEvent::Held(mlcanary_core::rollout::Hold::TimedPause),
            ],
            at(5),
        );
        let r = store.find(None, "fraud-model").expect("recorded");
        assert_eq!(r.namespace, "ml");
        assert_eq!(r.samples.len(), 1);
        assert_eq!(r.samples[0].t_ms, 1_700_000_005_000);
        assert_eq!(r.samples[0].canary_weight_bp, 2500);
        assert_eq!(r.samples[0].verdicts[0].verdict, "pass");
        assert_eq!(r.samples[0].verdicts[0].canary, Some(0.001));
        assert_eq!(r.events.len(), 1, "holds are not events");
        assert_eq!(r.events[0].kind, Kind::Advanced);
        assert_eq!(r.events[0].message, "advanced 10.00% -> 25.00%");
        assert_eq!(r.updated, "2023-11-14T22:13:25Z");
    }

    #[test]
    fn the_rings_are_bounded_and_keep_the_newest() {
        let p = CanaryPolicy::test().validated();
        let mut store = HistoryStore::new();
        let status = CanaryPolicyStatus::default();
        for i in 0..(MAX_SAMPLES as u64 + 10) {
            store.record("default", &p, &status, None, &[RolloutEvent::Paused], at(i));
        }
        let r = store.find(None, "fraud-model").expect("recorded");
        assert_eq!(r.samples.len(), MAX_SAMPLES);
        assert_eq!(r.samples[0].t_ms, epoch_ms(at(10)));
        assert_eq!(r.events.len(), MAX_EVENTS);
        assert_eq!(
            r.events.back().map(|e| e.t_ms),
            Some(epoch_ms(at(MAX_SAMPLES as u64 + 9)))
        );
    }
}
