//! Where the numbers come from: sources behind one trait, each producing a [`Window`] per policy per
//! interval. An `Err` means "no data": the loop holds (and only the progress deadline can turn that
//! into a rollback).
//!
//! Metric names and labels are the filter's (`mlcanary_filter::stats`): counters
//! `mlcanary_requests_total`, `mlcanary_errors_total`, histogram `mlcanary_request_duration_ms`,
//! labels `policy`, `variant` (and `segment`, summed over here).

pub mod envoy;
pub mod exposition;
pub mod prometheus;

use std::future::Future;

use thiserror::Error;

use crate::analysis::Window;
use crate::policy::ValidatedPolicy;

pub use envoy::EnvoySource;
pub use prometheus::PrometheusSource;

/// Why a source has no window.
#[derive(Debug, Error)]
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

/// A source of per-variant windows.
pub trait MetricsSource {
    /// The window for `policy`'s stable and canary variants since the previous interval.
    fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
    ) -> impl Future<Output = Result<Window, MetricsError>> + Send;
}
