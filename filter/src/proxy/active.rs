//! A config in force and the ids of the metrics its streams record into, defined lazily.

use std::cell::Cell;

use super::abi::{self, log, COUNTER, HISTOGRAM};
use crate::config::Config;
use crate::stats::{self, Phase};

/// Metric ids of one (policy, variant, segment) tuple, defined on the tuple's first request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Slot {
    pub(super) requests: u32,
    pub(super) errors: u32,
    pub(super) duration: u32,
    /// Only for policies that read predictions.
    pub(super) predictions: Option<PredictionIds>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PredictionIds {
    pub(super) score: u32,
    pub(super) count: u32,
    pub(super) positives: u32,
    pub(super) failures: u32,
}

/// A config in force with its metric ids; shared by every stream it started.
///
/// A tuple's metrics are defined when its first request ends, not when the config loads: a sidecar
/// exports series only for the models it calls (a mesh-wide config names every model, and defining
/// all of them in every sidecar made ~400 series per policy per pod). Envoy keeps a stat across
/// config reloads, so defining it again under a new config finds the same counters. The controller
/// reads a series that is absent as zero, so the first request still counts.
pub(super) struct Active {
    pub(super) config: Config,
    /// One per tuple, `None` until its first request (or while defining fails).
    pub(super) slots: Vec<Cell<Option<Slot>>>,
    /// The same tuples' shadow stats (`phase="shadow"`); empty unless the config is inbound.
    pub(super) shadow_slots: Vec<Cell<Option<Slot>>>,
    /// First slot of each policy; a tuple's slot is `base + variant * segments + segment`.
    pub(super) base: Vec<usize>,
    /// Per slot, the `mlcanary_feedback_total` ids by outcome, defined on the slot's first label.
    pub(super) feedback: Vec<Cell<Option<[u32; 4]>>>,
    /// Per policy, `mlcanary_feedback_rejected_total` ids by reason, defined on first use.
    pub(super) rejected: Vec<Cell<Option<[u32; 7]>>>,
}

impl Active {
    pub(super) fn new(config: Config) -> Active {
        let mut base = Vec::with_capacity(config.policies.len());
        let mut n = 0;
        for p in &config.policies {
            base.push(n);
            n += p.variants.len() * p.segment_count();
        }
        let shadows = if config.inbound { n } else { 0 };
        let with_feedback = config.policies.iter().any(|p| p.feedback.is_some());
        let feedback = if with_feedback { n } else { 0 };
        let rejected = if with_feedback {
            config.policies.len()
        } else {
            0
        };
        Active {
            config,
            slots: (0..n).map(|_| Cell::new(None)).collect(),
            shadow_slots: (0..shadows).map(|_| Cell::new(None)).collect(),
            base,
            feedback: (0..feedback).map(|_| Cell::new(None)).collect(),
            rejected: (0..rejected).map(|_| Cell::new(None)).collect(),
        }
    }

    /// The metric ids of slot `i` of policy `pi`, defined on first use. `None` if Envoy refuses a
    /// definition (logged; the request is then unmeasured, never failed).
    pub(super) fn slot(&self, pi: usize, i: usize, phase: Phase) -> Option<Slot> {
        let cell = match phase {
            Phase::Live => self.slots.get(i)?,
            Phase::Shadow => self.shadow_slots.get(i)?,
        };
        if let Some(s) = cell.get() {
            return Some(s);
        }
        let p = self.config.policies.get(pi)?;
        let k = i.checked_sub(*self.base.get(pi)?)?;
        let v = p.variants.get(k / p.segment_count())?;
        let seg = p.segment.as_ref().map(|g| g.label(k % p.segment_count()));
        let def = |kind, family| {
            let id = stats::PolicyId {
                namespace: &p.namespace,
                name: &p.name,
            };
            let name = stats::stat_name(family, id, &v.name, seg, phase);
            abi::define_metric(kind, &name)
                .map_err(|e| {
                    log(
                        abi::LOG_WARN,
                        &format!("defining metric {name}: status {e}"),
                    )
                })
                .ok()
        };
        let predictions = match p.predictions {
            None => None,
            Some(_) => Some(PredictionIds {
                score: def(HISTOGRAM, stats::PREDICTION_SCORE)?,
                count: def(COUNTER, stats::PREDICTIONS)?,
                positives: def(COUNTER, stats::POSITIVES)?,
                failures: def(COUNTER, stats::PARSE_FAILURES)?,
            }),
        };
        let slot = Slot {
            requests: def(COUNTER, stats::REQUESTS)?,
            errors: def(COUNTER, stats::ERRORS)?,
            duration: def(HISTOGRAM, stats::DURATION)?,
            predictions,
        };
        cell.set(Some(slot));
        Some(slot)
    }
}
