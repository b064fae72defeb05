use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::policy::{CanaryPolicy, ValidatedPolicy};
use mlcanary_core::analysis::Outcome;
use mlcanary_core::window::{SegmentCounts, Window};

const FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/envoy_stats.txt"
));

const PREDICTIONS_FIXTURE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/envoy_stats_predictions.txt"
));

fn at(s: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000 + s)
}

/// The whole of a scrape as one window (from nothing).
fn whole(text: &str) -> Window {
    let p = CanaryPolicy::test().validated();
    let zero = Mark::default();
    reading(&p, counters(&p, &parse(text)), Some(&zero), unix_ms(at(0)))
        .window
        .unwrap()
}

/// Successive scrapes through `reading`, each mark passed on as the engine does; their windows.
fn windows(scrapes: &[&str]) -> Vec<Option<Window>> {
    let p = CanaryPolicy::test().validated();
    let mut mark: Option<Mark> = None;
    let mut out = Vec::new();
    for (i, text) in scrapes.iter().enumerate() {
        let r = reading(
            &p,
            counters(&p, &parse(text)),
            mark.as_ref(),
            unix_ms(at(i as u64)),
        );
        // Through JSON, as the status carries it.
        let json = serde_json::to_string(&r.mark).unwrap();
        mark = Some(serde_json::from_str(&json).unwrap());
        out.push(r.window);
    }
    out
}

#[test]
fn one_policy_and_variant_summed_over_segments() {
    let e = parse(FIXTURE);
    assert_eq!(e.skipped, 0);
    let w = whole(FIXTURE);
    assert_eq!((w.canary.requests, w.canary.errors), (50, 1));
    let les: Vec<(f64, f64)> = w.canary.duration.iter().map(|b| (b.le, b.count)).collect();
    assert_eq!(
        les,
        vec![
            (0.5, 0.0),
            (10.0, 15.0),
            (100.0, 48.0),
            (f64::INFINITY, 50.0)
        ]
    );
    assert_eq!((w.stable.requests, w.stable.errors), (950, 2));
}

/// Real `/stats/prometheus` output of our Envoy running the filter (all of Envoy's own stats
/// around ours): every line parses and our totals come out.
#[test]
fn real_envoy_scrape() {
    let real = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/envoy_stats_real.txt"
    ));
    assert_eq!(parse(real).skipped, 0);
    let w = whole(real);
    assert_eq!(
        (
            w.canary.requests,
            w.canary.errors,
            w.stable.requests,
            w.stable.errors
        ),
        (2, 0, 19, 0)
    );
    assert_eq!(
        w.canary.duration.len(),
        20,
        "Envoy's 19 default bounds and +Inf"
    );
    assert_eq!(w.canary.duration.last().map(|b| b.count), Some(2.0));
    assert_eq!(w.stable.duration.last().map(|b| b.count), Some(19.0));
}

#[test]
fn first_scrape_is_a_mark_then_differences_and_resets() {
    let later = FIXTURE
        .replace(
            r#"variant="canary",segment="other"} 20"#,
            r#"variant="canary",segment="other"} 70"#,
        )
        .replace(
            r#"segment="other",le="+Inf"} 20"#,
            r#"segment="other",le="+Inf"} 70"#,
        );
    // Envoy restarted: counters start again from small numbers; the window is the new counts.
    let restarted = "mlcanary_requests_total{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"canary\"} 4\n\
                     mlcanary_requests_total{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"stable\"} 9\n";
    let w = windows(&[FIXTURE, &later, restarted]);
    assert!(w[0].is_none(), "first scrape: a mark, no window");
    let w1 = w[1].as_ref().unwrap();
    assert_eq!((w1.canary.requests, w1.canary.errors), (50, 0));
    assert_eq!(w1.stable.requests, 0);
    let inf = w1.canary.duration.iter().find(|b| b.le == f64::INFINITY);
    assert_eq!(inf.map(|b| b.count), Some(50.0));
    let w2 = w[2].as_ref().unwrap();
    assert_eq!((w2.canary.requests, w2.stable.requests), (4, 9));
}

#[test]
fn segments_and_prediction_series() {
    assert_eq!(parse(PREDICTIONS_FIXTURE).skipped, 0);
    let c = whole(PREDICTIONS_FIXTURE).canary;
    assert_eq!(
        (c.requests, c.errors, c.scored, c.positives),
        (150, 1, 150, 35)
    );
    let old = c.segments["60+"];
    assert_eq!(
        (old.requests, old.errors, old.scored, old.positives),
        (100, 1, 100, 30)
    );
    assert_eq!(c.segments["other"].positives, 5);
    // Scores summed over segments: 115 at ≤ 100‰, +5 at 600‰, +30 at 900‰.
    assert_eq!(c.scores.len(), 21, "SCORE_BUCKETS and +Inf");
    let at = |le: f64| c.scores.iter().find(|b| b.le == le).map(|b| b.count);
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
    // A series with no errors line reads 0.
    let s = whole(PREDICTIONS_FIXTURE).stable;
    assert_eq!((s.errors, s.segments["other"].errors), (5, 0));
}

#[test]
fn prediction_window_is_differenced_per_segment() {
    // 60 more canary 60+ requests, all scored at ≤ 900‰ and positive.
    let mut later = PREDICTIONS_FIXTURE.to_owned();
    let canary_60 = r#"variant="canary",segment="60+""#;
    for (family, from, to) in [
        ("mlcanary_requests_total", 100, 160),
        ("mlcanary_predictions_total", 100, 160),
        ("mlcanary_positive_predictions_total", 30, 90),
    ] {
        let line = |n| {
            format!("{family}{{policy_namespace=\"ml\",policy=\"fraud-model\",{canary_60}}} {n}")
        };
        later = later.replace(&line(from), &line(to));
    }
    for le in ["900", "950", "1000", "+Inf"] {
        let line = |n| {
            format!("mlcanary_prediction_score_bucket{{policy_namespace=\"ml\",policy=\"fraud-model\",{canary_60},le=\"{le}\"}} {n}")
        };
        later = later.replace(&line(100), &line(160));
    }
    // A positives counter going backwards is a restart like any other counter.
    let restarted = later.replace(
        r#"mlcanary_positive_predictions_total{policy_namespace="ml",policy="fraud-model",variant="canary",segment="60+"} 90"#,
        r#"mlcanary_positive_predictions_total{policy_namespace="ml",policy="fraud-model",variant="canary",segment="60+"} 3"#,
    );
    let w = windows(&[PREDICTIONS_FIXTURE, &later, &restarted]);
    let w1 = w[1].as_ref().unwrap();
    assert_eq!(
        (w1.canary.requests, w1.canary.scored, w1.canary.positives),
        (60, 60, 60)
    );
    let seg = w1.canary.segments["60+"];
    assert_eq!((seg.requests, seg.scored, seg.positives), (60, 60, 60));
    assert_eq!(w1.canary.segments["other"], SegmentCounts::default());
    let count = |le: f64| w1.canary.scores.iter().find(|b| b.le == le).unwrap().count;
    assert_eq!(
        (count(850.0), count(900.0), count(f64::INFINITY)),
        (0.0, 60.0, 60.0)
    );
    assert_eq!(w1.stable.scored, 0);
    let w2 = w[2].as_ref().unwrap();
    assert_eq!(
        (w2.canary.positives, w2.canary.scored),
        (8, 210),
        "counts since the restart"
    );
}

#[tokio::test]
async fn scrapes_admin_endpoint_over_http() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Three scrapes: two lone fetches, then one pass over three policies.
    let server = tokio::spawn(async move {
        for _ in 0..3 {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = sock.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            // Only what windows are made of: used stats of the filter's families and the uptime.
            assert!(
                head.starts_with(&format!("GET {STATS_QUERY} HTTP/1.1")),
                "{head}"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{FIXTURE}",
                FIXTURE.len()
            );
            sock.write_all(resp.as_bytes()).await.unwrap();
        }
    });
    let p = CanaryPolicy::test().validated();
    let mut src = EnvoySource::new(&format!("http://{addr}/")).unwrap();
    let first = src.fetch(&p, None, at(0)).await.unwrap();
    assert!(first.window.is_none());
    assert_eq!(first.mark.at_ms, 1_800_000_000_000);
    let second = src.fetch(&p, Some(&first.mark), at(1)).await.unwrap();
    let w = second.window.unwrap();
    assert_eq!(w.canary.requests, 0, "same counters twice: empty window");
    // A pass: one scrape at the pass' time serves every policy's fetch.
    let others: Vec<ValidatedPolicy> = (0..2)
        .map(|i| {
            let mut o = p.clone();
            o.name = format!("other-{i}");
            o
        })
        .collect();
    let pass: Vec<&ValidatedPolicy> = std::iter::once(&p).chain(&others).collect();
    src.prepare(&pass, at(2)).await;
    for q in &pass {
        let r = src.fetch(q, Some(&second.mark), at(3)).await.unwrap();
        assert_eq!(r.mark.at_ms, 1_800_000_002_000, "{}", q.name);
    }
    server.await.unwrap();
    // Nothing listens any more: unreachable is an error (the loop holds), for a lone fetch and
    // for every policy of a pass, after one attempt.
    let e = src.fetch(&p, Some(&second.mark), at(4)).await.unwrap_err();
    assert_eq!(e.label(), "unreachable");
    src.prepare(&pass, at(5)).await;
    for q in &pass {
        let e = src.fetch(q, None, at(5)).await.unwrap_err();
        assert_eq!(e.label(), "unreachable");
    }
}

/// Same-named policies of two namespaces in one scrape (one mesh-wide filter, staging and prod):
/// each is judged on its own series — a failing staging canary does not touch prod's window.
#[test]
fn same_named_policies_of_two_namespaces_are_judged_apart() {
    let text = "\
mlcanary_requests_total{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"stable\"} 900
mlcanary_requests_total{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"canary\"} 100
mlcanary_errors_total{policy_namespace=\"ml\",policy=\"fraud-model\",variant=\"canary\"} 0
mlcanary_requests_total{policy_namespace=\"staging\",policy=\"fraud-model\",variant=\"stable\"} 50
mlcanary_requests_total{policy_namespace=\"staging\",policy=\"fraud-model\",variant=\"canary\"} 50
mlcanary_errors_total{policy_namespace=\"staging\",policy=\"fraud-model\",variant=\"canary\"} 40
";
    let prod = CanaryPolicy::test().only_error_rate(0.05).validated();
    let mut staging = prod.clone();
    staging.namespace = Some("staging".into());
    let e = parse(text);
    let zero = Mark::default();
    let window = |p: &ValidatedPolicy| {
        reading(p, counters(p, &e), Some(&zero), unix_ms(at(0)))
            .window
            .unwrap()
    };
    let (w_prod, w_staging) = (window(&prod), window(&staging));
    assert_eq!(
        (
            w_prod.stable.requests,
            w_prod.canary.requests,
            w_prod.canary.errors
        ),
        (900, 100, 0)
    );
    assert_eq!(
        (
            w_staging.stable.requests,
            w_staging.canary.requests,
            w_staging.canary.errors
        ),
        (50, 50, 40)
    );
    // And the judge reads them apart: prod's canary passes its error check, staging's fails.
    let judged =
        |p: &ValidatedPolicy, w: &Window| mlcanary_core::analysis::evaluate_window(p, w)[0].outcome;
    assert_eq!(judged(&staging, &w_staging), Outcome::Fail);
    assert_ne!(judged(&prod, &w_prod), Outcome::Fail);
}
