//! The embedded default: scrape Envoy's admin `/stats/prometheus`. Envoy keeps no history, so the
//! counters read at each tick are handed back in the [`Mark`] (and persisted with the status): the
//! next window is the difference from them ([`Counters`]), a counter reset (Envoy restarted) counted
//! as Prometheus' `increase()` counts one.
//!
//! One scrape serves a whole pass ([`MetricsSource::prepare`]): Envoy is asked only for what a
//! window is made of (`usedonly`, `filter=`: the filter's families and Envoy's uptime, not its
//! thousands of own stats), the page is parsed once and its samples indexed by policy, so each
//! policy's counters are built from its own samples — time linear in what is needed, not in
//! policies × page.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use super::counters::{Counters, UPTIME};
use super::exposition::{parse, Exposition, Sample};
use super::{unix_ms, MetricsError, MetricsSource, Prepared, Reading};
use crate::policy::{PolicyKey, ValidatedPolicy};
use mlcanary_core::window::Mark;

/// The admin query: samples Envoy has recorded (`usedonly`) whose name holds the filter's prefix or
/// is the uptime gauge (`server.uptime` as a regex matches both its stat and its Prometheus name).
pub const STATS_QUERY: &str = "/stats/prometheus?usedonly&filter=mlcanary_%7Cserver.uptime";

/// Envoy admin scraper.
#[derive(Debug)]
pub struct EnvoySource {
    url: String,
    client: reqwest::Client,
    prepared: Prepared,
}

impl EnvoySource {
    /// `admin` is Envoy's admin base URL, e.g. `http://127.0.0.1:9901`.
    pub fn new(admin: &str) -> Result<Self, MetricsError> {
        crate::tls::install_crypto_provider();
        let url = format!("{}{STATS_QUERY}", admin.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| MetricsError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(EnvoySource {
            url,
            client,
            prepared: Prepared::default(),
        })
    }

    async fn scrape(&self) -> Result<Exposition, MetricsError> {
        let unreachable = |e: reqwest::Error| MetricsError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(unreachable)?;
        if !resp.status().is_success() {
            return Err(MetricsError::Status {
                url: self.url.clone(),
                status: resp.status().as_u16(),
            });
        }
        let text = resp.text().await.map_err(unreachable)?;
        let e = parse(&text);
        if e.skipped > 0 {
            tracing::debug!(skipped = e.skipped, "unparsable lines in Envoy stats");
        }
        Ok(e)
    }
}

impl MetricsSource for EnvoySource {
    async fn prepare(&mut self, policies: &[&ValidatedPolicy], now: SystemTime) {
        let at_ms = unix_ms(now);
        let counters: Vec<_> = match self.scrape().await {
            Ok(e) => {
                let index = ByPolicy::new(&e);
                let each = |p: &&ValidatedPolicy| (p.key(), Ok(index.counters(p)));
                policies.iter().map(each).collect()
            }
            // Every policy of the pass has no data this interval, without a scrape of its own.
            Err(err) => {
                let each = |p: &&ValidatedPolicy| (p.key(), Err(err.clone()));
                policies.iter().map(each).collect()
            }
        };
        self.prepared = Prepared::new(at_ms, counters);
    }

    fn prepared_for(&self, policy: &PolicyKey) -> bool {
        self.prepared.holds(policy)
    }

    async fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        let (at_ms, cur) = match self.prepared.take(&policy.key()) {
            Some((at_ms, read)) => (at_ms, read?),
            None => {
                let e = self.scrape().await?;
                (unix_ms(now), ByPolicy::new(&e).counters(policy))
            }
        };
        Ok(reading(policy, cur, since, at_ms))
    }
}

/// One scrape's samples by their `policy_namespace` and `policy` labels, and the instances' uptime
/// samples every policy needs (they reveal restarts).
struct ByPolicy<'a> {
    policies: HashMap<(&'a str, &'a str), Vec<&'a Sample>>,
    uptime: Vec<&'a Sample>,
}

impl<'a> ByPolicy<'a> {
    fn new(e: &'a Exposition) -> Self {
        let mut policies: HashMap<(&str, &str), Vec<&Sample>> = HashMap::new();
        let mut uptime = Vec::new();
        for s in &e.samples {
            if s.name == UPTIME {
                uptime.push(s);
            } else if let (Some(ns), Some(p)) = (s.label("policy_namespace"), s.label("policy")) {
                policies.entry((ns, p)).or_default().push(s);
            }
        }
        ByPolicy { policies, uptime }
    }

    fn counters(&self, policy: &ValidatedPolicy) -> Counters {
        let variants = [policy.stable_subset.as_str(), policy.canary_subset.as_str()];
        let id = policy.stat_id();
        let own = self.policies.get(&(id.namespace, id.name));
        let samples = own.into_iter().flatten().chain(&self.uptime);
        Counters::from_samples(samples.copied(), id, variants)
    }
}

/// The window since `since` and the next mark, from the counters read at `at_ms`.
pub fn reading(
    policy: &ValidatedPolicy,
    cur: Counters,
    since: Option<&Mark>,
    at_ms: i64,
) -> Reading {
    let variants = [policy.stable_subset.as_str(), policy.canary_subset.as_str()];
    let window = since.map(|m| {
        let prev = Counters::from_map(&m.counters, policy.stat_id(), variants);
        cur.window_since(&prev, &policy.stable_subset, &policy.canary_subset)
    });
    Reading {
        window,
        mark: Mark {
            at_ms,
            counters: cur.to_map(),
        },
    }
}

/// The counters of `policy` in one whole scrape (tests, tools).
pub fn counters(policy: &ValidatedPolicy, e: &Exposition) -> Counters {
    ByPolicy::new(e).counters(policy)
}

#[cfg(test)]
mod tests;
