//! Prometheus as the source (clusters): `increase()` over the analysis interval per variant, raw
//! bucket increases for the latency histogram (so the controller's own `histogram_quantile` judges
//! both variants the same way), and custom PromQL with `{{policy}}` / `{{variant}}` filled in.
//! Counters are queried `by (segment)`: the sum of the groups is the variant's total, the groups
//! are the per-segment counts (a series without a `segment` label only adds to the total). The
//! prediction-score histogram is queried `by (le)` like the latency one.

use std::collections::HashMap;
use std::time::Duration;

use mlcanary_filter::stats::{
    DURATION, ERRORS, POSITIVES, PREDICTIONS, PREDICTION_SCORE, REQUESTS,
};
use prometheus_http_query::Client;

use super::{MetricsError, MetricsSource};
use crate::analysis::quantile::Bucket;
use crate::analysis::resources::resource_query;
use crate::analysis::{SegmentCounts, VariantWindow, Window};
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

/// `sum by (segment) (increase(family{policy="p",variant="v"}[W]))`.
pub fn by_segment_query(family: &str, policy: &str, variant: &str, window: Duration) -> String {
    format!(
        "sum by (segment) (increase({family}{{policy=\"{policy}\",variant=\"{variant}\"}}[{}]))",
        range(window)
    )
}

/// `sum by (le) (increase(<histogram>_bucket{...}[W]))`.
pub fn histogram_query(histogram: &str, policy: &str, variant: &str, window: Duration) -> String {
    format!(
        "sum by (le) (increase({histogram}_bucket{{policy=\"{policy}\",variant=\"{variant}\"}}[{}]))",
        range(window)
    )
}

/// `sum by (le) (increase(<duration>_bucket{...}[W]))`.
pub fn buckets_query(policy: &str, variant: &str, window: Duration) -> String {
    histogram_query(DURATION, policy, variant, window)
}

/// An `increase()` as a count: negative or non-finite reads 0.
fn count(v: f64) -> u64 {
    if v.is_finite() {
        v.max(0.0).round() as u64
    } else {
        0
    }
}

/// Rows of a `by (le)` query → sorted buckets (rows without a parsable `le` are dropped).
pub fn buckets_from_rows(rows: Vec<(HashMap<String, String>, f64)>) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = rows
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
    out.sort_by(|a, b| a.le.total_cmp(&b.le));
    out
}

/// Rows of a `by (segment)` query → the total and the per-segment values.
pub fn segment_rows(rows: &[(HashMap<String, String>, f64)]) -> (u64, Vec<(String, u64)>) {
    let total = rows.iter().map(|(_, v)| count(*v)).sum();
    let per = rows
        .iter()
        .filter_map(|(l, v)| l.get("segment").map(|s| (s.clone(), count(*v))))
        .collect();
    (total, per)
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
        let mut segments: std::collections::BTreeMap<String, SegmentCounts> = Default::default();
        let mut totals = [0u64; 4];
        let families = [REQUESTS, ERRORS, PREDICTIONS, POSITIVES];
        for (i, family) in families.into_iter().enumerate() {
            let rows = self
                .vector(&by_segment_query(family, &policy.name, variant, w))
                .await?;
            let (total, per) = segment_rows(&rows);
            totals[i] = total;
            for (seg, n) in per {
                let c = segments.entry(seg).or_default();
                let slot = match i {
                    0 => &mut c.requests,
                    1 => &mut c.errors,
                    2 => &mut c.scored,
                    _ => &mut c.positives,
                };
                *slot = n;
            }
        }
        let duration = buckets_from_rows(
            self.vector(&buckets_query(&policy.name, variant, w))
                .await?,
        );
        let scores = if policy.filter_template.predictions.is_some() {
            buckets_from_rows(
                self.vector(&histogram_query(PREDICTION_SCORE, &policy.name, variant, w))
                    .await?,
            )
        } else {
            Vec::new()
        };
        let mut custom = std::collections::BTreeMap::new();
        for c in &policy.checks {
            let query = match &c.kind {
                CheckKind::Custom { query, .. } => custom_query(query, &policy.name, variant),
                // Resource checks ride in `custom` too: see `analysis::resources`.
                CheckKind::Resource(r) => {
                    resource_query(r, policy.namespace.as_deref(), variant, w)
                }
                _ => continue,
            };
            if let Some(v) = self.scalar(&query).await? {
                custom.insert(c.name.clone(), v);
            }
        }
        let [requests, errors, scored, positives] = totals;
        Ok(VariantWindow {
            requests,
            errors,
            duration,
            custom,
            scores,
            scored,
            positives,
            segments,
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
            by_segment_query(POSITIVES, "fraud-model", "canary", w),
            r#"sum by (segment) (increase(mlcanary_positive_predictions_total{policy="fraud-model",variant="canary"}[30s]))"#
        );
        assert_eq!(
            histogram_query(PREDICTION_SCORE, "fraud-model", "canary", w),
            r#"sum by (le) (increase(mlcanary_prediction_score_bucket{policy="fraud-model",variant="canary"}[30s]))"#
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

    fn row(labels: &[(&str, &str)], v: f64) -> (HashMap<String, String>, f64) {
        let l = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        (l, v)
    }

    #[test]
    fn segment_rows_sum_to_the_total() {
        // Increases are extrapolated, so not integers: rounded per row; a series without a
        // segment label counts towards the total only; NaN reads 0.
        let rows = vec![
            row(&[("segment", "60+")], 12.4),
            row(&[("segment", "other")], 3.6),
            row(&[], 5.0),
            row(&[("segment", "18-30")], f64::NAN),
        ];
        let (total, per) = segment_rows(&rows);
        assert_eq!(total, 21);
        assert_eq!(
            per,
            vec![
                ("60+".to_owned(), 12),
                ("other".to_owned(), 4),
                ("18-30".to_owned(), 0)
            ]
        );
    }

    #[test]
    fn score_buckets_sorted_and_inf_parsed() {
        let rows = vec![
            row(&[("le", "+Inf")], 40.0),
            row(&[("le", "500")], 30.0),
            row(&[("le", "50")], 10.0),
            row(&[("le", "bogus")], 1.0),
            row(&[], 2.0),
        ];
        let b = buckets_from_rows(rows);
        let les: Vec<f64> = b.iter().map(|b| b.le).collect();
        assert_eq!(les, [50.0, 500.0, f64::INFINITY]);
        assert_eq!(b[2].count, 40.0);
    }

    #[tokio::test]
    async fn unreachable_prometheus_is_an_error() {
        let p = crate::policy::CanaryPolicy::test().validated();
        let mut src = PrometheusSource::new("http://127.0.0.1:1").unwrap();
        let e = src.fetch(&p).await.unwrap_err();
        assert_eq!(e.label(), "query");
    }
}
