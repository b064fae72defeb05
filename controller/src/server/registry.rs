//! The controller's own metrics: one [`ControllerMetrics`] the loops update after each tick and the server
//! encodes on scrape.
//!
//! Names start `mlcanary_controller_` so they never mix with the filter's `mlcanary_*` stats that
//! Envoy exports. Labels are the policy's namespace and name (`policy_namespace`, `policy`: the
//! same labels as the filter's stats; not `namespace`, which the usual pod scrape sets to the
//! controller's own) plus, for checks, the check name from the spec: all bounded by what users
//! wrote, never by traffic. Errors are counted by a fixed
//! `&'static str` reason, never by their text.

use std::fmt;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::policy::{CanaryPolicyStatus, Phase};
use mlcanary_core::rollout::RolloutEvent;

/// Every phase, for the one-hot phase gauge (a dashboard shows the series that is 1).
pub const PHASES: [(Phase, &str); 6] = [
    (Phase::Pending, "Pending"),
    (Phase::Progressing, "Progressing"),
    (Phase::Paused, "Paused"),
    (Phase::Promoted, "Promoted"),
    (Phase::RolledBack, "RolledBack"),
    (Phase::Failed, "Failed"),
];

/// Every verdict a check can have.
pub const VERDICTS: [&str; 3] = ["pass", "fail", "inconclusive"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabels {
    policy_namespace: String,
    policy: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    policy_namespace: String,
    policy: String,
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckValueLabels {
    policy_namespace: String,
    policy: String,
    check: String,
    variant: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    policy_namespace: String,
    policy: String,
    check: String,
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    reason: &'static str,
}

type DurationFamily = Family<PolicyLabels, Histogram, fn() -> Histogram>;

fn analysis_histogram() -> Histogram {
    // 5 ms .. ~20 s: one Prometheus round trip up to a slow, timed-out one.
    Histogram::new(exponential_buckets(0.005, 2.0, 13))
}

/// The controller's metrics; cheap to share behind an `Arc`, updated from any task.
pub struct ControllerMetrics {
    registry: Registry,
    phase: Family<PhaseLabels, Gauge>,
    canary_weight_bp: Family<PolicyLabels, Gauge>,
    check_value: Family<CheckValueLabels, Gauge<f64, AtomicU64>>,
    check_verdict: Family<VerdictLabels, Gauge>,
    promotions: Family<PolicyLabels, Counter>,
    rollbacks: Family<PolicyLabels, Counter>,
    analysis_duration: DurationFamily,
    errors: Family<ErrorLabels, Counter>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerMetrics").finish_non_exhaustive()
    }
}

impl ControllerMetrics {
    pub fn new() -> Self {
        let mut m = ControllerMetrics {
            registry: Registry::with_prefix("mlcanary_controller"),
            phase: Family::default(),
            canary_weight_bp: Family::default(),
            check_value: Family::default(),
            check_verdict: Family::default(),
            promotions: Family::default(),
            rollbacks: Family::default(),
            analysis_duration: Family::new_with_constructor(analysis_histogram as fn() -> _),
            errors: Family::default(),
        };
        m.registry.register(
            "phase",
            "1 for the policy's current phase, 0 for the others",
            m.phase.clone(),
        );
        m.registry.register(
            "canary_weight_bp",
            "Canary weight in basis points (10000 = 100%)",
            m.canary_weight_bp.clone(),
        );
        m.registry.register(
            "check_value",
            "Last value of each check per variant (error rate as a fraction, latency in ms)",
            m.check_value.clone(),
        );
        m.registry.register(
            "check_verdict",
            "1 for each check's last verdict, 0 for the others",
            m.check_verdict.clone(),
        );
        m.registry.register(
            "promotions",
            "Rollouts promoted (100% to the canary)",
            m.promotions.clone(),
        );
        m.registry.register(
            "rollbacks",
            "Rollouts rolled back (0% to the canary)",
            m.rollbacks.clone(),
        );
        m.registry.register(
            "analysis_duration_seconds",
            "Time of one analysis tick: metrics fetch, judgement and traffic write",
            m.analysis_duration.clone(),
        );
        m.registry.register(
            "errors",
            "Failed reconciles and metric fetches by fixed reason",
            m.errors.clone(),
        );
        m
    }

    /// Record a policy's status: phase, weight and the last verdicts.
    pub fn observe_status(&self, namespace: &str, policy: &str, status: &CanaryPolicyStatus) {
        for (phase, name) in PHASES {
            self.phase
                .get_or_create(&PhaseLabels {
                    policy_namespace: namespace.to_owned(),
                    policy: policy.to_owned(),
                    phase: name,
                })
                .set(i64::from(phase == status.phase));
        }
        self.canary_weight_bp
            .get_or_create(&policy_labels(namespace, policy))
            .set(i64::from(status.canary_weight_bp));
        for v in &status.last_verdicts {
            for (variant, value) in [("canary", v.canary), ("stable", v.stable)] {
                if let Some(value) = value {
                    self.check_value
                        .get_or_create(&CheckValueLabels {
                            policy_namespace: namespace.to_owned(),
                            policy: policy.to_owned(),
                            check: v.name.clone(),
                            variant,
                        })
                        .set(value);
                }
            }
            for verdict in VERDICTS {
                self.check_verdict
                    .get_or_create(&VerdictLabels {
                        policy_namespace: namespace.to_owned(),
                        policy: policy.to_owned(),
                        check: v.name.clone(),
                        verdict,
                    })
                    .set(i64::from(v.verdict == verdict));
            }
        }
    }

    /// Count promotions and rollbacks among a tick's events.
    pub fn observe_events(&self, namespace: &str, policy: &str, events: &[RolloutEvent]) {
        for e in events {
            match e {
                RolloutEvent::Promoted { .. } => {
                    self.promotions
                        .get_or_create(&policy_labels(namespace, policy))
                        .inc();
                }
                RolloutEvent::RolledBack { .. } => {
                    self.rollbacks
                        .get_or_create(&policy_labels(namespace, policy))
                        .inc();
                }
                _ => {}
            }
        }
    }

    /// Record how long one analysis tick took.
    pub fn observe_analysis(&self, namespace: &str, policy: &str, took: Duration) {
        self.analysis_duration
            .get_or_create(&policy_labels(namespace, policy))
            .observe(took.as_secs_f64());
    }

    /// Count an error by a fixed reason (see `Error::label` in the loops).
    pub fn error(&self, reason: &'static str) {
        self.errors.get_or_create(&ErrorLabels { reason }).inc();
    }

    /// The Prometheus text exposition (OpenMetrics flavour, which Prometheus reads).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

fn policy_labels(namespace: &str, policy: &str) -> PolicyLabels {
    PolicyLabels {
        policy_namespace: namespace.to_owned(),
        policy: policy.to_owned(),
    }
}
