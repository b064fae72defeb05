//! The filter in a real Envoy: routing, stickiness, rules, stats, and config delivered by ECDS.

use std::collections::HashMap;

use mlcanary_e2e::envoy::{wait_for, Envoy, EnvoySetup};
use mlcanary_e2e::http::{self, Response};
use mlcanary_e2e::patience;
use mlcanary_e2e::upstream::Upstream;
use serde_json::{json, Value};

const HOST: &str = "fraud-model";

fn policy(canary_bp: u32) -> Value {
    json!({
        "name": "fraud-model",
        "hosts": [HOST, "fraud-model.ml.svc.cluster.local"],
        "variants": [
            {"name": "stable", "weight_bp": 10_000 - canary_bp},
            {"name": "canary", "weight_bp": canary_bp}
        ],
        "sticky": {"header": "x-user-id", "cookie": "mlcanary-uid", "salt": "fraud-model"},
        "rules": [
            {"match": {"header": "x-user-segment", "exact": "beta"}, "variant": "canary"},
            {"match": {"cookie": "tester", "prefix": "qa-"}, "variant": "canary"},
            {"match": {"query": "variant-pin", "one_of": ["canary"]}, "variant": "canary"}
        ]
    })
}

fn config(policies: Vec<Value>) -> Value {
    json!({ "policies": policies })
}

struct Rig {
    stable: Upstream,
    canary: Upstream,
    envoy: Envoy,
}

fn rig(filter_config: Value) -> Rig {
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let setup = EnvoySetup::new(
        &[("stable", stable.port), ("canary", canary.port)],
        filter_config,
    );
    let envoy = Envoy::start(setup);
    Rig {
        stable,
        canary,
        envoy,
    }
}

fn get(port: u16, headers: &[(&str, &str)]) -> Response {
    http::get(port, HOST, "/v1/models/fraud:predict", headers).expect("request through envoy")
}

/// Send `n` requests, the i-th with the headers `hdrs(i)`; count answers by upstream.
fn spread(
    port: u16,
    n: usize,
    hdrs: impl Fn(usize) -> Vec<(String, String)>,
) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for i in 0..n {
        let h = hdrs(i);
        let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = get(port, &h);
        assert_eq!(r.status, 200, "{r:?}");
        *out.entry(r.served_by().expect("served_by")).or_default() += 1;
    }
    out
}

#[test]
fn splits_traffic_by_weight_with_and_without_a_sticky_key() {
    let r = rig(config(vec![policy(2000)]));
    let n = 2000;
    // Keyless: a random bucket per request.
    let keyless = spread(r.envoy.port, n, |_| vec![]);
    let share = keyless.get("canary").copied().unwrap_or(0) as f64 / n as f64;
    // Binomial sd at n=2000, p=0.2 is 0.9 pp: ±4 pp is over 4 sd.
    assert!(
        (share - 0.20).abs() < 0.04,
        "keyless canary share {share}: {keyless:?}"
    );
    // Sticky: distinct users split by their hash bucket, exactly as the crate computes it.
    let p = mlcanary_filter::Config::from_json(config(vec![policy(2000)]).to_string().as_bytes())
        .unwrap()
        .policies
        .remove(0);
    let mut want_canary = 0;
    for i in 0..n {
        let user = format!("user-{i}");
        let want = mlcanary_filter::decide::assign(&p, &user).unwrap();
        want_canary += want;
        let resp = get(r.envoy.port, &[("x-user-id", &user)]);
        assert_eq!(
            resp.served_by().unwrap(),
            p.variants[want].name,
            "user {user}"
        );
    }
    let share = want_canary as f64 / n as f64;
    assert!((share - 0.20).abs() < 0.04, "sticky canary share {share}");
    // The upstream saw the tag that routed it.
    let resp = get(r.envoy.port, &[("x-user-segment", "beta")]);
    assert!(resp.body.contains("\"tag\":\"canary\""), "{resp:?}");
    assert_eq!(
        r.stable.served.load(std::sync::atomic::Ordering::SeqCst) as usize
            + r.canary.served.load(std::sync::atomic::Ordering::SeqCst) as usize,
        2 * n + 1
    );
}

#[test]
fn a_user_keeps_the_variant_across_an_envoy_restart() {
    let mut r = rig(config(vec![policy(3000)]));
    let users: Vec<String> = (0..300).map(|i| format!("customer-{i}")).collect();
    let first: Vec<String> = users
        .iter()
        .map(|u| get(r.envoy.port, &[("x-user-id", u)]).served_by().unwrap())
        .collect();
    let old_port = r.envoy.port;
    r.envoy = r.envoy.restart();
    assert_ne!(r.envoy.port, 0);
    let _ = old_port;
    let second: Vec<String> = users
        .iter()
        .map(|u| get(r.envoy.port, &[("x-user-id", u)]).served_by().unwrap())
        .collect();
    assert_eq!(first, second);
    // The cookie key gives the same answer as the header key.
    let third: Vec<String> = users
        .iter()
        .map(|u| {
            get(
                r.envoy.port,
                &[("cookie", &format!("a=b; mlcanary-uid={u}"))],
            )
            .served_by()
            .unwrap()
        })
        .collect();
    assert_eq!(first, third);
    let on_canary = first.iter().filter(|v| *v == "canary").count();
    assert!(
        (60..=120).contains(&on_canary),
        "{on_canary} of 300 on a 30 % canary"
    );
}

#[test]
fn rules_route_by_header_cookie_and_query_even_at_zero_weight() {
    let r = rig(config(vec![policy(0)]));
    let port = r.envoy.port;
    assert_eq!(
        get(port, &[("x-user-segment", "beta")])
            .served_by()
            .unwrap(),
        "canary"
    );
    assert_eq!(
        get(port, &[("x-user-segment", "gamma")])
            .served_by()
            .unwrap(),
        "stable"
    );
    assert_eq!(
        get(port, &[("cookie", "x=1; tester=qa-anna")])
            .served_by()
            .unwrap(),
        "canary"
    );
    let q = http::get(
        port,
        HOST,
        "/v1/models/fraud:predict?variant-pin=canary",
        &[],
    )
    .unwrap();
    assert_eq!(q.served_by().unwrap(), "canary");
    // No rule, zero weight: everyone on stable.
    let all = spread(port, 50, |i| vec![("x-user-id".into(), format!("u{i}"))]);
    assert_eq!(all.get("stable"), Some(&50), "{all:?}");
}

#[test]
fn a_client_cannot_choose_its_variant() {
    let r = rig(config(vec![policy(0)]));
    for spoof in ["canary", "stable", "CANARY", ""] {
        let resp = get(
            r.envoy.port,
            &[("x-mlcanary-variant", spoof), ("x-user-id", "mallory")],
        );
        assert_eq!(resp.served_by().unwrap(), "stable", "spoofed {spoof:?}");
        assert!(resp.body.contains("\"tag\":\"stable\""), "{resp:?}");
    }
    // Two spoofed copies of the header are both replaced.
    let raw = format!(
        "GET /v1/models/fraud:predict HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\n\
         x-mlcanary-variant: canary\r\nx-mlcanary-variant: canary\r\n\r\n"
    );
    let resp = http::send_raw(r.envoy.port, raw.as_bytes()).unwrap();
    assert_eq!(resp.served_by().unwrap(), "stable");
    assert!(resp.body.contains("\"tag\":\"stable\""), "{resp:?}");
}

#[test]
fn requests_for_other_hosts_pass_untouched_and_unmeasured() {
    let r = rig(config(vec![policy(10_000)]));
    let resp = http::get(r.envoy.port, "billing", "/", &[]).unwrap();
    assert_eq!(resp.served_by().unwrap(), "stable"); // the default route: no tag was set
    assert!(resp.body.contains("\"tag\":\"\""), "{resp:?}");
    // Host match ignores the port and case; the FQDN is listed too.
    for host in ["Fraud-Model:8501", "fraud-model.ml.svc.cluster.local"] {
        let resp = http::get(r.envoy.port, host, "/", &[]).unwrap();
        assert_eq!(resp.served_by().unwrap(), "canary", "host {host}");
    }
    let total = |v| {
        r.envoy.sample(
            "mlcanary_requests_total",
            &[("policy", "fraud-model"), ("variant", v)],
        )
    };
    let counted = wait_for(patience::SETTLE, || total("canary").filter(|&c| c >= 2.0));
    assert_eq!(counted, Some(2.0));
    // A tuple that served nothing has no series at all (the controller reads it as zero).
    assert_eq!(total("stable"), None);
}

/// Attached per host (disabled in the connection manager, enabled on the policy's virtual host, as
/// `mlcanary local` does), the filter never runs for a host whose virtual host does not enable it —
/// even one its config names. The same config on every route does route that host: the contrast
/// shows the attachment, not the config, kept the filter out.
#[test]
fn enabled_per_host_the_filter_never_runs_for_other_hosts() {
    let mut billing = policy(10_000);
    billing["name"] = json!("billing");
    billing["hosts"] = json!(["billing"]);
    let cfg = config(vec![policy(10_000), billing]);
    let stable = Upstream::start("stable");
    let canary = Upstream::start("canary");
    let variants = [("stable", stable.port), ("canary", canary.port)];
    let on_every_route = Envoy::start(EnvoySetup::new(&variants, cfg.clone()));
    let per_host = Envoy::start(EnvoySetup {
        filter_hosts: Some(vec![HOST.to_string()]),
        ..EnvoySetup::new(&variants, cfg)
    });
    let served = |e: &Envoy, host: &str| {
        let r = http::get(e.port, host, "/", &[("x-mlcanary-variant", "stable")]).unwrap();
        assert_eq!(r.status, 200, "{r:?}");
        r.served_by().unwrap()
    };
    assert_eq!(served(&on_every_route, "billing"), "canary");
    // Per host: billing's request keeps the client's tag (nothing replaced it) and is not counted.
    assert_eq!(served(&per_host, "billing"), "stable");
    assert_eq!(served(&per_host, HOST), "canary");
    let count = |policy| {
        per_host.sample(
            "mlcanary_requests_total",
            &[("policy", policy), ("variant", "canary")],
        )
    };
    let counted = wait_for(patience::SETTLE, || count("fraud-model"));
    assert_eq!(counted, Some(1.0));
    assert_eq!(count("billing"), None);
}

/// A mesh-wide config names every model; a sidecar must export series only for the (policy,
/// variant, segment) tuples it served, not ~25 per tuple for every model in the mesh.
#[test]
fn series_exist_only_for_the_tuples_a_sidecar_served() {
    let other = json!({
        "name": "churn-model",
        "hosts": ["churn-model"],
        "variants": [
            {"name": "stable", "weight_bp": 5000},
            {"name": "canary", "weight_bp": 5000}
        ],
        "segment": {"header": "x-customer-age-band", "values": ["18-30", "31-60", "60+"]},
        "predictions": {"format": "tfserving", "positive_threshold": 0.5}
    });
    let r = rig(config(vec![policy(0), other]));
    let n = 20;
    for i in 0..n {
        let user = format!("user-{i}");
        assert_eq!(get(r.envoy.port, &[("x-user-id", &user)]).status, 200);
    }
    let labels = [("policy", "fraud-model"), ("variant", "stable")];
    let counted = wait_for(patience::SETTLE, || {
        let c = r
            .envoy
            .sample("mlcanary_request_duration_ms_count", &labels)?;
        (c >= n as f64).then_some(c)
    });
    assert_eq!(counted, Some(n as f64));
    let text = r.envoy.prometheus();
    let ours: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("mlcanary_"))
        .collect();
    assert!(
        ours.iter()
            .all(|l| l.contains(r#"policy="fraud-model",variant="stable""#)),
        "only the served tuple may have series: {ours:#?}"
    );
    assert_eq!(
        ours.len(),
        mlcanary_filter::stats::SERIES_PER_TUPLE,
        "the documented series per tuple: {ours:#?}"
    );
    assert_eq!(
        r.envoy.sample("mlcanary_requests_total", &labels),
        Some(n as f64)
    );
    assert_eq!(r.envoy.sample("mlcanary_errors_total", &labels), Some(0.0));
    // The other model gets its first request: its tuple appears, counted from the first.
    let resp = http::get(
        r.envoy.port,
        "churn-model",
        "/v1/models/churn:predict",
        &[("x-user-id", "u"), ("x-customer-age-band", "60+")],
    )
    .expect("request through envoy");
    assert_eq!(resp.status, 200);
    let churn = wait_for(patience::SETTLE, || {
        let text = r.envoy.prometheus();
        let lines = text
            .lines()
            .filter(|l| l.starts_with("mlcanary_requests_total") && l.contains("churn-model"))
            .map(str::to_owned)
            .collect::<Vec<_>>();
        (!lines.is_empty()).then_some(lines)
    })
    .expect("the called tuple's series appears");
    assert_eq!(churn.len(), 1, "{churn:?}");
    assert!(
        churn[0].contains(r#"segment="60+""#) && churn[0].ends_with(" 1"),
        "{churn:?}"
    );
    // With predictions, once the histograms are flushed.
    let want = mlcanary_filter::stats::SERIES_PER_TUPLE_WITH_PREDICTIONS;
    let lines = wait_for(patience::SETTLE, || {
        let n = r
            .envoy
            .prometheus()
            .lines()
            .filter(|l| l.starts_with("mlcanary_") && l.contains(r#"policy="churn-model""#))
            .count();
        (n >= want).then_some(n)
    });
    assert_eq!(lines, Some(want));
}

/// Same-named policies of two namespaces (staging and prod, one host each) are two policies: each
/// request is counted under its own namespace, never added to the other's.
#[test]
fn same_named_policies_of_two_namespaces_are_counted_apart() {
    let in_ns = |ns: &str| {
        let mut p = policy(0);
        p["namespace"] = json!(ns);
        p["hosts"] = json!([format!("fraud-model.{ns}")]);
        p
    };
    let r = rig(config(vec![in_ns("staging"), in_ns("prod")]));
    for (ns, n) in [("staging", 3), ("prod", 7)] {
        let host = format!("fraud-model.{ns}");
        for i in 0..n {
            let user = format!("user-{i}");
            let resp = http::get(
                r.envoy.port,
                &host,
                "/v1/models/fraud:predict",
                &[("x-user-id", &user)],
            )
            .expect("request through envoy");
            assert_eq!(resp.status, 200);
        }
    }
    for (ns, n) in [("staging", 3.0), ("prod", 7.0)] {
        let labels = [
            ("policy_namespace", ns),
            ("policy", "fraud-model"),
            ("variant", "stable"),
        ];
        assert_eq!(
            r.envoy
                .sample_eventually("mlcanary_requests_total", &labels, n),
            Some(n),
            "{ns}"
        );
    }
}

#[test]
fn labelled_stats_count_requests_errors_and_latency_per_variant() {
    let r = rig(config(vec![policy(5000)]));
    r.canary.set_fail_per_mille(250);
    let n = 400;
    let by = spread_allow_errors(r.envoy.port, n);
    let labels = |v: &'static str| [("policy", "fraud-model"), ("variant", v)];
    let got = |m: &str, v| r.envoy.sample(m, &labels(v));
    // Histograms reach /stats/prometheus on the next stats flush (1 s here).
    let flushed = wait_for(patience::SETTLE, || {
        let c = got("mlcanary_request_duration_ms_count", "canary")?
            + got("mlcanary_request_duration_ms_count", "stable")?;
        (c >= n as f64).then_some(c)
    });
    assert_eq!(flushed, Some(n as f64));
    for v in ["stable", "canary"] {
        let (ok, failed) = by.get(v).copied().unwrap_or_default();
        assert_eq!(
            got("mlcanary_requests_total", v),
            Some((ok + failed) as f64),
            "{v}"
        );
        assert_eq!(got("mlcanary_errors_total", v), Some(failed as f64), "{v}");
    }
    assert_eq!(by.get("stable").map(|s| s.1), Some(0));
    let (ok, failed) = by["canary"];
    let rate = failed as f64 / (ok + failed) as f64;
    assert!((rate - 0.25).abs() < 0.02, "canary error rate {rate}");
    let text = r.envoy.prometheus();
    assert!(
        text.contains("# TYPE mlcanary_request_duration_ms histogram"),
        "{text}"
    );
    assert!(
        text.contains(r#"mlcanary_request_duration_ms_bucket{policy_namespace="default",policy="fraud-model",variant="canary",le="+Inf"}"#),
        "{text}"
    );
}

/// Like `spread` over distinct users, counting (ok, 5xx) per upstream.
fn spread_allow_errors(port: u16, n: usize) -> HashMap<String, (usize, usize)> {
    let mut out: HashMap<String, (usize, usize)> = HashMap::new();
    for i in 0..n {
        let user = format!("user-{i}");
        let resp = get(port, &[("x-user-id", &user)]);
        let e = out.entry(resp.served_by().expect("served_by")).or_default();
        if resp.status >= 500 {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
    }
    out
}

#[test]
fn a_weight_change_by_ecds_file_applies_without_a_restart() {
    let mut r = rig(config(vec![policy(0)]));
    let pid = r.envoy.pid().expect("running");
    let users: Vec<String> = (0..100).map(|i| format!("u-{i}")).collect();
    let canary_count = |port| {
        users
            .iter()
            .filter(|u| get(port, &[("x-user-id", u)]).served_by().unwrap() == "canary")
            .count()
    };
    assert_eq!(canary_count(r.envoy.port), 0);
    let before = r
        .envoy
        .stat("extension_config_discovery.http_filter.mlcanary.config_reload")
        .unwrap_or(0);
    r.envoy
        .set_filter_config(&config(vec![policy(10_000)]).to_string());
    let port = r.envoy.port;
    let reloaded = wait_for(patience::SETTLE, || {
        (r.envoy
            .stat("extension_config_discovery.http_filter.mlcanary.config_reload")?
            > before)
            .then_some(())
    });
    assert!(
        reloaded.is_some(),
        "ECDS update not applied:\n{}",
        r.envoy.log_tail()
    );
    // Each worker thread takes the new config when it gets to it: wait for all of them.
    let mut count = 0;
    let all = wait_for(patience::SETTLE, || {
        count = canary_count(port);
        (count == 100).then_some(())
    });
    assert!(all.is_some(), "{count} of 100 on the canary");
    assert_eq!(r.envoy.pid(), Some(pid), "Envoy must not restart");
}

#[test]
fn a_bad_config_by_ecds_file_is_refused_and_the_old_weights_stay() {
    let mut r = rig(config(vec![policy(0)]));
    let rejected = |e: &Envoy| {
        e.stat("extension_config_discovery.http_filter.mlcanary.update_rejected")
            .unwrap_or(0)
    };
    let before = rejected(&r.envoy);
    // Weights summing to 105 %.
    let mut bad = policy(500);
    bad["variants"][0]["weight_bp"] = json!(10_000);
    r.envoy.set_filter_config(&config(vec![bad]).to_string());
    let refused = wait_for(patience::SETTLE, || {
        (rejected(&r.envoy) > before).then_some(())
    });
    assert!(
        refused.is_some(),
        "bad config not refused:\n{}",
        r.envoy.log_tail()
    );
    let log = r.envoy.log();
    assert!(
        log.contains("policies[0].variants: weights sum to 10500 basis points"),
        "the reason must be logged:\n{}",
        r.envoy.log_tail()
    );
    assert_eq!(
        r.envoy.sample("mlcanary_config_rejected_total", &[]),
        Some(1.0)
    );
    // Traffic keeps the old (0 % canary) weights.
    let all = spread(r.envoy.port, 100, |i| {
        vec![("x-user-id".into(), format!("u{i}"))]
    });
    assert_eq!(all.get("stable"), Some(&100), "{all:?}");
    // Not JSON at all: refused the same way.
    r.envoy.set_filter_config("{not json");
    let refused = wait_for(patience::SETTLE, || {
        (rejected(&r.envoy) > before + 1).then_some(())
    });
    assert!(refused.is_some());
    let all = spread(r.envoy.port, 20, |i| {
        vec![("x-user-id".into(), format!("u{i}"))]
    });
    assert_eq!(all.get("stable"), Some(&20), "{all:?}");
}

#[test]
fn anonymous_clients_are_assigned_a_sticky_cookie() {
    let mut p = policy(5000);
    p["sticky"]["assign_cookie"] = json!(true);
    let r = rig(config(vec![p]));
    for _ in 0..20 {
        let first = get(r.envoy.port, &[]);
        let set = first
            .header("set-cookie")
            .expect("a set-cookie for a keyless client")
            .to_string();
        assert!(
            set.starts_with("mlcanary-uid=")
                && set.contains("Max-Age=")
                && set.contains("HttpOnly"),
            "{set}"
        );
        let id = set.split(';').next().unwrap().to_string();
        // With the cookie, the client is sticky and gets no new cookie.
        for _ in 0..3 {
            let again = get(r.envoy.port, &[("cookie", &id)]);
            assert_eq!(again.served_by(), first.served_by(), "{id}");
            assert!(again.header("set-cookie").is_none());
        }
    }
}

#[test]
fn odd_headers_never_break_routing() {
    let r = rig(config(vec![policy(10_000)]));
    // A header value that is not UTF-8 (obs-text) as the sticky key and as a rule attribute.
    let mut raw = format!(
        "GET /v1/models/fraud:predict HTTP/1.1\r\nhost: {HOST}\r\nconnection: close\r\nx-user-id: "
    )
    .into_bytes();
    raw.extend_from_slice(&[0xff, 0xfe, b'a']);
    raw.extend_from_slice(
        b"\r\ncookie: tester=\xe9\xe9; mlcanary-uid=\xff\r\nx-user-segment: \xc3\r\n\r\n",
    );
    // The filter read the bytes as "no value" and routed by weight (100 % canary); the test upstream
    // itself refuses such bytes, so the proof is Envoy's own count of requests to the canary cluster.
    let resp = http::send_raw(r.envoy.port, &raw).unwrap();
    assert!(
        resp.status == 200 || resp.body.contains("upstream"),
        "{resp:?}"
    );
    let sent = wait_for(patience::SETTLE, || {
        r.envoy
            .stat("cluster.canary.upstream_rq_total")
            .filter(|&n| n == 1)
    });
    assert_eq!(sent, Some(1), "{}", r.envoy.log_tail());
    assert_eq!(r.envoy.stat("cluster.stable.upstream_rq_total"), Some(0));
    // The VM is still alive: normal requests keep routing.
    assert_eq!(
        get(r.envoy.port, &[("x-user-id", "after")])
            .served_by()
            .unwrap(),
        "canary"
    );
}

fn with_predictions(mut p: Value, predictions: Value) -> Value {
    p["predictions"] = predictions;
    p["segment"] = json!({"header": "x-customer-age-band", "values": ["18-30", "31-60", "60+"]});
    p
}

#[test]
fn prediction_scores_and_positives_per_variant_and_segment() {
    let p = with_predictions(
        policy(5000),
        json!({"format": "tfserving", "positive_threshold": 0.5}),
    );
    let r = rig(config(vec![p]));
    // Stable scores everyone low; the canary flags one in two instances of a batch of two.
    r.stable.set_body(Some(r#"{"predictions": [[0.9, 0.1]]}"#));
    r.canary
        .set_body(Some(r#"{"predictions": [[0.2, 0.8], [0.7, 0.3]]}"#));
    let mut sent: HashMap<(String, &str), usize> = HashMap::new();
    let bands = ["18-30", "31-60", "60+", "unknown-band"];
    for i in 0..200 {
        let band = bands[i % bands.len()];
        let user = format!("user-{i}");
        let resp = get(
            r.envoy.port,
            &[("x-user-id", &user), ("x-customer-age-band", band)],
        );
        assert_eq!(resp.status, 200);
        let variant = if resp.body.contains("0.8") {
            "canary"
        } else {
            "stable"
        };
        let seg = if band == "unknown-band" {
            "other"
        } else {
            band
        };
        *sent.entry((variant.to_string(), seg)).or_default() += 1;
    }
    let labels = |v: &'static str, s: &'static str| {
        [("policy", "fraud-model"), ("variant", v), ("segment", s)]
    };
    for (v, per_reply, positive_per_reply) in [("stable", 1.0, 0.0), ("canary", 2.0, 1.0)] {
        for s in ["18-30", "31-60", "60+", "other"] {
            let n = sent.get(&(v.to_string(), s)).copied().unwrap_or(0) as f64;
            if n == 0.0 {
                // No request, no series.
                let none = r.envoy.sample("mlcanary_requests_total", &labels(v, s));
                assert_eq!(none, None, "{v} {s}");
                continue;
            }
            let got = |m: &str, want: f64| r.envoy.sample_eventually(m, &labels(v, s), want);
            let requests = got("mlcanary_requests_total", n);
            assert_eq!(requests, Some(n), "{v} {s}");
            let scored = got("mlcanary_predictions_total", n * per_reply);
            assert_eq!(scored, Some(n * per_reply), "{v} {s}");
            let positives = got(
                "mlcanary_positive_predictions_total",
                n * positive_per_reply,
            );
            assert_eq!(positives, Some(n * positive_per_reply), "{v} {s}");
            let failures = got("mlcanary_body_parse_failures_total", 0.0);
            assert_eq!(failures, Some(0.0), "{v} {s}");
        }
    }
    // The score histogram uses the configured buckets (per mille): canary 800 and 300, stable 100.
    // Envoy publishes histograms at its stats flush: a flush that fell while the requests were
    // being sent shows part of them, the next one all — so wait for the whole count.
    let canary_60 = sent
        .get(&("canary".to_string(), "60+"))
        .copied()
        .unwrap_or(0) as f64;
    let flushed = r.envoy.sample_eventually(
        "mlcanary_prediction_score_count",
        &labels("canary", "60+"),
        2.0 * canary_60,
    );
    assert_eq!(flushed, Some(2.0 * canary_60));
    let bucket = |v, s, le: &'static str, want: f64| {
        let mut l = labels(v, s).to_vec();
        l.push(("le", le));
        r.envoy
            .sample_eventually("mlcanary_prediction_score_bucket", &l, want)
    };
    assert_eq!(bucket("canary", "60+", "250", 0.0), Some(0.0));
    assert_eq!(bucket("canary", "60+", "300", canary_60), Some(canary_60));
    assert_eq!(bucket("canary", "60+", "750", canary_60), Some(canary_60));
    assert_eq!(
        bucket("canary", "60+", "800", 2.0 * canary_60),
        Some(2.0 * canary_60)
    );
}

#[test]
fn unreadable_replies_are_counted_and_passed_on_untouched() {
    let mut p = with_predictions(policy(0), json!({"max_body_bytes": 64}));
    p.as_object_mut().unwrap().remove("segment");
    let r = rig(config(vec![p]));
    let failures = |want: f64| {
        r.envoy.sample_eventually(
            "mlcanary_body_parse_failures_total",
            &[("policy", "fraud-model"), ("variant", "stable")],
            want,
        )
    };
    let cases = [
        "not json at all",
        r#"{"error": "model fraud not found"}"#,
        r#"{"predictions": [["a", "b", "c"]]}"#,
        // Over max_body_bytes (64).
        r#"{"predictions": [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1]}"#,
    ];
    for (i, body) in cases.iter().enumerate() {
        r.stable.set_body(Some(body));
        let resp = get(r.envoy.port, &[("x-user-id", "u1")]);
        assert_eq!(resp.status, 200);
        assert_eq!(
            resp.body, *body,
            "the reply must reach the client unchanged"
        );
        assert_eq!(failures((i + 1) as f64), Some((i + 1) as f64), "{body}");
    }
    // A good reply after the bad ones is read again.
    r.stable.set_body(Some(r#"{"predictions": [0.7]}"#));
    let resp = get(r.envoy.port, &[("x-user-id", "u1")]);
    assert_eq!(resp.body, r#"{"predictions": [0.7]}"#);
    let pos = r.envoy.sample_eventually(
        "mlcanary_positive_predictions_total",
        &[("policy", "fraud-model"), ("variant", "stable")],
        1.0,
    );
    assert_eq!(pos, Some(1.0));
}
