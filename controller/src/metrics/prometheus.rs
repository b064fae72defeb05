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

use futures::StreamExt;
use prometheus_http_query::Client;

use super::counters::{families, Counters};
use super::{unix_ms, MetricsError, MetricsSource, Prepared, Reading};
use crate::policy::validated::CheckKind;
use crate::policy::{PolicyKey, ValidatedPolicy};
use mlcanary_core::window::{Mark, Window};

/// Policies per batched counters query: the query rides in a GET's URL, kept well under the
/// 8 KiB many proxies allow (a policy name is at most 63 characters).
pub const BATCH: usize = 50;
/// Batched queries in flight at once: a pass over many policies must not flood Prometheus.
pub const CONCURRENCY: usize = 4;

/// `{__name__=~"<families>",policy_namespace="ns",policy=~"p1|p2"}`: every series the windows of
/// these policies of one namespace are made of, unaggregated (resets are found per pod). Names and
/// namespaces are validated to `[A-Za-z0-9_-]`: no escaping needed, and none is another's prefix
/// in an anchored regex.
pub fn series_query(namespace: &str, policies: &[&str]) -> String {
    format!(
        "{{__name__=~\"{}\",policy_namespace=\"{namespace}\",policy=~\"{}\"}}",
        families().join("|"),
        policies.join("|")
    )
}

/// A custom check's query for one variant: `{{namespace}}`, `{{policy}}` and `{{variant}}` filled.
pub fn custom_query(template: &str, policy: &PolicyKey, variant: &str) -> String {
    template
        .replace("{{namespace}}", &policy.namespace)
        .replace("{{policy}}", &policy.name)
        .replace("{{variant}}", variant)
}

/// The policies of a pass in query batches: one namespace per batch (the namespace is an exact
/// matcher), at most [`BATCH`] names each.
pub fn batches<'p>(policies: &[&'p ValidatedPolicy]) -> Vec<Vec<&'p ValidatedPolicy>> {
    let mut by_ns: std::collections::BTreeMap<&str, Vec<&ValidatedPolicy>> = Default::default();
    for p in policies {
        by_ns.entry(p.namespace_or_default()).or_default().push(p);
    }
    by_ns
        .into_values()
        .flat_map(|ps| ps.chunks(BATCH).map(<[_]>::to_vec).collect::<Vec<_>>())
        .collect()
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
    kept: Arc<Mutex<HashMap<PolicyKey, (i64, Counters)>>>,
    /// What the last [`MetricsSource::prepare`] read, until each policy's fetch takes it; shared
    /// by clones, so the kube loop's first reconcile of an interval reads for the others.
    prepared: Arc<Mutex<Prepared>>,
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
            prepared: Default::default(),
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

    /// The cumulative counters of `policies` (one namespace) as Prometheus holds them at `at_ms`,
    /// from one query; a policy without series has empty counters (an absent series reads 0).
    async fn counters_at(
        &self,
        policies: &[&ValidatedPolicy],
        at_ms: i64,
    ) -> Result<HashMap<PolicyKey, Counters>, MetricsError> {
        let Some(first) = policies.first() else {
            return Ok(HashMap::new());
        };
        let namespace = first.namespace_or_default();
        debug_assert!(policies
            .iter()
            .all(|p| p.namespace_or_default() == namespace));
        let names: Vec<&str> = policies.iter().map(|p| p.name.as_str()).collect();
        let rows = self.vector(&series_query(namespace, &names), at_ms).await?;
        let mut out: HashMap<&str, (&ValidatedPolicy, Counters)> = policies
            .iter()
            .map(|p| (p.name.as_str(), (*p, Counters::default())))
            .collect();
        for (labels, value) in &rows {
            let (Some(name), Some(policy)) = (labels.get("__name__"), labels.get("policy")) else {
                continue;
            };
            let Some((p, c)) = out.get_mut(policy.as_str()) else {
                continue;
            };
            let variants = [p.stable_subset.as_str(), p.canary_subset.as_str()];
            let pairs = labels.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            c.add(name, pairs, *value, p.stat_id(), variants);
        }
        Ok(out.into_values().map(|(p, c)| (p.key(), c)).collect())
    }

    /// [`Self::counters_at`], handing back which policies it was for.
    async fn batch<'a, 'p>(
        &self,
        chunk: &'a [&'p ValidatedPolicy],
        at_ms: i64,
    ) -> (
        &'a [&'p ValidatedPolicy],
        Result<HashMap<PolicyKey, Counters>, MetricsError>,
    ) {
        (chunk, self.counters_at(chunk, at_ms).await)
    }

    /// One policy's counters at `at_ms`.
    async fn counters_of(
        &self,
        policy: &ValidatedPolicy,
        at_ms: i64,
    ) -> Result<Counters, MetricsError> {
        let mut all = self.counters_at(&[policy], at_ms).await?;
        Ok(all.remove(&policy.key()).unwrap_or_default())
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
                    CheckKind::Custom { query, .. } => custom_query(query, &policy.key(), variant),
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
}

impl MetricsSource for PrometheusSource {
    /// The counters of a whole pass: one query per [`BATCH`] policies, [`CONCURRENCY`] at a time,
    /// all at the same evaluation time.
    async fn prepare(&mut self, policies: &[&ValidatedPolicy], now: SystemTime) {
        let at = unix_ms(now);
        // Futures collected first: a closure inside the stream trips the `Send` proof.
        let chunks = batches(policies);
        let batches: Vec<_> = chunks.iter().map(|chunk| self.batch(chunk, at)).collect();
        let reads: Vec<_> = futures::stream::iter(batches)
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
        let mut by_policy = Vec::with_capacity(policies.len());
        for (chunk, read) in reads {
            match read {
                Ok(mut counters) => by_policy.extend(chunk.iter().map(|p| {
                    let c = counters.remove(&p.key()).unwrap_or_default();
                    (p.key(), Ok(c))
                })),
                Err(e) => by_policy.extend(chunk.iter().map(|p| (p.key(), Err(e.clone())))),
            }
        }
        *self.prepared.lock().expect("lock") = Prepared::new(at, by_policy);
    }

    fn prepared_for(&self, policy: &PolicyKey) -> bool {
        self.prepared.lock().expect("lock").holds(policy)
    }

    async fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        // A batch read more than half an interval ago is too old to end this window.
        let half = i64::try_from(policy.interval.as_millis() / 2).unwrap_or(i64::MAX);
        let prepared = (self.prepared.lock().expect("lock"))
            .take_since(&policy.key(), unix_ms(now).saturating_sub(half));
        let (at, cur) = match prepared {
            Some((at, read)) => (at, read?),
            None => {
                let at = unix_ms(now);
                (at, self.counters_of(policy, at).await?)
            }
        };
        let key = policy.key();
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
                    None => self.counters_of(policy, mark.at_ms).await?,
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
