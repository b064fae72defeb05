//! The embedded default: scrape Envoy's admin `/stats/prometheus` and difference cumulative counters
//! between scrapes. The first scrape of a policy only sets the baseline (no data); a counter that went
//! backwards means Envoy restarted, and the window is then the counts since the restart (what
//! Prometheus' `increase()` does with a reset).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use mlcanary_filter::stats::{
    DURATION, ERRORS, POSITIVES, PREDICTIONS, PREDICTION_SCORE, REQUESTS,
};

use super::exposition::{parse, Exposition, Sample};
use super::{MetricsError, MetricsSource};
use crate::analysis::quantile::Bucket;
use crate::analysis::{SegmentCounts, VariantWindow, Window};
use crate::policy::ValidatedPolicy;

/// Cumulative counters of one (policy, variant, segment).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SegmentTotals {
    pub requests: f64,
    pub errors: f64,
    pub scored: f64,
    pub positives: f64,
}

/// Cumulative totals of one (policy, variant), summed over segments, and per segment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub requests: f64,
    pub errors: f64,
    /// Duration histogram: `(le, cumulative count)` sorted by `le`.
    pub buckets: Vec<(f64, f64)>,
    /// Prediction-score histogram (per mille): `(le, cumulative count)` sorted by `le`.
    pub scores: Vec<(f64, f64)>,
    pub scored: f64,
    pub positives: f64,
    /// By `segment` label; empty when the series carry none.
    pub segments: BTreeMap<String, SegmentTotals>,
}

fn le_of(s: &Sample) -> Option<f64> {
    s.label("le").and_then(|l| match l {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => l.parse::<f64>().ok(),
    })
}

fn add_bucket(buckets: &mut Vec<(f64, f64)>, le: f64, value: f64) {
    match buckets.iter_mut().find(|(b, _)| *b == le) {
        Some((_, c)) => *c += value,
        None => buckets.push((le, value)),
    }
}

/// The totals of `policy`/`variant` in one scrape.
pub fn totals(e: &Exposition, policy: &str, variant: &str) -> Totals {
    let duration_bucket = format!("{DURATION}_bucket");
    let score_bucket = format!("{PREDICTION_SCORE}_bucket");
    let mut t = Totals::default();
    for s in &e.samples {
        if s.label("policy") != Some(policy) || s.label("variant") != Some(variant) {
            continue;
        }
        if !s.value.is_finite() {
            continue;
        }
        let name = s.name.as_str();
        if name == duration_bucket || name == score_bucket {
            let Some(le) = le_of(s) else { continue };
            let hist = if name == score_bucket {
                &mut t.scores
            } else {
                &mut t.buckets
            };
            add_bucket(hist, le, s.value);
            continue;
        }
        let (total, field): (&mut f64, fn(&mut SegmentTotals) -> &mut f64) = match name {
            REQUESTS => (&mut t.requests, |x| &mut x.requests),
            ERRORS => (&mut t.errors, |x| &mut x.errors),
            PREDICTIONS => (&mut t.scored, |x| &mut x.scored),
            POSITIVES => (&mut t.positives, |x| &mut x.positives),
            _ => continue,
        };
        *total += s.value;
        if let Some(seg) = s.label("segment") {
            *field(t.segments.entry(seg.to_owned()).or_default()) += s.value;
        }
    }
    t.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    t.scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    t
}

fn bucket(h: &[(f64, f64)], le: f64) -> Option<f64> {
    h.iter().find(|(b, _)| *b == le).map(|(_, c)| *c)
}

/// Some cumulative count of `cur` is below the same count in `prev`: Envoy restarted.
fn went_backwards(prev: &Totals, cur: &Totals) -> bool {
    let hist_back = |p: &[(f64, f64)], c: &[(f64, f64)]| {
        c.iter()
            .any(|&(le, n)| bucket(p, le).is_some_and(|pn| n < pn))
    };
    cur.requests < prev.requests
        || cur.errors < prev.errors
        || cur.scored < prev.scored
        || cur.positives < prev.positives
        || hist_back(&prev.buckets, &cur.buckets)
        || hist_back(&prev.scores, &cur.scores)
        || cur.segments.iter().any(|(k, c)| {
            prev.segments.get(k).is_some_and(|p| {
                c.requests < p.requests
                    || c.errors < p.errors
                    || c.scored < p.scored
                    || c.positives < p.positives
            })
        })
}

/// The window between two scrapes; a decrease anywhere is a counter reset (window = `cur`).
pub fn difference(prev: &Totals, cur: &Totals) -> VariantWindow {
    let empty = Totals::default();
    let base = if went_backwards(prev, cur) {
        &empty
    } else {
        prev
    };
    let d = |a: f64, b: f64| (a - b).max(0.0).round() as u64;
    let hist = |c: &[(f64, f64)], b: &[(f64, f64)]| -> Vec<Bucket> {
        c.iter()
            .map(|&(le, n)| Bucket {
                le,
                count: (n - bucket(b, le).unwrap_or(0.0)).max(0.0),
            })
            .collect()
    };
    let segments = cur
        .segments
        .iter()
        .map(|(k, c)| {
            let b = base.segments.get(k).copied().unwrap_or_default();
            let counts = SegmentCounts {
                requests: d(c.requests, b.requests),
                errors: d(c.errors, b.errors),
                scored: d(c.scored, b.scored),
                positives: d(c.positives, b.positives),
            };
            (k.clone(), counts)
        })
        .collect();
    VariantWindow {
        requests: d(cur.requests, base.requests),
        errors: d(cur.errors, base.errors),
        duration: hist(&cur.buckets, &base.buckets),
        custom: Default::default(),
        scores: hist(&cur.scores, &base.scores),
        scored: d(cur.scored, base.scored),
        positives: d(cur.positives, base.positives),
        segments,
    }
}

/// The scrape-to-scrape bookkeeping, apart from HTTP so it can be tested on fixtures.
#[derive(Debug, Default)]
pub struct Differ {
    previous: HashMap<String, (Totals, Totals)>,
}

impl Differ {
    /// Record this scrape for `policy`; the window since the previous one, `None` on the first.
    pub fn observe(&mut self, policy: &ValidatedPolicy, e: &Exposition) -> Option<Window> {
        let cur = (
            totals(e, &policy.name, &policy.stable_subset),
            totals(e, &policy.name, &policy.canary_subset),
        );
        let prev = self.previous.insert(policy.name.clone(), cur.clone())?;
        Some(Window {
            stable: difference(&prev.0, &cur.0),
            canary: difference(&prev.1, &cur.1),
        })
    }
}

/// Envoy admin scraper.
#[derive(Debug)]
pub struct EnvoySource {
    url: String,
    client: reqwest::Client,
    differ: Differ,
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
        Ok(EnvoySource {
            url,
            client,
            differ: Differ::default(),
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
        Ok(parse(&text))
    }
}

impl MetricsSource for EnvoySource {
    async fn fetch(&mut self, policy: &ValidatedPolicy) -> Result<Window, MetricsError> {
        let e = self.scrape().await?;
        if e.skipped > 0 {
            tracing::debug!(skipped = e.skipped, "unparsable lines in Envoy stats");
        }
        self.differ
            .observe(policy, &e)
            .ok_or_else(|| MetricsError::NoBaseline {
                policy: policy.name.clone(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::CanaryPolicy;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/envoy_stats.txt"
    ));

    #[test]
    fn totals_sum_segments_of_one_policy_and_variant() {
        let e = parse(FIXTURE);
        assert_eq!(e.skipped, 0);
        let c = totals(&e, "fraud-model", "canary");
        assert_eq!((c.requests, c.errors), (50.0, 1.0));
        assert_eq!(
            c.buckets,
            vec![
                (0.5, 0.0),
                (10.0, 15.0),
                (100.0, 48.0),
                (f64::INFINITY, 50.0)
            ]
        );
        let s = totals(&e, "fraud-model", "stable");
        assert_eq!((s.requests, s.errors), (950.0, 2.0));
        assert_eq!(totals(&e, "churn-model", "canary").requests, 7.0);
    }

    /// Real `/stats/prometheus` output of our Envoy running the filter (all of Envoy's own stats
    /// around ours): every line parses and our totals come out.
    #[test]
    fn real_envoy_scrape() {
        let real = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/envoy_stats_real.txt"
        ));
        let e = parse(real);
        assert_eq!(e.skipped, 0);
        let c = totals(&e, "fraud-model", "canary");
        let s = totals(&e, "fraud-model", "stable");
        assert_eq!(
            (c.requests, c.errors, s.requests, s.errors),
            (2.0, 0.0, 19.0, 0.0)
        );
        assert_eq!(c.buckets.len(), 20, "Envoy's 19 default bounds and +Inf");
        assert_eq!(c.buckets.last(), Some(&(f64::INFINITY, 2.0)));
        assert_eq!(s.buckets.last(), Some(&(f64::INFINITY, 19.0)));
    }

    #[test]
    fn first_scrape_is_baseline_then_differences_and_resets() {
        let p = CanaryPolicy::test().validated();
        let mut d = Differ::default();
        assert!(
            d.observe(&p, &parse(FIXTURE)).is_none(),
            "first scrape: no window"
        );
        let later = FIXTURE
            .replace(
                r#"variant="canary",segment="other"} 20"#,
                r#"variant="canary",segment="other"} 70"#,
            )
            .replace(
                r#"segment="other",le="+Inf"} 20"#,
                r#"segment="other",le="+Inf"} 70"#,
            );
        let w = d.observe(&p, &parse(&later)).unwrap();
        assert_eq!((w.canary.requests, w.canary.errors), (50, 0));
        assert_eq!(w.stable.requests, 0);
        let inf = w
            .canary
            .duration
            .iter()
            .find(|b| b.le == f64::INFINITY)
            .unwrap();
        assert_eq!(inf.count, 50.0);
        // Envoy restarted: counters start again from small numbers; the window is the new counts.
        let restarted = "mlcanary_requests_total{policy=\"fraud-model\",variant=\"canary\"} 4\n\
                         mlcanary_requests_total{policy=\"fraud-model\",variant=\"stable\"} 9\n";
        let w = d.observe(&p, &parse(restarted)).unwrap();
        assert_eq!((w.canary.requests, w.stable.requests), (4, 9));
    }

    const PREDICTIONS_FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/envoy_stats_predictions.txt"
    ));

    #[test]
    fn totals_group_segments_and_read_prediction_series() {
        let e = parse(PREDICTIONS_FIXTURE);
        assert_eq!(e.skipped, 0);
        let c = totals(&e, "fraud-model", "canary");
        assert_eq!(
            (c.requests, c.errors, c.scored, c.positives),
            (150.0, 1.0, 150.0, 35.0)
        );
        let old = c.segments["60+"];
        assert_eq!(
            (old.requests, old.errors, old.scored, old.positives),
            (100.0, 1.0, 100.0, 30.0)
        );
        assert_eq!(c.segments["other"].positives, 5.0);
        // Scores summed over segments: 115 at ≤ 100‰, +5 at 600‰, +30 at 900‰.
        assert_eq!(c.scores.len(), 21, "SCORE_BUCKETS and +Inf");
        let at = |le: f64| c.scores.iter().find(|b| b.0 == le).map(|b| b.1);
        assert_eq!(
            (at(50.0), at(100.0), at(600.0), at(900.0), at(f64::INFINITY)),
            (
                Some(0.0),
                Some(115.0),
                Some(120.0),
                Some(150.0),
                Some(150.0)
            )
        );
        // A series with no errors line reads 0; a policy without segments has none.
        let s = totals(&e, "fraud-model", "stable");
        assert_eq!((s.errors, s.segments["other"].errors), (5.0, 0.0));
        assert!(totals(&e, "churn-model", "canary").segments.is_empty());
    }

    #[test]
    fn prediction_window_is_differenced_per_segment() {
        let p = CanaryPolicy::test().validated();
        let mut d = Differ::default();
        assert!(d.observe(&p, &parse(PREDICTIONS_FIXTURE)).is_none());
        // 60 more canary 60+ requests, all scored at ≤ 900‰ and positive.
        let mut later = PREDICTIONS_FIXTURE.to_owned();
        let canary_60 = r#"variant="canary",segment="60+""#;
        for (family, from, to) in [
            ("mlcanary_requests_total", 100, 160),
            ("mlcanary_predictions_total", 100, 160),
            ("mlcanary_positive_predictions_total", 30, 90),
        ] {
            let line = |n| format!("{family}{{policy=\"fraud-model\",{canary_60}}} {n}");
            later = later.replace(&line(from), &line(to));
        }
        for le in ["900", "950", "1000", "+Inf"] {
            let line = |n| {
                format!("mlcanary_prediction_score_bucket{{policy=\"fraud-model\",{canary_60},le=\"{le}\"}} {n}")
            };
            later = later.replace(&line(100), &line(160));
        }
        let w = d.observe(&p, &parse(&later)).unwrap();
        assert_eq!(
            (w.canary.requests, w.canary.scored, w.canary.positives),
            (60, 60, 60)
        );
        let seg = w.canary.segments["60+"];
        assert_eq!((seg.requests, seg.scored, seg.positives), (60, 60, 60));
        assert_eq!(w.canary.segments["other"], SegmentCounts::default());
        let count = |le: f64| w.canary.scores.iter().find(|b| b.le == le).unwrap().count;
        assert_eq!(
            (count(850.0), count(900.0), count(f64::INFINITY)),
            (0.0, 60.0, 60.0)
        );
        assert_eq!(w.stable.scored, 0);
        // A positives counter going backwards is a restart like any other counter.
        let restarted = later.replace(
            r#"mlcanary_positive_predictions_total{policy="fraud-model",variant="canary",segment="60+"} 90"#,
            r#"mlcanary_positive_predictions_total{policy="fraud-model",variant="canary",segment="60+"} 3"#,
        );
        let w = d.observe(&p, &parse(&restarted)).unwrap();
        assert_eq!(
            (w.canary.positives, w.canary.scored),
            (8, 210),
            "counts since the restart"
        );
    }

    #[tokio::test]
    async fn scrapes_admin_endpoint_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let n = sock.read(&mut buf).await.unwrap();
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(head.starts_with("GET /stats/prometheus HTTP/1.1"), "{head}");
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{FIXTURE}",
                    FIXTURE.len()
                );
                sock.write_all(resp.as_bytes()).await.unwrap();
            }
        });
        let p = CanaryPolicy::test().validated();
        let mut src = EnvoySource::new(&format!("http://{addr}/")).unwrap();
        let first = src.fetch(&p).await;
        assert!(
            matches!(first, Err(MetricsError::NoBaseline { .. })),
            "{first:?}"
        );
        let w = src.fetch(&p).await.unwrap();
        assert_eq!(w.canary.requests, 0, "same counters twice: empty window");
        server.await.unwrap();
        // Nothing listens any more: unreachable is an error (the loop holds).
        let e = src.fetch(&p).await.unwrap_err();
        assert_eq!(e.label(), "unreachable");
    }
}
