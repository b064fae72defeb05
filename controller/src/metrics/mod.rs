//! Where the numbers come from: sources behind one trait, each reading a policy's cumulative
//! counters at one instant and handing back the [`Window`] since the previous [`Mark`] (see
//! [`counters`]: windows at fixed instants never lose or double-count a sample). An `Err` means "no
//! data": the loop holds (and only the progress deadline can turn that into a rollback); the mark
//! stays where it was, so the next window covers the gap.
//!
//! Metric names and labels are the filter's (`mlcanary_filter::stats`): counters
//! `mlcanary_requests_total`, `mlcanary_errors_total`, histogram `mlcanary_request_duration_ms`,
//! labels `policy_namespace`, `policy`, `variant` (and `segment`, summed over here).

pub mod counters;
pub mod envoy;
pub mod exposition;
pub mod prometheus;

use std::collections::HashMap;
use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use crate::policy::{PolicyKey, ValidatedPolicy};
use counters::Counters;
use mlcanary_core::window::{Mark, Window};

pub use envoy::EnvoySource;
pub use prometheus::PrometheusSource;

/// Why a source has no window.
#[derive(Debug, Clone, Error)]
pub enum MetricsError {
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("first scrape of {policy}: a window needs two scrapes")]
    NoBaseline { policy: String },
    #[error("prometheus query {query:?} failed: {reason}")]
    Query { query: String, reason: String },
}

impl MetricsError {
    /// A fixed, low-cardinality label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            MetricsError::Unreachable { .. } => "unreachable",
            MetricsError::Status { .. } => "http_status",
            MetricsError::NoBaseline { .. } => "no_baseline",
            MetricsError::Query { .. } => "query",
        }
    }
}

/// What a source read for one policy at one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The window since the mark the source was given; `None` without one (the first read of a
    /// rollout only sets the mark).
    pub window: Option<Window>,
    /// Where the next window starts.
    pub mark: Mark,
}

/// A source of per-variant windows.
pub trait MetricsSource {
    /// Read `policy`'s counters at `now`; the window is the difference from those at `since`.
    fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> impl Future<Output = Result<Reading, MetricsError>> + Send;

    /// Read at `now`, in as few requests as the source can (one Envoy scrape, batched Prometheus
    /// queries), what the `fetch`es of one pass over `policies` need. Each policy's part is taken
    /// by its next `fetch`, whose window then ends at `now`; a `fetch` with nothing prepared reads
    /// for itself. The default prepares nothing.
    fn prepare(
        &mut self,
        policies: &[&ValidatedPolicy],
        now: SystemTime,
    ) -> impl Future<Output = ()> + Send {
        let _ = (policies, now);
        async {}
    }

    /// Whether a `prepare` read something for `policy` that its next `fetch` will take.
    fn prepared_for(&self, policy: &PolicyKey) -> bool {
        let _ = policy;
        false
    }
}

/// The counters a [`MetricsSource::prepare`] read, by policy, each taken once by its `fetch`: what
/// a pass did not take is gone at the next `prepare`, so no fetch reads an older pass' counters.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    at_ms: i64,
    by_policy: HashMap<PolicyKey, Result<Counters, MetricsError>>,
}

impl Prepared {
    pub fn new(
        at_ms: i64,
        by_policy: impl IntoIterator<Item = (PolicyKey, Result<Counters, MetricsError>)>,
    ) -> Self {
        Prepared {
            at_ms,
            by_policy: by_policy.into_iter().collect(),
        }
    }

    /// `policy`'s counters and the time they were read at, once.
    pub fn take(&mut self, policy: &PolicyKey) -> Option<(i64, Result<Counters, MetricsError>)> {
        self.by_policy.remove(policy).map(|c| (self.at_ms, c))
    }

    /// Like [`Prepared::take`], but `None` (and gone) when read before `not_before_ms`: a fetch
    /// long after its pass' read reads afresh rather than judge an old window.
    pub fn take_since(
        &mut self,
        policy: &PolicyKey,
        not_before_ms: i64,
    ) -> Option<(i64, Result<Counters, MetricsError>)> {
        self.take(policy).filter(|(at, _)| *at >= not_before_ms)
    }

    pub fn holds(&self, policy: &PolicyKey) -> bool {
        self.by_policy.contains_key(policy)
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
