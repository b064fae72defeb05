//! The Prometheus source against a fake Prometheus that answers instant queries as the real one
//! does: each series' latest sample at or before `time=` (within the 5 min lookback), from a
//! timeline of scrapes of one Envoy that serves both variants.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::policy::CanaryPolicy;

const T0: i64 = 1_800_000_000_000;

type Labels = Vec<(String, String)>;

/// One scrape: its time and every series' labels (with `__name__`) and value.
type Scrape = (i64, Vec<(Labels, f64)>);

#[derive(Default)]
struct Fake {
    scrapes: Vec<Scrape>,
    queries: Vec<(String, i64)>,
}

impl Fake {
    /// Instant selector `{__name__=~"a|b",policy_namespace="ns",policy=~"p|q"}` at `t`: latest
    /// sample per series.
    fn select(&self, query: &str, t: i64) -> Vec<(Labels, f64, i64)> {
        let names: Vec<&str> = between(query, "__name__=~\"", "\"").split('|').collect();
        let namespace = between(query, "policy_namespace=\"", "\"");
        let policies: Vec<&str> = between(query, "policy=~\"", "\"").split('|').collect();
        let mut latest: HashMap<Labels, (f64, i64)> = HashMap::new();
        for (ts, series) in &self.scrapes {
            if *ts > t || t - ts > 300_000 {
                continue;
            }
            for (labels, v) in series {
                let get = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                if names.contains(&get("__name__").unwrap_or_default())
                    && get("policy_namespace") == Some(namespace)
                    && get("policy").is_some_and(|p| policies.contains(&p))
                {
                    latest.insert(labels.clone(), (*v, *ts));
                }
            }
        }
        latest.into_iter().map(|(l, (v, ts))| (l, v, ts)).collect()
    }

    /// `increase(<name>{policy="p",variant="v"}[Ns])` at `t`, as the old source asked: the last
    /// minus the first sample in the range — and nothing when the range holds fewer than two,
    /// which is how a window came back empty for one variant.
    fn increase(&self, query: &str, t: i64) -> Option<f64> {
        let name = between(query, "increase(", "{");
        let variant = between(query, "variant=\"", "\"");
        let range: i64 = between(query, "[", "s]").parse().ok()?;
        let samples: Vec<f64> = self
            .scrapes
            .iter()
            .filter(|(ts, _)| *ts <= t && *ts >= t - range * 1000)
            .flat_map(|(_, s)| s.iter())
            .filter(|(l, _)| {
                let get = |k: &str| l.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                get("__name__") == Some(name) && get("variant") == Some(variant)
            })
            .map(|(_, v)| *v)
            .collect();
        (samples.len() >= 2).then(|| samples[samples.len() - 1] - samples[0])
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> &'a str {
    s.split_once(start)
        .and_then(|(_, rest)| rest.split_once(end))
        .map_or("", |(x, _)| x)
}

fn url_decode(s: &str) -> String {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap_or(b'?'));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A fake serving [`timeline`], and its URL.
async fn serve_timeline() -> (Arc<Mutex<Fake>>, String) {
    let fake = Arc::new(Mutex::new(Fake {
        scrapes: timeline(),
        queries: Vec::new(),
    }));
    let url = serve(fake.clone()).await;
    (fake, url)
}

/// Serve `fake` over HTTP on 127.0.0.1; returns its base URL.
async fn serve(fake: Arc<Mutex<Fake>>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let fake = fake.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let mut n = 0;
                // The request line and headers (a GET: no body).
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(k) => n += k,
                    }
                }
                let head = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = head.split_whitespace().nth(1).unwrap_or_default();
                let params: HashMap<String, String> = target
                    .split_once('?')
                    .map_or("", |(_, q)| q)
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), url_decode(v)))
                    .collect();
                let query = params.get("query").cloned().unwrap_or_default();
                let t = params
                    .get("time")
                    .and_then(|t| t.parse::<f64>().ok())
                    .map_or(i64::MAX, |t| (t * 1000.0).round() as i64);
                let result: Vec<serde_json::Value> = {
                    let mut f = fake.lock().unwrap();
                    f.queries.push((query.clone(), t));
                    if query.contains("__name__=~") {
                        f.select(&query, t)
                            .into_iter()
                            .map(|(labels, v, _)| {
                                let metric: serde_json::Map<String, serde_json::Value> = labels
                                    .into_iter()
                                    .map(|(k, v)| (k, v.into()))
                                    .collect();
                                serde_json::json!({"metric": metric, "value": [t as f64 / 1000.0, v.to_string()]})
                            })
                            .collect()
                    } else {
                        Vec::new()
                    }
                };
                let body = serde_json::json!({
                    "status": "success",
                    "data": {"resultType": "vector", "result": result}
                })
                .to_string();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}")
}

fn labels(name: &str, variant: &str, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut l = vec![
        ("__name__".to_owned(), name.to_owned()),
        ("policy".to_owned(), "fraud-model".to_owned()),
        ("policy_namespace".to_owned(), "ml".to_owned()),
        ("variant".to_owned(), variant.to_owned()),
        ("instance".to_owned(), "10.0.0.7:15090".to_owned()),
    ];
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    l
}

/// One Envoy serving 60 requests/s to stable and 40 to canary, scraped every second from T0 on.
/// Envoy restarts at 6.5 s (its counters start again from zero); the segment `60+` first appears
/// in the scrape at 4 s; the scrape at 3 s is missed. Returns the scrapes and the true totals of
/// each variant's requests by each time (ms → (stable, canary)).
fn timeline() -> Vec<Scrape> {
    let mut out = Vec::new();
    for i in 0..=10i64 {
        let ts = T0 + i * 1000;
        if i == 3 {
            continue; // missed scrape
        }
        // Cumulative since the process started (restart at 6.5 s).
        let up = if i >= 7 {
            i as f64 - 6.5
        } else {
            i as f64 + 100.0
        };
        let mut series = vec![
            (labels(REQUESTS_FAMILY, "stable", &[]), 60.0 * up),
            (labels(REQUESTS_FAMILY, "canary", &[]), 40.0 * up),
            (labels(ERRORS_FAMILY, "canary", &[]), (0.4 * up).floor()),
        ];
        if i >= 4 {
            let since = if i >= 7 { up } else { (i - 3) as f64 };
            series.push((
                labels(REQUESTS_FAMILY, "canary", &[("segment", "60+")]),
                4.0 * since,
            ));
        }
        out.push((ts, series));
    }
    out
}

const REQUESTS_FAMILY: &str = mlcanary_filter::stats::REQUESTS;
const ERRORS_FAMILY: &str = mlcanary_filter::stats::ERRORS;

fn at(ms: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms as u64)
}

/// The old source's failure, as the real Prometheus produced it: `increase()` over one interval
/// ending "now", asked once per variant. With a 1 s interval and 1 s scrapes, the stable query
/// (just before a scrape lands) saw two samples, the canary query (just after) saw one: an empty
/// canary window while the canary served 40 % of the traffic.
#[test]
fn per_interval_increase_loses_a_canary_window() {
    let f = Fake {
        scrapes: steady_timeline(),
        queries: Vec::new(),
    };
    let stable = f.increase(
        r#"sum by (segment) (increase(mlcanary_requests_total{policy="fraud-model",variant="stable"}[1s]))"#,
        T0 + 2000,
    );
    let canary = f.increase(
        r#"sum by (segment) (increase(mlcanary_requests_total{policy="fraud-model",variant="canary"}[1s]))"#,
        T0 + 2000 + 5,
    );
    assert_eq!(stable, Some(60.0));
    assert_eq!(canary, None, "the canary's window is lost");
}

fn steady_timeline() -> Vec<Scrape> {
    (0..=4i64)
        .map(|i| {
            let up = i as f64;
            (
                T0 + i * 1000,
                vec![
                    (labels(REQUESTS_FAMILY, "stable", &[]), 60.0 * up),
                    (labels(REQUESTS_FAMILY, "canary", &[]), 40.0 * up),
                ],
            )
        })
        .collect()
}

/// The same kind of timeline through the new source: every window read at one instant holds both
/// variants or neither (the missed scrape), and the windows add up to what was served.
#[tokio::test]
async fn windows_at_fixed_instants_lose_nothing() {
    let (fake, url) = serve_timeline().await;
    let p = CanaryPolicy::test().validated();
    let mut src = PrometheusSource::new(&url).unwrap();
    // Ticks at 1 s intervals, each a few ms after a scrape time or just before the next; one
    // more after the restart at 6.5 s. (A tick's `time=` is the instant the counters are read.)
    let ticks = [
        0, 1_005, 2_000, 2_999, 3_500, 4_001, 5_010, 6_000, 7_200, 8_000, 9_999, 10_000,
    ];
    let mut mark: Option<Mark> = None;
    let (mut stable, mut canary, mut segment) = (0, 0, 0);
    let mut windows = Vec::new();
    for t in ticks {
        let r = src.fetch(&p, mark.as_ref(), at(T0 + t)).await.unwrap();
        assert_eq!(r.mark.at_ms, T0 + t);
        if let Some(w) = &r.window {
            // Both variants come from the same scrapes: both have data, or neither.
            assert_eq!(
                w.stable.requests == 0,
                w.canary.requests == 0,
                "tick at {t} ms: {w:?}"
            );
            stable += w.stable.requests;
            canary += w.canary.requests;
            segment += w.canary.segments.get("60+").map_or(0, |s| s.requests);
            windows.push((t, w.stable.requests, w.canary.requests));
        } else {
            assert!(mark.is_none(), "only the first read is a bare mark");
        }
        mark = Some(r.mark);
    }
    // The segment `60+` appeared at 4 s with 4, grew to 12 by 6 s, then restarted: 12 + 14.
    assert_eq!(segment, 12 + 14, "{windows:?}");
    // Served between the first read (the scrape at 0 s: 100 s of uptime) and the last (10 s):
    // 6 s before the restart (100 → 106) and 3.5 s after it; the canary's segment on top.
    assert_eq!(
        (stable, canary),
        (60 * 6 + 60 * 7 / 2, 40 * 6 + 40 * 7 / 2 + segment),
        "{windows:?}"
    );
    // The missed scrape at 3 s is one empty window for both, then a double one.
    let w = |t| windows.iter().find(|w| w.0 == t).map(|w| (w.1, w.2));
    assert_eq!(w(2_999), Some((0, 0)));
    assert_eq!(w(3_500), Some((0, 0)));
    assert_eq!(w(4_001), Some((120, 80 + 4)));
    // One counters query per tick: both variants and every family at one `time=` (the test
    // policy's custom check is asked at the same time).
    let f = fake.lock().unwrap();
    let series: Vec<i64> = f
        .queries
        .iter()
        .filter(|(q, _)| q == &series_query("ml", &["fraud-model"]))
        .map(|(_, t)| t - T0)
        .collect();
    assert_eq!(series, ticks);
    assert!(f.queries.iter().all(|(_, t)| ticks.contains(&(t - T0))));
}

/// A controller that restarts (or runs `--once`) has only the mark from the status: it asks
/// Prometheus for the counters at the mark's time again and gets the window the running one got.
#[tokio::test]
async fn a_restarted_source_reads_the_mark_again() {
    let (fake, url) = serve_timeline().await;
    let p = CanaryPolicy::test().validated();
    let mut running = PrometheusSource::new(&url).unwrap();
    let first = running.fetch(&p, None, at(T0 + 1_500)).await.unwrap();
    let mark: Mark = serde_json::from_value(serde_json::to_value(&first.mark).unwrap()).unwrap();
    let kept = running
        .fetch(&p, Some(&mark), at(T0 + 5_500))
        .await
        .unwrap();
    let mut fresh = PrometheusSource::new(&url).unwrap();
    let again = fresh.fetch(&p, Some(&mark), at(T0 + 5_500)).await.unwrap();
    assert_eq!(kept.window, again.window);
    assert_eq!(kept.window.unwrap().canary.requests, 40 * 4 + 8);
    let f = fake.lock().unwrap();
    let times: Vec<i64> = f
        .queries
        .iter()
        .filter(|(q, _)| q == &series_query("ml", &["fraud-model"]))
        .map(|(_, t)| t - T0)
        .collect();
    assert_eq!(
        times,
        [1_500, 5_500, 5_500, 1_500],
        "the fresh one re-reads the mark"
    );
}

#[test]
fn queries() {
    assert_eq!(
        series_query("ml", &["fraud-model"]),
        r#"{__name__=~"mlcanary_requests_total|mlcanary_errors_total|mlcanary_predictions_total|mlcanary_positive_predictions_total|mlcanary_feedback_total|mlcanary_request_duration_ms_bucket|mlcanary_prediction_score_bucket",policy_namespace="ml",policy=~"fraud-model"}"#
    );
    assert_eq!(
        series_query("prod", &["a", "b-2"])
            .split_once("\",")
            .unwrap()
            .1,
        r#"policy_namespace="prod",policy=~"a|b-2"}"#
    );
    assert_eq!(eval_time(1_800_000_000_042), "1800000000.042");
    // Batches hold one namespace each: same-named policies of two namespaces are asked apart.
    let prod = CanaryPolicy::test().validated();
    let mut staging = prod.clone();
    staging.namespace = Some("staging".into());
    let mut other = prod.clone();
    other.name = "other".into();
    let got: Vec<Vec<String>> = batches(&[&prod, &staging, &other])
        .iter()
        .map(|b| b.iter().map(|p| p.key().to_string()).collect())
        .collect();
    assert_eq!(
        got,
        [
            vec!["ml/fraud-model".to_owned(), "ml/other".to_owned()],
            vec!["staging/fraud-model".to_owned()]
        ]
    );
    assert_eq!(
        custom_query(
            r#"x{ns="{{namespace}}",policy="{{policy}}",variant="{{variant}}"}"#,
            &PolicyKey::new("prod", "p"),
            "canary"
        ),
        r#"x{ns="prod",policy="p",variant="canary"}"#
    );
}

/// A pass over many policies asks for their counters in batches — one query per [`BATCH`]
/// policies, all at the pass' time — and each policy's fetch then reads no counters of its own:
/// the windows are those of unbatched fetches.
#[tokio::test]
async fn a_pass_reads_all_policies_counters_in_batches() {
    let (fake, url) = serve_timeline().await;
    let fraud = CanaryPolicy::test().validated();
    let mut policies = vec![fraud.clone()];
    for i in 1..120 {
        let mut p = fraud.clone();
        p.name = format!("model-{i}");
        policies.push(p);
    }
    let all: Vec<&ValidatedPolicy> = policies.iter().collect();
    let mut src = PrometheusSource::new(&url).unwrap();
    let mut marks: HashMap<PolicyKey, Mark> = HashMap::new();
    let mut windows = Vec::new();
    for t in [1_005, 5_010] {
        src.prepare(&all, at(T0 + t)).await;
        for p in &all {
            let r = src
                .fetch(p, marks.get(&p.key()), at(T0 + t + 300))
                .await
                .unwrap();
            assert_eq!(r.mark.at_ms, T0 + t, "the window ends at the pass' read");
            if p.name == fraud.name {
                windows.push(r.window.clone());
            } else if let Some(w) = &r.window {
                assert_eq!(w.canary.requests + w.stable.requests, 0, "no series: zero");
            }
            marks.insert(p.key(), r.mark);
        }
    }
    let counters_queries = |f: &Fake| {
        f.queries
            .iter()
            .filter(|(q, _)| q.contains("__name__=~"))
            .map(|(q, t)| (q.matches('|').count(), t - T0))
            .collect::<Vec<_>>()
    };
    {
        let f = fake.lock().unwrap();
        let batches = counters_queries(&f);
        // Three batches (50 + 50 + 20 policies) per pass, at the pass' time, nothing else.
        assert_eq!(batches.len(), 6, "{batches:?}");
        let family_bars = families().len() - 1;
        let mut sizes: Vec<usize> = batches
            .iter()
            .map(|(bars, _)| bars - family_bars + 1)
            .collect();
        sizes.sort_unstable();
        assert_eq!(sizes, [20, 20, 50, 50, 50, 50]);
        assert!(batches.iter().all(|(_, t)| *t == 1_005 || *t == 5_010));
    }
    // The same policy read alone over the same instants.
    let mut alone = PrometheusSource::new(&url).unwrap();
    let first = alone.fetch(&fraud, None, at(T0 + 1_005)).await.unwrap();
    let second = alone
        .fetch(&fraud, Some(&first.mark), at(T0 + 5_010))
        .await
        .unwrap();
    assert_eq!(windows, vec![None, second.window]);
}

#[tokio::test]
async fn unreachable_prometheus_is_an_error() {
    let p = CanaryPolicy::test().validated();
    let mut src = PrometheusSource::new("http://127.0.0.1:1").unwrap();
    let e = src.fetch(&p, None, SystemTime::now()).await.unwrap_err();
    assert_eq!(e.label(), "query");
}

/// A batch read is shared by clones (the kube loop's reconciles) and taken once; one read more than
/// half an interval before the fetch is not used: the fetch reads at its own time.
#[tokio::test]
async fn a_batch_is_shared_by_clones_taken_once_and_not_when_old() {
    let (_fake, url) = serve_timeline().await;
    let p = CanaryPolicy::test().validated();
    let half = i64::try_from(p.interval.as_millis() / 2).unwrap();
    let mut first = PrometheusSource::new(&url).unwrap();
    let mut clone = first.clone();
    first.prepare(&[&p], at(T0 + 1_000)).await;
    assert!(clone.prepared_for(&p.key()));
    let r = clone.fetch(&p, None, at(T0 + 1_500)).await.unwrap();
    assert_eq!(r.mark.at_ms, T0 + 1_000, "the clone took the batch");
    assert!(!first.prepared_for(&p.key()), "taken once");
    first.prepare(&[&p], at(T0 + 1_000)).await;
    let late = T0 + 1_000 + half + 1;
    let r = first.fetch(&p, None, at(late)).await.unwrap();
    assert_eq!(r.mark.at_ms, late, "too old a batch: read afresh");
}
