//! Prometheus as the source (clusters): `increase()` over the analysis interval per variant, raw
//! bucket increases for the latency histogram (so the controller's own `histogram_quantile` judges
//! both variants the same way), and custom PromQL with `{{policy}}` / `{{variant}}` filled in.

use std::collections::HashMap;
use std::time::Duration;

use mlcanary_filter::stats::{DURATION, ERRORS, REQUESTS};
use prometheus_http_query::Client;

use super::{MetricsError, MetricsSource};
use crate::analysis::quantile::Bucket;
use crate::analysis::{VariantWindow, Window};
use crate::policy::validate::CheckKind;
use crate::policy::ValidatedPolicy;

/// The PromQL range of a window: whole seconds, at least 1 s.
pub fn range(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// `sum(increase(family{policy="p",variant="v"}[W]))`. Policy and variant names are validated to
/// `[A-Za-z0-9_-]`, so they need no escaping inside the quotes.
pub fn increase_query(family: &str, policy: &str, variant: &str, window: Duration) -> String {
    format!(
        "sum(increase({family}{{policy=\"{policy}\",variant=\"{variant}\"}}[{}]))",
        range(window)
    )
}

/// `sum by (le) (increase(<duration>_bucket{...}[W]))`.
pub fn buckets_query(policy: &str, variant: &str, window: Duration) -> String {
    format!(
        "sum by (le) (increase({DURATION}_bucket{{policy=\"{policy}\",variant=\"{variant}\"}}[{}]))",
        range(window)
    )
}

/// A custom check's query for one variant.
pub fn custom_query(template: &str, policy: &str, variant: &str) -> String {
    template
        .replace("{{policy}}", policy)
        .replace("{{variant}}", variant)
}

/// Prometheus HTTP API source.
#[derive(Clone)]
pub struct PrometheusSource {
    client: Client,
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
        Ok(PrometheusSource { client })
    }

    async fn vector(
        &self,
        query: &str,
    ) -> Result<Vec<(HashMap<String, String>, f64)>, MetricsError> {
        let err = |e: prometheus_http_query::Error| MetricsError::Query {
            query: query.to_owned(),
            reason: e.to_string(),
        };
        let res = self.client.query(query).get().await.map_err(err)?;
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

    /// The single number a query returns; `None` for an empty result (no traffic yet).
    async fn scalar(&self, query: &str) -> Result<Option<f64>, MetricsError> {
        Ok(self
            .vector(query)
            .await?
            .first()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite()))
    }

    async fn variant(
        &self,
        policy: &ValidatedPolicy,
        variant: &str,
    ) -> Result<VariantWindow, MetricsError> {
        let w = policy.interval;
        let count = |v: Option<f64>| v.unwrap_or(0.0).max(0.0).round() as u64;
        let requests = count(
            self.scalar(&increase_query(REQUESTS, &policy.name, variant, w))
                .await?,
        );
        let errors = count(
            self.scalar(&increase_query(ERRORS, &policy.name, variant, w))
                .await?,
        );
        let mut duration: Vec<Bucket> = self
            .vector(&buckets_query(&policy.name, variant, w))
            .await?
            .into_iter()
            .filter_map(|(labels, count)| {
                let le = match labels.get("le").map(String::as_str) {
                    Some("+Inf") => f64::INFINITY,
                    Some(l) => l.parse().ok()?,
                    None => return None,
                };
                Some(Bucket { le, count })
            })
            .collect();
        duration.sort_by(|a, b| a.le.total_cmp(&b.le));
        let mut custom = std::collections::BTreeMap::new();
        for c in &policy.checks {
            if let CheckKind::Custom { query, .. } = &c.kind {
                if let Some(v) = self
                    .scalar(&custom_query(query, &policy.name, variant))
                    .await?
                {
                    custom.insert(c.name.clone(), v);
                }
            }
        }
        Ok(VariantWindow {
            requests,
            errors,
            duration,
            custom,
        })
    }
}

impl MetricsSource for PrometheusSource {
    async fn fetch(&mut self, policy: &ValidatedPolicy) -> Result<Window, MetricsError> {
        Ok(Window {
            stable: self.variant(policy, &policy.stable_subset).await?,
            canary: self.variant(policy, &policy.canary_subset).await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let w = Duration::from_secs(30);
        assert_eq!(
            increase_query(REQUESTS, "fraud-model", "canary", w),
            r#"sum(increase(mlcanary_requests_total{policy="fraud-model",variant="canary"}[30s]))"#
        );
        assert_eq!(
            buckets_query("p", "stable", Duration::from_millis(500)),
            r#"sum by (le) (increase(mlcanary_request_duration_ms_bucket{policy="p",variant="stable"}[1s]))"#
        );
        assert_eq!(
            custom_query(
                r#"x{policy="{{policy}}",variant="{{variant}}"}"#,
                "p",
                "canary"
            ),
            r#"x{policy="p",variant="canary"}"#
        );
    }

    #[tokio::test]
    async fn unreachable_prometheus_is_an_error() {
        let p = crate::policy::CanaryPolicy::test().validated();
        let mut src = PrometheusSource::new("http://127.0.0.1:1").unwrap();
        let e = src.fetch(&p).await.unwrap_err();
        assert_eq!(e.label(), "query");
    }
}
