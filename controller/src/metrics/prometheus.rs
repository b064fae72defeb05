//! Prometheus as the source (clusters). All of a policy's counter families are read by one instant
//! query at one evaluation time (`time=`): the raw cumulative series, per pod, both variants in the
//! same answer — never `increase()` over a range ending "now", whose result depends on when each
//! query runs and which scrapes its range happens to hold (a window of one scrape interval can hold a
//! single sample and come back empty for one variant). The window is the difference from the
//! counters at the mark ([`super::counters`]: resets per pod, series appearing mid-step). The
//! counters read at a tick are kept in memory as the next tick's start, so consecutive windows
//! telescope exactly; a restarted or `--once` controller reads them again at the mark's time.
//!
//! Custom and resource checks are PromQL values over their own ranges, evaluated at the same time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use prometheus_http_query::Client;

use super::counters::{families, Counters};
use super::{unix_ms, MetricsError, MetricsSource, Reading};
use crate::policy::validated::CheckKind;
use crate::policy::ValidatedPolicy;
use mlcanary_core::window::{Mark, Window};

/// `{__name__=~"<families>",policy="p"}`: every series a window is made of, unaggregated (resets
/// are found per pod). Policy names are validated to `[A-Za-z0-9_-]`: no escaping needed.
pub fn series_query(policy: &str) -> String {
    format!(
        "{{__name__=~\"{}\",policy=\"{policy}\"}}",
        families().join("|")
    )
}

/// A custom check's query for one variant.
pub fn custom_query(template: &str, policy: &str, variant: &str) -> String {
    template
        .replace("{{policy}}", policy)
        .replace("{{variant}}", variant)
}

/// The `time=` parameter: Unix seconds with milliseconds.
pub fn eval_time(at_ms: i64) -> String {
    let at = at_ms.max(0);
    format!("{}.{:03}", at / 1000, at % 1000)
}

type Rows = Vec<(HashMap<String, String>, f64)>;

/// Prometheus HTTP API source. Clones share the counters kept between ticks.
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
    /// Per policy: the counters read at the last mark, and its time.
    kept: Arc<Mutex<HashMap<String, (i64, Counters)>>>,
}

impl PrometheusSource {
    /// `url` is Prometheus' base URL, e.g. `http://prometheus.istio-system:9090`.
    pub fn new(url: &str) -> Result<Self, MetricsError> {
        crate::tls::install_crypto_provider();
        let client: Client =
            url.parse().map_err(
                |e: prometheus_http_query::Error| MetricsError::Unreachable {
                    url: url.to_owned(),
                    reason: e.to_string(),
                },
            )?;
        Ok(PrometheusSource {
            client,
            kept: Default::default(),
        })
    }

    async fn vector(&self, query: &str, at_ms: i64) -> Result<Rows, MetricsError> {
        let err = |e: prometheus_http_query::Error| MetricsError::Query {
            query: query.to_owned(),
            reason: e.to_string(),
        };
        let res = self
            .client
            .query(query)
            .query("time", eval_time(at_ms))
            .get()
            .await
            .map_err(err)?;
        let data = res.data();
        if let Some(v) = data.as_vector() {
            return Ok(v
                .iter()
                .map(|s| (s.metric().clone(), s.sample().value()))
                .collect());
        }
        if let Some(s) = data.as_scalar() {
            return Ok(vec![(HashMap::new(), s.value())]);
        }
        Err(MetricsError::Query {
            query: query.to_owned(),
            reason: "not an instant vector".into(),
        })
    }

    /// The policy's cumulative counters as Prometheus holds them at `at_ms`.
    async fn counters_at(
        &self,
        policy: &ValidatedPolicy,
        at_ms: i64,
    ) -> Result<Counters, MetricsError> {
        let variants = [policy.stable_subset.as_str(), policy.canary_subset.as_str()];
        let mut c = Counters::default();
        for (labels, value) in self.vector(&series_query(&policy.name), at_ms).await? {
            let Some(name) = labels.get("__name__") else {
                continue;
            };
            let pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            c.add(name, pairs, value, &policy.name, variants);
        }
        Ok(c)
    }

    /// Custom and resource check values of both variants, at `at_ms`.
    async fn custom(
        &self,
        policy: &ValidatedPolicy,
        window: &mut Window,
        at_ms: i64,
    ) -> Result<(), MetricsError> {
        for (variant, w) in [
            (&policy.stable_subset, &mut window.stable),
            (&policy.canary_subset, &mut window.canary),
        ] {
            for c in &policy.checks {
                let query = match &c.kind {
                    CheckKind::Custom { query, .. } => custom_query(query, &policy.name, variant),
                    // Resource checks ride in `custom` too: see `analysis::resources`.
                    CheckKind::Resource(r) => resources::resource_query(
                        r,
                        policy.namespace.as_deref(),
                        variant,
                        policy.interval,
                    ),
                    _ => continue,
                };
                let rows = self.vector(&query, at_ms).await?;
                if let Some(v) = rows.first().map(|(_, v)| *v).filter(|v| v.is_finite()) {
                    w.custom.insert(c.name.clone(), v);
                }
            }
        }
        Ok(())
    }

    fn key(policy: &ValidatedPolicy) -> String {
        format!(
            "{}/{}",
            policy.namespace.as_deref().unwrap_or_default(),
            policy.name
        )
    }
}

impl MetricsSource for PrometheusSource {
    async fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        let at = unix_ms(now);
        let cur = self.counters_at(policy, at).await?;
        let key = Self::key(policy);
        let window = match since {
            None => None,
            Some(mark) => {
                // Taken, not copied: it is replaced by this read below either way.
                let kept = self
                    .kept
                    .lock()
                    .expect("lock")
                    .remove(&key)
                    .filter(|(t, _)| *t == mark.at_ms)
                    .map(|(_, c)| c);
                let prev = match kept {
                    Some(c) => c,
                    None => self.counters_at(policy, mark.at_ms).await?,
                };
                let mut w = cur.window_since(&prev, &policy.stable_subset, &policy.canary_subset);
                self.custom(policy, &mut w, at).await?;
                Some(w)
            }
        };
        self.kept.lock().expect("lock").insert(key, (at, cur));
        Ok(Reading {
            window,
            mark: Mark {
                at_ms: at,
                counters: Default::default(),
            },
        })
    }
}

mod resources;
#[cfg(test)]
mod tests;
