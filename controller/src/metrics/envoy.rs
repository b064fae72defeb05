//! The embedded default: scrape Envoy's admin `/stats/prometheus`. Envoy keeps no history, so the
//! counters read at each tick are handed back in the [`Mark`] (and persisted with the status): the
//! next window is the difference from them ([`Counters`]), a counter reset (Envoy restarted) counted
//! as Prometheus' `increase()` counts one.

use std::time::{Duration, SystemTime};

use super::counters::Counters;
use super::exposition::{parse, Exposition};
use super::{unix_ms, MetricsError, MetricsSource, Reading};
use crate::policy::ValidatedPolicy;
use mlcanary_core::window::Mark;

/// Envoy admin scraper.
#[derive(Debug)]
pub struct EnvoySource {
    url: String,
    client: reqwest::Client,
}

impl EnvoySource {
    /// `admin` is Envoy's admin base URL, e.g. `http://127.0.0.1:9901`.
    pub fn new(admin: &str) -> Result<Self, MetricsError> {
        crate::tls::install_crypto_provider();
        let url = format!("{}/stats/prometheus", admin.trim_end_matches('/'));
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| MetricsError::Unreachable {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        Ok(EnvoySource { url, client })
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
        Ok(parse(&text))
    }
}

impl MetricsSource for EnvoySource {
    async fn fetch(
        &mut self,
        policy: &ValidatedPolicy,
        since: Option<&Mark>,
        now: SystemTime,
    ) -> Result<Reading, MetricsError> {
        let e = self.scrape().await?;
        if e.skipped > 0 {
            tracing::debug!(skipped = e.skipped, "unparsable lines in Envoy stats");
        }
        Ok(reading(policy, &e, since, now))
    }
}

/// The window since `since` and the next mark, from one scrape.
pub fn reading(
    policy: &ValidatedPolicy,
    e: &Exposition,
    since: Option<&Mark>,
    now: SystemTime,
) -> Reading {
    let variants = [policy.stable_subset.as_str(), policy.canary_subset.as_str()];
    let cur = Counters::from_exposition(e, &policy.name, variants);
    let window = since.map(|m| {
        let prev = Counters::from_map(&m.counters, &policy.name, variants);
        cur.window_since(&prev, &policy.stable_subset, &policy.canary_subset)
    });
    Reading {
        window,
        mark: Mark {
            at_ms: unix_ms(now),
            counters: cur.to_map(),
        },
    }
}

#[cfg(test)]
mod tests;
